/** The production latency histogram (src/core/histogram.ts): percentiles within a bucket, deltas between snapshots. */
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { LatencyHistogram, bucketOf, bucketTop, snapshotDelta } from '../../src/core/histogram.js';

describe('latency histogram', () => {
  it('every sample lies below the top of its bucket and above the previous one (within 10 %)', () => {
    fc.assert(fc.property(fc.double({ min: 0.0011, max: 20000, noNaN: true }), (ms) => {
      const i = bucketOf(ms);
      assert.ok(ms <= bucketTop(i) * 1.0001, `${ms} above the top of bucket ${i} (${bucketTop(i)})`);
      assert.ok(i === 0 || ms >= bucketTop(i - 1) * 0.9999, `${ms} below bucket ${i}`);
    }));
  });

  it('percentiles of known samples, and of what was added between two snapshots', () => {
    const h = new LatencyHistogram();
    for (let i = 0; i < 98; i++) h.record(0.5);
    h.record(10);
    h.record(12);
    const a = h.snapshot();
    assert.equal(a.n, 100);
    assert.ok(a.p50Ms! >= 0.5 && a.p50Ms! < 0.56, String(a.p50Ms));
    assert.ok(a.p99Ms! >= 10 && a.p99Ms! < 11.1, String(a.p99Ms));
    assert.equal(a.maxMs, 12);
    for (let i = 0; i < 10; i++) h.record(3);
    const d = snapshotDelta(a, h.snapshot());
    assert.equal(d.n, 10);
    assert.ok(d.p50Ms! >= 3 && d.p50Ms! < 3.31 && d.p99Ms === d.p50Ms, JSON.stringify(d));
    assert.equal(snapshotDelta(h.snapshot(), h.snapshot()).n, 0);
    assert.equal(snapshotDelta(h.snapshot(), h.snapshot()).p50Ms, null);
  });
});
