/**
 * Where the CLI finds things when the operator does not say: the board profile (env
 * UNDERSTUDY_BOARD, then /etc/understudy/board.json on a blade, then the repository's sim-a) and
 * the installed package root.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadBoardProfile } from '../config/board-profile.js';
import { controlSocketPath } from '../mgmt/paths.js';

/** The package root (holds board/, guests/, image-build/). */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export function defaultBoardFile(given?: string): string {
  if (given) return given;
  if (process.env.UNDERSTUDY_BOARD) return process.env.UNDERSTUDY_BOARD;
  if (existsSync('/etc/understudy/board.json')) return '/etc/understudy/board.json';
  return join(PACKAGE_ROOT, 'board', 'sim-a.json');
}

export function defaultGuestFile(given?: string): string {
  if (given) return given;
  if (process.env.UNDERSTUDY_GUEST) return process.env.UNDERSTUDY_GUEST;
  if (existsSync('/etc/understudy/guest.json')) return '/etc/understudy/guest.json';
  return join(PACKAGE_ROOT, 'guests', 'dx-legacy.json');
}

/** The control socket of the board's daemon, the profile found as above. */
export function controlSocketOf(board?: string): string {
  return controlSocketPath(loadBoardProfile(defaultBoardFile(board)));
}

export const DAEMON_ENTRY = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'understudyd.js');
