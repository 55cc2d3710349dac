/**
 * Guest packages (src/upgrade/guest-package.ts) and how a partner names their descriptors
 * (src/config/guest-descriptor.ts): a signed package holding guests/<name>.json and its images is
 * unpacked under the board's storage dir, its images resolved inside it, and named to the partner as
 * guest-package:<id>/guests/<f>.json; the same package again reuses the folder; the descriptor chosen
 * is the newest of the running guest's name; a tampered or foreign-family package leaves nothing
 * behind; a partner's reference that is malformed, leads out of the package or names a package this
 * board never unpacked is refused before anything is read.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GUEST_PACKAGE_REF, guestPackagesDir, loadGuestDescriptor, loadPartnerGuestDescriptor, partnerNameOf } from '../../src/config/guest-descriptor.js';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import type { UsError } from '../../src/core/errors.js';
import { buildPackage } from '../../src/upgrade/builder.js';
import { chooseGuestDescriptor, unpackGuestPackage } from '../../src/upgrade/guest-package.js';
import { generateKeys, loadPrivateKey, loadTrustedKeys } from '../../src/upgrade/keys.js';

describe('guest packages', () => {
  let dir: string;
  let storageDir: string;
  let keysDir: string;
  let privateKeyFile: string;

  /** A guest package with descriptors of `versions` (dx-legacy), each with its own two image files. */
  const build = async (name: string, versions: string[], family = 'understudy-sim') => {
    const img = join(dir, `img-${name}`);
    const base = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'guests', 'dx-legacy-v2.json'), 'utf8'));
    for (const v of versions) {
      mkdirSync(join(img, 'guests', `dx-legacy-${v}`), { recursive: true });
      writeFileSync(join(img, 'guests', `dx-legacy-${v}`, 'vmlinuz'), `kernel ${v}`);
      writeFileSync(join(img, 'guests', `dx-legacy-${v}`, 'initrd.img'), `initrd ${v}`);
      writeFileSync(join(img, 'guests', `dx-legacy-${v}.json`), JSON.stringify({ ...base, version: v, image: { kernel: `dx-legacy-${v}/vmlinuz`, initrd: `dx-legacy-${v}/initrd.img`, append: '' } }));
    }
    return (await buildPackage({ fromDir: img, privateKey: loadPrivateKey(privateKeyFile), family, version: '3.0.0', out: join(dir, `${name}.usp`) })).out;
  };
  const unpack = (packagePath: string, family = 'understudy-sim') => unpackGuestPackage({ packagePath, family, trustedKeys: loadTrustedKeys(keysDir), storageDir, reserveBytes: 0 });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'us-guestpkg-'));
    storageDir = join(dir, 'store');
    mkdirSync(storageDir);
    const keys = generateKeys(join(dir, 'keys'));
    keysDir = join(dir, 'trusted');
    mkdirSync(keysDir, { mode: 0o700 });
    writeFileSync(join(keysDir, 'release.pem'), readFileSync(keys.publicKeyFile));
    privateKeyFile = keys.privateKeyFile;
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('unpacks under the storage dir: descriptors with images inside the package, named to the partner by the package id; the same package again reuses it', async () => {
    const pkg = await build('two', ['2.0.0', '2.1.0']);
    const p = await unpack(pkg);
    assert.match(p.id, /^[0-9a-f]{16}$/);
    assert.equal(p.dir, join(guestPackagesDir(storageDir), p.id));
    assert.deepEqual(p.descriptors.map((d) => [d.version, d.ref]), [
      ['2.0.0', `${GUEST_PACKAGE_REF}${p.id}/guests/dx-legacy-2.0.0.json`],
      ['2.1.0', `${GUEST_PACKAGE_REF}${p.id}/guests/dx-legacy-2.1.0.json`],
    ]);
    const g = loadGuestDescriptor(p.descriptors[1]!.file);
    assert.equal(g.image.kernel, join(p.dir, 'guests', 'dx-legacy-2.1.0', 'vmlinuz'));
    assert.equal(readFileSync(g.image.kernel, 'utf8'), 'kernel 2.1.0');
    assert.equal(partnerNameOf(g, storageDir), p.descriptors[1]!.ref);
    assert.equal(partnerNameOf(loadGuestDescriptor(join(PACKAGE_ROOT, 'guests', 'dx-legacy.json')), storageDir), join(PACKAGE_ROOT, 'guests', 'dx-legacy.json'), 'a descriptor outside a package keeps its path');
    // The partner's reference resolves on this board, inside the package.
    assert.equal(loadPartnerGuestDescriptor(p.descriptors[1]!.ref, join(PACKAGE_ROOT, 'guests', 'dx-legacy.json'), 'f', storageDir).sourceFile, g.sourceFile);

    const again = await unpack(pkg);
    assert.deepEqual([again.id, again.fresh, p.fresh], [p.id, false, true]);
    assert.deepEqual(readdirSync(guestPackagesDir(storageDir)), [p.id], 'no staging folder left');
  });

  it('chooses the newest descriptor of the running guest; refuses when that is the version running or the guest is not in it', async () => {
    const p = await unpack(await build('two', ['2.1.0', '2.0.0']));
    assert.equal(chooseGuestDescriptor(p, { name: 'dx-legacy', version: '1.0.0' }, 'pkg').version, '2.1.0');
    assert.throws(() => chooseGuestDescriptor(p, { name: 'dx-legacy', version: '2.1.0' }, 'pkg'), (e: UsError) => e.code === 'US_ERR_GUEST_UPGRADE' && /newest dx-legacy is 2\.1\.0, the version running/.test(e.message));
    assert.throws(() => chooseGuestDescriptor(p, { name: 'other', version: '1.0.0' }, 'pkg'), (e: UsError) => e.code === 'US_ERR_GUEST_UPGRADE' && /no descriptor of the running guest other \(it holds: dx-legacy 2\.0\.0, dx-legacy 2\.1\.0\)/.test(e.message));
  });

  it('a tampered package, one for another family, or one without descriptors leaves nothing unpacked', async () => {
    const pkg = await build('one', ['2.0.0']);
    const bytes = readFileSync(pkg);
    bytes[bytes.length - 2000]! ^= 0x01;
    writeFileSync(join(dir, 'bad.usp'), bytes);
    await assert.rejects(unpack(join(dir, 'bad.usp')), (e: UsError) => e.code.startsWith('US_ERR_PKG_'));
    await assert.rejects(unpack(await build('fam', ['2.0.0'], 'other-family')), (e: UsError) => e.code === 'US_ERR_PKG_INCOMPATIBLE');
    mkdirSync(join(dir, 'img-none'));
    writeFileSync(join(dir, 'img-none', 'notes.txt'), 'no guest here');
    const none = (await buildPackage({ fromDir: join(dir, 'img-none'), privateKey: loadPrivateKey(privateKeyFile), family: 'understudy-sim', version: '3.0.0', out: join(dir, 'none.usp') })).out;
    await assert.rejects(unpack(none), (e: UsError) => e.code === 'US_ERR_GUEST_UPGRADE' && /no guest descriptor/.test(e.message));
    assert.deepEqual(existsSync(guestPackagesDir(storageDir)) ? readdirSync(guestPackagesDir(storageDir)) : [], []);
  });

  it('refuses a partner\'s reference that is malformed, leads out of the package, names one never unpacked here, or comes where no packages are taken', async () => {
    const p = await unpack(await build('one', ['2.0.0']));
    const own = join(PACKAGE_ROOT, 'guests', 'dx-legacy.json');
    // A link inside the package's guests/ to a descriptor elsewhere (a package cannot carry one; a local hand could).
    symlinkSync(own, join(p.dir, 'guests', 'elsewhere.json'));
    const refused: Array<[string, RegExp]> = [
      [`${GUEST_PACKAGE_REF}${p.id}/guests/../../x.json`, /not guest-package:/],
      [`${GUEST_PACKAGE_REF}${p.id}/other/dx-legacy-2.0.0.json`, /not guest-package:/],
      [`${GUEST_PACKAGE_REF}XYZ/guests/dx-legacy-2.0.0.json`, /not guest-package:/],
      [`${GUEST_PACKAGE_REF}${'0'.repeat(16)}/guests/dx-legacy-2.0.0.json`, /ENOENT on this board \(the guest package was not unpacked here\)/],
      [`${GUEST_PACKAGE_REF}${p.id}/guests/elsewhere.json`, /leads out of the guest package/],
    ];
    for (const [ref, why] of refused) {
      assert.throws(() => loadPartnerGuestDescriptor(ref, own, 'guest-upgrade-prepare guestFile', storageDir), (e: UsError) => e.code === 'US_ERR_CONFIG' && why.test(e.message) && /guest-upgrade-prepare guestFile/.test(e.message), ref);
    }
    assert.throws(() => loadPartnerGuestDescriptor(p.descriptors[0]!.ref, own, 'f'), (e: UsError) => e.code === 'US_ERR_CONFIG' && /takes no guest packages here/.test(e.message));
  });
});
