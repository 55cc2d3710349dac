/**
 * The pair's poison guard: the evidence a restore is guarded by is the failed copy's, and only while
 * that copy is the latest: a clone that arrived since replaces it.
 */
import assert from 'node:assert/strict';
import { createLogger } from '../../src/core/log.js';
import type { PairParts } from '../../src/pair/parts.js';
import { PoisonGuard } from '../../src/pair/poison-guard.js';

const log = createLogger('test', { level: 'silent' });

function guard() {
  const journal: string[] = [];
  const suspectsGiven: number[][] = [];
  const parts = {
    log,
    board: { name: 'sim-a' },
    journal: { record: (_k: string, text: string) => { journal.push(text); } },
    ha: { currentRole: 'PRIMARY', membership: { partnerView: {} } },
    host: { replicator: { lastSeq: 100, frontier: { suspects: () => [97, 98] } } },
    checkpoints: undefined,
  } as unknown as PairParts;
  const recovery = {
    recover: async (suspects: number[]) => {
      suspectsGiven.push(suspects);
      return { checkpointSeq: 90, replayed: 10, restores: 1, poison: [], quarantinedSkipped: 0, failures: [], durationMs: 1 };
    },
  };
  return { g: new PoisonGuard(parts, recovery, undefined), journal, suspectsGiven };
}

describe('PoisonGuard: the evidence a restore is guarded by', () => {
  it('a failed copy\'s outstanding requests guard the next restore', async () => {
    const { g, suspectsGiven, journal } = guard();
    g.noteCopyFailed('QEMU exited unexpectedly');
    await g.recover('promoted without a running clone');
    assert.deepEqual(suspectsGiven, [[97, 98]]);
    assert.match(journal[0]!, /guarded by the 2 requests .*inputs 97, 98/);
  });

  it('a clone that arrived since the copy failed replaces that evidence: the restore is not guarded by it', async () => {
    const { g, suspectsGiven, journal } = guard();
    g.noteCopyFailed('QEMU exited unexpectedly');
    g.forgetFailure();
    await g.recover('promoted without a running clone');
    assert.deepEqual(suspectsGiven, [[]]);
    assert.doesNotMatch(journal[0]!, /guarded/);
  });
});
