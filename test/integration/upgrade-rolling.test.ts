/**
 * `understudy upgrade rolling` on the simulated chassis with real QEMU: both boards start on a
 * committed 1.0.0; a package whose trial never becomes healthy (its image carries the simulated
 * firmware fault `no-guest`) is abandoned on the backup and the pair stays on 1.0.0, protected; a good
 * package is rolled over both boards under load with nothing acknowledged lost, both boards end on
 * 1.1.0 committed, protected, with the roles swapped.
 */
import assert from 'node:assert/strict';
import { execFile, type ChildProcess } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBoardProfile } from '../../src/config/board-profile.js';
import { CLI_ENTRY, partnerOf, BOARD_NAMES, type BoardName } from '../../src/sim/chassis/layout.js';
import { waitProtected } from '../../src/sim/pair.js';
import { upgradeSetupFor } from '../../src/upgrade/board-setup.js';
import { buildPackage } from '../../src/upgrade/builder.js';
import { generateKeys, loadPrivateKey } from '../../src/upgrade/keys.js';
import { writeImage } from '../../src/upgrade/testing.js';
import { PairUnderTest } from '../support/pair.js';

const NAME = `ru${process.pid % 1000}`;

interface CliRun { code: number; stdout: string; stderr: string }

/** CLI runs still going, ended by the suite's cleanup if a test fails while one waits. */
const children = new Set<ChildProcess>();

function cli(args: string[]): Promise<CliRun> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [CLI_ENTRY, ...args], { maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
      children.delete(child);
      resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0, stdout, stderr });
    });
    children.add(child);
  });
}

describe('rolling upgrade of the pair (simulated chassis, real QEMU)', function () {
  this.timeout(1800000);
  const p = new PairUnderTest(NAME);
  let dir: string;
  const pkg: Record<'v100' | 'broken' | 'v110', string> = { v100: '', broken: '', v110: '' };
  const profile = (b: BoardName) => p.chassis.layout.boards[b].profile;
  const status = async (b: BoardName) => {
    const r = await cli(['upgrade', 'status', '--board', profile(b), '--json']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    return JSON.parse(r.stdout) as { running: string | null; good: string | null; trial: string | null; slots: Array<{ slot: string; version: string | null }> };
  };
  const runningVersion = async (b: BoardName) => {
    const s = await status(b);
    const slot = s.running ?? s.good;
    return { slot, good: s.good, trial: s.trial, version: s.slots.find((x) => x.slot === slot)?.version ?? null };
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-rolling-'));
    const keys = generateKeys(join(dir, 'keys'));
    const key = loadPrivateKey(keys.privateKeyFile);
    const build = async (name: keyof typeof pkg, version: string, files: Record<string, string>) => {
      const img = join(dir, `img-${name}`);
      writeImage(img, { 'firmware.json': JSON.stringify({ version }), ...files });
      pkg[name] = (await buildPackage({ fromDir: img, privateKey: key, family: 'understudy-sim', version, out: join(dir, `${name}.usp`) })).out;
    };
    await build('v100', '1.0.0', {});
    await build('broken', '1.0.1', { 'simulated-fault': 'no-guest\n' });
    await build('v110', '1.1.0', { 'notes.txt': 'the new release\n' });
    await p.up();
    // Provisioning: each board trusts the release key and runs a committed 1.0.0.
    for (const b of BOARD_NAMES) {
      const setup = upgradeSetupFor(loadBoardProfile(profile(b)));
      mkdirSync(setup.keysDir, { recursive: true });
      copyFileSync(keys.publicKeyFile, join(setup.keysDir, 'release.pem'));
      const r = await cli(['upgrade', 'install', pkg.v100, '--board', profile(b), '--json']);
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.equal(JSON.parse(r.stdout).firstInstall, true);
    }
  });

  after(async () => {
    for (const c of children) c.kill('SIGTERM');
    await p.down();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('refuses on the backup, and abandons a trial that never becomes healthy: the pair stays on 1.0.0, protected', async () => {
    // (Re-read: a loaded machine may have failed the pair over since it came up.)
    const primary = p.primary = await waitProtected(p.chassis.layout, 240000);
    const backup = partnerOf(primary);
    const onBackup = await cli(['upgrade', 'rolling', pkg.v110, '--board', profile(backup), '--json']);
    assert.equal(onBackup.code, 1);
    assert.equal(JSON.parse(onBackup.stdout).error.code, 'US_ERR_ROLE');

    const r = await cli(['upgrade', 'rolling', pkg.broken, '--timeout', '60', '--stable', '2', '--board', profile(primary), '--json']);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const err = JSON.parse(r.stdout).error;
    assert.equal(err.code, 'US_ERR_UPGRADE_ABORTED', err.message);
    assert.equal(err.detail.run.failed.step, 'partner-healthy', err.message);
    assert.match(r.stderr, /\[1\] verify: /);
    assert.match(r.stderr, /abandon: /);

    assert.equal(await waitProtected(p.chassis.layout, 240000), primary, 'the primary kept its role');
    for (const b of BOARD_NAMES) {
      const v = await runningVersion(b);
      assert.deepEqual([v.version, v.good, v.trial], ['1.0.0', 'A', null], `${b} is on its good 1.0.0 slot with no trial`);
    }
    const ev = await p.ctl(backup, 'events', { kind: 'upgrade', limit: 200 });
    assert.ok(ev.events.some((e: { message: string }) => e.message.includes(err.detail.run.id) && e.message.includes('[partner-healthy]')), 'the backup journaled the steps');
  });

  it('rolls 1.1.0 over both boards under load: nothing acknowledged lost, both committed, protected, roles swapped', async () => {
    const before = p.primary = await waitProtected(p.chassis.layout, 240000);
    const after = partnerOf(before);
    const rolling = cli(['upgrade', 'rolling', pkg.v110, '--stable', '3', '--board', profile(before), '--json']);
    let finished: CliRun | undefined;
    void rolling.then((r) => { finished = r; });

    // A second run while this one is in progress is refused.
    let id: string | undefined;
    for (let i = 0; i < 100 && !id && !finished; i++) {
      const st = await p.ctl(before, 'upgrade.rolling.status');
      if (st.run?.state === 'running' && st.run.version === '1.1.0') id = st.run.id;
      else await new Promise((res) => setTimeout(res, 200));
    }
    assert.ok(id, 'the run started');
    await assert.rejects(p.ctl(before, 'upgrade.rolling', { package: pkg.v110 }), (e: { code?: string }) => e.code === 'US_ERR_UPGRADE_BUSY');

    // Load in segments for as long as the upgrade runs; each segment checks that every acknowledged
    // registration is on the (current) primary and that retries were answered identically.
    let acked = 0;
    for (let seg = 0; seg < 60 && !finished; seg++) {
      const { res } = await p.loadThrough(20000, 0, async () => undefined);
      acked += res.acked;
    }
    const r = await rolling;
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const done = JSON.parse(r.stdout);
    assert.deepEqual([done.state, done.version, done.from, done.id], ['done', '1.1.0', '1.0.0', id]);
    for (const step of ['verify', 'push', 'partner-install', 'partner-reboot', 'partner-healthy', 'partner-commit', 'switchover', 'protected', 'install', 'reboot', 'healthy', 'commit', 'done']) {
      assert.ok(done.steps.some((s: { step: string }) => s.step === step), `step ${step} reported`);
      assert.match(r.stderr, new RegExp(`\\] ${step}: `), `progress line for ${step}`);
    }
    assert.ok(acked > 1000, `load ran through the upgrade (${acked} answered)`);

    assert.equal(await waitProtected(p.chassis.layout, 240000), after, 'the former backup is primary');
    p.primary = after;
    await p.loadThrough(8000, 0, async () => undefined);
    for (const b of BOARD_NAMES) {
      const v = await runningVersion(b);
      assert.deepEqual([v.version, v.slot, v.good, v.trial], ['1.1.0', 'B', 'B', null], `${b} booted 1.1.0 from slot B and committed it`);
      const ev = await p.ctl(b, 'events', { kind: 'upgrade', limit: 500 });
      for (const step of ['partner-commit', 'switchover', 'commit', 'done']) {
        assert.ok(ev.events.some((e: { message: string }) => e.message.includes(`rolling upgrade ${id}`) && e.message.includes(`[${step}]`)), `${b} journaled ${step}`);
      }
    }
  });
});
