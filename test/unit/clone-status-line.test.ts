/** `understudy status`: the last clone's line names the kind of copy and, for a snapshot copy, what the guest served during it. */
import assert from 'node:assert/strict';
import { formatReplication } from '../../src/cli/replication-commands.js';

const base = { mode: 'primary', protected: true, lastSeq: 10, ackedSeq: 10, deliveredSeq: 10, lagInputs: 0, divergences: 0, cloneInProgress: false, failovers: 0 };
const clone = { at: '2026-12-06T10:00:00.000Z', durationMs: 6352, downtimeMs: 3.22, holdMs: 203, cutSeq: 3628, transferredMb: 67 };

describe('status: the last clone', () => {
  it('a snapshot copy: its kind and the inputs served during it', () => {
    const text = formatReplication('PRIMARY', { ...base, lastClone: { ...clone, live: true, snapshot: true, afterCut: 3206 } } as never);
    assert.match(text, /last clone: 2026-12-06T10:00:00.000Z, 6352 ms \(snapshot copy, 3206 inputs served during it\), guest paused 3.22 ms, inputs held 203 ms, cut-over at input 3628/);
  });

  it('where the hold went, QEMU\'s setup among it when known', () => {
    const text = formatReplication('PRIMARY', { ...base, lastClone: { ...clone, live: true, snapshot: true, afterCut: 3206, holdParts: { drainMs: 0, pingMs: 4, migrationStartMs: 199, qemuSetupMs: 181 } } } as never);
    assert.match(text, /inputs held 203 ms \(drain 0, PING 4, copy start 199, of which QEMU's setup 181\)/);
    const older = formatReplication('PRIMARY', { ...base, lastClone: { ...clone, live: true, snapshot: true, afterCut: 3206, holdParts: { drainMs: 0, pingMs: 4, migrationStartMs: 199 } } } as never);
    assert.match(older, /copy start 199\), cut-over/);
  });

  it('a stopped copy (the fallback) says so', () => {
    const text = formatReplication('PRIMARY', { ...base, lastClone: { ...clone, live: false, snapshot: false, afterCut: 0 } } as never);
    assert.match(text, /\(stopped copy\), guest paused 3.22 ms/);
  });
});
