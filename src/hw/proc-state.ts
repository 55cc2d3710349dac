/**
 * A process's scheduler state from /proc/<pid>/stat: R running, S sleeping, D uninterruptible,
 * T stopped (SIGSTOP, SIGTSTP), t stopped by a tracer, Z zombie. A stopped process cannot do
 * anything until it is continued, which the hang checks use (src/ha/controller-watch.ts for the
 * controller, src/guest/supervisor.ts for QEMU). Linux only; no other I/O.
 */
import { openSync, readFileSync, readSync } from 'node:fs';

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
