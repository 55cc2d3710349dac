/**
 * parseProcStat (src/hw/proc-state.ts), the one reader of /proc/<pid>/stat fields: a name holding
 * spaces and parentheses, fields by their proc(5) numbers, CPU ticks; and the live line of this
 * process.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { cpuAvailability, parseProcStat, procState, readSchedSample, type SchedSample, type ThreadSched } from '../../src/hw/proc-state.js';

describe('/proc/<pid>/stat fields', () => {
  it('a name with spaces and parentheses does not shift the fields', () => {
    // fields 1..41 of a made-up line: 14 utime 7, 15 stime 5, 22 starttime 999, 40 rt_priority 20, 41 policy 1.
    const after = Array.from({ length: 39 }, (_, i) => String(i + 3));
    after[0] = 'S';
    after[14 - 3] = '7';
    after[15 - 3] = '5';
    after[22 - 3] = '999';
    after[40 - 3] = '20';
    after[41 - 3] = '1';
    const st = parseProcStat(`4242 (a (b) c) ${after.join(' ')}`);
    assert.equal(st.name, 'a (b) c');
    assert.deepEqual([st.field(3), st.field(4), st.field(22), st.field(40), st.field(41)], ['S', '4', '999', '20', '1']);
    assert.equal(st.cpuTicks, 12);
  });

  it('this process: its state, parent and a CPU count that never goes back', () => {
    const st = parseProcStat(readFileSync('/proc/self/stat', 'latin1'));
    assert.equal(Number(st.field(4)), process.ppid);
    assert.equal(procState(process.pid), 'R');
    let x = 0;
    for (let i = 0; i < 2e6; i++) x += i;
    assert.ok(x > 0 && parseProcStat(readFileSync('/proc/self/stat', 'latin1')).cpuTicks >= st.cpuTicks);
  });

  describe('whether a process had the CPU it asked for (cpuAvailability, the fast hang check)', () => {
    const ms = 1e6;
    const sample = (at: number, threads: Array<[number, Partial<ThreadSched>]>): SchedSample => ({
      at, threads: new Map(threads.map(([tid, t]) => [tid, { runNs: 0, waitNs: 0, state: 'S', ...t }])),
    });
    it('threads asleep, little waiting: available (a guest idle with work to do is stuck)', () => {
      const a = sample(100, [[1, { runNs: 10 * ms, waitNs: 5 * ms }], [2, { runNs: 50 * ms, waitNs: 1 * ms }]]);
      const b = sample(115, [[1, { runNs: 10.5 * ms, waitNs: 5.8 * ms }], [2, { runNs: 50.2 * ms, waitNs: 1.3 * ms }]]);
      const r = cpuAvailability(a, b);
      assert.equal(r.verdict, 'available', r.why);
      assert.equal(r.windowMs, 15);
      assert.equal(r.waitMs, 1.1);
    });
    it('a thread spinning (runnable, ran most of the window): available', () => {
      const a = sample(0, [[1, { runNs: 0 }], [2, {}]]);
      const b = sample(20, [[1, { runNs: 18 * ms, waitNs: 1 * ms, state: 'R' }], [2, {}]]);
      assert.equal(cpuAvailability(a, b).verdict, 'available');
    });
    it('threads that waited on run queues a third of the window in all: starved (slow, not hung)', () => {
      const a = sample(0, [[1, {}], [2, {}]]);
      const b = sample(15, [[1, { waitNs: 3 * ms }], [2, { waitNs: 2 * ms }]]);
      const r = cpuAvailability(a, b);
      assert.equal(r.verdict, 'starved');
      assert.match(r.why, /5 ms waiting for a CPU in 15 ms: the machine is too busy/);
      assert.equal(cpuAvailability(a, sample(15, [[1, { waitNs: 2 * ms }], [2, { waitNs: 2 * ms }]])).verdict, 'available', 'just under a third');
    });
    it('a thread in uninterruptible sleep (host I/O): starved, whatever the waits', () => {
      const a = sample(0, [[1, {}]]);
      assert.equal(cpuAvailability(a, sample(15, [[1, { state: 'D' }]])).verdict, 'starved');
    });
    it('a thread runnable at the look that ran under half the window: unsure (its wait is counted only once it runs)', () => {
      const a = sample(0, [[1, {}], [2, {}]]);
      const r = cpuAvailability(a, sample(16, [[1, { runNs: 2 * ms, state: 'R' }], [2, {}]]));
      assert.equal(r.verdict, 'unsure');
      assert.match(r.why, /thread 1 runnable now/);
    });
    it('much waiting in all, but the vCPU thread (QEMU\'s `CPU 0/TCG`) asleep half the window or more while no other thread waited a third of it: available (a hung guest idles with work to do, while its QEMU takes the packets sent to it)', () => {
      const a = sample(0, [[1, { name: 'qemu-system-x86' }], [2, { name: 'CPU 0/TCG' }], [3, { name: 'call_rcu' }]]);
      const b = sample(20, [[1, { name: 'qemu-system-x86', runNs: 3 * ms, waitNs: 6 * ms }], [2, { name: 'CPU 0/TCG', runNs: 2 * ms, waitNs: 3 * ms }], [3, { name: 'call_rcu', waitNs: 1 * ms }]]);
      const r = cpuAvailability(a, b);
      assert.equal(r.verdict, 'available', r.why);
      assert.match(r.why, /10 ms waiting for a CPU in 20 ms, but its vCPU sat idle 15 ms of them with work to do/);
    });
    it('the vCPU mostly waiting (a healthy guest kept from the CPU): starved; the vCPU idle but the main thread waiting a third of the window (packets not delivered): starved; a thread runnable at the end: not judged idle', () => {
      const a = sample(0, [[1, { name: 'qemu-system-x86' }], [2, { name: 'CPU 0/TCG' }]]);
      assert.equal(cpuAvailability(a, sample(20, [[1, { name: 'qemu-system-x86', waitNs: 1 * ms }], [2, { name: 'CPU 0/TCG', runNs: 4 * ms, waitNs: 12 * ms }]])).verdict, 'starved');
      assert.equal(cpuAvailability(a, sample(20, [[1, { name: 'qemu-system-x86', waitNs: 7 * ms }], [2, { name: 'CPU 0/TCG', runNs: 1 * ms, waitNs: 1 * ms }]])).verdict, 'starved');
      const r = cpuAvailability(a, sample(20, [[1, { name: 'qemu-system-x86', waitNs: 5 * ms }], [2, { name: 'CPU 0/TCG', runNs: 1 * ms, waitNs: 2 * ms, state: 'R' }]]));
      assert.equal(r.verdict, 'unsure', r.why);
    });
    it('a thread runnable at the previous look and now without having run in between: starved (waiting for a CPU now, a wait not yet in its schedstat: a CFS quota throttling the process looks like this), whatever the vCPU did', () => {
      const a = sample(0, [[1, { name: 'qemu-system-x86' }], [2, { name: 'CPU 0/TCG' }]]);
      const prev = sample(15, [[1, { name: 'qemu-system-x86', runNs: 1 * ms, state: 'R' }], [2, { name: 'CPU 0/TCG' }]]);
      const b = sample(20, [[1, { name: 'qemu-system-x86', runNs: 1 * ms, state: 'R' }], [2, { name: 'CPU 0/TCG' }]]);
      assert.equal(cpuAvailability(a, b).verdict, 'unsure', 'without the earlier look');
      const r = cpuAvailability(a, b, prev);
      assert.equal(r.verdict, 'starved', r.why);
      assert.match(r.why, /thread 1 runnable without running for the last 5 ms/);
      // It ran in between (it was running at the looks): not waiting; judged on the rest (the vCPU idle here).
      const ran = sample(20, [[1, { name: 'qemu-system-x86', runNs: 2 * ms, state: 'R' }], [2, { name: 'CPU 0/TCG' }]]);
      assert.equal(cpuAvailability(a, ran, prev).verdict, 'unsure');
      assert.equal(cpuAvailability(a, sample(20, [[1, { name: 'qemu-system-x86', runNs: 2 * ms }], [2, { name: 'CPU 0/TCG' }]]), prev).verdict, 'available');
    });
    it('threads in one sample only (started or ended between them) are left out', () => {
      const a = sample(0, [[1, {}], [3, { waitNs: 0 }]]);
      const b = sample(15, [[1, {}], [2, { waitNs: 100 * ms, state: 'R' }]]);
      assert.equal(cpuAvailability(a, b).verdict, 'available');
    });
    it('a live process: every thread read, run and wait counters that never go back; a sleeping child is available', async function () {
      this.timeout(10000);
      const self = readSchedSample(process.pid, 0);
      assert.ok(self && self.threads.size >= 1 && self.threads.has(process.pid), 'this process\'s main thread');
      const sleeper = spawn('sleep', ['5'], { stdio: 'ignore' });
      try {
        await new Promise((r) => setTimeout(r, 100));
        const a = readSchedSample(sleeper.pid!, 0)!;
        await new Promise((r) => setTimeout(r, 30));
        const b = readSchedSample(sleeper.pid!, 30)!;
        assert.equal(b.threads.get(sleeper.pid!)?.state, 'S');
        assert.equal(b.threads.get(sleeper.pid!)?.name, 'sleep');
        assert.ok(b.threads.get(sleeper.pid!)!.runNs >= a.threads.get(sleeper.pid!)!.runNs);
        assert.equal(cpuAvailability(a, b).verdict, 'available');
      } finally {
        sleeper.kill('SIGKILL');
      }
      assert.equal(readSchedSample(999999999, 0), undefined, 'no such process');
    });
  });
});
