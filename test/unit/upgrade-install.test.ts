import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { FileBootEnv } from '../../src/hw/bootenv/index.js';
import { markGood, readBootState, simulateBoot } from '../../src/upgrade/bootflow.js';
import { buildPackage } from '../../src/upgrade/builder.js';
import { installPackage, type InstallOptions } from '../../src/upgrade/installer.js';
import { generateKeys, loadPrivateKey, loadTrustedKeys } from '../../src/upgrade/keys.js';
import { HEADER_BYTES } from '../../src/upgrade/package-format.js';
import { cleanUpgradeLeftovers } from '../../src/upgrade/leftovers.js';
import { SLOT_SIGNED_HEAD } from '../../src/upgrade/manifest.js';
import { SlotStore } from '../../src/upgrade/slots.js';
import { assemblePackage, craftPackage, manifestFor, tarEnd, tarEntry, treeDigest, writeImage, type CraftFile } from '../../src/upgrade/testing.js';

const FAMILY = 'test-family';

describe('upgrade installer', function () {
  this.timeout(60000);
  let dir: string;
  let key: KeyObject;
  let otherKey: KeyObject;
  let store: SlotStore;
  let env: FileBootEnv;
  let keysDir: string;
  const files: CraftFile[] = [
    { path: 'controller/understudy.mjs', data: Buffer.from('console.log("v")\n'), mode: 0o755 },
    { path: 'guests/dx-legacy/initrd.img', data: Buffer.alloc(70000, 7) },
    { path: 'board/sim-a.json', data: Buffer.from('{}\n') },
  ];

  const opts = (packagePath: string, o: Partial<InstallOptions> = {}): InstallOptions => ({
    packagePath, family: FAMILY, store, env, trustedKeys: loadTrustedKeys(keysDir), bootAttempts: 3, ...o,
  });
  const write = (name: string, b: Buffer) => {
    const f = join(dir, name);
    writeFileSync(f, b);
    return f;
  };
  const pkg = (version: string, o: Parameters<typeof craftPackage>[2] = {}, fs = files) => write(`p-${version}-${Math.random()}.usp`, craftPackage(fs, key, { version, ...o }));

  /** A is 1.0.0 (good, older), B is 1.1.0 (running, committed): any new install targets A. */
  async function twoGoodSlots(): Promise<void> {
    await installPackage(opts(pkg('1.0.0')));
    await simulateBoot(env, store);
    await installPackage(opts(pkg('1.1.0')));
    await simulateBoot(env, store);
    await markGood(env, store);
    assert.equal(store.bootedSlot(), 'B');
  }

  /** Asserts `p` is rejected with `code` and that slot A, the slots dir and the boot env are unchanged. */
  async function rejects(p: string, code: string, message?: RegExp, o: Partial<InstallOptions> = {}): Promise<void> {
    const before = { a: treeDigest(store.slotDir('A')), b: treeDigest(store.slotDir('B')), env: readFileSync(env.path, 'utf8') };
    await assert.rejects(installPackage(opts(p, o)), (e: Error & { code: string }) => {
      assert.equal(e.code, code, e.message);
      if (message) assert.match(e.message, message);
      return true;
    });
    assert.equal(treeDigest(store.slotDir('A')), before.a, 'inactive slot A untouched');
    assert.equal(treeDigest(store.slotDir('B')), before.b, 'running slot B untouched');
    assert.equal(readFileSync(env.path, 'utf8'), before.env, 'boot environment untouched');
    assert.equal(store.readRecord('A').record?.version, '1.0.0');
    assert.ok(store.verify('A').ok, 'slot A still verifies');
    assert.ok(!existsSync(store.stagingDir('A')), 'no staging left behind');
  }

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-upg-'));
    key = generateKeyPairSync('ed25519').privateKey;
    otherKey = generateKeyPairSync('ed25519').privateKey;
    keysDir = join(dir, 'keys');
    mkdirSync(keysDir);
    const { publicKey } = { publicKey: (await import('node:crypto')).createPublicKey(key) };
    writeFileSync(join(keysDir, 'release.pem'), publicKey.export({ type: 'spki', format: 'pem' }));
    store = new SlotStore(join(dir, 'slots'), join(dir, 'slots', 'cmdline'));
    env = new FileBootEnv(join(dir, 'bootenv'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('installs the first package as the good slot, then arms a trial of the inactive slot', async () => {
    const r1 = await installPackage(opts(pkg('1.0.0')));
    assert.deepEqual([r1.slot, r1.firstInstall, r1.armed], ['A', true, false]);
    assert.deepEqual(await readBootState(env), { good: 'A', trial: undefined, triesLeft: 0 });
    assert.equal((await simulateBoot(env, store)).slot, 'A');
    const r2 = await installPackage(opts(pkg('1.1.0')));
    assert.deepEqual([r2.slot, r2.armed, r2.previousVersion, r2.bootAttempts], ['B', true, '1.0.0', 3]);
    assert.deepEqual(await readBootState(env), { good: 'A', trial: 'B', triesLeft: 3 });
    assert.ok(store.verify('B').ok);
    const installed = readFileSync(join(store.slotDir('B'), 'controller/understudy.mjs'));
    assert.deepEqual(installed, files[0]!.data);
    const b = await simulateBoot(env, store);
    assert.deepEqual([b.slot, b.reason, b.triesLeft, b.version], ['B', 'trial', 2, '1.1.0']);
    assert.deepEqual(await markGood(env, store), { slot: 'B', committed: true, version: '1.1.0' });
    assert.deepEqual(await readBootState(env), { good: 'B', trial: undefined, triesLeft: 0 });
  });

  it('keeps file modes, empty files and nested directories; records the package hash', async () => {
    const fs2: CraftFile[] = [...files, { path: 'a/b/c/empty', data: Buffer.alloc(0), mode: 0o600 }];
    const p = pkg('1.0.0', {}, fs2);
    const r = await installPackage(opts(p));
    const rec = store.readRecord('A').record!;
    assert.equal(rec.packageSha256, r.packageSha256);
    assert.equal(rec.packageSha256, (await import('node:crypto')).createHash('sha256').update(readFileSync(p)).digest('hex'));
    assert.equal(rec.files.length, 4);
    assert.ok(store.verify('A').ok, store.verify('A').problems.join());
  });

  it('builds packages from a slot image directory that install bit for bit', async () => {
    const img = join(dir, 'img');
    writeImage(img, { 'bin/understudy': { data: '#!/bin/sh\n', mode: 0o755 }, 'firmware.json': '{"v":1}\n', 'guests/x/vmlinuz': Buffer.alloc(200000, 3) });
    const k = generateKeys(join(dir, 'signing'));
    copyFileSync(k.publicKeyFile, join(keysDir, 'signing.pem'));
    const out = join(dir, 'built.usp');
    const r = await buildPackage({ fromDir: img, privateKey: loadPrivateKey(k.privateKeyFile), family: FAMILY, version: '2.0.0', minVersion: '1.0.0', out });
    assert.equal(r.manifest.files.length, 3);
    const i = await installPackage(opts(out));
    assert.equal(i.packageSha256, r.packageSha256);
    assert.equal(treeDigest(join(store.slotDir('A'), 'guests')), treeDigest(join(img, 'guests')));
    assert.equal(treeDigest(join(store.slotDir('A'), 'bin')), treeDigest(join(img, 'bin')));
  });

  it('the builder refuses symlinks and a slot.json in the image', async () => {
    const img = join(dir, 'img');
    writeImage(img, { 'a.txt': 'a' });
    (await import('node:fs')).symlinkSync('/etc/passwd', join(img, 'link'));
    const k = generateKeys(join(dir, 'signing'));
    await assert.rejects(buildPackage({ fromDir: img, privateKey: loadPrivateKey(k.privateKeyFile), family: FAMILY, version: '1.0.0', out: join(dir, 'x.usp') }),
      (e: Error & { code: string }) => e.code === 'US_ERR_PKG_UNSAFE_ENTRY' && /symbolic link/.test(e.message));
    rmSync(join(img, 'link'));
    writeImage(img, { 'slot.json': '{}' });
    await assert.rejects(buildPackage({ fromDir: img, privateKey: loadPrivateKey(k.privateKeyFile), family: FAMILY, version: '1.0.0', out: join(dir, 'x.usp') }),
      (e: Error & { code: string }) => e.code === 'US_ERR_PKG_UNSAFE_ENTRY' && /reserved/.test(e.message));
  });

  describe('rejects, leaving the inactive slot (an older good image) untouched', () => {
    beforeEach(twoGoodSlots);

    it('a bad signature', async () => {
      const b = craftPackage(files, key, { version: '1.2.0' });
      const m = b.readUInt32BE(12);
      b[HEADER_BYTES + m + 5] ^= 0x01;
      await rejects(write('badsig.usp', b), 'US_ERR_PKG_SIGNATURE', /does not verify/);
    });

    it('a manifest changed after signing', async () => {
      const b = craftPackage(files, key, { version: '1.2.0' });
      const text = b.toString('latin1');
      const at = text.indexOf('"1.2.0"');
      b.write('"9.2.0"', at, 'latin1');
      await rejects(write('edited.usp', b), 'US_ERR_PKG_SIGNATURE');
    });

    it('a package signed with a key the board does not trust', async () => {
      await rejects(write('unknown.usp', craftPackage(files, otherKey, { version: '1.2.0' })), 'US_ERR_PKG_UNKNOWN_KEY', /does not trust/);
    });

    it('any package when the board trusts no key', async () => {
      await rejects(pkg('1.2.0'), 'US_ERR_PKG_UNKNOWN_KEY', /trusts no signing keys/, { trustedKeys: new Map() });
    });

    it('a tampered payload file', async () => {
      const b = craftPackage(files, key, { version: '1.2.0' });
      const at = b.indexOf(Buffer.alloc(64, 7));
      b[at + 10] = 8;
      await rejects(write('tampered.usp', b), 'US_ERR_PKG_HASH_MISMATCH', /initrd\.img: SHA-256/);
    });

    it('a byte changed in tar padding (outside every file)', async () => {
      const b = craftPackage(files, key, { version: '1.2.0' });
      const payloadAt = HEADER_BYTES + b.readUInt32BE(12) + 64;
      b[payloadAt + 512 + files[0]!.data.length + 10] = 1; // the zero padding after the first file's data
      await rejects(write('padding.usp', b), 'US_ERR_PKG_HASH_MISMATCH', /payload's SHA-256/);
      const c = craftPackage(files, key, { version: '1.2.0' });
      c[c.length - 3] = 1; // inside the end-of-archive zero blocks: parsed as a broken header
      await rejects(write('eof.usp', c), 'US_ERR_PKG_FORMAT', /checksum failure/);
    });

    it('a truncated file, wherever it is cut', async () => {
      const b = craftPackage(files, key, { version: '1.2.0' });
      const m = b.readUInt32BE(12);
      await rejects(write('t1.usp', b.subarray(0, b.length - 1000)), 'US_ERR_PKG_TRUNCATED', /missing/);
      await rejects(write('t2.usp', b.subarray(0, HEADER_BYTES + m - 3)), 'US_ERR_PKG_TRUNCATED', /manifest/);
      await rejects(write('t3.usp', b.subarray(0, 20)), 'US_ERR_PKG_TRUNCATED', /header/);
    });

    it('a path traversal entry, and writes nothing outside the staging directory', async () => {
      const evil = [{ path: 'ok.txt', data: Buffer.from('x') }];
      const payload = Buffer.concat([tarEntry({ path: '../../escaped', data: Buffer.from('x') }), tarEnd()]);
      await rejects(write('trav.usp', assemblePackage(manifestFor(evil, payload, key, { compatible: FAMILY, version: '1.2.0' }), payload, key)), 'US_ERR_PKG_UNSAFE_ENTRY', /"\.\."/);
      assert.ok(!existsSync(join(dir, 'escaped')) && !existsSync(join(store.slotsDir, 'escaped')));
    });

    it('an absolute path entry', async () => {
      const payload = Buffer.concat([tarEntry({ path: '/tmp/us-absolute-escape', data: Buffer.from('x') }), tarEnd()]);
      await rejects(write('abs.usp', assemblePackage(manifestFor([{ path: 'ok.txt', data: Buffer.from('x') }], payload, key, { compatible: FAMILY, version: '1.2.0' }), payload, key)), 'US_ERR_PKG_UNSAFE_ENTRY', /absolute/);
      assert.ok(!existsSync('/tmp/us-absolute-escape'));
    });

    for (const [type, extra, why] of [
      ['SymbolicLink', { linkpath: '/etc/passwd' }, /symbolic link/],
      ['Link', { linkpath: 'board/sim-a.json' }, /hard link/],
      ['CharacterDevice', { devmaj: 1, devmin: 3 }, /CharacterDevice entries are not allowed/],
      ['FIFO', {}, /FIFO entries are not allowed/],
    ] as const) {
      it(`a ${type} entry, even one the manifest lists`, async () => {
        const listed = [{ path: 'controller/x', data: Buffer.alloc(0) }];
        const payload = Buffer.concat([tarEntry({ path: 'controller/x', type, size: 0, ...extra }), tarEnd()]);
        await rejects(write(`${type}.usp`, assemblePackage(manifestFor(listed, payload, key, { compatible: FAMILY, version: '1.2.0' }), payload, key)), 'US_ERR_PKG_UNSAFE_ENTRY', why);
      });
    }

    it('an entry the manifest does not list, and a listed entry twice', async () => {
      const listed = [{ path: 'a', data: Buffer.from('1') }];
      const p1 = Buffer.concat([tarEntry({ path: 'a', data: Buffer.from('1') }), tarEntry({ path: 'b', data: Buffer.from('2') }), tarEnd()]);
      await rejects(write('unlisted.usp', assemblePackage(manifestFor(listed, p1, key, { compatible: FAMILY, version: '1.2.0' }), p1, key)), 'US_ERR_PKG_UNLISTED_ENTRY', /"b".*not in the manifest/);
      const p2 = Buffer.concat([tarEntry({ path: 'a', data: Buffer.from('1') }), tarEntry({ path: 'a', data: Buffer.from('1') }), tarEnd()]);
      await rejects(write('twice.usp', assemblePackage(manifestFor(listed, p2, key, { compatible: FAMILY, version: '1.2.0' }), p2, key)), 'US_ERR_PKG_UNLISTED_ENTRY', /twice/);
      const p3 = Buffer.concat([tarEntry({ path: 'dir', type: 'Directory', size: 0 }), tarEntry({ path: 'a', data: Buffer.from('1') }), tarEnd()]);
      await rejects(write('dir.usp', assemblePackage(manifestFor(listed, p3, key, { compatible: FAMILY, version: '1.2.0' }), p3, key)), 'US_ERR_PKG_UNLISTED_ENTRY', /Directory/);
    });

    it('a file whose size differs from the manifest', async () => {
      const listed = [{ path: 'a', data: Buffer.from('12345') }];
      const payload = Buffer.concat([tarEntry({ path: 'a', data: Buffer.from('1234') }), tarEnd()]);
      const m = manifestFor(listed, payload, key, { compatible: FAMILY, version: '1.2.0' });
      await rejects(write('size.usp', assemblePackage(m, payload, key)), 'US_ERR_PKG_HASH_MISMATCH', /4 bytes, the manifest says 5/);
    });

    it('a manifest listing a file the payload lacks', async () => {
      const listed = [{ path: 'a', data: Buffer.from('1') }, { path: 'b', data: Buffer.from('2') }];
      const payload = Buffer.concat([tarEntry({ path: 'a', data: Buffer.from('1') }), tarEnd()]);
      await rejects(write('lacks.usp', assemblePackage(manifestFor(listed, payload, key, { compatible: FAMILY, version: '1.2.0' }), payload, key)), 'US_ERR_PKG_TRUNCATED', /lacks 1 listed file/);
    });

    it('a signed manifest that is malformed (unsafe path listed)', async () => {
      const payload = Buffer.concat([tarEntry({ path: 'a', data: Buffer.from('1') }), tarEnd()]);
      const m = manifestFor([{ path: '../a', data: Buffer.from('1') }], payload, key, { compatible: FAMILY, version: '1.2.0' });
      await rejects(write('badmanifest.usp', assemblePackage(m, payload, key)), 'US_ERR_PKG_MANIFEST', /files\[0\]\.path: "\.\." in path/);
    });

    it('a compressed payload', async () => {
      const inner = Buffer.concat([tarEntry({ path: 'a', data: Buffer.from('1') }), tarEnd()]);
      const payload = gzipSync(inner);
      await rejects(write('gz.usp', assemblePackage(manifestFor([{ path: 'a', data: Buffer.from('1') }], payload, key, { compatible: FAMILY, version: '1.2.0' }), payload, key)), 'US_ERR_PKG_FORMAT', /compressed/);
    });

    it('a package for another board family', async () => {
      await rejects(pkg('1.2.0', { compatible: 'atca-x86-gen3' }), 'US_ERR_PKG_INCOMPATIBLE', /"atca-x86-gen3", this board is "test-family"/);
    });

    it('a downgrade, unless forced', async () => {
      await rejects(pkg('1.0.5'), 'US_ERR_PKG_DOWNGRADE', /1\.0\.5 is older than the running 1\.1\.0.*--force/);
      await rejects(pkg('1.1.0-rc.1'), 'US_ERR_PKG_DOWNGRADE');
      const r = await installPackage(opts(pkg('1.0.5'), { force: true }));
      assert.deepEqual([r.slot, r.forced, r.version], ['A', true, '1.0.5']);
    });

    it('an upgrade from below the package\'s minimum version, unless forced', async () => {
      await rejects(pkg('2.0.0', { minVersion: '1.5.0' }), 'US_ERR_PKG_TOO_OLD', /from 1\.5\.0 or later; the running version is 1\.1\.0/);
      const r = await installPackage(opts(pkg('2.0.0', { minVersion: '1.5.0' }), { force: true }));
      assert.equal(r.forced, true);
    });

    it('something that is not a package, or has junk after the payload', async () => {
      await rejects(write('junk.usp', Buffer.from('#!/bin/sh\necho hello\n'.repeat(10))), 'US_ERR_PKG_FORMAT', /bad magic/);
      const b = craftPackage(files, key, { version: '1.2.0' });
      await rejects(write('trailing.usp', Buffer.concat([b, Buffer.from('garbage')])), 'US_ERR_PKG_FORMAT', /7 unexpected bytes after the payload/);
    });

    it('accepts XMODEM padding (SUB bytes) after the payload', async () => {
      const b = craftPackage(files, key, { version: '1.2.0' });
      const r = await installPackage(opts(write('padded.usp', Buffer.concat([b, Buffer.alloc(100, 0x1a)]))));
      assert.equal(r.slot, 'A');
      assert.equal(r.packageSha256, (await import('node:crypto')).createHash('sha256').update(b).digest('hex'));
    });

    it('any single changed byte anywhere in the package (property)', async () => {
      const good = craftPackage(files, key, { version: '1.2.0' });
      await fc.assert(fc.asyncProperty(fc.nat(good.length - 1), fc.integer({ min: 1, max: 255 }), async (at, xor) => {
        const b = Buffer.from(good);
        b[at] ^= xor;
        const p = write('flip.usp', b);
        const before = treeDigest(store.slotDir('A'));
        const envBefore = readFileSync(env.path, 'utf8');
        await assert.rejects(installPackage(opts(p)), (e: Error & { code: string }) => /^US_ERR_PKG_/.test(e.code));
        assert.equal(treeDigest(store.slotDir('A')), before);
        assert.equal(readFileSync(env.path, 'utf8'), envBefore);
      }), { numRuns: 60, seed: 6006 });
    });
  });

  it('refuses to overwrite the fallback while the running slot is an uncommitted trial', async () => {
    await installPackage(opts(pkg('1.0.0')));
    await simulateBoot(env, store);
    await installPackage(opts(pkg('1.1.0')));
    await simulateBoot(env, store); // running B on trial, A is the fallback
    const before = treeDigest(store.slotDir('A'));
    await assert.rejects(installPackage(opts(pkg('1.2.0'))), (e: Error & { code: string }) => e.code === 'US_ERR_UPGRADE_STATE' && /mark-good/.test(e.message));
    assert.equal(treeDigest(store.slotDir('A')), before);
  });

  it('never overwrites the only loadable slot, even if the command line names the other one', async () => {
    await installPackage(opts(pkg('1.0.0')));
    store.writeCmdline('B'); // stale: B holds nothing
    const r = await installPackage(opts(pkg('1.1.0')));
    assert.equal(r.slot, 'B');
    assert.equal(store.readRecord('A').record?.version, '1.0.0');
    assert.deepEqual(await readBootState(env), { good: 'A', trial: 'B', triesLeft: 3 });
  });

  it('replaces an armed but not yet booted trial, re-arming it', async () => {
    await installPackage(opts(pkg('1.0.0')));
    await simulateBoot(env, store);
    await installPackage(opts(pkg('1.1.0')));
    const r = await installPackage(opts(pkg('1.2.0')));
    assert.equal(r.slot, 'B');
    assert.deepEqual(await readBootState(env), { good: 'A', trial: 'B', triesLeft: 3 });
    assert.equal(store.readRecord('B').record?.version, '1.2.0');
  });

  it('one upgrade operation at a time: a live holder of the lock makes it busy, a dead one is taken over', async () => {
    mkdirSync(store.slotsDir, { recursive: true });
    const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    writeFileSync(join(store.slotsDir, '.lock'), `1 ${bootId}\n`); // pid 1 is alive
    await assert.rejects(installPackage(opts(pkg('1.0.0'))), (e: Error & { code: string }) => e.code === 'US_ERR_UPGRADE_BUSY');
    writeFileSync(join(store.slotsDir, '.lock'), `999999999 ${bootId}\n`);
    assert.equal((await installPackage(opts(pkg('1.0.0')))).slot, 'A');
    assert.ok(!existsSync(join(store.slotsDir, '.lock')));
  });

  describe('the gaps of issue 14: downgrade floor, key files, free space, leftovers', () => {
    beforeEach(twoGoodSlots);

    it('keeps the package\'s signed head in each slot; the slot still verifies with it', () => {
      assert.ok(existsSync(join(store.slotDir('B'), SLOT_SIGNED_HEAD)));
      assert.ok(store.verify('B').ok, store.verify('B').problems.join('; '));
      assert.equal(store.signedVersion('B', loadTrustedKeys(keysDir)), '1.1.0');
    });

    it('an edited slot.json does not lower the floor: the signed head says 1.1.0, so 1.0.5 is refused', async () => {
      const f = join(store.slotDir('B'), 'slot.json');
      writeFileSync(f, readFileSync(f, 'utf8').replace('"version": "1.1.0"', '"version": "0.0.1"'));
      assert.equal(store.readRecord('B').record?.version, '0.0.1', 'the edit is a well-formed record');
      await rejects(pkg('1.0.5'), 'US_ERR_UPGRADE_FLOOR', new RegExp(`${SLOT_SIGNED_HEAD}: signed for version 1\\.1\\.0, slot\\.json says 0\\.0\\.1.*--force`));
    });

    it('a missing, corrupt or untrusted signed head refuses the install, naming the file, unless forced', async () => {
      const head = join(store.slotDir('B'), SLOT_SIGNED_HEAD);
      const good = readFileSync(head);
      const name = head.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      rmSync(head);
      await rejects(pkg('1.2.0'), 'US_ERR_UPGRADE_FLOOR', new RegExp(`${name}: missing`));
      const bad = Buffer.from(good);
      bad[bad.length - 1] ^= 1; // the signature
      writeFileSync(head, bad);
      await rejects(pkg('1.2.0'), 'US_ERR_UPGRADE_FLOOR', new RegExp(`${name}: does not verify`));
      // Re-signed by a key this board does not trust.
      const foreign = craftPackage(files, otherKey, { version: '1.1.0' });
      writeFileSync(head, foreign.subarray(0, HEADER_BYTES + foreign.readUInt32BE(12) + 64));
      await rejects(pkg('1.2.0'), 'US_ERR_UPGRADE_FLOOR', new RegExp(`${name}: does not verify: .*does not trust`));
      const r = await installPackage(opts(pkg('1.0.5'), { force: true }));
      assert.deepEqual([r.slot, r.forced, r.version], ['A', true, '1.0.5']);
    });

    it('slots whose records are all unreadable are not an empty board: no silent first install', async () => {
      for (const s of ['A', 'B'] as const) writeFileSync(join(store.slotDir(s), 'slot.json'), '{ damaged');
      await assert.rejects(installPackage(opts(pkg('0.0.1'))), (e: Error & { code: string }) => e.code === 'US_ERR_UPGRADE_FLOOR' && /slots\/A\/slot\.json.*unknown.*--force/.test(e.message));
      assert.equal(readFileSync(join(store.slotDir('A'), 'slot.json'), 'utf8'), '{ damaged', 'slot A untouched');
      const r = await installPackage(opts(pkg('0.0.1'), { force: true }));
      assert.deepEqual([r.slot, r.forced, r.firstInstall], ['A', true, true]);
    });

    it('a trusted key or keys directory that someone other than root can write is refused, naming it', () => {
      const pem = join(keysDir, 'release.pem');
      chmodSync(pem, 0o664);
      assert.throws(() => loadTrustedKeys(keysDir), (e: Error & { code: string }) => e.code === 'US_ERR_CONFIG' && e.message.includes(pem) && /group- or world-writable/.test(e.message));
      chmodSync(pem, 0o644);
      chownSync(pem, 65534, 65534);
      assert.throws(() => loadTrustedKeys(keysDir), (e: Error & { code: string }) => e.code === 'US_ERR_CONFIG' && e.message.includes(pem) && /uid 65534, expected root/.test(e.message));
      chownSync(pem, 0, 0);
      chmodSync(keysDir, 0o777);
      assert.throws(() => loadTrustedKeys(keysDir), (e: Error & { code: string }) => e.code === 'US_ERR_CONFIG' && e.message.includes(`keys directory ${keysDir}`));
      chmodSync(keysDir, 0o755);
      assert.equal(loadTrustedKeys(keysDir).size, 1);
    });

    it('an install that would not leave the reserve free is refused before any byte is written', async () => {
      const seen: string[] = [];
      await rejects(pkg('1.2.0'), 'US_ERR_NO_SPACE', /MiB needed in .*slots with 64\.0 MiB kept free, only 1\.0 MiB available/,
        { freeBytes: (d) => { seen.push(d); return 1048576; } });
      assert.deepEqual(seen, [store.slotsDir]);
      const r = await installPackage(opts(pkg('1.2.0'), { freeBytes: () => 65 * 1048576 + 100000, reserveBytes: 64 * 1048576 }));
      assert.equal(r.version, '1.2.0');
    });

    it('leftovers of an interrupted install and push are removed at start-up; a serial transfer still being written is kept', () => {
      mkdirSync(store.stagingDir('A'));
      writeFileSync(join(store.stagingDir('A'), 'half'), 'x');
      mkdirSync(store.retiredDir('B'));
      const incoming = join(dir, 'incoming');
      mkdirSync(incoming);
      const push = join(incoming, '.rolling-0123456789ab.part');
      const oldRx = join(incoming, '.pkg.usp.part');
      const liveRx = join(incoming, '.other.usp.part');
      const done = join(incoming, 'rolling-0123456789abcdef.usp');
      for (const f of [push, oldRx, liveRx, done]) writeFileSync(f, 'x');
      const hourAgo = new Date(Date.now() - 3600000);
      utimesSync(oldRx, hourAgo, hourAgo);
      const r = cleanUpgradeLeftovers({ store, incomingDir: incoming });
      assert.deepEqual(r.removed.sort(), [store.retiredDir('B'), store.stagingDir('A'), push, oldRx].sort());
      for (const f of r.removed) assert.ok(!existsSync(f), `${f} removed`);
      assert.ok(existsSync(liveRx) && existsSync(done), 'a live transfer and a complete package are kept');
      assert.ok(store.verify('A').ok && store.verify('B').ok, 'the slots themselves untouched');
    });

    it('leaves the slots alone while another upgrade operation holds their lock', () => {
      mkdirSync(store.stagingDir('A'));
      const release = store.lock('install');
      try {
        const r = cleanUpgradeLeftovers({ store, incomingDir: join(dir, 'incoming') });
        assert.deepEqual(r.removed, []);
        assert.match(r.skipped ?? '', /holds/);
        assert.ok(existsSync(store.stagingDir('A')));
      } finally {
        release();
      }
    });
  });
});
