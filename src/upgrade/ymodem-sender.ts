/**
 * Sends one file over a serial line by YMODEM (1K blocks, CRC-16) or XMODEM-1K: the other half of
 * ymodem.ts. Used by the tests (with a fault-injecting line between the two) and available for
 * pushing a package to a partner blade over the serial link. Owns the transfer only.
 */
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import { basename } from 'node:path';
import type { Duplex } from 'node:stream';
import { UsError } from '../core/errors.js';
import { ACK, CAN, crc16, CRC_REQUEST, EOT, NAK, SerialLine, SOH, STX, SUB } from './ymodem-line.js';

export interface SendOptions {
  protocol?: 'ymodem' | 'xmodem';
  /** Name announced in the YMODEM header. Default the file's base name. */
  name?: string;
  /** 1024 (default) or 128. */
  blockBytes?: 1024 | 128;
  /** Wait for the receiver's 'C'. Default 60000 ms. */
  handshakeTimeoutMs?: number;
  /** Wait for an ACK/NAK after a block. Default 10000 ms. */
  ackTimeoutMs?: number;
  /** Attempts per block. Default 10. */
  maxRetries?: number;
  onProgress?: (p: { sent: number; total: number }) => void;
  signal?: AbortSignal;
}

export interface SendResult {
  bytes: number;
  blocks: number;
  retries: number;
  /** YMODEM: the receiver acknowledged the end of the batch. */
  batchClosed: boolean;
}

export function buildBlock(num: number, data: Buffer, size: 128 | 1024): Buffer {
  const b = Buffer.alloc(3 + size + 2, SUB);
  b[0] = size === 1024 ? STX : SOH;
  b[1] = num & 0xff;
  b[2] = 0xff - (num & 0xff);
  data.copy(b, 3);
  b.writeUInt16BE(crc16(b, 3, 3 + size), 3 + size);
  return b;
}

export async function sendFile(port: Duplex, file: string, o: SendOptions = {}): Promise<SendResult> {
  const protocol = o.protocol ?? 'ymodem';
  const size = o.blockBytes ?? 1024;
  const ackTimeoutMs = o.ackTimeoutMs ?? 10000;
  const maxRetries = o.maxRetries ?? 10;
  const line = new SerialLine(port, o.signal);
  const fd = openSync(file, 'r');
  let retries = 0;
  let blocks = 0;

  /** Waits for a given byte, returning what came instead on NAK/timeout; throws on CAN CAN. */
  const waitFor = async (want: number, timeoutMs: number): Promise<'ok' | 'nak' | 'timeout'> => {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const b = await line.readByte(Math.max(1, end - Date.now()));
      if (b === undefined) return 'timeout';
      if (b === want) return 'ok';
      if (b === NAK) return 'nak';
      if (b === CAN && (await line.readByte(1000)) === CAN) throw new UsError('US_ERR_YMODEM_CANCELLED', 'YMODEM send: the receiver cancelled the transfer');
    }
  };
  /** Sends until ACKed; `expectedNaks` NAKs are part of the protocol (the first EOT) and not retries. */
  const sendUntilAck = async (block: Buffer, what: string, attempts = maxRetries, expectedNaks = 0): Promise<boolean> => {
    for (let attempt = 0; ; attempt++) {
      if (attempt >= attempts + expectedNaks) {
        if (attempts < maxRetries) return false;
        throw new UsError('US_ERR_YMODEM', `YMODEM send: ${what} not acknowledged after ${attempts} attempts`);
      }
      if (attempt > expectedNaks) retries++;
      line.write(block);
      if ((await waitFor(ACK, ackTimeoutMs)) === 'ok') return true;
    }
  };

  try {
    const total = fstatSync(fd).size;
    if ((await waitFor(CRC_REQUEST, o.handshakeTimeoutMs ?? 60000)) !== 'ok') throw new UsError('US_ERR_YMODEM', 'YMODEM send: the receiver did not ask for a CRC transfer');
    if (protocol === 'ymodem') {
      const st = fstatSync(fd);
      const header = Buffer.from(`${o.name ?? basename(file)}\0${total} ${Math.floor(st.mtimeMs / 1000).toString(8)} ${(st.mode & 0o7777).toString(8)}`, 'latin1');
      const b0 = Buffer.alloc(128, 0);
      header.copy(b0, 0, 0, Math.min(header.length, 128));
      const blk = buildBlock(0, b0, 128);
      blk.fill(0, 3 + Math.min(header.length, 128), 3 + 128);
      blk.writeUInt16BE(crc16(blk, 3, 3 + 128), 3 + 128);
      await sendUntilAck(blk, 'the header block');
      if ((await waitFor(CRC_REQUEST, ackTimeoutMs)) !== 'ok') throw new UsError('US_ERR_YMODEM', 'YMODEM send: no C after the header block');
    }
    const buf = Buffer.alloc(size);
    let sent = 0;
    for (let num = 1; sent < total; num++) {
      const n = readSync(fd, buf, 0, size, sent);
      await sendUntilAck(buildBlock(num, buf.subarray(0, n), size), `block ${num}`);
      sent += n;
      blocks++;
      o.onProgress?.({ sent, total });
    }
    await sendUntilAck(Buffer.from([EOT]), 'the end of file', maxRetries, 1);
    // The file is delivered once its EOT is acknowledged; a lost ACK of the end-of-batch block (the
    // receiver has already finished) costs a few attempts, not the transfer.
    let batchClosed = false;
    if (protocol === 'ymodem' && (await waitFor(CRC_REQUEST, ackTimeoutMs)) === 'ok') {
      batchClosed = await sendUntilAck(buildBlock(0, Buffer.alloc(0), 128).fill(0, 3, 3 + 128 + 2), 'the end of batch', 3);
    }
    return { bytes: total, blocks, retries, batchClosed };
  } catch (e) {
    if (!line.lineGone && !(e instanceof UsError && e.code === 'US_ERR_YMODEM_CANCELLED' && !o.signal?.aborted)) line.cancel();
    throw e;
  } finally {
    await line.settle();
    closeSync(fd);
    line.detach();
  }
}
