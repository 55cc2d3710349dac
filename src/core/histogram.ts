/**
 * A latency histogram cheap enough to stay on in production: logarithmic buckets (each 10 % wider
 * than the one before, 1 µs to ~30 s), one array increment per sample, no allocation. Its snapshot
 * carries the non-empty buckets, so a reader can subtract two snapshots and take percentiles of what
 * happened in between (a benchmark phase). Owns nothing but its counts.
 */

/** Lower bound of bucket 0 (ms) and the growth from one bucket to the next. */
const BASE_MS = 0.001;
const GROWTH = 1.1;
const BUCKETS = 180;
const LOG_GROWTH = Math.log(GROWTH);

export interface HistogramSnapshot {
  n: number;
  /** Upper bounds of the buckets holding the 50th and 99th percentile (ms, within 10 %); null when empty. */
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
  /** Non-empty buckets: index → count (bucket i holds [0.001·1.1^i, 0.001·1.1^(i+1)) ms; 0 also takes anything below). */
  buckets: Record<number, number>;
}

export function bucketOf(ms: number): number {
  if (!(ms > BASE_MS)) return 0;
  return Math.min(BUCKETS - 1, Math.floor(Math.log(ms / BASE_MS) / LOG_GROWTH));
}

/** The upper bound (ms) of a bucket. */
export function bucketTop(i: number): number {
  return BASE_MS * GROWTH ** (i + 1);
}

/** Milliseconds as shown: to the microsecond. */
const shown = (ms: number | null): number | null => (ms === null ? null : Math.round(ms * 1000) / 1000);

/** A percentile (0–100) of sparse bucket counts, as the upper bound of the bucket it falls in. */
export function bucketPercentile(buckets: Record<number, number>, p: number): number | null {
  const idx = Object.keys(buckets).map(Number).filter((i) => buckets[i]! > 0).sort((a, b) => a - b);
  const n = idx.reduce((a, i) => a + buckets[i]!, 0);
  if (!n) return null;
  const rank = Math.max(1, Math.ceil((p / 100) * n));
  let seen = 0;
  for (const i of idx) {
    seen += buckets[i]!;
    if (seen >= rank) return bucketTop(i);
  }
  return bucketTop(idx[idx.length - 1]!);
}

/** What was added between two snapshots of one histogram (counts subtracted), with its percentiles. */
export function snapshotDelta(before: HistogramSnapshot | undefined, after: HistogramSnapshot): HistogramSnapshot {
  const buckets: Record<number, number> = {};
  for (const [i, c] of Object.entries(after.buckets)) {
    const d = c - (before?.buckets[Number(i)] ?? 0);
    if (d > 0) buckets[Number(i)] = d;
  }
  const n = Object.values(buckets).reduce((a, b) => a + b, 0);
  const top = Object.keys(buckets).map(Number).sort((a, b) => b - a)[0];
  return { n, p50Ms: shown(bucketPercentile(buckets, 50)), p99Ms: shown(bucketPercentile(buckets, 99)), maxMs: top === undefined ? null : shown(bucketTop(top)), buckets };
}

export class LatencyHistogram {
  private readonly counts = new Float64Array(BUCKETS);
  private n = 0;
  private maxMs = 0;

  record(ms: number): void {
    this.counts[bucketOf(ms)]!++;
    this.n++;
    if (ms > this.maxMs) this.maxMs = ms;
  }

  snapshot(): HistogramSnapshot {
    const buckets: Record<number, number> = {};
    this.counts.forEach((c, i) => { if (c) buckets[i] = c; });
    return { n: this.n, p50Ms: shown(bucketPercentile(buckets, 50)), p99Ms: shown(bucketPercentile(buckets, 99)), maxMs: this.n ? shown(this.maxMs) : null, buckets };
  }
}
