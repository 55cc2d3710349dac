/**
 * The controller that stays up without serving: when the board profile loads and has a serial
 * console, a configuration error later in start-up (a bad key file, guest descriptor or profile
 * section, a missing file) does not stop the controller. Its console and control socket stay up so a
 * field engineer can log in, read the error and fix it; the role is CONFIG-ERROR and nothing of the
 * pair or the guest runs. What that state is, which control commands it answers, what the console
 * shows, and the SIGHUP re-read of the configuration (which needs a restart and which not) live here;
 * the daemon (daemon.ts) composes them.
 */
import { loadBoardProfile, type BoardProfile } from '../config/board-profile.js';
import { loadGuestDescriptor, type GuestDescriptor } from '../config/guest-descriptor.js';
import { asUsError, UsError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { Store } from '../store/journal.js';

export const CONFIG_ERROR_ROLE = 'CONFIG-ERROR';

export interface ConfigErrorState {
  code: UsError['code'];
  message: string;
  at: string;
  /** How to get out of it. */
  remedy: string;
}

export const REMEDY = 'fix the file named, then run "understudy guest start" (or send the controller SIGHUP) to retry; "understudy ha keygen" writes a key file';

/**
 * A start-up failure that the operator fixes in a file (or by installing one), for which the
 * controller stays up: a malformed profile section, descriptor or key file, a missing one.
 */
export function isConfigError(e: unknown): boolean {
  const code = (e as UsError | undefined)?.code;
  return code === 'US_ERR_CONFIG' || code === 'US_ERR_NOT_FOUND' || code === 'US_ERR_GUEST_STATE';
}

/** How to get out of a refused saved state (US_ERR_GUEST_STATE). */
export const GUEST_STATE_REMEDY = 'the guest came up without the saved state its disk holds; the disk is left as it was: run "understudy guest start --start-empty" to set it aside and start empty, or start a guest version that reads it';

/** The alarm of a guest that came up without its saved state: journaled with kind `guest`. */
export function journalGuestStateRefused(e: unknown, store: Store | undefined): void {
  const u = asUsError(e);
  store?.record('guest', `ALARM guest state refused: ${u.message}`, { code: u.code, ...(u.detail ?? {}) });
}

/** The state for `e`, journaled (kind `config`) and logged loudly. */
export function journalNotServing(e: unknown, store: Store | undefined, log: Logger): ConfigErrorState {
  const u = asUsError(e);
  const s: ConfigErrorState = { code: u.code, message: u.message, at: new Date().toISOString(), remedy: u.code === 'US_ERR_GUEST_STATE' ? GUEST_STATE_REMEDY : REMEDY };
  const msg = `NOT SERVING (${CONFIG_ERROR_ROLE}): ${s.code} ${s.message}; the console and the control socket stay up: ${s.remedy}`;
  store?.record('config', msg, { ...s });
  log.error({ code: s.code, err: s.message }, msg);
  return s;
}

/**
 * Control commands answered while not serving: seeing the state, the journal, the alarms and the
 * quarantined inputs (read from the store; releasing one waits until the board serves), retrying,
 * stopping.
 */
const ANSWERED_WHILE_NOT_SERVING: ReadonlySet<string> = new Set(['ping', 'status', 'role', 'events', 'alarms', 'quarantine.list', 'quarantine.show', 'board.info', 'guest.stop', 'start.retry']);

export function assertAnsweredWhileNotServing(command: string, board: string, s: ConfigErrorState): void {
  if (ANSWERED_WHILE_NOT_SERVING.has(command)) return;
  throw new UsError('US_ERR_ROLE', `board ${board} is not serving (${CONFIG_ERROR_ROLE}): ${s.code} ${s.message}; ${s.remedy}`);
}

/** What the console shows after a login while not serving. */
export function consoleNotice(s: ConfigErrorState): string {
  return `*** this controller is NOT SERVING (${CONFIG_ERROR_ROLE} since ${s.at}): ${s.code} ${s.message}\n*** ${s.remedy}`;
}

/**
 * The profile a retry starts serving with, re-read; refused if it changes what the running console
 * and control socket are built on (name, storage, console): that needs a restart.
 */
export function retryProfile(running: BoardProfile, boardFile: string): BoardProfile {
  const next = loadBoardProfile(boardFile);
  const fixed = (['name', 'storageDir', 'console'] as const).filter((k) => JSON.stringify(running[k]) !== JSON.stringify(next[k])).map((k) => `board.${k}`);
  if (fixed.length) throw new UsError('US_ERR_CONFIG', `${fixed.join(', ')} changed in ${next.sourceFile}: restart the controller ("understudy guest stop", then "guest start")`);
  return next;
}

/**
 * SIGHUP while serving: re-reads the profile and the descriptor. What can change live does (the log
 * level, from UNDERSTUDY_LOG at start, is fixed; the console re-reads its password file at each
 * login); a change that needs a restart is validated, journaled and named, never half-applied.
 */
export function reloadConfig(
  d: { board: BoardProfile; guest?: GuestDescriptor; store?: Store; log: Logger },
  files: { board: string; guest?: string },
): void {
  try {
    const b = loadBoardProfile(files.board);
    const g = files.guest ? loadGuestDescriptor(files.guest) : undefined;
    const changed: string[] = [];
    const cmp = (name: string, x: unknown, y: unknown) => { if (JSON.stringify(x) !== JSON.stringify(y)) changed.push(name); };
    for (const k of Object.keys({ ...b, ...d.board }) as Array<keyof BoardProfile>) if (k !== 'sourceFile') cmp(`board.${String(k)}`, b[k], d.board[k]);
    if (g && d.guest) for (const k of Object.keys({ ...g, ...d.guest }) as Array<keyof GuestDescriptor>) if (k !== 'sourceFile') cmp(`guest.${String(k)}`, g[k], d.guest[k]);
    const msg = changed.length ? `reload: ${changed.join(', ')} changed; these take effect at the next restart of the controller` : 'reload: configuration unchanged';
    d.store?.record('reload', msg, { changed });
    d.log.info({ changed }, msg);
  } catch (e) {
    d.store?.record('reload', `reload refused: ${(e as Error).message}`);
    d.log.error({ err: (e as Error).message }, 'reload refused: the running configuration stays');
  }
}
