/**
 * The simulated chassis end to end, as root: two controllers in their own network namespaces, UDP
 * across the veth partner link (cut and healed), serial bytes through the pacing relay on real
 * ptys opened with serialport (cut and healed), a starved watchdog resetting its board, power
 * off/on, `down` leaving nothing behind, and the next `up` cleaning up after a crashed chassisd.
 *
 * The boards' HA layer may fence (power off) a partner it thinks is dead; these tests are about the
 * chassis, so they break the power controller first (fences then fail) and power boards on again
 * through the operator's switch when needed.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { constants, existsSync, openSync, readFileSync, readlinkSync, rmSync, statSync, writeSync, closeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { SerialPort } from 'serialport';
import { Chassis } from '../../src/sim/chassis/rig.js';
import { chassisDown } from '../../src/sim/chassis/launcher.js';
import { cleanupRecorded, type ChassisState } from '../../src/sim/chassis/state.js';
import { RUN_MARKER } from '../../src/sim/chassis/layout.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

async function eventually<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (${String(last)})` : ''}`);
}

function netnsInode(pid: number | 'self'): string {
  return readlinkSync(`/proc/${pid}/ns/net`);
}

function namespaces(): string[] {
  const out = execFileSync('ip', ['-j', 'netns', 'list'], { encoding: 'utf8' });
  return out.trim() ? (JSON.parse(out) as Array<{ name: string }>).map((n) => n.name) : [];
}

function rootLinks(): string[] {
  return (JSON.parse(execFileSync('ip', ['-j', 'link', 'show'], { encoding: 'utf8' })) as Array<{ ifname: string }>).map((l) => l.ifname);
}

function processesWithMarker(runDir: string): number[] {
  const found: number[] = [];
  for (const d of execFileSync('ls', ['/proc'], { encoding: 'utf8' }).split('\n')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/environ`, 'latin1').split('\0').includes(`${RUN_MARKER}=${runDir}`)) found.push(Number(d));
    } catch {
      // gone or a kernel thread
    }
  }
  return found;
}

function recordedPids(s: ChassisState): number[] {
  return [s.chassisd?.pid, ...s.helpers.map((h) => h.pid), ...Object.values(s.boards).map((b) => b?.controller?.pid)].filter((p): p is number => typeof p === 'number');
}

const UDP_ECHO = `
const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => s.send(m, r.port, r.address));
s.bind(7777, '198.51.100.2', () => process.stdout.write('listening\\n'));`;

const UDP_PROBE = `
const s = require('node:dgram').createSocket('udp4');
const t = setTimeout(() => process.exit(1), 700);
s.on('message', (m) => { if (m.toString() === 'probe') { clearTimeout(t); process.exit(0); } });
s.bind(0, '198.51.100.1', () => { for (const d of [0, 200, 400]) setTimeout(() => s.send('probe', 7777, '198.51.100.2'), d); });`;

describe('the simulated chassis (root)', function () {
  this.timeout(60000);
  const name = `ut${process.pid % 1000}`;
  const runDir = `/run/understudy/chassis-${name}`;
  let chassis: Chassis | undefined;
  const children: ChildProcess[] = [];

  /** Both boards on and answering (after a fence by the HA layer, say). */
  async function bothAnswering(): Promise<void> {
    for (const b of (await chassis!.status()).boards) if (b.power === 'off') await chassis!.power(b.board, 'on');
    await eventually('both controllers answer', async () => (await chassis!.status()).boards.every((b) => b.answers), 20000, 200);
  }

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    chassis = await Chassis.up({ name, runDir, baud: 115200 });
    // Fences fail from now on: the boards' own HA decisions must not switch boards off under these tests.
    await chassis.powerController('break');
    await bothAnswering();
  });

  after(async () => {
    for (const c of children) if (c.pid && alive(c.pid)) process.kill(c.pid, 'SIGKILL');
    await chassisDown({ name, runDir, purge: true });
  });

  it('runs each board\'s controller in its own network namespace', async () => {
    const st = await chassis!.status();
    const [a, b] = st.boards;
    assert.equal(a!.board, 'sim-a');
    assert.equal(b!.board, 'sim-b');
    for (const board of st.boards) {
      assert.equal(board.power, 'on');
      assert.equal(board.answers, true, `${board.board} answers on ${board.controlSocket}`);
      assert.ok(board.controller && alive(board.controller.pid));
      // The controller's network namespace is the one named for the board.
      const ns = chassis!.netns(board.board);
      assert.equal(netnsInode(board.controller.pid), `net:[${statSync(`/run/netns/${ns}`).ino}]`);
      assert.notEqual(netnsInode(board.controller.pid), netnsInode('self'));
    }
    assert.notEqual(netnsInode(a!.controller!.pid), netnsInode(b!.controller!.pid));
    assert.equal(st.links.ethernet.state, 'up');
    assert.equal(st.links.ethernet.ends['sim-a']?.adminUp, true);
    assert.equal(st.links.ethernet.ends['sim-b']?.adminUp, true);
  });

  it('carries UDP across plink between the namespaces; cut ethernet stops it, heal brings it back', async () => {
    const echo = chassis!.spawnIn('b', process.execPath, ['-e', UDP_ECHO], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(echo);
    await new Promise<void>((resolve, reject) => {
      echo.stdout!.once('data', () => resolve());
      echo.once('exit', (c) => reject(new Error(`echo server exited (${c})`)));
    });
    const probe = () => new Promise<boolean>((resolve) => {
      const p = chassis!.spawnIn('a', process.execPath, ['-e', UDP_PROBE], { stdio: 'ignore' });
      children.push(p);
      p.once('exit', (code) => resolve(code === 0));
    });
    assert.equal(await probe(), true, 'echo from sim-b over plink');
    assert.deepEqual(await chassis!.cut('ethernet'), { link: 'ethernet', state: 'cut', board: 'sim-a' });
    const st = await chassis!.status();
    assert.equal(st.links.ethernet.state, 'cut');
    assert.equal(st.links.ethernet.ends['sim-a']?.adminUp, false);
    assert.equal(await probe(), false, 'no echo while the link is cut');
    assert.equal(await probe(), false, 'still none');
    await chassis!.heal('ethernet');
    await eventually('echo after heal', async () => (await probe()) || undefined, 5000, 0);
    assert.equal((await chassis!.status()).links.ethernet.state, 'up');
    echo.kill('SIGKILL');
  });

  it('relays serial bytes a→b in order at about the configured pace, and drops them while cut; power off/on', async () => {
    // The boards' controllers hold the ptys: power both off, and the test opens them instead.
    const before = (await chassis!.status()).boards.map((b) => b.controller!.pid);
    await chassis!.power('a', 'off');
    await chassis!.fail('b', 'power');
    const off = await chassis!.status();
    assert.deepEqual(off.boards.map((b) => b.power), ['off', 'off']);
    for (const pid of before) assert.equal(alive(pid), false, `controller ${pid} gone with the power`);
    assert.equal(off.boards[1]!.resets.last?.cause, 'power-fail');

    const open = (path: string) => new Promise<SerialPort>((resolve, reject) => {
      const p = new SerialPort({ path, baudRate: 115200, autoOpen: false });
      p.open((e) => (e ? reject(e) : resolve(p)));
    });
    const a = await open(chassis!.layout.boards['sim-a'].serialDevice);
    const b = await open(chassis!.layout.boards['sim-b'].serialDevice);
    try {
      // Drain whatever the controllers left in the line before they were switched off.
      await sleep(300);
      b.read();
      const got: Buffer[] = [];
      let first = 0;
      let last = 0;
      b.on('data', (d: Buffer) => { got.push(d); last = performance.now(); first ||= last; });
      await sleep(100);
      got.length = 0;
      first = 0;
      const payload = randomBytes(23040); // 2 s of line time at 115200 baud
      const t0 = performance.now();
      a.write(payload);
      await eventually('all bytes arrive', () => Buffer.concat(got).length >= payload.length || undefined, 8000, 20);
      assert.ok(Buffer.concat(got).equals(payload), 'every byte, in order');
      const rate = payload.length / ((last - t0) / 1000);
      assert.ok(rate > 0.5 * 11520 && rate < 1.5 * 11520, `relayed at ${rate.toFixed(0)} B/s; 115200 baud is 11520 B/s`);

      await chassis!.cut('serial');
      got.length = 0;
      a.write(randomBytes(1000));
      await sleep(400);
      assert.equal(Buffer.concat(got).length, 0, 'nothing crosses a cut serial link');
      const cut = await chassis!.status();
      assert.equal(cut.links.serial.state, 'cut');
      assert.ok(cut.links.serial.aToB.droppedCut >= 1000);
      await chassis!.heal('serial');
      a.write(Buffer.from('healed'));
      await eventually('bytes after heal', () => Buffer.concat(got).toString() === 'healed' || undefined, 3000, 20);
    } finally {
      await Promise.all([a, b].map((p) => new Promise<void>((r) => (p.isOpen ? p.close(() => r()) : r()))));
    }

    await chassis!.power('a', 'on');
    await chassis!.power('b', 'on');
    await bothAnswering();
    const on = await chassis!.status();
    for (const board of on.boards) {
      assert.equal(board.power, 'on');
      assert.equal(board.boots, 2);
      assert.ok(!before.includes(board.controller!.pid), 'a new controller after power on');
    }
  });

  it('resets a board whose watchdog starves (controller hung), with a new controller', async () => {
    const b0 = await chassis!.board('b');
    const old = b0.controller!.pid;
    if (!b0.watchdog.armed) {
      // A controller that does not kick yet: arm the watchdog as its driver would.
      const fd = openSync(chassis!.layout.boards['sim-b'].watchdogFifo, constants.O_WRONLY | constants.O_NONBLOCK);
      writeSync(fd, Buffer.from([0]));
      closeSync(fd);
      await eventually('watchdog armed', async () => (await chassis!.board('b')).watchdog.armed || undefined, 2000);
    }
    const timeoutMs = b0.watchdog.timeoutMs;
    await chassis!.fail('b', 'hang');
    assert.equal((await chassis!.board('b')).controller?.state, 'hung');
    const t0 = Date.now();
    const after = await eventually('board reset by its watchdog', async () => {
      const b = await chassis!.board('b');
      return b.controller && b.controller.pid !== old && b.answers ? b : undefined;
    }, timeoutMs + 15000, 100);
    const took = Date.now() - t0;
    assert.ok(took >= timeoutMs - 100, `reset after ${took} ms, not before the ${timeoutMs} ms timeout`);
    assert.equal(after.resets.last?.cause, 'watchdog');
    assert.equal(after.watchdog.fired, b0.watchdog.fired + 1);
    assert.equal(alive(old), false, 'the hung controller was killed with its process group');
    assert.match(readFileSync(`${runDir}/chassisd.log`, 'utf8'), /watchdog reset sim-b/);
  });

  it('after a crashed chassisd, the next up cleans up and succeeds; down leaves nothing behind', async () => {
    const first = chassis!.recorded()!;
    const firstPids = recordedPids(first);
    assert.ok(firstPids.length >= 7, `recorded ${firstPids.join(', ')}`);
    process.kill(first.chassisd!.pid, 'SIGKILL');
    await eventually('chassisd gone', () => !alive(first.chassisd!.pid) || undefined, 5000, 50);
    await assert.rejects(chassis!.status(), /US_ERR_NOT_RUNNING|crashed/);

    chassis = await Chassis.up({ name, runDir, baud: 115200 });
    assert.ok(chassis.started.recovered, 'up reports that it cleaned up');
    assert.ok(chassis.started.recovered.killed.length >= 3, `killed: ${chassis.started.recovered.killed.join(', ')}`);
    for (const pid of firstPids) assert.equal(alive(pid), false, `pid ${pid} of the crashed run is gone`);
    const second = chassis.recorded()!;
    assert.notEqual(second.chassisd!.pid, first.chassisd!.pid);

    const down = await chassis.down();
    assert.equal(down.wasRunning, true);
    assert.equal(down.orderly, true);
    for (const pid of recordedPids(second)) assert.equal(alive(pid), false, `pid ${pid} is gone after down`);
    const ns = namespaces();
    for (const n of second.namespaces) assert.ok(!ns.includes(n), `namespace ${n} removed`);
    const links = rootLinks();
    for (const v of [...first.vethTemp, ...second.vethTemp]) assert.ok(!links.includes(v), `veth ${v} removed`);
    assert.deepEqual(processesWithMarker(runDir), [], 'no process of this chassis left');
    assert.equal(existsSync(`${runDir}/state.json`), false);
    // Down again: nothing to do, no error.
    assert.equal((await chassis.down()).wasRunning, false);
  });

  it('chassisd still stops everything it started when its run directory was removed under it', async () => {
    await chassis?.down(); // a fresh chassis (a no-op after the test above)
    chassis = await Chassis.up({ name, runDir, baud: 115200 });
    const rec = chassis.recorded()!;
    try {
      rmSync(runDir, { recursive: true, force: true }); // a tmpfs cleaner, an operator's rm -rf
      process.kill(rec.chassisd!.pid, 'SIGTERM');
      await eventually('chassisd exits', () => !alive(rec.chassisd!.pid) || undefined, 20000, 50);
      for (const pid of recordedPids(rec)) assert.equal(alive(pid), false, `pid ${pid} is gone`);
      const ns = namespaces();
      for (const n of rec.namespaces) assert.ok(!ns.includes(n), `namespace ${n} removed`);
      assert.deepEqual(processesWithMarker(runDir), [], 'no process of this chassis left');
    } finally {
      await cleanupRecorded(rec).catch(() => undefined); // whatever a failing chassisd left
    }
  });
});
