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
  | 'US_ERR_GUEST_STATE'     // the guest came up without the saved state its disk holds: not serving
  | 'US_ERR_PINNING'         // CPU affinity / priority could not be applied
  | 'US_ERR_ALREADY_RUNNING' // a second controller on the same board
  | 'US_ERR_NOT_RUNNING'     // no controller answers on this board
  | 'US_ERR_CONTROL'         // a malformed or failed control request
  | 'US_ERR_TIMEOUT'         // a bounded wait ran out
  | 'US_ERR_FENCING'        // the partner could not be powered off
  | 'US_ERR_LINK'           // a partner link could not be opened
  | 'US_ERR_ROLE'           // a role change that is not allowed now
  | 'US_ERR_INTERNAL'
  | 'US_ERR_PKG_FORMAT'         // not an upgrade package, or its header/framing is damaged
  | 'US_ERR_PKG_UNKNOWN_KEY'    // the package is signed by a key this board does not trust
  | 'US_ERR_PKG_SIGNATURE'      // the manifest's signature does not verify
  | 'US_ERR_PKG_MANIFEST'       // the (signed) manifest is malformed
  | 'US_ERR_PKG_INCOMPATIBLE'   // the package is for another board family
  | 'US_ERR_PKG_DOWNGRADE'      // the package is older than the running version (--force overrides)
  | 'US_ERR_PKG_TOO_OLD'        // the running version is below the package's minimum (--force overrides)
  | 'US_ERR_PKG_UNSAFE_ENTRY'   // a payload entry with an absolute path, "..", a link or a device
  | 'US_ERR_PKG_UNLISTED_ENTRY' // a payload entry not in the manifest, or listed twice
  | 'US_ERR_PKG_HASH_MISMATCH'  // a payload file's (or the whole payload's) size or SHA-256 differs from the manifest
  | 'US_ERR_PKG_TRUNCATED'      // the package ends before its payload does
  | 'US_ERR_UPGRADE_BUSY'       // another upgrade operation holds the slots
  | 'US_ERR_UPGRADE_STATE'      // the slots' state forbids the operation (e.g. a trial not yet committed)
  | 'US_ERR_UPGRADE_ABORTED'    // a rolling upgrade of the pair stopped at a step (the detail names it)
  | 'US_ERR_NO_SPACE'           // not enough free space for a package (push or install) with the reserve kept free
  | 'US_ERR_UPGRADE_FLOOR'      // the running slot's signed version record (the downgrade floor) is missing or does not verify (--force overrides)
  | 'US_ERR_BOOTENV'            // the boot environment could not be read or written
  | 'US_ERR_NO_BOOTABLE_SLOT'   // neither slot holds a loadable image
  | 'US_ERR_YMODEM'             // a serial file transfer failed (protocol, retries exhausted, too large)
  | 'US_ERR_YMODEM_CANCELLED'   // the sender or the operator cancelled a serial file transfer
  | 'US_ERR_CHASSIS'            // the simulated chassis could not be set up, driven or torn down
  | 'US_ERR_CONSOLE'            // the serial console refuses a command or cannot parse a line
  | 'US_ERR_PASSWORD'           // a console password could not be set (too short, mismatch, wrong current one)
  | 'US_ERR_GUEST_UPGRADE'     // a guest upgrade step failed: the upgrade is aborted, the pair stays on the old version
  | 'US_ERR_GUEST_FAILED';     // the guest could not be brought back (a recovery from the checkpoint gave up)

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
