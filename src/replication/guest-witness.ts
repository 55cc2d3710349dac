/**
 * The backup as a live witness of the primary's guest. Both copies are given the same inputs in the
 * same order; the primary sends a DIGEST of each reply its guest produces. So when this board's copy
 * answers requests of the stream and, for `boundMs` after the first of them, no DIGEST at all comes
 * from the primary, the primary's guest has stopped answering what a copy of it answers: it is hung
 * (its QEMU stopped, its application stuck), not slow. A slow copy on either side cannot trigger it:
 *
 *  - only this copy's replies to requests that came on the stream count (not a payload injected
 *    into this copy alone, not a log replayed after a guest upgrade);
 *  - every DIGEST, for whatever request, proves the primary's guest is still answering and clears
 *    the suspicion: a reply the primary never sends (a request its guest lost, which the input-loss
 *    watch repairs) does not look like a hang;
 *  - a backup that lags (its guest slower, or its delivery paused for a checkpoint) finds the
 *    primary's digests already waiting when it answers: nothing is suspected.
 *
 * An AUTH question counts as an answer: a REG of a new subscriber makes the guest ask the AUTH
 * server (AUTHQ) and answer nothing until the answer comes; on the backup that answer comes only in
 * the primary's stream, once the primary's guest has asked the same question. So a primary guest
 * that stops before it asks leaves this copy asking and answering nothing (until its own 5 s AUTH
 * timeout): this copy's question with no answer in the stream is suspected like an unmatched reply,
 * and the answer's arrival, like a digest, proves the primary's guest is running.
 *
 * What remains is how far a healthy primary's reply can trail this copy's reply to the same request:
 * recorded here (`primaryLateMs`) so the bound can be chosen from measurements (BENCHMARKS.md).
 *
 * No I/O; the replicator (backup mode) feeds it and checks it when a verdict falls due (dueAt), the pair layer acts on
 * the verdict (src/pair/guest-hang.ts).
 */
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';

export interface WitnessVerdict {
  /** How long the primary has sent no digest while this copy's first unmatched reply waited. */
  silentMs: number;
  /** Replies of this copy to stream requests since the primary's last digest. */
  replies: number;
  /** 1 for the first report of this silence, then 2, 3… (one every `repeatMs` while it lasts). */
  report: number;
  /**
   * Set by the replicator: reported within a quiet window (just after a cut-over or a checkpoint,
   * when load on the machine can slow a healthy primary): to be judged by the fast check only.
   */
  quiet?: boolean;
}

export interface WitnessStatus {
  boundMs: number;
  /** How much later than this copy's reply the primary's digest of the same reply arrived (0 when it came first), ms. */
  primaryLateMs: { p50: number; p99: number; max: number; count: number };
  /**
   * How long each suspicion lasted before a digest ended it, ms: the primary's silence after this
   * copy's first unmatched reply — the quantity the bound is compared with (its max must stay below it).
   */
  suspectedMs: { p50: number; p99: number; max: number; count: number };
  /** Replies compared in time (matched pairs). */
  compared: number;
  /** Silences reported (each counted once, however often it was reported again) since start. */
  verdicts: number;
  /** Reports sent, repeats of a lasting silence included. */
  reports: number;
  /** How often a lasting silence is reported again, ms (0: once). */
  repeatMs: number;
  /** The current suspicion: this copy answered and the primary has been silent since, ms. */
  waitingMs: number | null;
}

/** Unmatched local reply times kept per key at most (a key the primary never answers must not grow without bound). */
const MAX_KEYS = 20000;

export class PrimaryGuestWitness {
  /** Requests of the stream handed to this copy and not answered yet, by reply key (a count). */
  private readonly streamRequests = new Map<string, number>();
  /** This copy's replies the primary has not matched yet: their times, by key. */
  private readonly localAt = new Map<string, number[]>();
  /** Digests that arrived before this copy's reply: their arrival times, by key. */
  private readonly digestAt = new Map<string, number[]>();
  /** AUTH answers that came in the stream before this copy asked the question (by subject). */
  private readonly earlyAnswers = new Map<string, number[]>();
  /** This copy's AUTH questions whose answer has not come in the stream yet: when asked, by subject. */
  private readonly questions = new Map<string, number[]>();
  private waitingSince?: number;
  private repliesSince = 0;
  /** Reports of the current silence so far. */
  private reported = 0;
  private readonly late: RecordableHistogram = createHistogram();
  private readonly suspected: RecordableHistogram = createHistogram();
  verdicts = 0;
  reports = 0;

  /**
   * `boundMs`: the first report of a silence; `repeatMs` (optional): reported again this often while
   * it lasts, so that the primary, which may decline a report (its guest merely slow), is asked
   * again, up to its own slower bound.
   */
  constructor(private readonly o: { now: () => number; boundMs: number; repeatMs?: number }) {}

  get boundMs(): number {
    return this.o.boundMs;
  }

  /** A request from the primary's stream is handed to this copy. */
  onStreamRequest(key: string): void {
    this.streamRequests.set(key, (this.streamRequests.get(key) ?? 0) + 1);
    if (this.streamRequests.size > MAX_KEYS) this.streamRequests.delete(this.streamRequests.keys().next().value!);
  }

  /** This copy answered the request with this key. */
  onLocalReply(key: string): void {
    const n = this.streamRequests.get(key);
    if (!n) return; // not a request of the stream (injected here, or from before the witness started)
    if (n === 1) this.streamRequests.delete(key); else this.streamRequests.set(key, n - 1);
    this.localOutput(this.localAt, this.digestAt, key);
  }

  /** This copy asked the AUTH server about `subject` (AUTHQ): the primary's guest must ask it too. */
  onLocalQuestion(subject: string): void {
    this.localOutput(this.questions, this.earlyAnswers, subject);
  }

  /** An AUTH answer about `subject` came in the primary's stream: the primary's guest asked it, so it runs. */
  onStreamAnswer(subject: string): void {
    this.primaryOutput(this.questions, this.earlyAnswers, subject);
  }

  /** A digest of one of the primary guest's replies arrived: that guest is answering. */
  onPrimaryDigest(key: string): void {
    this.primaryOutput(this.localAt, this.digestAt, key);
  }

  /**
   * This copy produced an output (a reply, an AUTH question) the primary's guest must match: matched
   * already (`early` holds the primary's, it came first) or waited for in `pending` (a suspicion).
   */
  private localOutput(pending: Map<string, number[]>, early: Map<string, number[]>, key: string): void {
    if (shift(early, key) !== undefined) {
      this.late.record(1); // the primary's came first
      return;
    }
    const now = this.o.now();
    push(pending, key, now);
    this.repliesSince++;
    this.waitingSince ??= now;
  }

  /** The primary's guest's matching output arrived (a digest, an AUTH answer in the stream): how late, and proof of life. */
  private primaryOutput(pending: Map<string, number[]>, early: Map<string, number[]>, key: string): void {
    const now = this.o.now();
    const mine = shift(pending, key);
    if (mine !== undefined) this.late.record(Math.max(1, Math.round((now - mine) * 1000)));
    else push(early, key, now);
    this.alive(now);
  }

  /** Proof that the primary's guest runs: the suspicion, if any, ends. */
  private alive(now: number): void {
    if (this.waitingSince !== undefined && !this.reported) this.suspected.record(Math.max(1, Math.round((now - this.waitingSince) * 1000)));
    this.waitingSince = undefined;
    this.repliesSince = 0;
    this.reported = 0;
  }

  /** When the verdict falls due if no digest comes (monotonic ms), or undefined: nothing suspected. */
  get dueAt(): number | undefined {
    if (this.waitingSince === undefined || (this.reported && !this.o.repeatMs)) return undefined;
    return this.waitingSince + this.o.boundMs + this.reported * (this.o.repeatMs ?? 0);
  }

  /**
   * The verdict: this copy answered stream requests and the primary has sent no digest for
   * `boundMs` since the first of them; then again every `repeatMs` while that lasts (once without).
   * Called when it falls due (dueAt), and not straight from a timer after a stall: see the replicator.
   */
  check(): WitnessVerdict | undefined {
    const due = this.dueAt;
    if (due === undefined || this.o.now() < due) return undefined;
    const silentMs = this.o.now() - this.waitingSince!;
    if (this.reported === 0) this.verdicts++;
    // After a stall of this loop several repeats may have fallen due: one report says how long.
    this.reported = Math.max(this.reported + 1, this.o.repeatMs ? Math.floor((silentMs - this.o.boundMs) / this.o.repeatMs) + 1 : 1);
    this.reports++;
    return { silentMs, replies: this.repliesSince, report: this.reported };
  }

  /** The copies are no longer comparable (a new clone, another stream, a guest upgrade): start over. */
  reset(): void {
    this.streamRequests.clear();
    this.localAt.clear();
    this.digestAt.clear();
    this.earlyAnswers.clear();
    this.questions.clear();
    this.waitingSince = undefined;
    this.repliesSince = 0;
    this.reported = 0;
  }

  status(): WitnessStatus {
    const ms = (us: number) => Math.round(us / 10) / 100;
    const h = this.late;
    const g = this.suspected;
    return {
      boundMs: this.o.boundMs,
      primaryLateMs: { p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max), count: h.count },
      suspectedMs: { p50: ms(g.percentile(50)), p99: ms(g.percentile(99)), max: ms(g.max), count: g.count },
      compared: h.count,
      verdicts: this.verdicts,
      reports: this.reports,
      repeatMs: this.o.repeatMs ?? 0,
      waitingMs: this.waitingSince === undefined ? null : Math.round(this.o.now() - this.waitingSince),
    };
  }
}

function push(m: Map<string, number[]>, key: string, t: number): void {
  const l = m.get(key);
  if (l) l.push(t); else m.set(key, [t]);
  if (m.size > MAX_KEYS) m.delete(m.keys().next().value!);
}

function shift(m: Map<string, number[]>, key: string): number | undefined {
  const l = m.get(key);
  const t = l?.shift();
  if (l && l.length === 0) m.delete(key);
  return t;
}
