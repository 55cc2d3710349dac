/**
 * SerialLink's writes (src/hw/links/links.ts) against a fake tty that takes what a script says at
 * each write: the bytes reach the tty in the order the frames were sent, whole, even when the tty
 * takes part of a frame or nothing; the rest waits (bounded by maxQueuedBytes) and a frame that
 * does not fit is dropped whole, counted. The real tty and the livelock this avoids are in
 * test/integration/serial-link.test.ts.
 */
import assert from 'node:assert/strict';
import { SerialLink } from '../../src/hw/links/links.js';
import { SlipFrameDecoder, slipEncode } from '../../src/hw/serial/slip.js';

/** A SerialLink whose tty is a byte sink taking, at each write, the next count of `takes` (Infinity: all). */
class FakeTtyLink extends SerialLink {
  readonly wire: Buffer[] = [];
  constructor(private readonly takes: number[], maxQueuedBytes = 512) {
    super({ path: '/dev/null-fake', baudRate: 115200, maxQueuedBytes });
  }

  protected override fd(): number { return 99; }

  protected override writeTty(_fd: number, data: Buffer): number {
    const take = Math.min(this.takes.length ? this.takes.shift()! : Infinity, data.length);
    if (take === 0) throw Object.assign(new Error('EAGAIN: resource temporarily unavailable'), { code: 'EAGAIN' });
    this.wire.push(Buffer.from(data.subarray(0, take)));
    return take;
  }
}

const frame = (i: number) => Buffer.from(`frame-${String(i).padStart(3, '0')}-${'x'.repeat(30)}`);

function decodeAll(wire: Buffer[]): string[] {
  const out: string[] = [];
  const d = new SlipFrameDecoder((f) => out.push(f.toString()));
  for (const b of wire) d.push(b);
  return out;
}

describe('serial link: writes to the tty in order, whole frames, bounded', () => {
  it('a frame the tty took in part is finished before the next one; a full tty holds the next frame behind it, never ahead', () => {
    // Frame 0 in part (10 bytes); at frame 1 the tty takes nothing of frame 0's rest, then would
    // take 20 bytes (of frame 1, if it were written ahead); then full twice; then everything.
    const link = new FakeTtyLink([10, 0, 20, 0, 0]);
    for (let i = 0; i < 6; i++) assert.equal(link.send(frame(i)), true, `frame ${i} accepted`);
    assert.deepEqual(decodeAll(link.wire), [0, 1, 2, 3, 4, 5].map((i) => frame(i).toString()));
    assert.deepEqual(link.counters, { txFrames: 6, txDropped: 0, rxFrames: 0, errors: 0 });
  });

  it('what waits is bounded: a frame that does not fit behind it is dropped whole and counted, and the stream stays whole', () => {
    const size = slipEncode(frame(0)).length;
    // Room for two waiting frames; the tty takes nothing for a while.
    const link = new FakeTtyLink([0, 0, 0, 0, 0, 0, 0, 0], size * 2);
    const sent = [0, 1, 2, 3].map((i) => link.send(frame(i)));
    assert.deepEqual(sent, [true, true, false, false], 'two wait, the others are dropped');
    assert.equal(link.counters.txDropped, 2);
    for (let i = 4; i < 12; i++) link.send(frame(i));
    link.send(frame(12)); // the tty takes everything again from here on
    const got = decodeAll(link.wire);
    assert.deepEqual(got.slice(0, 2), [frame(0).toString(), frame(1).toString()]);
    assert.ok(got.every((f) => /^frame-\d{3}-x{30}$/.test(f)), `only whole frames: ${got.join(' ')}`);
    const order = got.map((f) => Number(f.slice(6, 9)));
    assert.deepEqual(order, [...order].sort((a, b) => a - b), 'in the order sent');
    assert.ok(order.includes(12));
  });

  it('a tty that fails (not EAGAIN) is counted as an error with its message; the frame waits as on a full tty', () => {
    const link = new FakeTtyLink([]);
    (link as unknown as { writeTty: () => number }).writeTty = () => { throw Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO' }); };
    assert.equal(link.send(frame(0)), true);
    assert.equal(link.counters.errors, 1);
    assert.match(link.lastError ?? '', /EIO/);
  });
});
