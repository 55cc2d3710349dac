/**
 * Replication end to end on the simulated chassis with real QEMU: a load generator sends numbered
 * requests to the service address; after each fault every acknowledged request must be reflected in
 * the new primary's state, and retried ids must be answered identically.
 */
import assert from 'node:assert/strict';
import { callControl } from '../../src/mgmt/ipc.js';
import { Chassis } from '../../src/sim/chassis/rig.js';
import { partnerOf, type BoardName } from '../../src/sim/chassis/layout.js';
import { gapAround, pairView, startLoad, waitProtected } from '../../src/sim/pair.js';
import type { LoadResult } from '../../src/sim/load.js';

const NAME = `rp${process.pid % 1000}`;

// The fault scenarios that still fail on a loaded machine (divergence repair, QEMU kill, switchover,
// seeded random faults) live in test/pending/ (npm run test:pending) until they pass reliably.

describe('replication on the simulated chassis (real QEMU)', function () {
  this.timeout(600000);
  let chassis: Chassis;
  let primary: BoardName;
  let tagN = 0;
  const sock = (b: BoardName) => chassis.layout.boards[b].controlSocket;
  const ctl = (b: BoardName, cmd: string, args: Record<string, unknown> = {}) => callControl(sock(b), cmd, args, 30000) as Promise<any>;

  before(async () => {
    chassis = await Chassis.up({ name: NAME, runDir: `/tmp/us-${NAME}`, guest: 'primary' });
    primary = await waitProtected(chassis.layout, 240000);
  });
  after(async () => {
    await chassis?.down({ purge: true });
  });

  /** Runs load for `ms`, applies `fault` after `faultAfter` ms, and checks nothing acknowledged was lost. */
  async function loadThrough(ms: number, faultAfter: number, fault: () => Promise<unknown>, tag = `T${tagN++}x`): Promise<{ res: LoadResult; faultAt: number }> {
    const load = startLoad(chassis.layout, { rate: 150, durationMs: ms, tag, retryMs: 20, verify: true });
    await new Promise((r) => setTimeout(r, faultAfter));
    const faultAt = Date.now();
    await fault();
    const res = await load.result;
    assert.ok(res.acked > 100, `load ran (${res.acked} answered)`);
    assert.equal(res.verify!.missing.length, 0, `acknowledged registrations missing on the new primary: ${res.verify!.missing.slice(0, 5).join(', ')}`);
    assert.equal(res.verify!.retriedDifferent.length, 0, `retried ids answered differently: ${res.verify!.retriedDifferent.slice(0, 3).join('; ')}`);
    assert.ok(res.verify!.retriedIdentical > 0);
    return { res, faultAt };
  }

  async function stateCrc(b: BoardName): Promise<string> {
    return /crc=(\w+)/.exec((await ctl(b, 'guest.manage', { command: 'STATE' })).reply)![1]!;
  }

  it('clones the guest to the backup and keeps both copies identical under load (inputs, AUTH order, digests)', async () => {
    const backup = partnerOf(primary);
    const { res } = await loadThrough(6000, 100, async () => undefined);
    assert.ok(res.registered > 50);
    // Idle now: both copies have processed the same inputs.
    const equal = async () => (await stateCrc(primary)) === (await stateCrc(backup));
    for (let i = 0; i < 50 && !(await equal()); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(await equal(), 'primary and backup states are identical');
    const rb = (await ctl(backup, 'replication.status')).replication;
    assert.equal(rb.mode, 'backup');
    assert.ok(rb.digestsCompared > 100, `replies compared: ${rb.digestsCompared}`);
    assert.equal(rb.divergences, 0);
    assert.ok(rb.authHolds > 0, 'AUTH answers were held until the clone asked for them');
    const rp = (await ctl(primary, 'replication.status')).replication;
    assert.equal(rp.lastSeq, rb.lastSeq);
    assert.ok(typeof rp.lastClone.downtimeMs === 'number', 'the guest pause of the clone is reported');
  });

  it('kill -9 of the primary controller: the backup takes over, nothing acknowledged is lost', async () => {
    const old = primary;
    const { res, faultAt } = await loadThrough(10000, 3000, () => chassis.fail(old, 'kill'));
    const v = await pairView(chassis.layout);
    assert.equal(v[partnerOf(old)]?.role, 'PRIMARY');
    assert.ok(gapAround(res.gaps, faultAt) === undefined || gapAround(res.gaps, faultAt)!.afterFaultMs < 30000);
    primary = partnerOf(old);
  });

  it('the failed board returns as backup and is cloned to again (re-protection)', async () => {
    await chassis.power(partnerOf(primary), 'on');
    const p = await waitProtected(chassis.layout, 240000);
    assert.equal(p, primary, 'the returning board did not preempt');
  });

});
