/**
 * Is the controller's main process still running its event loop? Decided in the membership process
 * from two facts, so a hung controller is reported in this board's own heartbeats (`health: 'hung'`)
 * within milliseconds, and the partner fences it and takes over, long before the watchdog would
 * reset the board:
 *
 *  - the controller sends an `alive` message every `aliveIntervalMs` from its main loop;
 *  - only when one is late (silence over `lateMs`) is the controller's /proc/<pid>/stat read: a
 *    process in state T (stopped: SIGSTOP, SIGTSTP) or t (held by a tracer) cannot send anything
 *    until it is continued, so it is hung whatever the timing. Seen stopped at two looks at least
 *    CONFIRM_MS apart (a tracer's syscall stops last microseconds), it is reported at once.
 *  - a controller that is not stopped but silent for `hangAfterMs` (a runaway loop, a synchronous
 *    wait that never returns, uninterruptible I/O) is hung too. That bound is a timing bound, so it
 *    must stay above the longest main-loop stall a healthy but busy controller shows (clones,
 *    checkpoints, GC, SQLite, a saturated machine): chosen from measurements (BENCHMARKS.md).
 *
 * The /proc read (6-11 µs, on a file kept open) happens only while an alive is late, so an idle,
 * healthy board pays nothing for it: at every heartbeat it would cost ~1 % of a core. No I/O of its own (a clock and a state reader are given): unit-tested on a
 * FakeClock. Decides nothing about roles and does not touch the watchdog.
 */
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import type { ControllerHealth } from './frame.js';

/**
 * A verdict needs two looks at least this far apart that both find the controller stopped or
 * silent past the bound (the looks are at the heartbeats, one every interval).
 */
export const CONFIRM_MS = 1;

export interface ControllerWatchOptions {
  /** Monotonic milliseconds. */
  now: () => number;
  /** Silence after which the controller's process state is read (an alive is late). */
  lateMs: number;
  /** Silence after which the controller is hung whatever its process state. */
  hangAfterMs: number;
  /** The controller's process state letter (R, S, D, T, t, Z…), or undefined if it cannot be read. */
  processState: () => string | undefined;
}

export interface ControllerVerdict {
  health: Exclude<ControllerHealth, 'gone'>;
  /** Why it is hung (for the journal and the log). */
  reason?: string;
}

export interface ControllerWatchStatus {
  health: Exclude<ControllerHealth, 'gone'>;
  reason?: string;
  lateMs: number;
  hangAfterMs: number;
  /** Time between consecutive alive messages as received here, ms (what a busy controller really shows). */
  aliveGapMs: { p50: number; p99: number; max: number; count: number };
  /** How often the process state was read (only while an alive was late). */
  stateReads: number;
  /** Verdicts of 'hung' since start. */
  hungVerdicts: number;
}

export class ControllerWatch {
  private lastAlive: number;
  private suspectSince?: number;
  private verdict: ControllerVerdict = { health: 'ok' };
  private readonly gaps: RecordableHistogram = createHistogram();
  stateReads = 0;
  hungVerdicts = 0;

  constructor(private readonly o: ControllerWatchOptions) {
    if (!(o.lateMs > 0 && o.hangAfterMs > o.lateMs)) throw new RangeError(`controller watch: need 0 < lateMs (${o.lateMs}) < hangAfterMs (${o.hangAfterMs})`);
    this.lastAlive = o.now();
  }

  /** An alive message arrived from the controller's main loop. */
  alive(): void {
    const now = this.o.now();
    this.gaps.record(Math.max(1, Math.round((now - this.lastAlive) * 1000))); // µs
    this.lastAlive = now;
    this.suspectSince = undefined;
    this.verdict = { health: 'ok' };
  }

  /** Milliseconds since the last alive. */
  get silentMs(): number {
    return this.o.now() - this.lastAlive;
  }

  /**
   * The controller's health now; called at every heartbeat. Reads the process state only while an
   * alive is late. Once hung, it stays hung until the next alive.
   */
  check(): ControllerVerdict {
    if (this.verdict.health === 'hung') return this.verdict;
    const now = this.o.now();
    const silent = now - this.lastAlive;
    if (silent <= this.o.lateMs) return this.verdict;
    this.stateReads++;
    const state = this.o.processState();
    const stopped = state === 'T' || state === 't';
    if (!stopped && silent < this.o.hangAfterMs) {
      this.suspectSince = undefined;
      return this.verdict;
    }
    // Confirmed by a second look: in between, the poll phase has read any alive that was waiting
    // in the pipe while this process itself was late, and a tracer's stop has ended.
    this.suspectSince ??= now;
    if (now - this.suspectSince < CONFIRM_MS) return this.verdict;
    return this.hung(stopped
      ? `controller process ${state === 'T' ? 'stopped' : 'held by a tracer'} (state ${state}), no alive for ${silent.toFixed(0)} ms`
      : `controller main loop silent for ${silent.toFixed(0)} ms (state ${state ?? 'unknown'}; bound ${this.o.hangAfterMs} ms)`);
  }

  private hung(reason: string): ControllerVerdict {
    this.hungVerdicts++;
    this.verdict = { health: 'hung', reason };
    return this.verdict;
  }

  status(): ControllerWatchStatus {
    const ms = (us: number) => Math.round(us / 10) / 100;
    const h = this.gaps;
    return {
      ...this.verdict, lateMs: this.o.lateMs, hangAfterMs: this.o.hangAfterMs,
      aliveGapMs: { p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max), count: h.count },
      stateReads: this.stateReads, hungVerdicts: this.hungVerdicts,
    };
  }
}
