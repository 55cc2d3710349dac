/**
 * The real-time governor of the membership process (src/ha/membership-process.ts): a process kept
 * busy above the bound loses SCHED_FIFO (checked on a real process the test starts real-time), one
 * below it keeps it. The CPU readings are given by the test (a busy loop's share depends on the load
 * of the machine running the test); the scheduling change is the kernel's.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { MembershipProcess, RT_GOVERNOR_LOOKS, RT_GOVERNOR_PERIOD_MS, type MembershipConfig } from '../../src/ha/membership-process.js';

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
});
