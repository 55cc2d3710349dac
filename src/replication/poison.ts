/**
 * Recovery from the checkpoint that survives a poison input: one request that crashes (or hangs)
 * every copy of the guest it reaches. Two deterministic copies fed the same stream share their bugs,
 * so both fail on it, and a plain restore that replays the whole log fails again on it.
 *
 * A guarded restore: the checkpoint's image, then the log in parts.
 *  - With suspects (the requests the failed copy had been handed and not answered, oldest first:
 *    ProcessedFrontier), everything before the first suspect is replayed at full speed, then each
 *    suspect alone (with the AUTH answers logged after it), each one watched until the copy has
 *    processed it. The suspect the restored copy fails on is the poison input, confirmed by where the
 *    replay fails: the image is restored again, and the log replayed without it (nor any resend of it
 *    by its client), and the caller quarantines it and answers its client.
 *  - Without suspects, the whole log; if the restored copy fails on it, its own frontier gives the
 *    suspects and the image is restored again.
 *  - If no suspect fails the restored copy, the failure was not deterministic: nothing is
 *    quarantined, the rest is replayed, and the caller journals it.
 * Several poison inputs in a row are found one after the other (each costs two restores), up to
 * MAX_RESTORES.
 *
 * Watching a replay: done when the queue is empty and the guest's processed count (PING `seq=`) is
 * what it was handed; failed when the supervisor gives the copy up (a crash: QEMU died, the guest
 * panicked or reset, its watchdog fired; or its own hang check); hung when it answers no PING for
 * hangMs while it has work (a slow but healthy guest answers PINGs: the management port is served
 * between requests and while a REG waits for AUTH). The caller's failure policy must give the copy
 * up (never relaunch it from its disk) while a recovery runs.
 *
 * Owns no state between recoveries; the input log and the image are the Checkpointer's.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { UsError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { authSubject, registrationSubject } from '../guest/guest-port.js';
import type { GuestState, GuestSupervisor } from '../guest/supervisor.js';
import { answerOf, type Checkpointer, type CheckpointInfo } from './checkpoint.js';
import type { SequencedInput } from './messages.js';
import type { Replicator } from './replicator.js';

/** Restores of the image one recovery may make (each poison input found costs two). */
export const MAX_RESTORES = 7;
/** Suspects tried one at a time, at most: past them the failure is called not deterministic. */
export const MAX_SUSPECTS = 16;
/**
 * A prefix this long (inputs replayed before the first suspect) is snapshotted once processed: the
 * restore that follows a confirmed poison input starts from there instead of replaying it again
 * (a 72 MB snapshot costs about what 2 000 inputs take to replay under TCG).
 */
export const SNAPSHOT_PREFIX_INPUTS = 2000;
/**
 * A restored copy that answers PINGs with the same processed count for this long, with nothing
 * queued for it and short of what it was handed, will not catch up: inputs of the replay never
 * reached it. Longer than the guest's own AUTH timeout (5 s), the longest it blocks while working.
 * Waited for without a bound, the recovery never ended and the board never served (a restored copy
 * short of its count, poison.test, 2026-12-07).
 */
export const REPLAY_STUCK_MS = 6000;

export interface CopyFailure {
  how: 'crash' | 'hang';
  cause: string;
  at: string;
}

export interface PoisonFound {
  seq: number;
  input: SequencedInput;
  /** How the restored copy failed on it. */
  failure: CopyFailure;
  /** Resends of it in the log (the same client, the same bytes), skipped with it. */
  resends: number[];
}

export interface RecoveryOutcome {
  checkpointSeq: number;
  /** Inputs of the log handed to the final copy. */
  replayed: number;
  restores: number;
  poison: PoisonFound[];
  /** Logged requests not replayed because the quarantine already holds them (an earlier recovery's). */
  quarantinedSkipped: number;
  /** The failure the suspects did not reproduce (not deterministic), if so. */
  notReproduced?: { suspects: number[] };
  /** Failures of restored copies, in order (each one that found a poison input, and any other). */
  failures: CopyFailure[];
  /**
   * The restored copy stopped short of the requests it was handed (REPLAY_STUCK_MS): its count was
   * rebased to what it processed, and the difference is acknowledged state it may lack.
   */
  shortfall?: { handed: number; processed: number };
  durationMs: number;
}

export interface PoisonRecoveryOptions {
  checkpoints: Pick<Checkpointer, 'restoreImage' | 'inputsLogged'> & Partial<Pick<Checkpointer, 'snapshot' | 'noteRestored'>>;
  supervisor: Pick<GuestSupervisor, 'currentState' | 'drained' | 'stop' | 'on' | 'off' | 'port'> & Partial<Pick<GuestSupervisor, 'rebaseAppSeq'>>;
  replicator: Pick<Replicator, 'replay' | 'appendReplay' | 'queuedLocally' | 'frontier'>;
  log: Logger;
  /** A copy that answers no PING for this long while it has work is hung. */
  hangMs: number;
  /** REPLAY_STUCK_MS unless set (tests). */
  stuckMs?: number;
  /** Progress for the journal ("restoring", "replaying 1 of 3 suspects", …). */
  onStep?: (what: string) => void;
  /** Called as soon as a poison input is confirmed (the caller quarantines it at once). */
  onPoison?: (p: PoisonFound) => void;
}

/** ok: processed everything (`blocked`: all but a REG waiting for an AUTH answer the log does not hold). */
type Watch = { ok: true; blocked?: boolean; shortfall?: { handed: number; processed: number } } | { ok: false; failure: CopyFailure };

export class PoisonRecovery {
  /** The last restored copy of this recovery that stopped short of its count (watch()). */
  private shortfall?: { handed: number; processed: number };

  constructor(private readonly o: PoisonRecoveryOptions) {}

  /**
   * Restores the checkpoint and replays the log, guarded. `suspects`: the failed copy's (sequence
   * numbers, oldest first), or none. Resolves once the final copy has processed the whole log.
   */
  async recover(suspects: number[] = [], alreadyQuarantined?: (s: SequencedInput) => boolean): Promise<RecoveryOutcome> {
    const t0 = performance.now();
    this.shortfall = undefined;
    const skip = new Set<number>();
    const poison: PoisonFound[] = [];
    const failures: CopyFailure[] = [];
    let notReproduced: RecoveryOutcome['notReproduced'];
    let restores = 0;
    let quarantinedSkipped = 0;
    let trying = suspects.slice(0, MAX_SUSPECTS);
    /** This recovery's snapshot of a replayed prefix: the restores after it start there. */
    let snap: CheckpointInfo | undefined;
    for (;;) {
      if (restores >= MAX_RESTORES) {
        throw new UsError('US_ERR_GUEST_FAILED', `recovery from the checkpoint gave up after ${restores} restores: the restored copy keeps failing (${failures.map((f) => f.cause).join('; ')})`);
      }
      this.step(`restoring the checkpoint (restore ${restores + 1})`);
      const cp = await this.o.checkpoints.restoreImage(snap);
      restores++;
      const inImage = new Set(cp.alreadyIn ?? []);
      // A poison input quarantined by an earlier recovery is still in the log (and so are resends of
      // it sequenced before its quarantine): never given to a copy again, as the live screen does.
      // Replayed, it failed the restored copy once more and cost two restores to be found again.
      const logged = this.o.checkpoints.inputsLogged(cp.seq + 1, Number.MAX_SAFE_INTEGER).filter((s) => !skip.has(s.seq) && !inImage.has(s.seq));
      const all = alreadyQuarantined ? logged.filter((s) => s.input.kind !== 'request' || !alreadyQuarantined(s)) : logged;
      quarantinedSkipped = logged.length - all.length;
      trying = trying.filter((q) => all.some((s) => s.seq === q && s.input.kind === 'request'));
      if (!trying.length) {
        this.step(`replaying ${all.length} logged inputs after input ${cp.seq}`);
        this.o.replicator.replay(cp.seq, all, cp.authOpen ?? [], cp.authAnswered, answerOf(cp));
        const w = await this.watch(true);
        if (w.ok) return this.done(cp, all.length, restores, poison, failures, notReproduced, t0, w.blocked !== true, quarantinedSkipped);
        failures.push(w.failure);
        trying = this.o.replicator.frontier.suspects(MAX_SUSPECTS);
        this.o.log.warn({ failure: w.failure, suspects: trying }, 'the restored copy failed during the replay: trying its suspects one at a time');
        if (!trying.length) throw new UsError('US_ERR_GUEST_FAILED', `the restored copy failed during the replay with no request outstanding (${w.failure.cause})`);
        continue;
      }
      const first = trying[0]!;
      const before = prefixPart(all, first);
      this.step(`replaying ${before.length} logged inputs up to input ${first - 1}, then ${trying.length} suspect${trying.length === 1 ? '' : 's'} one at a time`);
      this.o.replicator.replay(cp.seq, before, cp.authOpen ?? [], cp.authAnswered, answerOf(cp));
      let w = await this.watch();
      if (!w.ok) {
        failures.push(w.failure);
        trying = this.o.replicator.frontier.suspects(MAX_SUSPECTS);
        if (!trying.length) throw new UsError('US_ERR_GUEST_FAILED', `the restored copy failed before the suspects with no request outstanding (${w.failure.cause})`);
        continue;
      }
      if (before.length >= SNAPSHOT_PREFIX_INPUTS && this.o.checkpoints.snapshot) {
        // A long prefix: the next restore starts from here (a failure only costs the snapshot).
        this.step(`snapshot of the restored copy after the ${before.length} inputs before input ${first}`);
        snap = await this.o.checkpoints.snapshot(first - 1, before.filter((s) => s.seq >= first).map((s) => s.seq))
          .catch((e: Error) => { this.o.log.warn({ err: e.message }, 'recovery snapshot failed: the next restore replays the log from the last image'); return snap; });
      }
      let found: PoisonFound | undefined;
      const handed = new Set(before.map((s) => s.seq));
      for (const [i, q] of trying.entries()) {
        const part = suspectPart(all, q, handed);
        this.step(`suspect ${i + 1} of ${trying.length}: input ${q}`);
        this.o.replicator.appendReplay(part);
        for (const s of part) handed.add(s.seq);
        w = await this.watch();
        if (!w.ok) {
          failures.push(w.failure);
          const input = all.find((s) => s.seq === q)!;
          const resends = all.filter((s) => s.seq > q && s.input.kind === 'request' && sameRequest(s, input)).map((s) => s.seq);
          found = { seq: q, input, failure: w.failure, resends };
          break;
        }
      }
      if (found) {
        poison.push(found);
        skip.add(found.seq);
        for (const r of found.resends) skip.add(r);
        this.o.log.error({ seq: found.seq, how: found.failure.how, resends: found.resends.length }, 'poison input confirmed: the restored copy failed on it alone');
        this.o.onPoison?.(found);
        trying = [];
        continue;
      }
      // Every suspect was processed: the failure does not repeat.
      notReproduced = { suspects: trying };
      trying = [];
      const rest = all.filter((s) => !handed.has(s.seq));
      this.step(`no suspect failed the restored copy: replaying the other ${rest.length} logged inputs`);
      this.o.replicator.appendReplay(rest);
      w = await this.watch(true);
      if (w.ok) return this.done(cp, handed.size + rest.length, restores, poison, failures, notReproduced, t0, w.blocked !== true, quarantinedSkipped);
      failures.push(w.failure);
      trying = this.o.replicator.frontier.suspects(MAX_SUSPECTS);
      if (!trying.length) throw new UsError('US_ERR_GUEST_FAILED', `the restored copy failed with no request outstanding (${w.failure.cause})`);
    }
  }

  private step(what: string): void {
    this.o.log.info({ step: what }, 'recovery from the checkpoint');
    this.o.onStep?.(what);
  }

  private done(cp: CheckpointInfo, replayed: number, restores: number, poison: PoisonFound[], failures: CopyFailure[], notReproduced: RecoveryOutcome['notReproduced'], t0: number, caughtUp: boolean, quarantinedSkipped: number): RecoveryOutcome {
    this.o.checkpoints.noteRestored?.(cp.seq, replayed, t0, caughtUp);
    return { checkpointSeq: cp.seq, replayed, restores, poison, quarantinedSkipped, failures, notReproduced, shortfall: this.shortfall, durationMs: Math.round(performance.now() - t0) };
  }

  /**
   * Until the copy has processed everything it was handed, or fails, or hangs. `last`: nothing more
   * will be handed to it, so a copy blocked on an AUTH question the log holds no answer for is done
   * (the board asks the AUTH service once it serves); otherwise it is waited for (the guest gives the
   * question up after its own 5 s), so that nothing handed later is blamed for what it does.
   */
  async watch(last = false): Promise<Watch> {
    const { supervisor, replicator, hangMs } = this.o;
    let failed: CopyFailure | undefined;
    // A PING in flight when the copy fails would otherwise be waited out (1 s): the failure ends it.
    let onFailed: () => void = () => undefined;
    const failure = new Promise<'failed'>((res) => { onFailed = () => res('failed'); });
    const onState = (s: GuestState, cause: string) => {
      if (s === 'failed' || s === 'stopped') {
        failed ??= { how: /hung|hang/i.test(cause) ? 'hang' : 'crash', cause, at: new Date().toISOString() };
        onFailed();
      }
    };
    supervisor.on('state', onState);
    try {
      let answeredAt = performance.now();
      /** The processed count while nothing is queued for the copy, and since when it has not moved. */
      let still: { count: number | undefined; since: number } | undefined;
      for (;;) {
        if (failed) return { ok: false, failure: failed };
        const st = supervisor.currentState;
        if (st === 'failed' || st === 'stopped') return { ok: false, failure: { how: 'crash', cause: `the restored guest is ${st}`, at: new Date().toISOString() } };
        // Blocked on an AUTH question whose answer the log does not hold (the old primary died before
        // it came): the board asks the AUTH service once it serves; nothing here can move it on.
        if (last && replicator.queuedLocally === 0 && supervisor.port.authOutstanding.size > 0) return { ok: true, blocked: true };
        const answered = await Promise.race([failure, replicator.queuedLocally === 0
          ? supervisor.drained().then((d) => (d ? 'drained' : 'answered'), () => 'silent')
          : supervisor.port.processedCount(1000).then(() => 'answered', () => 'silent')]);
        if (failed) return { ok: false, failure: failed };
        if (answered === 'drained') return { ok: true };
        const now = performance.now();
        if (answered === 'answered') answeredAt = now;
        else if (now - answeredAt >= hangMs) {
          const cause = `the restored guest answered no PING for ${Math.round(now - answeredAt)} ms with inputs to process: hung`;
          await supervisor.stop().catch(() => undefined);
          return { ok: false, failure: { how: 'hang', cause, at: new Date().toISOString() } };
        }
        if (answered === 'answered' && replicator.queuedLocally === 0) {
          // Everything handed over, the copy answers, and it is short of its count: it may still be
          // working (or blocked up to 5 s on an AUTH question), unless its count stops moving.
          const count = supervisor.port.lastCount;
          if (!still || still.count !== count) still = { count, since: now };
          else if (count !== undefined && now - still.since >= (this.o.stuckMs ?? REPLAY_STUCK_MS)) {
            const handed = supervisor.port.expectedSeq ?? count;
            // What tells where the requests went: the last one it answered, the first it did not,
            // what flow control wrote off, and its open AUTH question.
            const port = supervisor.port as Partial<Pick<GuestSupervisor['port'], 'writtenOff' | 'unconfirmed' | 'authAnswered'>> & Pick<GuestSupervisor['port'], 'authOutstanding'>;
            this.o.log.error({
              handed, processed: count, lastAnswered: replicator.frontier.processedSeq, unanswered: replicator.frontier.suspects(3),
              writtenOff: port.writtenOff, unconfirmed: port.unconfirmed, authOpen: [...port.authOutstanding], authAnswered: port.authAnswered,
            }, 'the restored copy stopped short of the requests it was handed: counting from what it processed');
            supervisor.rebaseAppSeq?.(count);
            this.shortfall = { handed, processed: count };
            return { ok: true, shortfall: { handed, processed: count } };
          }
        } else still = undefined;
        await sleep(answered === 'answered' ? 10 : 0);
      }
    } finally {
      supervisor.off('state', onState);
    }
  }
}

/**
 * What is replayed before the first suspect: every input logged before it, and the AUTH answers
 * logged after it that a REG before it was waiting for (the failed copy answered that REG: the
 * answer reached it while the suspects sat unread in its socket).
 */
export function prefixPart(all: SequencedInput[], first: number): SequencedInput[] {
  const before = all.filter((s) => s.seq < first);
  const waiting = new Set<string>();
  for (const s of before) {
    const reg = s.input.kind === 'request' ? registrationSubject('request', s.input.payload) : undefined;
    if (reg) waiting.add(reg);
    const ans = s.input.kind === 'auth-reply' ? authSubject('answer', s.input.payload) : undefined;
    if (ans) waiting.delete(ans);
  }
  const late: SequencedInput[] = [];
  for (const s of all) {
    if (s.seq < first || s.input.kind !== 'auth-reply') continue;
    const sub = authSubject('answer', s.input.payload);
    if (sub && waiting.delete(sub)) late.push(s);
  }
  return [...before, ...late];
}

/**
 * What a suspect is replayed with: itself, what was logged between it and the next request (AUTH
 * answers), and, for a REG, the answer to its AUTH question wherever the log holds it. Requests
 * logged before that answer are left for later: the guest, blocked on its question, would only have
 * processed them after the REG anyway, and handed over now they would be blamed on the suspect.
 */
export function suspectPart(all: SequencedInput[], q: number, handed: ReadonlySet<number>): SequencedInput[] {
  const at = all.findIndex((s) => s.seq === q);
  if (at < 0) return [];
  const part: SequencedInput[] = [];
  // Anything before the suspect not handed yet (answers logged between the previous suspect and it).
  for (const s of all.slice(0, at)) if (!handed.has(s.seq) && s.input.kind !== 'request') part.push(s);
  part.push(all[at]!);
  let i = at + 1;
  for (; i < all.length && all[i]!.input.kind !== 'request'; i++) if (!handed.has(all[i]!.seq)) part.push(all[i]!);
  const sub = registrationSubject('request', all[at]!.input.payload);
  if (sub && !part.some((s) => s.input.kind === 'auth-reply' && authSubject('answer', s.input.payload) === sub)) {
    const answer = all.slice(i).find((s) => s.input.kind === 'auth-reply' && !handed.has(s.seq) && authSubject('answer', s.input.payload) === sub);
    if (answer) part.push(answer);
  }
  return part;
}

/** The same request from the same client: a resend (same bytes) of a quarantined input. */
function sameRequest(a: SequencedInput, b: SequencedInput): boolean {
  if (a.input.kind !== 'request' || b.input.kind !== 'request') return false;
  if (!a.input.payload.equals(b.input.payload)) return false;
  return (a.client?.address ?? null) === (b.client?.address ?? null) && (a.client?.port ?? null) === (b.client?.port ?? null);
}
