/**
 * Hangs on a replicated pair (simulated chassis, real QEMU), under load: the primary's controller
 * stopped (SIGSTOP), the primary's QEMU stopped, the primary's guest application hung. Each time the
 * backup takes over, clients get good replies from it, no acknowledged request is lost, and the
 * journals show the takeover came from the hang verdict (the controller's own heartbeats, the
 * primary finding its QEMU stopped, or the backup's witness of the guest), not from a watchdog; then
 * the pair is protected again. Before
 * that, a loaded pair with a re-clone and a checkpoint reports no hang at all (no false verdict),
 * nor does a primary whose guest is slowed by a CPU quota (the fast check sees its QEMU waiting).
 * No wall-clock bound is asserted: bench/failover-detect measures the times.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { BOARD_NAMES, partnerOf, type BoardName } from '../../src/sim/chassis/layout.js';
import { pairView, waitProtected } from '../../src/sim/pair.js';
import type { JournalEvent } from '../../src/store/journal.js';
import { holdToCpuShare } from '../support/cpu-quota.js';
import { PairUnderTest } from '../support/pair.js';

const NAME = `hg${process.pid % 1000}`;

describe('hangs on a replicated pair (real QEMU): the backup takes over on the hang verdict', function () {
  this.timeout(900000);
  const p = new PairUnderTest(NAME);
  before(() => p.up());
  after(() => p.down());

  const events = async (b: BoardName, sinceId = 0): Promise<JournalEvent[]> => (await p.ctl(b, 'events', { limit: 10000, sinceId })).events;
  const lastId = async (b: BoardName): Promise<number> => (await p.ctl(b, 'events', { limit: 1 })).events.at(-1)?.id ?? 0;
  const marks = async () => ({ 'sim-a': await lastId('sim-a'), 'sim-b': await lastId('sim-b') }) as Record<BoardName, number>;
  const qemuPid = (b: BoardName) => Number(readFileSync(`${p.chassis.layout.boards[b].storageDir}/qemu.pid`, 'utf8'));
  const show = (j: JournalEvent[]) => j.map((e) => `${e.at} ${e.kind}: ${e.message}`).join('\n');

  /** The fenced (powered-off) board is switched on again, and the pair is protected again. */
  async function reprotect(): Promise<void> {
    for (const b of BOARD_NAMES) if ((await p.chassis.board(b)).power === 'off') await p.chassis.power(b, 'on');
    p.primary = await waitProtected(p.chassis.layout, 240000);
  }

  it('a loaded pair with a re-clone and a checkpoint: no hang reported on either board', async () => {
    const since = await marks();
    const backup = partnerOf(p.primary);
    const judged = async () => (await p.ctl(p.primary, 'replication.status')).replication.guestHang as { handedOver: number; fastDeclined: number };
    const before = await judged();
    await p.loadThrough(8000, 2000, async () => {
      await p.ctl(backup, 'checkpoint');
      await p.ctl(p.primary, 'clone');
    });
    for (const b of BOARD_NAMES) {
      const j = await events(b, since[b]);
      assert.deepEqual(j.filter((e) => e.kind === 'guest-hang' || e.kind === 'controller' || e.kind === 'role.transition'), [], `${b}:\n${show(j)}`);
    }
    const w = (await p.ctl(backup, 'replication.status')).replication.witness;
    assert.ok(w && w.compared > 100, `the witness compared the copies' replies: ${JSON.stringify(w)}`);
    // The witness's fast bound is 20 ms: on a slow or loaded machine a healthy primary's reply may
    // trail its copy's by more during a copy or a checkpoint (2 reports in a full run on 2026-12-07).
    // What must not happen is a hand-over: every report the primary got, it declined.
    const after = await judged();
    assert.equal(after.handedOver, before.handedOver, `no hand-over (witness reports at the fast bound: ${w.verdicts}, declined by the primary: ${after.fastDeclined - before.fastDeclined})`);
    assert.ok(after.fastDeclined - before.fastDeclined >= (w.verdicts > 0 ? 1 : 0), `the primary judged the witness's reports: ${JSON.stringify({ verdicts: w.verdicts, before, after })}`);
  });

  it('a slow primary guest (its QEMU held for 4 s in a cgroup whose CPU quota, half a CPU, a burner uses up early in every period) under load: the witness reports its silences, the primary\'s fast check declines them (its QEMU waited for a CPU, or it answered), no hand-over, nothing acknowledged lost', async () => {
    const primary = p.primary;
    const backup = partnerOf(primary);
    const since = await marks();
    const declined = async () => (await p.ctl(primary, 'replication.status')).replication.guestHang as { handedOver: number; fastDeclined: number; fastDeclinedSlowed: number; lastDeclined: string | null };
    const before = await declined();
    const pid = qemuPid(primary);
    let release: (() => void) | undefined;
    try {
      await p.loadThrough(9000, 2000, async () => {
        release = holdToCpuShare(pid, 50, `understudy-${NAME}-slow`);
        await new Promise((r) => setTimeout(r, 4000));
        release();
      });
    } finally {
      release?.();
    }
    for (const b of BOARD_NAMES) {
      const j = await events(b, since[b]);
      assert.deepEqual(j.filter((e) => e.kind === 'guest-hang' || e.kind === 'role.transition'), [], `${b}:\n${show(j)}`);
    }
    const after = await declined();
    // Declined as kept from the CPU, or, on a machine where the throttled guest still answers the
    // confirming PING within its 10 ms (a full run on 2026-12-07), as answering: either way, declined.
    assert.ok(after.fastDeclined > before.fastDeclined, `the witness reported the slow guest and the primary declined: ${JSON.stringify({ before, after })}`);
    assert.equal(after.handedOver, before.handedOver, 'no hand-over');
    assert.equal((await pairView(p.chassis.layout))[primary]?.role, 'PRIMARY');
    assert.equal((await pairView(p.chassis.layout))[backup]?.role, 'BACKUP');
  });

  it('SIGSTOP of the primary\'s controller: reported hung in its heartbeats, fenced, the backup serves; nothing acknowledged lost', async () => {
    const old = p.primary;
    const backup = partnerOf(old);
    const since = await marks();
    const { res } = await p.loadThrough(8000, 3000, () => p.chassis.fail(old, 'hang'));
    assert.equal((await pairView(p.chassis.layout))[backup]?.role, 'PRIMARY');
    assert.ok(res.firstReplyAfterMark === undefined || res.acked > 0);
    const j = await events(backup, since[backup]);
    const transitions = j.filter((e) => e.kind === 'role.transition');
    assert.deepEqual(transitions.map((e) => `${e.detail!.from}->${e.detail!.to}:${e.detail!.event}`), ['BACKUP->FENCING:partner-hung', 'FENCING->PRIMARY:fence-ok'], show(j));
    const st = await p.chassis.board(old);
    // The default fence is a reset: the power controller resets the board (an off fence would say 'fence').
    assert.equal(st.resets.last?.cause, 'power-controller', 'the hung board was fenced (reset)');
    assert.notEqual(st.resets.last?.cause, 'watchdog');
    p.primary = backup;
    await reprotect();
    assert.equal(p.primary, backup, 'the returning board did not preempt');
  });

  for (const how of ['SIGSTOP of the primary\'s QEMU', 'the primary\'s guest application hung (HANG)'] as const) {
    const path = how.startsWith('SIGSTOP') ? 'the primary finds its QEMU stopped with requests to answer' : 'the backup\'s witness reports it, the primary confirms';
    it(`${how}: ${path} and hands over (FAULT), the backup serves; nothing acknowledged lost; protected again`, async () => {
      const old = p.primary;
      const backup = partnerOf(old);
      const since = await marks();
      const pid = qemuPid(old);
      await p.loadThrough(8000, 3000, async () => {
        if (how.startsWith('SIGSTOP')) process.kill(pid, 'SIGSTOP');
        else await p.ctl(old, 'guest.manage', { command: 'HANG' });
      });
      assert.equal((await pairView(p.chassis.layout))[backup]?.role, 'PRIMARY');
      const jb = await events(backup, since[backup]);
      const jp = await events(old, since[old]);
      const confirmed = jp.find((e) => e.kind === 'guest-hang' && /the guest is hung/.test(e.message));
      assert.ok(confirmed, `the primary found it hung:\n${show(jp)}`);
      if (how.startsWith('SIGSTOP')) {
        // Its own check (STOPPED_CHECK_MS), or the witness's fast report if that came first: either
        // way the primary read its QEMU's state, not waited for the slow bound (guestHangMs).
        assert.match(confirmed.message, /^(here its QEMU process \d+ is stopped \(state T\) with requests to answer for \d+ ms: the guest is hung; handing over to the backup|the backup's copy answered \d+ requests the primary's guest has not answered for \d+ ms; here its QEMU process \d+ is stopped \(state T\): the guest is hung)/);
      } else {
        // The witness's report (the primary's journal quotes it), then the primary's own evidence: at
        // the fast bound, a PING unanswered while its QEMU had the CPU; or, if the machine kept its
        // QEMU from the CPU then, at guestHangMs (the backup journals that report too).
        assert.match(confirmed.message, /^the backup's copy answered \d+ requests the primary's guest has not answered for \d+ ms; here its guest has answered nothing for \d+ ms with requests to answer, nor a PING (for \d+ ms, while its QEMU had the CPU|within \d+ ms)/);
        if (/within \d+ ms/.test(confirmed.message)) assert.ok(jb.some((e) => e.kind === 'guest-hang' && /telling the primary/.test(e.message)), `the backup's witness reported it:\n${show(jb)}`);
      }
      assert.deepEqual(jp.filter((e) => e.kind === 'role.transition').slice(0, 1).map((e) => `${e.detail!.from}->${e.detail!.to}:${e.detail!.event}`), ['PRIMARY->FAULT:guest-failed'], show(jp));
      assert.deepEqual(jb.filter((e) => e.kind === 'role.transition').map((e) => `${e.detail!.from}->${e.detail!.to}:${e.detail!.event}`), ['BACKUP->PRIMARY:partner-fault'], show(jb));
      assert.equal((await p.chassis.board(old)).watchdog.fired, 0, 'no board watchdog');
      assert.ok(!jp.some((e) => /guest watchdog expired/.test(e.message)), 'not the guest\'s watchdog either');
      // The stopped QEMU was killed by its controller (given up), not left behind.
      assert.ok(!existsPid(pid), `QEMU ${pid} is gone`);
      p.primary = backup;
      await reprotect();
      assert.equal(p.primary, backup);
    });
  }

  it('a backup holding none of its primary\'s state (rebooted, its clone arriving) does not fence the primary it cannot hear for 1 s: no fence, no role change, protected again, nothing acknowledged lost', async () => {
    const primary = p.primary;
    const backup = partnerOf(primary);
    const pidOf = async (b: BoardName): Promise<number> => {
      const tid = (await p.ctl(b, 'role')).membershipProcess?.tid;
      assert.ok(typeof tid === 'number' && tid > 0, `${b}'s membership process: ${tid}`);
      return tid;
    };
    const membership = await pidOf(primary);
    const resetsBefore = (await p.chassis.board(primary)).resets.count;
    let mark = 0;
    let stopped = false;
    const trace: string[] = [];
    try {
      await p.loadThrough(14000, 1000, async () => {
        // The backup's controller dies: the primary fences it (a reset), it boots and joins again
        // with no copy and no checkpoint of this start: it holds none of the primary's state.
        mark = await lastId(backup);
        await p.chassis.fail(backup, 'kill');
        const deadline = Date.now() + 120000;
        for (;;) {
          assert.ok(Date.now() < deadline, `no clone arrived on ${backup}:\n${trace.join('\n')}`);
          const j = await events(backup, mark).catch(() => [] as JournalEvent[]);
          const clone = j.filter((e) => e.kind === 'clone');
          assert.ok(!clone.some((e) => /clone running on this board/.test(e.message)), `the clone landed before the test could stop the primary's membership process:\n${show(j)}`);
          if (clone.some((e) => /starting the clone target/.test(e.message))) break;
          await new Promise((r) => setTimeout(r, 20));
        }
        // Its primary falls silent on every link for 1 s (a busy or starved membership process).
        process.kill(membership, 'SIGSTOP');
        stopped = true;
        await new Promise((r) => setTimeout(r, 1000));
        process.kill(membership, 'SIGCONT');
        stopped = false;
      });
    } finally {
      if (stopped) process.kill(membership, 'SIGCONT');
    }
    p.primary = await waitProtected(p.chassis.layout, 240000);
    assert.equal(p.primary, primary, 'the primary kept the service');
    const jb = await events(backup, mark);
    const jp = await events(primary);
    assert.ok(jb.some((e) => e.kind === 'role' && new RegExp(`^BACKUP: partner \\(primary\\) silent on every link, and this board holds none of its state .*fencing ${primary} in 10000 ms unless it is heard again$`).test(e.message)),
      `the backup heard the silence and waited the no-state delay:\n${show(jb)}`);
    assert.ok(jb.some((e) => e.kind === 'role' && new RegExp(`^BACKUP: fence of ${primary} called off: ${primary} heard again`).test(e.message)), show(jb));
    assert.deepEqual(jb.filter((e) => e.kind === 'role.transition').map((e) => `${e.detail!.from}->${e.detail!.to}:${e.detail!.event}`), ['STARTING->BACKUP:partner-primary'], show(jb));
    assert.deepEqual(jb.filter((e) => e.kind === 'fence'), [], 'the backup fenced nobody');
    assert.equal((await p.chassis.board(primary)).resets.count, resetsBefore, `${primary} was not reset:\n${show(jp.slice(-40))}`);
    assert.equal((await pairView(p.chassis.layout))[primary]?.role, 'PRIMARY');
  });

  it('no copy of the guest crashed (kernel oops or fatal error in a console log)', () => {
    assert.deepEqual(p.guestCrashes(), []);
  });
});

function existsPid(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}
