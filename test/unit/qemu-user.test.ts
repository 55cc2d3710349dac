import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parsePasswdLine, readFrom, readableByQemu, resolveQemuUser, unreachableFor, type QemuCredentials } from '../../src/hw/hypervisor/qemu-user.js';

/** A user that is not root and owns nothing here (the tests run as root and create root's files). */
const Q: QemuCredentials = { user: 'q', uid: 64001, gid: 64001, groups: [64002] };

describe('QEMU\'s user (board profile qemuUser)', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-qemu-user-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('a getent passwd line gives uid and gid; a malformed one nothing', () => {
    assert.deepEqual(parsePasswdLine('understudy-qemu:x:998:997::/nonexistent:/usr/sbin/nologin'), { uid: 998, gid: 997 });
    assert.equal(parsePasswdLine('broken:x:abc:1::/:/bin/sh'), undefined);
    assert.equal(parsePasswdLine('short:x:1'), undefined);
  });

  it('a user missing on the host is a start error naming the setting and the fix; root is root', () => {
    assert.throws(() => resolveQemuUser('us-no-such-user', 'board profile /b/x.json: qemuUser'), (e: { code: string; message: string }) => {
      assert.equal(e.code, 'US_ERR_CONFIG');
      assert.match(e.message, /board profile \/b\/x\.json: qemuUser: QEMU's user "us-no-such-user" does not exist/);
      assert.match(e.message, /image-build\/setup\.sh/);
      assert.match(e.message, /"root"/);
      return true;
    });
    assert.deepEqual(resolveQemuUser('root', 'x'), { user: 'root', uid: 0, gid: 0, groups: [] });
    const nobody = resolveQemuUser('nobody', 'x'); // Debian's nobody: 65534
    assert.equal(nobody.uid, Number(execFileSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).trim()));
    assert.notEqual(nobody.uid, 0);
  });

  it('reachability by the mode bits: every folder above must be searchable, the file readable', () => {
    const top = join(dir, 'top');
    mkdirSync(join(top, 'store', 'qemu'), { recursive: true });
    chmodSync(dir, 0o711);
    chmodSync(top, 0o700);
    chmodSync(join(top, 'store'), 0o711);
    const why = unreachableFor(Q, join(top, 'store', 'qemu'), 'search');
    assert.match(why ?? '', new RegExp(`${top} \\(mode 0700, owner uid 0\\) is not searchable by q`));
    assert.equal(unreachableFor({ user: 'root', uid: 0, gid: 0, groups: [] }, join(top, 'store', 'qemu'), 'search'), undefined);
    chmodSync(top, 0o711);
    assert.equal(unreachableFor(Q, join(top, 'store', 'qemu'), 'search'), undefined);
    // Its own folder: owner bits.
    chmodSync(join(top, 'store', 'qemu'), 0o700);
    assert.match(unreachableFor(Q, join(top, 'store', 'qemu'), 'search') ?? '', /not searchable/);
    execFileSync('chown', [`${Q.uid}:${Q.gid}`, join(top, 'store', 'qemu')]);
    assert.equal(unreachableFor(Q, join(top, 'store', 'qemu'), 'search'), undefined);
    // A file: read bit for other, or for a supplementary group (kvm) it has.
    const f = join(top, 'kernel');
    writeFileSync(f, 'k', { mode: 0o640 });
    assert.match(unreachableFor(Q, f, 'read') ?? '', /not readable by q/);
    execFileSync('chown', [`0:${Q.groups[0]}`, f]);
    assert.equal(unreachableFor(Q, f, 'read'), undefined);
    assert.match(unreachableFor(Q, join(top, 'missing'), 'read') ?? '', /ENOENT/);
  });

  it('a kernel QEMU\'s user cannot read is copied once (0644) into the image folder, again only when it changes', () => {
    const hidden = join(dir, 'checkout');
    mkdirSync(hidden, { mode: 0o700 });
    const images = join(dir, 'qemu-image');
    mkdirSync(images, { mode: 0o755 });
    chmodSync(dir, 0o711);
    const kernel = join(hidden, 'bzImage');
    writeFileSync(kernel, 'kernel v1', { mode: 0o644 });
    const link = join(hidden, 'vmlinuz'); // the descriptor may name a symlink
    symlinkSync(kernel, link);

    const a = readableByQemu(link, Q, images, 'kernel');
    assert.equal(a.copied, true);
    assert.ok(a.path.startsWith(`${images}/kernel-`) && a.path.endsWith('-bzImage'), a.path);
    assert.equal(readFileSync(a.path, 'utf8'), 'kernel v1');
    assert.equal(statSync(a.path).mode & 0o777, 0o644);
    assert.equal(unreachableFor(Q, a.path, 'read'), undefined);

    const ino = statSync(a.path).ino;
    const b = readableByQemu(link, Q, images, 'kernel');
    assert.deepEqual(b, { path: a.path, copied: false });
    assert.equal(statSync(a.path).ino, ino);

    writeFileSync(kernel, 'kernel v2');
    utimesSync(kernel, new Date(), new Date(Date.now() + 5000));
    const c = readableByQemu(link, Q, images, 'kernel');
    assert.equal(c.copied, true);
    assert.equal(readFileSync(c.path, 'utf8'), 'kernel v2');

    // Readable where it is: used in place, no copy.
    chmodSync(hidden, 0o755);
    assert.deepEqual(readableByQemu(link, Q, images, 'kernel'), { path: link, copied: false });
  });

  it('the console log in QEMU\'s folder is read without following a symlink or waiting on a FIFO', () => {
    const secret = join(dir, 'secret');
    writeFileSync(secret, 'root only');
    const log = join(dir, 'console.log');
    symlinkSync(secret, log);
    assert.equal(readFrom(log, 0), '');
    const fifo = join(dir, 'fifo.log');
    execFileSync('mkfifo', [fifo]);
    assert.equal(readFrom(fifo, 0), ''); // returns at once (the test would hang otherwise)
    writeFileSync(join(dir, 'real.log'), 'DX-STATE loaded subs=1');
    assert.equal(readFrom(join(dir, 'real.log'), 3), 'STATE loaded subs=1');
  });
});
