/**
 * Decision table rows 6-7 of docs/pacemaker.md: a board cut off the backplane while its controller
 * runs, under real corosync and Pacemaker (three boards, `--manager pacemaker --guest primary`,
 * the pair's profiles with `ha.manager: pacemaker`), real QEMU guests and a black-box client.
 * `chassis cut ethernet --board X` puts X's plink down: X leaves the corosync membership (one of three:
 * no quorum) and the pair's replication channel to it is gone; the serial link, between sim-a and
 * sim-b only, still carries heartbeats.
 *
 * - the primary cut off, its backup still heard on the serial link: it withholds its replies
 *   (never serves alone), loses quorum and steps down (FAULT); the backup, on the side with quorum,
 *   takes over with every acknowledged input; Pacemaker promotes it and places the second instance
 *   on the spare, which it adopts and clones to;
 * - the backup cut off, with no serial link to it (an N+1 pair): the primary withholds until
 *   corosync shows the backup gone from its quorate side, then fences it and serves on; the
 *   second instance goes to the third board;
 * - the primary cut off with no serial link to its backup: neither fences on the pair's own
 *   timers; corosync decides: the backup's side, quorate, fences the primary and promotes; the
 *   primary, without quorum, steps down.
 *
 * Nothing acknowledged is lost in any of them. One chassis for the file; waits are bounds on
 * convergence, never assertions on speed.
 */
import assert from 'node:assert/strict';
import { partnerOf, type ChassisBoard } from '../../src/sim/chassis/layout.js';
import { waitProtectedAny } from '../../src/sim/pair.js';
import { Store } from '../../src/store/journal.js';
import { callControl } from '../../src/mgmt/ipc.js';
import { eventually } from '../support/eventually.js';
import { ClusterTools, postMortemOnFailure } from '../support/pacemaker.js';
import { PairUnderTest } from '../support/pair.js';

const NAME = 'pm18q';

describe('Pacemaker and partitions: a board cut off the backplane (3 boards, real corosync, pacemaker and QEMU; decision table rows 6-7)', function () {
  this.timeout(300000);
  const p = new PairUnderTest(NAME, { boards: 3, manager: 'pacemaker' });
  const tools = new ClusterTools(NAME, `/tmp/us-${NAME}`);

  /** Until crm_mon (asked on `on`) shows `promoted` promoted and exactly `unpromoted` unpromoted. */
  const placedAs = (promoted: string, unpromoted: string[], bound = 180000, on = promoted) => eventually(`Pacemaker shows ${promoted} promoted, ${unpromoted.join(' and ')} unpromoted`, async () => {
    const pl = await tools.placement(on);
    return pl && pl.promoted.join() === promoted && pl.unpromoted.join() === [...unpromoted].sort().join() ? pl : undefined;
  }, bound, 1000);

  /**
   * Journal lines of `board` of `kind` since `since` (ms): from its controller, or, when it does not
   * answer (stopped by Pacemaker, or fenced), from its store on disk.
   */
  const journalSince = async (board: ChassisBoard, kind: string, since: number): Promise<string[]> => {
    type Ev = { at: string; message: string };
    let events: Ev[];
    try {
      events = (await callControl(p.chassis.layout.boards[board].controlSocket, 'events', { kind, limit: 500 }, 3000) as { events: Ev[] }).events;
    } catch {
      const s = new Store(p.chassis.layout.boards[board].storageDir);
      try { events = s.events({ kind, limit: 500 }); } finally { s.close(); }
    }
    return events.filter((e) => Date.parse(e.at) >= since - 500).map((e) => e.message);
  };

  /** Prints the client's view of the fault (a figure for docs/pacemaker.md, not an assertion). */
  const report = (r: { res: { gaps: Array<[number, number]>; acked: number }; faultAt: number }) => {
    // The longest silence that began within a second of the cut (the replies of the last requests
    // before it may still arrive a few ms after it).
    const g = r.res.gaps.filter(([a, b]) => b >= r.faultAt && a <= r.faultAt + 1000).sort((x, y) => (y[1] - y[0]) - (x[1] - x[0]))[0];
    console.log(`      cut → first good reply: ${g ? `${g[1] - r.faultAt} ms` : 'no gap seen'}; ${r.res.acked} answered`);
  };

  /** Under load, cuts `cut` off the backplane until `other` serves; nothing acknowledged lost. Returns when the cut began (ms). */
  const cutUntilServes = async (cut: ChassisBoard, other: ChassisBoard): Promise<number> => {
    const t0 = Date.now();
    report(await p.loadThrough(60000, 3000, async () => {
      await p.chassis.cut('ethernet', cut);
      await eventually(`${other} serves`, async () => ((await p.ctl(other, 'status')).role === 'PRIMARY' ? true : undefined), 120000, 250);
    }));
    return t0;
  };

  /** Role changes journaled by `board` since `since`, as [from, to]. */
  const movesSince = async (board: ChassisBoard, since: number): Promise<Array<[string, string]>> =>
    (await journalSince(board, 'role', since)).map((m) => /^(\S+) -> (\S+):/.exec(m)).filter((m): m is RegExpExecArray => m !== null).map((m) => [m[1]!, m[2]!]);

  /** Where the guest is, as the tests move it: the primary, its backup, the idle board. */
  const at = { primary: 'sim-a' as ChassisBoard, backup: 'sim-b' as ChassisBoard, idle: 'sim-c' as ChassisBoard };

  before(async function () {
    this.timeout(420000);
    await p.up();
  });

  after(async function () {
    this.timeout(120000);
    await p.chassis.heal('ethernet').catch(() => undefined);
    await p.down();
  });

  afterEach(async function () {
    this.timeout(60000);
    await p.chassis.heal('ethernet').catch(() => undefined);
  });
  postMortemOnFailure(`/tmp/us-${NAME}`, ['sim-a', 'sim-b', 'sim-c'], (b) => p.chassis.layout.boards[b as ChassisBoard].storageDir);

  it('the primary cut off, its backup heard on the serial link: it withholds its replies, loses quorum and steps down; the backup takes over on the side with quorum; Pacemaker promotes it, the spare becomes its backup; nothing acknowledged lost', async function () {
    this.timeout(900000);
    const cut = p.primary as ChassisBoard;
    const other = partnerOf(cut);
    const spare: ChassisBoard = 'sim-c';
    await placedAs(cut, [other]);
    const t0 = await cutUntilServes(cut, other);
    const rep = await journalSince(cut, 'replication', t0);
    assert.ok(rep.some((m) => /^REPLIES WITHHELD: /.test(m)), `${cut} withheld its replies: ${rep.join(' | ')}`);
    assert.ok(!rep.some((m) => /^UNPROTECTED: /.test(m)), `${cut} never served alone: ${rep.join(' | ')}`);
    const quorum = await journalSince(cut, 'quorum', t0);
    assert.ok(quorum.some((m) => m.startsWith(`corosync: NO QUORUM, members ${cut} (ring `)), `${cut} saw its side lose quorum: ${quorum.join(' | ')}`);
    const cutMoves = await movesSince(cut, t0);
    assert.deepEqual(cutMoves[0], ['PRIMARY', 'FAULT'], `${cut} stepped down to FAULT: ${JSON.stringify(cutMoves)}`);
    assert.match((await journalSince(cut, 'role', t0)).find((m) => /^PRIMARY -> FAULT/.test(m))!, /no quorum while its replies are withheld/);
    // The backup takes over once: on the FAULT it hears, or (the cut primary's heartbeats late at
    // that moment) on corosync's verdict, fencing it first. Both are safe: nothing was released.
    const otherMoves = await movesSince(other, t0);
    assert.ok(JSON.stringify(otherMoves) === JSON.stringify([['BACKUP', 'PRIMARY']]) || JSON.stringify(otherMoves) === JSON.stringify([['BACKUP', 'FENCING'], ['FENCING', 'PRIMARY']]), `${other} took over once: ${JSON.stringify(otherMoves)}`);
    const how = (await journalSince(other, 'role', t0)).find((m) => /^BACKUP -> (PRIMARY|FENCING)/.test(m))!;
    assert.match(how, new RegExp(`partner reports FAULT|corosync shows this side quorate without ${cut}`));

    // Pacemaker, on the side with quorum: the survivor promoted, the second instance on the spare, adopted and cloned to.
    await placedAs(other, [spare], 240000);
    assert.deepEqual(await waitProtectedAny(p.chassis.layout, 300000), { primary: other, backup: spare });
    await p.chassis.heal('ethernet');
    await eventually(`${cut} back in the cluster`, async () => ((await tools.online(other)).includes(cut) ? true : undefined), 120000, 1000);
    const pl = await placedAs(other, [spare], 60000);
    assert.equal(pl.failures, false, `no failed action: ${pl.xml.match(/<failures>[\s\S]*?<\/failures>/)?.[0] ?? ''}`);
    await p.loadThrough(8000, 0, async () => undefined);
    Object.assign(at, { primary: other, backup: spare, idle: cut });
  });

  it('the backup cut off with no serial link to it (an N+1 pair): the primary withholds until corosync shows the backup gone from its quorate side, then fences it and serves on; the second instance goes to the third board; nothing acknowledged lost', async function () {
    this.timeout(900000);
    const { primary, backup: cut, idle: third } = at;
    await placedAs(primary, [cut]);
    const t0 = Date.now();
    const r = await p.loadThrough(60000, 3000, async () => {
      await p.chassis.cut('ethernet', cut);
      await eventually(`${primary} fenced ${cut}`, async () => ((await journalSince(primary, 'fence', t0)).some((m) => m.startsWith(`partner ${cut} fenced`)) ? true : undefined), 120000, 500);
    });
    report(r);
    assert.deepEqual(await movesSince(primary, t0), [], `${primary} never left PRIMARY`);
    const roles = await journalSince(primary, 'role', t0);
    assert.ok(roles.some((m) => /corosync arbitrates/.test(m)), `${primary} left the silence to corosync: ${roles.join(' | ')}`);
    const rep = await journalSince(primary, 'replication', t0);
    const withheld = rep.findIndex((m) => /^REPLIES WITHHELD: /.test(m));
    // Served alone once corosync showed the backup gone (the gate, or the fence that follows it: whichever comes first).
    const alone = rep.findIndex((m) => new RegExp(`^UNPROTECTED: (the backup ${cut} was fenced|.*withheld \\d+ ms until this board could serve alone)`).test(m));
    assert.ok(withheld >= 0 && alone > withheld, `${primary} withheld its replies, then served alone once corosync showed ${cut} gone: ${rep.join(' | ')}`);
    // The fence came after corosync's verdict, not on the pair's own timers.
    const q = await journalSince(primary, 'quorum', t0);
    assert.ok(q.some((m) => m.startsWith('corosync: quorate, members ') && !m.includes(cut)), `${primary}'s corosync dropped ${cut}: ${q.join(' | ')}`);
    assert.ok(!(await movesSince(cut, t0)).some(([, to]) => to === 'PRIMARY' || to === 'FENCING'), `${cut} never took over`);

    await placedAs(primary, [third], 240000);
    assert.deepEqual(await waitProtectedAny(p.chassis.layout, 300000), { primary, backup: third });
    await p.chassis.heal('ethernet');
    await eventually(`${cut} back in the cluster`, async () => ((await tools.online(primary)).includes(cut) ? true : undefined), 180000, 1000);
    Object.assign(at, { backup: third, idle: cut });
  });

  it('the primary cut off with no serial link to its backup: neither fences on the pair\'s timers; corosync decides: the backup, on the side with quorum, fences it and takes over; the primary, without quorum, steps down; nothing acknowledged lost', async function () {
    this.timeout(900000);
    const { primary: cut, backup: other, idle: third } = at;
    await placedAs(cut, [other]);
    const t0 = await cutUntilServes(cut, other);
    const moves = await movesSince(other, t0);
    assert.deepEqual(moves, [['BACKUP', 'FENCING'], ['FENCING', 'PRIMARY']], `${other} fenced and took over once: ${JSON.stringify(moves)}`);
    const cause = (await journalSince(other, 'role', t0)).find((m) => /^BACKUP -> FENCING/.test(m))!;
    assert.match(cause, new RegExp(`corosync shows this side quorate without ${cut}`));
    const rep = await journalSince(cut, 'replication', t0);
    assert.ok(!rep.some((m) => /^UNPROTECTED: /.test(m)), `${cut} never served alone: ${rep.join(' | ')}`);
    assert.ok(!(await journalSince(cut, 'fence', t0)).some((m) => m.startsWith(`partner ${other} fenced`)), `${cut} never fenced ${other}`);

    await placedAs(other, [third], 240000);
    assert.deepEqual(await waitProtectedAny(p.chassis.layout, 300000), { primary: other, backup: third });
    await p.chassis.heal('ethernet');
    await p.loadThrough(8000, 0, async () => undefined);
  });
});
