/**
 * The guarded restore (src/replication/poison.ts) against a fake guest that works through what it is
 * handed in order and fails on the poison requests: the poison input is confirmed by where the
 * replay fails, skipped with its resends, and every other logged input reaches the final copy once,
 * in order; a failure the suspects do not reproduce quarantines nothing. Also the processed
 * frontier (src/replication/frontier.ts) that gives the suspects.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createLogger } from '../../src/core/log.js';
import { ProcessedFrontier } from '../../src/replication/frontier.js';
import type { SequencedInput } from '../../src/replication/messages.js';
import { PoisonRecovery, prefixPart, suspectPart, type PoisonFound } from '../../src/replication/poison.js';

const log = createLogger('test', { level: 'silent' });
const req = (seq: number, body: string, port = 40000 + (seq % 5)): SequencedInput => ({
  seq, input: { kind: 'request', clientPort: port, payload: Buffer.from(body) }, client: { address: '192.0.2.50', port: 5000 + (port - 40000) },
});
const ans = (seq: number, sub: string): SequencedInput => ({ seq, input: { kind: 'auth-reply', payload: Buffer.from(`AUTHR ${sub} OK`) } });

/** A guest copy: processes requests in order; one matching `fails` fails it (crash or hang). */
class FakeGuest extends EventEmitter {
  state: 'running' | 'failed' | 'stopped' = 'running';
  processed: number[] = [];
  handed: SequencedInput[] = [];
  hung = false;
  constructor(private readonly fails: (s: SequencedInput) => 'crash' | 'hang' | undefined) { super(); }
  hand(list: SequencedInput[]): void {
    for (const s of list) {
      if (this.state !== 'running' || this.hung) return;
      this.handed.push(s);
      if (s.input.kind !== 'request') continue;
      const f = this.fails(s);
      if (f === 'crash') { this.state = 'failed'; setImmediate(() => this.emit('state', 'failed', 'the guest panicked')); return; }
      if (f === 'hang') { this.hung = true; return; }
      this.processed.push(s.seq);
    }
  }
}

function rig(log0: SequencedInput[], fails: (s: SequencedInput) => 'crash' | 'hang' | undefined) {
  const copies: FakeGuest[] = [];
  let guest = new FakeGuest(fails);
  const frontier = new ProcessedFrontier();
  const sup = {
    get currentState() { return guest.state; },
    async drained() { if (guest.hung) throw new Error('no answer'); return guest.state === 'running'; },
    async stop() { guest.state = 'stopped'; },
    on(ev: string, fn: (...a: any[]) => void) { copies.forEach((c) => c.on(ev, fn)); return sup; },
    off(ev: string, fn: (...a: any[]) => void) { copies.forEach((c) => c.off(ev, fn)); return sup; },
    port: { authOutstanding: new Set<string>(), async processedCount() { if (guest.hung) throw new Error('no answer'); return 0; } },
  };
  const rep = {
    queuedLocally: 0,
    frontier,
    replay(_from: number, inputs: SequencedInput[]) { frontier.reset(_from); this.hand(inputs); },
    appendReplay(inputs: SequencedInput[]) { this.hand(inputs); },
    hand(inputs: SequencedInput[]) {
      guest.hand(inputs);
      // The frontier as the replicator keeps it: requests handed, replies for those processed.
      for (const s of guest.handed.filter((h) => inputs.includes(h))) if (s.input.kind === 'request') frontier.delivered(s.seq, String(s.seq));
      for (const q of guest.processed) frontier.replied(String(q));
    },
  };
  let restores = 0;
  type Snap = { seq: number; alreadyIn: number[]; processed: number[] };
  // The snapshot is the recovery's own (a scratch image, not the checkpoint): a restore starts from it
  // only when the recovery passes it back; otherwise from the checkpoint (input 10).
  const checkpoints = {
    async restoreImage(from?: unknown) {
      const snap = from as Snap | undefined;
      restores++;
      guest = new FakeGuest(fails);
      if (snap) guest.processed = [...snap.processed];
      copies.push(guest);
      return { seq: snap?.seq ?? 10, alreadyIn: snap?.alreadyIn, guestSeq: 5, at: '', bytes: 0, pauseMs: 0, durationMs: 0, clients: { entries: [], next: 40000 } } as any;
    },
    inputsLogged(from: number, to: number) { return log0.filter((s) => s.seq >= from && s.seq <= to); },
    async snapshot(seq: number, alreadyIn: number[]): Promise<any> { return { seq, alreadyIn, processed: [...guest.processed] } satisfies Snap; },
  };
  const found: PoisonFound[] = [];
  const recovery = new PoisonRecovery({ checkpoints, supervisor: sup as any, replicator: rep as any, log, hangMs: 30, onPoison: (p) => found.push(p) });
  return { recovery, found, final: () => guest, restores: () => restores };
}

describe('processed frontier: the suspects of a failed copy', () => {
  it('a reply marks its request and every one handed before it as processed', () => {
    const f = new ProcessedFrontier();
    for (const s of [11, 12, 13, 14]) f.delivered(s, `k${s}`);
    f.replied('k12');
    assert.equal(f.processedSeq, 12);
    assert.deepEqual(f.suspects(), [13, 14]);
    f.replied('unknown');
    assert.deepEqual(f.suspects(), [13, 14]);
    f.reset(20);
    assert.deepEqual(f.suspects(), []);
    assert.equal(f.processedSeq, 20);
  });
});

describe('guarded restore: a restored copy that stops short of its count', () => {
  it('ends the recovery once the copy\'s count stops moving with nothing queued, counted from what it holds (never waits for good)', async () => {
    const rebased: number[] = [];
    let pings = 0;
    const sup = {
      currentState: 'running',
      async drained() { pings++; return false; }, // handed 5, processed 3: never drained
      async stop() { /* not stopped */ },
      on() { return sup; },
      off() { return sup; },
      rebaseAppSeq(n: number) { rebased.push(n); },
      port: { authOutstanding: new Set<string>(), lastCount: 3, expectedSeq: 5, async processedCount() { return 3; } },
    };
    const rep = { queuedLocally: 0, frontier: new ProcessedFrontier(), replay() { /* handed */ }, appendReplay() { /* handed */ } };
    const checkpoints = {
      async restoreImage() { return { seq: 10, guestSeq: 0, at: '', bytes: 0, pauseMs: 0, durationMs: 0, clients: { entries: [], next: 40000 } } as any; },
      inputsLogged() { return [req(11, 'a1 GET x'), req(12, 'a2 GET y')]; },
    };
    const recovery = new PoisonRecovery({ checkpoints, supervisor: sup as any, replicator: rep as any, log, hangMs: 1000, stuckMs: 60 });
    const out = await recovery.recover([]);
    assert.deepEqual(out.shortfall, { handed: 5, processed: 3 });
    assert.deepEqual(rebased, [3], 'the count is rebased to what the copy processed');
    assert.ok(pings >= 2, 'it looked more than once before giving up on the count');
    // A count that moves is waited for, however long: only a still one ends the wait.
    let count = 0;
    const moving = { ...sup, async drained() { count++; return count > 40; }, port: { ...sup.port, get lastCount() { return count; } } };
    const r2 = new PoisonRecovery({ checkpoints, supervisor: moving as any, replicator: rep as any, log, hangMs: 1000, stuckMs: 60 });
    const out2 = await r2.recover([]);
    assert.equal(out2.shortfall, undefined, 'drained in the end: no shortfall');
    assert.ok(count > 40);
  });
});

describe('guarded restore: a poison input confirmed by where the replay fails', () => {
  const logged = [req(11, 'a1 GET x'), req(12, 'a2 REG bob'), ans(13, 'bob'), req(14, 'a3 REG crashme', 40001), req(15, 'a4 GET y'), req(16, 'a3 REG crashme', 40001), req(17, 'a5 GET z')];

  it('with the failed copy\'s suspects: the poison is skipped with its resend, everything else replayed once, in order', async () => {
    const r = rig(logged, (s) => (s.input.payload.includes('crash') ? 'crash' : undefined));
    const out = await r.recovery.recover([14, 15]);
    assert.deepEqual(out.poison.map((p) => p.seq), [14]);
    assert.deepEqual(r.found[0]!.resends, [16]);
    assert.equal(r.found[0]!.failure.how, 'crash');
    assert.equal(out.restores, 2, 'one restore to confirm, one to replay without it');
    assert.deepEqual(r.final().processed, [11, 12, 15, 17], 'every other request reached the final copy, in order');
    assert.deepEqual(r.final().handed.map((s) => s.seq), [11, 12, 13, 15, 17]);
    assert.equal(out.notReproduced, undefined);
  });

  it('without suspects: the copy fails during the full replay, its own frontier gives them', async () => {
    const r = rig(logged, (s) => (s.input.payload.includes('crash') ? 'crash' : undefined));
    const out = await r.recovery.recover([]);
    assert.deepEqual(out.poison.map((p) => p.seq), [14]);
    assert.equal(out.restores, 3);
    assert.deepEqual(r.final().processed, [11, 12, 15, 17]);
  });

  it('a hang: the copy answers nothing for the bound; found and skipped the same way', async () => {
    const r = rig(logged, (s) => (s.input.payload.includes('crash') ? 'hang' : undefined));
    const out = await r.recovery.recover([14]);
    assert.deepEqual(out.poison.map((p) => [p.seq, p.failure.how]), [[14, 'hang']]);
    assert.deepEqual(r.final().processed, [11, 12, 15, 17]);
  });

  it('an input an earlier recovery quarantined (and its resends) is not replayed again: one restore, nothing found again', async () => {
    const r = rig(logged, (s) => (s.input.payload.includes('crash') ? 'crash' : undefined));
    const out = await r.recovery.recover([], (s) => s.input.payload.includes('crashme'));
    assert.deepEqual(out.poison, []);
    assert.equal(out.restores, 1);
    assert.equal(out.quarantinedSkipped, 2);
    assert.deepEqual(r.final().processed, [11, 12, 15, 17]);
  });

  it('two poison inputs: found one after the other', async () => {
    const two = [...logged, req(18, 'b1 REG crashtoo', 40003), req(19, 'b2 GET q')];
    const r = rig(two, (s) => (s.input.payload.includes('crash') ? 'crash' : undefined));
    const out = await r.recovery.recover([14]);
    assert.deepEqual(out.poison.map((p) => p.seq), [14, 18]);
    assert.deepEqual(r.final().processed, [11, 12, 15, 17, 19]);
  });

  it('a long prefix is snapshotted once processed: the restore after the confirmation starts from there', async () => {
    const long: SequencedInput[] = [];
    for (let i = 11; i < 2200; i++) long.push(req(i, `g${i} GET x`));
    long.push(req(2200, 'p REG crashme'), req(2201, 'q GET y'));
    const r = rig(long, (s) => (s.input.payload.includes('crash') ? 'crash' : undefined));
    const out = await r.recovery.recover([2200, 2201]);
    assert.deepEqual(out.poison.map((p) => p.seq), [2200]);
    assert.equal(out.restores, 2);
    assert.deepEqual(r.final().handed.map((s) => s.seq), [2201], 'only what follows the snapshot is replayed onto the last copy');
    assert.equal(r.final().processed.length, 2189 + 1, 'the snapshot\'s prefix and the input after the poison');
  });

  it('a failure the suspects do not reproduce: nothing quarantined, the whole log replayed', async () => {
    const r = rig(logged, () => undefined);
    const out = await r.recovery.recover([14, 15]);
    assert.deepEqual(out.poison, []);
    assert.deepEqual(out.notReproduced, { suspects: [14, 15] });
    assert.equal(out.restores, 1);
    assert.deepEqual(r.final().processed, [11, 12, 14, 15, 16, 17]);
  });

  it('a REG suspect is replayed with its AUTH answer, wherever the log holds it; requests before that answer wait', () => {
    const l = [req(11, 'a REG bob'), req(12, 'b GET x'), ans(13, 'bob'), req(14, 'c GET y')];
    assert.deepEqual(suspectPart(l, 11, new Set()).map((s) => s.seq), [11, 13]);
    assert.deepEqual(suspectPart(l, 12, new Set([11, 13])).map((s) => s.seq), [12]);
  });

  it('the prefix before the first suspect takes the AUTH answer its last REG was given after the suspects arrived', () => {
    // The failed copy answered REG bob (11): its answer (14) reached it while 12 and 13 sat unread.
    const l = [req(10, 'a GET x'), req(11, 'b REG bob'), req(12, 'c GET y'), req(13, 'd REG crashme'), ans(14, 'bob'), ans(15, 'zed')];
    assert.deepEqual(prefixPart(l, 12).map((s) => s.seq), [10, 11, 14]);
    assert.deepEqual(prefixPart(l, 11).map((s) => s.seq), [10]);
  });
});
