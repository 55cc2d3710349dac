/**
 * The guest's state-load outcome (issue 14, part 5), with real QEMU on one board: a guest whose state
 * disk holds a saved state that it cannot load (corrupted here; a newer format in guest-v2.test)
 * comes up empty and would serve and later SAVE over the disk. The controller reads its DX-STATE
 * line: the guest does not serve, the alarm is journaled (kind guest), the disk is left as it was;
 * `understudy guest start --start-empty` sets the disk aside (kept) and starts empty.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemonInBackground } from '../../src/cli/guest-commands.js';
import type { UdpClient } from '../../src/sim/udp-client.js';
import { Rig, alive, eventually } from '../support/rig.js';

describe('a guest that cannot load its saved state does not serve (real QEMU)', function () {
  this.timeout(300000);
  let rig: Rig;
  let client: UdpClient;
  const ask = (id: string, body: string) => client.request(id, body, 5000, 2);
  const manage = async (...words: string[]) => (await rig.cliJson('guest', 'manage', ...words, '--board', rig.boardFile)).reply as string;
  const stateDisk = () => join(rig.store, 'dx-legacy-state.img');
  const journal = (kind: string) => rig.journal(kind);
  let saved: Buffer;

  before(async () => {
    rig = new Rig();
    client = await rig.startServing();
  });
  after(() => rig?.cleanup());

  it('a guest with a good saved state loads it and serves it (the controller reads "DX-STATE loaded")', async () => {
    assert.equal(await ask('r1', 'REG alice'), 'r1 OK REG alice 1');
    assert.equal(await ask('r2', 'REG bob'), 'r2 OK REG bob 2');
    assert.match(await manage('SAVE'), /^OK SAVE \d+ seq=\d+$/);
    await rig.stopDaemon();
    await rig.startDaemon();
    assert.equal(await ask('s1', 'STATS'), 's1 OK STATS subs=2 active=0 total=0 version=1.0.0');
    const st = await rig.cliJson('guest', 'status', '--board', rig.boardFile);
    assert.equal(st.guest.stateLoad.expected, true);
    assert.equal(st.guest.stateLoad.outcome, 'loaded');
    assert.match(st.guest.stateLoad.line, /^DX-STATE loaded subs=2 /);
    await rig.stopDaemon();
    saved = readFileSync(stateDisk());
  });

  it('a corrupted state disk: the start is refused, the guest does not serve, the alarm is journaled, the disk is left as it was', async () => {
    const corrupted = Buffer.from(saved);
    corrupted[100] ^= 0xff; // inside the body: the body CRC no longer matches (reason=badcrc)
    writeFileSync(stateDisk(), corrupted);
    const qemuBefore = rig.qemuPid();
    const consoleBefore = readFileSync(join(rig.store, 'qemu', 'console.log'), 'latin1').length;
    await assert.rejects(startDaemonInBackground(rig.boardFile, rig.guestFile, 120000), (e: { code: string; message: string }) => {
      assert.equal(e.code, 'US_ERR_GUEST_STATE', e.message);
      assert.match(e.message, /came up without the saved state .*DX-STATE empty reason=badcrc.*--start-empty/);
      return true;
    });
    // No controller and no QEMU are left serving: the controller exited (no console), its QEMU was killed.
    const pidFile = join(rig.store, 'understudyd.pid');
    const daemon = existsSync(pidFile) ? Number.parseInt(readFileSync(pidFile, 'utf8'), 10) : undefined;
    if (daemon) await eventually(() => (alive(daemon) ? undefined : true), 15000);
    const qemu = rig.qemuPid();
    assert.ok(qemu === undefined || qemu === qemuBefore || !alive(qemu), 'the QEMU that came up empty was killed');
    await assert.rejects(client.request('x1', 'STATS', 1000, 1), 'the service address does not answer');
    assert.ok(readFileSync(stateDisk()).equals(corrupted), 'the state disk is exactly as it was (no SAVE over it)');
    const boots = readFileSync(join(rig.store, 'qemu', 'console.log'), 'latin1').slice(consoleBefore).match(/DX-STATE /g) ?? [];
    assert.equal(boots.length, 1, 'the refused guest is not restarted as if it had crashed');
    const alarms = journal('guest').filter((m) => m.startsWith('ALARM guest state refused'));
    assert.equal(alarms.length, 1, journal('guest').join('\n'));
    assert.match(alarms[0]!, /reason=badcrc/);
  });

  it('the operator starts it empty on purpose: the old disk is kept aside, the guest serves an empty state', async () => {
    const before = readFileSync(stateDisk());
    const r = await rig.cli('guest', 'start', '--start-empty', '--board', rig.boardFile, '--guest', rig.guestFile, '--json');
    assert.equal(r.code, 0, r.stdout + r.stderr);
    rig.daemonPid = (JSON.parse(r.stdout) as { pid: number }).pid;
    assert.equal(await ask('s2', 'STATS'), 's2 OK STATS subs=0 active=0 total=0 version=1.0.0');
    const aside = readdirSync(rig.store).filter((f) => f.startsWith('dx-legacy-state.img.aside-'));
    assert.equal(aside.length, 1, readdirSync(rig.store).join(' '));
    assert.ok(readFileSync(join(rig.store, aside[0]!)).equals(before), 'the refused disk is kept, byte for byte');
    assert.ok(journal('guest').some((m) => m.includes(`set aside as ${join(rig.store, aside[0]!)}`)), journal('guest').join('\n'));
    const st = await rig.cliJson('guest', 'status', '--board', rig.boardFile);
    assert.deepEqual([st.guest.stateLoad.expected, st.guest.stateLoad.outcome, st.guest.stateLoad.reason], [false, 'empty', 'blank']);
  });
});
