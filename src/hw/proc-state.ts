/**
 * A process's scheduler state from /proc/<pid>/stat: R running, S sleeping, D uninterruptible,
 * T stopped (SIGSTOP, SIGTSTP), t stopped by a tracer, Z zombie. A stopped process cannot do
 * anything until it is continued, which the hang checks use (src/ha/controller-watch.ts for the
 * controller, src/guest/supervisor.ts for QEMU). Linux only; no other I/O.
 */
import { openSync, readFileSync, readSync } from 'node:fs';

/** The state letter in a /proc/<pid>/stat line: the field after the parenthesised name (which may hold spaces and parentheses). */
function stateOf(stat: string): string | undefined {
  const i = stat.lastIndexOf(')');
  return i < 0 ? undefined : stat[i + 2];
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
