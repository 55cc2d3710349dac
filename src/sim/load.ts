/**
 * A load generator for the guest's protocol, as a fleet of external clients would be: numbered
 * registrations (REG) and calls (CALL/END) at a steady rate, each retried with the SAME id until
 * answered (so retries are safe through a failover), every acknowledged request remembered. At the
 * end it checks the service's state against what was acknowledged: an acknowledged registration
 * that the (new) primary does not know is a lost message. Progress is printed as JSON lines.
 */
import { z } from 'zod';
import { UsError } from '../core/errors.js';
import { UdpClient } from './udp-client.js';
import { summarize, type LatencySummary } from './stats.js';

/** The kinds of step of a mix: a REG of a new subscriber, a GET, a call set up and ended (CALL + END). */
export const MIX_KINDS = ['reg', 'get', 'call'] as const;
export type MixKind = (typeof MIX_KINDS)[number];
/** Weights of the kinds of step, e.g. { reg: 1, get: 59, call: 40 }: 1 % of steps register, and so on. */
export type RequestMix = Record<MixKind, number>;

const mixSchema = z.object({ reg: z.number().int().min(0).max(1000), get: z.number().int().min(0).max(1000), call: z.number().int().min(0).max(1000) })
  .strict().refine((m) => m.reg + m.get + m.call > 0, { message: 'at least one weight must be above 0' });

/** Parses `reg=1,get=59,call=40` (a missing kind weighs 0); the error names the bad part. */
export function parseMix(text: string): RequestMix {
  const m: Record<string, number> = { reg: 0, get: 0, call: 0 };
  for (const part of text.split(',')) {
    const kv = /^\s*([a-z]+)\s*=\s*(\d+)\s*$/.exec(part);
    if (!kv) throw new UsError('US_ERR_CONFIG', `--mix: expected <kind>=<weight>[,…] with kinds ${MIX_KINDS.join(', ')}; "${part}" is not`);
    if (!(MIX_KINDS as readonly string[]).includes(kv[1]!)) throw new UsError('US_ERR_CONFIG', `--mix: unknown kind "${kv[1]}" (kinds: ${MIX_KINDS.join(', ')})`);
    m[kv[1]!] = Number(kv[2]);
  }
  const r = mixSchema.safeParse(m);
  if (!r.success) throw new UsError('US_ERR_CONFIG', `--mix "${text}": ${r.error.issues.map((i) => `${i.path.join('.') || 'weights'}: ${i.message}`).join('; ')}`);
  return r.data;
}

/**
 * One cycle of the mix's steps, the kinds interleaved as evenly as their weights allow (largest
 * remainder first): step k of a run is of kind cycle[k % cycle.length], so a run is deterministic
 * and every whole cycle holds exactly the weights' shares.
 */
export function mixCycle(mix: RequestMix): MixKind[] {
  const total = mix.reg + mix.get + mix.call;
  const placed: Record<MixKind, number> = { reg: 0, get: 0, call: 0 };
  const cycle: MixKind[] = [];
  for (let j = 1; j <= total; j++) {
    let best: MixKind = 'reg';
    let bestDue = -Infinity;
    for (const kind of MIX_KINDS) {
      const due = (mix[kind] * j) / total - placed[kind];
      if (mix[kind] > placed[kind] && due > bestDue) { best = kind; bestDue = due; }
    }
    placed[best]++;
    cycle.push(best);
  }
  return cycle;
}

/** The replies a run counts as the error path: every ERR (a run that got one did not measure the service). */
export const ERROR_REPLY = / ERR( |$)/;

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
   * A request with no reply for this long fails the run (default 2000 retries' worth, as before:
   * 40 s at 20 ms). A fault with no takeover (one service instance restarted by Pacemaker) needs more.
   */
  giveUpMs?: number;
  /**
   * The mix: a registration on every `regEvery`-th step, a call set up and ended on the others.
   * Unset: three registrations and one call in four steps (the mix the recorded benchmarks used).
   * The guest never forgets a subscriber and holds at most 4096: a chassis shared by many loads
   * needs a sparse mix (e.g. 10) to stay under that limit.
   */
  regEvery?: number;
  /**
   * The mix as weights of step kinds (parseMix); replaces regEvery. Every REG is of a new
   * subscriber (it asks AUTH), a GET reads a known one, a call is set up between two idle ones and
   * ended. GETs and calls use the pool, registered before the clock starts.
   */
  mix?: RequestMix;
  /**
   * With a mix: subscribers `<tag>0 … <tag>(count-1)`, registered before the timed part if the guest
   * does not know them yet (GET first: never a second REG). Several runs can share one pool, so a
   * series of runs adds only its REG steps to the guest's table. Default: `<tag of the run>p`, and
   * 2 × window + 2 of them (calls in flight never run out of idle subscribers).
   */
  pool?: { tag: string; count: number };
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
  /** Replies on the error path (any ERR, ERR FULL included): a mix run must have none. */
  errorReplies: number;
}

export interface LoadResult extends LoadProgress {
  latency: LatencySummary;
  throughput: number;
  registered: number;
  calls: number;
  /** Requests sent in the timed part, by command (a retry is not a second request). */
  requests: { REG: number; GET: number; CALL: number; END: number };
  /** The first few error-path replies, as received. */
  errorSamples: string[];
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
  private progress: LoadProgress = { at: 0, gaps: [], sent: 0, acked: 0, retries: 0, inFlight: 0, lastReplyAt: 0, longestGapMs: 0, limitReplies: 0, errorReplies: 0 };
  private requests = { REG: 0, GET: 0, CALL: 0, END: 0 };
  private errorSamples: string[] = [];
  /** With a mix: the cycle of step kinds, the known subscribers and those not in a call. */
  private readonly cycle?: MixKind[];
  private known: string[] = [];
  private idle = new Set<string>();
  private readonly pool?: { tag: string; count: number };
  private latencies: number[] = [];
  private readonly done: Done[] = [];
  private registered: string[] = [];
  /** Subscribers in a call that a step under way set up (step(): CALL until its END is answered). */
  private readonly inCall = new Set<string>();
  private nextReg = 0;
  private calls = 0;
  private markAt = 0;
  private firstAfterMark?: number;

  constructor(readonly o: LoadOptions) {
    this.client = new UdpClient(o.target, o.bind);
    if (o.mix) {
      this.cycle = mixCycle(o.mix);
      this.pool = o.pool ?? { tag: `${o.tag}p`, count: 2 * o.window + 2 };
      if (o.mix.call > 0 && this.pool.count < 2 * o.window + 2) {
        throw new UsError('US_ERR_CONFIG', `pool: ${this.pool.count} subscribers cannot keep ${o.window} calls in flight (at least ${2 * o.window + 2})`);
      }
      if (o.mix.get > 0 && this.pool.count < 1) throw new UsError('US_ERR_CONFIG', 'pool: GETs need at least one subscriber in the pool');
      if (!/^[A-Za-z0-9]{1,12}$/.test(this.pool.tag)) throw new UsError('US_ERR_CONFIG', `pool: tag "${this.pool.tag}" must be 1–12 letters or digits`);
    }
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
        if (performance.now() - t0 > (this.o.giveUpMs ?? 2000 * this.o.retryMs)) throw new Error(`no reply to ${id} ${body} after ${attempt + 1} tries in ${Math.round(performance.now() - t0)} ms`);
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
    if (ERROR_REPLY.test(reply)) {
      this.progress.errorReplies++;
      if (this.errorSamples.length < 5) this.errorSamples.push(`${body} -> ${reply}`);
    }
    const command = body.split(' ', 1)[0] as keyof typeof this.requests;
    if (command in this.requests) this.requests[command]++;
    this.latencies.push(performance.now() - t0);
    this.done.push({ id, body, reply });
    return reply;
  }

  /** One unit of work: register a subscriber; every fourth, set up and end a call between two. */
  private async step(k: number): Promise<void> {
    const t = this.o.tag;
    const callStep = this.o.regEvery ? k % this.o.regEvery !== 0 : k % 4 === 3;
    if (callStep && this.registered.length >= 2) {
      // Two subscribers chosen by k, skipping any in a call of a concurrent step (that would be ERR
      // BUSY: seen when a takeover's stall made calls overlap, 2026-12-06).
      const a = this.notInCall((k * 7) % this.registered.length);
      const b = a === undefined ? undefined : this.notInCall((k * 13 + 1) % this.registered.length, a);
      if (a !== undefined && b !== undefined) {
        this.inCall.add(a);
        this.inCall.add(b);
        try {
          const r = await this.ask(`${t}c${k}`, `CALL ${a} ${b}`);
          const m = / OK CALL (\d+)$/.exec(r);
          if (m) { this.calls++; await this.ask(`${t}e${k}`, `END ${m[1]}`); }
        } finally {
          this.inCall.delete(a);
          this.inCall.delete(b);
        }
        return;
      }
    }
    const n = this.nextReg++;
    const sub = `${t}${n}`;
    const r = await this.ask(`${t}r${n}`, `REG ${sub}`);
    if (/ OK REG /.test(r)) this.registered.push(sub);
  }

  /** The first registered subscriber from index `from` on (wrapping) that is in no call of a step under way, and is not `other`. */
  private notInCall(from: number, other?: string): string | undefined {
    const n = this.registered.length;
    for (let i = 0; i < n; i++) {
      const s = this.registered[(from + i) % n]!;
      if (s !== other && !this.inCall.has(s)) return s;
    }
    return undefined;
  }

  /** A step of the mix: its kind is fixed by k alone. */
  private async mixStep(k: number): Promise<void> {
    const t = this.o.tag;
    const kind = this.cycle![k % this.cycle!.length]!;
    if (kind === 'reg') {
      const n = this.nextReg++;
      const sub = `${t}${n}`;
      const r = await this.ask(`${t}r${n}`, `REG ${sub}`);
      if (/ OK REG /.test(r)) { this.registered.push(sub); this.known.push(sub); this.idle.add(sub); }
    } else if (kind === 'get') {
      await this.ask(`${t}g${k}`, `GET ${this.known[(k * 7) % this.known.length]!}`);
    } else {
      // Two idle subscribers, chosen by k: never one already in a call (that would be ERR BUSY).
      const free = [...this.idle];
      const a = free[(k * 7) % free.length]!;
      const b = free[((k * 7) % free.length + 1 + ((k * 13) % (free.length - 1))) % free.length]!;
      this.idle.delete(a);
      this.idle.delete(b);
      const r = await this.ask(`${t}c${k}`, `CALL ${a} ${b}`);
      const m = / OK CALL (\d+)$/.exec(r);
      if (m) { this.calls++; await this.ask(`${t}e${k}`, `END ${m[1]}`); }
      this.idle.add(a);
      this.idle.add(b);
    }
  }

  /** Before the clock starts: the pool known to the guest (GET, and REG only of those it does not know). */
  private async preparePool(): Promise<void> {
    const p = this.pool!;
    for (let n = 0; n < p.count; n++) {
      const sub = `${p.tag}${n}`;
      const known = await this.client.request(`${this.o.tag}q${n}`, `GET ${sub}`, this.o.retryMs, this.patience);
      if (!/ OK GET /.test(known)) {
        const r = await this.client.request(`${this.o.tag}Q${n}`, `REG ${sub}`, this.o.retryMs, this.patience);
        if (!/ OK REG /.test(r)) throw new UsError('US_ERR_CONTROL', `pool: REG ${sub} was answered "${r}"`);
      }
      this.known.push(sub);
      this.idle.add(sub);
    }
  }

  async run(): Promise<LoadResult> {
    await this.client.open();
    if (this.cycle) await this.preparePool();
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
        await (this.cycle ? this.mixStep(mine) : this.step(mine));
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
      requests: { ...this.requests }, errorSamples: [...this.errorSamples],
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
