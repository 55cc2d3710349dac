/**
 * The controller process itself: its scheduling priority and where its memory is. Owns nothing else.
 */
import { readdirSync } from 'node:fs';
import { execFile } from 'node:child_process';
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
