/**
 * Several guests on one shelf under Pacemaker (issue 18, docs/pacemaker.md "Several guests on one
 * shelf"): three boards, real corosync, pacemaker and QEMU, `chassis up --boards 3 --manager
 * pacemaker --guest primary --guests 2`.
 *
 * - guest 1 is the pair's (sim-a serves, sim-b backs up), its controllers started by the chassis;
 *   guest 2 is a promotable clone of its own, `guest2-clone`, started by Pacemaker from nothing on
 *   its natural pair (sim-c serves, sim-b backs up): one primary per blade, each guest on its own
 *   service address, both protected; the chassis' first-placement constraints gone once it runs;
 * - sim-b, which holds both backups, loses power under load on both guests: both primaries serve
 *   on with nothing acknowledged lost and never move; Pacemaker starts each guest's second instance
 *   on the other remaining board (guest 1's on sim-c, guest 2's on sim-a), where the agent pairs it
 *   with the promoted node and the primary adopts it: both protected again without sim-b, still one
 *   primary per blade, no failed action.
 *
 * One chassis for the file. Waits are bounds on convergence, never assertions on speed.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { Chassis } from '../../src/sim/chassis/rig.js';
import { guestOnBoard, guestServiceAddress, type ChassisBoard } from '../../src/sim/chassis/layout.js';
import { startLoad, waitProtectedAny } from '../../src/sim/pair.js';
import type { LoadResult } from '../../src/sim/load.js';
import { callControl } from '../../src/mgmt/ipc.js';
import { eventually } from '../support/eventually.js';
import { ClusterTools, postMortemOnFailure } from '../support/pacemaker.js';

const NAME = 'pmguest';
const RUN = `/tmp/us-${NAME}`;

describe('several guests on one shelf under Pacemaker (3 boards, 2 guests, real corosync, pacemaker and QEMU)', function () {
  this.timeout(300000);
  let chassis: Chassis | undefined;
  const tools = new ClusterTools(NAME, RUN);

  /** Until crm_mon (asked on `on`) shows guest k's clone promoted on `promoted` and unpromoted on `unpromoted` only. */
  const placedAs = (k: number, promoted: string, unpromoted: string, on: string, bound = 180000) => eventually(`Pacemaker shows guest ${k} promoted on ${promoted}, unpromoted on ${unpromoted}`, async () => {
    const pl = await tools.placement(on, k === 1 ? 'guest' : `guest${k}`);
    return pl && pl.promoted.join() === promoted && pl.unpromoted.join() === unpromoted ? pl : undefined;
  }, bound, 1000);

  /** Guest k's controller on `board`: its status. */
  const status = (board: ChassisBoard, k: number) => callControl(guestOnBoard(chassis!.layout, board, k).controlSocket, 'status', {}, 10000) as Promise<any>;

  /** What a load through a fault must show: answered, no guest limit reached, nothing acknowledged lost. */
  const nothingLost = (k: number, res: LoadResult) => {
    assert.ok(res.acked > 100, `guest ${k}: the load ran (${res.acked} answered)`);
    assert.equal(res.limitReplies, 0, `guest ${k}: ERR FULL ${res.limitReplies} times (a guest limit reached)`);
    assert.deepEqual(res.verify!.missing, [], `guest ${k}: acknowledged registrations missing`);
    assert.deepEqual(res.verify!.retriedDifferent, [], `guest ${k}: retried ids answered differently`);
    assert.deepEqual(res.verify!.callIdsReused, [], `guest ${k}: call ids acknowledged twice`);
    assert.ok(res.verify!.retriedIdentical > 0, `guest ${k}: retries were answered from the guest's memory`);
    assert.ok(res.registered > 0 && res.calls > 0, `guest ${k}: the mix ran (${res.registered} registered, ${res.calls} calls)`);
  };

  before(async function () {
    this.timeout(600000);
    rmSync(RUN, { recursive: true, force: true });
    chassis = await Chassis.up({ name: NAME, runDir: RUN, boards: 3, manager: 'pacemaker', guest: 'primary', guests: 2, timeoutMs: 480000 });
  });

  after(async function () {
    this.timeout(120000);
    await chassis?.down();
  });
  postMortemOnFailure(RUN, ['sim-a', 'sim-b', 'sim-c', 'sim-a/guest2', 'sim-b/guest2', 'sim-c/guest2'],
    (b) => (b.includes('/') ? guestOnBoard(chassis!.layout, b.split('/')[0] as ChassisBoard, 2).storageDir : chassis!.layout.boards[b as ChassisBoard].storageDir));

  it('two guests share the shelf: guest 2, started by Pacemaker from nothing, serves on sim-c and guest 1 on sim-a (one primary per blade), sim-b backs up both, each on its own service address; the first-placement constraints are gone; no failed action', async function () {
    this.timeout(600000);
    const L = chassis!.layout;
    assert.deepEqual(await waitProtectedAny(L, 300000, 1), { primary: 'sim-a', backup: 'sim-b' });
    assert.deepEqual(await waitProtectedAny(L, 300000, 2), { primary: 'sim-c', backup: 'sim-b' });
    const one = await placedAs(1, 'sim-a', 'sim-b', 'sim-c');
    const two = await placedAs(2, 'sim-c', 'sim-b', 'sim-c');
    assert.equal(one.failures || two.failures, false, `no failed action: ${one.xml.match(/<failures>[\s\S]*<\/failures>/)?.[0] ?? ''}`);
    // Each guest is its own: its own address, store and controller on the shared board.
    const [b1, b2] = [await status('sim-b', 1), await status('sim-b', 2)];
    assert.notEqual(b1.pid, b2.pid, 'sim-b runs a controller per guest');
    assert.equal(b1.role, 'BACKUP');
    assert.equal(b2.role, 'BACKUP');
    assert.equal(b2.partner.heartbeat.sender, 'sim-c');
    assert.equal((await status('sim-c', 2)).serving, true);
    assert.equal((await status('sim-c', 1)).role, 'STANDALONE', 'sim-c\'s guest 1 controller stays idle: a spare for guest 1');
    const cons = await tools.crm('sim-c', ['cibadmin', '--query', '--scope', 'constraints']);
    assert.doesNotMatch(cons.out, /guest2-clone-first-/, 'the first placement\'s constraints were removed once both instances ran');
    // Both serve, each on its own address, with nothing in common but the AUTH service.
    const loads = [1, 2].map((k) => startLoad(L, { rate: 60, durationMs: 4000, tag: `P${k}x`, retryMs: 20, verify: true, regEvery: 10, address: guestServiceAddress(k) }));
    for (const [i, l] of loads.entries()) nothingLost(i + 1, await l.result);
  });

  it('sim-b, holding both backups, loses power under load on both guests: both primaries serve on with nothing acknowledged lost and never move; each guest\'s second instance starts on the other remaining board, paired and cloned to: both protected again without sim-b; no failed action', async function () {
    this.timeout(900000);
    const L = chassis!.layout;
    const t0 = Date.now();
    const loads = [1, 2].map((k) => startLoad(L, { rate: 60, durationMs: 60000, tag: `F${k}x`, retryMs: 20, verify: true, regEvery: 10, address: guestServiceAddress(k) }));
    await new Promise((r) => setTimeout(r, 3000));
    await chassis!.power('sim-b', 'off');
    // Each guest protected again on the board that serves the other one (still one primary per blade).
    const [p1, p2] = await Promise.all([waitProtectedAny(L, 400000, 1), waitProtectedAny(L, 400000, 2)]);
    assert.deepEqual(p1, { primary: 'sim-a', backup: 'sim-c' }, 'guest 1: sim-a serves on, sim-c its new backup');
    assert.deepEqual(p2, { primary: 'sim-c', backup: 'sim-a' }, 'guest 2: sim-c serves on, sim-a its new backup');
    for (const [i, l] of loads.entries()) nothingLost(i + 1, await l.result);
    const one = await placedAs(1, 'sim-a', 'sim-c', 'sim-a');
    const two = await placedAs(2, 'sim-c', 'sim-a', 'sim-a');
    // The power loss is not a failed action; a monitor that saw a pairing as a stopped instance would be.
    assert.equal(one.failures || two.failures, false, `no failed action: ${two.xml.match(/<failures>[\s\S]*<\/failures>/)?.[0] ?? ''}`);
    // The primaries never left PRIMARY: no takeover, no switchover since the fault.
    for (const [board, k] of [['sim-a', 1], ['sim-c', 2]] as const) {
      const roles = ((await callControl(guestOnBoard(L, board, k).controlSocket, 'events', { kind: 'role.transition', limit: 100 })) as { events: Array<{ at: string; message: string }> }).events
        .filter((e) => Date.parse(e.at) >= t0).map((e) => e.message);
      assert.ok(!roles.some((m) => /^PRIMARY ->/.test(m)), `guest ${k} on ${board} left PRIMARY: ${roles.join('; ')}`);
    }
    await eventually('sim-b offline for Pacemaker', async () => (!(await tools.online('sim-a')).includes('sim-b') ? true : undefined), 60000, 1000);
  });
});
