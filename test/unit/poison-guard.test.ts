/**
 * The pair's poison guard: the evidence a restore is guarded by is the failed copy's, and only while
 * that copy is the latest: a clone that arrived since replaces it.
 */
import assert from 'node:assert/strict';
import { createLogger } from '../../src/core/log.js';
import type { PairParts } from '../../src/pair/parts.js';
import { PoisonGuard } from '../../src/pair/poison-guard.js';

const log = createLogger('test', { level: 'silent' });

function guard(o: { lastSeq?: number; checkpoints?: { covers: boolean; fromEarlierStart: boolean } } = {}) {
  const journal: string[] = [];
  const suspectsGiven: number[][] = [];
  const lostState: Array<string | undefined> = [];
  const parts = {
    log,
    board: { name: 'sim-a' },
    journal: { record: (_k: string, text: string) => { journal.push(text); } },
    ha: { currentRole: 'PRIMARY', membership: { partnerView: {} }, markServingLostState: (why: string | undefined) => { lostState.push(why); } },
    host: { replicator: { lastSeq: o.lastSeq ?? 100, frontier: { suspects: () => [97, 98] } } },
    checkpoints: o.checkpoints && {
      info: { seq: 0, at: '2026-12-06T12:00:00.000Z' },
      logCovers: () => o.checkpoints!.covers,
      fromEarlierStart: o.checkpoints.fromEarlierStart,
    },
  } as unknown as PairParts;
  const recovery = {
    recover: async (suspects: number[]) => {
      suspectsGiven.push(suspects);
      return { checkpointSeq: 90, replayed: 10, restores: 1, poison: [], quarantinedSkipped: 0, failures: [], durationMs: 1 };
    },
  };
  return { g: new PoisonGuard(parts, recovery, undefined), journal, suspectsGiven, lostState };
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

  it('a stale checkpoint is restored as STATE LOST, and the HA layer told it serves a lost state: a log short of the stream, or a checkpoint from before this start with no input since', async () => {
    for (const [o, lost] of [
      [{ lastSeq: 100, checkpoints: { covers: false, fromEarlierStart: false } }, /^STATE LOST: the checkpoint here \(input 0\) and its log do not reach input 100/],
      [{ lastSeq: 0, checkpoints: { covers: true, fromEarlierStart: true } }, /^STATE LOST: the checkpoint here \(input 0, taken 2026-12-06T12:00:00.000Z\) is from before this controller started, and no input of the stream has reached this board since/],
      [{ lastSeq: 0, checkpoints: { covers: true, fromEarlierStart: false } }, undefined],
      [{ lastSeq: 100, checkpoints: { covers: true, fromEarlierStart: true } }, undefined],
    ] as const) {
      const { g, journal, lostState } = guard(o);
      await g.recover('promoted without a running clone');
      if (lost) {
        assert.match(journal[0]!, lost, JSON.stringify(o));
        assert.equal(lostState.length, 1);
        assert.match(lostState[0]!, /^restored a stale checkpoint: /);
      } else {
        assert.ok(!journal.some((j) => /STATE LOST/.test(j)), `${JSON.stringify(o)}: ${journal.join(' | ')}`);
        assert.deepEqual(lostState, []);
      }
    }
  });
});
