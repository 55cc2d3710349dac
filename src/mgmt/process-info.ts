/**
 * The controller process itself: its scheduling priority and where its memory is, how late its event loop runs. Owns nothing else.
 */
import { readdirSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import type { Logger } from '../core/log.js';

/**
 * The controller outranks its QEMU's housekeeping threads on the shared cores (the clone renices
 * them to -5): a controller starved of CPU stops proving it is alive and its board gets reset.
 * Nice values are per thread on Linux; threads created later inherit from their creator.
 */
export async function raiseOwnPriority(log: Logger): Promise<void> {
  const tids = readdirSync(`/proc/${process.pid}/task`);
  await new Promise<void>((resolve) => execFile('renice', ['-n', '-10', '-p', ...tids], (err) => {
    if (err) log.warn({ err: err.message.trim() }, 'controller runs at normal priority');
    resolve();
  }));
}

/** Where the controller process's memory is, MB: for operators and bench/daemon. */
export function memoryMb(): Record<string, number> {
  const m = process.memoryUsage();
  const mb = (b: number) => Math.round((b / 1048576) * 10) / 10;
  return { rss: mb(m.rss), heapTotal: mb(m.heapTotal), heapUsed: mb(m.heapUsed), external: mb(m.external), arrayBuffers: mb(m.arrayBuffers) };
}

/** How often libuv checks the loop (ms): the histogram's resolution. */
const RESOLUTION_MS = 10;

/** Event-loop delay over one window (ms): what an input waiting for this process's loop waited. */
export interface LoopDelayWindow { p50Ms: number; p99Ms: number; maxMs: number }

/**
 * The controller's event-loop delay (perf_hooks histogram, sampled every 10 ms by libuv, no per-input
 * cost), in windows of `windowMs`: status shows the last full window and the worst since start.
 */
export class EventLoopDelay {
  private readonly h = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
  private last: LoopDelayWindow | null = null;
  private worstMs = 0;
  private readonly timer: NodeJS.Timeout;

  constructor(readonly windowMs = 10000) {
    this.h.enable();
    this.timer = setInterval(() => {
      this.last = this.now();
      this.worstMs = Math.max(this.worstMs, this.last.maxMs);
      this.h.reset();
    }, windowMs);
    this.timer.unref();
  }

  private now(): LoopDelayWindow {
    // The histogram records the interval between its 10 ms checks: lateness is what exceeds it.
    const ms = (ns: number) => Math.max(0, Math.round((ns - RESOLUTION_MS * 1e6) / 1e4) / 100);
    return this.h.count ? { p50Ms: ms(this.h.percentile(50)), p99Ms: ms(this.h.percentile(99)), maxMs: ms(this.h.max) } : { p50Ms: 0, p99Ms: 0, maxMs: 0 };
  }

  status(): { windowS: number; lastWindow: LoopDelayWindow | null; maxMsSinceStart: number } {
    return { windowS: this.windowMs / 1000, lastWindow: this.last, maxMsSinceStart: Math.max(this.worstMs, this.now().maxMs) };
  }

  stop(): void {
    clearInterval(this.timer);
    this.h.disable();
  }
}
