/**
 * Test kit for upgrade packages (a public test double, like the fake QMP server): writes slot image
 * trees, crafts packages byte by byte, including deliberately malformed ones (links, traversal,
 * unlisted entries, bad signatures), and digests directory trees so a test can assert that a
 * rejected install left a slot untouched. Not used by the product's own code paths.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync, chmodSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { Header, type HeaderData } from 'tar';
import { keyIdOf, signBytes } from './keys.js';
import { MANIFEST_FORMAT, type Manifest, type ManifestFile } from './manifest.js';
import { encodeHeader } from './package-format.js';

export const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** Writes `files` (path → content, optional mode) under `dir`. */
export function writeImage(dir: string, files: Record<string, string | Buffer | { data: string | Buffer; mode: number }>): void {
  for (const [p, v] of Object.entries(files)) {
    const f = join(dir, p);
    mkdirSync(dirname(f), { recursive: true });
    const data = typeof v === 'string' || Buffer.isBuffer(v) ? v : v.data;
    writeFileSync(f, data);
    chmodSync(f, typeof v === 'object' && !Buffer.isBuffer(v) ? v.mode : 0o644);
  }
}

/** One tar entry: a 512-byte ustar header, then the data padded to 512. */
export function tarEntry(h: HeaderData & { data?: Buffer }): Buffer {
  const data = h.data ?? Buffer.alloc(0);
  const header = new Header({ mode: 0o644, uid: 0, gid: 0, mtime: new Date(0), type: 'File', size: data.length, ...h });
  header.encode();
  const pad = (512 - (data.length % 512)) % 512;
  return Buffer.concat([header.block!, data, Buffer.alloc(pad)]);
}

/** The end of a tar archive: two zero blocks. */
export const tarEnd = (): Buffer => Buffer.alloc(1024);

export interface CraftFile {
  path: string;
  data: Buffer;
  mode?: number;
}

/** A manifest listing `files` for `payload`. */
export function manifestFor(files: CraftFile[], payload: Buffer, key: KeyObject, o: Partial<Manifest> = {}): Manifest {
  const list: ManifestFile[] = files.map((f) => ({ path: f.path, size: f.data.length, mode: f.mode ?? 0o644, sha256: sha256(f.data) }));
  return {
    format: MANIFEST_FORMAT,
    compatible: 'test-family',
    version: '1.0.0',
    keyId: keyIdOf(key),
    createdAt: new Date(0).toISOString(),
    payload: { size: payload.length, sha256: sha256(payload) },
    files: list,
    ...o,
  };
}

/** Header, manifest, signature (of the manifest bytes, unless given) and payload, as one buffer. */
export function assemblePackage(manifest: unknown, payload: Buffer, key: KeyObject, signature?: Buffer): Buffer {
  const m = Buffer.from(JSON.stringify(manifest));
  const sig = signature ?? signBytes(key, m);
  return Buffer.concat([encodeHeader({ manifestBytes: m.length, signatureBytes: sig.length, payloadBytes: payload.length }), m, sig, payload]);
}

/** A well-formed package of `files` (each as a regular tar entry), signed by `key`. */
export function craftPackage(files: CraftFile[], key: KeyObject, o: Partial<Manifest> = {}): Buffer {
  const payload = Buffer.concat([...files.map((f) => tarEntry({ path: f.path, mode: f.mode ?? 0o644, data: f.data })), tarEnd()]);
  return assemblePackage(manifestFor(files, payload, key, o), payload, key);
}

/** A digest of a directory tree: paths, types, modes, link targets and contents. Missing dir → 'absent'. */
export function treeDigest(dir: string): string {
  const h = createHash('sha256');
  const walk = (rel: string) => {
    const abs = rel ? join(dir, rel) : dir;
    const st = lstatSync(abs);
    h.update(`${rel}\0${st.mode.toString(8)}\0`);
    if (st.isDirectory()) for (const n of readdirSync(abs).sort()) walk(rel ? `${rel}/${n}` : n);
    else if (st.isSymbolicLink()) h.update(readlinkSync(abs));
    else if (st.isFile()) h.update(readFileSync(abs));
  };
  try {
    walk('');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'absent';
    throw e;
  }
  return h.digest('hex');
}
