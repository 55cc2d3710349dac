import assert from 'node:assert/strict';
import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { decodeHeartbeat, encodeHeartbeat, type Heartbeat } from '../../src/ha/frame.js';
import { Membership, type LocalState } from '../../src/ha/membership.js';
import { SlipFrameDecoder, slipEncode } from '../../src/hw/serial/slip.js';
import { memLinkPair as pair } from '../support/mem-link.js';

const KEY = Buffer.alloc(32, 7);
const hb = (over: Partial<Heartbeat> = {}): Heartbeat => ({
  sender: 'sim-a', generation: 3, echo: 0, seq: 10, role: 'PRIMARY', guest: 'running', watchdog: 'kicking', cpuLoad: 12, priority: 10, health: 'ok', ...over,
});

describe('heartbeat frames', () => {
  it('round-trips every field', () => {
    const h = hb();
    assert.deepEqual(decodeHeartbeat(encodeHeartbeat(h, KEY), KEY), h);
    assert.deepEqual(decodeHeartbeat(encodeHeartbeat(hb({ cpuLoad: null, role: 'STARTING', guest: 'none' }), KEY), KEY), hb({ cpuLoad: null, role: 'STARTING', guest: 'none' }));
  });

  it('carries 64-bit sequence numbers past 2^32, the receiver\'s generation and the controller\'s health', () => {
    for (const seq of [2 ** 32 - 1, 2 ** 32, 2 ** 32 + 100, 2 ** 53 - 1]) {
      const h = hb({ seq, echo: 0xfffffffe, health: 'hung' });
      assert.deepEqual(decodeHeartbeat(encodeHeartbeat(h, KEY), KEY), h, String(seq));
    }
    assert.throws(() => encodeHeartbeat(hb({ seq: 2 ** 53 }), KEY), /safe/);
  });

  it('rejects a frame under another key as forged, and a flipped bit as corrupt', () => {
    const f = encodeHeartbeat(hb(), KEY);
    assert.equal(decodeHeartbeat(f, Buffer.alloc(32, 8)), 'mac');
    const bad = Buffer.from(f);
    bad[9] ^= 0x01;
    assert.equal(decodeHeartbeat(bad, KEY), 'crc');
  });

  it('rejects a forger who recomputes the CRC but cannot compute the MAC', () => {
    const f = Buffer.from(encodeHeartbeat(hb({ role: 'BACKUP' }), KEY));
    f[2] = 2; // claim PRIMARY
    const L = f[8]!;
    f.writeUInt32BE(crc32(f.subarray(0, 37 + L)), 37 + L);
    assert.equal(decodeHeartbeat(f, KEY), 'mac');
  });

  it('never throws on random bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), (b) => {
      const r = decodeHeartbeat(Buffer.from(b), KEY);
      assert.ok(typeof r === 'string' || typeof r.sender === 'string');
    }), { numRuns: 3000 });
  });
});

describe('SLIP framing decoder', () => {
  it('decodes any sequence of frames, whatever the chunking (property)', () => {
    fc.assert(fc.property(
      fc.array(fc.uint8Array({ minLength: 1, maxLength: 100 }), { minLength: 1, maxLength: 8 }),
      fc.array(fc.integer({ min: 1, max: 50 }), { minLength: 1, maxLength: 20 }),
      (frames, cuts) => {
        const wire = Buffer.concat(frames.map((f) => slipEncode(Buffer.from(f))));
        const got: Buffer[] = [];
        const d = new SlipFrameDecoder((f) => got.push(f), 256);
        let off = 0;
        for (let i = 0; off < wire.length; i++) {
          const n = cuts[i % cuts.length]!;
          d.push(wire.subarray(off, off + n));
          off += n;
        }
        assert.deepEqual(got.map((g) => [...g]), frames.map((f) => [...f]));
      }), { numRuns: 1000 });
  });

  it('survives random garbage: bounded frames, no throw, and recovers at the next frame', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 2000 }), (garbage) => {
      const got: Buffer[] = [];
      const d = new SlipFrameDecoder((f) => got.push(f), 64);
      d.push(Buffer.from(garbage));
      for (const f of got) assert.ok(f.length <= 64);
      got.length = 0;
      d.push(slipEncode(Buffer.from('hello')));
      assert.equal(got[got.length - 1]?.toString(), 'hello');
    }), { numRuns: 1000 });
  });

  it('drops and counts an oversized frame', () => {
    const got: Buffer[] = [];
    const d = new SlipFrameDecoder((f) => got.push(f), 16);
    d.push(slipEncode(Buffer.alloc(40, 1)));
    d.push(slipEncode(Buffer.from('ok')));
    assert.equal(d.oversized, 1);
    assert.deepEqual(got.map(String), ['ok']);
  });
});

describe('membership', function () {
  this.timeout(10000);
  const local = (role: LocalState['role']): (() => LocalState) => () => ({ role, guest: 'none', watchdog: 'none', cpuLoad: null, health: 'ok' });
  const until = async (cond: () => boolean, ms = 3000) => {
    const end = Date.now() + ms;
    while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
    assert.ok(cond(), 'condition not reached');
  };
  let ms: Membership[] = [];
  afterEach(async () => { for (const m of ms) await m.stop(); ms = []; });

  function two() {
    const [ea, eb] = pair('ethernet');
    const [sa, sb] = pair('serial');
    const opts = { key: KEY, intervalMs: 5, linkTimeoutMs: 30, deadtimeMs: 60 };
    const a = new Membership({ ...opts, self: 'sim-a', priority: 10, generation: 1, links: [ea, sa], local: local('PRIMARY') });
    const b = new Membership({ ...opts, self: 'sim-b', priority: 20, generation: 1, links: [eb, sb], local: local('BACKUP') });
    ms.push(a, b);
    return { a, b, ea, eb, sa, sb };
  }

  it('sees the partner alive on both links', async () => {
    const { a, b } = two();
    await a.start(); await b.start();
    await until(() => b.partnerView.state === 'alive' && b.links.every((l) => l.up));
    assert.equal(b.partnerView.heartbeat?.role, 'PRIMARY');
  });

  it('advertises the priority the local state gives (a board serving a lost state) instead of its own, and its own again after', async () => {
    const [ea, eb] = pair('ethernet');
    const opts = { key: KEY, intervalMs: 5, linkTimeoutMs: 30, deadtimeMs: 60 };
    let priority: number | undefined = 255;
    const a = new Membership({ ...opts, self: 'sim-a', priority: 10, generation: 1, links: [ea], local: () => ({ ...local('PRIMARY')(), priority }) });
    const b = new Membership({ ...opts, self: 'sim-b', priority: 20, generation: 1, links: [eb], local: local('PRIMARY') });
    ms.push(a, b);
    await a.start(); await b.start();
    await until(() => b.partnerView.heartbeat?.priority === 255);
    assert.equal(a.partnerView.heartbeat?.priority, 20);
    priority = undefined;
    await until(() => b.partnerView.heartbeat?.priority === 10);
  });

  it('one link cut: that link goes down, the partner stays alive', async () => {
    const { a, b, ea } = two();
    const dead: number[] = [];
    b.on('partner-dead', (s) => dead.push(s));
    await a.start(); await b.start();
    await until(() => b.links.every((l) => l.up));
    ea.cut = true;
    await until(() => b.links.find((l) => l.name === 'ethernet')?.up === false);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(b.partnerView.state, 'alive');
    assert.equal(dead.length, 0);
    ea.cut = false;
    await until(() => b.links.every((l) => l.up));
  });

  it('all links silent past the deadtime: the partner is declared dead once', async () => {
    const { a, b } = two();
    const dead: number[] = [];
    b.on('partner-dead', (s) => dead.push(s));
    await a.start(); await b.start();
    await until(() => b.partnerView.state === 'alive');
    await a.stop();
    await until(() => dead.length === 1);
    assert.ok(dead[0]! >= 60, `declared dead after ${dead[0]} ms of silence, deadtime 60`);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(dead.length, 1);
  });

  // Frames injected into b echo its generation (1): they are bound to its boot (see generations.test.ts).
  it('rejects and counts forged, replayed, corrupted, own and old-generation frames', async () => {
    const { b, eb } = two();
    await b.start();
    const good = encodeHeartbeat(hb({ echo: 1, sender: 'sim-a', generation: 5, seq: 100 }), KEY);
    eb.inject(good);
    eb.inject(good); // replay
    eb.inject(encodeHeartbeat(hb({ echo: 1, sender: 'sim-a', generation: 5, seq: 50 }), KEY)); // stale
    eb.inject(encodeHeartbeat(hb({ echo: 1, sender: 'sim-a', generation: 4, seq: 500 }), KEY)); // old boot
    eb.inject(encodeHeartbeat(hb({ echo: 1, sender: 'sim-a', generation: 5, seq: 101 }), Buffer.alloc(32, 1))); // forged
    const corrupt = Buffer.from(encodeHeartbeat(hb({ echo: 1, sender: 'sim-a', generation: 5, seq: 102 }), KEY));
    corrupt[3] ^= 0xff;
    eb.inject(corrupt);
    eb.inject(encodeHeartbeat(hb({ sender: 'sim-b', generation: 9, seq: 1 }), KEY)); // our own name
    eb.inject(Buffer.from('garbage'));
    const r = b.links.find((l) => l.name === 'ethernet')!.rejected;
    assert.deepEqual(r, { malformed: 1, crc: 1, version: 0, mac: 1, self: 1, stale: 2, 'old-generation': 1, unbound: 0 });
    assert.equal(b.partnerView.heartbeat?.seq, 100);
  });

  it('an older copy arriving late on the slower link does not turn the partner view back', async () => {
    const { b, eb, sb } = two();
    await b.start();
    const roles: string[] = [];
    b.on('partner-alive', (h) => roles.push(h.role));
    b.on('partner-update', (h) => roles.push(h.role));
    const fault = encodeHeartbeat(hb({ echo: 1, sender: 'sim-a', generation: 5, seq: 10, role: 'FAULT' }), KEY);
    const backup = encodeHeartbeat(hb({ echo: 1, sender: 'sim-a', generation: 5, seq: 11, role: 'BACKUP' }), KEY);
    eb.inject(fault);
    eb.inject(backup);
    sb.inject(fault); // the serial copy of seq 10 arrives after Ethernet delivered seq 11
    sb.inject(backup);
    assert.deepEqual(roles, ['FAULT', 'BACKUP']);
    assert.equal(b.partnerView.heartbeat?.role, 'BACKUP');
    assert.ok(b.links.every((l) => l.up), 'the late copy still proves the serial link alive');
  });

  it('a stalled event loop does not produce a false verdict while frames keep arriving', async () => {
    const { a, b } = two();
    const dead: number[] = [];
    b.on('partner-dead', (s) => dead.push(s));
    await a.start(); await b.start();
    await until(() => b.partnerView.state === 'alive');
    // Both boards share this thread here, so stall it: the partner's frames are queued meanwhile
    // (setImmediate) and must be read before any verdict.
    for (let i = 0; i < 5; i++) {
      const end = Date.now() + 150;
      while (Date.now() < end) { /* stall past the deadtime */ }
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(dead.length, 0, 'no false verdict after stalls of 150 ms (deadtime 60 ms)');
  });
});
