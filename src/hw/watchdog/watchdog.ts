/**
 * The board's hardware watchdog, Linux watchdog-device semantics: every write of a NUL byte is a kick;
 * writing 'V' just before close is the "magic close" that disarms it, done only on orderly shutdown.
 * If the controller stops kicking (event loop stuck, guest supervision lost) the hardware resets the
 * board. The same driver serves /dev/watchdogN and the simulated chassis' FIFO (read by the board's
 * hardware process). Owns the open device; decides nothing about health (the caller stops kicking).
 */
import { closeSync, constants, openSync, statSync, writeSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { UsError } from '../../core/errors.js';

export interface WatchdogDevice {
  kick(): void;
  /** Orderly shutdown: disarm ('V') and close. */
  magicClose(): void;
  /** Close WITHOUT disarming: the hardware will fire (used when the controller gives up). */
  abandon(): void;
  readonly kicks: number;
}

/** What makes the device, for the error about a missing one. */
const WATCHDOG_HOWTO = 'on a blade it is the watchdog driver\'s device (load the driver: e.g. modprobe iTCO_wdt, or softdog to try), on the simulated chassis `understudy chassis up` makes it; a board without one leaves the profile\'s watchdog section out';

export class LinuxWatchdog implements WatchdogDevice {
  private fd?: number;
  kicks = 0;
  failures = 0;
  private static readonly KICK = Buffer.from([0]);

  constructor(readonly path: string, readonly timeoutMs: number) {}

  open(): void {
    let isFifo = false;
    try {
      isFifo = statSync(this.path).isFIFO();
    } catch (e) {
      throw new UsError('US_ERR_NOT_FOUND', `watchdog device ${this.path}: ${(e as Error).message}; ${WATCHDOG_HOWTO}`);
    }
    if (!isFifo) {
      // A real device: set the timeout (util-linux wdctl) before we start kicking it. Seconds, rounded up.
      const s = Math.max(1, Math.ceil(this.timeoutMs / 1000));
      try {
        execFileSync('wdctl', ['-s', String(s), this.path], { stdio: 'ignore' });
      } catch (e) {
        throw new UsError('US_ERR_CONFIG', `watchdog device ${this.path}: cannot set timeout ${s} s: ${(e as Error).message}`);
      }
    }
    try {
      this.fd = openSync(this.path, constants.O_WRONLY | constants.O_NONBLOCK);
    } catch (e) {
      throw new UsError('US_ERR_NOT_FOUND', `watchdog device ${this.path}: ${(e as Error).message}`);
    }
  }

  kick(): void {
    if (this.fd === undefined) return;
    try {
      writeSync(this.fd, LinuxWatchdog.KICK);
      this.kicks++;
    } catch {
      this.failures++;
    }
  }

  magicClose(): void {
    if (this.fd === undefined) return;
    try {
      writeSync(this.fd, 'V');
    } catch {
      // the hardware may already be gone
    }
    this.abandon();
  }

  abandon(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }
}
