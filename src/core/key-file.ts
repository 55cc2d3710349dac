/**
 * The pair's shared key file: heartbeat frames and the channels to the partner (replication, clone,
 * upgrade) are authenticated with it. Reads and checks it, and writes a new one; owns nothing else.
 * In core because the HA layer and the layers above it that open those channels each read it.
 *
 * The one format: 64 hexadecimal digits (32 random bytes) on one line, an optional trailing newline;
 * the file owned by root and mode 0600; the same file on both boards of the pair.
 */
import { randomBytes } from 'node:crypto';
import { closeSync, fchmodSync, fsyncSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { UsError } from './errors.js';

export const KEY_BYTES = 32;

/** How to make a correct key file, for the error messages. */
export function keyFileHowTo(path: string): string {
  return `make one with "understudy ha keygen --file ${path}" (or: head -c 32 /dev/urandom | xxd -p -c 64 > ${path}; chmod 600 ${path}) and copy the same file to the partner board`;
}

function bad(path: string, what: string): UsError {
  return new UsError('US_ERR_CONFIG', `heartbeat key file ${path}: ${what}; the format is 64 hexadecimal digits (32 bytes) on one line, owner root, mode 0600: ${keyFileHowTo(path)}`, { file: path });
}

/** What is wrong with a key file's content, or undefined if it is the one format. */
function contentProblem(raw: Buffer): string | undefined {
  const text = raw.toString('latin1');
  const line = text.endsWith('\n') ? text.slice(0, -1) : text;
  if (/^[0-9a-fA-F]{64}$/.test(line)) return undefined;
  if (raw.length === 0) return 'it is empty';
  if (/[^\x20-\x7e\r\n\t]/.test(text)) return `it holds ${raw.length} bytes that are not text (raw binary?)`;
  if (line.includes('\n')) return 'it holds more than one line';
  const digits = line.trim();
  if (/[^0-9a-fA-F]/.test(digits)) return `it holds characters that are not hexadecimal digits ("${digits.replace(/[0-9a-fA-F]/g, '').slice(0, 8)}")`;
  if (digits.length !== line.length) return 'the line has leading or trailing blanks';
  return `it holds ${digits.length} hexadecimal digits${digits.length % 2 ? ' (an odd number)' : ''}, not 64`;
}

/** Reads the pair's shared key: 32 bytes from a root-owned, mode-0600 file of 64 hex digits. */
export function readKeyFile(path: string): Buffer {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new UsError('US_ERR_NOT_FOUND', `heartbeat key file ${path}: ${(e as Error).message}; ${keyFileHowTo(path)}`, { file: path });
  }
  if (!st.isFile()) throw bad(path, 'it is not a regular file');
  if (st.uid !== 0) throw bad(path, `it is owned by uid ${st.uid}, not root (chown root:root ${path})`);
  if ((st.mode & 0o077) !== 0) throw bad(path, `it is mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, readable by others than root (chmod 600 ${path})`);
  const raw = readFileSync(path);
  const problem = contentProblem(raw);
  if (problem) throw bad(path, problem);
  return Buffer.from(raw.toString('latin1').slice(0, 64), 'hex');
}

/**
 * Writes a new random key in the one format, atomically (a temporary file in the same folder,
 * fsynced, renamed over `path`) and mode 0600 from the start. Refuses to replace an existing key
 * unless `force`: the partner must hold the same one.
 */
export function writeKeyFile(path: string, opts: { force?: boolean } = {}): void {
  if (!opts.force) {
    let exists = false;
    try { statSync(path); exists = true; } catch { /* absent: fine */ }
    if (exists) throw new UsError('US_ERR_CONFIG', `heartbeat key file ${path} exists: the partner holds the same key; replace it with --force, then copy it to the partner`, { file: path });
  }
  const tmp = `${path}.tmp-${process.pid}`;
  let fd: number | undefined;
  try {
    fd = openSync(tmp, 'wx', 0o600);
    fchmodSync(fd, 0o600); // whatever the umask
    writeSync(fd, `${randomBytes(KEY_BYTES).toString('hex')}\n`);
    fsyncSync(fd);
    closeSync(fd);
    fd = undefined;
    renameSync(tmp, path);
    const dir = openSync(dirname(path), 'r');
    try { fsyncSync(dir); } finally { closeSync(dir); }
  } catch (e) {
    if (fd !== undefined) closeSync(fd);
    try { unlinkSync(tmp); } catch { /* not created */ }
    if (e instanceof UsError) throw e;
    throw new UsError('US_ERR_CONFIG', `heartbeat key file ${path}: cannot write it: ${(e as Error).message}`, { file: path });
  }
}
