/**
 * Every message a partner can send, fuzzed (fast-check) through its decoder: arbitrary bytes and
 * arbitrary JSON shapes give either a message that keeps the protocol or a RangeError naming what is
 * wrong, never another kind of throw; and what a genuine peer sends is always accepted.
 */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  MAX_INPUT_PAYLOAD, decodeAck, decodeControl, decodeDigest, decodeInput, encodeAck, encodeControl, encodeDigest, encodeInput,
  replyDigest, replyKey, type ControlMessage,
} from '../../src/replication/messages.js';
import { CLIENT_PORT_FIRST, CLIENT_PORT_LAST } from '../../src/guest/client-map.js';
import { decodePeerAnswer, decodePeerRequest } from '../../src/upgrade/peer.js';

const RUNS = { numRuns: 3000 };

/** Runs `decode`; a RangeError with a message is a clean refusal (returns undefined), anything else fails the property. */
function clean<T>(decode: () => T): T | undefined {
  try {
    return decode();
  } catch (e) {
    assert.ok(e instanceof RangeError, `threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`);
    assert.ok(e.message.length > 0);
    return undefined;
  }
}

/** Bytes shaped like an INPUT (header fields in and out of range), so the fuzz reaches past the length checks. */
const inputLike = fc.record({
  hi: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffffffff })),
  lo: fc.integer({ min: 0, max: 0xffffffff }),
  kind: fc.oneof(fc.constantFrom(0, 1), fc.integer({ min: 0, max: 255 })),
  clientPort: fc.oneof(fc.integer({ min: CLIENT_PORT_FIRST, max: CLIENT_PORT_LAST }), fc.integer({ min: 0, max: 65535 })),
  address: fc.oneof(fc.constantFrom('', '192.0.2.7', '2001:db8::1', '198.51.100.300', 'x'.repeat(46)), fc.string({ maxLength: 50 })),
  alenDelta: fc.oneof(fc.constant(0), fc.integer({ min: -3, max: 3 })),
  port: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 65535 })),
  payload: fc.uint8Array({ maxLength: 64 }),
}).map((r) => {
  const addr = Buffer.from(r.address, 'latin1');
  const b = Buffer.alloc(14 + addr.length + r.payload.length);
  b.writeUInt32BE(r.hi, 0);
  b.writeUInt32BE(r.lo, 4);
  b[8] = r.kind;
  b.writeUInt16BE(r.clientPort, 9);
  b[11] = Math.max(0, Math.min(255, addr.length + r.alenDelta));
  addr.copy(b, 12);
  b.writeUInt16BE(r.port, 12 + addr.length);
  Buffer.from(r.payload).copy(b, 14 + addr.length);
  return b;
});

describe('partner messages: every decoder fuzzed', function () {
  this.timeout(60000);

  it('INPUT: arbitrary and INPUT-shaped bytes are refused with a RangeError or decode to an input that re-encodes to the same bytes', () => {
    fc.assert(fc.property(fc.oneof(fc.uint8Array({ maxLength: 80 }).map((u) => Buffer.from(u)), inputLike), (b) => {
      const s = clean(() => decodeInput(b));
      if (!s) return;
      assert.ok(Number.isSafeInteger(s.seq) && s.seq >= 1, 'seq in range');
      assert.ok(encodeInput(s).equals(b), 'exact: every byte accounted for');
      if (s.input.kind === 'request') {
        assert.ok(s.input.clientPort >= CLIENT_PORT_FIRST && s.input.clientPort <= CLIENT_PORT_LAST);
        if (s.client) assert.ok(s.client.port >= 1);
      } else assert.equal(s.client, undefined);
    }), RUNS);
  });

  it('INPUT: what a primary sends is always accepted, identical', () => {
    fc.assert(fc.property(
      fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), fc.boolean(), fc.integer({ min: CLIENT_PORT_FIRST, max: CLIENT_PORT_LAST }),
      fc.oneof(fc.ipV4(), fc.ipV6()), fc.integer({ min: 1, max: 65535 }), fc.uint8Array({ maxLength: 600 }),
      (seq, isRequest, clientPort, address, port, payload) => {
        const s = isRequest
          ? { seq, input: { kind: 'request' as const, clientPort, payload: Buffer.from(payload) }, client: { address, port } }
          : { seq, input: { kind: 'auth-reply' as const, payload: Buffer.from(payload) } };
        assert.deepEqual(decodeInput(encodeInput(s)), s);
      }), RUNS);
  });

  it('INPUT: the refusals name the field', () => {
    const ok = encodeInput({ seq: 5, input: { kind: 'request', clientPort: 20001, payload: Buffer.from('a1 STATS') }, client: { address: '192.0.2.7', port: 4000 } });
    const bad = (f: (b: Buffer) => Buffer, re: RegExp) => assert.throws(() => decodeInput(f(Buffer.from(ok))), (e: Error) => e instanceof RangeError && re.test(e.message));
    bad((b) => { b.writeUInt32BE(0, 4); return b; }, /INPUT seq 0 out of range/);
    bad((b) => { b.writeUInt32BE(0x00200000, 0); return b; }, /INPUT seq \d+ out of range/);
    bad((b) => { b[8] = 7; return b; }, /INPUT kind 7 unknown/);
    bad((b) => { b.writeUInt16BE(80, 9); return b; }, /INPUT clientPort 80 out of range/);
    bad((b) => { b[11] = 200; return b; }, /address length 200 runs past/);
    bad((b) => { b.write('192.0.2.x', 12, 'latin1'); return b; }, /client address is not an IP address/);
    bad((b) => b.subarray(0, 10), /shorter than its 14-byte header/);
    bad((b) => Buffer.concat([b, Buffer.alloc(MAX_INPUT_PAYLOAD)]), /payload of \d+ bytes exceeds/);
    const auth = encodeInput({ seq: 6, input: { kind: 'auth-reply', payload: Buffer.from('AUTHR 1 OK') } });
    auth.writeUInt16BE(20001, 9);
    assert.throws(() => decodeInput(auth), /an AUTH answer carries no clientPort/);
  });

  it('ACK: exactly 8 bytes, a sequence number in range', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 12 }).map((u) => Buffer.from(u)), (b) => {
      const seq = clean(() => decodeAck(b));
      if (seq === undefined) return;
      assert.equal(b.length, 8);
      assert.ok(Number.isSafeInteger(seq) && seq >= 0);
      assert.ok(encodeAck(seq).equals(b));
    }), RUNS);
    fc.assert(fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (n) => { assert.equal(decodeAck(encodeAck(n)), n); }));
    assert.throws(() => decodeAck(Buffer.alloc(9)), /ACK: 9 bytes, expected 8/);
    assert.throws(() => decodeAck(Buffer.alloc(8, 0xff)), /ACK seq \d+ out of range/);
  });

  it('DIGEST: exact length and a reply key; every key replyKey makes is accepted', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u)), (b) => {
      const d = clean(() => decodeDigest(b));
      if (!d) return;
      assert.equal(d.digest.length, 8);
      assert.ok(encodeDigest(d.key, d.digest).equals(b));
      const [port, id] = [d.key.slice(0, d.key.indexOf(' ')), d.key.slice(d.key.indexOf(' ') + 1)];
      assert.ok(Number(port) <= 65535 && !id.includes(' ') && id.length <= 16);
    }), RUNS);
    fc.assert(fc.property(fc.integer({ min: 0, max: 65535 }), fc.uint8Array({ maxLength: 40 }), (port, payload) => {
      const key = replyKey(port, Buffer.from(payload));
      const digest = replyDigest(Buffer.from(payload));
      assert.deepEqual(decodeDigest(encodeDigest(key, digest)), { key, digest });
    }), RUNS);
    assert.throws(() => decodeDigest(Buffer.alloc(0)), /DIGEST: empty/);
    assert.throws(() => decodeDigest(Buffer.concat([encodeDigest('20001 a1', Buffer.alloc(8)), Buffer.from([0])])), /DIGEST: 18 bytes, its key length 8 says 17/);
    assert.throws(() => decodeDigest(encodeDigest('99999 a1', Buffer.alloc(8))), /DIGEST key "99999 a1" is not/);
    assert.throws(() => decodeDigest(encodeDigest('20001 a b', Buffer.alloc(8))), /is not "<port> <id>"/);
  });

  const CONTROL_TYPES = ['clone-prepare', 'guest-upgrade-prepare', 'guest-upgrade-progress', 'guest-upgrade-ready', 'guest-upgrade-failed', 'clone-ready',
    'clone-failed', 'clone-done', 'reclone', 'guest-hung', 'switchover', 'guest-upgrade-commit', 'hello'];
  /** JSON shapes near the control messages: a known type with arbitrary fields, or anything at all. */
  const controlLike = fc.oneof(
    fc.record({ type: fc.constantFrom(...CONTROL_TYPES) }, { noNullPrototype: true }).chain((t) => fc.dictionary(
      fc.constantFrom('memoryMb', 'guestFile', 'version', 'step', 'reason', 'cutSeq', 'guestSeq', 'clients', 'downtimeMs', 'authOpen', 'silentMs', 'replies', 'keepCopy', 'board', 'role', 'lastSeq', 'cloned', 'replayed'),
      fc.oneof(fc.jsonValue(), fc.record({ entries: fc.array(fc.tuple(fc.integer(), fc.oneof(fc.ipV4(), fc.string()), fc.integer()), { maxLength: 3 }), next: fc.integer() })),
    ).map((fields) => ({ ...fields, ...t }))),
    fc.jsonValue(),
  );

  it('CONTROL: arbitrary bytes and JSON shapes are refused with a RangeError naming the field, or are a known message with valid fields', () => {
    const check = (b: Buffer) => {
      const m = clean(() => decodeControl(b));
      if (!m) return;
      assert.ok(CONTROL_TYPES.includes(m.type), `type ${m.type}`);
      // What was accepted survives a round trip unchanged (nothing half-read).
      assert.deepEqual(decodeControl(encodeControl(m)), m);
      if (m.type === 'clone-done') {
        for (const [p, a, cp] of m.clients.entries) assert.ok(p >= CLIENT_PORT_FIRST && p <= CLIENT_PORT_LAST && a.length > 0 && cp >= 1 && cp <= 65535);
      }
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 60 }), (u) => check(Buffer.from(u))), RUNS);
    fc.assert(fc.property(controlLike, (j) => check(Buffer.from(JSON.stringify(j) ?? 'null'))), RUNS);
    assert.throws(() => decodeControl(Buffer.from('null')), (e: Error) => e instanceof RangeError && /bad control message/.test(e.message));
    assert.throws(() => decodeControl(Buffer.from('{"type":"clone-done"}')), (e: Error) => e instanceof RangeError && /\(cutSeq\)/.test(e.message));
    assert.throws(() => decodeControl(Buffer.from('{"type":"clone-done","cutSeq":1,"guestSeq":1,"downtimeMs":1,"clients":{"entries":[[80,"192.0.2.1",5]],"next":20000}}')),
      /\(clients\.entries\.0\.0\)/);
    assert.throws(() => decodeControl(Buffer.from('{"type":"clone-done","cutSeq":1,"guestSeq":1,"downtimeMs":1,"clients":{"entries":[[20000,"not an ip",5]],"next":20000}}')),
      /\(clients\.entries\.0\.1\)/);
    assert.throws(() => decodeControl(Buffer.from('{"type":')), /control message is not JSON/);
    const good: ControlMessage = { type: 'clone-done', cutSeq: 7, guestSeq: 3, downtimeMs: 12, clients: { entries: [[20000, '192.0.2.9', 5000]], next: 20001 }, authOpen: ['s1'] };
    assert.deepEqual(decodeControl(encodeControl(good)), good);
  });

  const OPS = ['status', 'install', 'reboot', 'commit', 'rollback', 'journal', 'put'];

  it('upgrade channel requests: refused with a RangeError naming the field, or exactly one known request', () => {
    const requestLike = fc.oneof(
      fc.record({ op: fc.constantFrom(...OPS, 'format', '__proto__') }).chain((o) => fc.dictionary(fc.constantFrom('file', 'reboot', 'message', 'size', 'sha256', 'extra'), fc.jsonValue()).map((f) => ({ ...f, ...o }))),
      fc.jsonValue(),
    );
    const check = (b: Buffer) => {
      const r = clean(() => decodePeerRequest(b));
      if (!r) return;
      assert.ok(OPS.includes(r.op));
      if (r.op === 'put') assert.ok(Number.isSafeInteger(r.size) && r.size >= 1 && /^[0-9a-f]{64}$/.test(r.sha256));
      if (r.op === 'install') assert.equal(typeof r.file, 'string');
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 60 }), (u) => check(Buffer.from(u))), RUNS);
    fc.assert(fc.property(requestLike, (j) => check(Buffer.from(JSON.stringify(j) ?? 'null'))), RUNS);
    assert.throws(() => decodePeerRequest(Buffer.from('{"op":"install","file":42}')), /bad upgrade request \(file\)/);
    assert.throws(() => decodePeerRequest(Buffer.from('{"op":"put","size":-1,"sha256":"00"}')), /bad upgrade request \(size\)/);
    assert.throws(() => decodePeerRequest(Buffer.from('{"op":"status","then":"rm -rf"}')), /bad upgrade request/);
  });

  it('upgrade channel answers: refused with a RangeError, or ok with a result the rolling upgrade can read, or an error with a US_ERR code', () => {
    fc.assert(fc.property(fc.constantFrom(...OPS), fc.oneof(
      fc.uint8Array({ maxLength: 40 }).map((u) => Buffer.from(u)),
      fc.record({ ok: fc.boolean(), result: fc.jsonValue(), error: fc.record({ code: fc.oneof(fc.constant('US_ERR_LINK'), fc.string()), message: fc.string() }) }, { requiredKeys: ['ok'] })
        .map((j) => Buffer.from(JSON.stringify(j))),
    ), (op, b) => {
      const a = clean(() => decodePeerAnswer(op, b));
      if (!a) return;
      if (!a.ok) assert.match(a.error.code, /^US_ERR_[A-Z_]+$/);
      else if (op === 'status') assert.equal(typeof (a.result as { protected: unknown }).protected, 'boolean');
      else if (op === 'put') assert.equal(typeof (a.result as { file: unknown }).file, 'string');
    }), RUNS);
    assert.throws(() => decodePeerAnswer('status', Buffer.from('{"ok":true,"result":{"role":"BACKUP"}}')), /bad upgrade answer to "status" \(result\.board\)/);
    assert.throws(() => decodePeerAnswer('commit', Buffer.from('{"ok":false,"error":{"code":"rm","message":"x"}}')), /\(error\.code\)/);
  });
});
