/**
 * A hung guest on the primary, with fakes (test/support/pair-fakes.ts): the backup tells the
 * primary what its witness saw; the primary hands over (guest-failed) only if its own evidence
 * agrees and it is protected; otherwise it journals the report and keeps serving.
 */
import assert from 'node:assert/strict';
import { PairController } from '../../src/pair/controller.js';
import { controlRoutes, dispatchControl } from '../../src/pair/control.js';
import { fakePair, settle } from '../support/pair-fakes.js';

/** A protected primary whose guest runs, and the control routes of its pair. */
function protectedPrimary() {
  const f = fakePair();
  const pair = new PairController(f.parts);
  Object.assign(f.ha, { currentRole: 'PRIMARY' });
  Object.assign(f.supervisor, { currentState: 'running' });
  Object.assign(f.replicator, { mode: 'primary', protectedNow: true });
  return { f, pair, routes: controlRoutes(f.parts, pair.protection, pair.switchover, pair.upgrade, pair.guestHang) };
}

describe('pair: a hung guest on the primary (fakes)', () => {
  it('backup: the witness\'s reports are sent to the primary, only while it follows as a protected backup; of a silence, only the first report at or past guestHangMs is journaled', () => {
    const f = fakePair();
    new PairController(f.parts);
    f.ha.currentRole = 'BACKUP';
    f.replicator.mode = 'backup';
    f.replicator.emit('primary-guest-silent', { silentMs: 31, replies: 7, report: 1 });
    assert.deepEqual(f.replicator.sent, [], 'not protected: not following the stream');
    f.replicator.protectedNow = true;
    f.replicator.emit('primary-guest-silent', { silentMs: 31.2, replies: 7, report: 1 });
    f.replicator.emit('primary-guest-silent', { silentMs: 60.4, replies: 8, report: 2 });
    assert.deepEqual(f.replicator.sent, [{ type: 'guest-hung', silentMs: 31, replies: 7 }, { type: 'guest-hung', silentMs: 60, replies: 8 }]);
    assert.ok(!f.journal.has(/primary's guest has sent no reply/), 'fast reports are logged, not journaled');
    f.replicator.emit('primary-guest-silent', { silentMs: 252.4, replies: 9, report: 8 });
    f.replicator.emit('primary-guest-silent', { silentMs: 281, replies: 9, report: 9 });
    assert.equal(f.replicator.sent.length, 4);
    assert.equal(f.journal.lines.filter((e) => /primary's guest has sent no reply/.test(e)).length, 1, 'journaled once');
    assert.ok(f.journal.has(/primary's guest has sent no reply for 252 ms while this board's copy answered 9 requests/));
    // A new silence is journaled again once it reaches the slow bound.
    f.replicator.emit('primary-guest-silent', { silentMs: 30, replies: 1, report: 1 });
    f.replicator.emit('primary-guest-silent', { silentMs: 270, replies: 1, report: 9 });
    assert.equal(f.journal.lines.filter((e) => /primary's guest has sent no reply/.test(e)).length, 2);
  });

  it('primary, fast report (below guestHangMs): hung only on the fast check\'s evidence (a PING unanswered for half the fast bound while QEMU had the CPU), journaled as such', async () => {
    const { f, pair, routes } = protectedPrimary();
    const ha = f.parts.board.ha!;
    f.supervisor.fastEvidence = { evidence: 'its guest has answered nothing for 33 ms with requests to answer, nor a PING for 16 ms, while its QEMU had the CPU (0.4 ms waiting for a CPU in 16 ms: it had the CPU)' };
    dispatchControl(routes, 'PRIMARY', { type: 'guest-hung', silentMs: 31, replies: 5 }, f.parts.log);
    await settle();
    assert.ok(f.calls.includes(`guest:fast-hang-evidence ${ha.guestHangFastMs / 2}`), f.calls.join(', '));
    assert.ok(!f.calls.some((c) => c.startsWith('guest:hang-evidence')), 'not the slow check');
    assert.ok(f.calls.includes('guest:hung give-up'), f.calls.join(', '));
    assert.deepEqual(f.ha.fired.map((e) => e.split(' ')[0]), ['guest-failed']);
    assert.ok(f.journal.has(/here its guest has answered nothing for 33 ms.*while its QEMU had the CPU.*: the guest is hung/));
    assert.equal(pair.guestHang.handedOver, 1);
  });

  it('primary, fast report its guest is only slow for (its QEMU waited for a CPU): declined, counted, not journaled; the report at guestHangMs still goes to the slow check', async () => {
    const { f, pair, routes } = protectedPrimary();
    f.supervisor.fastEvidence = { declined: 'its QEMU was slowed: 12 ms waiting for a CPU in 15 ms: the machine is too busy to run it', slowed: true };
    dispatchControl(routes, 'PRIMARY', { type: 'guest-hung', silentMs: 31, replies: 5 }, f.parts.log);
    dispatchControl(routes, 'PRIMARY', { type: 'guest-hung', silentMs: 61, replies: 6 }, f.parts.log);
    await settle();
    assert.deepEqual(f.ha.fired, []);
    assert.equal(f.supervisor.currentState, 'running');
    assert.equal(pair.guestHang.fastDeclined, 2);
    assert.equal(pair.guestHang.status().fastDeclinedSlowed, 2);
    assert.match(pair.guestHang.lastDeclined ?? '', /too busy/);
    assert.ok(!f.journal.has(/guest-hang/), 'nothing journaled');
    f.supervisor.evidence = 'its guest has answered nothing for 260 ms with requests to answer, nor a PING within 100 ms, while QEMU runs it';
    dispatchControl(routes, 'PRIMARY', { type: 'guest-hung', silentMs: 255, replies: 9 }, f.parts.log);
    await settle();
    assert.ok(f.calls.includes(`guest:hang-evidence ${f.parts.board.ha!.guestHangMs / 2}`), f.calls.join(', '));
    assert.deepEqual((f.ha.fired as string[]).map((e) => e.split(' ')[0]), ['guest-failed']);
  });

  it('primary, report at guestHangMs: one its own evidence confirms makes a protected primary give its guest up and fire guest-failed', async () => {
    const { f, pair, routes } = protectedPrimary();
    f.supervisor.evidence = 'its QEMU process 1234 is stopped (state T)';
    assert.equal(dispatchControl(routes, 'PRIMARY', { type: 'guest-hung', silentMs: 260, replies: 5 }, f.parts.log), true);
    await settle();
    assert.ok(f.calls.includes(`guest:hang-evidence ${f.parts.board.ha!.guestHangMs / 2}`), 'asked for half the bound');
    assert.ok(f.calls.includes('guest:hung give-up'), f.calls.join(', '));
    assert.deepEqual(f.ha.fired.map((e) => e.split(' ')[0]), ['guest-failed']);
    assert.match(f.ha.fired[0]!, /QEMU process 1234 is stopped.*the backup's copy answered 5 requests/);
    assert.ok(f.journal.has(/here its QEMU process 1234 is stopped \(state T\): the guest is hung/));
    assert.equal(pair.guestHang.handedOver, 1);
  });

  it('primary, report at guestHangMs: one it cannot confirm (its guest answered) is journaled and ignored', async () => {
    const { f, routes } = protectedPrimary();
    dispatchControl(routes, 'PRIMARY', { type: 'guest-hung', silentMs: 260, replies: 1 }, f.parts.log);
    await settle();
    assert.deepEqual(f.ha.fired, []);
    assert.equal(f.supervisor.currentState, 'running');
    assert.ok(f.journal.has(/not confirmed here.*ignored/));
  });

  it('a report reaching a board that is not primary is ignored by the dispatch', () => {
    const f = fakePair();
    const pair = new PairController(f.parts);
    const routes = controlRoutes(f.parts, pair.protection, pair.switchover, pair.upgrade, pair.guestHang);
    assert.equal(dispatchControl(routes, 'BACKUP', { type: 'guest-hung', silentMs: 210, replies: 1 }, f.parts.log), false);
  });

  it('the control message is validated like the others', async () => {
    const { decodeControl, encodeControl } = await import('../../src/replication/messages.js');
    assert.deepEqual(decodeControl(encodeControl({ type: 'guest-hung', silentMs: 201.5, replies: 3 })), { type: 'guest-hung', silentMs: 201.5, replies: 3 });
    assert.throws(() => decodeControl(Buffer.from(JSON.stringify({ type: 'guest-hung', silentMs: -1, replies: 3 }))), /silentMs/);
  });

  it('a report within the witness\'s quiet window (after a cut-over or a checkpoint): sent fastOnly, never journaled on the backup, judged by the fast check only on the primary however long the silence', async () => {
    const f = fakePair();
    new PairController(f.parts);
    f.ha.currentRole = 'BACKUP';
    f.replicator.mode = 'backup';
    f.replicator.protectedNow = true;
    f.replicator.emit('primary-guest-silent', { silentMs: 612, replies: 4, report: 30, quiet: true });
    assert.deepEqual(f.replicator.sent, [{ type: 'guest-hung', silentMs: 612, replies: 4, fastOnly: true }]);
    assert.ok(!f.journal.has(/primary's guest has sent no reply/));
    const { f: g, routes } = protectedPrimary();
    g.supervisor.evidence = 'would confirm';
    dispatchControl(routes, 'PRIMARY', { type: 'guest-hung', silentMs: 612, replies: 4, fastOnly: true }, g.parts.log);
    await settle();
    assert.ok(g.calls.some((c) => c.startsWith('guest:fast-hang-evidence')), g.calls.join(', '));
    assert.ok(!g.calls.some((c) => c.startsWith('guest:hang-evidence')), 'never the slow check in the quiet window');
    assert.deepEqual(g.ha.fired, []);
  });
});
