/**
 * The decision table of docs/pacemaker.md with a serving guest: three boards under real corosync and
 * Pacemaker (`chassis up --boards 3 --manager pacemaker --guest primary`), the pair sim-a/sim-b
 * serving the reference guest under QEMU with load from a black-box client, sim-c a spare, and
 * ocf:understudy:guest a promotable clone over the three.
 *
 * The clone runs two instances (clone-max 2: the guest's primary and its backup); Pacemaker places
 * them, and the agent pairs an instance started on another board with the promoted one (N+1).
 *
 * - placement: Pacemaker promotes the pair's PRIMARY; the in-sync BACKUP scores `synced_score`;
 *   the spare's idle controller is no instance;
 * - `crm node standby` of the primary's board: Pacemaker demotes it (the agent's demote is a
 *   switchover), promotes the backup, stops the standby board's instance and starts the second
 *   one on the spare, which becomes the new primary's backup (cloned to, protected) without the
 *   standby board; nothing acknowledged lost; back online, that board stays idle;
 * - `crm_resource --move --promoted` to the spare's board: a switchover, the spare serves;
 * - the (spare's) primary board loses power: its backup fences it and takes over on its own in
 *   milliseconds; Pacemaker converges on it (promote only confirms) with no failed action and no
 *   second takeover, and starts the second instance on the remaining board, which the survivor
 *   adopts and clones to: protected again through the loss of a third blade; nothing lost.
 *
 * One chassis for the whole file. Waits are bounds on convergence, never assertions on speed.
 */
import assert from 'node:assert/strict';
import { partnerOf, type BoardName, type ChassisBoard } from '../../src/sim/chassis/layout.js';
import { gapAround, pairView, waitProtected, waitProtectedAny } from '../../src/sim/pair.js';
import { eventually } from '../support/eventually.js';
import { ClusterTools, postMortemOnFailure } from '../support/pacemaker.js';
import { PairUnderTest } from '../support/pair.js';

const NAME = 'pm18g';

describe('Pacemaker drives the serving pair (3 boards, real corosync, pacemaker and QEMU; the decision table)', function () {
  this.timeout(300000);
  const p = new PairUnderTest(NAME, { boards: 3, manager: 'pacemaker' });
  const tools = new ClusterTools(NAME, `/tmp/us-${NAME}`);

  /** The promotion score Pacemaker holds for `board` (`master-guest`, set by the agent's monitor). */
  const score = (board: string) => eventually(`${board}'s promotion score`, async () => {
    const r = await tools.crm('sim-c', ['crm_attribute', '--node', board, '--name', 'master-guest', '--lifetime', 'reboot', '--query', '--quiet']);
    return r.code === 0 && r.out.trim() ? r.out.trim() : undefined;
  }, 30000, 500);

  /** Boards of the N+1 scenario, as the tests move the guest around: the primary, its backup, the idle one. */
  const at = { primary: 'sim-a' as ChassisBoard, backup: 'sim-b' as ChassisBoard, idle: 'sim-c' as ChassisBoard };

  /** Until crm_mon shows `promoted` promoted and exactly `unpromoted` unpromoted. */
  const placedAs = (promoted: string, unpromoted: string[], bound = 120000) => eventually(`Pacemaker shows ${promoted} promoted, ${unpromoted.join(' and ')} unpromoted`, async () => {
    // Asked on the board expected promoted: any other may be the one powered off.
    const pl = await tools.placement(promoted);
    return pl && pl.promoted.join() === promoted && pl.unpromoted.join() === [...unpromoted].sort().join() ? pl : undefined;
  }, bound, 1000);

  /** The journal of `board` (kind), newest last. */
  const journal = async (board: ChassisBoard, kind: string): Promise<string[]> =>
    ((await p.ctl(board, 'events', { kind, limit: 200 })).events as Array<{ message: string }>).map((e) => e.message);

  /** Role events journaled by `board` since `since` (ms). */
  const rolesSince = async (board: ChassisBoard, since: number): Promise<string[]> => {
    const ev = await p.ctl(board, 'events', { kind: 'role', limit: 200 });
    return (ev.events as Array<{ at: string; message: string }>).filter((e) => Date.parse(e.at) >= since).map((e) => e.message);
  };

  before(async function () {
    this.timeout(420000);
    // `chassis up --manager pacemaker --guest primary` configures the guest in the cluster itself.
    await p.up();
  });

  after(async function () {
    this.timeout(120000);
    await p.down();
  });
  postMortemOnFailure(`/tmp/us-${NAME}`, ['sim-a', 'sim-b', 'sim-c'], (b) => p.chassis.layout.boards[b as ChassisBoard].storageDir);

  it('the chassis configured the guest as a promotable clone of two instances; Pacemaker promotes the pair\'s PRIMARY; the in-sync BACKUP scores synced_score; the spare\'s idle controller is no instance; no failed action', async () => {
    const cfg = await tools.crm('sim-a', ['crm', 'configure', 'show', 'guest-clone']);
    assert.equal(cfg.code, 0, cfg.out);
    assert.match(cfg.out, /promotable=true/);
    assert.match(cfg.out, /promoted-max=1/);
    assert.match(cfg.out, /clone-max=2/);
    const primary = p.primary;
    const backup = partnerOf(primary);
    Object.assign(at, { primary, backup, idle: 'sim-c' });
    const pl = await placedAs(primary, [backup]);
    assert.equal(pl.failures, false, 'no failed action');
    assert.equal(await score(primary), '1000');
    assert.equal(await score(backup), '100', 'the backup holds a clone in sync: synced_score');
    const spare = await tools.crm('sim-a', ['crm_attribute', '--node', 'sim-c', '--name', 'master-guest', '--lifetime', 'reboot', '--query', '--quiet']);
    assert.ok(spare.code !== 0 || spare.out.trim() === '', `the spare holds no instance, so no promotion score: ${spare.out}`);
    assert.equal((await p.ctl('sim-c', 'status')).role, 'STANDALONE', 'its controller runs idle, without a guest');
  });

  it('crm node standby of the primary\'s board: a switchover, the backup promoted; the second instance starts on the spare, which becomes the backup (cloned to, protected); nothing acknowledged lost; back online, the board stays idle', async function () {
    this.timeout(900000);
    const { primary: old, backup: other, idle: spare } = at;
    const t0 = Date.now();
    await p.loadThrough(60000, 3000, async () => {
      const r = await tools.crm(spare, ['crm_attribute', '--node', old, '--name', 'standby', '--update', 'on']);
      assert.equal(r.code, 0, r.out);
      // Demoted (a switchover), the other promoted, the standby board's instance stopped, the spare's started.
      await placedAs(other, [spare], 180000);
      assert.deepEqual(await waitProtectedAny(p.chassis.layout, 300000), { primary: other, backup: spare });
    });
    Object.assign(at, { primary: other, backup: spare, idle: old });
    const pl = await placedAs(other, [spare]);
    assert.equal(pl.failures, false, 'no failed action');
    assert.ok((await rolesSince(other, t0)).some((m) => /switchover/i.test(m)), `${other} journaled a switchover`);
    assert.ok((await journal(other, 'partner')).some((m) => new RegExp(`partner is now ${spare} \\(198\\.51\\.100\\.3\\), replacing ${old}`).test(m)), `${other} adopted ${spare}`);
    const c = await p.ctl(spare, 'status');
    assert.equal(c.role, 'BACKUP');
    assert.equal(c.partner.heartbeat.sender, other);
    assert.equal(await score(spare), '100', 'the spare, in sync, scores as a backup');
    assert.equal((await pairView(p.chassis.layout))[old as BoardName], undefined, `${old}'s controller was stopped by Pacemaker (agent stop): it does not answer`);
    // The board was stopped in order, not fenced: still powered.
    assert.equal((await p.chassis.status()).boards.find((b) => b.board === old)?.power, 'on');

    // Back online: two instances already run; the board stays idle (nothing started, no flapping).
    const r = await tools.crm(spare, ['crm_attribute', '--node', old, '--name', 'standby', '--update', 'off']);
    assert.equal(r.code, 0, r.out);
    await eventually(`${old} online again`, async () => ((await tools.online(spare)).includes(old) ? true : undefined), 60000, 1000);
    await new Promise((res) => setTimeout(res, 15000));
    const still = await placedAs(other, [spare], 10000);
    assert.equal(still.failures, false, 'no failed action');
    assert.equal((await pairView(p.chassis.layout))[old as BoardName], undefined, `${old} runs no controller`);
    await p.loadThrough(8000, 0, async () => undefined);
  });

  it('crm_resource --move --promoted to the spare\'s board: a switchover (nothing acknowledged lost), both instances stay started, protected again; --clear leaves it there', async function () {
    this.timeout(600000);
    const { primary: old, backup: other } = at;
    await placedAs(old, [other]);
    const t0 = Date.now();
    await p.loadThrough(40000, 3000, async () => {
      const r = await tools.crm(other, ['crm_resource', '--resource', 'guest-clone', '--move', '--promoted', '--node', other]);
      assert.equal(r.code, 0, r.out);
      await placedAs(other, [old], 180000);
      assert.deepEqual(await waitProtectedAny(p.chassis.layout, 300000), { primary: other, backup: old });
    });
    Object.assign(at, { primary: other, backup: old });
    assert.ok((await rolesSince(other, t0)).some((m) => /switchover/i.test(m)), `${other} journaled a switchover`);
    const cleared = await tools.crm(other, ['crm_resource', '--resource', 'guest-clone', '--clear']);
    assert.equal(cleared.code, 0, cleared.out);
    const pl = await placedAs(other, [old]);
    assert.equal(pl.failures, false, 'no failed action');
    // Scores keep it where it serves once the constraint is gone: 1000 against the backup's 100.
    await new Promise((r) => setTimeout(r, 12000));
    assert.equal((await p.ctl(other, 'status')).role, 'PRIMARY', 'no move back after --clear');
    assert.equal(await score(old), '100');
  });

  it('the primary\'s board loses power: the backup takes over on its own; Pacemaker converges on it with no second takeover and starts the second instance on the remaining board, which is adopted and cloned to; nothing acknowledged lost', async function () {
    this.timeout(900000);
    const { primary: dead, backup: survivor, idle: third } = at;
    await placedAs(dead, [survivor]);
    const { res, faultAt } = await p.loadThrough(30000, 3000, () => p.chassis.fail(dead, 'power'));
    const gap = gapAround(res.gaps, faultAt);
    console.log(`      fault → first good reply: ${gap ? `${gap.afterFaultMs} ms` : 'no gap seen'}; ${res.acked} answered`);
    // One takeover: the survivor became PRIMARY once after the fault and stayed so (an unpromoted
    // instance answering 8 would be a failed action, recovered by a demote: a second takeover).
    const roles = await rolesSince(survivor, faultAt - 1000);
    const moves = roles.map((m) => /^(\S+) -> (\S+):/.exec(m)).filter((m): m is RegExpExecArray => m !== null).map((m) => [m[1]!, m[2]!]);
    const took = moves.findIndex(([, to]) => to === 'PRIMARY');
    assert.ok(took >= 0, `the survivor journaled its takeover: ${roles.join(' | ')}`);
    assert.deepEqual(moves.slice(took + 1).filter(([from]) => from === 'PRIMARY'), [], `the survivor never left PRIMARY after its takeover: ${roles.join(' | ')}`);
    assert.ok(!roles.some((m) => /switchover/.test(m)), `no switchover: ${roles.join(' | ')}`);

    // N+1 again: the second instance on the remaining board, adopted by the survivor, cloned to.
    const pl = await placedAs(survivor, [third], 240000);
    assert.deepEqual(await waitProtectedAny(p.chassis.layout, 300000), { primary: survivor, backup: third });
    assert.equal(pl.failures, false, `no failed action: ${pl.xml.match(/<failures>[\s\S]*?<\/failures>/)?.[0] ?? ''}`);
    assert.deepEqual(await tools.online(survivor), [survivor, third].sort());
    assert.ok((await journal(survivor, 'partner')).some((m) => new RegExp(`partner is now ${third} `).test(m)), `${survivor} adopted ${third}`);
    await p.loadThrough(8000, 0, async () => undefined);
  });
});
