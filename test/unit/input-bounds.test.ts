/**
 * Bounds on the input path (issue 14): the client map never hands a client's identity to another
 * while the guest may still hold cached replies for it, a 17-byte id is never taken for its 16-byte
 * prefix, the queue and the cut-over hold are capped, unanswered requests are forgotten by count and
 * age, per-source rates, and the backup's input log forces a checkpoint at its bound. The guest is a
 * fake that keeps the reference guest's reply cache (PROTOCOL.md §4: 4096 entries keyed by client
 * and id, first-in first-out; an id is 1-16 bytes of 0x21-0x7E, else silence).
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeClock } from '../../src/core/clock.js';
import { createLogger } from '../../src/core/log.js';
import { ClientMap } from '../../src/guest/client-map.js';
import type { GuestInput, GuestOutput } from '../../src/guest/io.js';
import { ServiceEndpoint, SourceRateLimiter } from '../../src/guest/service-endpoint.js';
import { snapshotFrom } from '../../src/mgmt/metrics.js';
import { Checkpointer } from '../../src/replication/checkpoint.js';
import { T_ACK, T_INPUT, decodeAck, decodeInput, encodeAck, replyKey } from '../../src/replication/messages.js';
import { Replicator } from '../../src/replication/replicator.js';
import { MessageChannel } from '../../src/replication/secure-channel.js';
import type { GuestSupervisor } from '../../src/guest/supervisor.js';
import { Store } from '../../src/store/journal.js';

const log = createLogger('test', { level: 'silent' });

/** The reference guest's reply cache and its effects, written independently of the code under test. */
class CachingGuest {
  readonly cache = new Map<string, string>();
  /** How many times each (client, id) was applied (a retry answered from the cache is not). */
  readonly applied = new Map<string, number>();
  /** Requests applied in all (a CALL's callid, say): a retry applied twice shows as a new number. */
  total = 0;
  private perPort = new Map<number, number>();
  onOutput?: (o: GuestOutput) => void;
  room = true;
  private roomFns: Array<() => void> = [];

  deliver(i: GuestInput): boolean {
    if (i.kind !== 'request') return true;
    const text = i.payload.toString('latin1').replace(/\r?\n$/, '');
    const sp = text.indexOf(' ');
    const id = sp < 0 ? text : text.slice(0, sp);
    if (id.length < 1 || id.length > 16 || /[^\x21-\x7e]/.test(id)) return true; // silence, nothing cached
    const key = `${i.clientPort} ${id}`;
    let reply = this.cache.get(key);
    if (reply === undefined) {
      const n = (this.applied.get(key) ?? 0) + 1;
      this.applied.set(key, n);
      reply = `${id} OK applied=${n} total=${++this.total}`;
      this.cache.set(key, reply);
      this.perPort.set(i.clientPort, (this.perPort.get(i.clientPort) ?? 0) + 1);
      if (this.cache.size > 4096) {
        const old = this.cache.keys().next().value!;
        this.cache.delete(old);
        const port = Number(old.split(' ')[0]);
        this.perPort.set(port, this.perPort.get(port)! - 1);
      }
    }
    this.onOutput?.({ kind: 'reply', clientPort: i.clientPort, payload: Buffer.from(reply) });
    return true;
  }

  /** True if the guest holds a cached reply for this identity. */
  holds(port: number): boolean {
    return (this.perPort.get(port) ?? 0) > 0;
  }

  hasRoom(): boolean { return this.room; }
  whenRoom(fn: () => void): void { this.roomFns.push(fn); }
  open(): void { this.room = true; for (const f of this.roomFns.splice(0)) f(); }
}

class Out {
  released: Array<{ port: number; text: string }> = [];
  release(o: GuestOutput): void { if (o.kind === 'reply') this.released.push({ port: o.clientPort, text: o.payload.toString() }); }
}

/** A standalone board: endpoint -> replicator -> caching guest -> replicator -> endpoint (sends captured). */
function board(opts: { ratePerSource?: number; maxQueuedInputs?: number } = {}) {
  const guest = new CachingGuest();
  const replicator = new Replicator({ guest, log, maxQueuedInputs: opts.maxQueuedInputs });
  const endpoint = new ServiceEndpoint({ service: { address: '127.0.0.1', port: 0 }, auth: { address: '127.0.0.1', port: 1 }, ratePerSource: opts.ratePerSource ?? 0, burstPerSource: 200 }, log, replicator.clients);
  endpoint.attach(replicator);
  const sent: Array<{ to: string; text: string }> = [];
  replicator.setOutput({ release: (o) => { if (o.kind === 'reply') { const c = replicator.clients.clientOf(o.clientPort); sent.push({ to: c ? `${c.address}:${c.port}` : '?', text: o.payload.toString() }); } } });
  guest.onOutput = (o) => replicator.onGuestOutput(o);
  return { guest, replicator, endpoint, sent };
}

const src = (i: number) => ({ address: `203.0.113.${1 + (i % 250)}`, port: 1024 + Math.floor(i / 250) });

describe('Client map: no identity handed over while the guest may hold its cached replies', () => {
  it('a flood of 45 000 new sources without a valid id never takes the victim\'s port; the victim\'s retry is answered from its cache, not applied twice', () => {
    const b = board();
    const victim = { address: '198.51.100.7', port: 5060 };
    b.endpoint.receive(Buffer.from('v1 CALL alice bob'), victim);
    const vPort = b.replicator.clients.portFor(victim)!;
    for (let i = 0; i < 45000; i++) {
      // empty datagrams, 17-byte ids, control bytes: the guest would stay silent
      const junk = [Buffer.alloc(0), Buffer.from('x'.repeat(17) + ' STATS'), Buffer.from('\x01bad STATS')][i % 3]!;
      b.endpoint.receive(junk, src(i));
    }
    // the attacker sends the victim's id from a new source: it must not read the victim's reply
    const attacker = src(45001);
    b.endpoint.receive(Buffer.from('v1 CALL alice bob'), attacker);
    assert.notEqual(b.replicator.clients.portFor(attacker), vPort);
    b.endpoint.receive(Buffer.from('v1 CALL alice bob'), victim); // the victim's retry
    const toVictim = b.sent.filter((s) => s.to === '198.51.100.7:5060').map((s) => s.text);
    assert.deepEqual(toVictim, ['v1 OK applied=1 total=1', 'v1 OK applied=1 total=1'], 'the retry gets the cached reply');
    assert.equal(b.guest.applied.get(`${vPort} v1`), 1, 'applied once');
    assert.equal(b.endpoint.counters.noId, 45000);
    assert.ok(b.replicator.clients.size <= 3, `junk sources hold no identity (${b.replicator.clients.size})`);
  });

  it('a flood of 50 000 new sources, one in 20 with a valid id: every port given out holds no reply in the guest\'s cache', () => {
    const b = board();
    let checked = 0;
    for (let i = 0; i < 50000; i++) {
      const s = src(i);
      const known = b.replicator.clients.size;
      const port = b.replicator.clients.portFor(s)!;
      assert.ok(port !== undefined, `source ${i} refused`);
      if (b.replicator.clients.size > known) {
        assert.equal(b.guest.holds(port), false, `port ${port} given to source ${i} while the guest holds a reply for it`);
        checked++;
      }
      // straight to the pipeline (not through the endpoint's id check): the map itself must cope
      b.replicator.submit({ kind: 'request', clientPort: port, payload: Buffer.from(i % 20 === 0 ? `r${i % 7} STATS` : '') });
    }
    assert.equal(checked, 50000);
    assert.ok(b.replicator.clients.reused > 0, 'ports were reused');
    assert.ok(b.guest.total === 2500);
    assert.ok(b.replicator.clients.size <= 2500, `only identities with cached replies are kept (${b.replicator.clients.size})`);
  });

  it('a backup fed the same stream (assign + noteRequest) builds the same map; export/import reproduces it', () => {
    const primary = new ClientMap({ first: 100, last: 160, cacheEntries: 20, cacheMargin: 5 });
    const backup = new ClientMap({ first: 100, last: 160, cacheEntries: 20, cacheMargin: 5 });
    for (let i = 0; i < 3000; i++) {
      const c = src((i * 7919) % 400);
      const port = primary.portFor(c);
      if (port === undefined) continue;
      const payload = Buffer.from(i % 5 === 0 ? '' : `id${i % 11} GET x`);
      primary.noteRequest(port, payload);
      backup.assign(port, c);
      backup.noteRequest(port, payload);
      if (i === 1500) {
        const copy = new ClientMap({ first: 100, last: 160, cacheEntries: 20, cacheMargin: 5 });
        copy.import(primary.export());
        assert.deepEqual(copy.export(), primary.export(), 'import(export()) is the same map');
      }
    }
    assert.deepEqual(backup.export(), primary.export());
  });

  it('refuses a new client when every port is held, and says so in the counters', () => {
    const b = board();
    const m = new ClientMap({ first: 100, last: 102 });
    for (let i = 0; i < 3; i++) m.noteRequest(m.portFor(src(i))!, Buffer.from(`a${i} STATS`));
    assert.equal(m.portFor(src(99)), undefined);
    assert.equal(m.refused, 1);
    assert.deepEqual([100, 101, 102].map((p) => m.clientOf(p)), [src(0), src(1), src(2)], 'nobody lost an identity');
    assert.ok(b); // the endpoint counts the same refusal as clientsRefused (below)
    const small = new ClientMap({ first: 100, last: 100 });
    const ep = new ServiceEndpoint({ service: { address: '127.0.0.1', port: 0 }, auth: { address: '127.0.0.1', port: 1 } }, log, small);
    const submitted: GuestInput[] = [];
    ep.attach({ submit: (i) => { submitted.push(i); small.noteRequest((i as { clientPort: number }).clientPort, i.payload); }, onGuestOutput: () => undefined });
    ep.receive(Buffer.from('a STATS'), src(1));
    ep.receive(Buffer.from('b STATS'), src(2));
    assert.equal(submitted.length, 1);
    assert.equal(ep.counters.clientsRefused, 1);
  });
});

describe('AUTH answers', () => {
  it('only from the AUTH service, at most maxRequestBytes, and one per question this board asked; the rest dropped and counted', () => {
    const ep = new ServiceEndpoint({ service: { address: '127.0.0.1', port: 0 }, auth: { address: '127.0.0.1', port: 7000 } }, log);
    const submitted: string[] = [];
    ep.attach({ submit: (i) => { submitted.push(i.payload.toString()); }, onGuestOutput: () => undefined });
    const auth = { address: '127.0.0.1', port: 7000 };
    ep.receiveAuth(Buffer.from('AUTHR S1 OK'), auth); // asked nothing yet
    ep.release({ kind: 'auth-query', payload: Buffer.from('AUTHQ S1') });
    ep.receiveAuth(Buffer.from('AUTHR S1 OK'), { address: '127.0.0.2', port: 7000 }); // another source
    ep.receiveAuth(Buffer.from('AUTHR S1 OK'), { address: '127.0.0.1', port: 7001 }); // another port
    ep.receiveAuth(Buffer.from(`AUTHR S1 OK ${'x'.repeat(600)}`), auth); // oversized
    ep.receiveAuth(Buffer.from('AUTHR S2 OK'), auth); // a subscriber nobody asked about
    ep.receiveAuth(Buffer.from('garbage'), auth);
    assert.deepEqual(submitted, [], 'nothing forged reached the pipeline');
    ep.receiveAuth(Buffer.from('AUTHR S1 OK'), auth);
    ep.receiveAuth(Buffer.from('AUTHR S1 BLOCKED'), auth); // a second answer to one question
    assert.deepEqual(submitted, ['AUTHR S1 OK'], 'one answer per question');
    // The guest asks again (its own retry): one more answer is due.
    ep.release({ kind: 'auth-query', payload: Buffer.from('AUTHQ S1') });
    ep.release({ kind: 'auth-query', payload: Buffer.from('AUTHQ S1') });
    ep.receiveAuth(Buffer.from('AUTHR S1 OK'), auth);
    ep.receiveAuth(Buffer.from('AUTHR S1 OK'), auth);
    ep.receiveAuth(Buffer.from('AUTHR S1 OK'), auth);
    assert.equal(submitted.length, 3);
    assert.deepEqual({ ...ep.counters, requests: 0 }, { ...ep.counters, requests: 0, authIgnored: 2, authOversized: 1, authUnasked: 5, authReplies: 3, authQueries: 3 });
  });

  it('a guest asking about more subscribers than the table holds forgets the oldest questions first', () => {
    const ep = new ServiceEndpoint({ service: { address: '127.0.0.1', port: 0 }, auth: { address: '127.0.0.1', port: 7000 } }, log);
    const submitted: string[] = [];
    ep.attach({ submit: (i) => { submitted.push(i.payload.toString()); }, onGuestOutput: () => undefined });
    for (let i = 0; i < 1030; i++) ep.release({ kind: 'auth-query', payload: Buffer.from(`AUTHQ Q${i}`) });
    const auth = { address: '127.0.0.1', port: 7000 };
    ep.receiveAuth(Buffer.from('AUTHR Q0 OK'), auth);
    ep.receiveAuth(Buffer.from('AUTHR Q1029 OK'), auth);
    assert.deepEqual(submitted, ['AUTHR Q1029 OK']);
    assert.equal(ep.counters.authUnasked, 1);
  });
});

describe('Request ids over 16 bytes', () => {
  it('replyKey keeps a 17-byte id apart from its 16-byte prefix, and an id-less request apart from every real id', () => {
    const id16 = 'A'.repeat(16);
    assert.notEqual(replyKey(20000, Buffer.from(`${id16}X STATS`)), replyKey(20000, Buffer.from(`${id16} STATS`)));
    assert.equal(replyKey(20000, Buffer.from(`${id16} STATS`)), replyKey(20000, Buffer.from(`${id16} OK STATS subs=0`)));
    for (const id of ['<no-id>', '(no', 'id)']) assert.notEqual(replyKey(1, Buffer.alloc(0)), replyKey(1, Buffer.from(`${id} STATS`)));
  });

  it('the endpoint drops a 17-byte id before it is sequenced', () => {
    const b = board();
    b.endpoint.receive(Buffer.from(`${'B'.repeat(17)} STATS`), src(1));
    assert.equal(b.replicator.lastSeq, 0);
    assert.equal(b.endpoint.counters.noId, 1);
  });

  it('a 16-byte id\'s reply waits for its own ACK, not that of an earlier 17-byte id with the same prefix', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const accepted = new Promise<Socket>((r) => server.once('connection', r));
    const a = new MessageChannel(connect((server.address() as { port: number }).port, '127.0.0.1'));
    const bch = new MessageChannel(await accepted);
    const out = new Out();
    const p = new Replicator({ guest: { deliver: () => true }, log });
    try {
      // the backup's side acknowledges only the first input
      bch.on('message', (type, body) => { if (type === T_INPUT && decodeInput(body).seq === 1) bch.send(T_ACK, encodeAck(1)); });
      p.setOutput(out);
      p.becomePrimary();
      p.protect(a, 0);
      const id16 = 'C'.repeat(16);
      p.submit({ kind: 'request', clientPort: 20000, payload: Buffer.from(`${id16}X CALL a b`) }); // seq 1, guest silent
      p.submit({ kind: 'request', clientPort: 20000, payload: Buffer.from(`${id16} STATS`) }); // seq 2
      p.onGuestOutput({ kind: 'reply', clientPort: 20000, payload: Buffer.from(`${id16} OK STATS subs=0`) });
      for (let i = 0; i < 50 && p.ackedSeq < 1; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(p.ackedSeq, 1);
      await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(out.released, [], 'released before its input was acknowledged');
    } finally {
      p.close(); a.close(); bch.close(); server.close();
    }
  });
});

describe('Capped queues and pruned pending replies', () => {
  it('the queue before a guest with no room is capped; a dropped request gets no identity and no sequence number', () => {
    const b = board({ maxQueuedInputs: 64 });
    b.guest.room = false;
    for (let i = 0; i < 1000; i++) b.endpoint.receive(Buffer.from(`q${i} STATS`), src(i));
    assert.equal(b.replicator.queuedLocally, 64);
    assert.equal(b.replicator.lastSeq, 64);
    assert.equal(b.replicator.drops.queueFull, 936);
    assert.equal(b.replicator.clients.size, 64, 'dropped requests hold no identity');
    b.guest.open();
    assert.equal(b.replicator.queuedLocally, 0);
    b.endpoint.receive(Buffer.from('after STATS'), src(5000));
    assert.equal(b.replicator.lastSeq, 65, 'served again once the guest caught up');
  });

  it('the inputs held at a clone\'s cut-over are capped', () => {
    const b = board({ maxQueuedInputs: 32 });
    b.replicator.hold();
    for (let i = 0; i < 100; i++) b.endpoint.receive(Buffer.from(`h${i} STATS`), src(i));
    assert.equal(b.replicator.heldCount, 32);
    assert.equal(b.replicator.drops.heldFull, 68);
    b.replicator.release();
    assert.equal(b.sent.length, 32);
  });

  it('requests the guest never answers are forgotten by count and by age, counted', () => {
    const clock = new FakeClock();
    const r = new Replicator({ guest: { deliver: () => true }, log, clock, maxPendingReplies: 100, pendingReplyMaxAgeMs: 5000 });
    for (let i = 0; i < 1000; i++) r.submit({ kind: 'request', clientPort: 20000 + (i % 50), payload: Buffer.from(`p${i} REG s${i}`) });
    assert.equal(r.status().pendingReplies, 100);
    assert.equal(r.drops.pendingPruned, 900);
    clock.advance(6000);
    r.submit({ kind: 'request', clientPort: 20000, payload: Buffer.from('late STATS') });
    assert.equal(r.status().pendingReplies, 1, 'the old ones aged out');
    assert.equal(r.drops.pendingPruned, 1000);
    r.close();
  });

  it('the drop counters reach the metrics snapshot, by reason', () => {
    const b = board({ maxQueuedInputs: 16 });
    b.guest.room = false;
    for (let i = 0; i < 20; i++) b.endpoint.receive(Buffer.from(`m${i} STATS`), src(i));
    b.endpoint.receive(Buffer.alloc(0), src(1));
    const s = snapshotFrom({ board: 'x', role: 'STANDALONE', endpoint: { ...b.endpoint.counters }, replication: b.replicator.status() });
    assert.equal(s.inputDrops?.['queue-full'], 4);
    assert.equal(s.inputDrops?.['no-id'], 1);
  });
});

describe('Per-source rate limit', () => {
  it('a source gets its burst, then its rate; others are not affected; the table stays bounded', () => {
    let t = 0;
    const l = new SourceRateLimiter(100, 10, 16, () => t);
    const first = Array.from({ length: 20 }, () => l.allow('203.0.113.1'));
    assert.equal(first.filter(Boolean).length, 10);
    assert.equal(l.allow('203.0.113.2'), true);
    t += 100; // 10 more tokens
    assert.equal(Array.from({ length: 20 }, () => l.allow('203.0.113.1')).filter(Boolean).length, 10);
    for (let i = 0; i < 1000; i++) l.allow(`198.51.100.${i % 250}:${i}`);
    assert.equal(l.tracked, 16);
  });

  it('the endpoint drops a flooding source over its rate, counted', () => {
    const b = board({ ratePerSource: 1 });
    for (let i = 0; i < 500; i++) b.endpoint.receive(Buffer.from(`f${i} STATS`), { address: '203.0.113.9', port: 4000 });
    assert.ok(b.endpoint.counters.rateLimited >= 500 - 201, `rate-limited ${b.endpoint.counters.rateLimited}`);
    b.endpoint.receive(Buffer.from('ok STATS'), { address: '203.0.113.10', port: 4000 });
    assert.match(b.sent.at(-1)?.text ?? '', /^ok OK applied=1 /);
  });
});

describe('The backup\'s input log is bounded', () => {
  it('rebuilds(): the state up to the stream\'s last input, only from a checkpoint taken since this start whose log reaches it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'us-inputlog-'));
    const store = new Store(dir);
    try {
      const r = new Replicator({ guest: { deliver: () => true }, log });
      const start = Date.parse('2026-12-06T12:00:00.000Z');
      const cp = new Checkpointer(dir, store, {} as GuestSupervisor, r, log, start);
      const info = (seq: number, at: string) => {
        store.setMeta('checkpoint', JSON.stringify({ seq, guestSeq: seq, at, bytes: 1, pauseMs: null, durationMs: 1, clients: { ports: [] } }));
      };
      assert.equal(cp.rebuilds(10), false, 'no checkpoint');
      writeFileSync(join(dir, 'checkpoint.img'), 'x');
      info(100, '2026-12-06T12:00:01.000Z');
      for (let seq = 101; seq <= 200; seq++) cp.logInput({ seq, input: { kind: 'request', clientPort: 20000, payload: Buffer.from(`i${seq} STATS`) } });
      assert.equal(cp.rebuilds(200), true, 'checkpoint since the start, log to the last input');
      assert.equal(cp.rebuilds(100), true, 'the checkpoint is the last input');
      assert.equal(cp.rebuilds(201), false, 'the log stops short of the stream');
      assert.equal(cp.rebuilds(0), false, 'no input followed since the start (a rebooted backup before its clone)');
      assert.equal(cp.fromEarlierStart, false);
      info(100, '2026-12-06T11:59:59.999Z');
      assert.equal(cp.fromEarlierStart, true);
      assert.equal(cp.rebuilds(200), false, 'a checkpoint from before this start');
      info(100, '2026-12-06T12:00:01.000Z');
      store.db.prepare('DELETE FROM inputs WHERE seq = 150').run();
      assert.equal(cp.rebuilds(200), false, 'a gap in the log');
      r.close();
    } finally {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('group commit: the inputs of one turn are written in one transaction, before the ACK that covers them, and every reader sees them', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'us-inputlog-'));
    const store = new Store(dir);
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const accepted = new Promise<Socket>((r) => server.once('connection', r));
    const a = new MessageChannel(connect((server.address() as { port: number }).port, '127.0.0.1'));
    const b = new MessageChannel(await accepted);
    const close = () => { a.close(); b.close(); server.close(); };
    const p = new Replicator({ guest: { deliver: () => true }, log });
    const bk = new Replicator({ guest: { deliver: () => true }, log });
    try {
      const cp = new Checkpointer(dir, store, {} as GuestSupervisor, bk, log);
      const count = () => (store.db.prepare('SELECT COUNT(*) AS n FROM inputs').get() as { n: number }).n;
      // The replicator's side of it, with a log that writes only when told to (flush): every ACK
      // leaves after what it covers is written.
      const held: number[] = [];
      let written = 0;
      const atAck: Array<{ acked: number; written: number }> = [];
      bk.setInputLog((s) => { held.push(s.seq); cp.logInput(s); }, () => { if (held.length) written = Math.max(written, ...held.splice(0)); cp.flushLog(); });
      const send = b.send.bind(b);
      b.send = (type, body) => { if (type === T_ACK) atAck.push({ acked: decodeAck(body), written }); return send(type, body); };
      p.becomePrimary();
      bk.becomeBackup();
      p.protect(a, 0);
      bk.follow(b, 0);
      for (let i = 1; i <= 40; i++) p.submit({ kind: 'request', clientPort: 20000, payload: Buffer.from(`i${i} STATS`) });
      for (let i = 0; i < 200 && p.status().ackedSeq < 40; i++) await new Promise((r) => setTimeout(r, 5));
      assert.equal(p.status().ackedSeq, 40);
      assert.ok(atAck.some((x) => x.acked > 0));
      for (const x of atAck) assert.ok(x.written >= x.acked, `ACK of ${x.acked} left with inputs up to ${x.written} written`);
      assert.equal(count(), 40, 'every input in the log');
      assert.ok(cp.logStatus.groupCommits < 40, `fewer transactions than inputs: ${cp.logStatus.groupCommits}`);
      // Without an ACK: written at the end of the turn, and a reader before that sees them anyway.
      cp.logInput({ seq: 41, input: { kind: 'request', clientPort: 20000, payload: Buffer.from('i41 STATS') } });
      assert.equal(count(), 40, 'not yet written: the turn is not over');
      assert.equal(cp.inputsLogged(41, 41).length, 1, 'a reader flushes first');
      cp.logInput({ seq: 42, input: { kind: 'request', clientPort: 20000, payload: Buffer.from('i42 STATS') } });
      await new Promise((r) => setImmediate(r));
      assert.equal(count(), 42, 'written at the end of the turn by itself');
    } finally {
      p.close();
      bk.close();
      close();
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a checkpoint truncates the log in slices, the event loop running between them; nothing from the cut on is touched', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'us-inputlog-'));
    const store = new Store(dir);
    try {
      const r = new Replicator({ guest: { deliver: () => true }, log });
      const cp = new Checkpointer(dir, store, {} as GuestSupervisor, r, log);
      for (let seq = 1; seq <= 9000; seq++) cp.logInput({ seq, input: { kind: 'request', clientPort: 20000, payload: Buffer.from(`i${seq} STATS`) } });
      cp.flushLog();
      let turns = 0;
      const ticker = setInterval(() => { turns++; }, 0);
      await (cp as unknown as { truncateLog(keepFrom: number): Promise<void> }).truncateLog(8001);
      clearInterval(ticker);
      const rows = store.db.prepare('SELECT COUNT(*) AS n, MIN(seq) AS lo FROM inputs').get() as { n: number; lo: number };
      assert.deepEqual(rows, { n: 1000, lo: 8001 }, 'everything before the cut deleted, nothing after it');
      assert.ok(turns >= 1, `the event loop ran between slices (${turns} timer turns)`);
      r.close();
    } finally {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('forces a checkpoint (journaled) when the log reaches its bound, at most once per 5 s', () => {
    const dir = mkdtempSync(join(tmpdir(), 'us-inputlog-'));
    const store = new Store(dir);
    try {
      const r = new Replicator({ guest: { deliver: () => true }, log });
      const cp = new Checkpointer(dir, store, {} as GuestSupervisor, r, log);
      cp.maxLoggedInputs = 1000;
      let takes = 0;
      cp.take = async () => { takes++; throw new Error('test: no clone'); };
      for (let seq = 1; seq <= 999; seq++) cp.logInput({ seq, input: { kind: 'request', clientPort: 20000, payload: Buffer.from(`i${seq} STATS`) } });
      assert.equal(takes, 0);
      for (let seq = 1000; seq <= 3000; seq++) cp.logInput({ seq, input: { kind: 'request', clientPort: 20000, payload: Buffer.from(`i${seq} STATS`) } });
      assert.equal(takes, 1, 'one forced attempt, not one per input');
      assert.equal(cp.logStatus.forced, 1);
      const rows = store.db.prepare("SELECT message FROM events WHERE kind = 'checkpoint'").all() as Array<{ message: string }>;
      assert.ok(rows.some((x) => /forcing a checkpoint/.test(x.message)), 'journaled');
      r.close();
    } finally {
      store.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
