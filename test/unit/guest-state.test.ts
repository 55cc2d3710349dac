import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stateDiskHoldsState } from '../../src/guest/supervisor.js';

describe('whether a state is expected at boot (the state disk\'s header)', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-state-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('no disk, an empty file or an all-zero header: nothing expected', () => {
    assert.equal(stateDiskHoldsState(join(dir, 'missing.img')), false);
    writeFileSync(join(dir, 'empty.img'), '');
    assert.equal(stateDiskHoldsState(join(dir, 'empty.img')), false);
    const blank = Buffer.alloc(4096);
    blank[64] = 1; // past the header: not a saved state
    writeFileSync(join(dir, 'blank.img'), blank);
    assert.equal(stateDiskHoldsState(join(dir, 'blank.img')), false);
  });

  it('any non-zero byte in the header, valid or corrupted, means a state is expected', () => {
    for (const at of [0, 7, 63]) {
      const d = Buffer.alloc(4096);
      d[at] = 0x80;
      writeFileSync(join(dir, `d${at}.img`), d);
      assert.equal(stateDiskHoldsState(join(dir, `d${at}.img`)), true, `byte ${at}`);
    }
  });
});
