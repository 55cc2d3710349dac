/**
 * The YMODEM/XMODEM receiver against the in-repo sender over an in-process line that can corrupt,
 * drop or cut bytes (the real `sb` over a pty is in test/integration/upgrade-serial.test.ts).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { parseHeaderBlock, receiveFile, type ReceiveProgress } from '../../src/upgrade/ymodem.js';
import { ACK, CAN, crc16, NAK } from '../../src/upgrade/ymodem-line.js';
import { buildBlock, sendFile } from '../../src/upgrade/ymodem-sender.js';

type Tamper = (dir: 'toReceiver' | 'toSender', chunk: Buffer) => Buffer | null;

/** Two connected Duplex ends; `tamper` sees every write and may change or drop it. */
function linePair(tamper?: Tamper): { sender: Duplex; receiver: Duplex } {
  const ends: { sender?: Duplex; receiver?: Duplex } = {};
  const make = (dir: 'toReceiver' | 'toSender') => new Duplex({
    read() {},
    write(chunk: Buffer, _enc, cb) {
      const out = tamper ? tamper(dir, Buffer.from(chunk)) : chunk;
      const peer = dir === 'toReceiver' ? ends.receiver! : ends.sender!;
      if (out && out.length) setImmediate(() => peer.push(out));
      cb();
    },
  });
  ends.sender = make('toReceiver');
  ends.receiver = make('toSender');
  return ends as { sender: Duplex; receiver: Duplex };
}

const fast = { handshakeIntervalMs: 50, packetTimeoutMs: 300, blockTimeoutMs: 300 };

/** Settles a promise at once (so a rejection is never "handled late"); resolves to its error. */
function failure(p: Promise<unknown>): Promise<Error & { code: string }> {
  return p.then(() => { throw new Error('expected a rejection'); }, (e: Error & { code: string }) => e);
}

async function expectError(p: Promise<Error & { code: string }>, code: string, message?: RegExp): Promise<void> {
  const e = await p;
  assert.equal(e.code, code, e.message);
  if (message) assert.match(e.message, message);
}

describe('YMODEM receiver', function () {
  this.timeout(20000);
  let dir: string;
  let src: string;
  let data: Buffer;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'us-ymodem-'));
    data = randomBytes(50 * 1024 + 333);
    src = join(dir, 'pkg.usp');
    writeFileSync(src, data);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const out = () => join(dir, 'in');

  it('CRC-16/XMODEM matches the standard check value', () => {
    assert.equal(crc16(Buffer.from('123456789')), 0x31c3);
  });

  it('receives a file by YMODEM 1K with its name and exact size, reporting progress', async () => {
    const { sender, receiver } = linePair();
    const progress: ReceiveProgress[] = [];
    const [r, s] = await Promise.all([
      receiveFile(receiver, { dir: out(), ...fast, onProgress: (p) => progress.push(p) }),
      sendFile(sender, src, { ackTimeoutMs: 300 }),
    ]);
    assert.deepEqual(readFileSync(r.path), data);
    assert.deepEqual([r.name, r.bytes, r.protocol, r.sizeKnown, r.retries, r.refusedMore], ['pkg.usp', data.length, 'ymodem', true, 0, false]);
    assert.equal(s.retries, 0);
    assert.equal(progress.at(-1)!.received, data.length);
    assert.equal(progress.at(-1)!.total, data.length);
    assert.ok(progress.every((p, i) => i === 0 || p.received >= progress[i - 1]!.received));
    assert.deepEqual(readdirSync(out()), ['pkg.usp'], 'no .part file left');
  });

  it('returns only once its last ACK has been handed to the line (closing the port sooner drops it: sb then repeats its last block for ~100 s)', async () => {
    const { sender, receiver } = linePair();
    // The receiver's writes complete slowly, as a serial port's do (libuv's pool, a busy machine).
    let pending = 0;
    const write = receiver._write.bind(receiver);
    receiver._write = (chunk, enc, cb) => {
      pending++;
      setTimeout(() => write(chunk, enc, (e) => { pending--; cb(e); }), 30);
    };
    const [r] = await Promise.all([
      receiveFile(receiver, { dir: out(), ...fast }).then((res) => ({ ...res, pendingAtReturn: pending })),
      sendFile(sender, src, { ackTimeoutMs: 300 }),
    ]);
    assert.deepEqual(readFileSync(r.path), data);
    assert.equal(r.pendingAtReturn, 0, 'a write (the last ACK) was still pending when the receiver returned');
  });

  it('receives 128-byte blocks, and XMODEM-1K (no header: a given name, padding kept)', async () => {
    let l = linePair();
    const [r1] = await Promise.all([receiveFile(l.receiver, { dir: out(), ...fast }), sendFile(l.sender, src, { blockBytes: 128, ackTimeoutMs: 300 })]);
    assert.deepEqual(readFileSync(r1.path), data);
    l = linePair();
    const [r2] = await Promise.all([receiveFile(l.receiver, { dir: out(), fileName: 'x.usp', ...fast }), sendFile(l.sender, src, { protocol: 'xmodem', ackTimeoutMs: 300 })]);
    assert.deepEqual([r2.name, r2.protocol, r2.sizeKnown], ['x.usp', 'xmodem', false]);
    const got = readFileSync(r2.path);
    assert.equal(got.length, Math.ceil(data.length / 1024) * 1024);
    assert.deepEqual(got.subarray(0, data.length), data);
    assert.ok(got.subarray(data.length).every((c) => c === 0x1a));
  });

  it('NAKs corrupted blocks and takes the retransmission', async () => {
    let n = 0;
    const { sender, receiver } = linePair((dir, c) => {
      if (dir === 'toReceiver' && c.length > 1000 && ++n % 7 === 0) c[500] ^= 0xff; // every 7th data block, once
      return c;
    });
    const [r, s] = await Promise.all([receiveFile(receiver, { dir: out(), ...fast }), sendFile(sender, src, { ackTimeoutMs: 300 })]);
    assert.deepEqual(readFileSync(r.path), data);
    assert.ok(r.retries >= 5 && s.retries >= 5, `retries ${r.retries}/${s.retries}`);
  });

  it('acknowledges a repeated block once more without writing it twice (lost ACKs)', async () => {
    let acks = 0;
    const { sender, receiver } = linePair((dir, c) => {
      if (dir === 'toSender' && c.length === 1 && c[0] === ACK && ++acks % 5 === 0) return null; // drop every 5th ACK
      return c;
    });
    const [r] = await Promise.all([receiveFile(receiver, { dir: out(), ...fast }), sendFile(sender, src, { ackTimeoutMs: 200 })]);
    assert.deepEqual(readFileSync(r.path), data);
    assert.ok(r.retries > 0);
  });

  it('stops when the sender cancels (CAN CAN), leaving no file', async () => {
    const { sender, receiver } = linePair();
    const ctl = new AbortController();
    const rx = failure(receiveFile(receiver, { dir: out(), ...fast, onProgress: (p) => { if (p.received > 10000) ctl.abort(); } }));
    const tx = failure(sendFile(sender, src, { ackTimeoutMs: 300, signal: ctl.signal }));
    await expectError(rx, 'US_ERR_YMODEM_CANCELLED', /sender cancelled/);
    await expectError(tx, 'US_ERR_YMODEM_CANCELLED');
    assert.deepEqual(existsSync(out()) ? readdirSync(out()) : [], []);
  });

  it('the operator can cancel: the sender is told (CAN) and no file is left', async () => {
    const { sender, receiver } = linePair();
    const ctl = new AbortController();
    const rx = failure(receiveFile(receiver, { dir: out(), ...fast, signal: ctl.signal, onProgress: (p) => { if (p.received > 10000) ctl.abort(); } }));
    const tx = failure(sendFile(sender, src, { ackTimeoutMs: 300 }));
    await expectError(rx, 'US_ERR_YMODEM_CANCELLED', /operator/);
    await expectError(tx, 'US_ERR_YMODEM_CANCELLED', /receiver cancelled/);
    assert.deepEqual(readdirSync(out()), []);
  });

  it('refuses a file over the size limit from its header, before any data', async () => {
    const { sender, receiver } = linePair();
    const rx = failure(receiveFile(receiver, { dir: out(), ...fast, maxBytes: 10000 }));
    const tx = failure(sendFile(sender, src, { ackTimeoutMs: 300 }));
    await expectError(rx, 'US_ERR_YMODEM', /over the 10000-byte limit/);
    await expectError(tx, 'US_ERR_YMODEM_CANCELLED');
  });

  it('bounds an XMODEM file (no size announced) while it arrives', async () => {
    const { sender, receiver } = linePair();
    const rx = failure(receiveFile(receiver, { dir: out(), ...fast, maxBytes: 10000 }));
    const tx = failure(sendFile(sender, src, { protocol: 'xmodem', ackTimeoutMs: 300 }));
    await expectError(rx, 'US_ERR_YMODEM', /larger than the 10000-byte limit/);
    await tx; // the sender fails too (cancelled or out of retries)
    assert.deepEqual(readdirSync(out()), []);
  });

  it('times out when no sender starts', async () => {
    const { receiver } = linePair();
    const t0 = Date.now();
    await assert.rejects(receiveFile(receiver, { dir: out(), handshakeIntervalMs: 50, handshakeTimeoutMs: 300 }),
      (e: Error & { code: string }) => e.code === 'US_ERR_YMODEM' && /no sender started within 300 ms/.test(e.message));
    assert.ok(Date.now() - t0 < 2000);
  });

  it('gives up after too many consecutive errors', async () => {
    const { sender, receiver } = linePair((dir, c) => {
      if (dir === 'toReceiver' && c.length > 1000) c[10] ^= 1; // every data block corrupt, forever
      return c;
    });
    const rx = failure(receiveFile(receiver, { dir: out(), ...fast, maxErrors: 3 }));
    const tx = failure(sendFile(sender, src, { ackTimeoutMs: 300, maxRetries: 20 }));
    await expectError(rx, 'US_ERR_YMODEM', /3 consecutive errors, last: CRC error/);
    await tx; // the sender fails too (cancelled or out of retries)
  });

  it('aborts on a block out of sequence (lost data), and when the line closes', async () => {
    let l = linePair();
    const sent: number[] = [];
    l.sender.on('data', (d: Buffer) => sent.push(...d));
    const rx = failure(receiveFile(l.receiver, { dir: out(), ...fast }));
    await new Promise((r) => setTimeout(r, 20));
    l.sender.write(buildBlock(0, Buffer.from('f.bin\x00100000 0 644\x00'), 128));
    await new Promise((r) => setTimeout(r, 20));
    l.sender.write(buildBlock(3, Buffer.alloc(1024, 1), 1024));
    await expectError(rx, 'US_ERR_YMODEM', /block 3 out of sequence \(expected 1\)/);
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(sent.filter((c) => c === CAN).length >= 2, 'the sender was told to stop');

    l = linePair();
    const rx2 = failure(receiveFile(l.receiver, { dir: out(), ...fast }));
    await new Promise((r) => setTimeout(r, 20));
    l.sender.write(buildBlock(0, Buffer.from('f.bin\x00100000\x00'), 128));
    await new Promise((r) => setTimeout(r, 20));
    l.receiver.destroy();
    await expectError(rx2, 'US_ERR_YMODEM', /closed/);
    assert.deepEqual(readdirSync(out()), []);
  });

  it('keeps a sender-supplied name inside the target directory', async () => {
    const { sender, receiver } = linePair();
    const [r] = await Promise.all([receiveFile(receiver, { dir: out(), ...fast }), sendFile(sender, src, { name: '../../etc/cron.d/evil', ackTimeoutMs: 300 })]);
    assert.equal(r.path, join(out(), 'evil'));
    assert.deepEqual(parseHeaderBlock(Buffer.from('a.usp\x001234 14567 100644 0\x00')), { name: 'a.usp', size: 1234 });
    assert.deepEqual(parseHeaderBlock(Buffer.from('a.usp\x00\x00')), { name: 'a.usp', size: undefined });
    assert.deepEqual(parseHeaderBlock(Buffer.alloc(128)), { name: '' });
  });

  it('NAKs the first EOT and acknowledges the second (noise can fake one EOT)', async () => {
    const l = linePair();
    const replies: number[] = [];
    l.sender.on('data', (d: Buffer) => replies.push(...d));
    const rx = receiveFile(l.receiver, { dir: out(), ...fast });
    const step = async (b: Buffer | number[]) => { replies.length = 0; l.sender.write(Buffer.from(b)); await new Promise((r) => setTimeout(r, 30)); return [...replies]; };
    await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await step(buildBlock(0, Buffer.from('e.bin\x005\x00'), 128)), [ACK, 0x43]);
    assert.deepEqual(await step(buildBlock(1, Buffer.from('hello'), 128)), [ACK]);
    assert.deepEqual(await step([0x04]), [NAK]);
    assert.deepEqual(await step([0x04]), [ACK, 0x43]);
    assert.deepEqual(await step(buildBlock(0, Buffer.alloc(0), 128).fill(0, 3)), [ACK]);
    const r = await rx;
    assert.equal(readFileSync(r.path, 'utf8'), 'hello');
  });
});
