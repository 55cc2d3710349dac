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
  it('backup: the witness\'s verdict is journaled and sent to the primary, only while it follows as a protected backup', () => {
    const f = fakePair();
    new PairController(f.parts);
    f.ha.currentRole = 'BACKUP';
    f.replicator.mode = 'backup';
    f.replicator.emit('primary-guest-silent', { silentMs: 212.4, replies: 7 });
    assert.deepEqual(f.replicator.sent, [], 'not protected: not following the stream');
    f.replicator.protectedNow = true;
    f.replicator.emit('primary-guest-silent', { silentMs: 212.4, replies: 7 });
    assert.deepEqual(f.replicator.sent, [{ type: 'guest-hung', silentMs: 212, replies: 7 }]);
    assert.ok(f.journal.has(/primary's guest has sent no reply for 212 ms while this board's copy answered 7 requests/));
  });

  it('primary: a report its own evidence confirms makes a protected primary give its guest up and fire guest-failed', async () => {
    const { f, pair, routes } = protectedPrimary();
    f.supervisor.evidence = 'its QEMU process 1234 is stopped (state T)';
    assert.equal(dispatchControl(routes, 'PRIMARY', { type: 'guest-hung', silentMs: 210, replies: 5 }, f.parts.log), true);
    await settle();
    assert.ok(f.calls.includes(`guest:hang-evidence ${f.parts.board.ha!.guestHangMs / 2}`), 'asked for half the bound');
    assert.ok(f.calls.includes('guest:hung give-up'), f.calls.join(', '));
    assert.deepEqual(f.ha.fired.map((e) => e.split(' ')[0]), ['guest-failed']);
    assert.match(f.ha.fired[0]!, /QEMU process 1234 is stopped.*the backup's copy answered 5 requests/);
    assert.ok(f.journal.has(/here its QEMU process 1234 is stopped \(state T\): the guest is hung/));
    assert.equal(pair.guestHang.handedOver, 1);
  });

  it('primary: a report it cannot confirm (its guest answered) is journaled and ignored', async () => {
    const { f, routes } = protectedPrimary();
    dispatchControl(routes, 'PRIMARY', { type: 'guest-hung', silentMs: 210, replies: 1 }, f.parts.log);
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
});
