/**
 * state.json: everything a chassis run has started or created (processes with their start times,
 * process groups, namespaces, veth names), written before and after each change so that `chassis
 * down`, or the next `chassis up` after a crash, can undo exactly that and nothing else.
 */
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { UsError } from '../../core/errors.js';
import type { ChassisBoard } from './layout.js';
import { removeNetwork } from './netns.js';
import { isSameProcess, carriesMarker, killOurGroup, markedProcesses, signal, groupMembers, waitUntil, type RecordedProcess } from './procs.js';

export interface HelperProcess extends RecordedProcess {
  /** What it is for, e.g. `socat serial sim-a`. */
  role: string;
}

export interface ChassisState {
  version: 1;
  name: string;
  runDir: string;
  startedAt: string;
  /** The chassis supervisor; leader of its own process group (the socat helpers are in it). */
  chassisd?: RecordedProcess;
  /** Namespaces this run creates (recorded before they are made). */
  namespaces: string[];
  /** The veth ends' temporary names in the root namespace (recorded before they are made). */
  vethTemp: string[];
  helpers: HelperProcess[];
  /** How many boards, when more than two (`chassis up --boards N`). */
  boardCount?: number;
  /** Each board's current controller: leader of the board's own process group. */
  boards: Partial<Record<ChassisBoard, { controller?: RecordedProcess; /** --manager pacemaker: the `unshare` of its corosync and pacemaker (leader of its own group). */ pacemaker?: RecordedProcess }>>;
}

export function readState(file: string): ChassisState | undefined {
  if (!existsSync(file)) return undefined;
  try {
    const s = JSON.parse(readFileSync(file, 'utf8')) as ChassisState;
    if (s.version !== 1 || typeof s.runDir !== 'string') throw new Error('unknown format');
    return s;
  } catch (e) {
    throw new UsError('US_ERR_CHASSIS', `${file} is unreadable (${(e as Error).message}); remove what it named by hand, then the file`);
  }
}

/** Atomic: a crash leaves either the old or the new file, never half of one. */
export function writeState(file: string, s: ChassisState): void {
  writeFileSync(`${file}.tmp`, `${JSON.stringify(s, null, 2)}\n`, { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

/** The recorded chassisd is still running (same process, started by this run). */
export function chassisdAlive(s: ChassisState): boolean {
  return s.chassisd !== undefined && isSameProcess(s.chassisd) && carriesMarker(s.chassisd.pid, s.runDir);
}

export interface CleanupReport {
  killed: string[];
  removed: string[];
  /** Processes still alive after the bounded wait (should be empty). */
  survivors: number[];
}

/**
 * Ends every process the run recorded (or that carries its marker) and removes its namespaces and
 * links. Idempotent; safe on a half-made run. Never signals the calling process.
 */
export async function cleanupRecorded(s: ChassisState): Promise<CleanupReport> {
  const killed: string[] = [];
  const groups: RecordedProcess[] = [];
  const endGroup = (what: string, leader: RecordedProcess) => {
    if (leader.pid === process.pid || groupMembers(leader.pid).length === 0) return;
    if (killOurGroup(leader, s.runDir)) {
      groups.push(leader);
      killed.push(`${what} (process group ${leader.pid})`);
    }
  };
  for (const [name, b] of Object.entries(s.boards)) {
    // The unshare first: its --kill-child ends the namespace's pid 1, and the kernel every process in it.
    if (b?.pacemaker) endGroup(`${name} corosync and pacemaker`, b.pacemaker);
    if (b?.controller) endGroup(`${name} controller`, b.controller);
  }
  if (s.chassisd) endGroup('chassisd', s.chassisd);
  for (const h of s.helpers) {
    if (h.pid !== process.pid && isSameProcess(h) && carriesMarker(h.pid, s.runDir) && signal(h.pid, 'SIGKILL')) killed.push(`${h.role} ${h.pid}`);
  }
  // Anything this run started but had not recorded yet (a crash between spawn and record).
  for (const p of markedProcesses(s.runDir)) {
    if (signal(p, 'SIGKILL')) killed.push(`process ${p} (carries the run marker)`);
  }
  const remaining = () => [...new Set([
    ...groups.flatMap((g) => groupMembers(g.pid)),
    ...s.helpers.filter((h) => isSameProcess(h) && carriesMarker(h.pid, s.runDir)).map((h) => h.pid),
    ...markedProcesses(s.runDir),
  ])].filter((p) => p !== process.pid);
  await waitUntil(() => remaining().length === 0, 5000);
  const survivors = remaining();
  const removed = await removeNetwork(s.namespaces, s.vethTemp);
  return { killed, removed, survivors };
}
