/**
 * Power cut during an install: the installer (the real CLI, a child process) is killed with SIGKILL at
 * seeded random moments in 50 runs, then the simulated board is powered on. Whatever it boots must
 * verify file by file against its slot.json, and the good slot (the fallback) must always verify.
 * Then a deterministic sweep kills the installer at each named step of its sequence.
 * Seed: US_POWERCUT_SEED (printed), default fixed so CI runs are reproducible.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { loadBoardProfile } from '../../src/config/board-profile.js';
import { markGood, readBootState, simulateBoot, type BootResult } from '../../src/upgrade/bootflow.js';
import { upgradeSetupFor, type UpgradeSetup } from '../../src/upgrade/board-setup.js';
import { buildPackage } from '../../src/upgrade/builder.js';
import { installPackage } from '../../src/upgrade/installer.js';
import { generateKeys, loadPrivateKey, loadTrustedKeys } from '../../src/upgrade/keys.js';
import { SLOT_NAMES } from '../../src/upgrade/slots.js';
import { writeImage } from '../../src/upgrade/testing.js';

const CLI = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
const RUNS = 50;
const SEED = Number(process.env.US_POWERCUT_SEED ?? 424242);

/** mulberry32: a small seeded PRNG. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Fixture {
  dir: string;
  boardFile: string;
  setup: UpgradeSetup;
  keyFile: string;
}

function makeFixture(): Fixture {
  const dir = mkdtempSync(join(tmpdir(), 'us-powercut-'));
  const board = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board', 'sim-a.json'), 'utf8')) as Record<string, any>;
  board.storageDir = join(dir, 'store');
  board.upgrade = { bootAttempts: 2 };
  delete board.ha;
  const boardFile = join(dir, 'board.json');
  writeFileSync(boardFile, JSON.stringify(board));
  const setup = upgradeSetupFor(loadBoardProfile(boardFile));
  const k = generateKeys(join(dir, 'signing'));
  mkdirSync(setup.keysDir, { recursive: true });
  copyFileSync(k.publicKeyFile, join(setup.keysDir, 'release.pem'));
  return { dir, boardFile, setup, keyFile: k.privateKeyFile };
}

/** A package of a few MB whose every file depends on the version. */
async function makePackage(f: Fixture, version: string): Promise<string> {
  const img = join(f.dir, `img-${version}`);
  const fill = (n: number, salt: number) => {
    const b = Buffer.allocUnsafe(n);
    const r = prng(salt * 7919 + version.length);
    for (let i = 0; i < n; i += 4) b.writeUInt32LE((r() * 2 ** 32) >>> 0, Math.min(i, n - 4));
    return b;
  };
  const v = Number(version.split('.')[1]);
  writeImage(img, {
    'controller/understudy.mjs': `export const version = '${version}';\n`,
    'guests/dx-legacy/vmlinuz': fill(2_500_000, v),
    'guests/dx-legacy/initrd.img': fill(1_000_000, v + 1000),
    'board/sim-a.json': '{}\n',
    'firmware.json': JSON.stringify({ version }),
  });
  const out = join(f.dir, `p-${version}.usp`);
  await buildPackage({ fromDir: img, privateKey: loadPrivateKey(f.keyFile), family: 'understudy-sim', version, out });
  rmSync(img, { recursive: true, force: true });
  return out;
}

/** Powers the simulated board on and checks that what it boots, and its fallback, verify. */
async function powerOn(f: Fixture, what: string): Promise<BootResult> {
  const { env, store } = f.setup;
  const b = await simulateBoot(env, store);
  const v = store.verify(b.slot);
  assert.ok(v.ok, `${what}: booted slot ${b.slot} (${b.reason}) does not verify: ${v.problems.join('; ')}`);
  const good = (await readBootState(env)).good;
  if (good) assert.ok(store.verify(good).ok, `${what}: the good slot ${good} does not verify`);
  return b;
}

describe('upgrade power cut during install', function () {
  this.timeout(170000);
  const fixtures: Fixture[] = [];
  after(() => { for (const f of fixtures) rmSync(f.dir, { recursive: true, force: true }); });

  it(`${RUNS} installs killed with SIGKILL at seeded random moments always leave a verified slot to boot`, async () => {
    console.log(`      power-cut seed ${SEED} (set US_POWERCUT_SEED to replay)`);
    const rnd = prng(SEED);
    const f = makeFixture();
    fixtures.push(f);
    const { env, store } = f.setup;
    await installPackage({ packagePath: await makePackage(f, '1.0.0'), family: 'understudy-sim', store, env, trustedKeys: loadTrustedKeys(f.setup.keysDir), bootAttempts: 2 });
    await powerOn(f, 'factory');

    // Calibrate: how long the install itself runs after its first progress line.
    const calib = await makePackage(f, '1.1.0');
    const c = await runInstaller(f, calib, () => undefined);
    assert.equal(c.code, 0, c.stderr);
    const window = Math.max(20, c.installMs * 1.3);
    await powerOn(f, 'calibration');
    await markGood(env, store);

    const outcomes: Record<string, number> = {};
    for (let i = 0; i < RUNS; i++) {
      const version = `1.${i + 2}.0`;
      const pkg = await makePackage(f, version);
      // 1 in 5: kill during start-up and verification (timed from spawn); else inside the install.
      const early = rnd() < 0.2;
      const delay = early ? rnd() * 450 : rnd() * window;
      const r = await runInstaller(f, pkg, (anchor) => (early ? (anchor === 'spawn' ? delay : undefined) : anchor === 'progress' ? delay : undefined));
      const leftovers = SLOT_NAMES.flatMap((s) => [store.stagingDir(s), store.retiredDir(s)]).filter(existsSync).map((d) => d.split('/').pop());
      const outcome = r.code === 0 ? 'completed' : r.signal === 'SIGKILL' ? `killed${leftovers.length ? ` (${leftovers.join(',')} left)` : ''}` : `exit ${r.code}`;
      assert.ok(r.code === 0 || r.signal === 'SIGKILL', `run ${i} (seed ${SEED}): installer failed on its own: ${r.stderr}`);
      outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;

      let b = await powerOn(f, `run ${i} (seed ${SEED}, ${early ? 'early' : 'in install'} kill after ${delay.toFixed(1)} ms, ${outcome})`);
      if (b.reason === 'trial') {
        if (rnd() < 0.7) {
          assert.equal(b.version, version, `run ${i}: the trial is the new version`);
          await markGood(env, store);
        } else {
          // The new version never reports healthy: the boot counter runs out and the board rolls back.
          while (b.reason === 'trial') b = await powerOn(f, `run ${i} (seed ${SEED}): trial reboot`);
          assert.equal(b.reason, 'rollback');
        }
      }
      rmSync(pkg, { force: true });
    }
    console.log(`      outcomes over ${RUNS} runs: ${Object.entries(outcomes).map(([k, n]) => `${n}× ${k}`).join(', ')}`);
    assert.ok((outcomes.completed ?? 0) < RUNS, 'some runs were actually cut');
  });

  it('kills the installer at each step of its sequence; the board always boots a verified slot', async () => {
    // State before each cut: A good and running (1.0.0); B holds 1.1.0, armed but not yet booted.
    const steps = ['mid-payload', 'verified', 'staged', 'disarmed', 'retired', 'swapped', 'armed'] as const;
    const expectAfter: Record<(typeof steps)[number], string> = {
      'mid-payload': 'B:trial:1.1.0', verified: 'B:trial:1.1.0', staged: 'B:trial:1.1.0',
      disarmed: 'A:good:1.0.0', retired: 'A:good:1.0.0', swapped: 'A:good:1.0.0', armed: 'B:trial:2.0.0',
    };
    const f = makeFixture();
    fixtures.push(f);
    const { env, store } = f.setup;
    const install = (p: string) => installPackage({ packagePath: p, family: 'understudy-sim', store, env, trustedKeys: loadTrustedKeys(f.setup.keysDir), bootAttempts: 2 });
    const [p1, p11, p2] = [await makePackage(f, '1.0.0'), await makePackage(f, '1.1.0'), await makePackage(f, '2.0.0')];
    for (const step of steps) {
      assert.equal(f.setup.bootEnvSpec.type, 'file');
      rmSync(f.setup.slotsDir, { recursive: true, force: true });
      if (f.setup.bootEnvSpec.type === 'file') rmSync(f.setup.bootEnvSpec.path, { force: true });
      await install(p1);
      await simulateBoot(env, store);
      await install(p11);
      const r = await runStepKiller(f, p2, step);
      assert.equal(r.signal, 'SIGKILL', `the installer reached ${step}: ${r.stderr}`);
      const b = await powerOn(f, `killed at ${step}`);
      assert.equal(`${b.slot}:${b.reason}:${b.version}`, expectAfter[step], `after a cut at ${step}`);
    }
  });
});

interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
  /** Time from the first progress line to exit. */
  installMs: number;
}

/**
 * Runs `understudy upgrade install` and SIGKILLs it `killAfter(anchor)` ms after the anchor: 'spawn'
 * (start of the process) or 'progress' (its first progress line, i.e. the payload starts).
 */
function runInstaller(f: Fixture, pkg: string, killAfter: (anchor: 'spawn' | 'progress') => number | undefined): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, 'upgrade', 'install', pkg, '--board', f.boardFile, '--json'], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let progressAt: number | undefined;
    const timers: NodeJS.Timeout[] = [];
    const arm = (ms: number | undefined) => { if (ms !== undefined) timers.push(setTimeout(() => child.kill('SIGKILL'), ms)); };
    arm(killAfter('spawn'));
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d;
      if (progressAt === undefined && stderr.includes('install: ')) {
        progressAt = performance.now();
        arm(killAfter('progress'));
      }
    });
    child.once('exit', (code, signal) => {
      for (const t of timers) clearTimeout(t);
      resolve({ code, signal, stderr, installMs: progressAt === undefined ? 0 : performance.now() - progressAt });
    });
  });
}

/** Runs the installer in a child that SIGKILLs itself when it reaches `step` (or half its payload). */
function runStepKiller(f: Fixture, pkg: string, step: string): Promise<RunResult> {
  const code = `
    import { installPackage } from ${JSON.stringify(join(PACKAGE_ROOT, 'dist/src/upgrade/installer.js'))};
    import { upgradeSetupFor } from ${JSON.stringify(join(PACKAGE_ROOT, 'dist/src/upgrade/board-setup.js'))};
    import { loadBoardProfile } from ${JSON.stringify(join(PACKAGE_ROOT, 'dist/src/config/board-profile.js'))};
    import { loadTrustedKeys } from ${JSON.stringify(join(PACKAGE_ROOT, 'dist/src/upgrade/keys.js'))};
    const [boardFile, pkg, step] = process.argv.slice(1);
    const s = upgradeSetupFor(loadBoardProfile(boardFile));
    const die = () => process.kill(process.pid, 'SIGKILL');
    await installPackage({
      packagePath: pkg, family: s.family, store: s.store, env: s.env, trustedKeys: loadTrustedKeys(s.keysDir), bootAttempts: s.bootAttempts,
      onStep: (x) => { if (x === step) die(); },
      onProgress: (p) => { if (step === 'mid-payload' && p.done >= p.total / 2) die(); },
      chunkBytes: 256 * 1024,
    });
    process.stderr.write('completed without reaching ' + step + '\\n');
  `;
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', code, f.boardFile, pkg, step], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d; });
    child.once('exit', (c, signal) => resolve({ code: c, signal, stderr, installMs: 0 }));
  });
}
