/**
 * Makes an upgrade package from a slot image directory: lists and hashes its regular files, writes
 * them as a plain tar stream, signs the manifest with an Ed25519 private key, and assembles the .usp
 * file (written beside the target, then renamed). Before it renames, it checks its own payload with
 * the installer's extractor, so it never emits a package a board would reject for content reasons.
 * Refuses symlinks, devices and a top-level slot.json. Owns nothing on a board.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { createReadStream, createWriteStream, lstatSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { dirname, join, basename } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { create as tarCreate } from 'tar';
import { UsError } from '../core/errors.js';
import { keyIdOf, signBytes } from './keys.js';
import { MANIFEST_FORMAT, manifestSchema, MAX_FILES, SLOT_RECORD, unsafePathReason, type Manifest, type ManifestFile } from './manifest.js';
import { encodeHeader, HEADER_BYTES } from './package-format.js';
import { PayloadExtractor } from './payload.js';
import { isSemVer } from './semver.js';

export interface BuildOptions {
  /** The slot image directory tree. */
  fromDir: string;
  /** Ed25519 private key. */
  privateKey: KeyObject;
  /** Board family the package fits. */
  family: string;
  version: string;
  minVersion?: string;
  description?: string;
  /** The .usp file to write. */
  out: string;
  /** Fixed creation time (reproducible builds); default now. */
  createdAt?: Date;
  onProgress?: (p: { phase: 'hash' | 'pack' | 'check'; done: number; total: number }) => void;
}

export interface BuildResult {
  out: string;
  manifest: Manifest;
  packageSha256: string;
  packageBytes: number;
}

function listImage(root: string): ManifestFile[] {
  const files: ManifestFile[] = [];
  const walk = (rel: string) => {
    const abs = rel ? join(root, rel) : root;
    const names = readdirSync(abs).sort();
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      const st = lstatSync(join(root, r));
      if (st.isDirectory()) walk(r);
      else if (st.isFile()) {
        const why = unsafePathReason(r);
        if (why) throw new UsError('US_ERR_PKG_UNSAFE_ENTRY', `slot image ${root}: ${r}: ${why}`);
        if (r === SLOT_RECORD) throw new UsError('US_ERR_PKG_UNSAFE_ENTRY', `slot image ${root}: ${SLOT_RECORD} is reserved for the installer`);
        files.push({ path: r, size: st.size, mode: st.mode & 0o777, sha256: '' });
      } else {
        const kind = st.isSymbolicLink() ? 'a symbolic link' : 'not a regular file';
        throw new UsError('US_ERR_PKG_UNSAFE_ENTRY', `slot image ${root}: ${r} is ${kind}; packages hold regular files only`);
      }
      if (files.length > MAX_FILES) throw new UsError('US_ERR_PKG_MANIFEST', `slot image ${root}: more than ${MAX_FILES} files`);
    }
  };
  try {
    walk('');
  } catch (e) {
    if (e instanceof UsError) throw e;
    throw new UsError('US_ERR_NOT_FOUND', `slot image ${root}: ${(e as Error).message}`);
  }
  if (!files.length) throw new UsError('US_ERR_PKG_MANIFEST', `slot image ${root} holds no files`);
  return files;
}

export async function buildPackage(o: BuildOptions): Promise<BuildResult> {
  for (const [k, v] of [['version', o.version], ['minVersion', o.minVersion]] as const) {
    if (v !== undefined && !isSemVer(v)) throw new UsError('US_ERR_CONFIG', `${k}: not a semantic version (like 1.2.3): ${JSON.stringify(v)}`);
  }
  if (o.privateKey.asymmetricKeyType !== 'ed25519' || o.privateKey.type !== 'private') throw new UsError('US_ERR_CONFIG', 'the signing key must be an Ed25519 private key');
  const files = listImage(o.fromDir);
  const totalBytes = files.reduce((s, f) => s + f.size, 0);

  let hashed = 0;
  for (const f of files) {
    const h = createHash('sha256');
    for await (const c of createReadStream(join(o.fromDir, f.path), { highWaterMark: 1 << 20 })) {
      h.update(c as Buffer);
      hashed += (c as Buffer).length;
      o.onProgress?.({ phase: 'hash', done: hashed, total: totalBytes });
    }
    f.sha256 = h.digest('hex');
  }

  const createdAt = o.createdAt ?? new Date();
  const tmpPayload = join(dirname(o.out), `.${basename(o.out)}.${process.pid}.payload`);
  const tmpOut = join(dirname(o.out), `.${basename(o.out)}.${process.pid}.tmp`);
  try {
    // The tar stream: regular files only, in manifest order, no owner names, fixed mtime.
    const payloadHash = createHash('sha256');
    let payloadBytes = 0;
    const pack = tarCreate({ cwd: o.fromDir, portable: true, noDirRecurse: true, mtime: createdAt, follow: false }, files.map((f) => f.path));
    const out = createWriteStream(tmpPayload, { mode: 0o600 });
    await pipeline(pack, async function* (src: AsyncIterable<Buffer>) {
      for await (const c of src) {
        payloadHash.update(c);
        payloadBytes += c.length;
        o.onProgress?.({ phase: 'pack', done: Math.min(payloadBytes, totalBytes), total: totalBytes });
        yield c;
      }
    }, out);

    const raw: Manifest = {
      format: MANIFEST_FORMAT,
      compatible: o.family,
      version: o.version,
      ...(o.minVersion ? { minVersion: o.minVersion } : {}),
      keyId: keyIdOf(o.privateKey),
      createdAt: createdAt.toISOString(),
      ...(o.description ? { description: o.description } : {}),
      payload: { size: payloadBytes, sha256: payloadHash.digest('hex') },
      files,
    };
    const parsed = manifestSchema.safeParse(raw);
    if (!parsed.success) throw new UsError('US_ERR_PKG_MANIFEST', `cannot build: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    const manifest = parsed.data;

    // Self-check: the payload as written matches the manifest (a file changed while packing fails here).
    const ex = new PayloadExtractor(manifest, undefined, `built payload of ${o.out}`);
    let checked = 0;
    for await (const c of createReadStream(tmpPayload, { highWaterMark: 1 << 20 })) {
      await ex.write(c as Buffer);
      checked += (c as Buffer).length;
      o.onProgress?.({ phase: 'check', done: checked, total: payloadBytes });
    }
    await ex.finish();

    const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 1));
    const signature = signBytes(o.privateKey, manifestBytes);
    const header = encodeHeader({ manifestBytes: manifestBytes.length, signatureBytes: signature.length, payloadBytes });
    const pkgHash = createHash('sha256').update(header).update(manifestBytes).update(signature);
    const w = createWriteStream(tmpOut, { mode: 0o644 });
    w.write(header);
    w.write(manifestBytes);
    w.write(signature);
    await pipeline(createReadStream(tmpPayload, { highWaterMark: 1 << 20 }), async function* (src: AsyncIterable<Buffer>) {
      for await (const c of src) {
        pkgHash.update(c);
        yield c;
      }
    }, w);
    const fh = await open(tmpOut, 'r+');
    await fh.sync();
    await fh.close();
    renameSync(tmpOut, o.out);
    return { out: o.out, manifest, packageSha256: pkgHash.digest('hex'), packageBytes: HEADER_BYTES + manifestBytes.length + signature.length + payloadBytes };
  } finally {
    rmSync(tmpPayload, { force: true });
    rmSync(tmpOut, { force: true });
  }
}
