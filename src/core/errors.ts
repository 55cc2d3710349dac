/**
 * Errors with a stable `code` (US_ERR_*), so callers, the CLI and operators match on codes, not on
 * message text. Owns nothing else; every layer may import it.
 */

export type UsErrorCode =
  | 'US_ERR_CONFIG'          // a board profile or guest descriptor is malformed
  | 'US_ERR_NOT_FOUND'       // a file, image or binary the operation needs is missing
  | 'US_ERR_ADDRESS_IN_USE'  // a port or socket the board must own is taken
  | 'US_ERR_QMP'             // QEMU answered a QMP command with an error
  | 'US_ERR_QMP_TIMEOUT'     // QEMU did not answer in time
  | 'US_ERR_QMP_CLOSED'      // the QMP connection went away
  | 'US_ERR_HYPERVISOR'      // QEMU could not be started or died
  | 'US_ERR_GUEST_TIMEOUT'   // the guest did not become ready in time
  | 'US_ERR_PINNING'         // CPU affinity / priority could not be applied
  | 'US_ERR_ALREADY_RUNNING' // a second controller on the same board
  | 'US_ERR_NOT_RUNNING'     // no controller answers on this board
  | 'US_ERR_CONTROL'         // a malformed or failed control request
  | 'US_ERR_TIMEOUT'         // a bounded wait ran out
  | 'US_ERR_INTERNAL';

export class UsError extends Error {
  readonly code: UsErrorCode;
  readonly detail?: Record<string, unknown>;
  constructor(code: UsErrorCode, message: string, detail?: Record<string, unknown>) {
    super(message);
    this.name = 'UsError';
    this.code = code;
    this.detail = detail;
  }
  toJSON(): Record<string, unknown> {
    return { code: this.code, message: this.message, ...(this.detail ? { detail: this.detail } : {}) };
  }
}

/** Normalises anything thrown into a UsError, keeping the code of an existing one. */
export function asUsError(err: unknown): UsError {
  if (err instanceof UsError) return err;
  const e = err as NodeJS.ErrnoException;
  if (e && e.code === 'EADDRINUSE') return new UsError('US_ERR_ADDRESS_IN_USE', e.message);
  if (e && e.code === 'ENOENT') return new UsError('US_ERR_NOT_FOUND', e.message);
  return new UsError('US_ERR_INTERNAL', e instanceof Error ? e.message : String(err));
}
