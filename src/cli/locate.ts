/**
 * Where the CLI finds things when the operator does not say: the board profile (env
 * UNDERSTUDY_BOARD, then /etc/understudy/board.json on a blade, then the repository's standalone
 * board: one board without a partner, which needs no key, watchdog or fencing) and
 * the installed package root.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { controlSocketPath } from '../mgmt/paths.js';

/** The package root (holds board/, guests/, image-build/). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export function defaultBoardFile(given?: string): string {
  if (given) return given;
  if (process.env.UNDERSTUDY_BOARD) return process.env.UNDERSTUDY_BOARD;
  if (existsSync('/etc/understudy/board.json')) return '/etc/understudy/board.json';
  return join(PACKAGE_ROOT, 'board', 'standalone.json');
}

export function defaultGuestFile(given?: string): string {
  if (given) return given;
  if (process.env.UNDERSTUDY_GUEST) return process.env.UNDERSTUDY_GUEST;
  if (existsSync('/etc/understudy/guest.json')) return '/etc/understudy/guest.json';
  return join(PACKAGE_ROOT, 'guests', 'dx-legacy.json');
}

/**
 * The control socket of the board's daemon, the profile found as above. Only the profile's
 * storageDir is read (resolved against the profile's directory, as the schema does): the daemon
 * validated the profile when it started, and a command that only talks to it should not pay for
 * loading the validator (zod: ~60 ms of a ~200 ms command). A profile without a usable storageDir
 * is validated in full, for the located error.
 */
export async function controlSocketOf(board?: string): Promise<string> {
  const file = defaultBoardFile(board);
  try {
    const dir = (JSON.parse(readFileSync(file, 'utf8')) as { storageDir?: unknown }).storageDir;
    if (typeof dir === 'string' && dir.length > 0) return controlSocketPath({ storageDir: resolve(dirname(file), dir) });
  } catch {
    // unreadable or not JSON: the full load says so
  }
  const { loadBoardProfile } = await import('../config/board-profile.js');
  return controlSocketPath(loadBoardProfile(file));
}

export const DAEMON_ENTRY = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'understudyd.js');
