/**
 * Guest packages: a signed package (the `.usp` format of field upgrades, same keys, same board
 * family) that carries guest descriptors and their images under `guests/` — as a firmware package
 * does (image-build/build-firmware.sh), or one built from just a guest (`upgrade build --from` a
 * folder holding `guests/<name>.json` and `guests/<name>/…`). `understudy guest upgrade --to <package>`
 * unpacks it on both boards and upgrades the guest to the descriptor it holds.
 *
 * Unpacked exactly as the installer reads a package (the signature by a trusted key before the
 * manifest is parsed, the family, every entry a listed regular file at a safe path with its size and
 * SHA-256, the whole payload's hash) into `<storageDir>/guest-packages/<id>/`, where `<id>` is the
 * first 16 hex digits of the package file's SHA-256: staged beside it, fsynced, renamed into place,
 * so a folder there is always complete. The same package unpacked again reuses its folder. Owns
 * unpacking and choosing the descriptor; not the guest upgrade (src/pair/guest-upgrade.ts).
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { guestPackagesDir, loadGuestDescriptor, partnerNameOf } from '../config/guest-descriptor.js';
import { UsError } from '../core/errors.js';
import { fsyncDir } from '../hw/bootenv/durable.js';
import { assertRoom, statfsFreeBytes } from './free-space.js';
import type { TrustedKeys } from './keys.js';
import { readVerifiedHead } from './package-format.js';
import { PayloadExtractor, streamPayload, syncTree } from './payload.js';
import { compareSemVer } from './semver.js';

export interface GuestPackageDescriptor {
  /** The descriptor unpacked on this board. */
  file: string;
  /** How the partner names it (`guest-package:<id>/guests/<f>.json`). */
  ref: string;
  name: string;
  version: string;
}

export interface UnpackedGuestPackage {
  id: string;
  dir: string;
  /** The package's own version (its manifest's). */
  version: string;
  descriptors: GuestPackageDescriptor[];
  /** False when the same package had been unpacked here before. */
  fresh: boolean;
}

export interface UnpackOptions {
  packagePath: string;
  /** The board's family: the package's `compatible` must equal it. */
  family: string;
  trustedKeys: TrustedKeys;
  storageDir: string;
  /** Bytes to leave free on the storage dir's file system (upgrade.reserveMb). */
  reserveBytes: number;
}

export async function unpackGuestPackage(o: UnpackOptions): Promise<UnpackedGuestPackage> {
  const where = `guest package ${o.packagePath}`;
  const root = guestPackagesDir(o.storageDir);
  mkdirSync(root, { recursive: true, mode: 0o700 });
  const fh = await open(o.packagePath, 'r').catch((e: Error) => { throw new UsError('US_ERR_NOT_FOUND', `${where}: cannot open: ${e.message}`); });
  const staging = join(root, `.staging-${randomBytes(6).toString('hex')}`);
  let version: string;
  let id: string;
  try {
    const head = await readVerifiedHead(fh, o.trustedKeys, where);
    const m = head.manifest;
    if (m.compatible !== o.family) throw new UsError('US_ERR_PKG_INCOMPATIBLE', `${where}: made for board family "${m.compatible}", this board is "${o.family}"`, { compatible: m.compatible, family: o.family });
    if (!m.files.some((f) => /^guests\/[^/]+\.json$/.test(f.path))) throw new UsError('US_ERR_GUEST_UPGRADE', `${where}: holds no guest descriptor (guests/<name>.json)`);
    assertRoom(root, head.header.payloadBytes, o.reserveBytes, where, statfsFreeBytes);
    const hash = createHash('sha256').update(head.headBytes);
    mkdirSync(staging, { mode: 0o755 });
    const result = await streamPayload(fh, head.payloadOffset, head.header.payloadBytes, new PayloadExtractor(m, staging, where), where, { onChunk: (c) => hash.update(c) });
    syncTree(staging, result.dirs);
    version = m.version;
    id = hash.digest('hex').slice(0, 16);
  } catch (e) {
    rmSync(staging, { recursive: true, force: true });
    throw e;
  } finally {
    await fh.close();
  }
  const dir = join(root, id);
  const fresh = !existsSync(dir);
  if (fresh) {
    renameSync(staging, dir);
    fsyncDir(root);
  } else {
    rmSync(staging, { recursive: true, force: true });
  }
  const descriptors = readdirSync(join(dir, 'guests')).filter((f) => f.endsWith('.json')).sort().map((f) => {
    const g = loadGuestDescriptor(join(dir, 'guests', f));
    return { file: g.sourceFile, ref: partnerNameOf(g, o.storageDir), name: g.name, version: g.version };
  });
  return { id, dir, version, descriptors, fresh };
}

/**
 * The descriptor an upgrade of the running guest goes to: of the package's descriptors of the same
 * guest (name), the highest version; refused when that is the version running or there is none.
 */
export function chooseGuestDescriptor(p: Pick<UnpackedGuestPackage, 'descriptors'>, running: { name: string; version: string }, where: string): GuestPackageDescriptor {
  const same = p.descriptors.filter((d) => d.name === running.name).sort((a, b) => compareSemVer(b.version, a.version));
  const all = p.descriptors.map((d) => `${d.name} ${d.version}`).join(', ') || 'none';
  const best = same[0];
  if (!best) throw new UsError('US_ERR_GUEST_UPGRADE', `${where}: holds no descriptor of the running guest ${running.name} (it holds: ${all})`);
  if (best.version === running.version) throw new UsError('US_ERR_GUEST_UPGRADE', `${where}: its newest ${running.name} is ${best.version}, the version running (it holds: ${all})`);
  return best;
}
