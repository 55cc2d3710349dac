/**
 * The pair layer with fakes (test/support/pair-fakes.ts): the transitions that the integration tests
 * reach only through minutes of QEMU — promotion with a kept copy, promotion after a cut-short guest
 * upgrade, the switchover drain, a re-clone asked for during a clone — and the control dispatch.
 */
import assert from 'node:assert/strict';
import { loadGuestDescriptor } from '../../src/config/guest-descriptor.js';
import { PairController } from '../../src/pair/controller.js';
import { controlRoutes, dispatchControl } from '../../src/pair/control.js';
import { decodeControl, encodeControl, type SequencedInput } from '../../src/replication/messages.js';
import { fakePair, repoFile, settle } from '../support/pair-fakes.js';

const req = (seq: number, text: string): SequencedInput => ({ seq, input: { kind: 'request', clientPort: 1, payload: Buffer.from(text) }, client: { address: '192.0.2.1', port: 1 } });
const ans = (seq: number, text: string): SequencedInput => ({ seq, input: { kind: 'auth-reply', payload: Buffer.from(text) } });

/** A fake board that took the primary role at start-up (booted its guest, serves); the call log cleared. */
async function servingPrimary() {
  const f = fakePair();
  const pair = new PairController(f.parts);
  f.ha.become('PRIMARY');
  await settle();
  f.calls.length = 0;
  return { f, pair };
}

/** A backup holding a checkpoint, promoted while a clone is arriving (its QEMU starting); `streamBegun`: the partner's migration stream had begun. */
async function promotedWhileArriving(streamBegun: boolean) {
  const f = fakePair();
  const pair = new PairController(f.parts);
  f.ha.currentRole = 'BACKUP';
  f.checkpoints.info = { seq: 1, guestSeq: 1, at: '', bytes: 1, pauseMs: 1, durationMs: 1, clients: { entries: [], next: 0 } };
  f.clones.emit('clone-target', 'started');
  f.clones.targetStreamBegun = streamBegun;
  f.supervisor.currentState = 'starting';
  f.ha.become('PRIMARY');
  await settle();
  return Object.assign(f, { pair });
}

describe('pair: role changes carried out (fakes)', () => {
  it('an unprotected primary whose copy fails during a clone of it cancels that clone before it rebuilds the copy from the checkpoint', async () => {
    const f = fakePair();
    f.parts.recovery = { recover: async () => { f.calls.push(`recovery:recover (clone in progress: ${f.clones.cloneInProgress})`); return { checkpointSeq: 1, replayed: 0, restores: 1, poison: [], durationMs: 1, quarantinedSkipped: 0 } as never; } };
    new PairController(f.parts);
    f.ha.become('PRIMARY');
    await settle();
    f.replicator.logWhileUnprotected = true;
    f.checkpoints.covers = true;
    f.checkpoints.info = { seq: 1, guestSeq: 1, at: '', bytes: 1, pauseMs: 1, durationMs: 1, clients: { entries: [], next: 0 } };
    f.clones.clone().catch(() => undefined);
    f.calls.length = 0;
    assert.equal(f.supervisor.failurePolicy('hung'), 'give-up');
    f.supervisor.currentState = 'failed';
    f.supervisor.emit('state', 'failed', 'the guest stopped answering');
    await settle(60);
    const seen = f.calls.filter((c) => /^(clones|host|recovery):/.test(c));
    assert.match(seen[0] ?? '', /^clones:cancel \(the copy it was taking failed/);
    assert.deepEqual(seen.slice(1, 3), ['host:unserve', 'recovery:recover (clone in progress: false)']);
  });

  it('first primary of the pair: replicator primary, then boot, then serve — in that order', async () => {
    const f = fakePair();
    const pair = new PairController(f.parts);
    f.ha.become('PRIMARY');
    await settle();
    assert.deepEqual(f.calls.filter((c) => !c.startsWith('ha:')), ['replicator:primary', 'replicator:discard-queue', 'guest:start 1.0.0', 'host:serve']);
    assert.equal(pair.failovers, 0);
    assert.ok(f.journal.has(/booting the guest: board is primary/));
  });

  it('promoted with a running clone: it takes over as it is (no boot, no restore) and re-asks open AUTH questions', async () => {
    const f = fakePair();
    const pair = new PairController(f.parts);
    f.ha.currentRole = 'BACKUP';
    f.supervisor.currentState = 'running';
    f.supervisor.port.authOutstanding.add('ALICE');
    f.checkpoints.info = { seq: 1, guestSeq: 1, at: '', bytes: 1, pauseMs: 1, durationMs: 1, clients: { entries: [], next: 0 } };
    f.ha.become('PRIMARY');
    await settle();
    assert.deepEqual(f.calls.filter((c) => !c.startsWith('ha:')), ['replicator:primary', 'host:serve', 'endpoint:AUTHQ ALICE']);
    assert.equal(pair.failovers, 1);
    // Asked again while it stays open (the AUTH service may have answered the old primary's MAC),
    // a question asked meanwhile too; none once answered, and never more than AUTH_REASKS in all.
    await new Promise((r) => setTimeout(r, 60));
    const asked = () => f.calls.filter((c) => c.startsWith('endpoint:AUTHQ'));
    assert.ok(asked().length >= 2, asked().join(', '));
    f.supervisor.port.authOutstanding.add('BOB');
    await new Promise((r) => setTimeout(r, 40));
    assert.ok(asked().includes('endpoint:AUTHQ BOB'), asked().join(', '));
    f.supervisor.port.authOutstanding.clear();
    const before = asked().length;
    await new Promise((r) => setTimeout(r, 250));
    assert.equal(asked().length, before, 'answered: asked no more');
    f.supervisor.port.authOutstanding.add('CAROL');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(asked().length, before, 'the re-asks end after AUTH_REASKS rounds');
  });

  it('the copy follows (yields a shared guest core) in every role but PRIMARY, and serves at full share from the promotion on', async () => {
    const f = fakePair();
    new PairController(f.parts);
    f.ha.become('BACKUP');
    await settle();
    assert.deepEqual(f.supervisor.followingSet, [true]);
    f.supervisor.currentState = 'running';
    f.checkpoints.info = { seq: 1, guestSeq: 1, at: '', bytes: 1, pauseMs: 1, durationMs: 1, clients: { entries: [], next: 0 } };
    f.ha.become('PRIMARY');
    await settle();
    assert.deepEqual(f.supervisor.followingSet, [true, false]);
    assert.ok(f.calls.includes('host:serve'), f.calls.join(', '));
  });

  /** A following backup with a running copy and a checkpoint taken at `cpAt`; its copy then diverges (a reply that differed). */
  function divergedBackup(cpAt: string) {
    const f = fakePair();
    const pair = new PairController(f.parts);
    f.ha.currentRole = 'BACKUP';
    f.replicator.mode = 'backup';
    f.supervisor.currentState = 'running';
    f.checkpoints.info = { seq: 7, guestSeq: 7, at: cpAt, bytes: 1, pauseMs: 1, durationMs: 1, clients: { entries: [], next: 0 } };
    f.checkpoints.covers = true;
    assert.equal(f.checkpoints.refusal(), undefined, 'a copy that follows may be checkpointed');
    f.replicator.emit('divergence', '1 F7xr0');
    f.calls.length = 0; // the re-clone asked for
    return { f, pair };
  }

  it('promoted with a running copy that diverged after its checkpoint: rebuilt from the checkpoint and the log, not served as it is; no checkpoint of it meanwhile', async () => {
    const { f, pair } = divergedBackup(new Date(Date.now() - 5000).toISOString());
    assert.match(f.checkpoints.refusal() ?? '', /differs from the primary's .*1 F7xr0/, 'a diverged copy is not checkpointed over the good one');
    f.ha.become('PRIMARY');
    await settle();
    const work = f.calls.filter((c) => !c.startsWith('ha:'));
    assert.deepEqual(work, ['replicator:primary(held)', 'guest:stop', 'checkpoint:restore', 'host:serve'], work.join(', '));
    assert.ok(f.journal.has(/promoted with a copy that differs from the old primary's since .*rebuilding it from the checkpoint at input 7/), f.journal.lines.join('\n'));
    assert.equal(pair.failovers, 1);
  });

  it('promoted with a diverged copy and only a checkpoint taken after the divergence: serves it, journaled STATE DIVERGED', async () => {
    const { f } = divergedBackup(new Date(Date.now() + 60000).toISOString());
    f.ha.become('PRIMARY');
    await settle();
    assert.deepEqual(f.calls.filter((c) => !c.startsWith('ha:')), ['replicator:primary', 'host:serve']);
    assert.ok(f.journal.has(/STATE DIVERGED: .*the checkpoint .* is not older than that: serving it/), f.journal.lines.join('\n'));
  });

  it('a new clone clears the divergence: its copy is checkpointed again and a promotion serves it as it is', async () => {
    const { f } = divergedBackup(new Date(Date.now() - 5000).toISOString());
    f.clones.emit('clone-target', 'started');
    f.clones.emit('clone-target', 'running');
    assert.equal(f.checkpoints.refusal(), undefined);
    f.ha.become('PRIMARY');
    await settle();
    assert.ok(!f.calls.includes('checkpoint:restore'), f.calls.join(', '));
    assert.ok(!f.journal.has(/differs from the old primary's/));
  });

  it('a stopped QEMU is declared hung at once only on a protected primary whose partner is its backup (it hands over, losing nothing); elsewhere the slower checks decide; the confirming PING goes out ahead there only', () => {
    const f = fakePair();
    new PairController(f.parts);
    const stopped = f.supervisor.onStoppedQemu!;
    const ev = 'its QEMU process 42 is stopped (state T) with requests to answer for 21 ms';
    f.ha.currentRole = 'BACKUP';
    assert.equal(stopped(ev), false, 'a backup');
    f.ha.currentRole = 'PRIMARY';
    f.replicator.protectedNow = false;
    assert.equal(stopped(ev), false, 'an unprotected primary: a relaunch would lose what the stopped QEMU holds');
    f.replicator.protectedNow = true;
    f.ha.membership.partnerView.heartbeat = { role: 'STARTING', sender: 'sim-b' };
    assert.equal(stopped(ev), false, 'a partner that is not its backup');
    assert.ok(!f.journal.has(/the guest is hung/));
    f.ha.membership.partnerView.heartbeat = { role: 'BACKUP', sender: 'sim-b' };
    assert.equal(stopped(ev), true);
    // The PINGs that confirm a witness's reports go out ahead, at half of each bound (the fast and the
    // slow), on a protected primary only.
    const ha = f.parts.board.ha!;
    assert.ok(ha.guestHangFastMs > 0 && ha.guestHangFastMs < ha.guestHangMs, 'the defaults have a fast bound below the slow one');
    assert.deepEqual(f.supervisor.pingAheadAtMs(), [ha.guestHangFastMs / 2, ha.guestHangMs / 2]);
    ha.guestHangFastMs = 0;
    assert.deepEqual(f.supervisor.pingAheadAtMs(), [ha.guestHangMs / 2], 'no fast bound: the slow one only');
    ha.guestHangFastMs = 20;
    f.replicator.protectedNow = false;
    assert.deepEqual(f.supervisor.pingAheadAtMs(), []);
    f.replicator.protectedNow = true;
    f.ha.currentRole = 'BACKUP';
    assert.deepEqual(f.supervisor.pingAheadAtMs(), []);
    assert.ok(f.journal.has(/^guest-hang: here its QEMU process 42 is stopped \(state T\) with requests to answer for 21 ms: the guest is hung; handing over to the backup/));
  });

  it('promoted with neither a copy nor a checkpoint: boots the disk, journaled STATE LOST, and tells the HA layer it serves a lost state until a clone gives it a copy', async () => {
    const f = fakePair();
    new PairController(f.parts);
    f.ha.currentRole = 'BACKUP';
    f.ha.become('PRIMARY');
    await settle();
    assert.ok(f.journal.has(/STATE LOST/));
    assert.deepEqual(f.ha.lostState, ['promoted with neither a copy nor a checkpoint: booted the guest from its state disk']);
    f.clones.clone().catch(() => undefined);
    f.clones.endClone();
    await settle();
    assert.deepEqual(f.ha.lostState.at(-1), undefined, 'a backup holds a copy: the state is the pair\'s again');
    assert.equal(f.ha.lostState.length, 2);
  });

  it('the pair\'s first primary boots its disk without being a lost state (not a promotion)', async () => {
    const f = fakePair();
    new PairController(f.parts);
    f.ha.become('PRIMARY');
    await settle();
    assert.deepEqual(f.ha.lostState, []);
  });

  it('promoted while a clone is arriving: waits for it to run, then takes over with it (no boot of the disk over it)', async () => {
    const f = fakePair();
    const pair = new PairController(f.parts);
    f.ha.currentRole = 'BACKUP';
    f.clones.emit('clone-target', 'started');
    f.supervisor.currentState = 'starting'; // QEMU waiting for (or loading) the stream
    assert.equal(f.supervisor.failurePolicy('x'), 'give-up', 'an arriving copy never relaunches from the disk');
    f.ha.become('PRIMARY');
    await settle();
    assert.ok(f.journal.has(/promoted while a clone was arriving: waiting for it/));
    assert.ok(!f.calls.includes('guest:start 1.0.0'), 'nothing booted while the clone arrives');
    f.supervisor.currentState = 'running';
    f.clones.emit('clone-target', 'running');
    await new Promise((r) => setTimeout(r, 300)); // the wait polls every 200 ms
    await settle();
    assert.deepEqual(f.calls.filter((c) => !c.startsWith('ha:')), ['replicator:primary', 'host:serve']);
    assert.ok(!f.journal.has(/STATE LOST/));
    assert.equal(pair.failovers, 1);
  });

  it('promoted while a clone was arriving that then failed: the checkpoint is restored', async () => {
    const f = await promotedWhileArriving(true);
    // The stream stopped: its QEMU exited, through the failure policy like any guest failure.
    assert.equal(f.supervisor.failurePolicy('QEMU exited'), 'give-up');
    f.supervisor.fail('QEMU exited (code 1)');
    assert.equal(f.pair.healthy(), true, 'a promotion under way with a failed arriving clone is not a loss of guest supervision (no watchdog reset)');
    await new Promise((r) => setTimeout(r, 300));
    await settle();
    assert.deepEqual(f.ha.fired, [], 'the arriving clone failing is not the new primary\'s guest failing (no FAULT)');
    assert.ok(f.calls.includes('checkpoint:restore'), f.calls.join(', '));
  });

  it('promoted while a clone was prepared whose stream never began (its source died first): abandoned at once, the checkpoint restored, no 60 s wait', async () => {
    const f = await promotedWhileArriving(false);
    assert.ok(f.journal.has(/stream never began: abandoning it/));
    assert.ok(!f.journal.has(/waiting for it to run/));
    assert.ok(f.calls.indexOf('guest:stop') >= 0 && f.calls.indexOf('guest:stop') < f.calls.indexOf('checkpoint:restore'), f.calls.join(', '));
    assert.ok(f.calls.includes('replicator:primary(held)'), `delivery held until the replay: ${f.calls.join(', ')}`);
    assert.deepEqual(f.ha.fired, []);
  });

  it('promoted with a kept copy (guest-upgrade switchover): protected by the partner\'s copy without a clone', async () => {
    const f = fakePair();
    const pair = new PairController(f.parts);
    f.ha.currentRole = 'BACKUP';
    f.supervisor.currentState = 'running';
    pair.switchover.onPartnerHandsOver(true);
    assert.ok(f.calls.includes('ha:takeOver'));
    f.ha.become('PRIMARY');
    await settle();
    assert.ok(f.calls.includes('replicator:protect-current'));
    assert.equal(f.replicator.protectedNow, true);
    assert.equal(pair.replicationStatus().partnerRunsPreviousVersion, true, 'a commit or rollback is now possible');
    assert.equal(f.clones.clones, 0);
    // The fact is consumed: a later promotion is not protected by a copy nobody kept.
    f.ha.become('BACKUP');
    f.supervisor.currentState = 'running';
    f.ha.become('PRIMARY');
    await settle();
    assert.equal(f.calls.filter((c) => c === 'replicator:protect-current').length, 1);
    // A clone to the partner replaces its previous version: nothing left to commit.
    f.clones.emit('cloned', {});
    assert.equal(pair.replicationStatus().partnerRunsPreviousVersion, false);
  });

  it('a primary stepping down without keeping its copy stops its guest; keeping it, follows the new primary', async () => {
    for (const keepCopy of [false, true]) {
      const { f, pair } = await servingPrimary();
      f.replicator.protectedNow = true;
      await pair.switchover.handOver(keepCopy);
      await settle();
      const tail = f.calls.filter((c) => !c.startsWith('ha:') && !c.startsWith('replicator:hold'));
      if (keepCopy) {
        assert.deepEqual(tail, ['send:switchover', 'replicator:backup', 'replicator:follow-current versionChange=true', 'host:unserve']);
        assert.ok(f.journal.has(/keeps its guest \(1\.0\.0\) as the backup copy/));
        assert.equal(f.supervisor.currentState, 'running');
      } else {
        assert.deepEqual(tail, ['send:switchover', 'replicator:backup', 'host:unserve', 'replicator:backup', 'guest:stop']);
        assert.equal(f.supervisor.currentState, 'stopped');
      }
    }
  });

  it('the guest failing on the primary is a role event; on the backup it asks for a new clone', async () => {
    const f = fakePair();
    new PairController(f.parts);
    f.ha.currentRole = 'PRIMARY';
    f.supervisor.fail('qemu exited');
    assert.deepEqual(f.ha.fired, ['guest-failed (qemu exited)']);
    f.ha.currentRole = 'BACKUP';
    f.supervisor.fail('qemu exited');
    assert.deepEqual(f.replicator.sent.map((m) => m.type), ['reclone']);
    assert.equal(f.supervisor.failurePolicy('x'), 'give-up', 'a backup never relaunches a copy from its disk (an empty or stale state)');
    f.replicator.mode = 'backup';
    assert.equal(f.supervisor.failurePolicy('x'), 'give-up');
    f.ha.currentRole = 'FENCING';
    assert.equal(f.supervisor.failurePolicy('x'), 'give-up', 'a board about to promote restores its checkpoint rather than boot an empty guest');
  });

  it('a protected primary gives its failed guest up (hands over) to its backup, also during a re-clone (the backup restores its checkpoint and log); unprotected, it relaunches', () => {
    const f = fakePair();
    new PairController(f.parts);
    f.ha.currentRole = 'PRIMARY';
    f.ha.membership.partnerView.heartbeat = { role: 'BACKUP', sender: 'sim-b', guest: 'running' };
    assert.equal(f.supervisor.failurePolicy('x'), 'restart', 'unprotected: restarts its guest (the only copy)');
    f.replicator.protectedNow = true;
    assert.equal(f.supervisor.failurePolicy('x'), 'give-up');
    f.clones.cloneInProgress = true;
    f.ha.membership.partnerView.heartbeat = { role: 'BACKUP', sender: 'sim-b', guest: 'starting' };
    assert.equal(f.supervisor.failurePolicy('x'), 'give-up', 'a re-clone is replacing the backup\'s copy: it still holds the stream');
    f.ha.membership.partnerView.heartbeat = { role: 'STARTING', sender: 'sim-b', guest: 'none' };
    assert.equal(f.supervisor.failurePolicy('x'), 'restart', 'the partner is not a backup');
  });

  it('a primary whose own copy lost inputs counts from what its guest processed, then re-clones: the shortfall is not handed to every later clone', async () => {
    const f = fakePair();
    const pc = new PairController(f.parts);
    f.ha.currentRole = 'PRIMARY';
    f.replicator.mode = 'primary';
    f.replicator.protectedNow = true;
    f.supervisor.currentState = 'running';
    f.supervisor.appSeqExpected = 100;
    f.supervisor.processed = 98; // two inputs never reached the guest
    const watch = (pc as unknown as { protection: { lossWatch: { check(): Promise<void>; losses: number } } }).protection.lossWatch;
    await watch.check();
    await watch.check(); // idle twice with the same shortfall: a loss
    assert.equal(watch.losses, 1);
    assert.ok(f.calls.includes('guest:rebase 98'), f.calls.join(', '));
    assert.equal(f.supervisor.appSeqExpected, 98, 'the count a clone hands to the backup is what the guest holds');
    assert.equal(f.clones.clones, 1, 're-cloned to the backup');
    f.clones.endClone();
    await watch.check();
    await watch.check();
    assert.equal(watch.losses, 1, 'no loss reported again after the rebase');
  });

  it('a primary rebuilding its copy from the checkpoint is not judged by the loss watch until the recovery is over (a replay held on an AUTH answer is no loss)', async () => {
    const f = fakePair();
    const pc = new PairController(f.parts);
    f.ha.currentRole = 'PRIMARY';
    f.replicator.mode = 'primary';
    f.supervisor.currentState = 'running';
    f.supervisor.appSeqExpected = 11047;
    f.supervisor.processed = 10308; // the restored copy waits on an AUTH answer with 739 requests handed
    const inner = pc as unknown as { protection: { lossWatch: { check(): Promise<void>; losses: number } }; poison: { recoveringNow: boolean } };
    inner.poison.recoveringNow = true;
    for (let i = 0; i < 3; i++) await inner.protection.lossWatch.check();
    assert.equal(inner.protection.lossWatch.losses, 0, 'no loss during the recovery');
    assert.ok(!f.calls.some((c) => /^guest:rebase/.test(c)), `the count is not rebased under the replay: ${f.calls.join(', ')}`);
    inner.poison.recoveringNow = false; // over, and the copy still short: that is a loss
    await inner.protection.lossWatch.check();
    await inner.protection.lossWatch.check();
    assert.equal(inner.protection.lossWatch.losses, 1);
  });

  it('a PRIMARY that fenced its backup releases what it held for it at once (unprotected), without waiting for the protection timeout; a fence by a promoting board does not', async () => {
    const { f } = await servingPrimary();
    f.replicator.mode = 'primary';
    f.replicator.protectedNow = true;
    f.ha.emit('partner-fenced', { partner: 'sim-b', outcome: 'reset', by: 'FENCING' });
    assert.equal(f.replicator.protectedNow, true, 'a promotion\'s fence: the pair\'s role change handles it');
    f.ha.emit('partner-fenced', { partner: 'sim-b', outcome: 'reset', by: 'PRIMARY' });
    assert.equal(f.replicator.protectedNow, false);
    assert.ok(f.calls.some((c) => /^replicator:unprotect the backup sim-b was fenced \(reset\)/.test(c)), f.calls.join(' | '));
  });

  it('a role change whose guest work fails is reported to the HA machine', async () => {
    const f = fakePair();
    new PairController(f.parts);
    f.supervisor.failingVersions.add('1.0.0');
    f.ha.become('PRIMARY');
    await settle();
    assert.deepEqual(f.ha.fired, ['guest-failed (1.0.0 crashed at boot)']);
    assert.ok(f.journal.has(/role change to PRIMARY failed/));
    assert.equal(f.host.serving, false, 'a board whose guest did not boot does not serve');
  });
});

describe('pair: guest upgrade, the backup half and a promotion in the middle (fakes)', () => {
  const v2 = repoFile('guests/dx-legacy-v2-broken.json');

  /** A backup following the primary with a clone that has processed 10 of 12 requests. */
  function followingBackup() {
    const f = fakePair();
    const pair = new PairController(f.parts);
    f.ha.currentRole = 'BACKUP';
    f.replicator.mode = 'backup';
    f.replicator.protectedNow = true;
    f.supervisor.currentState = 'running';
    f.supervisor.appSeqExpected = 12;
    f.replicator.deliveredSeq = 20;
    f.replicator.lastSeq = 20;
    // Inputs 9..20: requests, and the AUTH answer of the REG at 15.
    f.checkpoints.log = [req(9, 'a1 GET X'), req(10, 'a2 GET Y'), req(11, 'a3 GET Z'), req(12, 'a4 GET W'), req(13, 'a5 GET V'), req(14, 'a6 GET U'),
      req(15, 'a7 REG BOB'), ans(16, 'AUTHR BOB OK'), req(17, 'a8 GET T'), req(18, 'a9 GET S'), req(19, 'b1 GET R'), req(20, 'b2 GET Q')];
    f.supervisor.replies['SAVE STOP'] = 'OK SAVE 4096 seq=10';
    return { f, pair };
  }

  it('the new version fails to boot after the save: the failure is reported and no guest is left running', async () => {
    const { f, pair } = followingBackup();
    f.supervisor.failingVersions.add('2.0.0');
    dispatchControl(controlRoutes(f.parts, pair.protection, pair.switchover, pair.upgrade, pair.guestHang), 'BACKUP', { type: 'guest-upgrade-prepare', guestFile: v2, version: '2.0.0' }, f.parts.log);
    await pair.upgrade.settled();
    await settle();
    assert.equal(f.replicator.sent.at(-1)?.type, 'guest-upgrade-failed');
    assert.equal(f.supervisor.currentState, 'stopped');
    assert.equal(f.supervisor.guest.version, '1.0.0', 'the old descriptor is back for a promotion');
    assert.equal(f.checkpoints.suspended, false);
  });

  it('asked while the clone that has just arrived is still resuming: waits for it to run, then upgrades it', async () => {
    const { f, pair } = followingBackup();
    f.supervisor.seqAfterStart = 10;
    f.supervisor.currentState = 'starting';
    setTimeout(() => { f.supervisor.currentState = 'running'; }, 300);
    await pair.upgrade.onPrepare(v2);
    assert.equal(f.replicator.sent.at(-1)?.type, 'guest-upgrade-ready', JSON.stringify(f.replicator.sent.at(-1)));
    assert.equal(f.supervisor.guest.version, '2.0.0');
  });

  it('promoted after the upgrade was cut short: boots the old version on the saved state and replays from the replay point', async () => {
    const { f, pair } = followingBackup();
    f.supervisor.failingVersions.add('2.0.0');
    f.checkpoints.info = { seq: 1, guestSeq: 1, at: '', bytes: 1, pauseMs: 1, durationMs: 1, clients: { entries: [], next: 0 } };
    await pair.upgrade.onPrepare(v2);
    f.supervisor.failingVersions.clear();
    f.calls.length = 0;
    f.ha.become('FENCING');
    f.ha.become('PRIMARY');
    await settle();
    const work = f.calls.filter((c) => !c.startsWith('ha:'));
    // 12 requests handed, 10 in the saved state: the replay starts at the 2nd last request up to input 20 → 19.
    // Of the AUTH answers before it only the pending REG's would be kept; none is at the replay point here.
    assert.deepEqual(work, ['replicator:primary', 'guest:start 1.0.0', 'replicator:replay from 18: 19,20', 'host:serve']);
    assert.ok(!f.calls.includes('checkpoint:restore'), 'the saved state wins over the checkpoint');
    // Once used, the replay point is gone: another promotion restores the checkpoint instead.
    f.supervisor.currentState = 'stopped';
    f.ha.become('BACKUP');
    f.ha.become('PRIMARY');
    await settle();
    assert.ok(f.calls.includes('checkpoint:restore'));
  });

  it('promoted while the clone is being replaced: the upgrade half ends first, then the board serves', async () => {
    const { f, pair } = followingBackup();
    let saveAnswered!: (r: string) => void;
    f.supervisor.replies['SAVE STOP'] = () => new Promise((r) => { saveAnswered = r; });
    f.supervisor.seqAfterStart = 10;
    const upgrading = pair.upgrade.onPrepare(repoFile('guests/dx-legacy-v2.json'));
    await settle();
    f.ha.become('FENCING');
    f.ha.become('PRIMARY');
    await settle();
    assert.ok(f.journal.has(/promoted during a guest upgrade: finishing it before serving/));
    assert.ok(!f.calls.includes('host:serve'), 'does not serve while its guest is being replaced');
    saveAnswered('OK SAVE 4096 seq=10');
    await upgrading;
    await settle();
    const work = f.calls.filter((c) => !c.startsWith('ha:') && !c.startsWith('guest:SAVE'));
    assert.ok(work.indexOf('replicator:restart-delivery from 19') < work.indexOf('replicator:primary'), work.join(' | '));
    assert.deepEqual(work.slice(work.indexOf('replicator:primary')), ['replicator:primary', 'host:serve']);
    assert.equal(f.supervisor.guest.version, '2.0.0', 'the upgraded clone takes over as it is');
  });
});

describe('pair: switchover drain (fakes)', () => {
  it('holds inputs, waits for the last ACK, tells the backup, steps down in the same tick', async () => {
    const { f, pair } = await servingPrimary();
    f.replicator.protectedNow = true;
    f.replicator.lastSeq = 100;
    f.replicator.ackedSeq = 97;
    setTimeout(() => { f.replicator.ackedSeq = 100; }, 30);
    const r = await pair.switchover.handOver();
    assert.deepEqual(r, { board: 'sim-a', handedOverAt: 100 });
    const i = f.calls.indexOf('send:switchover');
    assert.equal(f.calls[0], 'replicator:hold');
    assert.deepEqual(f.calls.slice(i, i + 4), ['send:switchover', 'ha:yieldPrimary', 'ha:PRIMARY->BACKUP', 'replicator:backup']);
  });

  it('refuses without a backup in sync, during a clone, and when the backup stops acknowledging mid-drain', async () => {
    const { f, pair } = await servingPrimary();
    await assert.rejects(pair.switchover.handOver(), /US_ERR_ROLE|holds no clone in sync/);
    f.replicator.protectedNow = true;
    f.clones.cloneInProgress = true;
    await assert.rejects(pair.switchover.handOver(), /a clone is in progress/);
    f.clones.cloneInProgress = false;
    f.replicator.lastSeq = 10;
    setTimeout(() => f.replicator.unprotect('backup did not acknowledge'), 20);
    await assert.rejects(pair.switchover.handOver(), /stopped acknowledging/);
    assert.equal(f.calls.filter((c) => c === 'replicator:release').length, 1, 'held inputs released again');
    assert.equal(f.ha.currentRole, 'PRIMARY');
    assert.ok(!f.replicator.sent.some((m) => m.type === 'switchover'));
  });
});

describe('pair: protection and control dispatch (fakes)', () => {
  it('a re-clone asked for during a clone starts no second clone; after it, one', async () => {
    const f = fakePair();
    const pair = new PairController(f.parts);
    f.ha.currentRole = 'PRIMARY';
    f.supervisor.currentState = 'running';
    f.replicator.mode = 'primary';
    pair.protection.maybeProtect();
    assert.equal(f.clones.clones, 1);
    f.clones.emit('control', { type: 'reclone', reason: 'divergence on 1 x' });
    f.clones.emit('control', { type: 'reclone', reason: 'divergence on 1 y' });
    assert.equal(f.clones.clones, 1, 'no second clone while one runs');
    f.clones.endClone();
    await settle();
    f.clones.emit('control', { type: 'reclone', reason: 'clone lost' });
    assert.equal(f.clones.clones, 2);
  });

  it('the backup asks for one re-clone per burst of divergences, and journals a burst in one line (then at most one a second, counting the rest)', async () => {
    const f = fakePair();
    new PairController(f.parts);
    f.ha.currentRole = 'BACKUP';
    for (let i = 0; i < 30; i++) f.replicator.emit('divergence', `1 a${i}`);
    assert.deepEqual(f.replicator.sent.map((m) => m.type), ['reclone']);
    const lines = () => f.journal.lines.filter((l) => /differs from the primary's/.test(l));
    assert.equal(lines().length, 1, 'one journal line for the burst, not one per reply');
    assert.match(lines()[0]!, /1 a0 differs .*asking for a re-clone/);
    await new Promise((r) => setTimeout(r, 1050));
    f.replicator.emit('divergence', '1 b');
    assert.equal(lines().length, 2);
    assert.match(lines()[1]!, /1 b differs from the primary's \(and 29 more since the last line\): re-clone already asked for/);
    f.clones.emit('clone-target', 'started');
    f.replicator.emit('divergence', '1 c');
    assert.equal(f.replicator.sent.length, 2, 'a new clone starts a new burst');
    assert.match(lines().at(-1)!, /1 c differs .*asking for a re-clone/, 'its first divergence is journaled at once');
  });

  it('a backup takes a checkpoint as soon as a clone runs on it and it follows (the state of a re-clone window), not before, and not after a new clone started', async () => {
    const f = fakePair();
    const pair = new PairController(f.parts);
    f.ha.currentRole = 'BACKUP';
    f.replicator.mode = 'backup';
    f.supervisor.currentState = 'running';
    f.clones.emit('clone-target', 'running');
    await new Promise((r) => setTimeout(r, 700));
    assert.deepEqual(f.calls.filter((c) => c === 'checkpoint:take'), [], 'not while the replicator does not follow yet');
    f.replicator.protectedNow = true;
    await new Promise((r) => setTimeout(r, 500));
    assert.deepEqual(f.calls.filter((c) => c === 'checkpoint:take'), ['checkpoint:take']);
    assert.equal(pair.protection.afterCloneCheckpoints, 1);
    // A clone that runs and is replaced at once (a re-clone started): no checkpoint of the old one.
    f.clones.emit('clone-target', 'running');
    f.clones.emit('clone-target', 'started');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(f.calls.filter((c) => c === 'checkpoint:take').length, 1);
    pair.protection.stop();
  });

  it('maybeProtect clones only to a live BACKUP partner, from a primary whose guest runs', () => {
    const f = fakePair();
    const pair = new PairController(f.parts);
    f.ha.currentRole = 'PRIMARY';
    pair.protection.maybeProtect();
    assert.equal(f.clones.clones, 0, 'no guest running');
    f.supervisor.currentState = 'running';
    f.ha.membership.partnerView.heartbeat = { role: 'STARTING', sender: 'sim-b' };
    pair.protection.maybeProtect();
    assert.equal(f.clones.clones, 0, 'partner not a backup yet');
    f.ha.membership.partnerView.heartbeat = { role: 'BACKUP', sender: 'sim-b' };
    pair.protection.maybeProtect();
    assert.equal(f.clones.clones, 1);
  });

  it('control messages are acted on only in their role', () => {
    const f = fakePair();
    const pair = new PairController(f.parts);
    const routes = controlRoutes(f.parts, pair.protection, pair.switchover, pair.upgrade, pair.guestHang);
    assert.equal(dispatchControl(routes, 'PRIMARY', { type: 'switchover', keepCopy: false }, f.parts.log), false, 'a primary is not handed the role');
    assert.ok(!f.calls.includes('ha:takeOver'));
    assert.equal(dispatchControl(routes, 'BACKUP', { type: 'switchover' }, f.parts.log), true);
    assert.ok(f.calls.includes('ha:takeOver'));
    assert.equal(dispatchControl(routes, 'BACKUP', { type: 'reclone', reason: 'x' }, f.parts.log), false, 'a backup clones nobody');
    assert.equal(dispatchControl(routes, 'BACKUP', { type: 'clone-ready' }, f.parts.log), false, 'the clone protocol is the manager\'s');
  });

  it('the clone manager admits a clone only on a board that is not primary, and then makes its replicator a backup', () => {
    const f = fakePair();
    const pair = new PairController(f.parts);
    f.ha.currentRole = 'BACKUP';
    pair.admitClone('check');
    assert.equal(f.replicator.mode, 'standalone');
    pair.admitClone('become-target');
    assert.equal(f.replicator.mode, 'backup');
    f.ha.currentRole = 'PRIMARY';
    assert.throws(() => pair.admitClone('check'), /this board is primary: it takes no clone/);
    assert.throws(() => pair.admitClone('become-target'), /became primary while preparing/);
  });
});

describe('partner control messages are validated before anyone acts on them', () => {
  it('refuses malformed messages with a RangeError naming the problem', () => {
    for (const [bad, re] of [
      ['null', /bad control message/],
      ['{"type":"clone-done"}', /cutSeq|bad control message/],
      ['{not json', /not JSON/],
      ['{"type":"switchover","keepCopy":"yes"}', /keepCopy/],
      ['{"type":"clone-prepare","memoryMb":-1}', /memoryMb/],
      ['{"type":"nonsense"}', /bad control message/],
    ] as Array<[string, RegExp]>) {
      assert.throws(() => decodeControl(Buffer.from(bad)), (e: Error) => e instanceof RangeError && re.test(e.message), bad);
    }
  });

  it('round-trips every message the pair sends', () => {
    const g = loadGuestDescriptor(repoFile('guests/dx-legacy-v2.json'));
    for (const m of [
      { type: 'clone-done', cutSeq: 5, guestSeq: 3, clients: { entries: [[40000, '192.0.2.5', 1234]], next: 40001 }, downtimeMs: null, authOpen: ['BOB'] },
      { type: 'guest-upgrade-prepare', guestFile: g.sourceFile, version: g.version },
      { type: 'switchover', keepCopy: true },
      { type: 'reclone', reason: 'x' },
    ] as const) {
      assert.deepEqual(decodeControl(encodeControl(m as never)), m);
    }
  });
});
