/**
 * BoardPower: how a board reboots itself, chosen from its profile. A simulated board asks the
 * chassis' power controller (the simulator's own, here in front of recording boards) to reset it;
 * a real blade runs its reboot command.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { loadBoardProfile, type BoardProfile } from '../../src/config/board-profile.js';
import { createLogger } from '../../src/core/log.js';
import { boardPowerFor } from '../../src/hw/fencing/fencing.js';
import { PowerController, type PowerTarget } from '../../src/sim/chassis/power-controller.js';

const log = createLogger('test', { level: 'silent' });

describe('BoardPower (a board rebooting itself)', () => {
  const simA = loadBoardProfile(join(PACKAGE_ROOT, 'board/sim-a.json'));
  const realBlade: BoardProfile = { ...simA, kind: 'real' };

  it('a real blade runs its reboot command, and a failing command is an error naming it', async () => {
    const ok = boardPowerFor(realBlade, ['true']);
    assert.equal(ok.method, 'command');
    await ok.rebootSelf();
    await assert.rejects(boardPowerFor(realBlade, ['false', 'now']).rebootSelf(), (e: { code: string; message: string }) => {
      assert.equal(e.code, 'US_ERR_INTERNAL');
      assert.match(e.message, /^reboot command false now failed: /);
      return true;
    });
  });

  it('a simulated board is reset by the chassis\' power controller', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'us-power-'));
    const resets: string[] = [];
    const target = (name: string): PowerTarget => ({
      power: 'on',
      powerOn: async () => undefined,
      powerOff: async () => undefined,
      reset: async (cause) => { resets.push(`${name} ${cause}`); return true; },
    });
    const controller = new PowerController({ 'sim-a': target('sim-a'), 'sim-b': target('sim-b') }, log);
    try {
      const socket = join(dir, 'power.sock');
      await controller.listen(socket);
      const power = boardPowerFor({ ...simA, fencing: { method: 'simulated', controlSocket: socket, action: 'reset', escalation: { maxResets: 3, windowS: 3600 } } }, ['never', 'run']);
      assert.equal(power.method, 'simulated');
      await power.rebootSelf();
      assert.deepEqual(resets, ['sim-a power-controller']);
    } finally {
      controller.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the power controller answers OFF and RESET at the power cut, before the board\'s processes are gone', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'us-power-'));
    let gone!: () => void;
    const teardown = new Promise<void>((r) => { gone = r; });
    const done: string[] = [];
    // A board whose processes take their time to go after the cut (QEMU freeing its guest memory).
    const target: PowerTarget = {
      power: 'on',
      powerOn: async () => undefined,
      powerOff: async (_cause, killed) => { killed?.(); await teardown; done.push('off'); },
      reset: async (_cause, killed) => { killed?.(); await teardown; done.push('reset'); return true; },
    };
    const controller = new PowerController({ 'sim-a': target, 'sim-b': target }, log);
    const ask = (socket: string, line: string) => new Promise<string>((resolve, reject) => {
      const c = connect(socket);
      let out = '';
      c.setEncoding('utf8');
      c.on('data', (d: string) => { out += d; if (out.includes('\n')) { c.end(); resolve(out.trim()); } });
      c.on('error', reject);
      c.write(`${line}\n`);
    });
    try {
      const socket = join(dir, 'power.sock');
      await controller.listen(socket);
      assert.equal(await ask(socket, 'OFF sim-b'), 'OK OFF sim-b');
      assert.equal(await ask(socket, 'RESET sim-a'), 'OK RESET sim-a');
      assert.deepEqual(done, [], 'answered while the processes were still going');
      gone();
      await new Promise((r) => setImmediate(r));
      assert.deepEqual(done.sort(), ['off', 'reset']);
    } finally {
      gone();
      controller.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a simulated board without the simulated power controller cannot reboot itself: a configuration error', () => {
    assert.throws(() => boardPowerFor({ ...simA, fencing: undefined }, ['systemctl', 'reboot']), {
      code: 'US_ERR_CONFIG',
      message: 'board sim-a is simulated but has no simulated power controller (fencing.method) to reboot it',
    });
  });
});
