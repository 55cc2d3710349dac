/** allowUnprivilegedUserfaultfd on a stand-in for the sysctl file: turned on once, reported, failures named. */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { allowUnprivilegedUserfaultfd } from '../../src/hw/hypervisor/userfaultfd.js';

describe('userfaultfd for QEMU\'s user (snapshot clones)', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-uffd-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('turns the sysctl on when it is off, and reports a change only then', () => {
    const f = join(dir, 'unprivileged_userfaultfd');
    writeFileSync(f, '0\n');
    assert.deepEqual(allowUnprivilegedUserfaultfd(f), { changed: true });
    assert.equal(readFileSync(f, 'utf8').trim(), '1');
    assert.deepEqual(allowUnprivilegedUserfaultfd(f), { changed: false });
  });

  it('a sysctl that cannot be read or written is an error naming it, not a throw', () => {
    const r = allowUnprivilegedUserfaultfd(join(dir, 'missing', 'unprivileged_userfaultfd'));
    assert.equal(r.changed, false);
    assert.match(r.error ?? '', /ENOENT.*unprivileged_userfaultfd/);
  });
});
