/**
 * Poison inputs on the simulated chassis with real QEMU and the guest's poison build
 * (guests/dx-legacy-poison.json: a REG of crash* crashes the guest, hang* hangs it). Under load, a
 * poison request takes down both copies; the pair restores the checkpoint, confirms the input by
 * where the replay fails, skips it, answers its client `ERR POISON q<N>` (a retry of its id too),
 * quarantines it, serves again with every acknowledged request present and protects itself again.
 * A crash of the primary's copy alone is an ordinary failover, and nothing is quarantined.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { PACKAGE_ROOT, partnerOf } from '../../src/sim/chassis/layout.js';
import { waitProtected } from '../../src/sim/pair.js';
import { PairUnderTest } from '../support/pair.js';

const NAME = `px${process.pid % 1000}`;

interface QuarantineList { entries: Array<{ id: number; seq: number; payloadText: string | null; status: string; failures: Array<{ copy: string; how: string }>; answered: number }> }

describe('poison inputs: both copies fail, the pair recovers without the input (real QEMU)', function () {
  this.timeout(900000);
  const p = new PairUnderTest(NAME, { guestFile: join(PACKAGE_ROOT, 'guests', 'dx-legacy-poison.json') });
  before(() => p.up());
  after(() => p.down());

  /** The quarantine as the board serving now keeps it. */
  async function quarantine(): Promise<QuarantineList> {
    for (const b of [p.primary, partnerOf(p.primary)]) {
      const role = ((await p.ctl(b, 'role').catch(() => ({}))) as { role?: string }).role;
      if (role === 'PRIMARY') { p.primary = b; break; }
    }
    return (await p.ctl(p.primary, 'quarantine.list', {})) as QuarantineList;
  }

  /** Under load, `sub` (a poison subscriber name) is registered once by its own client; returns its answer. */
  function poisonUnderLoad(sub: string, id: string) {
    return async () => {
      const before = (await quarantine()).entries.length;
      let answer = '';
      const { res } = await p.loadThrough(12000, 3000, async () => {
        [answer] = await p.ask([`REG ${sub}`], 150, [id]);
      });
      assert.match(answer, new RegExp(`^${id} ERR POISON q\\d+$`), `the poison request's client is answered with the quarantine error (got "${answer}")`);
      // A retry of its id (a new client socket, the same bytes) gets the same answer, from the quarantine.
      const [retry] = await p.ask([`REG ${sub}`], 20, [id]);
      assert.equal(retry, answer, 'a retry of the poison id gets the same error');
      const q = (await quarantine()).entries;
      assert.equal(q.length, before + 1, 'one more input quarantined');
      const entry = q.find((e) => e.payloadText === `${id} REG ${sub}`);
      assert.ok(entry, `the quarantine holds "${id} REG ${sub}": ${JSON.stringify(q.map((e) => e.payloadText))}`);
      assert.equal(entry.status, 'active');
      assert.ok(entry.failures.some((f) => f.copy === 'restored'), `confirmed by a restored copy failing on it: ${JSON.stringify(entry.failures)}`);
      assert.ok(entry.answered >= 1, 'the retry was answered from the quarantine');
      // The pair protects itself again: the fenced board is back as backup with a new clone.
      p.primary = await waitProtected(p.chassis.layout, 300000);
      const st = await p.settledStates();
      assert.ok(st.same, `both copies hold the same state after the recovery: ${JSON.stringify(st)}`);
      return res;
    };
  }

  it('a request that crashes both copies is skipped, answered ERR POISON and quarantined; nothing acknowledged is lost',
    poisonUnderLoad('crashAlpha', 'pz1'));

  it('a second, different poison input within the minute is handled the same way', poisonUnderLoad('crashBeta', 'pz2'));

  it('a request that hangs both copies is found within the hang bound and quarantined the same way', poisonUnderLoad('hangGamma', 'pz3'));

  it('the quarantine is kept on both boards; a release on the primary is journaled, clears its alarm and reaches the backup', async () => {
    const backup = partnerOf(p.primary);
    const onBackup = (await p.ctl(backup, 'quarantine.list', {})) as QuarantineList;
    assert.equal(onBackup.entries.filter((e) => e.status === 'active').length, 3, 'the backup learnt the pair\'s quarantine');
    const hang = (await quarantine()).entries.find((e) => e.payloadText === 'pz3 REG hangGamma')!;
    const alarmsOf = async () => ((await p.ctl(p.primary, 'alarms', { active: true })) as { 'ietf-alarms:alarms': { 'alarm-list': { alarm: Array<{ 'alarm-type-id': string; 'alarm-type-qualifier': string }> } } })['ietf-alarms:alarms']['alarm-list'].alarm
      .filter((a) => /poison-input/.test(a['alarm-type-id'])).map((a) => a['alarm-type-qualifier']);
    assert.ok((await alarmsOf()).includes(`q${hang.id}`), 'a poison-input alarm per quarantined input');
    await p.ctl(p.primary, 'quarantine.release', { id: `q${hang.id}`, by: 'test' });
    assert.ok(!(await alarmsOf()).includes(`q${hang.id}`), 'its alarm is cleared by the release');
    let onBackupNow: QuarantineList | undefined;
    for (let i = 0; i < 50; i++) {
      onBackupNow = (await p.ctl(backup, 'quarantine.list', {})) as QuarantineList;
      if (onBackupNow.entries.find((e) => e.payloadText === 'pz3 REG hangGamma')?.status === 'released') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(onBackupNow!.entries.find((e) => e.payloadText === 'pz3 REG hangGamma')?.status, 'released', 'the backup learnt the release');
  });

  it('both copies lost to a fault that is not an input (an NMI to each): restored and replayed whole, nothing quarantined', async () => {
    const before = (await quarantine()).entries.length;
    const old = p.primary;
    const backup = partnerOf(old);
    const since = new Date().toISOString();
    await p.loadThrough(12000, 3000, async () => {
      await p.ctl(backup, 'guest.inject', { nmi: true });
      await p.ctl(old, 'guest.inject', { nmi: true });
    });
    p.primary = await waitProtected(p.chassis.layout, 300000);
    assert.equal((await quarantine()).entries.length, before, 'nothing quarantined');
    const events = ((await p.ctl(backup, 'events', { limit: 200, kind: 'recovery' })) as { events: Array<{ at: string; message: string }> }).events.filter((e) => e.at >= since);
    assert.ok(events.some((e) => /^recovered from the checkpoint .* 0 poison inputs skipped/.test(e.message)), `the board with the checkpoint recovered, skipping nothing: ${JSON.stringify(events.map((e) => e.message))}`);
  });

  it('a crash of only the primary\'s copy (not a poison input) is an ordinary failover: nothing is quarantined', async () => {
    const before = (await quarantine()).entries.length;
    const old = p.primary;
    await p.loadThrough(10000, 3000, () => p.ctl(old, 'guest.inject', { nmi: true }));
    p.primary = await waitProtected(p.chassis.layout, 300000);
    assert.notEqual(p.primary, old, 'the backup took over');
    assert.equal((await quarantine()).entries.length, before, 'nothing quarantined');
  });
});
