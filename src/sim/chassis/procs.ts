/**
 * What the chassis knows about processes, read from /proc: whether one is alive, stopped or a
 * zombie, its start time (to tell a recorded pid from a reused one), its process group, and whether
 * the chassis started it (the RUN_MARKER in its environment). Signals go only to processes that
 * pass those checks: this module never ends anything by name.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { RUN_MARKER } from './layout.js';
import { parseProcStat, procStartTime } from '../../hw/proc-state.js';

/** A process the chassis started, as recorded in state.json. */
export interface RecordedProcess {
  pid: number;
  /** Start time in clock ticks since boot (/proc/<pid>/stat field 22): tells a reused pid apart. */
  startTime?: number;
}

interface ProcStat {
  state: string;
  pgid: number;
  startTime: number;
}

function readStat(pid: number, statFile = `/proc/${pid}/stat`): ProcStat | undefined {
  try {
    const st = parseProcStat(readFileSync(statFile, 'utf8'));
    return { state: st.field(3)!, pgid: Number(st.field(5)), startTime: Number(st.field(22)) };
  } catch {
    return undefined;
  }
}

export function startTimeOf(pid: number): number | undefined {
  return procStartTime(pid);
}

/** Process state letter (R, S, D, T stopped, t traced, Z zombie…), or undefined when gone. */
export function stateOf(pid: number): string | undefined {
  return readStat(pid)?.state;
}

const dead = (state: string) => state === 'Z' || state === 'X';

/**
 * Some thread of the process is still running. A multithreaded process's leader shows Z while its
 * other threads are still exiting, and until the last one is gone its files (and their locks, e.g. a
 * serial port's flock) are still open.
 */
function anyThreadLive(pid: number, leader: ProcStat): boolean {
  if (!dead(leader.state)) return true;
  try {
    return readdirSync(`/proc/${pid}/task`).some((tid) => {
      if (Number(tid) === pid) return false;
      const st = readStat(pid, `/proc/${pid}/task/${tid}/stat`);
      return st !== undefined && !dead(st.state);
    });
  } catch {
    return false;
  }
}

/** Exists and some thread of it still runs (not a zombie, and not a process still exiting). */
export function isAlive(pid: number): boolean {
  const st = readStat(pid);
  return st !== undefined && anyThreadLive(pid, st);
}

/** The same process as recorded (a reused pid has a different start time). */
export function isSameProcess(p: RecordedProcess): boolean {
  const st = readStat(p.pid);
  if (!st || !anyThreadLive(p.pid, st)) return false;
  return p.startTime === undefined || p.startTime === st.startTime;
}

/** Whether the process carries this run's marker in its environment, i.e. the chassis started it. */
export function carriesMarker(pid: number, runDir: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(`${RUN_MARKER}=${runDir}`);
  } catch {
    return false;
  }
}

function allPids(): number[] {
  return readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number);
}

/** Live members of a process group. */
export function groupMembers(pgid: number): number[] {
  return allPids().filter((p) => {
    const st = readStat(p);
    return st !== undefined && st.pgid === pgid && anyThreadLive(p, st);
  });
}

/** Every live process carrying this run's marker. */
export function markedProcesses(runDir: string): number[] {
  return allPids().filter((p) => p !== process.pid && isAlive(p) && carriesMarker(p, runDir));
}

export function signal(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/**
 * SIGKILLs a process group the chassis created, if it still is ours: its recorded leader is the
 * same process, or one of its members carries the run marker. Returns whether a signal was sent.
 */
export function killOurGroup(leader: RecordedProcess, runDir: string): boolean {
  const members = groupMembers(leader.pid);
  if (members.length === 0) return false;
  const ours = isSameProcess(leader) || members.some((m) => carriesMarker(m, runDir));
  return ours ? signal(-leader.pid, 'SIGKILL') : false;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits (bounded) until `gone()` holds; returns whether it does. */
export async function waitUntil(gone: () => boolean, timeoutMs: number, everyMs = 20): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (gone()) return true;
    await sleep(everyMs);
  }
  return gone();
}
