/**
 * Folders a board's storage lives under. `storageDir` itself is private (its own mode, set where it
 * is made), but the folders above it that did not exist yet are made 0755 like `mkdir -p` under a
 * default umask: made with storageDir's private mode (a recursive mkdir gives every level the same
 * mode, and the controller runs under umask 077), /var/lib/understudy was 0700 on a fresh machine
 * and QEMU's own user could not reach its folder below it. Folders that already exist are left as
 * they are (the operator's).
 */
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

/** Makes the missing folders above `dir` (not `dir` itself), each 0755. */
export function makeParentDirs(dir: string): void {
  const missing: string[] = [];
  for (let d = dirname(dir); !existsSync(d) && dirname(d) !== d; d = dirname(d)) missing.unshift(d);
  for (const d of missing) {
    mkdirSync(d, { mode: 0o755 });
    chmodSync(d, 0o755); // the umask may have taken bits off
  }
}
