/**
 * Byte-level access to a serial line (any Node Duplex: a serialport SerialPort, a socket, a pty) for
 * the XMODEM/YMODEM code: timed reads of single bytes and of exact lengths, purging, writing. Takes
 * over the stream's 'data' events while attached and gives them back on `detach`. Also the CRC-16 the
 * protocols use. Owns no protocol logic.
 */
import type { Duplex } from 'node:stream';
import { UsError } from '../core/errors.js';

export const SOH = 0x01; // 128-byte block follows
export const STX = 0x02; // 1024-byte block follows
export const EOT = 0x04;
export const ACK = 0x06;
export const NAK = 0x15;
export const CAN = 0x18;
export const SUB = 0x1a; // padding of the last block
export const CRC_REQUEST = 0x43; // 'C': "send with CRC-16"

/** CRC-16/XMODEM (polynomial 0x1021, initial 0), as XMODEM-CRC and YMODEM append it, big-endian. */
const TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let k = 0; k < 8; k++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

export function crc16(buf: Uint8Array, start = 0, end = buf.length): number {
  let crc = 0;
  for (let i = start; i < end; i++) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ buf[i]!) & 0xff]!;
  return crc;
}

export class SerialLine {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private waiter?: () => void;
  private closed?: UsError;
  private readonly onData = (d: Buffer) => {
    this.chunks.push(d);
    this.buffered += d.length;
    this.wake();
  };
  /** The stream closed or failed: nothing more can be written. */
  lineGone = false;
  private readonly onClose = () => {
    this.lineGone = true;
    this.end(new UsError('US_ERR_YMODEM', 'the serial line closed during the transfer'));
  };
  private readonly onError = (e: Error) => {
    this.lineGone = true;
    this.end(new UsError('US_ERR_YMODEM', `the serial line failed: ${e.message}`));
  };
  private readonly onAbort = () => this.end(new UsError('US_ERR_YMODEM_CANCELLED', 'transfer cancelled by the operator'));

  constructor(readonly stream: Duplex, private readonly signal?: AbortSignal) {
    stream.on('data', this.onData);
    stream.on('close', this.onClose);
    stream.on('error', this.onError);
    signal?.addEventListener('abort', this.onAbort);
    if (signal?.aborted) this.onAbort();
  }

  private end(err: UsError): void {
    this.closed ??= err;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Stops listening; bytes not read stay unread by us. */
  detach(): void {
    this.stream.off('data', this.onData);
    this.stream.off('close', this.onClose);
    this.stream.off('error', this.onError);
    this.signal?.removeEventListener('abort', this.onAbort);
    if (this.stream.listenerCount('data') === 0) this.stream.pause();
  }

  /** True if the line was closed or the operation aborted. */
  get failure(): UsError | undefined {
    return this.closed;
  }

  private take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - off);
      c.copy(out, off, 0, k);
      off += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.buffered -= n;
    return out;
  }

  /** Waits until `n` bytes are buffered or `timeoutMs` passes; throws if the line closed. */
  private async waitFor(n: number, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (this.buffered < n) {
      if (this.closed) throw this.closed;
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => { this.waiter = undefined; resolve(); }, left);
        this.waiter = () => { clearTimeout(timer); resolve(); };
      });
    }
    if (this.closed) throw this.closed;
    return true;
  }

  /** The next byte, or undefined after `timeoutMs` of silence. */
  async readByte(timeoutMs: number): Promise<number | undefined> {
    return (await this.waitFor(1, timeoutMs)) ? this.take(1)[0] : undefined;
  }

  /** Exactly `n` bytes, or undefined if they do not all arrive within `timeoutMs`. */
  async read(n: number, timeoutMs: number): Promise<Buffer | undefined> {
    return (await this.waitFor(n, timeoutMs)) ? this.take(n) : undefined;
  }

  /** Discards input until the line has been quiet for `quietMs` (at most `maxMs`). */
  async purge(quietMs = 200, maxMs = 3000): Promise<void> {
    const end = Date.now() + maxMs;
    do {
      this.chunks = [];
      this.buffered = 0;
    } while ((await this.waitFor(1, quietMs)) && Date.now() < end);
    this.chunks = [];
    this.buffered = 0;
  }

  private lastWrite: Promise<void> = Promise.resolve();

  write(bytes: number[] | Buffer): void {
    if (this.lineGone) return;
    this.lastWrite = new Promise<void>((resolve) => {
      this.stream.write(Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes), () => resolve());
    });
  }

  /**
   * Waits (at most `maxMs`) until everything written has been handed to the device. The last ACK
   * of a transfer is written just before the port is closed: closed first, it can be dropped, and
   * the sender then repeats its last block until its own retries run out (sb: about 100 s).
   */
  async settle(maxMs = 2000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.lastWrite, new Promise<void>((r) => { timer = setTimeout(r, maxMs); })]);
    clearTimeout(timer);
  }

  /** The cancel sequence lrzsz sends: CAN×8 then BS×8 (the backspaces tidy a terminal that echoed). */
  cancel(): void {
    this.write(Buffer.from([...Array(8).fill(CAN), ...Array(8).fill(0x08)]));
  }
}
