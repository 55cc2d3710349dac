/**
 * Where a board's daemon keeps its control socket and its log, derived from the board profile.
 * A module of its own so a CLI command can find the socket without loading the daemon.
 */
import { join } from 'node:path';
import type { BoardProfile } from '../config/board-profile.js';

export function controlSocketPath(board: Pick<BoardProfile, 'storageDir'>): string {
  return join(board.storageDir, 'understudyd.sock');
}

export function daemonLogPath(board: Pick<BoardProfile, 'storageDir'>): string {
  return join(board.storageDir, 'understudyd.log');
}
