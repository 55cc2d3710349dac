/**
 * The serial partner link's relay on its own: bytes arrive complete and in order both ways, at the
 * pace of the configured baud rate (10 bits per byte), are dropped while the link is cut, and the
 * buffer is bounded. Ports are in-memory RelayPorts; the chassis test covers the relay on real ptys.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { SerialRelay, type RelayPort } from '../../src/sim/chassis/serial-relay.js';
import { UsError } from '../../src/core/errors.js';

class MemoryPort implements RelayPort {
  private listeners: Array<(d: Buffer) => void> = [];
  readonly received: Buffer[] = [];
  /** performance.now() of each delivery, with the running byte total. */
  readonly deliveries: Array<{ at: number; total: number }> = [];
  private total = 0;
  backlog = 0;

  write(d: Buffer): void {
    this.received.push(Buffer.from(d));
    this.total += d.length;
    this.deliveries.push({ at: performance.now(), total: this.total });
  }
  onData(l: (d: Buffer) => void): void {
    this.listeners.push(l);
  }
  pending(): number {
    return this.backlog;
  }
  async close(): Promise<void> {
    this.listeners = [];
  }
  /** Bytes arriving from the board on this end. */
  send(d: Buffer): void {
    for (const l of this.listeners) l(d);
  }
  get bytes(): Buffer {
    return Buffer.concat(this.received);
  }
}

/** A port whose sender can be paused (serialport's stream can). */
class FlowControlledPort extends MemoryPort {
  paused = false;
  resumes = 0;
  pause(): void {
    this.paused = true;
  }
  resume(): void {
    this.paused = false;
    this.resumes++;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(cond: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`not within ${timeoutMs} ms`);
    await sleep(5);
  }
}

describe('serial relay (pacing, order, cut and heal)', function () {
  this.timeout(20000);
  let relay: SerialRelay | undefined;
  afterEach(async () => {
    await relay?.close();
    relay = undefined;
  });

  it('delivers every byte in order, both ways at once', async () => {
    const a = new MemoryPort();
    const b = new MemoryPort();
    relay = new SerialRelay(a, b, { baud: 115200 });
    relay.start();
    const ab = randomBytes(3000);
    const ba = randomBytes(2500);
    // Uneven chunks, interleaved, as a real UART driver hands them over.
    for (let i = 0, j = 0; i < ab.length || j < ba.length; i += 97, j += 41) {
      if (i < ab.length) a.send(ab.subarray(i, i + 97));
      if (j < ba.length) b.send(ba.subarray(j, j + 41));
    }
    await until(() => b.bytes.length === ab.length && a.bytes.length === ba.length, 5000);
    assert.ok(b.bytes.equals(ab), 'a→b in order');
    assert.ok(a.bytes.equals(ba), 'b→a in order');
    const c = relay.counters();
    assert.equal(c.aToB.relayed, ab.length);
    assert.equal(c.bToA.relayed, ba.length);
    assert.equal(c.aToB.droppedCut + c.aToB.droppedOverrun, 0);
  });

  it('paces at baud/10 bytes per second, not in bursts', async () => {
    const baud = 57600; // 5760 bytes/s
    const a = new MemoryPort();
    const b = new MemoryPort();
    relay = new SerialRelay(a, b, { baud });
    relay.start();
    const n = 2 * (baud / 10); // two seconds of line time
    const t0 = performance.now();
    a.send(randomBytes(n));
    await until(() => b.bytes.length === n, 6000);
    const seconds = (b.deliveries.at(-1)!.at - t0) / 1000;
    const rate = n / seconds;
    assert.ok(rate > 0.5 * baud / 10 && rate < 1.5 * baud / 10, `rate ${rate.toFixed(0)} B/s for ${baud} baud`);
    // Halfway through the time, about half the bytes (not all at once at the start or the end).
    const half = b.deliveries.filter((d) => d.at - t0 <= seconds * 500).at(-1)?.total ?? 0;
    assert.ok(half > n * 0.3 && half < n * 0.7, `${half} of ${n} bytes after half the time`);
    // No single write carries more than a few ticks' worth.
    const biggest = Math.max(...b.received.map((r) => r.length));
    assert.ok(biggest < (baud / 10 / 1000) * 50, `largest write ${biggest} bytes`);
  });

  it('drops bytes both ways while cut, and carries them again after heal', async () => {
    const a = new MemoryPort();
    const b = new MemoryPort();
    relay = new SerialRelay(a, b, { baud: 115200 });
    relay.start();
    a.send(Buffer.from('before '));
    await until(() => b.bytes.length === 7, 1000);
    relay.cut();
    assert.equal(relay.isCut, true);
    a.send(Buffer.from('lost a-b'));
    b.send(Buffer.from('lost b-a'));
    await sleep(50);
    assert.equal(b.bytes.toString(), 'before ');
    assert.equal(a.bytes.length, 0);
    relay.heal();
    a.send(Buffer.from('after'));
    b.send(Buffer.from('back'));
    await until(() => b.bytes.length === 12 && a.bytes.length === 4, 1000);
    assert.equal(b.bytes.toString(), 'before after');
    assert.equal(a.bytes.toString(), 'back');
    const c = relay.counters();
    assert.equal(c.aToB.droppedCut, 8);
    assert.equal(c.bToA.droppedCut, 8);
  });

  it('cutting drops what was already queued', async () => {
    const a = new MemoryPort();
    const b = new MemoryPort();
    relay = new SerialRelay(a, b, { baud: 9600 }); // ~1 byte/ms: 2000 bytes take ~2 s
    relay.start();
    a.send(randomBytes(2000));
    await sleep(100);
    relay.cut();
    const got = b.bytes.length;
    assert.ok(got > 0 && got < 2000, `${got} bytes before the cut`);
    await sleep(100);
    assert.equal(b.bytes.length, got, 'nothing after the cut');
    assert.equal(relay.counters().aToB.droppedCut, 2000 - got);
  });

  it('pauses a sender with flow control at the buffer bound instead of dropping, and resumes it', async () => {
    const a = new FlowControlledPort();
    const b = new MemoryPort();
    relay = new SerialRelay(a, b, { baud: 115200, bufferBytes: 1024 });
    relay.start();
    const data = randomBytes(3000);
    a.send(data);
    assert.equal(a.paused, true, 'paused at 1024 queued');
    assert.equal(relay.counters().aToB.senderPaused, true);
    await until(() => !a.paused, 2000);
    assert.ok(a.resumes >= 1);
    await until(() => b.bytes.length === data.length, 2000);
    assert.ok(b.bytes.equals(data), 'nothing dropped');
    assert.equal(relay.counters().aToB.droppedOverrun, 0);
  });

  it('bounds its buffer and the receiver backlog: the excess is counted as overrun', async () => {
    const a = new MemoryPort();
    const b = new MemoryPort();
    relay = new SerialRelay(a, b, { baud: 9600, bufferBytes: 1024, receiverBacklogBytes: 4096 });
    relay.start();
    a.send(randomBytes(5000));
    const c = relay.counters();
    assert.ok(c.aToB.queued <= 1024);
    // At most one burst (10 ms of line time at 9600 baud: 10 bytes) leaves before the buffer fills.
    assert.ok(c.aToB.droppedOverrun >= 5000 - 1024 - 10);
    // A receiver that stopped reading: what the line would deliver is dropped, not piled up.
    b.backlog = 4097;
    await sleep(100);
    assert.equal(b.bytes.length <= 10, true);
    assert.ok(relay.counters().aToB.droppedOverrun > c.aToB.droppedOverrun);
  });

  it('rejects a nonsensical configuration with US_ERR_CONFIG naming the field', () => {
    const p = new MemoryPort();
    assert.throws(() => new SerialRelay(p, p, { baud: 0 }), (e: unknown) => e instanceof UsError && e.code === 'US_ERR_CONFIG' && /baud/.test(e.message));
    assert.throws(() => new SerialRelay(p, p, { baud: 9600, bufferBytes: 1 }), /bufferBytes/);
    assert.throws(() => new SerialRelay(p, p, { baud: 9600, tickMs: 0 }), /tickMs/);
    assert.throws(() => new SerialRelay(p, p, { baud: 9600, receiverBacklogBytes: -1 }), /receiverBacklogBytes/);
  });
});
