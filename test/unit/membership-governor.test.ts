/**
 * The real-time governors of the membership process: the controller's (src/ha/membership-process.ts)
 * and its own (src/ha/rt-governor.ts). A process kept busy above the bound loses SCHED_FIFO (checked
 * on a real process the test starts real-time), one below it keeps it. For the rule, the CPU
 * readings are given by the test (a busy loop's share depends on the load of the machine running the
 * test); the scheduling change is the kernel's. The membership process's own governor is also run
 * for real: a process at SCHED_FIFO pinned to one core, its event loop kept busy, drops its own
 * real-time scheduling through the chrt it starts.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MembershipProcess, RT_GOVERNOR_LOOKS, RT_GOVERNOR_PERIOD_MS, type MembershipConfig } from '../../src/ha/membership-process.js';
import { BusyLooks, RT_SELF_LOOKS, RT_SELF_PERIOD_MS, SelfGovernor } from '../../src/ha/rt-governor.js';

const policy = (pid: number) => execFileSync('chrt', ['-p', String(pid)], { encoding: 'utf8' }).split('\n')[0]!;

describe('membership process: the real-time governor', () => {
  let child: ChildProcess | undefined;
  afterEach(() => {
    if (child?.pid && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
    child = undefined;
  });

  async function realtimeSleeper(): Promise<number> {
    child = spawn('chrt', ['-f', '1', 'sleep', '30'], { stdio: 'ignore' });
    const pid = child.pid!;
    for (let i = 0; i < 100 && !/SCHED_FIFO/.test(policy(pid)); i++) await new Promise((r) => setTimeout(r, 20));
    assert.match(policy(pid), /SCHED_FIFO/);
    return pid;
  }

  const cfg = { rtPriority: 20 } as MembershipConfig;

  it(`drops real-time scheduling of a process busy above the bound at ${RT_GOVERNOR_LOOKS} looks in a row (${RT_GOVERNOR_LOOKS * RT_GOVERNOR_PERIOD_MS} ms), and says why`, async () => {
    const pid = await realtimeSleeper();
    const m = new MembershipProcess(cfg);
    let ticks = 0;
    m.readTicks = () => (ticks += 100); // a whole core's worth at each look
    const dropped = once(m, 'rt-dropped');
    for (let i = 0; i < RT_GOVERNOR_LOOKS; i++) m.govern(pid);
    assert.equal(m.rtDropped, undefined, 'not before the bound has lasted');
    m.govern(pid);
    const [reason, threads] = (await dropped) as [string, string];
    assert.match(reason, /real-time scheduling dropped/);
    assert.match(threads, /sleep:\d+/, 'the per-thread CPU of the process is reported');
    assert.match(policy(pid), /SCHED_OTHER/);
  });

  it('leaves a process that is busy only now and then real-time', async () => {
    const pid = await realtimeSleeper();
    const m = new MembershipProcess(cfg);
    let ticks = 0;
    let k = 0;
    m.readTicks = () => (ticks += (k++ % 3 === 0 ? 0 : 100)); // never RT_GOVERNOR_LOOKS busy looks in a row
    for (let i = 0; i < 12; i++) m.govern(pid);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(m.rtDropped, undefined);
    assert.match(policy(pid), /SCHED_FIFO/);
  });

  describe('its own governor', () => {
    it(`the rule: above the share at ${RT_SELF_LOOKS} looks in a row, not when a quiet look breaks the row`, () => {
      const r = new BusyLooks(0.7, 3);
      assert.equal(r.look(90, 100), false);
      assert.equal(r.look(90, 100), false);
      assert.equal(r.look(10, 100), false, 'a quiet look starts the row again');
      assert.equal(r.look(90, 100), false);
      assert.equal(r.look(90, 100), false);
      assert.equal(r.look(70, 100), false, 'at the share is not above it');
      assert.equal(r.look(95, 100), false);
      assert.equal(r.look(95, 100), false);
      assert.equal(r.look(95, 100), true);
      assert.equal(r.busyLooks, 3);
    });

    it('looks on its own timer and drops once, with the reason and the threads\' CPU', async () => {
      // Each look reads 100 ms of wall time and 95 ms of CPU since the last.
      let cpu = 0;
      let now = 0;
      const drops: string[] = [];
      let said: [string, string] | undefined;
      const g = new SelfGovernor({
        periodMs: 1, looks: 3, share: 0.7,
        cpuMs: () => (cpu += 95), now: () => (now += 100),
        drop: () => { drops.push('drop'); return undefined; },
        dropped: (reason, threads) => { said = [reason, threads]; },
      });
      try {
        for (let i = 0; i < 200 && !said; i++) await new Promise((r) => setTimeout(r, 2));
        assert.ok(said, 'dropped');
        assert.equal(drops.length, 1);
        assert.equal(cpu, 95 * 4, 'at the third look (after the first reading)');
        assert.match(said[0], /used 95 % of a core .* seen by itself\): real-time scheduling dropped/);
        assert.match(said[1], /:\d+/, 'per-thread ticks');
        await new Promise((r) => setTimeout(r, 20));
        assert.equal(drops.length, 1, 'once, and no look after it');
        assert.equal(cpu, 95 * 4);
      } finally {
        g.stop();
      }
    });

    it(`a process at SCHED_FIFO on one core whose event loop spins drops its own real-time scheduling (through its chrt, at its priority); a quiet one keeps it`, async function () {
      this.timeout(60000);
      child = spawn('taskset', ['-c', '0', process.execPath, join(dirname(fileURLToPath(import.meta.url)), '..', 'support', 'self-governor-rt.js')],
        { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const c = child;
      const next = <T>(t: string) => new Promise<T>((resolve, reject) => {
        const onMsg = (m: { t: string }) => { if (m.t === t) { c.off('exit', onExit); c.off('message', onMsg); resolve(m as T); } };
        const onExit = (code: number | null) => { c.off('message', onMsg); reject(new Error(`self-governor-rt exited (${code})`)); };
        c.on('message', onMsg);
        c.once('exit', onExit);
      });
      await next('ready');
      const pid = c.pid!;
      assert.match(policy(pid), /SCHED_FIFO/);
      // Quiet for many looks: it stays real-time.
      await new Promise((r) => setTimeout(r, RT_SELF_PERIOD_MS * RT_SELF_LOOKS * 4));
      assert.match(policy(pid), /SCHED_FIFO/, 'a quiet loop keeps real-time scheduling');
      const dropped = next<{ reason: string; threads: string }>('dropped');
      c.send({ t: 'spin' });
      const d = await dropped;
      assert.match(d.reason, /real-time scheduling dropped/);
      assert.doesNotMatch(d.reason, /failed/, d.reason);
      for (const tid of execFileSync('ls', [`/proc/${pid}/task`], { encoding: 'utf8' }).trim().split(/\s+/)) {
        assert.match(policy(Number(tid)), /SCHED_OTHER/, `thread ${tid} is back to normal scheduling`);
      }
    });
  });
});
