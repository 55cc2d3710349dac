/**
 * The upgrade manifest: what a package claims (compatible board family, version, minimum version it
 * may upgrade from, signing key, and every payload file's path, size, mode and SHA-256). Validation
 * only; it is trusted only after its signature verified (see package-format.ts). Also owns the rule
 * for a safe relative path, which the payload reader applies to tar entries too.
 */
import { z } from 'zod';
import { isSemVer } from './semver.js';

/** Current manifest format. */
export const MANIFEST_FORMAT = 1;
/** The record the installer writes into each slot; no package may ship a file of that name. */
export const SLOT_RECORD = 'slot.json';
/**
 * The package's signed head (header, manifest, signature) the installer keeps beside slot.json: the
 * slot's version, and so the downgrade floor, is read from it only after its signature verifies.
 */
export const SLOT_SIGNED_HEAD = 'slot.head';
/** Bounds that keep a hostile manifest from exhausting memory. */
export const MAX_FILES = 100000;
export const MAX_PATH = 1024;

/**
 * Why `p` is not a safe relative path inside a slot, or undefined when it is: no absolute path, no
 * `.`/`..`/empty segment, no backslash or control character, bounded length.
 */
export function unsafePathReason(p: string): string | undefined {
  if (p.length === 0) return 'empty path';
  if (p.length > MAX_PATH) return `path longer than ${MAX_PATH} characters`;
  if (p.startsWith('/')) return 'absolute path';
  if (/[\x00-\x1f\x7f\\]/.test(p)) return 'control character or backslash in path';
  for (const seg of p.split('/')) {
    if (seg === '..') return '".." in path';
    if (seg === '' || seg === '.') return 'empty or "." segment in path';
    if (seg.length > 255) return 'path segment longer than 255 characters';
  }
  return undefined;
}

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'a lowercase hex SHA-256');
const semver = z.string().refine(isSemVer, { message: 'a semantic version like 1.2.3' });

export const manifestFileSchema = z.strictObject({
  /** Relative path inside the slot. */
  path: z.string().superRefine((p, ctx) => {
    const why = unsafePathReason(p);
    if (why) ctx.addIssue({ code: 'custom', message: why });
    if (p === SLOT_RECORD || p === SLOT_SIGNED_HEAD) ctx.addIssue({ code: 'custom', message: `${p} is reserved for the installer` });
  }),
  /** Size in bytes. */
  size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** Permission bits (0-0o777; no set-id or sticky bits). */
  mode: z.number().int().min(0).max(0o777),
  sha256: sha256Hex,
});

export const manifestSchema = z
  .strictObject({
    format: z.literal(MANIFEST_FORMAT),
    /** Board family this package fits (the board profile's `family`). */
    compatible: z.string().min(1).max(64),
    version: semver,
    /** The oldest running version this package may upgrade. */
    minVersion: semver.optional(),
    /** Id of the signing key (see keys.ts keyIdOf). */
    keyId: z.string().regex(/^[0-9a-f]{16}$/, '16 lowercase hex digits'),
    createdAt: z.string().max(64),
    description: z.string().max(1024).optional(),
    /** The whole tar payload: its size and SHA-256 (so any changed byte is caught, even in tar padding). */
    payload: z.strictObject({ size: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER), sha256: sha256Hex }),
    files: z.array(manifestFileSchema).min(1).max(MAX_FILES),
  })
  .superRefine((m, ctx) => {
    const paths = new Set<string>();
    for (const [i, f] of m.files.entries()) {
      if (paths.has(f.path)) ctx.addIssue({ code: 'custom', path: ['files', i, 'path'], message: `duplicate path ${f.path}` });
      paths.add(f.path);
    }
    // A file may not also be a directory of another file ("a" and "a/b").
    for (const [i, f] of m.files.entries()) {
      const segs = f.path.split('/');
      for (let k = 1; k < segs.length; k++) {
        const dir = segs.slice(0, k).join('/');
        if (paths.has(dir)) ctx.addIssue({ code: 'custom', path: ['files', i, 'path'], message: `${dir} is both a file and a directory` });
      }
    }
    const total = m.files.reduce((s, f) => s + f.size, 0);
    if (total > m.payload.size) ctx.addIssue({ code: 'custom', path: ['payload', 'size'], message: 'smaller than the files it holds' });
  });

export type Manifest = z.output<typeof manifestSchema>;
export type ManifestFile = z.output<typeof manifestFileSchema>;
