/**
 * The upgrade-trial-failed alarm (src/mgmt/trial-alarm.ts): the verdict on its own (what is
 * remembered, raised, cleared), then on a real store, alarm list, file boot environment and slots
 * driven by the simulated bootloader: a trial that booted and was rolled back raises the alarm once
 * (also when a new controller finds it), one that never loaded is found by the controller after the
 * restart, one abandoned before it booted raises nothing, and a later committed trial clears it.
 */
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBoardProfile, type BoardProfile } from '../../src/config/board-profile.js';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { trialVerdict, watchFirmwareTrial, type TrialMemory, type TrialObservation } from '../../src/mgmt/trial-alarm.js';
import { AlarmList } from '../../src/store/alarms.js';
import { Store } from '../../src/store/journal.js';
import { upgradeSetupFor } from '../../src/upgrade/board-setup.js';
import { abandonTrial, armTrial, commitSlot, markGood, simulateBoot } from '../../src/upgrade/bootflow.js';
import { sha256, writeImage } from '../../src/upgrade/testing.js';
import type { SlotName } from '../../src/upgrade/slots.js';

const VERSIONS: Record<SlotName, string> = { A: '1.0.0', B: '1.1.0' };
const obs = (running: SlotName | null, good: SlotName | null, trial: SlotName | null): TrialObservation => ({ running, good, trial, version: (s) => (s ? VERSIONS[s] : null) });

describe('upgrade-trial-failed: the verdict', () => {
  const mem = (o: Partial<TrialMemory> = {}): TrialMemory => ({ slot: 'B', version: '1.1.0', booted: false, seenBy: 'c1', ...o });

  it('remembers an armed trial, and that it booted; says nothing while it is armed', () => {
    assert.deepEqual(trialVerdict(undefined, obs('A', 'A', 'B'), 'c1'), { remember: mem() });
    assert.deepEqual(trialVerdict(mem(), obs('B', 'A', 'B'), 'c2'), { remember: mem({ booted: true }) }, 'booted; still the controller that first saw it');
    assert.deepEqual(trialVerdict(mem({ booted: true }), obs('B', 'A', 'B'), 'c1'), {}, 'nothing new: no write');
    assert.deepEqual(trialVerdict(undefined, obs('A', 'A', null), 'c1'), {}, 'no trial, nothing remembered');
  });

  it('committed: cleared and forgotten', () => {
    const v = trialVerdict(mem({ booted: true }), obs('B', 'B', null), 'c1');
    assert.equal(v.remember, null);
    assert.equal(v.raise, undefined);
    assert.match(v.clear!, /slot B \(1\.1\.0\) was committed/);
  });

  it('booted then given up, or armed before a restart and gone after: raised, naming the trial and the slot the board runs', () => {
    const a = trialVerdict(mem({ booted: true }), obs('A', 'A', null), 'c1');
    assert.equal(a.remember, null);
    assert.match(a.raise!, /trial of slot B \(1\.1\.0\) booted, then was given up.*runs slot A \(1\.0\.0\)/);
    const b = trialVerdict(mem(), obs('A', 'A', null), 'c2');
    assert.match(b.raise!, /slot B \(1\.1\.0\) was armed when the board restarted/);
  });

  it('abandoned before it booted, seen by the same controller: forgotten, no alarm', () => {
    assert.deepEqual(trialVerdict(mem(), obs('A', 'A', null), 'c1'), { remember: null });
  });
});

describe('upgrade-trial-failed: on a store, an alarm list and the simulated bootloader', () => {
  let dir: string;
  let board: BoardProfile;
  let store: Store;
  let alarms: AlarmList;
  const stops: Array<() => void> = [];
  const setup = () => upgradeSetupFor(board);
  const install = (s: SlotName, version: string) => {
    const slots = setup().store;
    writeImage(slots.slotDir(s), { 'app.bin': `app ${version}` });
    slots.writeRecordInto(slots.slotDir(s), {
      format: 1, slot: s, version, compatible: 'understudy-sim', installedAt: 'now', packageSha256: '0'.repeat(64), keyId: 'k',
      files: [{ path: 'app.bin', size: `app ${version}`.length, mode: 0o644, sha256: sha256(`app ${version}`) }],
    });
  };
  /** A controller starting: a new watcher (a new process id), its first look awaited. */
  const controller = async () => {
    const w = watchFirmwareTrial(board, alarms, store);
    stops.push(w.stop);
    await w.check();
    return w;
  };
  const active = () => alarms.list({ activeOnly: true }).filter((a) => a.alarmTypeId === 'upgrade-trial-failed');

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-trial-'));
    const b = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board', 'sim-a.json'), 'utf8'));
    for (const k of ['ha', 'partner', 'watchdog', 'fencing', 'console']) delete b[k];
    b.storageDir = join(dir, 'store');
    writeFileSync(join(dir, 'board.json'), JSON.stringify(b));
    board = loadBoardProfile(join(dir, 'board.json'));
    mkdirSync(board.storageDir, { recursive: true });
    store = new Store(board.storageDir);
    alarms = new AlarmList(store, { board: board.name });
    install('A', '1.0.0');
    await commitSlot(setup().env, 'A');
    await simulateBoot(setup().env, setup().store);
  });
  afterEach(() => {
    for (const s of stops.splice(0)) s();
    store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a trial that booted and was rolled back by the bootloader: raised once, kept by the next controller, cleared by a later commit', async () => {
    install('B', '1.1.0');
    await armTrial(setup().env, 'A', 'B', 1);
    await controller(); // sees it armed
    await simulateBoot(setup().env, setup().store); // boots B (the last attempt)
    await controller(); // the controller in the trial
    await simulateBoot(setup().env, setup().store); // attempts used up: rollback to A
    const w = await controller();
    assert.equal(active().length, 1, 'raised');
    assert.match(active()[0]!.alarmText, /slot B \(1\.1\.0\) booted, then was given up.*runs slot A \(1\.0\.0\)/);
    let changes = 0;
    alarms.on('change', () => changes++);
    await w.check();
    await controller();
    assert.equal(changes, 0, 'not raised twice');
    assert.equal(active().length, 1, 'still active after a restart');
    assert.equal(store.events({ kind: 'upgrade', limit: 50 }).filter((e) => /ALARM upgrade-trial-failed/.test(e.message)).length, 1, 'journaled once');

    install('B', '1.2.0');
    await armTrial(setup().env, 'A', 'B', 3);
    const inTrial = await controller();
    await simulateBoot(setup().env, setup().store);
    await markGood(setup().env, setup().store);
    await inTrial.check();
    assert.equal(active().length, 0, 'cleared by the commit');
  });

  it('a trial that never loaded is found by the controller after the restart; one abandoned before it booted raises nothing', async () => {
    await armTrial(setup().env, 'A', 'B', 2); // slot B holds nothing: it cannot load
    const w = await controller();
    await abandonTrial(setup().env);
    await w.check();
    assert.equal(active().length, 0, 'the operator abandoned it before it booted');

    await armTrial(setup().env, 'A', 'B', 2);
    await w.check();
    const boot = await simulateBoot(setup().env, setup().store);
    assert.deepEqual([boot.slot, boot.reason], ['A', 'rollback']);
    await controller();
    assert.equal(active().length, 1);
    assert.match(active()[0]!.alarmText, /slot B \(version unknown\) was armed when the board restarted/);
  });
});
