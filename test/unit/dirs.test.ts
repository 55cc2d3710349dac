/**
 * The folders above a board's storage (src/core/dirs.ts): made 0755 whatever the umask, so QEMU's
 * own user can pass through them to its folder; existing ones are left alone.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeParentDirs } from '../../src/core/dirs.js';

describe('makeParentDirs: the folders above storageDir', () => {
  it('makes the missing ones 0755 under umask 077, not storageDir itself, and leaves existing ones as they are', () => {
    const root = mkdtempSync(join(tmpdir(), 'us-dirs-'));
    const old = process.umask(0o077);
    try {
      mkdirSync(join(root, 'kept'), { mode: 0o700 });
      chmodSync(join(root, 'kept'), 0o700);
      const storage = join(root, 'kept', 'var', 'lib', 'understudy', 'standalone');
      makeParentDirs(storage);
      for (const d of ['var', 'var/lib', 'var/lib/understudy']) assert.equal(statSync(join(root, 'kept', d)).mode & 0o777, 0o755, d);
      assert.equal(statSync(join(root, 'kept')).mode & 0o777, 0o700, 'an existing folder keeps its mode');
      assert.throws(() => statSync(storage), /ENOENT/, 'storageDir itself is left to the caller');
    } finally {
      process.umask(old);
      rmSync(root, { recursive: true, force: true });
    }
  });
});
