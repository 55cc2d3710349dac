/**
 * The clock seam: monotonic time and timers, for code whose behaviour is timing (deadtimes, fence
 * delays, protection timeouts, hold timers). `systemClock` is performance.now() and Node's timers;
 * `FakeClock` is moved by hand in tests, so a 500 ms timeout is tested without waiting 500 ms and
 * fires at exactly the step it is due. Wall-clock dates (journal timestamps) are not its business.
 */
import { setTimeout as sleepFor } from 'node:timers/promises';

/** An armed timer, as returned by a Clock; only good for handing back to the same clock's clear*(). */
export type TimerHandle = object;

export interface Clock {
  /** Monotonic milliseconds since an arbitrary origin (never 0 on any clock here: callers use 0 for "unset"). */
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  /** Accepts undefined (nothing armed) like Node's clearTimeout. */
  clearTimeout(t: TimerHandle | undefined): void;
  setInterval(fn: () => void, ms: number): TimerHandle;
  clearInterval(t: TimerHandle | undefined): void;
  /** Resolves after `ms`. */
  sleep(ms: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t as NodeJS.Timeout | undefined),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (t) => clearInterval(t as NodeJS.Timeout | undefined),
  sleep: (ms) => sleepFor(ms),
};

interface FakeTimer {
  id: number;
  due: number;
  fn: () => void;
  /** Set for an interval: its period. */
  every?: number;
}

/**
 * A clock that moves only when told to (tests). Timers fire inside advance(), in the order they
 * are due (ties: the order they were armed); an interval re-arms itself from its due time.
 */
export class FakeClock implements Clock {
  private time: number;
  private nextId = 1;
  private timers = new Map<number, FakeTimer>();

  /** `startMs` is the first reading of now(); not 0, which the code under test may take for "unset". */
  constructor(startMs = 1000) {
    this.time = startMs;
  }

  now(): number {
    return this.time;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    return this.arm(fn, ms);
  }

  setInterval(fn: () => void, ms: number): TimerHandle {
    return this.arm(fn, ms, Math.max(1, ms));
  }

  clearTimeout(t: TimerHandle | undefined): void {
    if (t) this.timers.delete((t as FakeTimer).id);
  }

  clearInterval(t: TimerHandle | undefined): void {
    this.clearTimeout(t);
  }

  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => this.setTimeout(resolve, ms));
  }

  /** Timers armed and not yet fired or cleared. */
  get pending(): number {
    return this.timers.size;
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due on the way at its due time (now()
   * reads that time inside its callback). Promise continuations (code after `await clock.sleep()`)
   * run only once the caller yields: use advanceAsync() for code that awaits.
   */
  advance(ms: number): void {
    const end = this.time + ms;
    for (let t = this.nextDue(end); t; t = this.nextDue(end)) this.fire(t);
    this.time = end;
  }

  /**
   * Like advance(), but lets promise continuations and I/O callbacks already queued run after each
   * timer that fires (and once at the end), so code that awaits clock.sleep() or a fired timer's
   * consequences moves on within the same call.
   */
  async advanceAsync(ms: number): Promise<void> {
    const end = this.time + ms;
    await settle();
    for (let t = this.nextDue(end); t; t = this.nextDue(end)) {
      this.fire(t);
      await settle();
    }
    this.time = end;
    await settle();
  }

  private arm(fn: () => void, ms: number, every?: number): FakeTimer {
    const t: FakeTimer = { id: this.nextId++, due: this.time + Math.max(0, ms), fn, every };
    this.timers.set(t.id, t);
    return t;
  }

  private nextDue(end: number): FakeTimer | undefined {
    let next: FakeTimer | undefined;
    for (const t of this.timers.values()) if (t.due <= end && (!next || t.due < next.due)) next = t; // Map order: ties by arming order
    return next;
  }

  private fire(t: FakeTimer): void {
    this.time = t.due;
    if (t.every) t.due += t.every;
    else this.timers.delete(t.id);
    t.fn();
  }
}

/** One turn of the event loop: queued promise continuations and immediate callbacks run. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
