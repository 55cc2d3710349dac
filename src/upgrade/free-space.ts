/**
 * Room on a filesystem before a package is written to it (a partner's push into the incoming
 * directory, an install into the slots directory): the bytes to write plus a reserve must fit in
 * what statfs says is available to this process. Owns only the check; the callers decide what to write.
 */
import { statfsSync } from 'node:fs';
import { UsError } from '../core/errors.js';

/** Bytes available on the filesystem holding `dir` (statfs: bavail × bsize). */
export type FreeBytes = (dir: string) => number;

export const statfsFreeBytes: FreeBytes = (dir) => {
  const s = statfsSync(dir);
  return s.bavail * s.bsize;
};

const mb = (n: number) => `${(n / 1048576).toFixed(1)} MiB`;

/** Throws US_ERR_NO_SPACE naming `dir` unless `bytes` plus `reserveBytes` fit there. */
export function assertRoom(dir: string, bytes: number, reserveBytes: number, what: string, freeBytes: FreeBytes = statfsFreeBytes): void {
  const free = freeBytes(dir);
  if (bytes + reserveBytes > free) {
    throw new UsError('US_ERR_NO_SPACE', `${what}: ${mb(bytes)} needed in ${dir} with ${mb(reserveBytes)} kept free, only ${mb(free)} available`,
      { dir, bytes, reserveBytes, free });
  }
}
