/**
 * The console password: one line `scrypt$N$r$p$saltB64$hashB64` (node:crypto scrypt) in a file only
 * root may read. Hashing, verifying, and reading/writing that file with its permission checks. The
 * console and `understudy console passwd` both use this; nothing else does.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, rmSync, statSync, writeSync, chmodSync } from 'node:fs';
import { dirname, basename, join } from 'node:path';
import { UsError } from '../../core/errors.js';

export interface ScryptParams {
  /** CPU/memory cost, a power of two. Default 2^15: about 32 MiB and ~0.1 s per check. */
  N: number;
  /** Block size. Default 8. */
  r: number;
  /** Parallelism. Default 1. */
  p: number;
}

export const DEFAULT_SCRYPT: ScryptParams = { N: 1 << 15, r: 8, p: 1 };

/** Bounds on parameters read from a file, so a tampered file cannot make the controller allocate gigabytes. */
const LIMITS = { N: [1 << 10, 1 << 17], r: [1, 32], p: [1, 16] } as const;
const KEY_BYTES = 32;
const SALT_BYTES = 16;
export const MIN_PASSWORD_LENGTH = 8;
export const MAX_PASSWORD_LENGTH = 1024;

function derive(password: string, salt: Buffer, q: ScryptParams, keyLen: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFC'), salt, keyLen, { N: q.N, r: q.r, p: q.p, maxmem: 256 * q.N * q.r + (1 << 20) }, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** Checks a new password's length; throws US_ERR_PASSWORD naming the rule. */
export function checkNewPassword(password: string): void {
  if (password.length < MIN_PASSWORD_LENGTH) throw new UsError('US_ERR_PASSWORD', `the password must have at least ${MIN_PASSWORD_LENGTH} characters`);
  if (password.length > MAX_PASSWORD_LENGTH) throw new UsError('US_ERR_PASSWORD', `the password must have at most ${MAX_PASSWORD_LENGTH} characters`);
  if (/[\x00-\x1f\x7f]/.test(password)) throw new UsError('US_ERR_PASSWORD', 'the password must not contain control characters');
}

/** Hashes a password into the one-line file format. */
export async function hashPassword(password: string, q: ScryptParams = DEFAULT_SCRYPT): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await derive(password, salt, q, KEY_BYTES);
  return `scrypt$${q.N}$${q.r}$${q.p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

export interface ParsedHash extends ScryptParams {
  salt: Buffer;
  hash: Buffer;
}

/** Parses the file's line; throws US_ERR_CONFIG saying what is wrong. */
export function parseHash(line: string): ParsedHash {
  const m = /^scrypt\$(\d{1,8})\$(\d{1,3})\$(\d{1,3})\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})$/.exec(line.trim());
  if (!m) throw new UsError('US_ERR_CONFIG', 'not a scrypt$N$r$p$salt$hash line');
  const [N, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  const within = (v: number, [lo, hi]: readonly [number, number]) => v >= lo && v <= hi;
  if (!within(N, LIMITS.N) || (N & (N - 1)) !== 0) throw new UsError('US_ERR_CONFIG', `scrypt N=${N} must be a power of two between ${LIMITS.N[0]} and ${LIMITS.N[1]}`);
  if (!within(r, LIMITS.r)) throw new UsError('US_ERR_CONFIG', `scrypt r=${r} out of range`);
  if (!within(p, LIMITS.p)) throw new UsError('US_ERR_CONFIG', `scrypt p=${p} out of range`);
  const salt = Buffer.from(m[4]!, 'base64');
  const hash = Buffer.from(m[5]!, 'base64');
  if (salt.length < 8 || hash.length < 16 || hash.length > 64) throw new UsError('US_ERR_CONFIG', 'salt or hash too short');
  return { N, r, p, salt, hash };
}

/** Constant-time check of a password against a parsed line. */
export async function verifyPassword(password: string, h: ParsedHash): Promise<boolean> {
  if (password.length > MAX_PASSWORD_LENGTH) return false;
  const key = await derive(password, h.salt, h, h.hash.length);
  return timingSafeEqual(key, h.hash);
}

export type PasswordFileState =
  | { state: 'ok'; hash: ParsedHash }
  | { state: 'missing' }
  | { state: 'insecure'; why: string }
  | { state: 'malformed'; why: string };

/**
 * Reads the password file and checks that only its owner, root (the controller's user), can read it.
 * Never throws: the console decides what each state means.
 */
export function readPasswordFile(path: string): PasswordFileState {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { state: 'missing' };
    return { state: 'malformed', why: (e as Error).message };
  }
  if (!st.isFile()) return { state: 'insecure', why: `${path} is not a regular file` };
  if ((st.mode & 0o077) !== 0) return { state: 'insecure', why: `${path} must be readable by root only (mode 0600), it is ${(st.mode & 0o777).toString(8).padStart(4, '0')}` };
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) return { state: 'insecure', why: `${path} must be owned by uid ${uid} (the controller's user), it is owned by uid ${st.uid}` };
  try {
    const text = readFileSync(path, 'utf8');
    const line = text.split('\n').find((l) => l.trim() !== '');
    if (!line) return { state: 'malformed', why: `${path} is empty` };
    return { state: 'ok', hash: parseHash(line) };
  } catch (e) {
    return { state: 'malformed', why: `${path}: ${(e as Error).message}` };
  }
}

/** Writes the line atomically (temporary file, fsync, rename) with mode 0600. */
export function writePasswordFile(path: string, line: string): void {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx', 0o600);
    writeSync(fd, `${line}\n`);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    chmodSync(tmp, 0o600);
    renameSync(tmp, path);
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
}

/** Where a board keeps its console password unless told otherwise: `<storageDir>/console.passwd`. */
export function consolePasswordPath(board: { storageDir: string }): string {
  return join(board.storageDir, 'console.passwd');
}
