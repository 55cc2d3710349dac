/**
 * The firmware as a user gets it: image-build/build-firmware.sh bundles the controller (esbuild) with
 * its native addons into a slot image and signs it; the bundle's own CLI installs that package on a
 * simulated board, which boots it and runs the controller from the installed slot. And the
 * health-gated commit against a real controller: a trial is committed once the guest runs, and
 * abandoned (falling back) when no healthy controller answers.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { loadBoardProfile } from '../../src/config/board-profile.js';
import { armTrial, commitSlot, readBootState, simulateBoot } from '../../src/upgrade/bootflow.js';
import { upgradeSetupFor } from '../../src/upgrade/board-setup.js';
import { generateKeys } from '../../src/upgrade/keys.js';
import { sha256, writeImage } from '../../src/upgrade/testing.js';
import type { SlotName, SlotStore } from '../../src/upgrade/slots.js';
import { Rig } from '../support/rig.js';

const run = promisify(execFile);

function simBoard(dir: string): string {
  const board = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board', 'sim-a.json'), 'utf8')) as Record<string, any>;
  board.storageDir = join(dir, 'store');
  delete board.ha;
  const f = join(dir, 'board.json');
  writeFileSync(f, JSON.stringify(board, null, 2));
  return f;
}

function fakeSlot(store: SlotStore, s: SlotName, version: string): void {
  writeImage(store.slotDir(s), { 'firmware.json': version });
  store.writeRecordInto(store.slotDir(s), {
    format: 1, slot: s, version, compatible: 'understudy-sim', installedAt: 'now', packageSha256: '0'.repeat(64), keyId: 'k',
    files: [{ path: 'firmware.json', size: version.length, mode: 0o644, sha256: sha256(version) }],
  });
}

describe('firmware build and health-gated commit', function () {
  this.timeout(150000);
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-upg-fw-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('build-firmware.sh makes a slot image and package that installs, boots and runs from the slot', async () => {
    const keys = generateKeys(join(dir, 'signing'));
    const out = join(dir, 'fw');
    await run('bash', [join(PACKAGE_ROOT, 'image-build', 'build-firmware.sh'), '--no-guest', '--version', '2.0.0', '--family', 'understudy-sim', '--key', keys.privateKeyFile, '--out', out], { cwd: PACKAGE_ROOT, maxBuffer: 1 << 24 });
    const slot = join(out, 'slot');
    const fw = JSON.parse(readFileSync(join(slot, 'firmware.json'), 'utf8'));
    assert.deepEqual([fw.version, fw.family, fw.node.moduleAbi, fw.entry], ['2.0.0', 'understudy-sim', process.versions.modules, 'controller/understudy.mjs']);
    for (const f of ['controller/understudy.mjs', 'controller/node_modules/better-sqlite3/build/Release/better_sqlite3.node', 'bin/understudy', 'systemd/understudyd.service', 'systemd/understudy-commit.service', 'board/sim-a.json']) {
      assert.ok(existsSync(join(slot, f)), `${f} in the slot image`);
    }
    assert.ok(!existsSync(join(slot, 'controller/node_modules/better-sqlite3/deps')), 'no addon sources');
    assert.ok(!existsSync(join(slot, 'controller/node_modules/prebuild-install')), 'no install-time packages');

    // The bundle's own native addons load from the slot.
    const probe = await run(process.execPath, ['--input-type=module', '-e',
      "import D from 'better-sqlite3'; const b = await import('@serialport/bindings-cpp'); console.log(new D(':memory:').prepare('select 41+1 x').get().x, typeof b.default.autoDetect)"], { cwd: join(slot, 'controller') });
    assert.equal(probe.stdout.trim(), '42 function');

    // Install the package on a simulated board with the bundled CLI itself, boot, run from the slot.
    const boardFile = simBoard(dir);
    const setup = upgradeSetupFor(loadBoardProfile(boardFile));
    mkdirSync(setup.keysDir, { recursive: true });
    copyFileSync(keys.publicKeyFile, join(setup.keysDir, 'release.pem'));
    const bundled = (...a: string[]) => run(process.execPath, [join(slot, 'controller', 'understudy.mjs'), ...a, '--board', boardFile, '--json']);
    const inst = JSON.parse((await bundled('upgrade', 'install', join(out, 'understudy-understudy-sim-2.0.0.usp'))).stdout);
    assert.deepEqual([inst.slot, inst.version, inst.firstInstall], ['A', '2.0.0', true]);
    assert.equal(JSON.parse((await bundled('upgrade', 'boot')).stdout).slot, 'A');
    const installed = setup.store.slotDir('A');
    assert.ok(setup.store.verify('A').ok);
    assert.equal(statSync(join(installed, 'bin', 'understudy')).mode & 0o777, 0o755);
    const st = await run(join(installed, 'bin', 'understudy'), ['upgrade', 'status', '--board', boardFile, '--json']);
    assert.deepEqual([JSON.parse(st.stdout).running, JSON.parse(st.stdout).slots[0].version], ['A', '2.0.0']);
    const daemonHelp = await run(join(installed, 'bin', 'understudyd'), ['--help']);
    assert.match(daemonHelp.stdout, /Understudy controller daemon/);
  });

  it('commit-when-healthy abandons a trial when no healthy controller answers; the next boot falls back', async () => {
    const boardFile = simBoard(dir);
    const { env, store } = upgradeSetupFor(loadBoardProfile(boardFile));
    fakeSlot(store, 'A', '1.0.0');
    fakeSlot(store, 'B', '1.1.0');
    await commitSlot(env, 'A');
    await armTrial(env, 'A', 'B', 3);
    assert.equal((await simulateBoot(env, store)).slot, 'B');
    const r = await run(process.execPath, [join(PACKAGE_ROOT, 'dist/src/cli/main.js'), 'upgrade', 'commit-when-healthy', '--timeout', '1', '--interval', '200', '--board', boardFile, '--json']).catch((e: { code: number; stdout: string }) => e);
    assert.equal((r as { code?: number }).code, 1);
    assert.match(JSON.parse(r.stdout).error.message, /did not become healthy within 1 s.*next boot selects slot A/);
    assert.deepEqual(await readBootState(env), { good: 'A', trial: undefined, triesLeft: 0 });
    const b = await simulateBoot(env, store);
    assert.deepEqual([b.slot, b.reason], ['A', 'good']);
  });

  it('commit-when-healthy commits the trial once the real controller reports the guest running', async () => {
    const rig = new Rig();
    try {
      const { env, store } = upgradeSetupFor(loadBoardProfile(rig.boardFile));
      fakeSlot(store, 'A', '1.0.0');
      fakeSlot(store, 'B', '1.1.0');
      await commitSlot(env, 'A');
      await armTrial(env, 'A', 'B', 3);
      await simulateBoot(env, store);
      await rig.startDaemon();
      const r = await rig.cliJson('upgrade', 'commit-when-healthy', '--stable', '1', '--interval', '200', '--timeout', '60', '--board', rig.boardFile);
      assert.deepEqual([r.slot, r.committed, r.version], ['B', true, '1.1.0']);
      assert.deepEqual(await readBootState(env), { good: 'B', trial: undefined, triesLeft: 0 });
      const st = await rig.cliJson('upgrade', 'status', '--board', rig.boardFile);
      assert.deepEqual([st.running, st.good, st.haRole], ['B', 'B', 'STANDALONE'], 'status shows the role the controller reports');
    } finally {
      await rig.cleanup();
    }
  });
});
