/**
 * The user QEMU runs as (board profile `qemuUser`): its credentials, the `setpriv` command line that
 * starts QEMU as that user from its first instruction, and whether that user can reach a path.
 *
 * Why `setpriv` and not QEMU's `-runas`: QEMU 7.2 changes uid after installing its seccomp filter,
 * and with `elevateprivileges=deny` that setuid is killed by SIGSYS (docs/guest-hosting.md). setpriv
 * changes the ids first, then sets the parent-death signal (util-linux 2.38 applies --pdeathsig after
 * the uid change, which would otherwise clear it), then execs QEMU: its pid is QEMU's.
 */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, constants as fsc, copyFileSync, fstatSync, futimesSync, openSync, readSync, realpathSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { UsError } from '../../core/errors.js';

export interface QemuCredentials {
  /** The name from the board profile (`root`: QEMU keeps the controller's identity, as before). */
  user: string;
  uid: number;
  gid: number;
  /** Supplementary groups: `kvm` (for /dev/kvm) when the host has that group, nothing else. */
  groups: number[];
}

export const ROOT_CREDENTIALS: QemuCredentials = { user: 'root', uid: 0, gid: 0, groups: [] };

/** A `getent passwd` line's uid and primary gid, or undefined when malformed. */
export function parsePasswdLine(line: string): { uid: number; gid: number } | undefined {
  const f = line.trim().split(':');
  if (f.length < 7 || !/^\d+$/.test(f[2]!) || !/^\d+$/.test(f[3]!)) return undefined;
  return { uid: Number(f[2]), gid: Number(f[3]) };
}

function getent(db: 'passwd' | 'group', key: string): string | undefined {
  try {
    return execFileSync('getent', [db, key], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0];
  } catch {
    return undefined; // exit 2: no such entry
  }
}

/**
 * The credentials of `user` on this host, looked up by name (NSS, like the rest of the system).
 * US_ERR_CONFIG naming the setting and the fix when there is no such user; `root` is always root.
 */
export function resolveQemuUser(user: string, setting: string): QemuCredentials {
  if (user === 'root') return ROOT_CREDENTIALS;
  const pw = getent('passwd', user);
  const ids = pw === undefined ? undefined : parsePasswdLine(pw);
  if (!ids) {
    throw new UsError('US_ERR_CONFIG', `${setting}: QEMU's user "${user}" does not exist on this host: create it with image-build/setup.sh `
      + `(useradd --system --no-create-home --shell /usr/sbin/nologin ${user}), or set qemuUser to "root" to run QEMU as root`, { qemuUser: user });
  }
  if (ids.uid === 0) return { ...ROOT_CREDENTIALS, user };
  const kvm = getent('group', 'kvm')?.split(':')[2];
  return { user, uid: ids.uid, gid: ids.gid, groups: kvm && /^\d+$/.test(kvm) ? [Number(kvm)] : [] };
}

/**
 * The arguments of `setpriv` before `-- <qemu> …`: for root only the parent-death signal (QEMU dies
 * with the controller, even by SIGKILL); otherwise first the user's real and effective uid and gid
 * and its supplementary groups (only `kvm`, or none), numeric, as resolved.
 */
export function setprivArgs(c: QemuCredentials): string[] {
  const ids = c.uid === 0 ? [] : [
    '--reuid', String(c.uid), '--regid', String(c.gid),
    ...(c.groups.length ? ['--groups', c.groups.join(',')] : ['--clear-groups']),
  ];
  return [...ids, '--pdeathsig', 'SIGKILL'];
}

/** What a file's mode grants `c` (bits 4 read, 2 write, 1 search/execute), by owner, group, other. */
function granted(c: QemuCredentials, st: { uid: number; gid: number; mode: number }): number {
  if (c.uid === 0) return 7;
  if (st.uid === c.uid) return (st.mode >> 6) & 7;
  if (st.gid === c.gid || c.groups.includes(st.gid)) return (st.mode >> 3) & 7;
  return st.mode & 7;
}

/**
 * Why `c` cannot reach `path` (search every folder above it, and `need` on the path itself), or
 * undefined when it can. By the mode bits (ACLs are not read); a path that does not exist is
 * unreachable too.
 */
export function unreachableFor(c: QemuCredentials, path: string, need: 'read' | 'search'): string | undefined {
  const target = resolve(path);
  const chain: string[] = [];
  for (let d = dirname(target); ; d = dirname(d)) {
    chain.unshift(d);
    if (d === dirname(d)) break;
  }
  for (const d of chain) {
    let st;
    try {
      st = statSync(d);
    } catch (e) {
      return `${d}: ${(e as Error).message}`;
    }
    if (!(granted(c, st) & 1)) return `${d} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, owner uid ${st.uid}) is not searchable by ${c.user}`;
  }
  let st;
  try {
    st = statSync(target);
  } catch (e) {
    return `${target}: ${(e as Error).message}`;
  }
  const bit = need === 'read' ? 4 : 1;
  if (!(granted(c, st) & bit)) return `${target} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, owner uid ${st.uid}) is not ${need === 'read' ? 'readable' : 'searchable'} by ${c.user}`;
  return undefined;
}

/**
 * `file` (a guest kernel or initrd) as `c` can read it: the path itself when it can (through every
 * folder of the file a symlink points to), else a copy in `imageDir` (a folder of root's, mode 0755,
 * that `c` can reach), mode 0644, one per source file, made again only when the source's size or
 * mtime changed. The copy is written under a temporary name and renamed into place.
 */
export function readableByQemu(file: string, c: QemuCredentials, imageDir: string, what: string): { path: string; copied: boolean } {
  const real = realpathSync(file);
  if (!unreachableFor(c, real, 'read')) return { path: file, copied: false };
  const src = statSync(real);
  // Two guest versions' kernels may share a name, even a size and an mtime: the source path is in the name.
  const copy = join(imageDir, `${what}-${createHash('sha256').update(real).digest('hex').slice(0, 16)}-${basename(real)}`);
  try {
    const st = statSync(copy);
    if (st.size === src.size && Math.abs(st.mtimeMs - src.mtimeMs) < 1) return { path: copy, copied: false };
  } catch {
    // no copy yet
  }
  const tmp = `${copy}.tmp-${process.pid}`;
  rmSync(tmp, { force: true });
  copyFileSync(real, tmp, fsc.COPYFILE_EXCL);
  chmodSync(tmp, 0o644);
  const fd = openSync(tmp, 'r+');
  try {
    futimesSync(fd, src.atimeMs / 1000, src.mtimeMs / 1000);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, copy);
  return { path: copy, copied: true };
}

/**
 * The text of `file` from byte `offset` on (latin1; empty if it cannot be read), at most 1 MiB. For
 * files in QEMU's folder (the console log), which QEMU's user can replace: a symlink or a FIFO put
 * there is neither followed nor waited on (O_NOFOLLOW, O_NONBLOCK, regular files only).
 */
export function readFrom(file: string, offset: number): string {
  let fd: number;
  try {
    fd = openSync(file, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch {
    return '';
  }
  try {
    if (!fstatSync(fd).isFile()) return '';
    const buf = Buffer.alloc(Math.max(0, Math.min(fstatSync(fd).size - offset, 1048576)));
    const n = readSync(fd, buf, 0, buf.length, offset);
    return buf.subarray(0, n).toString('latin1');
  } finally {
    closeSync(fd);
  }
}
