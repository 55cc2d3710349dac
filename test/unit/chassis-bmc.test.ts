/**
 * The simulated chassis' IPMI side, without ipmi_sim: each board's profile fences its partner through
 * the partner's BMC (in its own namespace, with its own password file), and the chassis-control
 * script ipmi_sim runs turns `get power`, `set power 0|1` and `set reset 1` into the power
 * controller's STATUS, OFF, ON and RESET (through socat, which half-closes the connection).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { boardProfileSchema } from '../../src/config/board-profile.js';
import { createLogger } from '../../src/core/log.js';
import { BMC_ADDRESS, bmcFiles, chassisControlScript } from '../../src/sim/chassis/bmc.js';
import type { PowerState } from '../../src/sim/chassis/board.js';
import { chassisLayout } from '../../src/sim/chassis/layout.js';
import { PowerController, type PowerTarget } from '../../src/sim/chassis/power-controller.js';
import { chassisProfile, templateFile } from '../../src/sim/chassis/profiles.js';

const run = promisify(execFile);
const log = createLogger('test', { level: 'silent' });

describe('simulated chassis: IPMI fencing (--fencing ipmi)', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-bmc-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('each board fences its partner through the partner\'s BMC, reachable in its own namespace; the profile is valid', () => {
    const layout = chassisLayout('t', join(dir, 'run'));
    for (const [board, partner] of [['sim-a', 'sim-b'], ['sim-b', 'sim-a']] as const) {
      const p = chassisProfile(JSON.parse(readFileSync(templateFile(board), 'utf8')), board, layout, 115200, 'ipmi');
      const check = boardProfileSchema.safeParse(p);
      assert.ok(check.success, JSON.stringify(!check.success && check.error.issues[0]));
      assert.equal(p.fencing.method, 'ipmitool');
      assert.equal(p.fencing.host, BMC_ADDRESS[partner]);
      assert.equal(p.fencing.action, 'reset', 'what a fence does stays the template\'s');
      const bmc = bmcFiles(layout, partner);
      assert.equal(bmc.netns, layout.boards[board].netns, 'the partner\'s BMC listens where this board is');
      assert.equal(p.fencing.passwordFile, bmc.partnerPasswordFile);
      assert.ok(p.fencing.passwordFile.startsWith(layout.boards[board].dir), 'the password file is in the fencing board\'s own folder');
    }
  });

  it('the chassis-control script carries out get power, set power 0|1 and set reset 1 on the power controller, and reports its refusals', async () => {
    const events: string[] = [];
    let power: PowerState = 'on';
    const target: PowerTarget = {
      get power() { return power; },
      powerOn: async () => { events.push('on'); power = 'on'; },
      powerOff: async () => { events.push('off'); power = 'off'; },
      reset: async (_c, killed) => { if (power === 'off') return false; events.push('reset'); killed?.(); return true; },
    };
    const other: PowerTarget = { power: 'on', powerOn: async () => undefined, powerOff: async () => undefined, reset: async () => true };
    const controller = new PowerController({ 'sim-a': other, 'sim-b': target }, log);
    const socket = join(dir, 'power.sock');
    await controller.listen(socket);
    try {
      const script = join(dir, 'chassis-control');
      writeFileSync(script, chassisControlScript(socket, 'sim-b'), { mode: 0o700 });
      const ctl = async (...args: string[]) => (await run(script, ['0x20', ...args], { timeout: 20000 })).stdout.trim();
      assert.equal(await ctl('get', 'power'), 'power:1');
      assert.equal(await ctl('set', 'power', '0'), '');
      assert.equal(power, 'off', 'the off is done when the script returns');
      assert.equal(await ctl('get', 'power'), 'power:0');
      await ctl('set', 'power', '1');
      assert.equal(power, 'on');
      await ctl('set', 'reset', '1');
      assert.deepEqual(events, ['off', 'on', 'reset']);
      controller.break();
      await assert.rejects(ctl('set', 'power', '0'), (e: { code: number; stderr: string }) => e.code === 1 && /ERR BROKEN/.test(e.stderr));
      assert.equal(power, 'on', 'a refused off leaves it on');
    } finally {
      controller.close();
    }
  });
});
