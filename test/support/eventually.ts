/** Waiting in integration tests: polling a condition, bounded by count and by time. */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `check` until it returns a value (not undefined/false); bounded by count and time. An error
 * thrown by the last try is part of the failure message.
 */
export async function eventually<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  const maxTries = Math.ceil(timeoutMs / Math.max(everyMs, 1)) + 10;
  let last: unknown;
  for (let i = 0; i < maxTries && Date.now() < end; i++) {
    try {
      const v = await check();
      if (v !== undefined && v !== false) return v;
      last = undefined;
    } catch (e) {
      last = e;
    }
    await sleep(everyMs);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms${last ? ` (last error: ${String(last)})` : ''}`);
}
