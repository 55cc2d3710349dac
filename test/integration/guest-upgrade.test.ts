/**
 * Dynamic upgrade of the guest application on the simulated chassis with real QEMU, under a steady
 * load: v1 → v2 from a signed guest package (`understudy guest upgrade --to <package>`: unpacked on
 * both boards, each running v2 from its own copy, the commit's clone naming it by the package) with
 * nothing acknowledged lost and v2's new command working afterwards; a broken v2 aborts and leaves
 * the pair on v1, protected; --hold and --rollback (by descriptor); the primary failing in the middle
 * of an upgrade leaves the pair on one version with nothing lost.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { loadBoardProfile } from '../../src/config/board-profile.js';
import { callControl } from '../../src/mgmt/ipc.js';
import { CLI_ENTRY, PACKAGE_ROOT, partnerOf, type BoardName } from '../../src/sim/chassis/layout.js';
import { pairView, waitProtected } from '../../src/sim/pair.js';
import { upgradeSetupFor } from '../../src/upgrade/board-setup.js';
import { buildPackage } from '../../src/upgrade/builder.js';
import { generateKeys, loadPrivateKey } from '../../src/upgrade/keys.js';
import { PairUnderTest } from '../support/pair.js';

const V2 = join(PACKAGE_ROOT, 'guests', 'dx-legacy-v2.json');
const BROKEN = join(PACKAGE_ROOT, 'guests', 'dx-legacy-v2-broken.json');

function upgrade(p: PairUnderTest, guestFile: string): Promise<any> {
  return callControl(p.chassis.layout.boards[p.primary].controlSocket, 'guest.upgrade', { guestFile }, 900000);
}

async function appVersion(p: PairUnderTest, b: BoardName): Promise<string | undefined> {
  return ((await p.ctl(b, 'status')) as { guest?: { appVersion?: string } }).guest?.appVersion;
}

/**
 * A signed guest package of v2 (guests/dx-legacy-v2.json and its images, as a firmware package carries
 * them), and each board of the chassis trusting its key.
 */
async function guestPackage(p: PairUnderTest, dir: string): Promise<string> {
  const keys = generateKeys(join(dir, 'keys'));
  const img = join(dir, 'img');
  mkdirSync(join(img, 'guests', 'dx-legacy-v2'), { recursive: true });
  const d = JSON.parse(readFileSync(V2, 'utf8'));
  for (const f of ['vmlinuz', 'initrd.img']) copyFileSync(join(PACKAGE_ROOT, 'image-build', 'out', 'dx-legacy-v2', f), join(img, 'guests', 'dx-legacy-v2', f));
  writeFileSync(join(img, 'guests', 'dx-legacy-v2.json'), JSON.stringify({ ...d, image: { kernel: 'dx-legacy-v2/vmlinuz', initrd: 'dx-legacy-v2/initrd.img', append: d.image.append } }));
  for (const b of [p.primary, partnerOf(p.primary)]) {
    const s = upgradeSetupFor(loadBoardProfile(p.chassis.layout.boards[b].profile));
    mkdirSync(s.keysDir, { recursive: true, mode: 0o700 });
    copyFileSync(keys.publicKeyFile, join(s.keysDir, 'release.pem'));
  }
  return (await buildPackage({ fromDir: img, privateKey: loadPrivateKey(keys.privateKeyFile), family: 'understudy-sim', version: '2.0.0', out: join(dir, 'dx-legacy-v2.usp') })).out;
}

describe('guest upgrade v1 → v2 under load (real QEMU)', function () {
  this.timeout(1800000);
  const p = new PairUnderTest(`gu${process.pid % 1000}`);
  const dir = mkdtempSync(join(tmpdir(), 'us-guest-pkg-'));
  let pkg: string;
  before(async () => {
    await p.up();
    pkg = await guestPackage(p, dir);
  });
  after(async () => {
    await p.down();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a v2 that crashes on start: the upgrade aborts, the pair stays on v1 and protected, nothing acknowledged lost', async () => {
    let err: { code?: string; message?: string } | undefined;
    await p.loadThrough(20000, 2000, async () => {
      err = await upgrade(p, BROKEN).then(() => undefined, (e: { code?: string; message?: string }) => e);
    }, 'UB');
    assert.ok(err, 'the upgrade to a broken guest must fail');
    assert.equal(err!.code, 'US_ERR_GUEST_UPGRADE', err!.message);
    p.primary = await waitProtected(p.chassis.layout, 240000);
    for (const b of [p.primary, partnerOf(p.primary)]) assert.equal(await appVersion(p, b), '1.0.0', `${b} runs v1`);
    const events = (await p.ctl(p.primary, 'events', { kind: 'guest-upgrade', limit: 20 })).events as Array<{ message: string }>;
    assert.ok(events.some((e) => /ABORTED/.test(e.message)), events.map((e) => e.message).join('\n'));
    // Nothing waits for a commit: refused on either board, nothing cloned.
    for (const b of [p.primary, partnerOf(p.primary)]) {
      const e = await p.ctl(b, 'guest.upgrade', { commit: true }).then(() => undefined, (x: { code?: string; message?: string }) => x);
      assert.equal(e?.code, 'US_ERR_ROLE', `--commit on ${b}: ${e?.message}`);
      assert.match(e!.message!, /nothing to commit|no upgrade waits for a commit/);
    }
  });

  it('--hold keeps v1 as the backup copy after the switchover, and --rollback returns the pair to v1, nothing lost', async () => {
    const old = p.primary;
    let held: any;
    await p.loadThrough(20000, 2000, async () => {
      held = await callControl(p.chassis.layout.boards[old].controlSocket, 'guest.upgrade', { guestFile: V2, hold: true }, 900000);
    }, 'UH');
    assert.equal(held.awaitingCommit, true);
    const upgraded = partnerOf(old);
    assert.equal(await appVersion(p, upgraded), '2.0.0');
    assert.equal(await appVersion(p, old), '1.0.0', 'the previous primary keeps v1');
    const st = (await p.ctl(upgraded, 'replication.status')).replication;
    assert.equal(st.protected, true, 'the v2 primary is protected by the v1 copy');
    assert.equal(st.partnerRunsPreviousVersion, true);
    await p.loadThrough(15000, 2000, () => callControl(p.chassis.layout.boards[upgraded].controlSocket, 'guest.upgrade', { rollback: true }, 900000), 'UR');
    p.primary = await waitProtected(p.chassis.layout, 240000);
    assert.equal(p.primary, old, 'the v1 copy serves again');
    for (const b of [old, upgraded]) assert.equal(await appVersion(p, b), '1.0.0', `${b} runs v1 after the rollback`);
  });

  it('upgrades to v2 while serving: nothing acknowledged lost, both boards on v2, protected, the new command works', async () => {
    const old = p.primary;
    // The earlier loads have filled the subscriber table (4096): use two of their subscribers.
    const before = await p.ask(['GET UB0', 'GET UB1', 'CALL UB0 UB1']);
    assert.match(before[2]!, / OK CALL \d+$/, before.join(' | '));
    let report: any;
    // The load outlasts the upgrade (8 s on 2026-11-25, 80 s on a slow 2026-12-02): its closing STATS must see v2.
    // From the guest package, as an operator runs it.
    const { res } = await p.loadThrough(120000, 3000, async () => {
      const r = await promisify(execFile)(process.execPath, [CLI_ENTRY, 'guest', 'upgrade', '--to', pkg, '--json', '--board', p.chassis.layout.boards[old].profile], { timeout: 900000 })
        .catch((e: Error & { stdout?: string; stderr?: string }) => {
          throw new Error(`guest upgrade --to failed: ${e.stdout ?? ''} ${e.stderr ?? ''}`); // the CLI's --json error
        });
      report = JSON.parse(r.stdout);
    }, 'UV');
    assert.equal(report.to, '2.0.0');
    assert.match(res.verify!.stats, /version=2\.0\.0/);
    p.primary = await waitProtected(p.chassis.layout, 240000);
    assert.equal(p.primary, partnerOf(old), 'the upgraded backup took over');
    for (const b of [p.primary, partnerOf(p.primary)]) assert.equal(await appVersion(p, b), '2.0.0', `${b} runs v2`);
    // Each board runs v2 from the package it unpacked itself (the commit's clone named it by the package).
    for (const b of [p.primary, partnerOf(p.primary)]) {
      const storage = p.chassis.layout.boards[b].storageDir;
      const ev = (await p.ctl(b, 'events', { kind: 'guest', limit: 50 })).events as Array<{ message: string; detail: { file?: string } | null }>;
      const now = ev.filter((e) => /^guest is now dx-legacy 2\.0\.0/.test(e.message)).pop();
      assert.ok(now?.detail?.file?.startsWith(join(storage, 'guest-packages')), `${b} runs v2 from its own unpacked package: ${JSON.stringify(now)}`);
    }
    // State from before the upgrade (converted from v1) and the new command.
    const after = await p.ask(['GET UB0', 'FWD UB0 UB1', 'GET UB0']);
    assert.match(after[0]!, / OK GET UB0 calls=\d+ state=busy fwd=-$/, 'v1 state converted: the call set up on v1 is still up');
    assert.match(after[1]!, / OK FWD UB0 UB1$/);
    assert.match(after[2]!, / OK GET UB0 calls=\d+ state=busy fwd=UB1$/);
    // Both copies identical once idle.
    assert.deepEqual(await p.settledStates(), { same: true }, 'primary and backup states are identical on v2');
    const view = await pairView(p.chassis.layout);
    assert.equal(view[p.primary]?.role, 'PRIMARY');
  });
});

describe('guest upgrade: the primary fails in the middle (real QEMU)', function () {
  this.timeout(1800000);
  const p = new PairUnderTest(`gf${process.pid % 1000}`);
  before(() => p.up());
  after(() => p.down());

  it('the survivor serves on one version with nothing acknowledged lost, and the pair is protected again', async () => {
    const old = p.primary;
    const sock = p.chassis.layout.boards[old].controlSocket;
    await p.loadThrough(20000, 2000, async () => {
      void upgrade(p, V2).catch(() => undefined); // its controller is killed below
      // Kill the primary's controller once the backup is booting the new version.
      for (let i = 0; i < 600; i++) {
        const st = (await callControl(sock, 'replication.status', {}, 5000)) as { replication?: { guestUpgrade?: { detail?: string } | null } };
        if (/boot|replay/.test(st.replication?.guestUpgrade?.detail ?? '')) break;
        await new Promise((r) => setTimeout(r, 50));
      }
      await p.chassis.fail(old, 'kill');
    }, 'UF');
    const survivor = partnerOf(old);
    const v = await appVersion(p, survivor);
    assert.ok(v === '2.0.0' || v === '1.0.0', `the survivor runs ${v}`);
    await p.chassis.power(old, 'on');
    p.primary = await waitProtected(p.chassis.layout, 240000);
    assert.equal(await appVersion(p, partnerOf(p.primary)), v, 'the returning board is cloned to the same version');
  });
});
