/**
 * CPU affinity and real-time priority of threads: applied with util-linux `taskset`/`chrt`
 * (Node has no sched_setaffinity) and read back from /proc/<pid>/task/<tid>/status and /sched,
 * which is what the kernel actually enforces. Knows nothing of QEMU or guests.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { UsError } from '../core/errors.js';
import { parseProcStat } from './proc-state.js';

const run = promisify(execFile);

export interface ThreadAffinity {
  tid: number;
  name: string;
  /** Cpus_allowed_list as the kernel reports it, e.g. "1" or "0-1". */
  cpus: string;
  policy: 'SCHED_OTHER' | 'SCHED_FIFO' | 'SCHED_RR' | 'SCHED_BATCH' | 'SCHED_IDLE' | 'unknown';
  rtPriority: number;
}

/** Expands a kernel cpu list ("0-2,5") into numbers. */
export function parseCpuList(list: string): number[] {
  const out: number[] = [];
  for (const part of list.trim().split(',')) {
    if (!part) continue;
    const [a, b] = part.split('-').map((x) => Number.parseInt(x, 10));
    if (Number.isNaN(a)) continue;
    for (let c = a!; c <= (b ?? a!); c++) out.push(c);
  }
  return out;
}

export async function setThreadAffinity(tid: number, cpus: number[]): Promise<void> {
  try {
    await run('taskset', ['-p', '-c', cpus.join(','), String(tid)]);
  } catch (e) {
    throw new UsError('US_ERR_PINNING', `cannot pin thread ${tid} to CPUs ${cpus.join(',')}: ${(e as Error).message.trim()}`);
  }
}

/** Pins every thread of a process (existing ones; new threads inherit from their creator). */
export async function setProcessAffinity(pid: number, cpus: number[]): Promise<void> {
  try {
    await run('taskset', ['-a', '-p', '-c', cpus.join(','), String(pid)]);
  } catch (e) {
    throw new UsError('US_ERR_PINNING', `cannot pin process ${pid} to CPUs ${cpus.join(',')}: ${(e as Error).message.trim()}`);
  }
}

export async function setRealtimePriority(tid: number, priority: number): Promise<void> {
  try {
    await run('chrt', ['-f', '-p', String(priority), String(tid)]);
  } catch (e) {
    throw new UsError('US_ERR_PINNING', `cannot set SCHED_FIFO ${priority} on thread ${tid}: ${(e as Error).message.trim()}`);
  }
}

/**
 * One thread to SCHED_IDLE (it runs only when its core has nothing else to run) or back to
 * SCHED_OTHER, with util-linux chrt.
 */
export async function setThreadIdle(tid: number, idle: boolean): Promise<void> {
  try {
    await run('chrt', [idle ? '--idle' : '--other', '--pid', '0', String(tid)]);
  } catch (e) {
    throw new UsError('US_ERR_PINNING', `cannot set ${idle ? 'SCHED_IDLE' : 'SCHED_OTHER'} on thread ${tid}: ${(e as Error).message.trim()}`);
  }
}

const POLICIES = ['SCHED_OTHER', 'SCHED_FIFO', 'SCHED_RR', 'SCHED_BATCH', 'unknown', 'SCHED_IDLE'] as const;

export function readThreadAffinity(pid: number, tid: number): ThreadAffinity {
  const base = `/proc/${pid}/task/${tid}`;
  const status = readFileSync(`${base}/status`, 'utf8');
  const name = /^Name:\s*(.*)$/m.exec(status)?.[1] ?? '';
  const cpus = /^Cpus_allowed_list:\s*(.*)$/m.exec(status)?.[1] ?? '';
  // /proc/<pid>/task/<tid>/stat fields 40 (rt_priority) and 41 (policy); the name (field 2) may hold spaces.
  const stat = parseProcStat(readFileSync(`${base}/stat`, 'utf8'));
  const rtPriority = Number.parseInt(stat.field(40) ?? '0', 10);
  const policy = POLICIES[Number.parseInt(stat.field(41) ?? '0', 10)] ?? 'unknown';
  return { tid, name, cpus, policy, rtPriority };
}

export function listThreads(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).map((t) => Number.parseInt(t, 10)).filter((t) => !Number.isNaN(t));
}

export function onlineCpus(): number[] {
  try {
    return parseCpuList(readFileSync('/sys/devices/system/cpu/online', 'utf8'));
  } catch {
    return [];
  }
}
