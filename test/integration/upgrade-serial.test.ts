/**
 * Upload over the console with the real `sb` (lrzsz) through a socat pty pair, the receiver opening
 * its end with serialport exactly as a blade opens /dev/ttyS0; then install, boot the simulated board
 * into the new slot, commit. Also the whole user flow through the CLI, including a deliberately
 * broken package that must not change what boots.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SerialPort } from 'serialport';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { FileBootEnv } from '../../src/hw/bootenv/index.js';
import { markGood, simulateBoot } from '../../src/upgrade/bootflow.js';
import { buildPackage } from '../../src/upgrade/builder.js';
import { installPackage } from '../../src/upgrade/installer.js';
import { generateKeys, loadPrivateKey, loadTrustedKeys } from '../../src/upgrade/keys.js';
import { SlotStore } from '../../src/upgrade/slots.js';
import { treeDigest, writeImage } from '../../src/upgrade/testing.js';
import { receiveFile } from '../../src/upgrade/ymodem.js';

const run = promisify(execFile);
const CLI = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');

/** A socat pty pair <dir>/a <-> <dir>/b; resolves once both links exist. */
async function ptyPair(dir: string): Promise<ChildProcess> {
  const socat = spawn('socat', ['-d', '-d', `pty,raw,echo=0,link=${dir}/a`, `pty,raw,echo=0,link=${dir}/b`], { stdio: ['ignore', 'ignore', 'pipe'] });
  socat.stderr!.resume();
  for (let i = 0; i < 200 && !(existsSync(join(dir, 'a')) && existsSync(join(dir, 'b'))); i++) await new Promise((r) => setTimeout(r, 25));
  if (!existsSync(join(dir, 'b'))) throw new Error('socat did not create the pty pair');
  return socat;
}

/** Runs `sb --ymodem -k <file>` with stdin and stdout on the pty end `tty`, as a terminal program would. */
function startSb(tty: string, file: string): { child: ChildProcess; done: Promise<{ code: number | null; stderr: string }> } {
  const fd = openSync(tty, 'r+');
  const child = spawn('sb', ['--ymodem', '-k', file], { stdio: [fd, fd, 'pipe'] });
  closeSync(fd);
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString('latin1'); });
  const done = new Promise<{ code: number | null; stderr: string }>((resolve) => child.once('exit', (code) => resolve({ code, stderr })));
  return { child, done };
}

function killQuietly(p?: ChildProcess): void {
  if (p?.pid && p.exitCode === null && p.signalCode === null) {
    try { process.kill(p.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
}

describe('upgrade over the serial console (real sb over a pty)', function () {
  this.timeout(120000);
  let dir: string;
  let socat: ChildProcess | undefined;
  let sb: ChildProcess | undefined;
  let cliChild: ChildProcess | undefined;
  let keys: ReturnType<typeof generateKeys>;

  before(async () => {
    for (const tool of ['sb', 'socat']) await run('sh', ['-c', `command -v ${tool}`]).catch(() => { throw new Error(`${tool} is missing: run image-build/setup.sh (Debian packages lrzsz, socat)`); });
  });
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-upg-serial-'));
    socat = await ptyPair(dir);
    keys = generateKeys(join(dir, 'signing'));
  });
  afterEach(() => {
    killQuietly(sb);
    killQuietly(cliChild);
    killQuietly(socat);
    sb = cliChild = socat = undefined;
    rmSync(dir, { recursive: true, force: true });
  });

  async function makePackage(version: string, size: number): Promise<string> {
    const img = join(dir, `img-${version}`);
    writeImage(img, {
      'controller/understudy.mjs': `console.log("understudy ${version}")\n`,
      'guests/dx-legacy/initrd.img': Buffer.alloc(size, version.charCodeAt(2)),
      'firmware.json': JSON.stringify({ version }),
    });
    const out = join(dir, `understudy-${version}.usp`);
    await buildPackage({ fromDir: img, privateKey: loadPrivateKey(keys.privateKeyFile), family: 'understudy-sim', version, out });
    return out;
  }

  it('receives a package sent by sb with serialport, installs it, boots it, commits it', async () => {
    const pkg = await makePackage('1.1.0', 300 * 1024);
    const store = new SlotStore(join(dir, 'slots'), join(dir, 'slots', 'cmdline'));
    const env = new FileBootEnv(join(dir, 'bootenv'));
    const trusted = join(dir, 'trusted');
    mkdirSync(trusted);
    copyFileSync(keys.publicKeyFile, join(trusted, 'release.pem'));
    // The board runs 1.0.0 from slot A.
    await installPackage({ packagePath: await makePackage('1.0.0', 1000), family: 'understudy-sim', store, env, trustedKeys: loadTrustedKeys(trusted), bootAttempts: 3 });
    await simulateBoot(env, store);

    const port = new SerialPort({ path: join(dir, 'b'), baudRate: 115200, autoOpen: false });
    await new Promise<void>((resolve, reject) => port.open((e) => (e ? reject(e) : resolve())));
    try {
      const sender = startSb(join(dir, 'a'), pkg);
      sb = sender.child;
      let lastPct = -1;
      const rx = await receiveFile(port, { dir: join(dir, 'incoming'), onProgress: (p) => { lastPct = Math.floor((100 * p.received) / (p.total ?? 1)); } });
      const s = await sender.done;
      assert.equal(s.code, 0, `sb failed: ${s.stderr.slice(-300)}`);
      assert.deepEqual([rx.name, rx.protocol, rx.sizeKnown, rx.bytes], ['understudy-1.1.0.usp', 'ymodem', true, readFileSync(pkg).length]);
      assert.equal(lastPct, 100);
      assert.deepEqual(readFileSync(rx.path), readFileSync(pkg));

      const r = await installPackage({ packagePath: rx.path, family: 'understudy-sim', store, env, trustedKeys: loadTrustedKeys(trusted), bootAttempts: 3 });
      assert.deepEqual([r.slot, r.version, r.armed], ['B', '1.1.0', true]);
      const b = await simulateBoot(env, store);
      assert.deepEqual([b.slot, b.reason, b.version], ['B', 'trial', '1.1.0']);
      assert.ok(store.verify('B').ok);
      assert.equal((await markGood(env, store)).committed, true);
    } finally {
      await new Promise<void>((r) => port.close(() => r()));
    }
  });

  it('the user flow through the CLI: build, upload with sb and install, boot, commit; a broken package changes nothing', async () => {
    const storage = join(dir, 'store');
    const board = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board', 'sim-a.json'), 'utf8')) as Record<string, any>;
    board.storageDir = storage;
    board.console = { device: join(dir, 'b'), baud: 115200 };
    board.upgrade = { bootAttempts: 2 };
    delete board.ha;
    const boardFile = join(dir, 'board.json');
    writeFileSync(boardFile, JSON.stringify(board, null, 2));
    mkdirSync(join(storage, 'keys'), { recursive: true });
    copyFileSync(keys.publicKeyFile, join(storage, 'keys', 'release.pem'));
    const cli = async (...args: string[]) => JSON.parse((await run(process.execPath, [CLI, ...args, '--board', boardFile, '--json'])).stdout);

    // Factory state: 1.0.0 in slot A. Then 1.1.0 built with the CLI, as a release engineer does.
    const img = join(dir, 'img');
    writeImage(img, { 'controller/understudy.mjs': 'console.log(1)\n', 'firmware.json': '{}' });
    const v1 = join(dir, 'v1.usp');
    const v11 = join(dir, 'v11.usp');
    await run(process.execPath, [CLI, 'upgrade', 'build', '--key', keys.privateKeyFile, '--family', 'understudy-sim', '--version', '1.0.0', '--from', img, '--out', v1]);
    writeImage(img, { 'guests/big.img': Buffer.alloc(200 * 1024, 9) });
    const built = JSON.parse((await run(process.execPath, [CLI, 'upgrade', 'build', '--key', keys.privateKeyFile, '--family', 'understudy-sim', '--version', '1.1.0', '--min-version', '1.0.0', '--from', img, '--out', v11, '--json'])).stdout);
    assert.equal(built.manifest.version, '1.1.0');
    assert.equal((await cli('upgrade', 'install', v1)).firstInstall, true);
    assert.equal((await cli('upgrade', 'boot')).slot, 'A');

    // Upload over the simulated console: the board listens on its console device, sb sends.
    const receive = async (file: string): Promise<{ code: number | null; out: string; sb: { code: number | null; stderr: string } }> => {
      const child = spawn(process.execPath, [CLI, 'upgrade', 'receive', '--install', '--timeout', '30', '--board', boardFile, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      cliChild = child;
      let out = '';
      let err = '';
      child.stdout!.on('data', (d: Buffer) => { out += d; });
      child.stderr!.on('data', (d: Buffer) => { err += d; });
      for (let i = 0; i < 400 && !err.includes('waiting for'); i++) await new Promise((r) => setTimeout(r, 25));
      const sender = startSb(join(dir, 'a'), file);
      sb = sender.child;
      const [code, s] = await Promise.all([new Promise<number | null>((r) => child.once('exit', r)), sender.done]);
      return { code, out: out || err, sb: s };
    };
    const ok = await receive(v11);
    assert.equal(ok.code, 0, ok.out);
    assert.equal(ok.sb.code, 0, ok.sb.stderr.slice(-300));
    const res = JSON.parse(ok.out);
    assert.deepEqual([res.received.protocol, res.installed.slot, res.installed.version], ['ymodem', 'B', '1.1.0']);

    // A deliberately broken package (one payload byte flipped) arrives fine but is refused.
    const broken = join(dir, 'broken.usp');
    const b = readFileSync(v1);
    b[b.length - 2000] ^= 0x40;
    writeFileSync(broken, b);
    const slotsBefore = treeDigest(join(storage, 'slots', 'B'));
    const bad = await receive(broken);
    assert.equal(bad.code, 1);
    assert.match(JSON.parse(bad.out).error.code, /^US_ERR_PKG_/);
    assert.equal(treeDigest(join(storage, 'slots', 'B')), slotsBefore, 'the armed slot is untouched');

    // Reboot into the new slot, commit it.
    const boot = await cli('upgrade', 'boot');
    assert.deepEqual([boot.slot, boot.reason, boot.version], ['B', 'trial', '1.1.0']);
    const st = await cli('upgrade', 'status', '--verify');
    assert.deepEqual([st.running, st.good, st.trial, st.triesLeft], ['B', 'A', 'B', 1]);
    assert.ok(st.slots.every((s: { verified: { ok: boolean } }) => s.verified.ok));
    assert.equal((await cli('upgrade', 'mark-good')).committed, true);
    const after = await cli('upgrade', 'status');
    assert.deepEqual([after.running, after.good, after.trial], ['B', 'B', null]);
  });
});
