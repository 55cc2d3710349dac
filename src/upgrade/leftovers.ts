/**
 * What an interrupted push or install leaves behind, removed when the controller starts: the
 * installer's scratch directories beside the slots (.staging-X, .retired-X: taken under the slots
 * lock, so a running `upgrade install` is never disturbed) and partial packages in the incoming
 * directory (a partner's push, `.rolling-*.part`, which only the controller writes; a serial
 * transfer's `.<name>.part` once it has not been written to for `stalePartMs`). Owns only the clean-up.
 */
import { readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { UpgradeSetup } from './board-setup.js';

export interface LeftoversCleaned {
  removed: string[];
  /** Why the slots were not looked at (another upgrade operation holds their lock), if so. */
  skipped?: string;
}

export function cleanUpgradeLeftovers(setup: Pick<UpgradeSetup, 'store' | 'incomingDir'>, o: { now?: number; stalePartMs?: number } = {}): LeftoversCleaned {
  const removed: string[] = [];
  let skipped: string | undefined;
  try {
    const release = setup.store.lock('clean up after an interrupted install');
    try {
      removed.push(...setup.store.cleanLeftovers());
    } finally {
      release();
    }
  } catch (e) {
    skipped = (e as Error).message;
  }
  let names: string[] = [];
  try {
    names = readdirSync(setup.incomingDir);
  } catch { /* no incoming directory yet */ }
  const now = o.now ?? Date.now();
  for (const n of names) {
    if (!n.startsWith('.') || !n.endsWith('.part')) continue;
    const f = join(setup.incomingDir, n);
    try {
      if (!n.startsWith('.rolling-') && now - statSync(f).mtimeMs < (o.stalePartMs ?? 10 * 60000)) continue;
      rmSync(f, { force: true });
      removed.push(f);
    } catch { /* gone meanwhile */ }
  }
  return { removed, ...(skipped ? { skipped } : {}) };
}
