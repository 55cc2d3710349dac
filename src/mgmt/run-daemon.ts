/**
 * understudyd as a process: loads the board profile, starts the Daemon (daemon.ts), turns signals
 * into its stop and reload, and tells the caller the outcome (serving, failed, or up without serving
 * because of a configuration error). Owns nothing else.
 */
import { mkdirSync } from 'node:fs';
import { loadBoardProfile } from '../config/board-profile.js';
import type { UsError } from '../core/errors.js';
import { createLogger } from '../core/log.js';
import { makeParentDirs } from '../core/dirs.js';
import { installCrashHandlers } from './crash-handlers.js';
import { Daemon } from './daemon.js';
import type { ConfigErrorState } from './not-serving.js';
import { daemonLogPath } from './paths.js';

/**
 * Entry point of understudyd: runs until SIGTERM/SIGINT or `guest stop`. `onReady` gets the error of a
 * failed start, or (second argument) the configuration error the controller stays up with.
 */
export async function runDaemon(boardFile: string, guestFile: string | undefined, onReady?: (err?: UsError, configError?: ConfigErrorState) => void, o: { startEmpty?: boolean } = {}): Promise<Daemon> {
  const board = loadBoardProfile(boardFile);
  // Everything the controller creates is its own (0600/0700 unless said otherwise): storageDir is
  // searchable by QEMU's user (mode 0711, guest/supervisor.ts), so a file there must not be readable by others.
  process.umask(0o077);
  makeParentDirs(board.storageDir);
  mkdirSync(board.storageDir, { recursive: true, mode: 0o700 });
  const log = createLogger('understudyd', { file: daemonLogPath(board) }).child({ board: board.name });
  const daemon = new Daemon(board, { board: boardFile, guest: guestFile }, log, o);
  installCrashHandlers({ log, journal: () => daemon.store });
  const shutdown = (sig: string) => {
    log.info({ signal: sig }, 'shutting down');
    void daemon.stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => daemon.reload());
  try {
    await daemon.start();
  } catch (e) {
    log.error({ err: (e as Error).message, code: (e as UsError).code }, 'controller failed to start');
    onReady?.(e as UsError);
    throw e;
  }
  onReady?.(undefined, daemon.configError);
  return daemon;
}
