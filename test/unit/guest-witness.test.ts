/**
 * The backup's witness of the primary's guest (src/replication/guest-witness.ts) on a fake clock:
 * a verdict only when this copy answered stream requests and the primary sent no digest at all for
 * the bound; never for a primary that trails, a backup that trails, a payload injected into the
 * backup alone, or one request the primary's guest lost while it answers the rest.
 */
import assert from 'node:assert/strict';
import { FakeClock } from '../../src/core/clock.js';
import { PrimaryGuestWitness } from '../../src/replication/guest-witness.js';

function witness(boundMs = 200, repeatMs?: number) {
  const clock = new FakeClock();
  const w = new PrimaryGuestWitness({ now: () => clock.now(), boundMs, repeatMs });
  return { clock, w };
}

describe('the backup as witness of the primary\'s guest', () => {
  it('a primary that answers each request up to 150 ms after the backup\'s copy: no verdict; its lateness is recorded', () => {
    const { clock, w } = witness(200);
    for (let i = 0; i < 100; i++) {
      const k = `7 r${i}`;
      w.onStreamRequest(k);
      clock.advance(1);
      w.onLocalReply(k);
      clock.advance(i % 2 ? 150 : 10); // the primary's digest this much after the backup's reply
      assert.equal(w.check(), undefined, `request ${i}`);
      w.onPrimaryDigest(k);
    }
    const st = w.status();
    assert.equal(st.compared, 100);
    assert.ok(Math.abs(st.primaryLateMs.max - 150) < 1, `max ${st.primaryLateMs.max}`);
    assert.equal(st.suspectedMs.count, 100, 'each reply opened a suspicion its digest ended');
    assert.ok(Math.abs(st.suspectedMs.max - 150) < 1, `longest suspicion ${st.suspectedMs.max}`);
    assert.equal(st.verdicts, 0);
    assert.equal(st.waitingMs, null);
  });

  it('a primary whose digests come before the backup\'s replies (the backup trails): nothing suspected', () => {
    const { clock, w } = witness(200);
    for (let i = 0; i < 10; i++) { w.onStreamRequest(`7 r${i}`); w.onPrimaryDigest(`7 r${i}`); }
    clock.advance(5000); // the backup's copy was paused (a checkpoint), then catches up
    for (let i = 0; i < 10; i++) w.onLocalReply(`7 r${i}`);
    clock.advance(5000);
    assert.equal(w.check(), undefined);
    assert.equal(w.status().primaryLateMs.max < 0.01, true);
  });

  it('the primary\'s guest stops answering while the backup\'s copy answers: one verdict at the bound after the first unmatched reply', () => {
    const { clock, w } = witness(200);
    w.onStreamRequest('7 a');
    w.onLocalReply('7 a');
    w.onPrimaryDigest('7 a');
    clock.advance(50);
    for (let i = 0; i < 5; i++) { w.onStreamRequest(`7 b${i}`); w.onLocalReply(`7 b${i}`); clock.advance(20); } // the first at 1050
    clock.advance(99); // 1249: 199 ms since the first unmatched reply
    assert.equal(w.check(), undefined);
    clock.advance(1);
    assert.deepEqual(w.check(), { silentMs: 200, replies: 5, report: 1 });
    assert.equal(w.check(), undefined, 'reported once');
    clock.advance(1000);
    assert.equal(w.check(), undefined, 'still once');
    assert.equal(w.status().verdicts, 1);
    // A digest (the primary answers again) ends the episode; a new silence is a new one.
    w.onPrimaryDigest('7 b0');
    w.onStreamRequest('7 c');
    w.onLocalReply('7 c');
    clock.advance(200);
    assert.ok(w.check());
  });

  it('a reply to something the stream never carried (injected into the backup\'s copy) is not evidence', () => {
    const { clock, w } = witness(200);
    w.onLocalReply('65000 zz1');
    clock.advance(10000);
    assert.equal(w.check(), undefined);
  });

  it('one request the primary\'s guest lost while it answers the others: the next digest clears the suspicion', () => {
    const { clock, w } = witness(200);
    w.onStreamRequest('7 lost');
    w.onLocalReply('7 lost'); // the primary never answers this one
    clock.advance(100);
    w.onStreamRequest('7 next');
    w.onPrimaryDigest('7 next');
    w.onLocalReply('7 next');
    clock.advance(10000);
    assert.equal(w.check(), undefined);
  });

  it('the primary\'s guest stops before it asks AUTH about a REG this copy asked about: the question with no answer in the stream is suspected (no 5 s wait for the copy\'s AUTH timeout); an answer in the stream, early or late, is proof of life', () => {
    const { clock, w } = witness(200);
    // Healthy: the answer comes in the stream 3 ms after this copy asked; or before it asked (this copy trails).
    w.onLocalQuestion('S1');
    clock.advance(3);
    w.onStreamAnswer('S1');
    w.onStreamAnswer('S2');
    clock.advance(5);
    w.onLocalQuestion('S2');
    clock.advance(500);
    assert.equal(w.check(), undefined, 'both questions answered in the stream');
    assert.equal(w.status().waitingMs, null);
    // Hung before asking: this copy asks and then answers nothing (it waits for the answer).
    w.onLocalQuestion('S3');
    clock.advance(199);
    assert.equal(w.check(), undefined);
    clock.advance(1);
    assert.deepEqual(w.check(), { silentMs: 200, replies: 1, report: 1 });
    assert.equal(w.check(), undefined, 'once per episode');
  });

  it('reset forgets the stream (a new clone, a guest upgrade): earlier requests are no longer evidence', () => {
    const { clock, w } = witness(200);
    w.onStreamRequest('7 a');
    w.reset();
    w.onLocalReply('7 a');
    clock.advance(1000);
    assert.equal(w.check(), undefined);
    w.onStreamRequest('7 b');
    w.onLocalReply('7 b');
    clock.advance(100);
    w.reset();
    clock.advance(1000);
    assert.equal(w.check(), undefined, 'a suspicion does not survive a reset');
  });

  it('with repeats (the fast bound): a lasting silence is reported at the bound, then again every repeatMs, counted as one silence; a stall of the loop gives one report saying how long', () => {
    const { clock, w } = witness(30, 30);
    const t0 = clock.now();
    w.onStreamRequest('7 a');
    w.onLocalReply('7 a');
    clock.advance(29);
    assert.equal(w.check(), undefined);
    assert.equal(w.dueAt, t0 + 30);
    clock.advance(1);
    assert.deepEqual(w.check(), { silentMs: 30, replies: 1, report: 1 });
    assert.equal(w.check(), undefined, 'not again before repeatMs');
    assert.equal(w.dueAt, t0 + 60);
    clock.advance(30);
    assert.deepEqual(w.check(), { silentMs: 60, replies: 1, report: 2 });
    clock.advance(100); // the loop stalled: 160 ms, the reports due at 90, 120 and 150 fall together
    assert.deepEqual(w.check(), { silentMs: 160, replies: 1, report: 5 });
    assert.equal(w.dueAt, t0 + 180);
    assert.equal(w.status().verdicts, 1, 'one silence');
    assert.equal(w.status().reports, 3);
    // The primary answers: over; the next silence starts at report 1 again.
    w.onPrimaryDigest('7 a');
    assert.equal(w.dueAt, undefined);
    w.onStreamRequest('7 b');
    w.onLocalReply('7 b');
    clock.advance(30);
    assert.deepEqual(w.check(), { silentMs: 30, replies: 1, report: 1 });
    assert.equal(w.status().verdicts, 2);
  });
});
