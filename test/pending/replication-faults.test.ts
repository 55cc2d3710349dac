/**
 * Replication end to end on the simulated chassis with real QEMU: a load generator sends numbered
 * requests to the service address; after each fault every acknowledged request must be reflected in
 * the new primary's state, and retried ids must be answered identically.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { callControl } from '../../src/mgmt/ipc.js';
import { Chassis } from '../../src/sim/chassis/rig.js';
import { partnerOf, type BoardName } from '../../src/sim/chassis/layout.js';
import { gapAround, pairView, startLoad, waitProtected } from '../../src/sim/pair.js';
import type { LoadResult } from '../../src/sim/load.js';

const NAME = `rf${process.pid % 1000}`;

// PENDING (not in npm test): these scenarios fail intermittently — a switchover under load lost
// acknowledged registrations in one run, and a re-clone can fail to drain for minutes. See the
// issue notes. Run with: npm run test:pending

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

  it('a divergence injected into the backup is detected and repaired by re-cloning', async () => {
    const backup = partnerOf(primary);
    const before = (await ctl(primary, 'replication.status')).replication.lastClone.at;
    // Subscribers DV0, DV1… registered (and idle: the load ends every call it sets up), then a call
    // only the backup sets up between two of them: the GETs of the next run differ.
    await loadThrough(1500, 100, async () => undefined, 'DV');
    await ctl(backup, 'guest.inject', { payload: 'zz1 CALL DV0 DV1' });
    await loadThrough(1500, 100, async () => undefined, 'DV');
    const end = Date.now() + 120000;
    let journal: any[] = [];
    for (let i = 0; i < 1000 && Date.now() < end; i++) {
      journal = (await ctl(backup, 'events', { kind: 'divergence', limit: 10 })).events;
      const after = (await ctl(primary, 'replication.status')).replication;
      if (journal.length && after.protected && after.lastClone.at !== before) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    assert.ok(journal.length > 0, 'divergence journaled on the backup');
    const after = (await ctl(primary, 'replication.status')).replication;
    assert.notEqual(after.lastClone.at, before, 're-cloned after the divergence');
    assert.equal(await stateCrc(primary), await stateCrc(partnerOf(primary)));
  });

  it('kill of the primary QEMU: the primary hands over to its up-to-date backup', async () => {
    const old = primary;
    const qemuPid = Number(readFileSync(`${chassis.layout.boards[old].storageDir}/qemu.pid`, 'utf8'));
    await loadThrough(10000, 3000, async () => process.kill(qemuPid, 'SIGKILL'));
    assert.equal((await pairView(chassis.layout))[partnerOf(old)]?.role, 'PRIMARY');
    primary = partnerOf(old);
    primary = await waitProtected(chassis.layout, 240000);
  });

  it('switchover under load: the roles swap, nothing acknowledged is lost', async () => {
    const old = primary;
    await loadThrough(8000, 3000, () => ctl(old, 'switchover'));
    const v = await pairView(chassis.layout);
    assert.equal(v[partnerOf(old)]?.role, 'PRIMARY');
    primary = await waitProtected(chassis.layout, 240000);
    assert.equal(primary, partnerOf(old));
  });

  it('seeded random faults (kill, power off, QEMU kill): zero acknowledged requests lost', async () => {
    const seed = Number(process.env.US_FAULT_SEED ?? 20261125);
    const faults = Number(process.env.US_FAULTS ?? 3);
    console.log(`      random faults: seed ${seed}, ${faults} faults (US_FAULT_SEED, US_FAULTS)`);
    let x = seed;
    const rnd = () => { x = (x * 1103515245 + 12345) % 2 ** 31; return x / 2 ** 31; };
    for (let i = 0; i < faults; i++) {
      const old = primary;
      const kind = ['kill', 'power', 'qemu'][Math.floor(rnd() * 3)]!;
      const after = 1500 + Math.floor(rnd() * 3000);
      await loadThrough(after + 5000, after, async () => {
        if (kind === 'qemu') process.kill(Number(readFileSync(`${chassis.layout.boards[old].storageDir}/qemu.pid`, 'utf8')), 'SIGKILL');
        else await chassis.fail(old, kind as 'kill' | 'power');
      });
      if (kind !== 'qemu') await chassis.power(old, 'on');
      primary = await waitProtected(chassis.layout, 240000);
    }
  });
});
