/**
 * Partner links: the ways a board hears its partner. One small interface; an Ethernet link (UDP
 * datagrams between the boards' partner-link addresses) and a serial link (a tty opened with
 * serialport, frames SLIP-encoded). Links carry opaque frames; what they mean is decided above
 * (src/ha). A link never throws after open: errors are counted and the link keeps trying.
 */
import { createSocket, type Socket } from 'node:dgram';
import { EventEmitter } from 'node:events';
import { writeSync } from 'node:fs';
import { SerialPort } from 'serialport';
import { SlipFrameDecoder, slipEncode } from '../serial/slip.js';
import { TtyWriter, openFd } from '../serial/tty-writer.js';

export interface PartnerLink extends EventEmitter {
  readonly name: 'ethernet' | 'serial';
  open(): Promise<void>;
  /** Sends one frame; false if it could not be sent now (counted, never queued without bound). */
  send(frame: Buffer): boolean;
  close(): Promise<void>;
  /** A link addressed per partner (Ethernet) can be pointed at another partner board; a point-to-point one (serial) cannot. */
  retarget?(partnerAddress: string): void;
  readonly counters: { txFrames: number; txDropped: number; rxFrames: number; errors: number };
  on(ev: 'frame', fn: (frame: Buffer) => void): this;
}

export interface EthernetLinkOptions {
  localAddress: string;
  partnerAddress: string;
  port: number;
}

export class EthernetLink extends EventEmitter implements PartnerLink {
  readonly name = 'ethernet' as const;
  private socket?: Socket;
  private retry?: NodeJS.Timeout;
  private closed = false;
  lastError?: string;
  readonly counters = { txFrames: 0, txDropped: 0, rxFrames: 0, errors: 0, foreign: 0 };

  constructor(public o: EthernetLinkOptions) {
    super();
  }

  /**
   * Points the link at another partner board (N+1: the old partner is gone and a spare becomes the
   * new one): frames go to, and are accepted only from, the new address from now on.
   */
  retarget(partnerAddress: string): void {
    this.o = { ...this.o, partnerAddress };
  }

  /** Binds; if the address is not there yet (interface still coming up), keeps retrying every second. */
  async open(): Promise<void> {
    await this.tryBind();
  }

  private async tryBind(): Promise<void> {
    if (this.closed) return;
    const s = createSocket({ type: 'udp4' });
    try {
      await new Promise<void>((resolve, reject) => {
        s.once('error', reject);
        s.bind(this.o.port, this.o.localAddress, () => resolve());
      });
    } catch (e) {
      s.close();
      this.lastError = (e as Error).message;
      this.counters.errors++;
      this.retry = setTimeout(() => void this.tryBind(), 1000);
      return;
    }
    s.on('error', (e) => { this.counters.errors++; this.lastError = e.message; });
    s.on('message', (msg, rinfo) => {
      if (rinfo.address !== this.o.partnerAddress) { this.counters.foreign++; return; }
      this.counters.rxFrames++;
      this.emit('frame', msg);
    });
    this.socket = s;
    this.lastError = undefined;
  }

  send(frame: Buffer): boolean {
    if (!this.socket) { this.counters.txDropped++; return false; }
    this.socket.send(frame, this.o.port, this.o.partnerAddress, (err) => {
      if (err) { this.counters.errors++; this.lastError = err.message; }
    });
    this.counters.txFrames++;
    return true;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    this.socket?.close();
    this.socket = undefined;
  }
}

export interface SerialLinkOptions {
  path: string;
  baudRate: number;
  /** Bytes allowed to wait in the write queue before frames are dropped instead (a stuck line). */
  maxQueuedBytes?: number;
}

export class SerialLink extends EventEmitter implements PartnerLink {
  readonly name = 'serial' as const;
  private port?: SerialPort;
  private readonly decoder = new SlipFrameDecoder((f) => { this.counters.rxFrames++; this.emit('frame', f); });
  private retry?: NodeJS.Timeout;
  private closed = false;
  /** Writes to the tty itself; holds the bytes of a frame the tty did not take yet (a partial write). */
  private readonly writer = new TtyWriter((data) => this.writeTty(this.fd() ?? -1, data), (e) => { this.counters.errors++; this.lastError = e.message; });
  lastError?: string;
  readonly counters = { txFrames: 0, txDropped: 0, rxFrames: 0, errors: 0 };

  constructor(readonly o: SerialLinkOptions) {
    super();
  }

  get decoderCounters(): { oversized: number; badEscapes: number } {
    return { oversized: this.decoder.oversized, badEscapes: this.decoder.badEscapes };
  }

  /** Opens the tty; if it is missing or fails, keeps retrying every second (the link is then down). */
  async open(): Promise<void> {
    await this.tryOpen();
  }

  private async tryOpen(): Promise<void> {
    if (this.closed) return;
    const port = new SerialPort({ path: this.o.path, baudRate: this.o.baudRate, autoOpen: false });
    try {
      await new Promise<void>((resolve, reject) => port.open((err) => (err ? reject(err) : resolve())));
    } catch (e) {
      this.lastError = (e as Error).message;
      this.counters.errors++;
      this.retry = setTimeout(() => void this.tryOpen(), 1000);
      return;
    }
    port.on('data', (chunk: Buffer) => this.decoder.push(chunk));
    port.on('error', (e) => { this.counters.errors++; this.lastError = e.message; });
    port.on('close', () => {
      if (this.port === port) this.port = undefined;
      if (!this.closed) this.retry = setTimeout(() => void this.tryOpen(), 1000);
    });
    this.port = port;
    this.writer.reset();
    this.lastError = undefined;
  }

  /**
   * Writes straight to the tty (non-blocking, on this thread), never through serialport's write
   * (src/hw/serial/tty-writer.ts says why: a livelock at SCHED_FIFO, seen in CI, reproduced in
   * test/integration/serial-link.test.ts). A tty that takes only part of a frame keeps the rest
   * waiting (bounded by `maxQueuedBytes`) for the next send; a full one drops the frame, as a stuck
   * line should.
   */
  send(frame: Buffer): boolean {
    if (this.fd() === undefined) { this.counters.txDropped++; return false; }
    if (!this.writer.send(slipEncode(frame), this.o.maxQueuedBytes ?? 512)) { this.counters.txDropped++; return false; }
    this.counters.txFrames++;
    return true;
  }

  /** The open tty's descriptor (serialport's binding holds it), if the port is open. */
  protected fd(): number | undefined {
    return openFd(this.port);
  }

  /** One non-blocking write to the tty: the bytes it took (throws EAGAIN when it took none). */
  protected writeTty(fd: number, data: Buffer): number {
    return writeSync(fd, data);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.retry);
    const p = this.port;
    this.port = undefined;
    if (p?.isOpen) await new Promise<void>((r) => p.close(() => r()));
  }
}
