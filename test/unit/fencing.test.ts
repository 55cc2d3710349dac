/**
 * The fencing devices' reset (a fence that power-cycles the partner): the simulated chassis' power
 * controller answers RESET as soon as the board is down (not once it is up again) and leaves a board
 * that is off as it is; ipmitool does status, off, on (the off confirmed before the board returns)
 * and reports a board it could not power on again as fenced all the same.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../src/core/log.js';
import { IpmitoolFencing, SimulatedPowerController, ipmitoolFailure } from '../../src/hw/fencing/fencing.js';
import { PowerController, type PowerTarget } from '../../src/sim/chassis/power-controller.js';
import type { PowerState } from '../../src/sim/chassis/board.js';

const log = createLogger('test', { level: 'silent' });

describe('fencing devices: reset', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-fence-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('the simulated power controller answers RESET once the board is down, before it boots again; a board that is off is left off', async () => {
    const steps: string[] = [];
    let releaseBoot!: () => void;
    const booted = new Promise<void>((r) => { releaseBoot = r; });
    const target = (name: string, power: PowerState): PowerTarget => ({
      power,
      powerOn: async () => undefined,
      powerOff: async () => undefined,
      reset: async (_cause, killed) => {
        if (power === 'off') return false;
        steps.push(`${name} killed`);
        killed?.();
        await booted; // the reset delay and the boot: the answer must not wait for them
        steps.push(`${name} booted`);
        return true;
      },
    });
    const controller = new PowerController({ 'sim-a': target('sim-a', 'on'), 'sim-b': target('sim-b', 'off') }, log);
    try {
      const socket = join(dir, 'power.sock');
      await controller.listen(socket);
      const device = new SimulatedPowerController(socket);
      assert.deepEqual(await device.reset('sim-a'), { outcome: 'reset' });
      assert.deepEqual(steps, ['sim-a killed'], 'answered before the boot');
      releaseBoot();
      assert.deepEqual(await device.reset('sim-b'), { outcome: 'was-off' });
      assert.deepEqual(controller.status().recent.map((r) => `${r.request} → ${r.reply}`), ['RESET sim-a → OK RESET sim-a', 'RESET sim-b → OK OFF sim-b']);
      controller.break();
      await assert.rejects(device.reset('sim-a'), (e: { code: string; message: string }) => e.code === 'US_ERR_FENCING' && /ERR BROKEN/.test(e.message));
    } finally {
      controller.close();
    }
  });

  it('ipmitool: status, then off, then on; a board found off is left off; one that does not power on again is fenced all the same', async () => {
    const calls = join(dir, 'calls');
    const fake = join(dir, 'ipmitool');
    // A stand-in ipmitool: records its last argument; the power state and a failing power on come from files.
    writeFileSync(fake, `#!/bin/sh
for last; do :; done
echo "$last" >> ${calls}
case "$last" in
  status) echo "Chassis Power is $(cat ${dir}/state)";;
  on) [ -e ${dir}/fail-on ] && { echo "Error: power on refused" >&2; exit 1; }; echo "Chassis Power Control: Up/On";;
  off) echo "Chassis Power Control: Down/Off";;
esac
`);
    chmodSync(fake, 0o755);
    const device = new IpmitoolFencing({ host: '192.0.2.2', user: 'u', passwordFile: '/dev/null', partnerTarget: '0x86' }, fake);
    const seen = () => readFileSync(calls, 'utf8').trim().split('\n');
    writeFileSync(join(dir, 'state'), 'on');
    assert.deepEqual(await device.reset('blade-b'), { outcome: 'reset' });
    assert.deepEqual(seen(), ['status', 'off', 'on']);
    writeFileSync(calls, '');
    writeFileSync(join(dir, 'state'), 'off');
    assert.deepEqual(await device.reset('blade-b'), { outcome: 'was-off' });
    assert.deepEqual(seen(), ['status'], 'left off: no off, no on');
    writeFileSync(calls, '');
    writeFileSync(join(dir, 'state'), 'on');
    writeFileSync(join(dir, 'fail-on'), '');
    const r = await device.reset('blade-b');
    assert.equal(r.outcome, 'left-off');
    assert.match(r.why!, /ipmitool power on of blade-b \(0x86 at 192\.0\.2\.2\) failed/);
  });

  it('ipmitool: the password stays in its file (-f), never in argv; a missing password file is an error naming it and how to write it', async () => {
    const device = new IpmitoolFencing({ host: '127.0.0.1', port: 6230, user: 'fence', passwordFile: join(dir, 'absent.pass') }, '/bin/true');
    const argv = device.args('off');
    assert.deepEqual(argv.slice(argv.indexOf('-f'), argv.indexOf('-f') + 2), ['-f', join(dir, 'absent.pass')]);
    assert.ok(!argv.includes('-P') && !argv.includes('-E'), argv.join(' '));
    assert.deepEqual(argv.slice(-3), ['chassis', 'power', 'off']);
    assert.ok(!argv.includes('-t'), 'no partnerTarget: not bridged');
    assert.deepEqual(argv.slice(argv.indexOf('-p'), argv.indexOf('-p') + 2), ['-p', '6230']);
    await assert.rejects(device.powerOff('blade-b'), (e: { code: string; message: string }) => e.code === 'US_ERR_FENCING'
      && e.message.includes(`fencing.passwordFile ${join(dir, 'absent.pass')}: ENOENT`) && /chmod 600/.test(e.message) && /blade-b \(BMC 127\.0\.0\.1:6230\)/.test(e.message));
  });

  it('ipmitool: a power off the BMC does not confirm is not a fence', async () => {
    const fake = join(dir, 'ipmitool');
    writeFileSync(fake, '#!/bin/sh\necho "Chassis Power Control: Up/On"\n');
    chmodSync(fake, 0o755);
    writeFileSync(join(dir, 'pass'), 'x\n');
    const device = new IpmitoolFencing({ host: '192.0.2.2', user: 'u', passwordFile: join(dir, 'pass') }, fake);
    await assert.rejects(device.powerOff('blade-b'), (e: { code: string; message: string }) => e.code === 'US_ERR_FENCING' && /not confirmed/.test(e.message));
  });

  it('ipmitool failures in words: ipmitool -v\'s RAKP messages (captured from ipmitool 1.8.19 against ipmi_sim) and a killed call', () => {
    const fail = (stderr: string, extra: Record<string, unknown> = {}) => ipmitoolFailure(Object.assign(new Error('Command failed'), { code: 1, stderr, ...extra }), 2000);
    assert.match(fail('Loading IANA PEN Registry...\n> RAKP 2 HMAC is invalid\nError: Unable to establish IPMI v2 / RMCP+ session\n'), /refused the credentials \(wrong password/);
    assert.match(fail('Loading IANA PEN Registry...\nRAKP 2 message indicates an error : unauthorized name\nError: Unable to establish IPMI v2 / RMCP+ session\n'), /refused the credentials \(unknown user/);
    assert.match(fail('Loading IANA PEN Registry...\nGet Auth Capabilities error\nError issuing Get Channel Authentication Capabilities request\nError: Unable to establish IPMI v2 / RMCP+ session\n'), /no answer from the BMC/);
    assert.match(fail('', { killed: true, signal: 'SIGKILL', code: null }), /did not answer within 2000 ms/);
    assert.match(ipmitoolFailure(Object.assign(new Error('spawn ipmitool ENOENT'), { code: 'ENOENT' }), 2000), /Debian package ipmitool/);
  });
});
