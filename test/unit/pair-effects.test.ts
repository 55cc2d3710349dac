/**
 * The role-effects table (src/pair/controller.ts): what taking each role means on a board, pure.
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { ROLES, type Role } from '../../src/ha/frame.js';
import { ROLE_EFFECTS, effectsFor, type Situation } from '../../src/pair/controller.js';

const base: Situation = { from: 'BACKUP', to: 'PRIMARY', guestRunning: false, savedState: false, checkpoint: false, keptCopy: false };
const fx = (s: Partial<Situation>) => effectsFor({ ...base, ...s });

describe('pair: role-effects table', () => {
  it('every role has a row that always applies, so every role change has effects', () => {
    for (const role of ROLES) {
      for (const from of ROLES) {
        for (const bits of [0, 1, 2, 4, 8, 15]) {
          const s: Situation = { from, to: role, guestRunning: !!(bits & 1), savedState: !!(bits & 2), checkpoint: !!(bits & 4), keptCopy: !!(bits & 8) };
          const row = effectsFor(s);
          assert.equal(row.role, role, `${from} -> ${role}`);
          assert.ok(row.when.length > 5);
        }
      }
    }
  });

  it('only PRIMARY serves and only PRIMARY makes the replicator primary', () => {
    for (const row of ROLE_EFFECTS) {
      assert.equal(row.serve === 'serve', row.role === 'PRIMARY', `${row.role}: ${row.when}`);
      assert.equal(row.replicator === 'primary', row.role === 'PRIMARY', `${row.role}: ${row.when}`);
    }
  });

  it('a promoted backup whose clone runs serves it as it is', () => {
    const r = fx({ guestRunning: true, savedState: true, checkpoint: true });
    assert.deepEqual([r.serve, r.replicator, r.guest], ['serve', 'primary', 'keep-running']);
  });

  it('promoted after a guest upgrade cut short past the save: the saved state wins over the checkpoint', () => {
    assert.equal(fx({ savedState: true, checkpoint: true }).guest, 'replay-saved-state');
    assert.equal(fx({ from: 'FENCING', savedState: true }).guest, 'replay-saved-state');
  });

  it('both copies lost: restore the checkpoint; with neither, boot', () => {
    assert.equal(fx({ checkpoint: true }).guest, 'restore-checkpoint');
    assert.equal(fx({}).guest, 'boot');
  });

  it('a board that starts the pair boots, whatever it holds from before (no promotion)', () => {
    for (const from of ['STARTING', 'FAULT'] as Role[]) {
      assert.equal(fx({ from, savedState: true, checkpoint: true }).guest, 'boot', from);
    }
  });

  it('stepping down: the guest is stopped and the replicator follows, unless the copy is kept (guest upgrade)', () => {
    const down = fx({ from: 'PRIMARY', to: 'BACKUP', guestRunning: true });
    assert.deepEqual([down.serve, down.replicator, down.guest], ['unserve', 'backup', 'stop']);
    const kept = fx({ from: 'PRIMARY', to: 'BACKUP', guestRunning: true, keptCopy: true });
    assert.deepEqual([kept.serve, kept.replicator, kept.guest], ['unserve', 'unchanged', 'keep-copy']);
  });

  it('a kept copy means nothing to FAULT or STOPPING', () => {
    assert.equal(fx({ from: 'PRIMARY', to: 'FAULT', keptCopy: true }).guest, 'stop');
    assert.equal(fx({ from: 'PRIMARY', to: 'STOPPING', keptCopy: true }).guest, 'leave');
  });

  it('joining as backup, fencing and starting change nothing (the clone brings the guest)', () => {
    for (const [from, to] of [['STARTING', 'BACKUP'], ['FENCING', 'BACKUP'], ['FAULT', 'BACKUP'], ['BACKUP', 'FENCING'], ['STARTING', 'FENCING']] as Array<[Role, Role]>) {
      const r = fx({ from, to, guestRunning: true });
      assert.deepEqual([r.serve, r.replicator, r.guest], ['leave', 'unchanged', 'leave'], `${from} -> ${to}`);
    }
  });

  it('src/pair/controller.ts is the only caller of the replicator\'s mode changes', () => {
    const root = resolve(import.meta.dirname, '../../..');
    const callers: string[] = [];
    const walk = (dir: string): void => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const f = join(dir, e.name);
        if (e.isDirectory()) walk(f);
        else if (f.endsWith('.ts') && /\.become(Primary|Backup|Standalone)\(/.test(readFileSync(f, 'utf8'))) callers.push(relative(root, f));
      }
    };
    walk(join(root, 'src'));
    assert.deepEqual(callers, ['src/pair/controller.ts']);
  });
});
