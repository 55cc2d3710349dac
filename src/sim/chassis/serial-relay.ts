/**
 * The serial partner link's wire: copies bytes between two serial ports at the pace of a real
 * line (10 bits per byte, 8N1), in order, through a bounded buffer, and can be cut (bytes dropped
 * both ways) and healed. A pty pair alone moves bytes ~1000× faster than 115200 baud; this makes
 * heartbeat timings on the serial link realistic. Written once against RelayPort: the chassis uses
 * serialport-opened ptys (openSerialEnd), tests may use anything that moves bytes.
 */
import { performance } from 'node:perf_hooks';
import { writeSync } from 'node:fs';
import { SerialPort } from 'serialport';
import { UsError } from '../../core/errors.js';
import { TtyWriter, openFd } from '../../hw/serial/tty-writer.js';

/** What the relay needs from one end of the line. */
export interface RelayPort {
  write(data: Buffer): void;
  onData(listener: (data: Buffer) => void): void;
  /** Bytes written but not yet taken by the other side (the receiving UART's backlog). */
  pending(): number;
  /** Flow control toward the sender: stop/restart taking its bytes (it then blocks, as on a real line). Optional. */
  pause?(): void;
  resume?(): void;
  close(): Promise<void>;
}

export interface SerialRelayOptions {
  /** Line rate in baud; each byte takes 10 bit times (start, 8 data, stop). */
  baud: number;
  /** Pacing tick, ms: each tick sends what is due. Default 1. */
  tickMs?: number;
  /**
   * Bytes waiting per direction. A sender whose port has flow control is paused when this is
   * reached (and resumed below half), so it blocks as a real sender would; without flow control
   * the excess is dropped as overrun. Default 65536.
   */
  bufferBytes?: number;
  /**
   * Backlog the receiver may leave unread before the line drops what it delivers (a board that is
   * hung or off loses bytes like an overrun UART instead of hoarding stale ones). Default 4096.
   */
  receiverBacklogBytes?: number;
}

export interface DirectionCounters {
  /** Bytes taken from the sending port. */
  received: number;
  /** Bytes delivered to the receiving port. */
  relayed: number;
  /** Bytes dropped because the link was cut. */
  droppedCut: number;
  /** Bytes dropped because the buffer (no flow control) or the receiver's backlog was full. */
  droppedOverrun: number;
  /** Bytes waiting for their turn on the line now. */
  queued: number;
  /** The sender is paused by flow control now. */
  senderPaused: boolean;
}

interface Limits {
  bytesPerMs: number;
  /** Credit an idle line may bank, in bytes. */
  burst: number;
  queue: number;
  backlog: number;
}

/** One direction of the line: a FIFO of chunks and the credit of bytes the line may send now. */
class Direction {
  private readonly chunks: Buffer[] = [];
  private head = 0;
  queued = 0;
  private credit = 0;
  readonly counters: DirectionCounters = { received: 0, relayed: 0, droppedCut: 0, droppedOverrun: 0, queued: 0, senderPaused: false };

  constructor(private readonly src: RelayPort, private readonly dst: RelayPort, private readonly l: Limits) {}

  push(data: Buffer, cut: boolean): void {
    this.counters.received += data.length;
    if (cut) {
      this.counters.droppedCut += data.length;
      return;
    }
    if (!this.src.pause) {
      const room = Math.max(0, this.l.queue - this.queued);
      if (data.length > room) {
        this.counters.droppedOverrun += data.length - room;
        data = data.subarray(0, room);
      }
    }
    if (data.length === 0) return;
    this.chunks.push(data);
    this.queued += data.length;
    this.counters.queued = this.queued;
    if (this.src.pause && !this.counters.senderPaused && this.queued >= this.l.queue) {
      this.counters.senderPaused = true;
      this.src.pause();
    }
  }

  /** Sends what is due after `elapsedMs` of line time. */
  tick(elapsedMs: number): void {
    // An idle line may send its next byte at once, but never bank more than a short burst.
    this.credit = Math.min(this.credit + elapsedMs * this.l.bytesPerMs, this.l.burst);
    const n = Math.min(Math.floor(this.credit), this.queued);
    if (n <= 0) return;
    this.credit -= n;
    const out = this.take(n);
    if (this.dst.pending() > this.l.backlog) {
      this.counters.droppedOverrun += out.length;
    } else {
      this.dst.write(out);
      this.counters.relayed += out.length;
    }
  }

  private take(n: number): Buffer {
    const parts: Buffer[] = [];
    let left = n;
    while (left > 0) {
      const c = this.chunks[this.head]!;
      if (c.length <= left) {
        parts.push(c);
        left -= c.length;
        this.chunks[this.head++] = Buffer.alloc(0);
      } else {
        parts.push(c.subarray(0, left));
        this.chunks[this.head] = c.subarray(left);
        left = 0;
      }
    }
    if (this.head > 64) {
      this.chunks.splice(0, this.head);
      this.head = 0;
    }
    this.queued -= n;
    this.counters.queued = this.queued;
    this.resumeBelowHalf();
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  drop(): void {
    this.counters.droppedCut += this.queued;
    this.chunks.length = 0;
    this.head = 0;
    this.queued = 0;
    this.counters.queued = 0;
    this.credit = 0;
    this.resumeBelowHalf();
  }

  private resumeBelowHalf(): void {
    if (this.counters.senderPaused && this.queued <= this.l.queue / 2) {
      this.counters.senderPaused = false;
      this.src.resume?.();
    }
  }
}

export class SerialRelay {
  private readonly ab: Direction;
  private readonly ba: Direction;
  private readonly tickMs: number;
  private timer?: NodeJS.Timeout;
  private lastTick = 0;
  private cutNow = false;
  private started = false;

  constructor(private readonly a: RelayPort, private readonly b: RelayPort, opts: SerialRelayOptions) {
    if (!Number.isInteger(opts.baud) || opts.baud < 50 || opts.baud > 4_000_000) {
      throw new UsError('US_ERR_CONFIG', `serial relay: baud must be an integer from 50 to 4000000, got ${opts.baud}`);
    }
    this.tickMs = opts.tickMs ?? 1;
    if (!(this.tickMs > 0 && this.tickMs <= 100)) throw new UsError('US_ERR_CONFIG', `serial relay: tickMs must be in (0, 100], got ${opts.tickMs}`);
    const queue = opts.bufferBytes ?? 65536;
    if (!Number.isInteger(queue) || queue < 16) throw new UsError('US_ERR_CONFIG', `serial relay: bufferBytes must be an integer ≥ 16, got ${opts.bufferBytes}`);
    const backlog = opts.receiverBacklogBytes ?? 4096;
    if (!Number.isInteger(backlog) || backlog < 0) throw new UsError('US_ERR_CONFIG', `serial relay: receiverBacklogBytes must be an integer ≥ 0, got ${opts.receiverBacklogBytes}`);
    const bytesPerMs = opts.baud / 10 / 1000;
    // Credit for up to 10 ms of line time (at least two ticks, one byte): a late tick catches up
    // instead of losing line capacity, which a real UART never does.
    const limits: Limits = { bytesPerMs, burst: Math.max(1, bytesPerMs * Math.max(this.tickMs * 2, 10)), queue, backlog };
    this.ab = new Direction(a, b, limits);
    this.ba = new Direction(b, a, limits);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.a.onData((d) => this.arrive(this.ab, d));
    this.b.onData((d) => this.arrive(this.ba, d));
  }

  private arrive(dir: Direction, data: Buffer): void {
    dir.push(data, this.cutNow);
    if (!this.timer && dir.queued > 0) {
      // The line was idle since lastTick: that time counts, so the first byte goes at once.
      this.tick();
      // The timer runs only while bytes wait: an idle line costs nothing.
      this.timer ??= setInterval(() => this.tick(), this.tickMs);
    }
  }

  private tick(): void {
    const now = performance.now();
    const elapsed = now - this.lastTick;
    this.lastTick = now;
    this.ab.tick(elapsed);
    this.ba.tick(elapsed);
    // (What a receiving end did not take yet goes out at its next write: bytes keep arriving while
    // the partner lives; a receiver that takes nothing for good is a board that is off or hung.)
    if (this.ab.queued === 0 && this.ba.queued === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** Cuts the line: bytes waiting and bytes sent from now on are dropped, both ways. */
  cut(): void {
    this.cutNow = true;
    this.ab.drop();
    this.ba.drop();
  }

  heal(): void {
    this.cutNow = false;
  }

  get isCut(): boolean {
    return this.cutNow;
  }

  counters(): { aToB: DirectionCounters; bToA: DirectionCounters } {
    return { aToB: { ...this.ab.counters }, bToA: { ...this.ba.counters } };
  }

  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await Promise.allSettled([this.a.close(), this.b.close()]);
  }
}

/** Opens one relay end (a pty, or a real tty) with serialport, by path. */
export async function openSerialEnd(path: string, onError: (e: Error) => void = () => undefined): Promise<RelayPort> {
  // The relay paces bytes itself; the pty's own rate setting does not matter, so a standard rate always works.
  const port = new SerialPort({ path, baudRate: 115200, autoOpen: false });
  await new Promise<void>((resolve, reject) => port.open((e) => (e ? reject(new UsError('US_ERR_CHASSIS', `serial relay: cannot open ${path}: ${e.message}`)) : resolve())));
  port.on('error', onError);
  // Written on this thread, not with serialport's write: the chassis runs real-time, where that
  // write's poller livelocks with the thread pool's reads (src/hw/serial/tty-writer.ts).
  const writer = new TtyWriter((data) => {
    const fd = openFd(port);
    if (fd === undefined) throw Object.assign(new Error(`serial relay: ${path} is closed`), { code: 'EBADF' });
    return writeSync(fd, data);
  }, onError);
  return {
    write: (d) => void writer.send(d, Number.MAX_SAFE_INTEGER), // bounded by the relay's backlog check (pending)
    onData: (l) => void port.on('data', l),
    pending: () => { writer.flush(); return writer.pending; },
    pause: () => void port.pause(),
    resume: () => void port.resume(),
    close: () => new Promise<void>((resolve) => (port.isOpen ? port.close(() => resolve()) : resolve())),
  };
}

/**
 * Discards what waits in a board's end of the serial link before the board boots: a powered-off
 * UART receives nothing, but the pty (and socat behind it) kept what the partner sent meanwhile.
 * Reads until the line has been quiet for `quietMs` (bounded by `maxMs`); returns the bytes dropped.
 * Fails quietly (returns -1) when the port cannot be opened, e.g. someone else holds it.
 */
export async function drainSerialEnd(path: string, quietMs = 30, maxMs = 500): Promise<number> {
  const port = new SerialPort({ path, baudRate: 115200, autoOpen: false });
  const opened = await new Promise<boolean>((resolve) => port.open((e) => resolve(!e)));
  if (!opened) return -1;
  let dropped = 0;
  let last = performance.now();
  port.on('data', (d: Buffer) => { dropped += d.length; last = performance.now(); });
  port.on('error', () => undefined);
  const start = performance.now();
  while (performance.now() - last < quietMs && performance.now() - start < maxMs) await new Promise((r) => setTimeout(r, 5));
  await new Promise<void>((resolve) => port.close(() => resolve()));
  return dropped;
}

/**
 * Reads and drops what reaches a board's end of the serial link until `done()` says so (checked
 * every `everyMs`): a UART nobody has opened keeps nothing, but the pty, socat and the relay's side
 * of the line hold seconds of a partner's heartbeats, which reached a controller started late (by
 * the cluster manager) as if fresh. Returns the bytes dropped, or -1 when the port cannot be opened.
 */
export async function discardSerialUntil(path: string, done: () => boolean | Promise<boolean>, everyMs = 100): Promise<number> {
  const port = new SerialPort({ path, baudRate: 115200, autoOpen: false });
  const opened = await new Promise<boolean>((resolve) => port.open((e) => resolve(!e)));
  if (!opened) return -1;
  let dropped = 0;
  port.on('data', (d: Buffer) => { dropped += d.length; });
  port.on('error', () => undefined);
  try {
    while (!(await done())) await new Promise((r) => setTimeout(r, everyMs));
  } finally {
    await new Promise<void>((resolve) => (port.isOpen ? port.close(() => resolve()) : resolve()));
  }
  return dropped;
}
