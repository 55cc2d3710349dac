/**
 * The reference guest's version 2 with real QEMU, on one board and one state disk: v1 serves and is
 * stopped gracefully (SAVE STOP); a deliberately broken v2 loads that state and dies before it is
 * ready, leaving the disk untouched; v2 converts the v1 state (format 1 -> 2) and serves it unchanged,
 * plus call forwarding; v2 reloads its own format; v1 refuses the v2 format, and the controller then
 * refuses to serve that empty v1 (issue 14). PROTOCOL.md §6, §8, §11.
 */
import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';
import { startDaemonInBackground } from '../../src/cli/guest-commands.js';
import { UdpClient } from '../../src/sim/udp-client.js';
import { Rig, alive, eventually } from '../support/rig.js';

/** The saved-state region of the state disk (a full state is < 1 MiB). */
function stateRegion(file: string): Buffer {
  const buf = Buffer.alloc(1048576);
  const fd = openSync(file, 'r');
  try {
    readSync(fd, buf, 0, buf.length, 0);
  } finally {
    closeSync(fd);
  }
  return buf;
}

describe('guest application v2: upgrade over the saved state (real QEMU)', function () {
  this.timeout(300000);
  let rig: Rig;
  let client: UdpClient;
  let consoleSeen = 0;
  const ask = (id: string, body: string) => client.request(id, body, 5000, 2);
  const manage = async (...words: string[]) => (await rig.cliJson('guest', 'manage', ...words, '--board', rig.boardFile)).reply as string;
  const stateDisk = () => join(rig.store, 'dx-legacy-state.img');
  /** Console lines printed since the last call (the console log is appended across boots). */
  const newConsole = () => {
    const text = readFileSync(join(rig.store, 'qemu', 'console.log'), 'latin1');
    const fresh = text.slice(consoleSeen);
    consoleSeen = text.length;
    return fresh;
  };
  /** Boots `file` on this board (same storage, same state disk) and returns its new console lines. */
  const boot = async (file: string) => {
    await rig.stopDaemon(); // the previous step's controller, if that step failed half-way
    rig.useGuest(file);
    await rig.startDaemon();
    return newConsole();
  };
  /** The v1 service state as the clients and the controller see it. */
  const snapshot = async (tag: string) => ({
    gets: await Promise.all(['alice', 'bob', 'carol', 'dave'].map((s, i) => ask(`${tag}g${i}`, `GET ${s}`))),
    stats: await ask(`${tag}s`, 'STATS'),
    state: await manage('STATE'),
  });
  let v1: Awaited<ReturnType<typeof snapshot>>;
  let v1Disk: Buffer;
  let v2State: string;

  before(async () => {
    rig = new Rig();
    await rig.startHlr();
    await rig.startDaemon();
    client = await new UdpClient(rig.board.service).open();
  });
  after(async () => {
    client?.close();
    await rig?.cleanup();
  });

  it('v1 serves, then stops gracefully after saving its state (SAVE STOP)', async () => {
    for (const [i, s] of ['alice', 'bob', 'carol', 'dave'].entries()) assert.equal(await ask(`r${i}`, `REG ${s}`), `r${i} OK REG ${s} ${i + 1}`);
    assert.equal(await ask('c1', 'CALL alice bob'), 'c1 OK CALL 1');
    assert.equal(await ask('c2', 'CALL carol dave'), 'c2 OK CALL 2');
    assert.equal(await ask('e2', 'END 2'), 'e2 OK END 2');
    assert.equal(await ask('f1', 'FWD alice bob'), 'f1 ERR BADCMD FWD', 'v1 has no call forwarding');
    v1 = await snapshot('a');
    assert.deepEqual(v1.gets, [
      'ag0 OK GET alice calls=1 state=busy', 'ag1 OK GET bob calls=1 state=busy',
      'ag2 OK GET carol calls=1 state=idle', 'ag3 OK GET dave calls=1 state=idle',
    ]);
    assert.equal(v1.stats, 'as OK STATS subs=4 active=1 total=2 version=1.0.0');
    const seq = /seq=(\d+)/.exec(v1.state)![1];
    assert.match(await manage('SAVE', 'STOP'), new RegExp(`^OK SAVE \\d+ seq=${seq}$`));
    const con = await eventually(() => { const c = readFileSync(join(rig.store, 'qemu', 'console.log'), 'latin1'); return c.includes('DX-EXIT') ? c : undefined; }, 30000);
    assert.match(con, new RegExp(`DX-STOP seq=${seq}\\r?\\nDX-EXIT status=0`));
    newConsole();
    await rig.stopDaemon();
    v1Disk = stateRegion(stateDisk());
  });

  it('a broken v2 (DX_BREAK=crash) loads the state, never becomes ready and leaves the disk as it was', async () => {
    rig.useGuest('dx-legacy-v2-broken.json');
    let outcome: 'pending' | 'ready' | 'failed' = 'pending';
    const start = startDaemonInBackground(rig.boardFile, rig.guestFile, 120000)
      .then((pid) => { outcome = 'ready'; rig.daemonPid = pid; }, () => { outcome = 'failed'; });
    let whenExited: string = outcome;
    try {
      // The application has exited (it aborts right after loading); the controller is still waiting.
      await eventually(() => (readFileSync(join(rig.store, 'qemu', 'console.log'), 'latin1').slice(consoleSeen).includes('DX-EXIT') ? true : undefined), 90000);
      whenExited = outcome;
    } finally {
      // The controller never reports ready, so the rig does not know its pid: take it from its lock file.
      const pidFile = join(rig.store, 'understudyd.pid');
      const pid = existsSync(pidFile) ? Number.parseInt(readFileSync(pidFile, 'utf8'), 10) : undefined;
      if (pid && alive(pid) && !rig.daemonPid) rig.daemonPid = pid;
      await rig.stopDaemon();
      await start;
    }
    assert.equal(whenExited, 'pending', 'the controller was neither ready nor failed while the application lay dead');
    assert.equal(outcome, 'failed');
    const con = newConsole();
    assert.match(con, /DX-STATE loaded subs=4 total=2 active=1 seq=\d+ format=1 converted/);
    assert.match(con, /DX-BROKEN crash after state load/);
    assert.match(con, /DX-EXIT status=134/);
    assert.doesNotMatch(con, /DX-READY/);
    assert.ok(stateRegion(stateDisk()).equals(v1Disk), 'the broken upgrade changed the saved state');
  });

  it('v2 converts the v1 state and serves it unchanged: same GET counters, STATS and sequence', async () => {
    const con = await boot('dx-legacy-v2.json');
    const seq = /seq=(\d+)/.exec(v1.state)![1];
    assert.match(con, new RegExp(`DX-STATE loaded subs=4 total=2 active=1 seq=${seq} format=1 converted`));
    assert.match(con, /DX-READY 2\.0\.0/);
    assert.match(await manage('PING'), new RegExp(`^OK PING 2\\.0\\.0 seq=${seq}$`));
    const v2 = await snapshot('b');
    assert.deepEqual(v2.gets, v1.gets.map((g) => `${g.replace(/^ag/, 'bg')} fwd=-`));
    assert.equal(v2.stats, v1.stats.replace(/^as/, 'bs').replace('version=1.0.0', 'version=2.0.0'));
    // Same counters and reply cache size; the crc is of the v2 body, so it differs.
    const counters = (s: string) => s.replace(/ crc=\S+/, '').replace(/seq=\d+/, '');
    assert.equal(counters(v2.state), counters(v1.state).replace(/cache=(\d+)/, (_m, c: string) => `cache=${Number(c) + 5}`));
    assert.equal(await ask('f1', 'FWD alice bob'), 'f1 ERR BADCMD FWD', 'the reply cache came over: a retried v1 id gets the v1 answer, not applied again');
  });

  it('v2 forwards calls (FWD) and shows it in GET', async () => {
    assert.equal(await ask('w1', 'FWD dave carol'), 'w1 OK FWD dave carol');
    assert.equal(await ask('w2', 'GET dave'), 'w2 OK GET dave calls=1 state=idle fwd=carol');
    assert.equal(await ask('r5', 'REG erin'), 'r5 OK REG erin 5');
    assert.equal(await ask('c3', 'CALL erin dave'), 'c3 OK CALL 3', 'a call to dave rings carol');
    assert.equal(await ask('w3', 'GET carol'), 'w3 OK GET carol calls=2 state=busy fwd=-');
    assert.equal(await ask('w4', 'GET dave'), 'w4 OK GET dave calls=1 state=idle fwd=carol');
    assert.equal(await ask('c4', 'CALL bob dave'), 'c4 ERR BUSY bob', 'the caller is checked first');
    assert.equal(await ask('w5', 'FWD alice zed'), 'w5 ERR UNKNOWN zed');
    assert.equal(await ask('w6', 'FWD bob -'), 'w6 OK FWD bob -');
    assert.equal(await ask('s2', 'STATS'), 's2 OK STATS subs=5 active=2 total=3 version=2.0.0');
    v2State = await manage('STATE');
    assert.match(await manage('SAVE', 'STOP'), /^OK SAVE \d+ seq=\d+$/);
    await eventually(() => (readFileSync(join(rig.store, 'qemu', 'console.log'), 'latin1').slice(consoleSeen).includes('DX-EXIT') ? true : undefined), 30000);
    newConsole();
    await rig.stopDaemon();
  });

  it('v2 reloads its own format 2 state, forwarding included', async () => {
    const con = await boot('dx-legacy-v2.json');
    assert.match(con, /DX-STATE loaded subs=5 total=3 active=2 seq=\d+ format=2\r?\n/);
    assert.equal(await manage('STATE'), v2State, 'same state, same crc');
    assert.equal(await ask('g1', 'GET dave'), 'g1 OK GET dave calls=1 state=idle fwd=carol');
    await rig.stopDaemon();
  });

  it('v1 meets the v2 state (a newer format): it comes up empty, so the controller refuses to serve it and leaves the disk as it was', async () => {
    await rig.stopDaemon();
    rig.useGuest('dx-legacy.json');
    const disk = stateRegion(stateDisk());
    await assert.rejects(rig.startDaemon(), (e: { code: string; message: string }) => {
      assert.equal(e.code, 'US_ERR_GUEST_STATE', e.message);
      assert.match(e.message, /DX-STATE empty reason=badformat/);
      return true;
    });
    assert.match(newConsole(), /DX-STATE empty reason=badformat/);
    await assert.rejects(client.request('z1', 'STATS', 1000, 1), 'nothing serves on the service address');
    assert.ok(stateRegion(stateDisk()).equals(disk), 'the v2 state on the disk is untouched');
  });
});
