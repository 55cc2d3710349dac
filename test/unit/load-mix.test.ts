/**
 * The load generator's request mix (--mix) against a fake guest on loopback that keeps the
 * protocol's rules (REG, GET, CALL between idle known subscribers, END, STATS), and the benchmark's
 * rule that a run which saw the error path produces no table (bench/cost-lib).
 */
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { costReport, unusable, type PhaseRun } from '../../bench/cost-lib.js';
import { LoadGenerator, mixCycle, parseMix, type LoadResult } from '../../src/sim/load.js';

/** A guest that answers as PROTOCOL.md says, and remembers what a correct client must never do. */
class FakeGuest {
  socket!: Socket;
  subs = new Map<string, number>();
  busy = new Set<string>();
  calls = new Map<string, [string, string]>();
  total = 0;
  regOfKnown: string[] = [];
  bodies: string[] = [];
  cache = new Map<string, string>();
  constructor(readonly limit = 4096) {}

  async start(): Promise<number> {
    this.socket = createSocket('udp4');
    this.socket.on('message', (m, r) => {
      const text = m.toString();
      const id = text.split(' ', 1)[0]!;
      const key = `${r.port} ${id}`;
      const reply = this.cache.get(key) ?? this.apply(id, text.slice(id.length + 1));
      this.cache.set(key, reply);
      // Replies a little out of order, so calls overlap as on a real guest.
      setTimeout(() => this.socket.send(reply, r.port, r.address), this.bodies.length % 3);
    });
    await new Promise<void>((res) => this.socket.bind(0, '127.0.0.1', () => res()));
    return this.socket.address().port;
  }

  private apply(id: string, body: string): string {
    this.bodies.push(body);
    const [cmd, a, b] = body.split(' ');
    switch (cmd) {
      case 'REG':
        if (this.subs.has(a!)) this.regOfKnown.push(a!);
        else if (this.subs.size >= this.limit) return `${id} ERR FULL`;
        else this.subs.set(a!, 0);
        return `${id} OK REG ${a} ${this.subs.size}`;
      case 'GET':
        return this.subs.has(a!) ? `${id} OK GET ${a} calls=${this.subs.get(a!)} state=${this.busy.has(a!) ? 'busy' : 'idle'}` : `${id} ERR UNKNOWN ${a}`;
      case 'CALL':
        if (!this.subs.has(a!)) return `${id} ERR UNKNOWN ${a}`;
        if (!this.subs.has(b!)) return `${id} ERR UNKNOWN ${b}`;
        if (a === b) return `${id} ERR BADARGS`;
        if (this.busy.has(a!)) return `${id} ERR BUSY ${a}`;
        if (this.busy.has(b!)) return `${id} ERR BUSY ${b}`;
        this.busy.add(a!); this.busy.add(b!);
        this.calls.set(String(++this.total), [a!, b!]);
        return `${id} OK CALL ${this.total}`;
      case 'END': {
        const c = this.calls.get(a!);
        if (!c) return `${id} ERR UNKNOWN ${a}`;
        this.calls.delete(a!);
        for (const s of c) { this.busy.delete(s); this.subs.set(s, this.subs.get(s)! + 1); }
        return `${id} OK END ${a}`;
      }
      case 'STATS':
        return `${id} OK STATS subs=${this.subs.size} active=${this.calls.size} total=${this.total} version=1`;
      default:
        return `${id} ERR MALFORMED`;
    }
  }

  close(): void {
    this.socket.close();
  }
}

async function runOn(guest: FakeGuest, port: number, o: { tag: string; window: number; durationMs: number; mix: string; pool?: { tag: string; count: number } }): Promise<LoadResult> {
  const gen = new LoadGenerator({ target: { address: '127.0.0.1', port }, bind: '127.0.0.1', rate: 0, retryMs: 200, ...o, mix: parseMix(o.mix) });
  try {
    const r = await gen.run();
    r.verify = await gen.verify(50);
    return r;
  } finally {
    gen.close();
  }
}

describe('load generator: request mix', function () {
  this.timeout(20000);

  it('parses weights and names the bad part', () => {
    assert.deepEqual(parseMix('reg=1,get=59,call=40'), { reg: 1, get: 59, call: 40 });
    assert.deepEqual(parseMix('get=3'), { reg: 0, get: 3, call: 0 });
    assert.throws(() => parseMix('reg=1,put=2'), /unknown kind "put"/);
    assert.throws(() => parseMix('reg=1,get'), /"get" is not/);
    assert.throws(() => parseMix('reg=0,get=0'), /at least one weight/);
  });

  it('a cycle holds exactly the weights, spread out, the same every time', () => {
    for (const m of [{ reg: 1, get: 59, call: 40 }, { reg: 3, get: 0, call: 1 }, { reg: 2, get: 5, call: 7 }]) {
      const c = mixCycle(m);
      assert.equal(c.length, m.reg + m.get + m.call);
      for (const k of ['reg', 'get', 'call'] as const) assert.equal(c.filter((x) => x === k).length, m[k], `${k} in ${JSON.stringify(m)}`);
      assert.deepEqual(mixCycle(m), c);
    }
    // Spread: with 1 REG in 100, no stretch of 10 steps holds more than 6 GETs or 5 calls.
    const c = mixCycle({ reg: 1, get: 59, call: 40 });
    for (let i = 0; i + 10 <= c.length; i++) {
      const w = c.slice(i, i + 10);
      assert.ok(w.filter((x) => x === 'get').length <= 7 && w.filter((x) => x === 'call').length <= 5, `steps ${i}…${i + 9}: ${w.join(',')}`);
    }
  });

  it('sends the mix against a guest: each kind in its share, REG only of new subscribers, no ERR, calls never on a busy subscriber', async () => {
    const guest = new FakeGuest();
    const port = await guest.start();
    try {
      const mix = { reg: 1, get: 3, call: 2 };
      const r = await runOn(guest, port, { tag: 'T', window: 8, durationMs: 400, mix: 'reg=1,get=3,call=2' });
      assert.equal(r.errorReplies, 0, r.errorSamples.join('; '));
      assert.deepEqual(guest.regOfKnown, []);
      const steps = r.requests.REG + r.requests.GET + r.requests.CALL;
      assert.ok(steps > 60, `only ${steps} steps`);
      // Steps 0 … K-1 all ran: each kind is within one cycle of its exact share.
      for (const [kind, w] of [['REG', mix.reg], ['GET', mix.get], ['CALL', mix.call]] as const) {
        assert.ok(Math.abs(r.requests[kind] - (steps * w) / 6) <= w, `${kind}: ${r.requests[kind]} of ${steps} steps`);
      }
      assert.equal(r.requests.END, r.requests.CALL);
      assert.equal(r.registered, r.requests.REG);
      assert.equal(guest.subs.size, r.registered + 2 * 8 + 2, 'the run\'s new subscribers and its pool');
      assert.deepEqual(r.verify!.missing, []);

      // A second run sharing a pool with a third: the pool is registered once, never again.
      const pool = { tag: 'P', count: 20 };
      const before = guest.subs.size;
      const a = await runOn(guest, port, { tag: 'U', window: 4, durationMs: 200, mix: 'reg=1,get=3,call=2', pool });
      const b = await runOn(guest, port, { tag: 'V', window: 4, durationMs: 200, mix: 'reg=1,get=3,call=2', pool });
      assert.deepEqual(guest.regOfKnown, []);
      assert.equal(guest.subs.size, before + pool.count + a.registered + b.registered);
      assert.equal(a.errorReplies + b.errorReplies, 0);
    } finally {
      guest.close();
    }
  });

  it('is deterministic: the same steps in the same order for the same tag', async () => {
    const seqs: string[][] = [];
    const timed: number[] = [];
    for (let i = 0; i < 2; i++) {
      const guest = new FakeGuest();
      const port = await guest.start();
      try {
        const r = await runOn(guest, port, { tag: 'D', window: 1, durationMs: 300, mix: 'reg=2,get=5,call=3' });
        seqs.push(guest.bodies);
        timed.push(r.requests.REG + r.requests.GET + r.requests.CALL + r.requests.END);
      } finally {
        guest.close();
      }
    }
    // The pool (4: a GET, then a REG each), then the timed part; verify's requests follow.
    const n = 8 + Math.min(...timed);
    assert.ok(n > 40, `only ${n} requests`);
    assert.deepEqual(seqs[0]!.slice(0, 8), ['GET Dp0', 'REG Dp0', 'GET Dp1', 'REG Dp1', 'GET Dp2', 'REG Dp2', 'GET Dp3', 'REG Dp3']);
    assert.deepEqual(seqs[0]!.slice(0, n), seqs[1]!.slice(0, n));
  });

  it('refuses a pool too small for the calls in flight, naming it', () => {
    assert.throws(() => new LoadGenerator({ target: { address: '127.0.0.1', port: 9 }, bind: '127.0.0.1', rate: 0, window: 16, durationMs: 1, tag: 'x', retryMs: 50, mix: parseMix('call=1'), pool: { tag: 'P', count: 10 } }), /pool: 10 subscribers cannot keep 16 calls/);
    assert.throws(() => new LoadGenerator({ target: { address: '127.0.0.1', port: 9 }, bind: '127.0.0.1', rate: 0, window: 1, durationMs: 1, tag: 'x', retryMs: 50, mix: parseMix('get=1'), pool: { tag: 'P', count: 0 } }), /GETs need at least one subscriber/);
  });

  it('the load without a mix (--reg-every): concurrent calls never pick a subscriber already in one (no ERR BUSY)', async () => {
    const guest = new FakeGuest();
    const port = await guest.start();
    const gen = new LoadGenerator({ target: { address: '127.0.0.1', port }, bind: '127.0.0.1', rate: 0, retryMs: 200, tag: 'B', window: 16, durationMs: 400, regEvery: 3 });
    try {
      const r = await gen.run();
      assert.ok(r.requests.CALL > 30, `calls ran (${r.requests.CALL})`);
      assert.equal(r.errorReplies, 0, r.errorSamples.join('; '));
      assert.equal(r.requests.END, r.calls);
    } finally {
      gen.close();
      guest.close();
    }
  });

  it('counts ERR FULL of a full guest as a limit reply and as the error path', async () => {
    const guest = new FakeGuest(2 * 4 + 2 + 3);
    const port = await guest.start();
    try {
      const r = await runOn(guest, port, { tag: 'F', window: 4, durationMs: 300, mix: 'reg=1,get=1' });
      assert.ok(r.limitReplies > 0 && r.errorReplies >= r.limitReplies, `${r.limitReplies} limit, ${r.errorReplies} error replies`);
      assert.match(r.errorSamples[0]!, /^REG F\d+ -> F\S+ ERR FULL$/);
    } finally {
      guest.close();
    }
  });
});

describe('bench/replication-cost: no table from the error path', () => {
  const lat = { n: 100, p50: 1, p90: 1.5, p99: 2, max: 3, mean: 1.1 };
  const clean = (over: Partial<PhaseRun['result']> = {}): PhaseRun['result'] => ({
    acked: 1000, throughput: 200, latency: lat, limitReplies: 0, errorReplies: 0, errorSamples: [], requests: { REG: 10, GET: 590, CALL: 200, END: 200 },
    verify: { checked: 10, missing: [], retriedIdentical: 50, retriedDifferent: [], stats: 'x OK STATS subs=10', callIdsReused: [] }, ...over,
  });
  const runs = (bad?: Partial<PhaseRun['result']>): PhaseRun[] => [1, 2].flatMap((round) => [
    { arm: 'R' as const, round, shape: 'closed-1', result: clean({ latency: { ...lat, p50: 1.5, p99: 3 } }) },
    { arm: 'R' as const, round, shape: 'closed-16', result: clean({ throughput: 100 }) },
    { arm: 'U' as const, round, shape: 'closed-1', result: clean() },
    { arm: 'U' as const, round, shape: 'closed-16', result: clean(round === 2 ? bad : {}) },
  ]);
  const ceiling: PhaseRun[] = [1, 2].flatMap((round) => [
    { arm: 'S' as const, round, shape: 'closed-16', result: clean({ throughput: 400 }) },
    { arm: 'D' as const, round, shape: 'closed-16', result: clean({ throughput: 200 }) },
    { arm: 'D' as const, round, shape: 'closed-16', result: clean({ throughput: 200 }) },
  ]);

  it('a clean run gives the tables: raw ratio, ceiling and ratio to the ceiling, spread per round', () => {
    const r = costReport(runs(), ceiling);
    assert.equal(r.throughput.raw.min, 0.5);
    assert.equal(r.throughput.ceiling.max, 0.5);
    assert.equal(r.throughput.toCeiling.min, 1);
    assert.equal(r.latency.addedP50.max, 0.5);
    assert.equal(r.latency.addedP99.min, 1);
    assert.match(r.tables, /ratio to the ceiling/);
  });

  it('the I arm (backup at SCHED_IDLE) is set against U round by round; the ceiling at 1 outstanding gives the shared core\'s own cost', () => {
    const withI: PhaseRun[] = [...runs(), ...[1, 2].flatMap((round) => [
      { arm: 'I' as const, round, shape: 'closed-1', result: clean({ latency: { ...lat, p50: 1.1 + 0.1 * round, p99: 2.5 } }) },
      { arm: 'I' as const, round, shape: 'closed-16', result: clean({ throughput: 150 }) },
    ])];
    const ceil1: PhaseRun[] = [...ceiling, ...[1, 2].flatMap((round) => [
      { arm: 'S' as const, round, shape: 'closed-1', result: clean() },
      { arm: 'D' as const, round, shape: 'closed-1', result: clean({ latency: { ...lat, p50: 1.4, p99: 2 } }) },
      { arm: 'D' as const, round, shape: 'closed-1', result: clean({ latency: { ...lat, p50: 1.2, p99: 4 } }) },
    ])];
    const r = costReport(withI, ceil1);
    const i = r.arms.I;
    assert.ok(i, 'figures for the I arm');
    assert.ok(Math.abs(i.addedP50.min - 0.2) < 1e-9 && Math.abs(i.addedP50.max - 0.3) < 1e-9, `${i.addedP50.min}–${i.addedP50.max}`);
    assert.equal(i.raw.min, 0.75);
    assert.equal(r.arms.R!.raw.min, 0.5);
    assert.equal(r.arms.Q, undefined, 'no Q runs, no Q figures');
    // The ceiling's ratio comes from the 16-outstanding runs only, whatever the 1-outstanding ones did.
    assert.equal(r.throughput.ceiling.max, 0.5);
    assert.match(r.tables, /I: replicated, the backup's vCPU at SCHED_IDLE \(cores.followerYield\), vs U/);
    assert.match(r.tables, /the shared guest core alone[\s\S]*0\.300[\s\S]*1\.000/);
    assert.deepEqual(Object.keys(costReport(runs(), ceiling).arms), ['R']);
  });

  it('a run that saw ERR FULL produces no table', () => {
    assert.throws(() => costReport(runs({ limitReplies: 7, errorReplies: 7, errorSamples: ['REG a -> x ERR FULL'] }), ceiling), /U2 closed-16: 7 ERR FULL replies/);
  });

  it('any other ERR, a lost registration, a re-send answered differently or an unverified run: no table', () => {
    assert.throws(() => costReport(runs({ errorReplies: 1, errorSamples: ['CALL a b -> x ERR BUSY a'] }), ceiling), /1 other ERR replies \(CALL a b -> x ERR BUSY a\)/);
    assert.throws(() => costReport(runs({ verify: { ...clean().verify!, missing: ['U2c7'] } }), ceiling), /1 acknowledged registrations lost/);
    assert.throws(() => costReport(runs({ verify: { ...clean().verify!, retriedDifferent: ['x'] } }), ceiling), /answered differently/);
    assert.throws(() => costReport(runs({ verify: undefined }), ceiling), /not verified/);
    const full = ceiling.map((c, i) => (i === 1 ? { ...c, subscribers: 3000 } : c));
    assert.throws(() => costReport(runs(), full), /3000 subscribers in the guest, over the budget of 2048/);
    assert.deepEqual(unusable(runs()), []);
  });
});
