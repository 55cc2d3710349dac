/**
 * A simulated board's watchdog hardware: a FIFO at the profile's watchdog.device, read here.
 * Linux watchdog semantics: any byte but 'V' is a kick, 'V' (magic close) disarms until the next
 * kick, the first kick arms it; armed and starved beyond timeoutMs, it fires (the board decides
 * what firing does: a reset). Owns the FIFO and its reading end; knows nothing about processes.
 */
import { execFileSync } from 'node:child_process';
import { constants, openSync, rmSync, statSync } from 'node:fs';
import { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { UsError } from '../../core/errors.js';

export interface SimWatchdogOptions {
  /** Path of the FIFO (the board profile's watchdog.device). */
  fifo: string;
  /** Starvation beyond this fires the watchdog (the board profile's watchdog.timeoutMs). */
  timeoutMs: number;
  /** How often starvation is checked; the firing time is late by at most this. Default 10 ms. */
  checkEveryMs?: number;
  /** Called once per firing; the watchdog is disarmed and ignoring input when it is called. */
  onFire: () => void;
}

export interface SimWatchdogStatus {
  armed: boolean;
  /** Bytes are being read as kicks (false while the board is off or resetting). */
  listening: boolean;
  timeoutMs: number;
  kicks: number;
  magicCloses: number;
  fired: number;
  /** Milliseconds since the last kick, if any. */
  lastKickAgoMs?: number;
}

const MAGIC_CLOSE = 0x56; // 'V'

export class SimWatchdog {
  private reader?: Socket;
  private armed = false;
  private listening = false;
  private lastKick = 0;
  private kicks = 0;
  private magicCloses = 0;
  private fired = 0;
  private checker?: NodeJS.Timeout;

  constructor(private readonly o: SimWatchdogOptions) {
    if (!Number.isInteger(o.timeoutMs) || o.timeoutMs < 10) throw new UsError('US_ERR_CONFIG', `watchdog: timeoutMs must be an integer ≥ 10, got ${o.timeoutMs}`);
  }

  /** Creates the FIFO (mode 0600) and keeps it open for reading and writing, so a writer's O_NONBLOCK open always finds a reader. */
  open(): void {
    rmSync(this.o.fifo, { force: true });
    try {
      execFileSync('mkfifo', ['-m', '600', this.o.fifo], { stdio: ['ignore', 'ignore', 'pipe'] });
    } catch (e) {
      throw new UsError('US_ERR_CHASSIS', `watchdog: mkfifo ${this.o.fifo}: ${(e as Error).message}`);
    }
    if (!statSync(this.o.fifo).isFIFO()) throw new UsError('US_ERR_CHASSIS', `watchdog: ${this.o.fifo} is not a FIFO`);
    const fd = openSync(this.o.fifo, constants.O_RDWR | constants.O_NONBLOCK);
    this.reader = new Socket({ fd, readable: true, writable: false });
    this.reader.on('data', (d: Buffer) => this.onBytes(d));
    this.reader.on('error', () => undefined);
  }

  private onBytes(d: Buffer): void {
    if (!this.listening) return; // bytes from a controller that is already dead
    for (const byte of d) {
      if (byte === MAGIC_CLOSE) {
        this.magicCloses++;
        this.disarm();
      } else {
        this.kicks++;
        this.lastKick = performance.now();
        if (!this.armed) {
          this.armed = true;
          this.checker = setInterval(() => this.check(), this.o.checkEveryMs ?? 10);
        }
      }
    }
  }

  /**
   * An expiry seen by a timer is confirmed only after the FIFO has been read: Node runs timers
   * before it polls for I/O, so after chassisd's own loop was held up (CPU starvation, a GC pause)
   * the board's kicks may still be sitting unread in the FIFO. setImmediate runs after the poll
   * phase has read them; a starved reader must not reset a healthy board.
   */
  private check(): void {
    if (this.confirming || !this.starved()) return;
    this.confirming = true;
    setImmediate(() => {
      this.confirming = false;
      if (this.starved()) this.fire();
    });
  }

  private confirming = false;

  private starved(): boolean {
    return this.armed && performance.now() - this.lastKick > this.o.timeoutMs;
  }

  private fire(): void {
    this.fired++;
    this.disarm();
    this.listening = false;
    this.o.onFire();
  }

  private disarm(): void {
    this.armed = false;
    if (this.checker) clearInterval(this.checker);
    this.checker = undefined;
  }

  /** Board powered on: bytes count as kicks (the watchdog arms on the first). */
  listen(): void {
    this.listening = true;
  }

  /** Board off or resetting: disarmed, and bytes still in the FIFO are discarded. */
  ignore(): void {
    this.listening = false;
    this.disarm();
  }

  status(): SimWatchdogStatus {
    return {
      armed: this.armed,
      listening: this.listening,
      timeoutMs: this.o.timeoutMs,
      kicks: this.kicks,
      magicCloses: this.magicCloses,
      fired: this.fired,
      ...(this.kicks ? { lastKickAgoMs: Math.round(performance.now() - this.lastKick) } : {}),
    };
  }

  close(): void {
    this.ignore();
    this.reader?.destroy();
    this.reader = undefined;
    rmSync(this.o.fifo, { force: true });
  }
}
