/**
 * The replicator between two controllers, over a real TCP connection on loopback, with recording
 * guests in place of QEMU: output commit, stepping down, re-clone cut-over and AUTH connection tracking.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { FakeClock } from '../../src/core/clock.js';
import { createLogger } from '../../src/core/log.js';
import type { GuestInput, GuestOutput } from '../../src/guest/io.js';
import { GUEST_BLOCKED_LIMIT, GUEST_WINDOW, GuestPort, IDLE_WRITE_OFF_MS, authSubject, registrationSubject } from '../../src/guest/guest-port.js';
import { FakeGuestNic } from '../../src/hw/guestnet/fake-nic.js';
import { MessageChannel } from '../../src/replication/secure-channel.js';
import { AUTH_REHAND_MS, Replicator, inputsAfterSave } from '../../src/replication/replicator.js';

const log = createLogger('test', { level: 'silent' });

class RecordingGuest {
  inputs: string[] = [];
  deliver(i: GuestInput): boolean {
    this.inputs.push(i.payload.toString());
    return true;
  }
}

class RecordingOut {
  released: string[] = [];
  release(o: GuestOutput): void {
    this.released.push(o.payload.toString());
  }
}

async function channelPair(): Promise<{ a: MessageChannel; b: MessageChannel; close(): void }> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const s1 = connect(port, '127.0.0.1');
  const s2 = await accepted;
  const a = new MessageChannel(s1);
  const b = new MessageChannel(s2);
  return { a, b, close: () => { a.close(); b.close(); server.close(); } };
}

const until = async (cond: () => boolean, what: string) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(cond(), what);
};

const req = (clientPort: number, text: string): GuestInput => ({ kind: 'request', clientPort, payload: Buffer.from(text) });
const reply = (clientPort: number, text: string): GuestOutput => ({ kind: 'reply', clientPort, payload: Buffer.from(text) });

/** A protected primary and its backup over loopback TCP, each on a recording guest; `primary` adds options. */
async function protectedPair(primary: Partial<ConstructorParameters<typeof Replicator>[0]> = {}) {
  const gp = new RecordingGuest();
  const gb = new RecordingGuest();
  const out = new RecordingOut();
  const p = new Replicator({ guest: gp, log, ...primary });
  const b = new Replicator({ guest: gb, log, authHoldMs: 60000 });
  p.setOutput(out);
  p.becomePrimary();
  b.becomeBackup();
  const ch = await channelPair();
  p.protect(ch.a, 0);
  b.follow(ch.b, 0);
  return { gp, gb, out, p, b, ch };
}

describe('Replicator (two controllers over loopback TCP)', () => {
  let gp: RecordingGuest, gb: RecordingGuest, out: RecordingOut, p: Replicator, b: Replicator, ch: Awaited<ReturnType<typeof channelPair>>;
  beforeEach(async () => {
    ({ gp, gb, out, p, b, ch } = await protectedPair());
  });
  afterEach(() => { p.close(); b.close(); ch.close(); });

  it('releases a reply only after the backup acknowledged its input, and the backup gets the same inputs in order', async () => {
    p.submit(req(20000, 'r1 REG A'));
    p.submit(req(20001, 'r2 REG B'));
    p.onGuestOutput(reply(20000, 'r1 OK REG A 1'));
    assert.deepEqual(out.released, [], 'held until ACK');
    await until(() => out.released.length === 1, 'released after the ACK');
    assert.deepEqual(gb.inputs, ['r1 REG A', 'r2 REG B']);
    assert.deepEqual(gp.inputs, gb.inputs);
  });

  it('times each hop: a held reply is covered and released only at the ACK; the backup logs and acknowledges; AUTHQ → AUTHR', async () => {
    p.submit(req(20000, 'r1 GET A'));
    p.submit(req(20001, 'r2 REG B'));
    p.onGuestOutput({ kind: 'auth-query', payload: Buffer.from('AUTHQ B') });
    p.submit({ kind: 'auth-reply', payload: Buffer.from('AUTHR B OK') });
    p.onGuestOutput(reply(20000, 'r1 OK GET A calls=0 state=idle'));
    const held = p.status().hops!;
    assert.equal(held.forwarded.n, 2);
    assert.equal(held.delivered.n, 2);
    assert.equal(held.replied.n, 1);
    assert.equal(held.authAnswer.n, 1);
    assert.equal(held.released.n + held.covered.n, 0, 'not released before the ACK');
    assert.deepEqual(out.released, ['AUTHQ B'], 'only the question to AUTH went out');
    await until(() => out.released.length === 2, 'the reply released after the ACK');
    const done = p.status().hops!;
    assert.equal(done.covered.n, 1);
    assert.equal(done.released.n, 1);
    assert.ok(done.released.p50Ms! >= done.replied.p50Ms!, 'released no earlier than replied');
    await until(() => b.status().hops!.backupAcked.n > 0, 'the backup acknowledged');
    assert.equal(b.status().hops!.backupLogged.n, 3);
    assert.equal(b.status().hops!.released.n, 0, 'a backup releases nothing');
  });

  it('a REG reply waits for the ACK of the AUTH answer it was decided on, not only of its request', async () => {
    p.submit(req(20000, 'r1 REG A'));
    await until(() => p.status().ackedSeq === 1, 'request acknowledged');
    p.submit({ kind: 'auth-reply', payload: Buffer.from('AUTHR A OK') }); // seq 2, not acknowledged yet
    p.onGuestOutput(reply(20000, 'r1 OK REG A 1'));
    assert.deepEqual(out.released, [], 'held until the answer is acknowledged');
    await until(() => out.released.length === 1, 'released after the answer\'s ACK');
    assert.equal(p.status().ackedSeq, 2);
  });

  it('stepping down drops replies still waiting for an ACK instead of releasing them', async () => {
    b.pauseDelivery();
    ch.b.removeAllListeners('message'); // the backup hears nothing more: no ACK comes
    p.submit(req(20000, 'r1 REG A'));
    p.onGuestOutput(reply(20000, 'r1 OK REG A 1'));
    p.hold();
    p.submit(req(20000, 'r2 REG B'));
    p.becomeBackup();
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(out.released, [], 'an unacknowledged reply must never reach the client');
    assert.equal(p.heldCount, 0, 'held inputs dropped');
    assert.deepEqual(gp.inputs, ['r1 REG A'], 'the held input never reached the guest');
  });

  it('a re-clone cut-over releases replies to inputs the new clone holds, without waiting for an ACK', async () => {
    ch.b.removeAllListeners('message'); // old channel: no ACKs
    p.submit(req(20000, 'r1 REG A'));
    p.onGuestOutput(reply(20000, 'r1 OK REG A 1'));
    assert.deepEqual(out.released, []);
    const ch2 = await channelPair();
    const unprotected: string[] = [];
    p.on('unprotected', (r) => unprotected.push(r));
    try {
      p.protect(ch2.a, p.deliveredSeq);
      assert.deepEqual(unprotected, [], 'replacing the channel is not losing the backup');
      assert.equal(p.protectedNow, true);
      assert.deepEqual(out.released, ['r1 OK REG A 1']);
      assert.equal(ch.a.open, false, 'the old channel is closed');
    } finally {
      ch2.close();
    }
  });

  it('a snapshot clone: what the unprotected primary served after the cut goes to the new backup first, in order, with its replies\' digests; nothing before the cut', async () => {
    // A first clone: the primary serves alone (no channel) while its copy is made.
    const gp2 = new RecordingGuest();
    const gb2 = new RecordingGuest();
    const out2 = new RecordingOut();
    const p2 = new Replicator({ guest: gp2, log });
    const b2 = new Replicator({ guest: gb2, log, authHoldMs: 60000 });
    const ch2 = await channelPair();
    try {
      p2.setOutput(out2);
      p2.becomePrimary();
      b2.becomeBackup();
      p2.submit(req(20000, 'r1 GET A'));
      p2.onGuestOutput(reply(20000, 'r1 OK GET A'));
      const cut = p2.deliveredSeq;
      assert.equal(cut, 1);
      p2.startBacklog(cut);
      p2.submit(req(20001, 'r2 REG B'));
      p2.submit({ kind: 'auth-reply', payload: Buffer.from('AUTHR B OK') });
      p2.submit(req(20002, 'r3 GET B'));
      p2.onGuestOutput(reply(20002, 'r3 OK GET B'));
      assert.deepEqual(out2.released, ['r1 OK GET A', 'r3 OK GET B'], 'served unprotected during the copy: nothing waits');
      assert.deepEqual(p2.backlogState, { inputs: 3, full: false });
      // The cut-over: the backup follows from the cut, the primary hands over what came after it.
      b2.follow(ch2.b, cut);
      p2.protect(ch2.a, cut);
      assert.equal(p2.backlogState, undefined, 'handed over once');
      p2.submit(req(20003, 'r4 GET A'));
      await until(() => gb2.inputs.length === 1, 'the REG; its answer and what follows wait for the clone to ask');
      b2.onGuestOutput({ kind: 'auth-query', payload: Buffer.from('AUTHQ B') });
      await until(() => gb2.inputs.length === 4, 'everything after the cut, in order');
      assert.deepEqual(gb2.inputs, ['r2 REG B', 'AUTHR B OK', 'r3 GET B', 'r4 GET A']);
      b2.onGuestOutput(reply(20002, 'r3 OK GET B'));
      await until(() => b2.status().digestsCompared === 1, 'the backup\'s reply compared with the digest the primary kept during the copy');
      assert.equal(b2.divergences, 0);
      await until(() => p2.status().ackedSeq === 5, 'the backup acknowledges the backlog and what followed');
    } finally {
      p2.close(); b2.close(); ch2.close();
    }
  });

  it('a snapshot clone that fails hands nothing over: the next clone\'s cut-over sends no stale backlog', async () => {
    p.startBacklog(p.deliveredSeq);
    p.submit(req(20000, 'r1 GET A'));
    assert.deepEqual(p.backlogState, { inputs: 1, full: false });
    p.dropBacklog();
    assert.equal(p.backlogState, undefined);
  });

  it('a backlog past its bound is marked full (the clone fails rather than hand over a short stream)', async () => {
    p.startBacklog(p.deliveredSeq, 2);
    for (let i = 0; i < 3; i++) p.submit(req(20000 + i, `r${i} GET A`));
    assert.deepEqual(p.backlogState, { inputs: 2, full: true });
    p.dropBacklog();
  });

  it('the backup hands an AUTH answer to its clone only after the clone asked, in input order', async () => {
    p.submit(req(20000, 'r1 REG A'));
    p.submit({ kind: 'auth-reply', payload: Buffer.from('AUTHR A OK') });
    p.submit(req(20001, 'r2 GET A'));
    await until(() => gb.inputs.length === 1 && b.status().heldInputs === 2, 'REG delivered, the answer and what follows wait');
    b.onGuestOutput({ kind: 'auth-query', payload: Buffer.from('AUTHQ A') });
    assert.deepEqual(gb.inputs, ['r1 REG A', 'AUTHR A OK', 'r2 GET A']);
    assert.equal(b.authHolds, 1);
  });

  /** A re-clone cut over at input 5 on a new channel, with what the source's guest had open (and had been answered) at the cut. */
  const afterCut = async (authOpen: string[], authAnswered: string | undefined, body: () => Promise<void>) => {
    const ch2 = await channelPair();
    try {
      p.protect(ch2.a, 5);
      b.follow(ch2.b, 5, authOpen, authAnswered);
      p.lastSeq = 5;
      await body();
    } finally {
      ch2.close();
    }
  };

  it('an AUTH question open in the source at the cut is open in the clone: its answer is not held', () => afterCut(['Q'], undefined, async () => {
    p.submit({ kind: 'auth-reply', payload: Buffer.from('AUTHR Q DENY') });
    await until(() => gb.inputs.length === 1, 'delivered at once');
    assert.equal(b.authHolds, 0);
  }));

  const ask = (r: Replicator, sub: string) => r.onGuestOutput({ kind: 'auth-query', payload: Buffer.from(`AUTHQ ${sub}`) });
  const answer = (sub: string, verdict = 'OK'): GuestInput => ({ kind: 'auth-reply', payload: Buffer.from(`AUTHR ${sub} ${verdict}`) });

  it('a late duplicate AUTH answer, while the clone waits for another question, is handed over at once', async () => {
    p.submit(req(20000, 'r1 REG A'));
    await until(() => gb.inputs.length === 1, 'REG A delivered');
    ask(b, 'A');
    p.submit(answer('A'));
    await until(() => gb.inputs.length === 2, 'the answer to A delivered');
    b.onGuestOutput(reply(20000, 'r1 OK REG A 1'));
    p.submit(req(20001, 'r2 REG B'));
    await until(() => gb.inputs.length === 3, 'REG B delivered');
    ask(b, 'B');
    p.submit(answer('A')); // the primary's guest asked A twice (500 ms retransmission): a second answer
    p.submit(answer('B'));
    await until(() => gb.inputs.length === 5, 'the duplicate and the answer to B delivered without the 60 s hold');
    assert.deepEqual(gb.inputs.slice(3), ['AUTHR A OK', 'AUTHR B OK']);
    assert.equal(b.authHolds, 0);
  });

  // The clone was cut while its guest waited on A; the answer is handed over, and the guest's
  // retransmission (sent before it read the answer) arrives after it.
  it('a retransmitted question that crossed its answer opens nothing: the next REG\'s answer waits until the clone asks (CI, 2026-12-06)', () => afterCut(['A'], undefined, async () => {
    p.submit(answer('A'));
    await until(() => gb.inputs.length === 1, 'the answer to A delivered');
    ask(b, 'A'); // the retransmission
    p.submit(req(20001, 'r2 REG B'));
    p.submit(answer('B'));
    await until(() => gb.inputs.length === 2 && b.status().heldInputs === 1, 'REG B delivered, its answer held: no question is open');
    assert.equal(b.authHolds, 1);
    b.onGuestOutput(reply(20000, 'r1 OK REG A 1'));
    ask(b, 'B');
    assert.deepEqual(gb.inputs, ['AUTHR A OK', 'r2 REG B', 'AUTHR B OK']);
  }));

  it('a clone cut after its guest was handed an answer it had not read: the retransmission of that question opens nothing', () => afterCut([], 'A', async () => {
    ask(b, 'A'); // the clone resumed, its timer ran out before it read the answer in its buffer
    p.submit(req(20001, 'r2 REG B'));
    p.submit(answer('B'));
    await until(() => gb.inputs.length === 1 && b.status().heldInputs === 1, 'REG B delivered, its answer held');
    ask(b, 'B');
    assert.deepEqual(gb.inputs, ['r2 REG B', 'AUTHR B OK']);
  }));

  it('a question the clone gave up on (ERR AUTHUNAVAIL) is closed: the next unasked answer is held again', async () => {
    p.submit(req(20000, 'r1 REG A'));
    await until(() => gb.inputs.length === 1, 'REG A delivered');
    ask(b, 'A');
    b.onGuestOutput(reply(20000, 'r1 ERR AUTHUNAVAIL A'));
    p.submit(req(20001, 'r2 REG B'));
    p.submit(answer('B'));
    await until(() => gb.inputs.length === 2 && b.status().heldInputs === 1, 'REG B delivered, its answer held');
    assert.equal(b.authHolds, 1);
    ask(b, 'B');
    assert.deepEqual(gb.inputs, ['r1 REG A', 'r2 REG B', 'AUTHR B OK']);
  });

  it('guest upgrade: the replay gives the new guest the pending REG\'s answer and none of those the old guest read', async () => {
    const client = { address: '192.0.2.100', port: 4000 };
    p.submit(req(20000, 'r1 REG A')); // seq 1
    await until(() => gb.inputs.length === 1, 'REG A delivered');
    ask(b, 'A');
    p.submit(req(20001, 'r2 REG P')); // seq 2: waits in the guest behind REG A
    p.submit(answer('A')); // seq 3: read by the old guest, which registers A and asks P
    await until(() => gb.inputs.length === 3, 'answer A delivered');
    b.onGuestOutput(reply(20000, 'r1 OK REG A 1'));
    ask(b, 'P');
    p.submit(answer('P')); // seq 4: delivered, but SAVE STOP comes first: the old guest never reads it
    await until(() => gb.inputs.length === 4, 'answer P delivered');
    b.pauseDelivery();
    p.submit(req(20002, 'r3 REG C')); // seq 5, 6: arrive during the upgrade
    p.submit(answer('C'));
    await until(() => b.lastSeq === 6, 'inputs during the upgrade logged');
    // The old guest saved 1 request (REG P pending): the replay starts at REG P (seq 2).
    gb.inputs = [];
    const replayed = b.restartDelivery(2, [
      { seq: 2, input: req(20001, 'r2 REG P'), client },
      { seq: 3, input: answer('A') },
      { seq: 4, input: answer('P') },
    ]);
    assert.equal(replayed, 2, 'REG P and its answer; not the answer to A');
    assert.deepEqual(gb.inputs, ['r2 REG P'], 'the answer waits for the new guest to ask');
    ask(b, 'P');
    b.onGuestOutput(reply(20001, 'r2 OK REG P 2'));
    ask(b, 'C');
    assert.deepEqual(gb.inputs, ['r2 REG P', 'AUTHR P OK', 'r3 REG C', 'AUTHR C OK']);
    assert.equal(b.deliveredSeq, 6);
  });

  it('a restored guest gets its logged AUTH answers after asking, and new inputs only after the replay', async () => {
    const g = new RecordingGuest();
    const r = new Replicator({ guest: g, log, authHoldMs: 60000 });
    try {
      r.becomePrimary();
      const client = { address: '192.0.2.100', port: 4000 };
      r.replay(10, [
        { seq: 11, input: req(20000, 'r1 REG A'), client },
        { seq: 12, input: { kind: 'auth-reply', payload: Buffer.from('AUTHR A OK') } },
        { seq: 13, input: req(20000, 'r2 GET A'), client },
      ]);
      r.submit(req(20001, 'n1 STATS'));
      assert.deepEqual(g.inputs, ['r1 REG A'], 'the answer waits for the question; the rest waits behind it');
      assert.equal(r.queuedLocally, 3);
      r.onGuestOutput({ kind: 'auth-query', payload: Buffer.from('AUTHQ A') });
      assert.deepEqual(g.inputs, ['r1 REG A', 'AUTHR A OK', 'r2 GET A', 'n1 STATS']);
      assert.equal(r.lastSeq, 14);
      // Answers this primary receives itself are never held, even unasked.
      r.submit({ kind: 'auth-reply', payload: Buffer.from('AUTHR Z OK') });
      assert.equal(g.inputs.at(-1), 'AUTHR Z OK');
    } finally {
      r.close();
    }
  });
});

describe('Replicator: replies withheld until the primary may serve alone (ha.manager pacemaker)', () => {
  let gp: RecordingGuest, gb: RecordingGuest, out: RecordingOut, p: Replicator, b: Replicator, ch: Awaited<ReturnType<typeof channelPair>>;
  /** What serveAlone answers: undefined serves alone; a string is why not yet. */
  let verdict: string | undefined;
  let asked: number[];
  let events: string[];
  beforeEach(async () => {
    verdict = 'corosync still counts sim-b a member';
    asked = [];
    events = [];
    ({ gp, gb, out, p, b, ch } = await protectedPair({ maxQueuedInputs: 4, serveAlone: (waited) => { asked.push(waited); return verdict; } }));
    p.on('withheld', (r, w) => events.push(`withheld: ${r} / ${w}`));
    p.on('unprotected', (r) => events.push(`unprotected: ${r}`));
  });
  afterEach(() => { p.close(); b.close(); ch.close(); });

  /** The backup is lost mid-stream: r1 acknowledged and released, r2 never reaches it; the channel closes. */
  const loseBackup = async () => {
    p.submit(req(20000, 'r1 REG A'));
    p.onGuestOutput(reply(20000, 'r1 OK REG A 1'));
    await until(() => out.released.length === 1, 'r1 released after its ACK');
    ch.b.removeAllListeners('message');
    ch.b.close();
    await until(() => !p.protectedNow, 'protection ends when the channel closes');
    p.submit(req(20001, 'r2 REG B'));
    p.onGuestOutput(reply(20001, 'r2 OK REG B 2'));
  };

  it('protection ends but serveAlone says not yet: no reply the backup may lack is released, whatever the wait; its yes releases them in order', async () => {
    await loseBackup();
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(out.released, ['r1 OK REG A 1'], 'r2\'s reply withheld: the backup never had r2');
    assert.equal(p.withholding, true);
    assert.equal(p.status().withheld?.waiting, 'corosync still counts sim-b a member');
    assert.match(events[0]!, /^withheld: replication channel closed \/ corosync still counts/);
    assert.ok(asked.length > 3 && asked[0] === 0 && asked.at(-1)! >= 50, `asked again while waiting, with the time waited (${asked.slice(0, 3).join()}…${asked.at(-1)})`);
    verdict = undefined;
    await until(() => out.released.length === 2, 'released once serveAlone says yes');
    assert.deepEqual(out.released, ['r1 OK REG A 1', 'r2 OK REG B 2']);
    assert.equal(p.withholding, false);
    assert.equal(p.status().withheld, null);
    assert.match(events.at(-1)!, /^unprotected: replication channel closed; withheld \d+ ms until this board could serve alone$/);
    p.submit(req(20002, 'r3 GET A'));
    p.onGuestOutput(reply(20002, 'r3 OK GET A'));
    assert.equal(out.released.at(-1), 'r3 OK GET A', 'serving alone from then on: nothing waits');
  });

  it('a fenced backup (partnerDown) ends the wait at once; stepping down drops the withheld replies instead', async () => {
    await loseBackup();
    p.unprotect('the backup sim-b was fenced (off)', { partnerDown: true });
    assert.deepEqual(out.released, ['r1 OK REG A 1', 'r2 OK REG B 2']);
    assert.match(events.at(-1)!, /^unprotected: the backup sim-b was fenced/);

    // Again, and this time the board steps down (no quorum: FAULT) while withholding.
    p.close(); ch.close();
    out.released = [];
    p = new Replicator({ guest: gp, log, serveAlone: () => 'no quorum' });
    p.setOutput(out);
    p.becomePrimary();
    ch = await channelPair();
    p.protect(ch.a, 0);
    ch.b.close();
    await until(() => p.withholding, 'withholding');
    p.submit(req(20003, 'r4 REG C'));
    p.onGuestOutput(reply(20003, 'r4 OK REG C 3'));
    p.becomeBackup();
    await new Promise((r) => setTimeout(r, 30));
    assert.deepEqual(out.released, [], 'a withheld reply never reaches the client once the board stepped down');
    assert.equal(p.withholding, false);
  });

  it('a clone that protects the primary again covers the withheld replies (their inputs are in the clone): released at the cut-over', async () => {
    await loseBackup();
    const ch2 = await channelPair();
    try {
      p.protect(ch2.a, p.deliveredSeq);
      assert.equal(p.withholding, false);
      assert.equal(p.protectedNow, true);
      assert.deepEqual(out.released, ['r1 OK REG A 1', 'r2 OK REG B 2']);
    } finally {
      ch2.close();
    }
  });

  it('while withholding, client requests are capped like a queue (maxQueuedInputs): the rest is dropped and counted, never answered unprotected', async () => {
    await loseBackup();
    for (let i = 0; i < 6; i++) {
      p.submit(req(20010 + i, `w${i} GET A`));
      if (p.status().drops.queueFull === 0) p.onGuestOutput(reply(20010 + i, `w${i} OK GET A`));
    }
    assert.equal(p.status().heldReplies, 4, 'four withheld replies: the cap');
    assert.ok(p.status().drops.queueFull >= 1, 'requests past the cap are dropped');
    assert.deepEqual(out.released, ['r1 OK REG A 1']);
  });
});

describe('AUTH question and answer parsing (one parser for the guest port and connection tracking)', () => {
  it('takes the subscriber of well-formed questions and answers only', () => {
    const b = (s: string) => Buffer.from(s, 'latin1');
    assert.equal(authSubject('question', b('AUTHQ alice')), 'alice');
    assert.equal(authSubject('question', b('AUTHQ a.b+c_d-9\n')), 'a.b+c_d-9');
    assert.equal(authSubject('answer', b('AUTHR alice OK')), 'alice');
    assert.equal(authSubject('answer', b('AUTHR bob DENY\n')), 'bob');
    assert.equal(authSubject('question', b('AUTHR alice OK')), undefined, 'an answer is not a question');
    assert.equal(authSubject('answer', b('AUTHQ alice')), undefined, 'a question is not an answer');
    assert.equal(authSubject('answer', b('AUTHR alice')), undefined, 'an answer carries a verdict');
    assert.equal(authSubject('question', b(`AUTHQ ${'x'.repeat(33)}`)), undefined, 'names are at most 32 bytes');
    assert.equal(authSubject('question', b('AUTHQ bad/name')), undefined);
    assert.equal(authSubject('question', b('AUTHQ ')), undefined);
    assert.equal(registrationSubject('request', b('r1 REG alice')), 'alice');
    assert.equal(registrationSubject('request', b('r1 GET alice')), undefined, 'only a REG asks AUTH');
    assert.equal(registrationSubject('request', b('r1 REG alice bob')), undefined, 'exactly one subscriber');
    assert.equal(registrationSubject('outcome', b('r1 OK REG alice 3')), 'alice');
    assert.equal(registrationSubject('outcome', b('r1 ERR DENIED alice')), 'alice');
    assert.equal(registrationSubject('outcome', b('r1 ERR AUTHUNAVAIL alice\n')), 'alice');
    assert.equal(registrationSubject('outcome', b('r1 OK GET alice calls=0 state=idle')), undefined);
  });
});

describe('inputsAfterSave (what a guest booted on a saved state is replayed)', () => {
  const r = (seq: number, text: string) => ({ seq, input: { kind: 'request' as const, clientPort: 20000, payload: Buffer.from(text) } });
  const a = (seq: number, text: string) => ({ seq, input: { kind: 'auth-reply' as const, payload: Buffer.from(text) } });
  const seqs = (l: Array<{ seq: number }>) => l.map((s) => s.seq);
  it('keeps every request, the last delivered answer of the pending REG, and everything after the pause', () => {
    const logged = [r(10, 'x1 REG P'), a(11, 'AUTHR A OK'), r(12, 'x2 GET A'), a(13, 'AUTHR P OK'), a(14, 'AUTHR P OK'), a(15, 'AUTHR B OK'), a(16, 'AUTHR A OK'), r(17, 'x3 REG C')];
    assert.deepEqual(seqs(inputsAfterSave(logged, 15)), [10, 12, 14, 16, 17]);
  });
  it('without a pending REG no delivered answer is replayed', () => {
    assert.deepEqual(seqs(inputsAfterSave([r(10, 'x1 GET P'), a(11, 'AUTHR P OK'), r(12, 'x2 STATS')], 12)), [10, 12]);
    assert.deepEqual(inputsAfterSave([], 12), []);
  });
});

describe('GuestPort management commands', () => {
  it('a late answer to a command that timed out is not taken as the answer to the next one', async () => {
    const link = new FakeGuestNic();
    const port = new GuestPort(link, { service: 5000, management: 5002, auth: 7000, guestAuth: 5001 });
    await assert.rejects(port.management('PING', 20), /within 20 ms/);
    const second = port.management('PING', 2000);
    link.answer(0, 'OK PING 1.0.0 seq=1'); // late, for the first
    link.answer(1, 'OK PING 1.0.0 seq=7');
    assert.equal(await second, 'OK PING 1.0.0 seq=7');
    assert.notEqual(link.sent[0]!.srcPort, link.sent[1]!.srcPort);
  });
});

describe('GuestPort: the AUTH questions the guest has open', () => {
  it('a retransmitted question that arrives after its answer was handed over is closed by the REG\'s outcome, not left open for good', () => {
    const ports = { service: 5000, management: 5002, auth: 7000, guestAuth: 5001 };
    const link = new FakeGuestNic();
    const port = new GuestPort(link, ports);
    link.fromGuest(ports.guestAuth, ports.auth, 'AUTHQ alice');
    assert.deepEqual([...port.authOutstanding], ['alice']);
    port.deliver({ kind: 'auth-reply', payload: Buffer.from('AUTHR alice OK') });
    assert.equal(port.authAnswered, 'alice');
    link.fromGuest(ports.guestAuth, ports.auth, 'AUTHQ alice'); // sent 500 ms after the first, before the guest read the answer
    assert.deepEqual([...port.authOutstanding], [], 'a retransmission that crossed the answer opens nothing');
    link.fromGuest(ports.service, 20000, 'r1 OK REG alice 1');
    assert.equal(port.authAnswered, undefined, 'the REG\'s outcome ends it');
    // The next question about alice (another REG) is a question again.
    link.fromGuest(ports.guestAuth, ports.auth, 'AUTHQ alice');
    assert.deepEqual([...port.authOutstanding], ['alice']);
    link.fromGuest(ports.service, 20000, 'r1b OK REG alice 1');
    assert.deepEqual([...port.authOutstanding], [], 'closed by the outcome');
    // An outcome for another subscriber, or an ordinary reply, closes nothing.
    link.fromGuest(ports.guestAuth, ports.auth, 'AUTHQ bob');
    link.fromGuest(ports.service, 20000, 'r2 OK GET alice 0');
    link.fromGuest(ports.service, 20000, 'r3 ERR AUTHUNAVAIL carol');
    assert.deepEqual([...port.authOutstanding], ['bob']);
    link.fromGuest(ports.service, 20000, 'r4 ERR AUTHUNAVAIL bob');
    assert.deepEqual([...port.authOutstanding], []);
    // One question at a time: a question about another subscriber ends the one before.
    link.fromGuest(ports.guestAuth, ports.auth, 'AUTHQ dave');
    link.fromGuest(ports.guestAuth, ports.auth, 'AUTHQ erin');
    assert.deepEqual([...port.authOutstanding], ['erin']);
  });

  it('a restored copy handed an answer before its checkpoint: the retransmission of that question opens nothing; the next one does', () => {
    const g = new RecordingGuest();
    const r = new Replicator({ guest: g, log, clock: new FakeClock(), authHoldMs: 2000 });
    r.becomePrimary();
    r.replay(0, [], [], 'alice'); // the checkpoint's authAnswered
    r.onGuestOutput({ kind: 'auth-query', payload: Buffer.from('AUTHQ alice') });
    assert.deepEqual(r.openQuestions, [], 'a retransmission that crossed the answer');
    r.onGuestOutput(reply(20000, 'r1 OK REG alice 1'));
    assert.equal(r.answeredQuestion, undefined, 'ended by the REG\'s outcome');
    r.onGuestOutput({ kind: 'auth-query', payload: Buffer.from('AUTHQ alice') });
    assert.deepEqual(r.openQuestions, ['alice'], 'a new REG of alice asks again');
    r.close();
  });

  it('connection tracking keeps one question open: a stale one never makes it hand over an answer before the guest asks', () => {
    const clock = new FakeClock();
    const g = new RecordingGuest();
    const r = new Replicator({ guest: g, log, clock, authHoldMs: 2000 });
    r.becomePrimary();
    r.replay(0, [], ['stale']); // a question the guest is not blocked on any more
    r.onGuestOutput({ kind: 'auth-query', payload: Buffer.from('AUTHQ alice') });
    assert.deepEqual(r.openQuestions, ['alice']);
    r.close();
  });
});

describe('delivery flow control (the guest is never handed more than it can buffer)', () => {
  const ports = { service: 5000, management: 5002, auth: 7000, guestAuth: 5001 };
  /** A guest that processes requests only when told to, and answers PING with its count. */
  class SlowGuest extends EventEmitter {
    requests = 0;
    processed = 0;
    sent: string[] = [];
    send(srcPort: number, dstPort: number, payload: Buffer): boolean {
      if (dstPort === ports.service) this.requests++;
      else if (dstPort === ports.management) setImmediate(() => this.emit('datagram', { srcPort: dstPort, dstPort: srcPort, payload: Buffer.from(`OK PING 1.0.0 seq=${1000 + this.processed}`) }));
      else this.sent.push(payload.toString());
      return true;
    }
  }
  const tick = () => new Promise((r) => setTimeout(r, 20));
  /** A SlowGuest behind a GuestPort whose count starts at `base`, and a replicator delivering to it. */
  const flowRig = (base: number) => {
    const guest = new SlowGuest();
    const port = new GuestPort(guest, ports);
    port.resetCount(base);
    return { guest, port, r: new Replicator({ guest: port, log }) };
  };

  it('hands a replayed log over a window at a time, in order, as the guest works through it', async () => {
    const { guest, port, r } = flowRig(1000);
    const n = GUEST_WINDOW * 3;
    const inputs = Array.from({ length: n }, (_, i) => ({ seq: i + 1, input: { kind: 'request' as const, clientPort: 20000, payload: Buffer.from(`q${i} GET a`) } }));
    r.replay(0, inputs);
    await tick();
    assert.equal(guest.requests, GUEST_WINDOW, 'one window, then it waits');
    assert.equal(r.queuedLocally, n - GUEST_WINDOW);
    guest.processed = GUEST_WINDOW; // the guest works through it
    await tick();
    assert.equal(guest.requests, GUEST_WINDOW * 2);
    guest.processed = GUEST_WINDOW * 3;
    await tick();
    assert.equal(guest.requests, n, 'the whole log, once the guest keeps up');
    assert.equal(r.deliveredSeq, n);
    r.close();
  });

  it('does not wait on a guest blocked on an AUTH question (its answer is further down the queue)', async () => {
    const { guest, port, r } = flowRig(0);
    const reqs = Array.from({ length: GUEST_WINDOW + 10 }, (_, i) => ({ seq: i + 1, input: { kind: 'request' as const, clientPort: 20000, payload: Buffer.from(`q${i} GET a`) } }));
    const answer = { seq: reqs.length + 1, input: { kind: 'auth-reply' as const, payload: Buffer.from('AUTHR alice OK') } };
    // The guest asked about alice (a REG it processed first) and processes nothing until answered.
    r.replay(0, [...reqs, answer], ['alice']);
    await tick();
    assert.equal(guest.requests, reqs.length, 'requests keep flowing while the guest waits for AUTH');
    assert.deepEqual(guest.sent, ['AUTHR alice OK'], 'and the answer reaches it, in order');
    r.close();
  });

  it('a count that runs ahead of the guest by a window (inputs it never got) does not stall delivery forever: once the guest is idle for IDLE_WRITE_OFF_MS the rest flows, and the shortfall stays visible', async () => {
    const guest = new SlowGuest();
    const port = new GuestPort(guest, ports);
    // The controller believes the guest holds 300 requests it never received (counted, lost on the way).
    port.resetCount(1000 + 300);
    const r = new Replicator({ guest: port, log });
    const n = GUEST_WINDOW * 2;
    const inputs = Array.from({ length: n }, (_, i) => ({ seq: i + 1, input: { kind: 'request' as const, clientPort: 20000, payload: Buffer.from(`q${i} GET a`) } }));
    r.replay(0, inputs);
    const work = setInterval(() => { guest.processed = guest.requests; }, 5); // the guest keeps up with what it gets
    try {
      await tick();
      assert.ok(guest.requests < n, 'waiting while the guest may still be working');
      for (let i = 0; i < 150 && guest.requests < n; i++) await tick();
      assert.equal(guest.requests, n, 'the whole log reached the guest');
      assert.ok(port.writtenOff >= GUEST_WINDOW, `written off: ${port.writtenOff}`);
      guest.processed = guest.requests;
      assert.equal(port.expectedSeq! - (1000 + guest.processed), 300, 'the expected count still shows the 300 the guest never had (the loss watch reports them)');
    } finally {
      clearInterval(work);
      r.close();
    }
  });

  it('a guest that keeps asking AUTH is blocked, not idle: nothing is written off while it asks, however its question is tracked', async () => {
    const { guest, port, r } = flowRig(1000);
    // It waits on a question this side took for answered (its answer lost): every AUTHQ is a "retransmission".
    port.authAnswered = 'alice';
    const n = GUEST_WINDOW * 2;
    r.replay(0, Array.from({ length: n }, (_, i) => ({ seq: i + 1, input: { kind: 'request' as const, clientPort: 20000, payload: Buffer.from(`q${i} GET a`) } })));
    const ask = () => guest.emit('datagram', { srcPort: ports.guestAuth, dstPort: ports.auth, payload: Buffer.from('AUTHQ alice') });
    ask();
    const asking = setInterval(ask, IDLE_WRITE_OFF_MS / 4);
    try {
      for (let i = 0; i < Math.ceil((IDLE_WRITE_OFF_MS * 2) / 20); i++) await tick();
      assert.equal(port.writtenOff, 0, 'nothing written off while the guest asks');
      assert.equal(guest.requests, GUEST_WINDOW, 'no more than one window handed to the blocked guest');
      clearInterval(asking); // it gives up its question, and (here) still processes nothing: idle now
      for (let i = 0; i < Math.ceil((IDLE_WRITE_OFF_MS * 3) / 20) && port.writtenOff === 0; i++) await tick();
      assert.equal(port.writtenOff, GUEST_WINDOW, 'idle without questions for IDLE_WRITE_OFF_MS: the window is written off as before');
    } finally {
      clearInterval(asking);
      r.close();
    }
  });

  it('a guest blocked on an AUTH question is handed at most what it can buffer, never a whole replay at once', async () => {
    const { guest, port, r } = flowRig(1000); // the SlowGuest's count starts at 1000
    const reqs = Array.from({ length: GUEST_BLOCKED_LIMIT + 300 }, (_, i) => ({ seq: i + 1, input: { kind: 'request' as const, clientPort: 20000, payload: Buffer.from(`q${i} GET a`) } }));
    // The log holds no answer to its question (the primary died before it came).
    r.replay(0, reqs, ['alice']);
    await tick();
    assert.equal(guest.requests, GUEST_BLOCKED_LIMIT, 'up to the bound, then it waits (the guest gives up its question after 5 s)');
    assert.deepEqual(guest.sent, []);
    r.close();
  });

  it('a replayed AUTH answer further down than a blocked guest may be handed goes over ahead of the requests before it, once; the requests stay in order (no deadlock)', async () => {
    const { guest, port, r } = flowRig(1000);
    const reqs = Array.from({ length: GUEST_BLOCKED_LIMIT + 300 }, (_, i) => ({ seq: i + 1, input: { kind: 'request' as const, clientPort: 20000, payload: Buffer.from(`q${i} GET a`) } }));
    const answer = { seq: reqs.length + 1, input: { kind: 'auth-reply' as const, payload: Buffer.from('AUTHR alice OK') } };
    const after = { seq: reqs.length + 2, input: { kind: 'request' as const, clientPort: 20000, payload: Buffer.from('z1 GET a') } };
    r.replay(0, [...reqs, answer, after], ['alice']);
    await tick();
    assert.deepEqual(guest.sent, ['AUTHR alice OK'], 'the answer it waits for reached it although requests queued before it could not');
    assert.equal(guest.requests, GUEST_BLOCKED_LIMIT, 'no request beyond the bound');
    assert.equal(r.deliveredSeq, GUEST_BLOCKED_LIMIT, 'what was handed in order is unchanged');
    assert.equal(r.status().answersAhead, 1);
    guest.processed = guest.requests; // unblocked, it works through what it holds
    for (let i = 0; i < 100 && guest.requests < reqs.length + 1; i++) { guest.processed = guest.requests; await tick(); }
    assert.equal(guest.requests, reqs.length + 1, 'every request, the one after the answer too');
    assert.deepEqual(guest.sent, ['AUTHR alice OK'], 'the answer is not handed twice');
    assert.equal(r.deliveredSeq, after.seq);
    assert.equal(r.queuedLocally, 0);
    r.close();
  });

  it('a backup never hands an answer ahead (the primary\'s order is the stream it must follow)', async () => {
    const { guest, port, r } = flowRig(1000);
    r.becomeBackup();
    r.replay(0, [...Array.from({ length: GUEST_BLOCKED_LIMIT + 10 }, (_, i) => ({ seq: i + 1, input: { kind: 'request' as const, clientPort: 20000, payload: Buffer.from(`q${i} GET a`) } })),
      { seq: GUEST_BLOCKED_LIMIT + 11, input: { kind: 'auth-reply' as const, payload: Buffer.from('AUTHR alice OK') } }], ['alice']);
    await tick();
    assert.deepEqual(guest.sent, []);
    assert.equal(r.status().answersAhead, 0);
    r.close();
  });

  it('an AUTH answer waits while the guest still works through the requests ahead of its REG, however long that takes, and goes over when it asks', async () => {
    const guest = new SlowGuest();
    const port = new GuestPort(guest, ports);
    port.resetCount(1000);
    const r = new Replicator({ guest: port, log, authHoldMs: 100 });
    const reqs = Array.from({ length: 50 }, (_, i) => ({ seq: i + 1, input: { kind: 'request' as const, clientPort: 20000, payload: Buffer.from(i === 49 ? 'r49 REG alice' : `q${i} GET a`) } }));
    r.replay(0, [...reqs, { seq: 51, input: { kind: 'auth-reply' as const, payload: Buffer.from('AUTHR alice OK') } }]);
    // The guest works through them slowly: 2 every 20 ms, 500 ms for the 50 (five times authHoldMs).
    const work = setInterval(() => { guest.processed = Math.min(49, guest.processed + 2); }, 20);
    try {
      for (let i = 0; i < 40 && guest.processed < 49; i++) await tick();
      assert.deepEqual(guest.sent, [], 'not handed over while the guest had not reached the REG');
      r.onGuestOutput({ kind: 'auth-query', payload: Buffer.from('AUTHQ alice') });
      assert.deepEqual(guest.sent, ['AUTHR alice OK']);
      assert.equal(r.status().authHolds, 1, 'an answer held while the guest works counts as held, once');
    } finally {
      clearInterval(work);
      r.close();
    }
  });

  it('a guest that reports no count is not flow-controlled', () => {
    const port = new GuestPort(new SlowGuest(), ports);
    port.resetCount(undefined);
    for (let i = 0; i < GUEST_WINDOW * 2; i++) port.deliver({ kind: 'request', clientPort: 20000, payload: Buffer.from('x') });
    assert.equal(port.hasRoom(), true);
  });
});

describe('replication timers on a fake clock (no sleeping)', () => {
  it('the primary gives up on a silent backup at the first protection check after protectionTimeoutMs, not before', async () => {
    const clock = new FakeClock();
    const p = new Replicator({ guest: new RecordingGuest(), log, clock, protectionTimeoutMs: 500, cutoverGraceMs: 0 });
    const out = new RecordingOut();
    p.setOutput(out);
    p.becomePrimary(); // checks every 10 ms from now
    const ch = await channelPair(); // nobody follows on the other end: no ACK ever comes
    const reasons: string[] = [];
    p.on('unprotected', (r) => reasons.push(r));
    try {
      p.protect(ch.a, 0);
      clock.advance(5);
      p.submit(req(20000, 'r1 REG A')); // silence counts from here
      p.onGuestOutput(reply(20000, 'r1 OK REG A 1'));
      clock.advance(300);
      p.submit(req(20001, 'r2 GET A')); // more inputs do not restart the count: the ACK is what is missing
      clock.advance(200); // 500 ms of silence exactly (checked at 495 ms; the timeout is "more than")
      assert.equal(p.protectedNow, true);
      assert.deepEqual(out.released, [], 'the reply still waits for its ACK');
      clock.advance(5); // the next check, 505 ms after the first unacknowledged input
      assert.deepEqual(reasons, ['backup did not acknowledge inputs for 500 ms']);
      assert.equal(p.protectedNow, false);
      assert.deepEqual(out.released, ['r1 OK REG A 1'], 'unprotected: held replies go out');
    } finally {
      p.close();
      ch.close();
    }
  });

  it('just after a cut-over a late backup keeps protection for cutoverGraceMs (its copy is being resumed), then loses it', async () => {
    const clock = new FakeClock();
    const p = new Replicator({ guest: new RecordingGuest(), log, clock, protectionTimeoutMs: 500, cutoverGraceMs: 2000 });
    p.setOutput(new RecordingOut());
    p.becomePrimary();
    const ch = await channelPair(); // no ACK ever comes
    const reasons: string[] = [];
    p.on('unprotected', (r) => reasons.push(r));
    try {
      p.protect(ch.a, 0);
      p.submit(req(20000, 'r1 REG A'));
      clock.advance(1000); // 1 s unacknowledged: beyond the timeout, inside the grace
      assert.equal(p.protectedNow, true, 'still protected inside the grace after the cut-over');
      clock.advance(995);
      assert.deepEqual(reasons, []);
      clock.advance(10); // the grace is over and the silence is older than the timeout
      assert.deepEqual(reasons, ['backup did not acknowledge inputs for 500 ms']);
    } finally {
      p.close();
      ch.close();
    }
  });

  it('a backup that acknowledges keeps the primary protected however long the clock runs', async () => {
    const clock = new FakeClock();
    const p = new Replicator({ guest: new RecordingGuest(), log, clock, protectionTimeoutMs: 500 });
    const b = new Replicator({ guest: new RecordingGuest(), log });
    const ch = await channelPair();
    try {
      p.becomePrimary();
      b.becomeBackup();
      p.protect(ch.a, 0);
      b.follow(ch.b, 0);
      p.submit(req(20000, 'r1 REG A'));
      await until(() => p.status().ackedSeq === 1, 'acknowledged over the channel');
      clock.advance(60000);
      assert.equal(p.protectedNow, true);
      assert.equal(clock.pending, 1, 'only the protection check is armed');
    } finally {
      p.close();
      b.close();
      ch.close();
    }
    assert.equal(clock.pending, 0, 'close() disarms it');
  });

  const authAnswer = (seq: number, text: string) => ({ seq, input: { kind: 'auth-reply' as const, payload: Buffer.from(text) } });
  const request = (seq: number, text: string) => ({ seq, input: req(20000, text) });

  it('an AUTH answer the guest has not asked for is held for exactly authHoldMs, then handed over with what follows', () => {
    const clock = new FakeClock();
    const g = new RecordingGuest();
    const r = new Replicator({ guest: g, log, clock, authHoldMs: 2000 });
    r.replay(0, [authAnswer(1, 'AUTHR alice OK'), request(2, 'r2 GET a')]);
    assert.deepEqual(g.inputs, []);
    clock.advance(1999);
    assert.deepEqual(g.inputs, [], 'still held');
    clock.advance(1);
    assert.deepEqual(g.inputs, ['AUTHR alice OK', 'r2 GET a']);
    assert.equal(r.status().authHolds, 1);
    assert.equal(clock.pending, 0);
    r.close();
  });

  it('promoted to restore a checkpoint (holdDelivery): what was queued never reaches the guest, held AUTH answers included; the replay alone is handed over', () => {
    const clock = new FakeClock();
    const g = new RecordingGuest();
    const r = new Replicator({ guest: g, log, clock, authHoldMs: 2000 });
    // Queued and not delivered (an AUTH answer the old copy never asked for, a request behind it).
    r.replay(0, [authAnswer(1, 'AUTHR alice OK'), request(2, 'r2 REG alice')]);
    r.becomePrimary({ holdDelivery: true });
    clock.advance(5000);
    assert.deepEqual(g.inputs, [], 'nothing handed to the guest being restored');
    r.replay(0, [request(1, 'r1 GET a')]);
    assert.deepEqual(g.inputs, ['r1 GET a']);
    r.close();
  });

  it('a checkpoint that ends after a restore began (its copy stopped under it) does not resume delivery: the queue for the lost copy never reaches the restored one', () => {
    const clock = new FakeClock();
    const g = new RecordingGuest();
    const r = new Replicator({ guest: g, log, clock, authHoldMs: 2000 });
    r.replay(0, [authAnswer(1, 'AUTHR alice OK'), request(2, 'r2 REG hangGamma')]); // queued for the copy that is lost
    const checkpoint = r.pauseDelivery();
    r.becomePrimary({ holdDelivery: true }); // promoted: the checkpoint is restored
    r.resumeDelivery(checkpoint); // the checkpoint fails (its copy was stopped) and ends its pause
    clock.advance(5000);
    assert.deepEqual(g.inputs, [], 'nothing handed to the guest being restored');
    r.replay(0, [request(1, 'r1 GET a')]);
    assert.deepEqual(g.inputs, ['r1 GET a']);
    const again = r.pauseDelivery();
    r.resumeDelivery(again); // a pause nobody replaced ends as before
    r.replay(1, [request(2, 'r2 GET b')]);
    assert.deepEqual(g.inputs, ['r1 GET a', 'r2 GET b']);
    r.close();
  });

  it('a replay starts its own AUTH hold: one left over from the queue before does not hand the replay\'s first answer over unasked', () => {
    const clock = new FakeClock();
    const g = new RecordingGuest();
    const r = new Replicator({ guest: g, log, clock, authHoldMs: 2000 });
    r.replay(0, [authAnswer(1, 'AUTHR old OK')]); // held: its copy never asks
    clock.advance(1900);
    r.becomePrimary({ holdDelivery: true });
    clock.advance(500); // the old hold would have run out by now
    r.replay(0, [request(1, 'r1 REG alice'), authAnswer(2, 'AUTHR alice OK')]);
    assert.deepEqual(g.inputs, ['r1 REG alice'], 'the answer waits for the restored guest to ask');
    clock.advance(1999);
    assert.deepEqual(g.inputs, ['r1 REG alice']);
    r.close();
  });

  it('the guest asking ends the hold at once and disarms its timer', () => {
    const clock = new FakeClock();
    const g = new RecordingGuest();
    const r = new Replicator({ guest: g, log, clock, authHoldMs: 2000 });
    r.replay(0, [authAnswer(1, 'AUTHR alice OK')]);
    clock.advance(700);
    assert.equal(clock.pending, 1);
    r.onGuestOutput({ kind: 'auth-query', payload: Buffer.from('AUTHQ alice') });
    assert.deepEqual(g.inputs, ['AUTHR alice OK']);
    assert.equal(clock.pending, 0);
    r.close();
  });
  const ask = (r: Replicator, sub: string) => r.onGuestOutput({ kind: 'auth-query', payload: Buffer.from(`AUTHQ ${sub}`) });

  it('an answer handed before the guest asked (which the guest drops) is handed again when it asks, once per AUTH_REHAND_MS, until its REG\'s outcome', () => {
    const clock = new FakeClock();
    const g = new RecordingGuest();
    const r = new Replicator({ guest: g, log, clock, authHoldMs: 2000 });
    r.setOutput(new RecordingOut());
    r.becomePrimary({ holdDelivery: true }); // promoted with a checkpoint to restore: alone, replaying
    r.replay(0, [authAnswer(1, 'AUTHR alice OK'), request(2, 'r2 REG alice')]);
    clock.advance(2000); // never asked within the hold: handed over anyway, ahead of the REG
    assert.deepEqual(g.inputs, ['AUTHR alice OK', 'r2 REG alice']);
    clock.advance(100);
    ask(r, 'alice'); // the guest reaches the REG, empties its AUTH socket and asks
    assert.deepEqual(g.inputs.slice(2), [], `a question ${100} ms after the answer may have crossed it: not handed yet`);
    clock.advance(AUTH_REHAND_MS);
    ask(r, 'alice'); // its retransmission: it has not got the answer
    assert.deepEqual(g.inputs.slice(2), ['AUTHR alice OK'], 'the same answer handed again');
    ask(r, 'alice'); // a retransmission that crossed the answer handed again
    assert.equal(g.inputs.length, 3, 'not handed twice within AUTH_REHAND_MS');
    assert.equal(r.status().answersRehanded, 1);
    r.onGuestOutput(reply(20000, 'r2 OK REG alice 1'));
    clock.advance(5000);
    ask(r, 'alice'); // a later REG of alice asks afresh: its answer comes in the stream, not the old one
    assert.equal(g.inputs.length, 3, 'after the outcome the old answer is never handed again');
    assert.deepEqual(r.status().delivery.authOpen, ['alice'], 'the new question is open');
    r.close();
  });

  it('a copy restored with an answer handed but not in its image gets it again when it asks (the checkpoint keeps its bytes)', () => {
    const clock = new FakeClock();
    const g = new RecordingGuest();
    const r = new Replicator({ guest: g, log, clock, authHoldMs: 2000 });
    r.setOutput(new RecordingOut());
    r.becomePrimary({ holdDelivery: true });
    r.replay(10, [request(11, 'r11 GET a')], [], 'bob', Buffer.from('AUTHR bob DENY'));
    assert.deepEqual(g.inputs, ['r11 GET a']);
    ask(r, 'bob');
    assert.deepEqual(g.inputs, ['r11 GET a', 'AUTHR bob DENY'], 'the saved answer, at once');
    // Without the bytes (an older checkpoint) the question is a retransmission as before: nothing to hand.
    const g2 = new RecordingGuest();
    const r2 = new Replicator({ guest: g2, log, clock, authHoldMs: 2000 });
    r2.setOutput(new RecordingOut());
    r2.becomePrimary({ holdDelivery: true });
    r2.replay(10, [], [], 'bob');
    ask(r2, 'bob');
    assert.deepEqual(g2.inputs, []);
    // Bytes that answer another subscriber are not taken for bob's.
    const g3 = new RecordingGuest();
    const r3 = new Replicator({ guest: g3, log, clock, authHoldMs: 2000 });
    r3.setOutput(new RecordingOut());
    r3.becomePrimary({ holdDelivery: true });
    r3.replay(10, [], [], 'bob', Buffer.from('AUTHR carol OK'));
    ask(r3, 'bob');
    assert.deepEqual(g3.inputs, []);
    r.close(); r2.close(); r3.close();
  });

  it('a protected primary never hands an answer again (its guest\'s question goes to the AUTH service)', async () => {
    const clock = new FakeClock();
    const { gp, p: pr, b: bk, ch: c } = await protectedPair({ clock });
    try {
      pr.submit(req(20000, 'r1 REG alice'));
      ask(pr, 'alice');
      pr.submit({ kind: 'auth-reply', payload: Buffer.from('AUTHR alice OK') });
      assert.deepEqual(gp.inputs, ['r1 REG alice', 'AUTHR alice OK']);
      clock.advance(1000);
      ask(pr, 'alice');
      assert.deepEqual(gp.inputs, ['r1 REG alice', 'AUTHR alice OK']);
      assert.equal(pr.status().answersRehanded, 0);
    } finally {
      pr.close(); bk.close(); c.close();
    }
  });
});

describe('the backup\'s witness of the primary\'s guest, in the replicator (fake clock on the backup)', () => {
  /** A primary and a backup following it on a real channel pair, the backup on a fake clock; its verdicts collected. */
  async function witnessPair(backupOptions: { guestHangMs: number; cutoverGraceMs?: number; guestHangRepeatMs?: number }) {
    const clock = new FakeClock();
    const p = new Replicator({ guest: new RecordingGuest(), log });
    const gb = new RecordingGuest();
    const b = new Replicator({ guest: gb, log, clock, ...backupOptions });
    const ch = await channelPair();
    const silent: Array<{ silentMs: number; replies: number; report?: number; quiet?: boolean }> = [];
    b.on('primary-guest-silent', (v) => silent.push(v));
    p.setOutput(new RecordingOut());
    p.becomePrimary();
    b.becomeBackup();
    p.protect(ch.a, 0);
    b.follow(ch.b, 0);
    const close = () => { p.close(); b.close(); ch.close(); };
    return { clock, p, gb, b, silent, close };
  }
  const settleImmediates = () => new Promise((r) => setImmediate(r));

  it('reports the primary\'s guest silent guestHangMs after its copy answered a request of the stream, not while the primary\'s digests come', async () => {
    const { clock, p, gb, b, silent, close } = await witnessPair({ guestHangMs: 200 });
    try {
      clock.advance(2000); // past the cut-over's grace (its own test below)
      // Healthy: both copies answer; the primary's digest comes after the backup's reply.
      p.submit(req(20000, 'r1 GET A'));
      await until(() => gb.inputs.length === 1, 'the backup delivered r1');
      b.onGuestOutput(reply(20000, 'r1 ERR UNKNOWN A'));
      clock.advance(150);
      p.onGuestOutput(reply(20000, 'r1 ERR UNKNOWN A'));
      await until(() => b.status().digestsCompared === 1, 'the digest arrived');
      clock.advance(1000);
      await settleImmediates();
      assert.equal(silent.length, 0);
      // The primary's guest stops answering; the backup's copy answers r2 and r3.
      p.submit(req(20000, 'r2 GET B'));
      p.submit(req(20000, 'r3 GET C'));
      await until(() => gb.inputs.length === 3, 'the backup delivered r2, r3');
      b.onGuestOutput(reply(20000, 'r2 ERR UNKNOWN B'));
      b.onGuestOutput(reply(20000, 'r3 ERR UNKNOWN C'));
      clock.advance(150);
      await settleImmediates();
      assert.equal(silent.length, 0);
      clock.advance(50);
      await settleImmediates();
      assert.equal(silent.length, 1);
      assert.equal(silent[0]!.replies, 2);
      assert.ok(silent[0]!.silentMs >= 200);
      assert.equal(b.status().witness?.verdicts, 1);
      assert.equal(b.status().witness?.compared, 1);
      // Stepping up (promoted) stops the witness.
      b.becomePrimary();
      assert.equal(b.status().witness, undefined);
    } finally {
      close();
    }
    assert.equal(clock.pending, 0, 'close() disarms the witness check');
  });

  it('takes no verdict within cutoverGraceMs of the cut-over (a primary resumed after the copy works through the held inputs first), nor during a checkpoint on the backup and that long after it', async () => {
    const { clock, p, gb, b, silent, close } = await witnessPair({ guestHangMs: 200, cutoverGraceMs: 1000 });
    try {
      p.submit(req(20000, 'g1 GET A'));
      await until(() => gb.inputs.length === 1, 'the backup delivered g1');
      b.onGuestOutput(reply(20000, 'g1 ERR UNKNOWN A'));
      clock.advance(600);
      await settleImmediates();
      assert.equal(silent.length, 0, 'no verdict 600 ms after the cut-over (grace 1000 ms), though the bound (200 ms) has passed');
      // Still silent when the grace ends: the verdict comes then.
      clock.advance(400);
      await settleImmediates();
      assert.equal(silent.length, 1);
      assert.ok(silent[0]!.silentMs >= 1000);
      // The primary's guest answers again (its digest ends that episode). Then a checkpoint on this
      // board (delivery paused): no verdict however long, and none for the grace after it.
      p.onGuestOutput(reply(20000, 'g1 ERR UNKNOWN A'));
      await until(() => b.status().digestsCompared === 1, 'the digest of g1 arrived');
      p.submit(req(20000, 'g2 GET B'));
      await until(() => gb.inputs.length === 2, 'the backup delivered g2');
      b.onGuestOutput(reply(20000, 'g2 ERR UNKNOWN B'));
      b.pauseDelivery();
      clock.advance(5000);
      await settleImmediates();
      assert.equal(silent.length, 1, 'no verdict while a checkpoint pauses delivery');
      b.resumeDelivery();
      clock.advance(900);
      await settleImmediates();
      assert.equal(silent.length, 1, 'nor within the grace after it');
      clock.advance(100);
      await settleImmediates();
      assert.equal(silent.length, 2, 'still silent after the grace: the verdict');
    } finally {
      close();
    }
  });

  it('with a fast bound (repeated reports): reports within the grace after a cut-over or a checkpoint too, marked quiet (the primary judges those by its fast check only); none while a checkpoint pauses delivery', async () => {
    const { clock, p, gb, b, silent, close } = await witnessPair({ guestHangMs: 20, guestHangRepeatMs: 20, cutoverGraceMs: 1000 });
    try {
      p.submit(req(20000, 'q1 GET A'));
      await until(() => gb.inputs.length === 1, 'the backup delivered q1');
      b.onGuestOutput(reply(20000, 'q1 ERR UNKNOWN A'));
      clock.advance(20);
      await settleImmediates();
      assert.equal(silent.length, 1, 'reported at the fast bound, within the grace');
      assert.equal(silent[0]!.quiet, true);
      assert.equal(silent[0]!.report, 1);
      clock.advance(20);
      await settleImmediates();
      assert.equal(silent.length, 2, 'and again 20 ms later');
      assert.equal(silent[1]!.report, 2);
      // Past the grace: the reports are no longer quiet.
      clock.advance(1000);
      await settleImmediates();
      assert.equal(silent.at(-1)!.quiet, undefined);
      const n = silent.length;
      // A checkpoint pauses delivery: nothing reported however long, then quiet reports again after it.
      p.onGuestOutput(reply(20000, 'q1 ERR UNKNOWN A'));
      await until(() => b.status().digestsCompared === 1, 'the digest of q1 arrived');
      p.submit(req(20000, 'q2 GET B'));
      await until(() => gb.inputs.length === 2, 'the backup delivered q2');
      b.onGuestOutput(reply(20000, 'q2 ERR UNKNOWN B'));
      b.pauseDelivery();
      clock.advance(5000);
      await settleImmediates();
      assert.equal(silent.length, n, 'none while delivery is paused');
      b.resumeDelivery();
      clock.advance(1);
      await settleImmediates();
      assert.equal(silent.length, n + 1, 'reported at once after the pause (the bound long passed)');
      assert.equal(silent.at(-1)!.quiet, true);
    } finally {
      close();
    }
  });
});
