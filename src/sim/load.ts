/**
 * A load generator for the guest's protocol, as a fleet of external clients would be: numbered
 * registrations (REG) and calls (CALL/END) at a steady rate, each retried with the SAME id until
 * answered (so retries are safe through a failover), every acknowledged request remembered. At the
 * end it checks the service's state against what was acknowledged: an acknowledged registration
 * that the (new) primary does not know is a lost message. Progress is printed as JSON lines.
 */
import { UdpClient } from './udp-client.js';
import { summarize, type LatencySummary } from './stats.js';

export interface LoadOptions {
  target: { address: string; port: number };
  bind: string;
  /** Requests per second (paced); 0 = as fast as the window allows. */
  rate: number;
  /** Requests in flight at most. */
  window: number;
  durationMs: number;
  /** Prefix of subscriber names and ids, so several runs do not collide. */
  tag: string;
  retryMs: number;
  /**
   * The mix: a registration on every `regEvery`-th step, a call set up and ended on the others.
   * Unset: three registrations and one call in four steps (the mix the recorded benchmarks used).
   * The guest never forgets a subscriber and holds at most 4096: a chassis shared by many loads
   * needs a sparse mix (e.g. 10) to stay under that limit.
   */
  regEvery?: number;
  onProgress?: (p: LoadProgress) => void;
  progressEveryMs?: number;
}

export interface LoadProgress {
  at: number;
  /** Silences between replies longer than GAP_MS: [last reply before, first reply after] (epoch ms). */
  gaps: Array<[number, number]>;
  sent: number;
  acked: number;
  retries: number;
  inFlight: number;
  lastReplyAt: number;
  longestGapMs: number;
  /**
   * Replies that mean a guest limit was reached (ERR FULL): a run with any of them measured the
   * error path, not the service, and its figures must not be used.
   */
  limitReplies: number;
}

export interface LoadResult extends LoadProgress {
  latency: LatencySummary;
  throughput: number;
  registered: number;
  calls: number;
  verify?: {
    checked: number; missing: string[]; retriedIdentical: number; retriedDifferent: string[]; stats: string;
    /** Call ids acknowledged twice (OK CALL n to two different requests): a call set-up was lost and its id reused. */
    callIdsReused: string[];
  };
  /** Replies received after `markAt` (e.g. a fault injection): when the first one arrived. */
  firstReplyAfterMark?: number;
}

interface Done { id: string; body: string; reply: string }

/** A silence between two replies longer than this is reported (a failover shows as one). */
export const GAP_MS = 20;

export class LoadGenerator {
  private client: UdpClient;
  private stopAt = 0;
  private progress: LoadProgress = { at: 0, gaps: [], sent: 0, acked: 0, retries: 0, inFlight: 0, lastReplyAt: 0, longestGapMs: 0, limitReplies: 0 };
  private latencies: number[] = [];
  private readonly done: Done[] = [];
  private registered: string[] = [];
  private nextReg = 0;
  private calls = 0;
  private markAt = 0;
  private firstAfterMark?: number;

  constructor(readonly o: LoadOptions) {
    this.client = new UdpClient(o.target, o.bind);
  }

  /** Retries of one verification request: 30 s of silence (a clone's cut-over holds inputs for seconds). */
  private get patience(): number {
    return Math.ceil(30000 / this.o.retryMs);
  }

  /** Remembers an instant (a fault injected): the first reply after it is reported. */
  mark(at = Date.now()): void {
    this.markAt = at;
    this.firstAfterMark = undefined;
  }

  private async ask(id: string, body: string): Promise<string> {
    const t0 = performance.now();
    this.progress.sent++;
    this.progress.inFlight++;
    let reply: string | undefined;
    for (let attempt = 0; reply === undefined; attempt++) {
      if (attempt > 0) this.progress.retries++;
      try {
        reply = await this.client.request(id, body, this.o.retryMs, 0);
      } catch {
        if (attempt > 2000) throw new Error(`no reply to ${id} ${body} after ${attempt} tries`);
      }
    }
    this.progress.inFlight--;
    const now = Date.now();
    if (this.progress.lastReplyAt) {
      const gap = now - this.progress.lastReplyAt;
      this.progress.longestGapMs = Math.max(this.progress.longestGapMs, gap);
      if (gap > GAP_MS && this.progress.gaps.length < 1000) this.progress.gaps.push([this.progress.lastReplyAt, now]);
    }
    this.progress.lastReplyAt = now;
    if (this.markAt && now >= this.markAt && this.firstAfterMark === undefined) this.firstAfterMark = now;
    this.progress.acked++;
    if (/ ERR FULL$/.test(reply)) this.progress.limitReplies++;
    this.latencies.push(performance.now() - t0);
    this.done.push({ id, body, reply });
    return reply;
  }

  /** One unit of work: register a subscriber; every fourth, set up and end a call between two. */
  private async step(k: number): Promise<void> {
    const t = this.o.tag;
    const callStep = this.o.regEvery ? k % this.o.regEvery !== 0 : k % 4 === 3;
    if (callStep && this.registered.length >= 2) {
      const a = this.registered[(k * 7) % this.registered.length]!;
      const b = this.registered[(k * 13 + 1) % this.registered.length]!;
      if (a !== b) {
        const r = await this.ask(`${t}c${k}`, `CALL ${a} ${b}`);
        const m = / OK CALL (\d+)$/.exec(r);
        if (m) { this.calls++; await this.ask(`${t}e${k}`, `END ${m[1]}`); }
        return;
      }
    }
    const n = this.nextReg++;
    const sub = `${t}${n}`;
    const r = await this.ask(`${t}r${n}`, `REG ${sub}`);
    if (/ OK REG /.test(r)) this.registered.push(sub);
  }

  async run(): Promise<LoadResult> {
    await this.client.open();
    const t0 = Date.now();
    this.stopAt = t0 + this.o.durationMs;
    const ticker = this.o.onProgress ? setInterval(() => this.o.onProgress!({ ...this.progress, at: Date.now() }), this.o.progressEveryMs ?? 1000) : undefined;
    let k = 0;
    const gap = this.o.rate > 0 ? 1000 / this.o.rate : 0;
    const workers = Array.from({ length: this.o.window }, async () => {
      while (Date.now() < this.stopAt) {
        const mine = k++;
        if (gap) {
          const due = t0 + mine * gap;
          const wait = due - Date.now();
          if (wait > 0) await new Promise((r) => setTimeout(r, wait));
          if (Date.now() >= this.stopAt) break;
        }
        await this.step(mine);
      }
    });
    try {
      await Promise.all(workers);
    } finally {
      clearInterval(ticker); // left running after a failed request, it would keep the process alive
    }
    const elapsed = (Date.now() - t0) / 1000;
    return {
      ...this.progress, at: Date.now(), latency: summarize(this.latencies), throughput: this.progress.acked / elapsed,
      registered: this.registered.length, calls: this.calls, firstReplyAfterMark: this.firstAfterMark,
    };
  }

  /**
   * Checks every acknowledged registration against the service (GET), and re-sends a sample of
   * answered ids, which must be answered identically (the reply cache, across failovers).
   */
  async verify(sample = 200): Promise<NonNullable<LoadResult['verify']>> {
    // Re-sent ids first, and only recent ones: the guest's reply cache is bounded (4096 entries,
    // oldest evicted first), so an id from long ago is legitimately a new request.
    let same = 0;
    const different: string[] = [];
    const recent = this.done.slice(-Math.min(this.done.length, 2000));
    const step = Math.max(1, Math.floor(recent.length / sample));
    for (let i = 0; i < recent.length; i += step) {
      const d = recent[i]!;
      const again = await this.client.request(d.id, d.body, this.o.retryMs, this.patience);
      if (again === d.reply) same++; else different.push(`${d.id} ${d.body}: "${d.reply}" then "${again}"`);
    }
    const missing: string[] = [];
    for (const sub of this.registered) {
      const r = await this.client.request(`${this.o.tag}v${sub}`, `GET ${sub}`, this.o.retryMs, this.patience);
      if (!/ OK GET /.test(r)) missing.push(sub);
    }
    const stats = await this.client.request(`${this.o.tag}S${Date.now() % 1e6}`, 'STATS', this.o.retryMs, this.patience);
    // Call ids only grow (total + 1): one acknowledged to two requests means the copy that gave the
    // second had lost the first call (a stale state served after a fault).
    const byCallId = new Map<string, string>();
    const callIdsReused: string[] = [];
    for (const d of this.done) {
      const m = / OK CALL (\d+)$/.exec(d.reply);
      if (!m) continue;
      const first = byCallId.get(m[1]!);
      if (first !== undefined && first !== d.id) callIdsReused.push(`call ${m[1]} acknowledged to ${first} and to ${d.id}`);
      else byCallId.set(m[1]!, d.id);
    }
    return { checked: this.registered.length, missing, retriedIdentical: same, retriedDifferent: different, stats, callIdsReused };
  }

  /** Checks that subscribers `<tag>0 … <tag>(count-1)` (another run's registrations) are all known. */
  async check(tag: string, count: number): Promise<{ checked: number; missing: string[] }> {
    await this.client.open().catch(() => undefined);
    const missing: string[] = [];
    for (let n = 0; n < count; n++) {
      const sub = `${tag}${n}`;
      const r = await this.client.request(`${this.o.tag}k${n}`, `GET ${sub}`, this.o.retryMs, this.patience);
      if (!/ OK GET /.test(r)) missing.push(sub);
    }
    return { checked: count, missing };
  }

  close(): void {
    this.client.close();
  }
}
