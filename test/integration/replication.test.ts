/**
 * Replication end to end on the simulated chassis with real QEMU: a load generator sends numbered
 * requests to the service address; after each fault every acknowledged request must be reflected in
 * the new primary's state, and retried ids must be answered identically.
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { partnerOf } from '../../src/sim/chassis/layout.js';
import { PairUnderTest } from '../support/pair.js';
import { callControl } from '../../src/mgmt/ipc.js';
import { gapAround, pairView, waitProtected } from '../../src/sim/pair.js';
import { listThreads, readThreadAffinity } from '../../src/hw/affinity.js';

const NAME = `rp${process.pid % 1000}`;

// The fault scenarios (divergence repair, QEMU kill, switchover, seeded random faults) are in
// replication-faults.test.ts, the double failure in checkpoint.test.ts.

describe('replication on the simulated chassis (real QEMU)', function () {
  this.timeout(600000);
  const p = new PairUnderTest(NAME);
  before(() => p.up());
  after(() => p.down());

  /** The scheduling policy of a board's vCPU thread, read from /proc (board cores.followerYield); QEMU's other threads stay SCHED_OTHER. */
  async function vcpuPolicy(b: Parameters<typeof p.ctl>[0]): Promise<string> {
    const g = (await p.ctl(b, 'status')).guest as { qemuPid: number; vcpuTid: number };
    for (const t of listThreads(g.qemuPid).filter((x) => x !== g.vcpuTid)) assert.equal(readThreadAffinity(g.qemuPid, t).policy, 'SCHED_OTHER', `${b}: QEMU thread ${t}`);
    return readThreadAffinity(g.qemuPid, g.vcpuTid).policy;
  }
  /** Polls vcpuPolicy until it is `want` (the role change applies it without waiting), up to 5 s. */
  async function vcpuPolicyBecomes(b: Parameters<typeof p.ctl>[0], want: string): Promise<string> {
    let got = '';
    for (let i = 0; i < 50 && (got = await vcpuPolicy(b)) !== want; i++) await new Promise((r) => setTimeout(r, 100));
    return got;
  }

  it('clones the guest to the backup and keeps both copies identical under load (inputs, AUTH order, digests)', async () => {
    const backup = partnerOf(p.primary);
    // Registrations (each asks AUTH) at one step in three: this test is about AUTH order too.
    const { res } = await p.loadThrough(6000, 100, async () => undefined, undefined, 3);
    assert.ok(res.registered > 50, `${res.registered} registered`);
    // Idle now: both copies have processed the same inputs.
    assert.deepEqual(await p.settledStates(), { same: true }, 'primary and backup states are identical');
    const rb = (await p.ctl(backup, 'replication.status')).replication;
    assert.equal(rb.mode, 'backup');
    assert.ok(rb.digestsCompared > 100, `replies compared: ${rb.digestsCompared}`);
    assert.equal(rb.divergences, 0);
    assert.ok(rb.authHolds > 0, 'AUTH answers were held until the clone asked for them');
    const rp = (await p.ctl(p.primary, 'replication.status')).replication;
    assert.equal(rp.lastSeq, rb.lastSeq);
    assert.ok(typeof rp.lastClone.downtimeMs === 'number', 'the guest pause of the clone is reported');
    // The exact decoders (INPUT, ACK, DIGEST, control) refused nothing a real partner sent.
    for (const b of [p.primary, backup]) assert.deepEqual((await p.ctl(b, 'status')).partnerMessages, { total: 0, byChannel: {} }, `${b}: no partner message refused`);
    // cores.followerYield is off by default, on the simulated boards too: both copies at equal shares.
    assert.equal(await vcpuPolicy(backup), 'SCHED_OTHER', 'the backup\'s vCPU at its normal share');
    assert.equal(await vcpuPolicy(p.primary), 'SCHED_OTHER', 'the primary\'s vCPU at its normal share');
  });

  it('a re-clone under load is a snapshot copy: the primary serves through it, the new copy is handed what came after the cut, both copies end identical, nothing lost', async () => {
    const backup = partnerOf(p.primary);
    const before = (await p.ctl(p.primary, 'replication.status')).replication.lastClone?.at;
    let clone: { snapshot?: boolean; afterCut?: number; holdMs?: number; cutSeq?: number; durationMs?: number } | undefined;
    // Registrations at one step in three: AUTH questions open across the cut.
    const { res } = await p.loadThrough(10000, 3000, async () => { clone = ((await p.ctl(p.primary, 'clone', {}).catch((e: Error) => ({ error: e.message }))) as { clone?: typeof clone }).clone; }, undefined, 3);
    assert.ok(clone, 'the clone command answered with its report');
    assert.equal(clone.snapshot, true, `a snapshot copy (QEMU background-snapshot): ${JSON.stringify(clone)}`);
    assert.ok((clone.afterCut ?? 0) > 0, `the guest was given inputs during the copy: ${JSON.stringify(clone)}`);
    const rp = (await p.ctl(p.primary, 'replication.status')).replication;
    assert.notEqual(rp.lastClone.at, before, 'a new clone was made');
    assert.ok(res.registered > 10, `${res.registered} registered`);
    assert.deepEqual(await p.settledStates(), { same: true }, 'primary and backup states are identical after the cut-over');
    const rb = (await p.ctl(backup, 'replication.status')).replication;
    assert.equal(rb.divergences, 0, 'the new copy answered what came after the cut as the primary had');
    assert.ok(rb.digestsCompared > 0);
  });

  it('the backup powered off in the middle of a snapshot copy: the primary\'s guest serves on (the copy is drained, never cut short), nothing lost, protected again once the backup is back', async () => {
    const backup = partnerOf(p.primary);
    const marks = (await p.ctl(p.primary, 'events', { limit: 1 })).events as Array<{ id: number }>;
    const since = marks[0]?.id ?? 0;
    let cloneError = '';
    let phaseAtCut = '';
    let poweredOff = false;
    try {
      const { res } = await p.loadThrough(12000, 2000, async () => {
        const cloning = p.ctl(p.primary, 'clone', { copy: 'snapshot' }).then(() => '', (e: Error) => e.message);
        for (let i = 0; i < 200; i++) {
          const r = (await p.ctl(p.primary, 'replication.status')).replication as { cloneProgress?: { phase: string; percent?: number } };
          if (r.cloneProgress?.phase === 'migrate' && (r.cloneProgress.percent ?? 0) >= 5) { phaseAtCut = `${r.cloneProgress.phase} ${r.cloneProgress.percent}%`; break; }
          await new Promise((r2) => setTimeout(r2, 50));
        }
        poweredOff = true;
        await p.chassis.fail(backup, 'power');
        cloneError = await cloning;
      });
      assert.match(phaseAtCut, /^migrate/, 'the backup went down while the copy was running');
      assert.match(cloneError, /migration stream went during the copy|closed the replication channel/, `the clone failed at the controller's level: ${cloneError || '(it reported success)'}`);
      assert.ok(res.acked > 100, `${res.acked} answered`);
      const ev = ((await p.ctl(p.primary, 'events', { sinceId: since, limit: 200 })).events as Array<{ kind: string; message: string }>).map((e) => `${e.kind}: ${e.message}`);
      assert.ok(ev.some((l) => /the partner's end of the migration stream is gone/.test(l)), `the relay drained the copy:\n${ev.join('\n')}`);
      assert.ok(!ev.some((l) => /PRIMARY -> FAULT|guest failed|guest hung/.test(l)), `the primary's guest never failed:\n${ev.join('\n')}`);
      const state = (await p.ctl(p.primary, 'guest.manage', { command: 'STATE' })) as { reply: string };
      assert.match(state.reply, /STATE/, 'the primary\'s guest still answers');
    } finally {
      // Whatever failed above, the next tests need the pair back.
      if (poweredOff) await p.chassis.power(backup, 'on');
    }
    assert.equal(await waitProtected(p.chassis.layout, 240000), p.primary);
  });

  it('cores.followerYield on the backup board: its copy\'s vCPU follows at SCHED_IDLE, the primary\'s keeps its share, a checkpoint is taken, the copies stay identical', async () => {
    const backup = partnerOf(p.primary);
    await p.chassis.power(backup, 'off');
    const file = p.chassis.layout.boards[backup].profile;
    const profile = JSON.parse(readFileSync(file, 'utf8')) as { cores: Record<string, unknown> };
    profile.cores.followerYield = true;
    writeFileSync(file, `${JSON.stringify(profile, null, 2)}\n`, { mode: 0o600 });
    await p.chassis.power(backup, 'on');
    assert.equal(await waitProtected(p.chassis.layout, 240000), p.primary);
    assert.equal(await vcpuPolicyBecomes(backup, 'SCHED_IDLE'), 'SCHED_IDLE', 'the backup\'s vCPU follows at SCHED_IDLE');
    assert.equal(await vcpuPolicy(p.primary), 'SCHED_OTHER', 'the primary (setting off) keeps its share');
    await p.loadThrough(3000, 100, async () => undefined);
    assert.deepEqual(await p.settledStates(), { same: true }, 'primary and yielding backup states are identical');
    // A checkpoint runs the copy at its full share (withFullShare), then it yields again.
    const cp = (await callControl(p.chassis.layout.boards[backup].controlSocket, 'checkpoint', {}, 180000)) as { checkpoint: { seq: number } };
    assert.ok(cp.checkpoint.seq > 0, 'the yielding copy was checkpointed');
    assert.equal(await vcpuPolicyBecomes(backup, 'SCHED_IDLE'), 'SCHED_IDLE', 'back at SCHED_IDLE after the checkpoint');
    const log = readFileSync(join(p.chassis.layout.runDir, backup, 'board.log'), 'utf8');
    assert.ok(/"following":true,"msg":"vCPU at its full share"/.test(log), 'the checkpoint gave the following copy its full share');
  });

  it('kill -9 of the primary controller: the backup takes over, nothing acknowledged is lost', async () => {
    const old = p.primary;
    const { res, faultAt } = await p.loadThrough(10000, 3000, () => p.chassis.fail(old, 'kill'));
    const v = await pairView(p.chassis.layout);
    assert.equal(v[partnerOf(old)]?.role, 'PRIMARY');
    assert.ok(gapAround(res.gaps, faultAt) === undefined || gapAround(res.gaps, faultAt)!.afterFaultMs < 30000);
    p.primary = partnerOf(old);
    assert.equal(await vcpuPolicyBecomes(p.primary, 'SCHED_OTHER'), 'SCHED_OTHER', 'the promoted copy (cores.followerYield) serves at its full share');
  });

  it('the failed board returns as backup and is cloned to again (re-protection)', async () => {
    await p.chassis.power(partnerOf(p.primary), 'on');
    const again = await waitProtected(p.chassis.layout, 240000);
    assert.equal(again, p.primary, 'the returning board did not preempt');
  });

  it('kill -9 of the backup controller under load: every input it acknowledged is in its input log (group commit); the pair is protected again', async () => {
    const backup = partnerOf(p.primary);
    const acked = async () => ((await p.ctl(p.primary, 'replication.status')) as { replication: { ackedSeq: number } }).replication.ackedSeq;
    const before = await acked();
    const copy = mkdtempSync(join(tmpdir(), 'us-killed-log-'));
    let last = 0;
    try {
      await p.loadThrough(5000, 2000, async () => {
        const { pid } = (await p.chassis.fail(backup, 'kill')) as { pid: number | null };
        for (let i = 0; pid && i < 200 && existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 10));
        // The killed controller's database as it left it, at once: the primary fences the board on
        // its dying gasp and it boots again within about a second.
        const dir = p.chassis.layout.boards[backup].storageDir;
        for (const f of ['understudy.db', 'understudy.db-wal']) if (existsSync(join(dir, f))) copyFileSync(join(dir, f), join(copy, f));
        await new Promise((r) => setTimeout(r, 300)); // an ACK the backup sent before it died reaches the primary
        last = await acked(); // the last ACK the primary heard: what it may have released
      });
      assert.ok(last > before, `the backup acknowledged inputs under the load (${before} → ${last})`);
      const db = new Database(join(copy, 'understudy.db'));
      try {
        const cp = JSON.parse((db.prepare("SELECT value FROM meta WHERE key = 'checkpoint'").get() as { value: string }).value) as { seq: number };
        assert.ok(last > cp.seq, `inputs acknowledged after the backup's checkpoint (${cp.seq} < ${last}): the check is not vacuous`);
        const r = db.prepare('SELECT COUNT(*) AS n, MIN(seq) AS lo, MAX(seq) AS hi FROM inputs WHERE seq > ? AND seq <= ?').get(cp.seq, last) as { n: number; lo: number; hi: number };
        assert.equal(r.n, last - cp.seq, `every input from ${cp.seq + 1} to the last acknowledged, ${last}, is in the killed backup's log (found ${r.n}, ${r.lo}..${r.hi})`);
      } finally {
        db.close();
      }
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
    await p.chassis.power(backup, 'on');
    assert.equal(await waitProtected(p.chassis.layout, 240000), p.primary);
  });

  it('no copy of the guest crashed (kernel oops or fatal error in a console log)', () => {
    assert.deepEqual(p.guestCrashes(), []);
  });
});
