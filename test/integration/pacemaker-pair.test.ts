/**
 * The decision table of docs/pacemaker.md with a serving guest: three boards under real corosync and
 * Pacemaker (`chassis up --boards 3 --manager pacemaker --guest primary`), the pair sim-a/sim-b
 * serving the reference guest under QEMU with load from a black-box client, sim-c a spare, and
 * ocf:understudy:guest a promotable clone over the three.
 *
 * - placement: Pacemaker promotes the pair's PRIMARY; the in-sync BACKUP scores `synced_score`
 *   above the spare;
 * - `crm node standby` of the primary's board: Pacemaker demotes it (the agent's demote is a
 *   switchover), promotes the backup (not the spare), stops the standby board's instance; nothing
 *   acknowledged lost; back online, the board is started again and re-protects the pair;
 * - the primary's board loses power: the backup fences it and takes over on its own in
 *   milliseconds; Pacemaker converges on it (promote only confirms) with no failed action and no
 *   second takeover; nothing acknowledged lost.
 *
 * One chassis for the whole file. Waits are bounds on convergence, never assertions on speed.
 */
import assert from 'node:assert/strict';
import { partnerOf, type BoardName } from '../../src/sim/chassis/layout.js';
import { gapAround, pairView, waitProtected } from '../../src/sim/pair.js';
import { eventually } from '../support/eventually.js';
import { ClusterTools } from '../support/pacemaker.js';
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

  /** Until crm_mon shows `promoted` promoted and exactly `unpromoted` unpromoted. */
  const placedAs = (promoted: string, unpromoted: string[], bound = 120000) => eventually(`Pacemaker shows ${promoted} promoted, ${unpromoted.join(' and ')} unpromoted`, async () => {
    const pl = await tools.placement('sim-c');
    return pl && pl.promoted.join() === promoted && pl.unpromoted.join() === [...unpromoted].sort().join() ? pl : undefined;
  }, bound, 1000);

  /** Role events journaled by `board` since `since` (ms). */
  const rolesSince = async (board: BoardName, since: number): Promise<string[]> => {
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

  it('the chassis configured the guest as a promotable clone; Pacemaker promotes the pair\'s PRIMARY; the in-sync BACKUP scores above the spare; no failed action', async () => {
    const cfg = await tools.crm('sim-a', ['crm', 'configure', 'show', 'guest-clone']);
    assert.equal(cfg.code, 0, cfg.out);
    assert.match(cfg.out, /promotable=true/);
    assert.match(cfg.out, /promoted-max=1/);
    const primary = p.primary;
    const backup = partnerOf(primary);
    const pl = await placedAs(primary, [backup, 'sim-c']);
    assert.equal(pl.failures, false, 'no failed action');
    assert.equal(await score(primary), '1000');
    assert.equal(await score(backup), '100', 'the backup holds a clone in sync: synced_score');
    assert.equal(await score('sim-c'), '1', 'the spare holds none: unsynced_score');
  });

  it('crm node standby of the primary\'s board: a switchover (nothing acknowledged lost), the backup promoted, not the spare; back online, the board re-protects the pair', async function () {
    this.timeout(600000);
    const old = p.primary = await waitProtected(p.chassis.layout, 240000);
    const other = partnerOf(old);
    const t0 = Date.now();
    await p.loadThrough(30000, 3000, async () => {
      const r = await tools.crm('sim-c', ['crm_attribute', '--node', old, '--name', 'standby', '--update', 'on']);
      assert.equal(r.code, 0, r.out);
      // Demoted (a switchover), the other promoted, the standby board's instance stopped.
      await placedAs(other, ['sim-c'], 180000);
    });
    p.primary = other;
    const pl = await placedAs(other, ['sim-c']);
    assert.equal(pl.failures, false, 'no failed action');
    const v = await pairView(p.chassis.layout);
    assert.equal(v[other]?.role, 'PRIMARY');
    assert.equal(v[old], undefined, `${old}'s controller was stopped by Pacemaker (agent stop): it does not answer`);
    const oldRoles = (await p.chassis.board(old)).controller;
    assert.ok(oldRoles === null || oldRoles.state !== 'running', `${old}'s controller is not running: ${JSON.stringify(oldRoles)}`);
    assert.ok((await rolesSince(other, t0)).some((m) => /switchover/i.test(m)), `${other} journaled a switchover`);
    // The board was stopped in order, not fenced: still powered.
    assert.equal((await p.chassis.status()).boards.find((b) => b.board === old)?.power, 'on');

    // Back online: Pacemaker starts its instance (the agent's start, `understudy guest start`); it
    // joins as the backup and is cloned to.
    const r = await tools.crm('sim-c', ['crm_attribute', '--node', old, '--name', 'standby', '--update', 'off']);
    assert.equal(r.code, 0, r.out);
    assert.equal(await waitProtected(p.chassis.layout, 300000), other, `${other} serves, ${old} its backup again`);
    const back = await placedAs(other, [old, 'sim-c']);
    assert.equal(back.failures, false, 'no failed action');
    await p.loadThrough(8000, 0, async () => undefined);
  });

  it('crm_resource --move --promoted to the backup\'s board: a switchover (nothing acknowledged lost), both boards stay started, the pair protected again; --clear leaves it there', async function () {
    this.timeout(600000);
    const old = p.primary = await waitProtected(p.chassis.layout, 240000);
    const other = partnerOf(old);
    await placedAs(old, [other, 'sim-c']);
    const t0 = Date.now();
    await p.loadThrough(25000, 3000, async () => {
      const r = await tools.crm('sim-c', ['crm_resource', '--resource', 'guest-clone', '--move', '--promoted', '--node', other]);
      assert.equal(r.code, 0, r.out);
      await placedAs(other, [old, 'sim-c'], 180000);
    });
    p.primary = other;
    assert.equal(await waitProtected(p.chassis.layout, 300000), other, `${other} serves, ${old} its backup`);
    assert.ok((await rolesSince(other, t0)).some((m) => /switchover/i.test(m)), `${other} journaled a switchover`);
    const cleared = await tools.crm('sim-c', ['crm_resource', '--resource', 'guest-clone', '--clear']);
    assert.equal(cleared.code, 0, cleared.out);
    const pl = await placedAs(other, [old, 'sim-c']);
    assert.equal(pl.failures, false, 'no failed action');
    // Scores keep it where it serves once the constraint is gone: 1000 against the backup's 100.
    await new Promise((r) => setTimeout(r, 12000));
    assert.equal((await pairView(p.chassis.layout))[other]?.role, 'PRIMARY', 'no move back after --clear');
    assert.equal(await score(old), '100');
  });

  it('the primary\'s board loses power: the backup takes over on its own; Pacemaker converges on it with no failed action and no second takeover; nothing acknowledged lost', async function () {
    this.timeout(600000);
    const dead = p.primary = await waitProtected(p.chassis.layout, 240000);
    const survivor = partnerOf(dead);
    await placedAs(dead, [survivor, 'sim-c']);
    const { res, faultAt } = await p.loadThrough(30000, 3000, () => p.chassis.fail(dead, 'power'));
    p.primary = survivor;
    const gap = gapAround(res.gaps, faultAt);
    console.log(`      fault → first good reply: ${gap ? `${gap.afterFaultMs} ms` : 'no gap seen'}; ${res.acked} answered`);
    // Pacemaker: the dead node offline, the survivor promoted (its monitor said PRIMARY with the
    // serving score; promote confirmed), no failed action (an unpromoted instance answering 8 would
    // be one, recovered by a demote: a second takeover).
    const pl = await placedAs(survivor, ['sim-c']);
    assert.equal(pl.failures, false, `no failed action: ${pl.xml.match(/<failures>[\s\S]*?<\/failures>/)?.[0] ?? ''}`);
    assert.deepEqual((await tools.online('sim-c')), [survivor, 'sim-c'].sort());
    // One takeover: the survivor became PRIMARY once after the fault and stayed so.
    const roles = await rolesSince(survivor, faultAt - 1000);
    const moves = roles.map((m) => /^(\S+) -> (\S+):/.exec(m)).filter((m): m is RegExpExecArray => m !== null).map((m) => [m[1]!, m[2]!]);
    const took = moves.findIndex(([, to]) => to === 'PRIMARY');
    assert.ok(took >= 0, `the survivor journaled its takeover: ${roles.join(' | ')}`);
    assert.deepEqual(moves.slice(took + 1).filter(([from]) => from === 'PRIMARY'), [], `the survivor never left PRIMARY after its takeover: ${roles.join(' | ')}`);
    assert.ok(!roles.some((m) => /switchover/.test(m)), `no switchover: ${roles.join(' | ')}`);
    assert.equal((await pairView(p.chassis.layout))[survivor]?.role, 'PRIMARY');

    // Powered on, the board boots its controller with the guest, joins as backup, is cloned to; Pacemaker sees its instance again.
    await p.chassis.power(dead, 'on');
    assert.equal(await waitProtected(p.chassis.layout, 300000), survivor);
    const back = await placedAs(survivor, [dead, 'sim-c'], 180000);
    assert.equal(back.failures, false, 'no failed action');
  });
});
