import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBootEnv } from '../../src/hw/bootenv/index.js';
import { abandonTrial, armTrial, commitSlot, markGood, readBootState, simulateBoot } from '../../src/upgrade/bootflow.js';
import { SlotStore, type SlotName } from '../../src/upgrade/slots.js';
import { writeImage, sha256 } from '../../src/upgrade/testing.js';

describe('upgrade boot flow (simulated bootloader)', () => {
  let dir: string;
  let store: SlotStore;
  let env: FileBootEnv;
  const install = (s: SlotName, version: string) => {
    writeImage(store.slotDir(s), { 'app.bin': `app ${version}` });
    store.writeRecordInto(store.slotDir(s), {
      format: 1, slot: s, version, compatible: 'f', installedAt: 'now', packageSha256: '0'.repeat(64), keyId: 'k',
      files: [{ path: 'app.bin', size: `app ${version}`.length, mode: 0o644, sha256: sha256(`app ${version}`) }],
    });
  };
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'us-boot-'));
    store = new SlotStore(join(dir, 'slots'), join(dir, 'slots', 'cmdline'));
    env = new FileBootEnv(join(dir, 'bootenv'));
    install('A', '1.0.0');
    install('B', '2.0.0');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('an unhealthy trial that is never marked good falls back after exactly bootAttempts boots', async () => {
    await commitSlot(env, 'A');
    await armTrial(env, 'A', 'B', 3);
    const seen = [];
    for (let i = 0; i < 5; i++) seen.push(await simulateBoot(env, store));
    assert.deepEqual(seen.map((b) => `${b.slot}:${b.reason}`), ['B:trial', 'B:trial', 'B:trial', 'A:rollback', 'A:good']);
    assert.deepEqual(seen.slice(0, 3).map((b) => b.triesLeft), [2, 1, 0]);
    assert.equal(store.bootedSlot(), 'A');
    assert.deepEqual(await readBootState(env), { good: 'A', trial: undefined, triesLeft: 0 });
  });

  it('a trial slot that does not load uses up its attempts within one power-on and boots the good slot', async () => {
    await armTrial(env, 'A', 'B', 2);
    rmSync(join(store.slotDir('B'), 'slot.json'));
    const b = await simulateBoot(env, store);
    assert.deepEqual([b.slot, b.reason, b.failedLoads], ['A', 'rollback', ['B', 'B']]);
  });

  it('boots the other slot as a last resort when the good one does not load, and fails loudly when neither does', async () => {
    await commitSlot(env, 'A');
    rmSync(store.slotDir('A'), { recursive: true });
    const b = await simulateBoot(env, store);
    assert.deepEqual([b.slot, b.reason], ['B', 'last-resort']);
    rmSync(store.slotDir('B'), { recursive: true });
    await assert.rejects(simulateBoot(env, store), (e: Error & { code: string }) => e.code === 'US_ERR_NO_BOOTABLE_SLOT' && /A: empty/.test(e.message));
  });

  it('a board whose env was never written boots the first loadable slot', async () => {
    const b = await simulateBoot(env, store);
    assert.deepEqual([b.slot, b.reason], ['A', 'good']);
  });

  it('ignores garbage in the environment rather than booting it', async () => {
    writeFileSync(env.path, 'us_slot_good=A\nus_slot_try=Z\nus_try_left=-4\n');
    assert.deepEqual(await readBootState(env), { good: 'A', trial: undefined, triesLeft: 0 });
    assert.equal((await simulateBoot(env, store)).slot, 'A');
  });

  it('mark-good commits only the running trial; on the good slot it is a no-op', async () => {
    await commitSlot(env, 'A');
    await assert.rejects(markGood(env, store), (e: Error & { code: string }) => e.code === 'US_ERR_UPGRADE_STATE' && /cannot tell which slot/.test(e.message));
    await simulateBoot(env, store);
    await armTrial(env, 'A', 'B', 3);
    assert.deepEqual(await markGood(env, store), { slot: 'A', committed: false, version: '1.0.0' });
    assert.deepEqual(await readBootState(env), { good: 'A', trial: 'B', triesLeft: 3 }, 'a pending trial stays armed');
    await simulateBoot(env, store);
    assert.deepEqual(await markGood(env, store), { slot: 'B', committed: true, version: '2.0.0' });
    store.writeCmdline('A');
    await assert.rejects(markGood(env, store), (e: Error & { code: string }) => e.code === 'US_ERR_UPGRADE_STATE' && /neither/.test(e.message));
  });

  it('rollback abandons an armed trial; without one it says there is nothing to roll back', async () => {
    await armTrial(env, 'A', 'B', 3);
    assert.deepEqual(await abandonTrial(env), { abandoned: 'B', nextBoot: 'A' });
    assert.equal((await simulateBoot(env, store)).slot, 'A');
    await assert.rejects(abandonTrial(env), (e: Error & { code: string }) => e.code === 'US_ERR_UPGRADE_STATE');
  });

  it('verify finds a changed, missing or extra file', () => {
    assert.deepEqual(store.verify('A'), { ok: true, problems: [] });
    writeFileSync(join(store.slotDir('A'), 'app.bin'), 'app 1.0.1');
    assert.match(store.verify('A').problems[0]!, /SHA-256/);
    rmSync(join(store.slotDir('A'), 'app.bin'));
    assert.match(store.verify('A').problems[0]!, /missing/);
    install('B', '2.0.0');
    writeFileSync(join(store.slotDir('B'), 'extra'), 'x');
    assert.match(store.verify('B').problems[0]!, /unrecorded file\(s\): extra/);
  });
});
