/**
 * The reference guest's deterministic core (guests/dx-legacy/src/dxcore.c), compiled on the host for
 * both application generations and driven by its harness dxfuzz.c: invariants, limits and save/load
 * round trips under fuzzing; for v2 also FWD semantics, the v1 -> v2 conversion and the canonical v2
 * body; and a state saved by the v1 core converted by the v2 core. Needs gcc (installed by setup).
 * AddressSanitizer is left to the manual fuzz run (guests/dx-legacy/README.md): it makes the run slow.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';

const run = promisify(execFile);
const SRC = join(PACKAGE_ROOT, 'guests', 'dx-legacy', 'src');

describe('dx-legacy core, v1 and v2 (host-compiled harness)', function () {
  this.timeout(120000);
  let dir: string;
  const fuzz = (format: number) => join(dir, `dxfuzz-v${format}`);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-dxcore-'));
    for (const format of [1, 2]) {
      await run('gcc', ['-O1', '-g', '-Wall', '-Wextra', '-Werror', '-fsanitize=undefined', '-fno-sanitize-recover=undefined',
        `-DDX_FORMAT=${format}`, '-o', fuzz(format), join(SRC, 'dxfuzz.c'), join(SRC, 'dxcore.c')]);
    }
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const format of [1, 2]) {
    it(`v${format}: survives a fuzz run with every invariant and round trip checked${format === 2 ? ' (FWD, conversion, canonical v2 body)' : ''}`, async () => {
      const { stdout } = await run(fuzz(format), ['1', '12345']);
      assert.match(stdout, /^ok: \d+ requests/m);
    });
  }

  it('a state saved by the v1 core is converted by the v2 core into the state v2 reaches on the same requests', async () => {
    const v1 = join(dir, 'script-v1.state');
    assert.match((await run(fuzz(1), ['--emit', v1])).stdout, /^ok: v1 state/);
    assert.match((await run(fuzz(2), ['--convert', v1])).stdout, /^ok: v1 state converted/);
    assert.equal((await run(fuzz(2), ['--load', v1])).stdout, 'loaded\n');
  });

  it('a v1 core refuses a v2 state as badformat; the v2 core loads it', async () => {
    const v2 = join(dir, 'script-v2.state');
    assert.match((await run(fuzz(2), ['--emit', v2])).stdout, /^ok: v2 state/);
    assert.equal((await run(fuzz(2), ['--load', v2])).stdout, 'loaded\n');
    await assert.rejects(run(fuzz(1), ['--load', v2]), (e: { code?: number; stdout?: string }) => e.code === 1 && e.stdout === 'refused badformat\n');
  });
});
