/**
 * Real-time governors of the membership process. At SCHED_FIFO its busy event loop (whatever the
 * cause: seen on the test machine, both boards' membership processes at the kernel's real-time cap
 * at once, cause not found) takes its core from the controller and QEMU, which then look hung or
 * dead to the partner. Two governors take real-time scheduling away from it:
 *
 * - its own, on its event loop (SelfGovernor): a loop that spins still runs its timers, so it sees
 *   itself busy within RT_SELF_PERIOD_MS × RT_SELF_LOOKS and drops its own scheduling at once,
 *   through a `chrt` that it waits for (spawnSync: the core is the child's while the loop blocks;
 *   the child inherits the event loop thread's SCHED_FIFO, which is why that thread is not
 *   reset-on-fork). The controller's governor, starved as well, would act only when the kernel's
 *   real-time throttling lets the controller run (50 ms a second): seconds, beyond the controller
 *   hang bound.
 * - the controller's (membership-process.ts), for a loop stuck in one call, whose timers never run.
 *
 * BusyLooks is the shared rule: above a share of one core at N looks in a row.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { parseProcStat } from '../hw/proc-state.js';

/** Sustained use above `share` of one core at `looks` looks in a row. */
export class BusyLooks {
  private inRow = 0;

  constructor(readonly share: number, readonly looks: number) {}

  /** One look: CPU time used (ms, all threads) over the wall time (ms) since the last. True once the bound is reached. */
  look(cpuMs: number, wallMs: number): boolean {
    const share = cpuMs / Math.max(1, wallMs);
    this.inRow = share > this.share ? this.inRow + 1 : 0;
    this.last = share;
    return this.inRow >= this.looks;
  }

  /** The share at the last look. */
  last = 0;

  get busyLooks(): number {
    return this.inRow;
  }

  /** Why real-time scheduling goes (the journal's and the alarm's words), looks `periodMs` apart; `by`: who saw it, if not the controller. */
  why(periodMs: number, by?: string): string {
    return `used ${Math.round(this.last * 100)} % of a core for ${this.inRow * periodMs} ms (bound ${Math.round(this.share * 100)} %${by ? `, ${by}` : ''}): real-time scheduling dropped so it cannot starve the controller and the guest`;
  }
}

/** The membership process's own looks: every 100 ms, four in a row above 70 % of a core (its normal use is a few %). */
export const RT_SELF_PERIOD_MS = 100;
export const RT_SELF_LOOKS = 4;
export const RT_SELF_SHARE = 0.7;

/** Drops every thread of `pid` to normal scheduling with chrt, waiting for it; an error message, or undefined. */
export function dropRealTime(pid: number): string | undefined {
  const r = spawnSync('chrt', ['-a', '-o', '-p', '0', String(pid)], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'ignore', 'pipe'] });
  if (r.error) return r.error.message;
  return r.status === 0 ? undefined : (r.stderr.trim() || `chrt exited (${r.status ?? r.signal})`);
}

/** Each thread of a process with its CPU ticks (`name:ticks`), for the log: which one was busy. */
export function threadTicks(pid: number): string {
  const out: string[] = [];
  try {
    for (const t of readdirSync(`/proc/${pid}/task`)) {
      const st = parseProcStat(readFileSync(`/proc/${pid}/task/${t}/stat`, 'latin1'));
      out.push(`${st.name}:${st.cpuTicks}`);
    }
  } catch {
    // it ended meanwhile
  }
  return out.join(' ');
}

export interface SelfGovernorOptions {
  periodMs?: number;
  looks?: number;
  share?: number;
  /** CPU time used by this process so far, ms (all threads). */
  cpuMs?: () => number;
  now?: () => number;
  /** Takes real-time scheduling away; an error message, or undefined when done. */
  drop?: () => string | undefined;
  /** Once, after the drop (reason, and its threads' CPU ticks before it). */
  dropped: (reason: string, threads: string) => void;
}

/** The membership process's governor of itself; stop() before exit. */
export class SelfGovernor {
  private readonly rule: BusyLooks;
  private readonly timer: NodeJS.Timeout;
  private last: { cpu: number; at: number };

  constructor(private readonly o: SelfGovernorOptions) {
    this.rule = new BusyLooks(o.share ?? RT_SELF_SHARE, o.looks ?? RT_SELF_LOOKS);
    this.last = { cpu: this.cpuMs(), at: this.now() };
    this.timer = setInterval(() => this.look(), o.periodMs ?? RT_SELF_PERIOD_MS);
  }

  private cpuMs(): number {
    if (this.o.cpuMs) return this.o.cpuMs();
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  }

  private now(): number {
    return this.o.now ? this.o.now() : performance.now();
  }

  private look(): void {
    const now = { cpu: this.cpuMs(), at: this.now() };
    const busy = this.rule.look(now.cpu - this.last.cpu, now.at - this.last.at);
    this.last = now;
    if (!busy) return;
    this.stop();
    const threads = threadTicks(process.pid);
    const reason = this.rule.why(this.o.periodMs ?? RT_SELF_PERIOD_MS, 'seen by itself');
    const err = (this.o.drop ?? (() => dropRealTime(process.pid)))();
    this.o.dropped(err ? `${reason}; dropping it failed: ${err}` : reason, threads);
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
