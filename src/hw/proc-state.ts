/**
 * A process's scheduler state from /proc/<pid>/stat: R running, S sleeping, D uninterruptible,
 * T stopped (SIGSTOP, SIGTSTP), t stopped by a tracer, Z zombie. A stopped process cannot do
 * anything until it is continued, which the hang checks use (src/ha/controller-watch.ts for the
 * controller, src/guest/supervisor.ts for QEMU). Linux only; no other I/O.
 */
import { openSync, readdirSync, readFileSync, readSync } from 'node:fs';

/** USER_HZ: clock ticks per second of utime and stime in /proc/<pid>/stat (100 on every Linux ABI Node runs on). */
export const CLOCK_TICKS_PER_S = 100;

/**
 * A /proc/<pid>/stat (or /proc/<pid>/task/<tid>/stat) line, split: the name (field 2, which may hold
 * spaces and parentheses) and every field by its number in proc(5), 1-based (3 state, 4 ppid,
 * 5 pgrp, 14 utime, 15 stime, 22 starttime, 40 rt_priority, 41 policy).
 */
export function parseProcStat(stat: string): { name: string; field(n: number): string | undefined; cpuTicks: number } {
  const close = stat.lastIndexOf(')');
  const rest = stat.slice(close + 2).split(' '); // rest[0] is field 3
  const field = (n: number) => rest[n - 3];
  return { name: stat.slice(stat.indexOf('(') + 1, close), field, cpuTicks: Number(field(14)) + Number(field(15)) };
}

/** The state letter in a /proc/<pid>/stat line. */
function stateOf(stat: string): string | undefined {
  return stat.lastIndexOf(')') < 0 ? undefined : parseProcStat(stat).field(3)?.[0];
}

/** The state letter of a process from /proc/<pid>/stat, or undefined (no such process). */
export function procState(pid: number): string | undefined {
  try {
    return stateOf(readFileSync(`/proc/${pid}/stat`, 'latin1'));
  } catch {
    return undefined;
  }
}

/**
 * When a process started, in clock ticks since boot (field 22), or undefined (no such process): a
 * recorded pid whose start time differs names another process now (the pid was reused).
 */
export function procStartTime(pid: number): number | undefined {
  try {
    return Number(parseProcStat(readFileSync(`/proc/${pid}/stat`, 'latin1')).field(22));
  } catch {
    return undefined;
  }
}

/**
 * procState for repeated looks at one process: the file stays open and each look is one pread at
 * offset 0 (procfs regenerates the line), 6-11 µs here against 40-100 µs for open, read and close.
 * After the process has exited a read fails (ESRCH): undefined, and never another process that
 * reuses the pid.
 */
export function procStateReader(pid: number): () => string | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(`/proc/${pid}/stat`, 'r');
  } catch {
    return () => undefined;
  }
  const buf = Buffer.alloc(1024);
  return () => {
    try {
      return stateOf(buf.toString('latin1', 0, readSync(fd!, buf, 0, buf.length, 0)));
    } catch {
      return undefined;
    }
  };
}

/** One thread's scheduler accounting (/proc/<pid>/task/<tid>/schedstat and stat), ns and a state letter. */
export interface ThreadSched {
  /** Time it has run on a CPU, ns. */
  runNs: number;
  /** Time it has waited on a run queue (runnable, not running), ns: counted when it next runs. */
  waitNs: number;
  state: string;
  /** The thread's name (QEMU's debug-threads names its vCPU threads `CPU <n>/TCG` or `/KVM`). */
  name?: string;
}

/** Every thread of a process at one moment (performance.now() ms), by tid. */
export interface SchedSample {
  at: number;
  threads: Map<number, ThreadSched>;
}

/**
 * Every thread of `pid` as the scheduler accounts for it, or undefined (no such process). A few
 * small reads per thread (QEMU under TCG has 3-6): taken only while a guest is suspected of a hang.
 */
export function readSchedSample(pid: number, now: number): SchedSample | undefined {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return undefined;
  }
  const threads = new Map<number, ThreadSched>();
  for (const tid of tids) {
    try {
      const [run, wait] = readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'latin1').split(' ');
      const st = parseProcStat(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'latin1'));
      const state = st.field(3)?.[0];
      if (state !== undefined) threads.set(Number(tid), { runNs: Number(run), waitNs: Number(wait), state, name: st.name });
    } catch {
      // the thread exited between the listing and the read
    }
  }
  return threads.size ? { at: now, threads } : undefined;
}

/**
 * Whether a process had the CPU it asked for between two samples `a` and `b` (with `prev`, an
 * earlier look of the same check, a few ms before `b`):
 *  - `starved`: a thread is in uninterruptible sleep (D: the host's I/O); or a thread was runnable
 *    at `prev` and at `b` without running in between (waiting for a CPU now: a wait the kernel
 *    counts only once it runs, so not yet in its schedstat; a CFS quota's throttling looks like
 *    this); or its threads waited on run queues for a third of the window or more in all and the
 *    exception below does not hold (a slow guest: a machine too busy to run it);
 *  - `unsure`: a thread is runnable at `b` having run under half the window and there is no earlier
 *    look to tell whether it waits (ask again shortly);
 *  - `available`: none of that, and the threads waited less than a third of the window; or (the
 *    exception) its virtual CPU thread (named `CPU <n>/…` by QEMU's debug-threads) sat asleep for
 *    half the window or more while no other thread waited a third of it. An idle vCPU had nothing
 *    to run: a guest that has requests and a PING to answer and lets its CPU idle is stuck, however
 *    busy the machine (a hung guest still takes every packet sent to it, so on a shared core its
 *    QEMU competes with the rest as much as a healthy one).
 * Threads not in both samples are left out. Pure: tested with made-up samples.
 */
export function cpuAvailability(a: SchedSample, b: SchedSample, prev?: SchedSample): { verdict: 'available' | 'starved' | 'unsure'; windowMs: number; waitMs: number; why: string } {
  const windowMs = b.at - a.at;
  const ms = (ns: number) => Math.round(ns / 1e4) / 100;
  let waitNs = 0;
  let runnable: number | undefined;
  let waitingNow: number | undefined;
  let blocked: number | undefined;
  let vcpu: { tid: number; runNs: number; waitNs: number } | undefined;
  let othersMaxWaitNs = 0;
  for (const [tid, t] of b.threads) {
    const s = a.threads.get(tid);
    if (!s) continue;
    const dw = Math.max(0, t.waitNs - s.waitNs);
    const dr = Math.max(0, t.runNs - s.runNs);
    waitNs += dw;
    if (t.state === 'D') blocked = tid;
    if (t.state === 'R' && dr / 1e6 < windowMs / 2) {
      runnable = tid;
      const p = prev?.threads.get(tid);
      if (p && p.state === 'R' && p.runNs === t.runNs) waitingNow = tid;
    }
    if (!vcpu && /^CPU \d+\//.test(t.name ?? '')) vcpu = { tid, runNs: dr, waitNs: dw };
    else othersMaxWaitNs = Math.max(othersMaxWaitNs, dw);
  }
  const waitMs = ms(waitNs);
  const w = `${waitMs} ms waiting for a CPU in ${Math.round(windowMs)} ms`;
  if (blocked !== undefined) return { verdict: 'starved', windowMs, waitMs, why: `${w}, thread ${blocked} in uninterruptible sleep (host I/O)` };
  if (waitingNow !== undefined) {
    return { verdict: 'starved', windowMs, waitMs, why: `${w}, and thread ${waitingNow} runnable without running for the last ${Math.round(b.at - prev!.at)} ms: the machine is too busy to run it` };
  }
  if (runnable !== undefined) return { verdict: 'unsure', windowMs, waitMs, why: `${w}, thread ${runnable} runnable now` };
  if (waitMs < windowMs / 3) return { verdict: 'available', windowMs, waitMs, why: `${w}: it had the CPU` };
  if (vcpu) {
    const idleMs = windowMs - ms(vcpu.runNs) - ms(vcpu.waitNs);
    if (idleMs >= windowMs / 2 && ms(othersMaxWaitNs) < windowMs / 3) {
      return { verdict: 'available', windowMs, waitMs, why: `${w}, but its vCPU sat idle ${Math.round(idleMs * 10) / 10} ms of them with work to do` };
    }
  }
  return { verdict: 'starved', windowMs, waitMs, why: `${w}: the machine is too busy to run it` };
}
