/**
 * A pseudo-terminal pair made by socat: two ptys whose bytes socat copies both ways, reachable by
 * two stable symlinks. The chassis uses them for the serial partner link (board end ↔ relay end)
 * and for each board's console (board end ↔ user end). Owns the socat process it starts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { UsError } from '../../core/errors.js';
import { RUN_MARKER } from './layout.js';
import { startTimeOf, waitUntil } from './procs.js';

export interface PtyPair {
  /** The two symlinks, each to a /dev/pts/N. */
  ends: [string, string];
  process: ChildProcess;
  pid: number;
  startTime?: number;
}

/** Starts socat and resolves once both symlinks point to live ptys. */
export async function startPtyPair(ends: [string, string], runDir: string, timeoutMs = 5000): Promise<PtyPair> {
  for (const e of ends) rmSync(e, { force: true });
  const address = (link: string) => `pty,raw,echo=0,link=${link}`;
  const child = spawn('socat', ['-d', address(ends[0]), address(ends[1])], {
    stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, [RUN_MARKER]: runDir },
  });
  let failed: Error | undefined;
  child.once('error', (e) => { failed = e; });
  child.once('exit', (code, sig) => { failed ??= new Error(`socat exited (${code ?? sig})`); });
  const ready = await waitUntil(() => failed !== undefined || ends.every((e) => existsSync(e)), timeoutMs);
  if (failed || !ready) {
    child.kill('SIGKILL');
    const missing = (failed as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
    throw new UsError(missing ? 'US_ERR_NOT_FOUND' : 'US_ERR_CHASSIS',
      missing ? 'socat is not installed' : `socat pty pair ${ends.join(' <-> ')}: ${failed?.message ?? `not ready within ${timeoutMs} ms`}`);
  }
  return { ends, process: child, pid: child.pid!, startTime: startTimeOf(child.pid!) };
}
