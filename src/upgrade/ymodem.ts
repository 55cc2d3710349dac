/**
 * Receives one file over a serial line by YMODEM (batch, 1K or 128-byte blocks, CRC-16), also taking
 * XMODEM-1K / XMODEM-CRC (no header block: the file gets a given name and keeps its SUB padding), so
 * `sb` / `sx` from lrzsz, minicom, screen or a terminal emulator can send a package to a blade's
 * console. Checks block numbers and CRCs, NAKs and retries, honours CAN from the sender, times out,
 * bounds the file size, reports progress, and can be cancelled (AbortSignal). Writes
 * <dir>/.<name>.part, then fsyncs and renames it to <dir>/<name>. Owns the transfer only: the caller
 * owns the stream (it is not closed) and decides what to do with the file.
 *
 *   receiver                     sender
 *   C (every handshakeIntervalMs) ->
 *                                <- block 0: "name\0size mtime mode…" (YMODEM only)
 *   ACK, C                       ->
 *                                <- block 1, 2, …   (SOH: 128 bytes, STX: 1024)
 *   ACK (NAK on a bad CRC/number) ->
 *                                <- EOT
 *   NAK                          ->  (the first EOT is NAKed, as the spec says: noise can fake one)
 *                                <- EOT
 *   ACK, C                       ->
 *                                <- block 0 empty: end of batch (YMODEM only)
 *   ACK                          ->
 */
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { join } from 'node:path';
import { UsError } from '../core/errors.js';
import { fsyncDir } from '../hw/bootenv/durable.js';
import { ACK, CAN, crc16, CRC_REQUEST, EOT, NAK, SerialLine, SOH, STX } from './ymodem-line.js';

export interface ReceiveOptions {
  /** Directory the file is written to (created if missing). */
  dir: string;
  /** Largest file accepted, in bytes. Default 1 GiB. */
  maxBytes?: number;
  /** Name to store the file under; default the name the sender gives (YMODEM) or `upload.bin` (XMODEM). */
  fileName?: string;
  /** Interval of the 'C' the receiver sends until the sender starts. Default 1000 ms. */
  handshakeIntervalMs?: number;
  /** Give up if no sender starts within this. Default 60000 ms. */
  handshakeTimeoutMs?: number;
  /** Silence that counts as a lost block (then NAK). Default 10000 ms. */
  packetTimeoutMs?: number;
  /** Time for a whole block after its first byte. Default 5000 ms (enough for 1029 bytes at 2400 baud). */
  blockTimeoutMs?: number;
  /** Consecutive errors (bad CRC, bad number, timeouts) before giving up. Default 10. */
  maxErrors?: number;
  /** Called after each accepted block. */
  onProgress?: (p: ReceiveProgress) => void;
  /** Aborts the transfer (the sender is sent CANs). */
  signal?: AbortSignal;
}

export interface ReceiveProgress {
  name: string;
  received: number;
  /** Size announced by the YMODEM header, if any. */
  total?: number;
}

export interface ReceiveResult {
  path: string;
  name: string;
  bytes: number;
  protocol: 'ymodem' | 'xmodem';
  /** The size came from the YMODEM header (else the file may end with SUB padding). */
  sizeKnown: boolean;
  blocks: number;
  /** Blocks NAKed and received again, timeouts, duplicates. */
  retries: number;
  durationMs: number;
  /** The sender offered more files after the first; they were refused. */
  refusedMore: boolean;
}

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/;

function sanitizeName(raw: string): string | undefined {
  const base = raw.split('/').pop() ?? '';
  if (SAFE_NAME.test(base)) return base;
  const cleaned = base.replace(/[^A-Za-z0-9._+-]/g, '_').replace(/^[._+-]+/, '').slice(0, 128);
  return SAFE_NAME.test(cleaned) ? cleaned : undefined;
}

/** Parses a YMODEM block 0: "name\0size mtime mode ..." (fields after the name are optional). */
export function parseHeaderBlock(data: Buffer): { name: string; size?: number } {
  const nul = data.indexOf(0);
  const name = data.subarray(0, nul < 0 ? data.length : nul).toString('latin1');
  if (!name) return { name: '' };
  const rest = nul < 0 ? '' : data.subarray(nul + 1, data.indexOf(0, nul + 1) < 0 ? data.length : data.indexOf(0, nul + 1)).toString('latin1');
  const sizeText = rest.trim().split(/\s+/)[0] ?? '';
  const size = /^\d{1,15}$/.test(sizeText) ? Number(sizeText) : undefined;
  return { name, size };
}

class Sink {
  private fd: number;
  private buf = Buffer.allocUnsafe(64 * 1024);
  private used = 0;
  written = 0;
  readonly part: string;

  constructor(readonly dir: string, readonly name: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.part = join(dir, `.${name}.part`);
    this.fd = openSync(this.part, 'w', 0o600);
  }

  write(data: Buffer): void {
    if (this.used + data.length > this.buf.length) this.flush();
    if (data.length > this.buf.length) {
      writeSync(this.fd, data);
    } else {
      data.copy(this.buf, this.used);
      this.used += data.length;
    }
    this.written += data.length;
  }

  private flush(): void {
    let off = 0;
    while (off < this.used) off += writeSync(this.fd, this.buf, off, this.used - off);
    this.used = 0;
  }

  commit(): string {
    this.flush();
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = -1;
    const final = join(this.dir, this.name);
    renameSync(this.part, final);
    fsyncDir(this.dir);
    return final;
  }

  discard(): void {
    if (this.fd >= 0) closeSync(this.fd);
    this.fd = -1;
    rmSync(this.part, { force: true });
  }
}

type Phase = 'handshake' | 'data' | 'batch-end';

/** Receives one file from `port` (see the module comment). */
export async function receiveFile(port: Duplex, o: ReceiveOptions): Promise<ReceiveResult> {
  const maxBytes = o.maxBytes ?? 1024 ** 3;
  const handshakeIntervalMs = o.handshakeIntervalMs ?? 1000;
  const handshakeTimeoutMs = o.handshakeTimeoutMs ?? 60000;
  const packetTimeoutMs = o.packetTimeoutMs ?? 10000;
  const blockTimeoutMs = o.blockTimeoutMs ?? 5000;
  const maxErrors = o.maxErrors ?? 10;
  const t0 = Date.now();
  const line = new SerialLine(port, o.signal);

  let phase: Phase = 'handshake';
  let protocol: 'ymodem' | 'xmodem' = 'ymodem';
  let sink: Sink | undefined;
  let total: number | undefined;
  let expected = 1; // next data block number (mod 256 on the wire)
  let blocks = 0;
  let retries = 0;
  let errors = 0;
  let eotSeen = false;
  let refusedMore = false;
  let resultPath: string | undefined;
  let batchEndWaits = 0;

  const fatal = (code: UsError['code'], msg: string): never => {
    throw new UsError(code, `YMODEM receive: ${msg}`);
  };
  let senderCancelled = false;
  const softError = async (why: string) => {
    errors++;
    retries++;
    if (errors > maxErrors) fatal('US_ERR_YMODEM', `${maxErrors} consecutive errors, last: ${why}`);
    await line.purge();
    line.write([phase === 'handshake' ? CRC_REQUEST : NAK]);
  };
  const openSink = (rawName: string | undefined): Sink => {
    const name = o.fileName ?? (rawName ? sanitizeName(rawName) : undefined) ?? 'upload.bin';
    if (o.fileName && !SAFE_NAME.test(o.fileName)) throw new UsError('US_ERR_CONFIG', `fileName ${JSON.stringify(o.fileName)}: letters, digits, . _ + - only`);
    return new Sink(o.dir, name);
  };
  const accept = (data: Buffer) => {
    const s = sink!;
    let keep = data;
    if (total !== undefined) keep = data.subarray(0, Math.max(0, Math.min(data.length, total - s.written)));
    if (s.written + keep.length > maxBytes) fatal('US_ERR_YMODEM', `file larger than the ${maxBytes}-byte limit`);
    s.write(keep);
    blocks++;
    o.onProgress?.({ name: s.name, received: s.written, total });
  };

  try {
    line.write([CRC_REQUEST]);
    let lastPoke = Date.now();
    for (;;) {
      const waitMs = phase === 'handshake' ? Math.max(1, handshakeIntervalMs - (Date.now() - lastPoke)) : packetTimeoutMs;
      const b = await line.readByte(waitMs);
      if (b === undefined) {
        if (phase === 'handshake') {
          if (Date.now() - t0 >= handshakeTimeoutMs) fatal('US_ERR_YMODEM', `no sender started within ${handshakeTimeoutMs} ms`);
          line.write([CRC_REQUEST]);
          lastPoke = Date.now();
          continue;
        }
        if (phase === 'batch-end') {
          // Some senders stop after the file's EOT; the file is complete either way.
          if (++batchEndWaits >= 2) break;
          line.write([CRC_REQUEST]);
          continue;
        }
        await softError('timeout waiting for a block');
        continue;
      }
      if (b === CAN) {
        const next = await line.readByte(1000);
        if (next === CAN) {
          senderCancelled = true;
          throw new UsError('US_ERR_YMODEM_CANCELLED', 'YMODEM receive: the sender cancelled the transfer');
        }
        continue;
      }
      if (b === EOT) {
        if (phase === 'data') {
          if (!eotSeen) {
            eotSeen = true;
            line.write([NAK]);
            continue;
          }
          if (total !== undefined && sink!.written < total) fatal('US_ERR_YMODEM', `sender ended after ${sink!.written} of ${total} bytes`);
          resultPath = sink!.commit();
          line.write([ACK]);
          if (protocol === 'xmodem') break;
          phase = 'batch-end';
          line.write([CRC_REQUEST]);
        } else if (phase === 'batch-end') {
          line.write([ACK]); // our ACK of the EOT was lost
          line.write([CRC_REQUEST]);
        }
        continue;
      }
      if (b !== SOH && b !== STX) continue; // noise, or a terminal's echo before the sender starts
      const size = b === STX ? 1024 : 128;
      const body = await line.read(size + 4, blockTimeoutMs);
      if (!body) {
        await softError(`block of ${size} bytes incomplete`);
        continue;
      }
      const num = body[0]!;
      if (((num + body[1]!) & 0xff) !== 0xff) {
        await softError('block number and its complement disagree');
        continue;
      }
      if (crc16(body, 2, 2 + size) !== body.readUInt16BE(2 + size)) {
        await softError(`CRC error in block ${num}`);
        continue;
      }
      errors = 0;
      const data = body.subarray(2, 2 + size);

      if (phase === 'handshake') {
        if (num === 0) {
          const h = parseHeaderBlock(data);
          if (!h.name) {
            line.write([ACK]);
            fatal('US_ERR_YMODEM', 'the sender ended the batch without sending a file');
          }
          if (h.size !== undefined && h.size > maxBytes) fatal('US_ERR_YMODEM', `${h.name} is ${h.size} bytes, over the ${maxBytes}-byte limit`);
          total = h.size;
          sink = openSink(h.name);
          protocol = 'ymodem';
          phase = 'data';
          expected = 1;
          line.write([ACK, CRC_REQUEST]);
          o.onProgress?.({ name: sink.name, received: 0, total });
        } else if (num === 1) {
          protocol = 'xmodem';
          sink = openSink(undefined);
          phase = 'data';
          accept(data);
          expected = 2;
          line.write([ACK]);
        } else {
          await softError(`unexpected first block ${num}`);
        }
        continue;
      }

      if (phase === 'batch-end') {
        if (num !== 0) {
          await softError(`unexpected block ${num} after the end of the file`);
          continue;
        }
        if (parseHeaderBlock(data).name) {
          refusedMore = true; // one file per session: refuse the rest of the batch
          line.cancel();
        } else {
          line.write([ACK]);
        }
        break;
      }

      // phase === 'data'
      eotSeen = false;
      if (num === (expected & 0xff)) {
        accept(data);
        expected++;
        line.write([ACK]);
      } else if (num === ((expected - 1) & 0xff)) {
        // A repeat: our ACK was lost. Block 0 repeated means the sender missed the ACK of the header.
        retries++;
        line.write(expected === 1 && protocol === 'ymodem' ? [ACK, CRC_REQUEST] : [ACK]);
      } else {
        fatal('US_ERR_YMODEM', `block ${num} out of sequence (expected ${expected & 0xff}): blocks were lost`);
      }
    }
    return {
      path: resultPath!,
      name: sink!.name,
      bytes: sink!.written,
      protocol,
      sizeKnown: total !== undefined,
      blocks,
      retries,
      durationMs: Date.now() - t0,
      refusedMore,
    };
  } catch (e) {
    if (!resultPath) sink?.discard();
    // Tell the sender to stop, unless it stopped us or the line is gone.
    if (!senderCancelled && !line.lineGone) line.cancel();
    throw e;
  } finally {
    await line.settle();
    line.detach();
  }
}
