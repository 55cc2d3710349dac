/**
 * Input replication: every external input gets a sequence number and reaches both guests in the same
 * order; the primary releases a reply only once the backup holds the input it answers (output
 * commit), so no reply a client has seen can be lost by a failover.
 *
 * One object per board, in one of three modes:
 *   standalone  inputs straight to the local guest, outputs straight out (no partner in sync)
 *   primary     inputs sequenced, sent to the backup and delivered locally; replies held until ACKed;
 *               a DIGEST of each reply goes to the backup; AUTH queries leave only from here
 *   backup      inputs received, logged, ACKed, delivered to the clone in order; its replies dropped
 *               after comparison with the primary's digests; its AUTH queries dropped but tracked:
 *               an AUTH answer is handed to the clone only after the clone has asked for it
 * The sequence counter and the client map survive mode changes, which is what makes a promotion
 * seamless. Owns no socket: the channel, the guest port and the endpoint are given to it.
 */
import { EventEmitter } from 'node:events';
import { systemClock, type Clock, type TimerHandle } from '../core/clock.js';
import { LatencyHistogram, type HistogramSnapshot } from '../core/histogram.js';
import type { Logger } from '../core/log.js';
import { ClientMap, type ClientMapOptions } from '../guest/client-map.js';
import { authSubject, registrationSubject } from '../guest/guest-port.js';
import type { GuestInput, GuestOutput, InputPipeline, InputSink, OutputSink } from '../guest/io.js';
import { ProcessedFrontier } from './frontier.js';
import { PrimaryGuestWitness, type WitnessStatus, type WitnessVerdict } from './guest-witness.js';
import type { MessageChannel } from './secure-channel.js';
import {
  REPLICATION_TYPES, T_ACK, T_CONTROL, T_DIGEST, T_INPUT, decodeAck, decodeDigest, decodeInput, encodeAck, encodeControl,
  encodeDigest, encodeInput, replyDigest, replyKey, type ControlMessage, type SequencedInput,
} from './messages.js';
import { PartnerRejections, type RejectionReason } from './rejections.js';

/**
 * Of the inputs logged from a saved state's replay point (`logged[0]`, the first request the state
 * does not hold) onwards, those a guest booted on that state must be given. Inputs after
 * `deliveredUpTo` never reached the old guest: all of them. Before that, every request, but of the
 * AUTH answers only the last one for the REG at the replay point: the old guest asks one question
 * at a time and reads each answer at once, so it consumed the others for REGs now in the saved
 * state (or threw them away as late duplicates). The REG it was blocked on when it saved is the one
 * exception (PROTOCOL.md §6: `seq` excludes it, so it is the request at the replay point): its
 * answer may have been delivered but not read yet. Replaying the others would hand the new guest
 * answers it never asks for, each holding the stream for authHoldMs, long enough for the guest to
 * give up on its real question (ERR AUTHUNAVAIL: an acknowledged registration lost).
 */
export function inputsAfterSave(logged: SequencedInput[], deliveredUpTo: number): SequencedInput[] {
  const first = logged[0];
  const pending = first?.input.kind === 'request' ? registrationSubject('request', first.input.payload) : undefined;
  let keep = -1;
  logged.forEach((s, i) => {
    if (s.seq <= deliveredUpTo && s.input.kind === 'auth-reply' && pending && authSubject('answer', s.input.payload) === pending) keep = i;
  });
  return logged.filter((s, i) => s.seq > deliveredUpTo || s.input.kind === 'request' || i === keep);
}

export type ReplicationMode = 'standalone' | 'primary' | 'backup';

export interface ReplicatorOptions {
  guest: InputSink;
  log: Logger;
  /** Without an ACK for this long, the primary stops waiting: it serves unprotected and raises an alarm. */
  protectionTimeoutMs?: number;
  /**
   * After a cut-over (a clone, a re-clone) the protection timeout does not end protection for this
   * long: the new copy is being resumed on a backup that has just received the whole guest, and its
   * first ACKs can be late on a loaded board. Ending protection then drops the channel and starts
   * another clone, which discards the copy that had just arrived (seen under load: a 10 s clone,
   * unprotected 508 ms later, a re-clone, and a promotion in the middle of it with no copy at all).
   */
  cutoverGraceMs?: number;
  /** How long the backup holds an AUTH answer its clone has not asked for yet before handing it over anyway. */
  authHoldMs?: number;
  /**
   * Primary whose backup stopped acknowledging (not fenced): may it release replies the backup may
   * not hold? undefined: yes; else why not yet. Asked when protection ends and every 10 ms while it
   * says no; meanwhile the replies stay held (withheld). `waitedMs`: since protection ended.
   * Absent: always yes (the pair alone; ha.manager pacemaker asks corosync, src/pair/serve-alone.ts).
   */
  serveAlone?: (waitedMs: number) => string | undefined;
  /** Called for every input the backup receives (the checkpoint log). */
  onLogged?: (s: SequencedInput) => void;
  /** Writes what onLogged was given (group commit); called before every ACK. */
  flushLog?: () => void;
  /** Time and timers of the protection timeout, the AUTH hold and the witness check. Default: the system clock. */
  clock?: Clock;
  /**
   * Backup: the primary's guest is reported hung when this copy has answered requests of the stream
   * and no digest has come from the primary for this long (guest-witness.ts). Undefined: no witness.
   */
  guestHangMs?: number;
  /** Backup: a silence the witness reported is reported again this often while it lasts. Undefined: once. */
  guestHangRepeatMs?: number;
  /**
   * Inputs sequenced but not yet delivered to the local guest (or held during a clone's cut-over)
   * beyond which a new client request is dropped before it is sequenced (counted). Default 512: at the ~1000 requests/s a replicated TCG guest passes, half a second of queueing (a client retrying after 20-200 ms gains nothing from a deeper queue).
   */
  maxQueuedInputs?: number;
  /** Requests remembered for output commit whose reply has not come (oldest pruned first, counted). Default 8192. */
  maxPendingReplies?: number;
  /** A remembered request older than this gets no more waiting for its reply (pruned, counted). Default 10000. */
  pendingReplyMaxAgeMs?: number;
  /** The client map's port range and reply-cache mirror (src/guest/client-map.ts). */
  clientMap?: ClientMapOptions;
  /** Where refused partner messages are counted and journaled (one per controller). Default: a private one. */
  rejections?: PartnerRejections;
}

/** Inputs dropped or forgotten on the input path, by reason (docs/replication.md, bounds). */
export interface InputDrops {
  /** New requests dropped because the queue before the local guest was full. */
  queueFull: number;
  /** New requests dropped because the inputs held for a clone's cut-over were at the cap. */
  heldFull: number;
  /** Requests whose reply never came (the guest ignored or lost them), forgotten by the count or age bound. */
  pendingPruned: number;
  /** Requests answered from the quarantine (a poison input or a resend of one): never sequenced, never given to a guest. */
  quarantined: number;
}

export interface ReplicationStatus {
  mode: ReplicationMode;
  protected: boolean;
  lastSeq: number;
  ackedSeq: number;
  deliveredSeq: number;
  /** Inputs the backup has not acknowledged (primary) or the clone has not been given yet (backup); null when unprotected. */
  lagInputs: number | null;
  heldReplies: number;
  heldInputs: number;
  holding: boolean;
  divergences: number;
  digestsCompared: number;
  versionDifferences: number;
  unprotectedReason?: string;
  /** Primary: protection ended but its replies are withheld until it may serve alone (serveAlone). */
  withheld: { reason: string; since: string; waiting: string } | null;
  authHolds: number;
  answersAhead: number;
  /** AUTH answers handed again to a guest that asked once more for one it had been handed (rehandAnswer()). */
  answersRehanded: number;
  /** Delivery to the local guest: paused (a clone or checkpoint cut, a restore), waiting for room in the guest's window, the AUTH questions it waits on, what heads the queue. */
  delivery: { paused: boolean; awaitingRoom: boolean; authOpen: string[]; queued: number; head: string | null };
  clients: number;
  /** Requests remembered for output commit, waiting for their reply. */
  pendingReplies: number;
  drops: InputDrops;
  /** Backup: the witness of the primary's guest (how late its replies come, hang verdicts). */
  witness?: WitnessStatus;
  /** Where an input's time goes, since the controller started (docs/replication.md, "Where the time goes"). */
  hops?: Record<Hop, HistogramSnapshot>;
}

/**
 * The hops an input's time is measured at, each from its receipt on this board (ms). Primary, a
 * client request: forwarded (sent to the backup), delivered (to the guest), replied (the guest's
 * reply), covered (the backup's ACK covers what the reply depends on; only while protected),
 * released (to the client). authAnswer: the guest's AUTHQ → its AUTHR sequenced. Backup: logged (the
 * input log written), acked (the ACK covering it sent; the oldest input an ACK covers).
 */
export const HOPS = ['forwarded', 'delivered', 'replied', 'covered', 'released', 'authAnswer', 'backupLogged', 'backupAcked'] as const;
export type Hop = (typeof HOPS)[number];

export declare interface Replicator {
  on(ev: 'divergence', fn: (key: string) => void): this;
  on(ev: 'unprotected', fn: (reason: string) => void): this;
  on(ev: 'withheld', fn: (reason: string, waiting: string) => void): this;
  on(ev: 'primary-guest-silent', fn: (v: WitnessVerdict) => void): this;
  /** New client requests are being dropped (queue or cut-over hold full): when it begins, then at most every 10 s. */
  on(ev: 'dropping', fn: (drops: InputDrops) => void): this;
}

const MAX_DIGESTS = 20000;
/**
 * A guest asking again this long after it was handed the answer has not got it (rehandAnswer()).
 * The guest re-sends its question every 500 ms and reads an answer as soon as it comes, but the
 * answer reaches it only after every frame handed before it: behind a few hundred requests queued
 * for a guest that was blocked, that took ~500 ms under TCG (a retransmission 498 ms after the
 * answer, poison.test 2026-12-07). A second answer is harmless (the guest drops it when it next
 * asks), so this errs long: the guest still gets a lost answer well inside its own 5 s.
 */
export const AUTH_REHAND_MS = 1000;

export class Replicator extends EventEmitter implements InputPipeline {
  mode: ReplicationMode = 'standalone';
  readonly clients: ClientMap;
  readonly drops: InputDrops = { queueFull: 0, heldFull: 0, pendingPruned: 0, quarantined: 0 };
  /** How far the local guest has worked through the requests it was handed (the suspects when it fails). */
  readonly frontier = new ProcessedFrontier();
  /**
   * Primary: every client request is first shown to this screen (the quarantine of poison inputs);
   * a request it answers is not sequenced and reaches no guest, and its answer goes straight out.
   */
  screen?: (input: Extract<GuestInput, { kind: 'request' }>, client: { address: string; port: number } | undefined) => Buffer | undefined;
  /**
   * Primary, while unprotected: log every input sequenced here as the backup would (the checkpoint's
   * input log), so that a copy that fails now can still be restored from the checkpoint and the log
   * (a poison input that reaches a promoted board's copy). Set by the pair after a promotion that
   * kept a checkpoint; ended by the next clone.
   */
  logWhileUnprotected = false;
  private out?: OutputSink;
  private channel?: MessageChannel;
  lastSeq = 0;
  ackedSeq = 0;
  deliveredSeq = 0;
  /** The last AUTH answer delivered to the local guest (a reply may have been decided on it). */
  private authDeliveredSeq = 0;
  private isProtected = false;
  private unprotectedReason?: string;
  /**
   * Primary: protection ended (why, when: clock and wall ms) and its replies stay held until
   * serveAlone says yes (`waiting`: its last answer), or a clone protects it again.
   */
  private withheld?: { reason: string; since: number; sinceWall: number; waiting: string };
  /** The options' serveAlone; the pair layer sets it once it knows the board's HA manager. */
  serveAlone?: (waitedMs: number) => string | undefined;
  // primary
  private holding = false;
  private held: SequencedInput[] = [];
  /** Per reply key, the requests waiting for their reply: sequence number and when it was sequenced. */
  private pendingReplies = new Map<string, Array<{ seq: number; at: number }>>();
  private pendingCount = 0;
  private lastDropLog = 0;
  private dropsAtLastLog = 0;
  private heldOutputs: Array<{ seq: number; output: GuestOutput; inputSeq?: number }> = [];
  private unackedSince = 0;
  /** When the current channel's cut-over made this primary protected (cutoverGraceMs). */
  private protectedAt = -Infinity;
  /**
   * Backup: the witness takes no verdict before this (clock ms): cutoverGraceMs after a cut-over
   * or after a checkpoint's pause; Infinity while delivery is paused for a checkpoint.
   */
  private witnessQuietUntil = -Infinity;
  private protectionTimer?: TimerHandle;
  // backup
  /** Inputs sequenced but not yet handed to the local guest, in order (see pump()). */
  private queue: SequencedInput[] = [];
  /**
   * Inputs up to this sequence number came from the partner's stream or a replayed log: on a
   * promoted board they still go through connection tracking (their AUTH answers wait for the
   * guest's question). Inputs this board sequences itself as primary are never held.
   */
  private replayUntil = 0;
  /** The answer last counted in authHolds (its sequence number). */
  private heldAnswerSeq = 0;
  /** Subscribers the clone has asked AUTH about and not been answered yet (connection tracking). */
  private authOpen = new Set<string>();
  /**
   * The subscriber whose answer was handed to the guest while it asked (until its REG's outcome or
   * a question about another): a question about it meanwhile is a retransmission that crossed the
   * answer, not a new question (noteQuestion).
   */
  private authAnswered: string | undefined;
  /**
   * The AUTH answer last handed to the guest, until its REG's outcome: the guest asking the same
   * question again AUTH_REHAND_MS or more after it was handed has not got it (it reads an answer
   * as soon as it comes), and is given it again (rehandAnswer()).
   */
  private lastAnswer?: { sub: string; input: GuestInput; at: number };
  /** AUTH answers handed again to a guest that asked for them once more (rehandAnswer()). */
  answersRehanded = 0;
  /** The subscriber last logged as asked about again right after its answer (noteQuestion). */
  private quietRetransmission?: string;
  private authHoldSince = 0;
  private authHoldTimer?: TimerHandle;
  authHolds = 0;
  /** AUTH answers handed to a blocked guest ahead of the requests queued before them (answerAhead()). */
  answersAhead = 0;
  private ackScheduled = false;
  private deliveryPaused = false;
  /** Bumped by every pause, hold and replacement of what the guest is handed (resumeDelivery's token). */
  private deliveryEpoch = 0;
  private awaitingRoom = false;
  private primaryDigests = new Map<string, Buffer[]>();
  private localDigests = new Map<string, Buffer[]>();
  divergences = 0;
  digestsCompared = 0;
  /** A declared version change (guest upgrade): replies may differ from the primary's; counted, not repaired. */
  private versionChange = false;
  versionDifferences = 0;
  /** The clone's last replies, for the divergence log (the primary sends only digests). */
  private localReplies = new Map<string, string>();

  private readonly clock: Clock;
  /** When a divergence was last logged (rate limit of that log line). */
  private divergenceLoggedAt = -Infinity;
  /** Per-hop timing: histograms (no per-input log), and when each input in flight was received. */
  private readonly hops = Object.fromEntries(HOPS.map((h) => [h, new LatencyHistogram()])) as Record<Hop, LatencyHistogram>;
  private readonly receivedAt = new Map<number, number>();
  private readonly askedAt = new Map<string, number>();
  private oldestUnackedAt = 0;
  /** Partner messages refused on this board (the replication channel's share is counted here). */
  readonly rejections: PartnerRejections;
  private readonly witness?: PrimaryGuestWitness;
  private witnessTimer?: TimerHandle;
  private witnessOn = false;

  constructor(private readonly o: ReplicatorOptions) {
    super();
    this.serveAlone = o.serveAlone;
    this.clock = o.clock ?? systemClock;
    this.clients = new ClientMap(o.clientMap);
    this.rejections = o.rejections ?? new PartnerRejections({ log: o.log });
    if (o.guestHangMs) this.witness = new PrimaryGuestWitness({ now: () => this.clock.now(), boundMs: o.guestHangMs, repeatMs: o.guestHangRepeatMs });
  }

  /** Backup: the witness runs while this board follows the primary's stream. */
  private watchPrimaryGuest(on: boolean): void {
    this.witness?.reset();
    this.witnessOn = on && !!this.witness;
    this.clock.clearTimeout(this.witnessTimer);
    this.witnessTimer = undefined;
  }

  /**
   * Arms one timer for when the witness's verdict falls due (no periodic wake-up: an idle or healthy
   * pair costs nothing). The verdict is taken after the poll phase (setImmediate), never straight
   * from the timer: after a stall of this loop, digests waiting in the channel's socket are read first.
   */
  private armWitness(): void {
    const dueAt = this.witnessOn ? this.witness!.dueAt : undefined;
    if (dueAt === undefined || this.witnessTimer) return;
    // Not within cutoverGraceMs of a cut-over: the primary's guest has just been resumed after the
    // copy and works through the inputs held meanwhile, its digests late on a loop that has just
    // finished a clone (a 269 ms "silence" reported right after a re-clone, seen under load). Nor
    // during a checkpoint on this board and that long after it: its copy to the file loads the
    // machine both boards share in the simulation (251 ms reported during one, hang.test at 3e8b114).
    // With a fast bound (repeated reports) the witness reports within those windows too, marked
    // `quiet`: the primary then judges them only by its fast check, which tells a guest kept from
    // the CPU (what such a window's load does) from a hung one; without, a report there waits.
    if (!Number.isFinite(this.witnessQuietUntil)) return; // resumeDelivery arms it again
    const fastOnly = !!this.o.guestHangRepeatMs;
    const due = fastOnly ? dueAt : Math.max(dueAt, this.witnessQuietUntil);
    this.witnessTimer = this.clock.setTimeout(() => setImmediate(() => {
      this.witnessTimer = undefined;
      if (!this.witnessOn || this.mode !== 'backup' || !this.isProtected || !this.channel?.open || this.versionChange) return;
      const quiet = this.clock.now() < this.witnessQuietUntil;
      if (quiet && (!fastOnly || !Number.isFinite(this.witnessQuietUntil))) { this.armWitness(); return; } // a checkpoint began meanwhile
      const v = this.witness!.check();
      if (v) this.emit('primary-guest-silent', quiet ? { ...v, quiet } : v);
      // A digest ended that suspicion and another may have begun since; or, reported, the next
      // report of a lasting silence falls due (repeats only).
      this.armWitness();
    }), Math.max(1, due - this.clock.now()));
  }

  /**
   * The checkpoint log: every input the backup receives goes there before it is acknowledged.
   * `flush` writes what `fn` was given and not written yet (a group commit): called before each ACK.
   */
  setInputLog(fn: ((s: SequencedInput) => void) | undefined, flush?: () => void): void {
    this.o.onLogged = fn;
    this.o.flushLog = flush;
  }

  /** Where released outputs go (the service endpoint while primary or standalone). */
  setOutput(out: OutputSink | undefined): void {
    this.out = out;
  }

  // ------------------------------------------------------------------ mode changes
  becomeStandalone(reason: string): void {
    this.watchPrimaryGuest(false);
    this.dropChannel(reason);
    this.mode = 'standalone';
    this.isProtected = false;
    this.dropWithheld('standalone');
    this.continueQueue();
  }

  /**
   * Primary: keeps the sequence counter and client map (a promoted backup continues where it was).
   * `holdDelivery`: the local guest is about to be replaced by a restored checkpoint, whose replay()
   * hands it the logged inputs in order and resumes delivery. What is queued now must not reach the
   * guest before that: handed over meanwhile, the inputs queued during a re-clone reached the
   * restored QEMU ahead of the replay (their AUTH answers after the 2 s hold), and the restored copy
   * processed them twice and out of order (retried REGs answered with other counts, 2026-12-05).
   */
  becomePrimary(opts: { holdDelivery?: boolean } = {}): void {
    this.stateGap = undefined;
    this.watchPrimaryGuest(false);
    this.deliveryEpoch++;
    this.mode = 'primary';
    if (opts.holdDelivery) this.deliveryPaused = true;
    else this.continueQueue();
    this.isProtected = false;
    this.withheld = undefined;
    this.protectionTimer ??= this.clock.setInterval(() => this.checkProtection(), 10);
  }

  /**
   * Backup (or stepping down from primary). Replies still waiting for an ACK are dropped, not
   * released: the partner may not hold their inputs, and a client that got no reply retries against
   * the new primary, which answers from its own state. Inputs held for a cut-over were neither
   * delivered nor replicated and no reply was released for them: they are dropped the same way.
   */
  becomeBackup(): void {
    this.watchPrimaryGuest(false);
    this.deliveryEpoch++;
    this.mode = 'backup';
    this.isProtected = false;
    this.withheld = undefined;
    if (this.heldOutputs.length || this.held.length) {
      this.o.log.warn({ replies: this.heldOutputs.length, inputs: this.held.length }, 'stepping down: unacknowledged replies and held inputs dropped (clients retry against the new primary)');
    }
    this.heldOutputs = [];
    // Held inputs were never delivered nor sent: their numbers are given again by the next primary.
    this.lastSeq -= this.held.length;
    this.held = [];
    this.holding = false;
  }

  /**
   * Switchover keeping both copies: the board that stepped down keeps its guest and follows the new
   * primary on the same channel, from where both stand (every input up to lastSeq delivered here).
   * `versionChange`: its guest runs another version than the new primary's (a guest upgrade).
   */
  followOnCurrentChannel(versionChange: boolean): boolean {
    if (this.mode !== 'backup' || !this.channel?.open) return false;
    this.queue = [];
    this.deliveredSeq = this.lastSeq;
    this.isProtected = true;
    this.versionChange = versionChange;
    this.resetDigests();
    this.watchPrimaryGuest(true);
    this.sendAck();
    return true;
  }

  /** The other half: the new primary protects with the partner's copy, without a clone. */
  protectOnCurrentChannel(): boolean {
    if (this.mode !== 'primary' || !this.channel?.open) return false;
    this.isProtected = true;
    this.logWhileUnprotected = false;
    this.unprotectedReason = undefined;
    this.withheld = undefined;
    this.ackedSeq = this.lastSeq;
    this.unackedSince = 0;
    this.resetDigests();
    return true;
  }

  /**
   * Primary, during a snapshot clone (src/replication/manager.ts): the copy holds the guest as it was
   * at the cut, and the guest goes on serving while it is made. Every input forwarded after the cut,
   * and the digest of every reply given meanwhile, are kept here for the new backup: protect() sends
   * them on its channel first, so its copy is handed exactly what the primary's was after the cut.
   */
  private backlog?: { cutSeq: number; max: number; inputs: SequencedInput[]; digests: Array<{ key: string; digest: Buffer }>; full: boolean };

  /** Primary: keep what follows `cutSeq` for the clone being made (at most `max` inputs). */
  startBacklog(cutSeq: number, max = 200_000): void {
    this.backlog = { cutSeq, max, inputs: [], digests: [], full: false };
  }

  /** The clone did not complete: nothing to hand over. */
  dropBacklog(): void {
    this.backlog = undefined;
  }

  /** Inputs kept for the clone being made since its cut; `full`: more came than it keeps (the clone must fail). */
  get backlogState(): { inputs: number; full: boolean } | undefined {
    return this.backlog && { inputs: this.backlog.inputs.length, full: this.backlog.full };
  }

  /** Primary: the backup's clone holds every input up to cutSeq; stream the rest to it on this channel. */
  protect(channel: MessageChannel, cutSeq: number): void {
    this.attachChannel(channel);
    this.protectedAt = this.clock.now();
    this.isProtected = true;
    this.logWhileUnprotected = false; // the backup logs from here (its own checkpoint)
    this.unprotectedReason = undefined;
    // Replies withheld since protection ended: the clone holds their inputs up to cutSeq (released
    // by the ACK below), the backlog the rest (released by the backup's ACKs).
    if (this.withheld) this.o.log.info({ replies: this.heldOutputs.length, cutSeq }, 'protected again: withheld replies are covered by the new clone');
    this.withheld = undefined;
    this.unackedSince = 0;
    // The clone holds every input up to cutSeq: replies to them need no further ACK (a re-clone
    // replaces a channel that may still have had some unacknowledged).
    this.onAck(cutSeq);
    this.ackedSeq = Math.max(this.ackedSeq, cutSeq);
    // A snapshot clone: what the guest was given after the cut (and the digests of what it answered),
    // in order, before anything forwarded from now on.
    const b = this.backlog;
    this.backlog = undefined;
    if (b && b.cutSeq === cutSeq && b.inputs.length) {
      for (const x of b.inputs) channel.send(T_INPUT, encodeInput(x));
      for (const d of b.digests) channel.send(T_DIGEST, encodeDigest(d.key, d.digest));
      if (this.ackedSeq < this.sentSeq) this.unackedSince = this.clock.now();
    }
  }

  /** Backup: inputs arrive on this channel; the clone holds everything up to cutSeq. */
  follow(channel: MessageChannel, cutSeq: number, authOpen: string[] = [], authAnswered?: string, authAnswer?: Buffer): void {
    this.stateGap = undefined; // the new clone's copy is the primary's state
    this.attachChannel(channel);
    this.deliveryEpoch++;
    this.lastSeq = cutSeq;
    this.deliveredSeq = cutSeq;
    this.queue = [];
    this.deliveryPaused = false;
    this.clock.clearTimeout(this.authHoldTimer);
    this.authHoldSince = 0;
    // The questions the source had open at the cut are open in the clone too (same memory).
    this.authOpen = new Set(authOpen);
    this.authAnswered = authAnswered;
    this.lastAnswer = this.savedAnswer(authAnswered, authAnswer);
    this.versionChange = false;
    this.isProtected = true;
    this.witnessQuietUntil = this.clock.now() + (this.o.cutoverGraceMs ?? 2000);
    this.watchPrimaryGuest(true);
    this.sendAck();
  }

  /** Backup: this copy runs another version than the primary's (a guest upgrade not committed yet). */
  get followsAnotherVersion(): boolean {
    return this.mode === 'backup' && this.versionChange;
  }

  get protectedNow(): boolean {
    return this.isProtected;
  }

  /**
   * Backup: why its input log (with its checkpoint) no longer rebuilds what its primary answered
   * clients from (the primary served past it unprotected, src/replication/manager.ts), until it
   * follows a new clone's stream or is primary itself.
   */
  stateGap?: string;

  /**
   * Primary: it releases replies its backup has not acknowledged (unprotected, not withholding
   * them): a backup's log then stops short of what clients were answered from.
   */
  get servingUnprotected(): boolean {
    return this.mode === 'primary' && !this.isProtected && !this.withheld;
  }

  // ------------------------------------------------------------------ primary: inputs
  submit(input: GuestInput): void {
    if (this.mode === 'backup') return; // a backup has no endpoint; nothing should get here
    // Capped before a sequence number is given: the partner never hears of a dropped request, so
    // both copies see the same stream. AUTH answers are never dropped (one per question the guest asked).
    const client = input.kind === 'request' ? this.clients.clientOf(input.clientPort) : undefined;
    if (input.kind === 'request' && this.screen) {
      const answer = this.screen(input, client);
      if (answer) {
        this.drops.quarantined++;
        this.out?.release({ kind: 'reply', clientPort: input.clientPort, payload: answer });
        return;
      }
    }
    if (input.kind === 'request' && !this.admit()) return;
    const seq = ++this.lastSeq;
    const s: SequencedInput = { seq, input, client };
    this.noteReceived(s);
    // Logged as soon as it has its number: held for a clone's cut-over, it is part of the stream already.
    if (this.mode === 'primary' && !this.isProtected && this.logWhileUnprotected) this.o.onLogged?.(s);
    if (this.holding) { this.held.push(s); return; }
    this.forward(s);
  }

  /**
   * Room for one more client request: the queue before the local guest, or the cut-over's hold,
   * below its cap. When not, the drop is counted (and journaled when drops begin).
   */
  admit(): boolean {
    const cap = this.o.maxQueuedInputs ?? 512;
    // Withheld replies wait for a verdict that may take seconds: their requests are capped as a queue.
    if (this.holding ? this.held.length < cap : this.queue.length < cap && (!this.withheld || this.heldOutputs.length < cap)) return true;
    if (this.holding) this.drops.heldFull++; else this.drops.queueFull++;
    this.noteDrop();
    return false;
  }

  /** A journal line when drops start, then at most one every 10 s while they go on (not one per packet). */
  private noteDrop(): void {
    const now = this.clock.now();
    if (this.lastDropLog && now - this.lastDropLog < 10000) return;
    const total = this.drops.queueFull + this.drops.heldFull;
    this.o.log.warn({ drops: { ...this.drops }, since: total - this.dropsAtLastLog, maxQueuedInputs: this.o.maxQueuedInputs ?? 512 }, 'input queue full: dropping new client requests');
    this.lastDropLog = now;
    this.dropsAtLastLog = total;
    this.emit('dropping', { ...this.drops });
  }

  /** Remembers a request for output commit; the oldest are forgotten past the count or age bound. */
  private rememberRequest(key: string, seq: number): void {
    const now = this.clock.now();
    const list = this.pendingReplies.get(key);
    if (list) list.push({ seq, at: now }); else this.pendingReplies.set(key, [{ seq, at: now }]);
    this.pendingCount++;
    const max = this.o.maxPendingReplies ?? 8192;
    const maxAge = this.o.pendingReplyMaxAgeMs ?? 10000;
    // Map order is first insertion of each key: its first entry is the oldest of that key, and
    // pruning from the front forgets the keys waiting longest. A forgotten request's reply, should
    // it still come, is committed at the last delivered input (a later point: safe, not early).
    for (const [k, l] of this.pendingReplies) {
      if (this.pendingCount <= max && now - l[0]!.at <= maxAge) break;
      this.pendingReplies.delete(k);
      this.pendingCount -= l.length;
      this.drops.pendingPruned += l.length;
    }
  }

  /** Per-hop timing: a request's receipt, or an AUTH answer to the question the guest asked. */
  private noteReceived(s: SequencedInput): void {
    const now = performance.now();
    if (s.input.kind === 'request') {
      this.receivedAt.set(s.seq, now);
      // Replies that never come (a dropped client, a stepped-down primary) must not grow the map.
      if (this.receivedAt.size > 16384) for (const k of this.receivedAt.keys()) { this.receivedAt.delete(k); if (this.receivedAt.size <= 8192) break; }
    } else if (s.input.kind === 'auth-reply') {
      const sub = authSubject('answer', s.input.payload);
      const asked = sub === undefined ? undefined : this.askedAt.get(sub);
      if (asked !== undefined) { this.hops.authAnswer.record(now - asked); this.askedAt.delete(sub!); }
    }
  }

  private hop(h: Hop, seq: number): void {
    const t = this.receivedAt.get(seq);
    if (t !== undefined) this.hops[h].record(performance.now() - t);
  }

  private forward(s: SequencedInput): void {
    const b = this.backlog;
    if (b && s.seq > b.cutSeq) {
      if (b.inputs.length < b.max) b.inputs.push(s); else b.full = true;
    }
    if (this.mode === 'primary' && this.isProtected && this.channel?.open) {
      this.channel.send(T_INPUT, encodeInput(s));
      this.hop('forwarded', s.seq);
      if (this.unackedSince === 0) this.unackedSince = this.clock.now();
    }
    if (s.input.kind === 'request') {
      this.clients.noteRequest(s.input.clientPort, s.input.payload);
      this.rememberRequest(replyKey(s.input.clientPort, s.input.payload), s.seq);
    }
    this.queue.push(s);
    this.pump();
  }

  /** Inputs sequenced here but not delivered to the local guest yet (a replay still waiting on AUTH). */
  get queuedLocally(): number {
    return this.queue.length;
  }

  /** Clone cut-over: queue inputs instead of delivering them (both copies must hold the same prefix). */
  hold(): void {
    this.holding = true;
  }

  /** End of the hold: deliver (and, if protected now, replicate) what was queued, in order. */
  release(): void {
    this.holding = false;
    const q = this.held;
    this.held = [];
    for (const s of q) this.forward(s);
  }

  get heldCount(): number {
    return this.held.length;
  }

  // ------------------------------------------------------------------ outputs of the local guest
  onGuestOutput(output: GuestOutput): void {
    if (output.kind === 'reply') this.frontier.replied(replyKey(output.clientPort, output.payload));
    if (output.kind === 'reply' && (this.authOpen.size || this.authAnswered || this.lastAnswer)) this.noteOutcome(output);
    if (this.mode === 'backup') { this.onBackupOutput(output); return; }
    if (output.kind === 'auth-query') {
      const sub = authSubject('question', output.payload);
      if (sub !== undefined) {
        this.askedAt.set(sub, performance.now());
        // Questions never answered (AUTH down) must not grow the map: the oldest are forgotten.
        if (this.askedAt.size > 4096) for (const k of this.askedAt.keys()) { this.askedAt.delete(k); if (this.askedAt.size <= 2048) break; }
      }
      this.noteQuestion(output);
      this.out?.release(output);
      return;
    }
    const key = replyKey(output.clientPort, output.payload);
    const list = this.pendingReplies.get(key);
    const seq = list?.shift()?.seq;
    if (list) this.pendingCount--;
    if (list && list.length === 0) this.pendingReplies.delete(key);
    const digest = this.mode === 'primary' && ((this.isProtected && this.channel?.open) || this.backlog) ? replyDigest(output.payload) : undefined;
    if (digest && this.isProtected && this.channel?.open) this.channel.send(T_DIGEST, encodeDigest(key, digest));
    if (digest && this.backlog && this.backlog.digests.length < this.backlog.max) this.backlog.digests.push({ key, digest });
    // Output commit: the reply depends on its request and everything before it (cumulative ACK),
    // and on any AUTH answer the guest had been given (a REG's outcome is decided on an answer
    // sequenced after the request). Requests after it are not processed yet (the guest works in
    // order), so they need not be waited for: that would cost a channel round trip per reply.
    const commitAt = Math.max(seq ?? this.deliveredSeq, this.authDeliveredSeq);
    if (seq !== undefined) this.hop('replied', seq);
    if (this.mode === 'primary' && (this.isProtected || this.withheld) && commitAt > this.ackedSeq) {
      this.heldOutputs.push({ seq: commitAt, output, inputSeq: seq });
      return;
    }
    if (seq !== undefined && this.mode === 'primary' && this.isProtected) this.hop('covered', seq);
    this.releaseOutput(output, seq);
  }

  /** To the client; the end of the request's timing. */
  private releaseOutput(output: GuestOutput, inputSeq: number | undefined): void {
    this.out?.release(output);
    if (inputSeq === undefined) return;
    this.hop('released', inputSeq);
    this.receivedAt.delete(inputSeq);
  }

  /**
   * The last input this board put on the stream (primary: forwarded, and so sent while protected;
   * backup: received). The partner cannot hold anything beyond it: an ACK above it is refused.
   */
  get sentSeq(): number {
    return this.lastSeq - this.held.length;
  }

  private onAck(seq: number): void {
    if (seq <= this.ackedSeq) return;
    this.ackedSeq = seq;
    this.unackedSince = this.ackedSeq >= this.lastSeq - this.held.length ? 0 : this.clock.now();
    if (!this.heldOutputs.length) return;
    const still: typeof this.heldOutputs = [];
    for (const h of this.heldOutputs) {
      if (h.seq > seq) { still.push(h); continue; }
      if (h.inputSeq !== undefined) this.hop('covered', h.inputSeq);
      this.releaseOutput(h.output, h.inputSeq);
    }
    this.heldOutputs = still;
  }

  private checkProtection(): void {
    if (this.mode === 'primary' && this.withheld) { this.checkWithheld(); return; }
    if (this.mode !== 'primary' || !this.isProtected) return;
    const timeout = this.o.protectionTimeoutMs ?? 500;
    const now = this.clock.now();
    if (this.unackedSince && now - this.unackedSince > timeout && now - this.protectedAt >= (this.o.cutoverGraceMs ?? 2000)) {
      this.unprotect(`backup did not acknowledge inputs for ${timeout} ms`);
    }
  }

  /**
   * Primary: stop waiting for the backup (it is gone or stuck). Releases held replies, unless
   * serveAlone says not yet: then they stay withheld until it says yes. `partnerDown`: the backup was
   * fenced (it cannot serve): released at once, also replies withheld so far.
   */
  unprotect(reason: string, o: { partnerDown?: boolean } = {}): void {
    if (this.withheld && o.partnerDown) { this.endWithheld(reason); return; }
    if (!this.isProtected) return;
    this.isProtected = false;
    this.unprotectedReason = reason;
    this.dropChannel(reason);
    const now = this.clock.now();
    const waiting = o.partnerDown ? undefined : this.serveAlone?.(0);
    if (waiting !== undefined) {
      this.withheld = { reason, since: now, sinceWall: Date.now(), waiting };
      this.o.log.warn({ reason, waiting, replies: this.heldOutputs.length }, 'replication stopped: replies WITHHELD until this board may serve alone');
      this.emit('withheld', reason, waiting);
      return;
    }
    this.releaseAllHeld(reason);
    this.o.log.warn({ reason }, 'UNPROTECTED: serving without a backup in sync');
    this.emit('unprotected', reason);
  }

  /** Primary, withholding: asks serveAlone again (every 10 ms); its yes ends the wait. */
  private checkWithheld(): void {
    const w = this.withheld!;
    const waiting = this.serveAlone?.(this.clock.now() - w.since);
    if (waiting === undefined) { this.endWithheld(`${w.reason}; withheld ${Math.round(this.clock.now() - w.since)} ms until this board could serve alone`); return; }
    if (waiting !== w.waiting) {
      w.waiting = waiting;
      this.emit('withheld', w.reason, waiting);
    }
  }

  /** The wait is over: the withheld replies go out, and the board serves unprotected. */
  private endWithheld(reason: string): void {
    this.withheld = undefined;
    this.unprotectedReason = reason;
    this.releaseAllHeld(reason);
    this.o.log.warn({ reason }, 'UNPROTECTED: serving without a backup in sync');
    this.emit('unprotected', reason);
  }

  /** Leaving the primary role's output commit while withholding: the replies are dropped (clients retry). */
  private dropWithheld(why: string): void {
    if (!this.withheld) return;
    this.o.log.warn({ replies: this.heldOutputs.length, why }, 'withheld replies dropped (clients retry)');
    this.withheld = undefined;
    this.heldOutputs = [];
  }

  /** Primary: replies are withheld (protection ended, serving alone not yet allowed). */
  get withholding(): boolean {
    return this.withheld !== undefined;
  }

  private releaseAllHeld(_reason: string): void {
    for (const h of this.heldOutputs) this.releaseOutput(h.output, h.inputSeq);
    this.heldOutputs = [];
  }

  // ------------------------------------------------------------------ backup side
  private onInputMessage(s: SequencedInput): void {
    if (this.mode !== 'backup') return;
    if (s.seq !== this.lastSeq + 1) {
      this.rejections.reject('replication', 'out-of-order', `INPUT seq ${s.seq}, expected ${this.lastSeq + 1}`);
      this.o.log.error({ expected: this.lastSeq + 1, got: s.seq }, 'gap in the input stream: asking for a re-clone');
      this.sendControl({ type: 'reclone', reason: `input stream gap: expected ${this.lastSeq + 1}, got ${s.seq}` });
      this.dropChannel('input stream gap');
      return;
    }
    this.lastSeq = s.seq;
    if (s.input.kind === 'request' && s.client) this.clients.assign(s.input.clientPort, s.client);
    if (s.input.kind === 'request') this.clients.noteRequest(s.input.clientPort, s.input.payload);
    if (s.input.kind === 'auth-reply' && this.witnessOn && !this.versionChange) {
      const sub = authSubject('answer', s.input.payload);
      if (sub) this.witness!.onStreamAnswer(sub);
    }
    const receivedAt = performance.now();
    this.o.onLogged?.(s);
    this.hops.backupLogged.record(performance.now() - receivedAt);
    if (!this.oldestUnackedAt) this.oldestUnackedAt = receivedAt;
    if (!this.ackScheduled) {
      this.ackScheduled = true;
      setImmediate(() => { this.ackScheduled = false; this.sendAck(); });
    }
    this.queue.push(s);
    this.pump();
  }

  private sendAck(): void {
    // Nothing is acknowledged before it is written: the ACK lets the primary release replies.
    this.o.flushLog?.();
    if (this.channel?.open) {
      this.channel.send(T_ACK, encodeAck(this.lastSeq));
      if (this.oldestUnackedAt) this.hops.backupAcked.record(performance.now() - this.oldestUnackedAt);
    }
    this.oldestUnackedAt = 0;
  }

  /**
   * Delivers queued inputs in order; an AUTH answer waits until the clone has asked for it, and a
   * request waits while the guest has a full window of unprocessed ones (GuestPort flow control).
   * Not while the guest waits for an AUTH answer: it processes nothing until then, and the answer
   * is further down this queue.
   */
  private pump(): void {
    while (this.queue.length && !this.deliveryPaused) {
      const s = this.queue[0]!;
      if (s.input.kind === 'request' && this.o.guest.hasRoom && !this.o.guest.hasRoom(this.authOpen.size > 0)) {
        if (this.answerAhead()) continue;
        if (!this.awaitingRoom) {
          this.awaitingRoom = true;
          this.o.guest.whenRoom!(() => { this.awaitingRoom = false; this.pump(); });
        }
        return;
      }
      if (s.input.kind === 'auth-reply') {
        const sub = authSubject('answer', s.input.payload);
        // The guest discards an answer to a question it has not asked yet: wait for its AUTHQ.
        // Not while it waits for the answer to another question: it asks one at a time, in the
        // primary's order, so an answer that comes before the one it waits for is a late duplicate
        // the primary's guest read and discarded the same way (holding it would stall the stream
        // for authHoldMs while the guest's own 5 s AUTH timeout runs).
        if (sub && !this.authOpen.has(sub) && this.authOpen.size === 0 && (this.mode === 'backup' || s.seq <= this.replayUntil)) {
          // The guest asks once it reaches the REG this answers, which may sit behind hundreds of
          // requests it was handed: hold while it works through them, and time the hold from when
          // it is idle. Timed from here, the 2 s ran out first under load, the answer went over
          // unasked, the guest discarded it and answered ERR AUTHUNAVAIL where the primary had
          // registered (divergences after clones; after a restore, registrations lost).
          // Counted once per answer held, whichever way it waits.
          if (this.heldAnswerSeq !== s.seq) { this.heldAnswerSeq = s.seq; this.authHolds++; }
          if (this.o.guest.working?.()) {
            this.authHoldSince = 0;
            this.clock.clearTimeout(this.authHoldTimer);
            this.authHoldTimer = this.clock.setTimeout(() => this.pump(), 20);
            return;
          }
          if (!this.authHoldSince) this.authHoldSince = this.clock.now();
          const wait = (this.o.authHoldMs ?? 2000) - (this.clock.now() - this.authHoldSince);
          if (wait > 0) {
            this.clock.clearTimeout(this.authHoldTimer);
            this.authHoldTimer = this.clock.setTimeout(() => this.pump(), wait);
            return;
          }
          this.o.log.warn({ sub, seq: s.seq }, 'clone never asked for this AUTH answer: handing it over anyway');
        }
        this.authHoldSince = 0;
        this.clock.clearTimeout(this.authHoldTimer);
        if (sub && this.authOpen.delete(sub)) this.authAnswered = sub;
        if (sub) this.lastAnswer = { sub, input: s.input, at: this.clock.now() };
      }
      this.queue.shift();
      if (this.witnessOn && this.mode === 'backup' && s.input.kind === 'request' && !this.versionChange) this.witness!.onStreamRequest(replyKey(s.input.clientPort, s.input.payload));
      this.o.guest.deliver(s.input);
      if (s.input.kind === 'request') this.frontier.delivered(s.seq, replyKey(s.input.clientPort, s.input.payload));
      if (this.mode === 'primary') this.hop('delivered', s.seq);
      this.deliveredSeq = s.seq;
      if (s.input.kind === 'auth-reply') this.authDeliveredSeq = s.seq;
    }
  }

  /**
   * A replayed log (no backup following): the guest is blocked on an AUTH question whose answer sits
   * further down the queue, behind more requests than a blocked guest may be handed
   * (GUEST_BLOCKED_LIMIT). Nothing could move: the requests wait for room, the guest reads none
   * until the answer, the answer waits behind them. It is handed over now, out of the queue: a
   * blocked guest reads only its AUTH socket, so it applies the answer at the same point of its
   * work either way (PROTOCOL.md §5). Waiting instead cost the guest's own 5 s AUTH timeout per
   * such REG, and ERR AUTHUNAVAIL where the primary had registered: a restored copy that then
   * asked about every later REG of that subscriber, 5 s each, and never caught up (CI, 2026-12-05,
   * seed 367318: a promotion's replay stalled 947 inputs short of the end).
   * deliveredSeq is not moved (it still says what was handed in order); the answer is gone from
   * the queue, so it is not handed twice. Returns whether one was handed over.
   */
  private answerAhead(): boolean {
    if (!this.authOpen.size || this.isProtected || this.mode === 'backup') return false;
    const i = this.queue.findIndex((q, k) => k > 0 && q.seq <= this.replayUntil && q.input.kind === 'auth-reply'
      && this.authOpen.has(authSubject('answer', q.input.payload) ?? ''));
    if (i < 0) return false;
    const [s] = this.queue.splice(i, 1);
    const sub = authSubject('answer', s!.input.payload)!;
    this.authOpen.delete(sub);
    this.authAnswered = sub;
    this.authHoldSince = 0;
    this.clock.clearTimeout(this.authHoldTimer);
    this.answersAhead++;
    this.lastAnswer = { sub, input: s!.input, at: this.clock.now() };
    this.o.log.info({ sub, seq: s!.seq, behind: i }, 'AUTH answer handed to the blocked guest ahead of the requests queued before it');
    this.o.guest.deliver(s!.input);
    this.authDeliveredSeq = Math.max(this.authDeliveredSeq, s!.seq);
    return true;
  }

  /** The local guest is about to be replaced (a restore): nothing queued reaches it until replay() hands it the log. */
  holdDelivery(): void {
    this.deliveryEpoch++;
    this.deliveryPaused = true;
  }

  /**
   * Backup: inputs keep arriving, being logged and acknowledged, but wait before the clone (a
   * checkpoint). Returns a token for resumeDelivery: a pause that someone else's hold has since
   * replaced is not ended by it.
   */
  pauseDelivery(): number {
    this.deliveryPaused = true;
    this.witnessQuietUntil = Infinity;
    return ++this.deliveryEpoch;
  }

  /**
   * Ends a pause. With the token pauseDelivery() gave: only if nothing has held, paused or replaced
   * the guest's delivery since. A checkpoint that failed because a promotion's restore stopped its
   * copy resumed delivery in the middle of that restore: the inputs queued for the lost copy (a poison
   * input's resends among them) reached the restored QEMU ahead of its replay, and it hung before
   * the suspects (poison.test, 2026-12-05). The same held for a clone target's pause.
   */
  resumeDelivery(token?: number): void {
    if (token !== undefined && token !== this.deliveryEpoch) return;
    this.deliveryPaused = false;
    this.witnessQuietUntil = this.clock.now() + (this.o.cutoverGraceMs ?? 2000);
    this.armWitness();
    this.pump();
  }

  /**
   * Restored from a checkpoint: the guest holds inputs up to fromSeq and has the AUTH questions
   * `authOpen` open; the logged rest is delivered in order, AUTH answers after the guest's questions.
   */
  replay(fromSeq: number, inputs: SequencedInput[], authOpen: string[] = [], authAnswered?: string, authAnswer?: Buffer): void {
    // Every input received keeps its number even if it is not replayed (an AUTH answer the saved state already read).
    const received = this.lastSeq;
    this.lastSeq = fromSeq;
    this.deliveredSeq = fromSeq;
    this.queue = [];
    this.authOpen = new Set(authOpen);
    this.authAnswered = authAnswered;
    // The answer the saved copy had been handed for `authAnswered`: given again if it asks for it.
    this.lastAnswer = this.savedAnswer(authAnswered, authAnswer);
    // A hold of the queue before (an answer the old copy never asked for) is not the replay's: its
    // start time left over made the replay hand its first AUTH answer over at once, unasked.
    this.clock.clearTimeout(this.authHoldTimer);
    this.authHoldSince = 0;
    for (const s of inputs) {
      if (s.input.kind === 'request' && s.client) this.clients.assign(s.input.clientPort, s.client);
      if (s.input.kind === 'request') this.clients.noteRequest(s.input.clientPort, s.input.payload);
      this.queue.push(s);
      this.lastSeq = s.seq;
    }
    this.lastSeq = Math.max(this.lastSeq, received);
    this.frontier.reset(fromSeq);
    this.continueQueue();
  }

  /**
   * More of a replay (after replay()): logged inputs handed over in order after what is queued. A
   * recovery from a poison input gives the restored copy the log in parts (src/replication/poison.ts).
   */
  appendReplay(inputs: SequencedInput[]): void {
    for (const s of inputs) {
      if (s.input.kind === 'request' && s.client) this.clients.assign(s.input.clientPort, s.client);
      if (s.input.kind === 'request') this.clients.noteRequest(s.input.clientPort, s.input.payload);
      this.queue.push(s);
      this.lastSeq = Math.max(this.lastSeq, s.seq);
    }
    this.deliveryPaused = false;
    this.replayUntil = Math.max(this.replayUntil, this.queue.at(-1)?.seq ?? 0);
    this.pump();
  }

  /**
   * The local guest starts afresh from its saved state (promoted with neither a clone nor a
   * checkpoint): inputs queued for the lost copy mean nothing to it.
   */
  discardQueue(): void {
    if (this.queue.length) this.o.log.warn({ inputs: this.queue.length }, 'inputs queued for a lost guest copy discarded');
    this.queue = [];
    this.authOpen.clear();
    this.authAnswered = undefined;
    this.lastAnswer = undefined;
    this.deliveredSeq = this.lastSeq;
    this.frontier.reset(this.lastSeq);
  }

  /**
   * Backup, guest upgrade: the new version's guest holds the service requests before fromSeq
   * (its saved state). It gets the requests of `logged` (the inputs from fromSeq up to where
   * delivery was paused, from the input log) and then what was queued since, in order, under
   * connection tracking; its replies are compared with the primary's but differences are expected
   * (a declared version change). Returns how many logged inputs it was given.
   *
   * Only the AUTH answer of the REG the old guest was blocked on is replayed (inputsAfterSave).
   */
  restartDelivery(fromSeq: number, logged: SequencedInput[]): number {
    const pausedAt = this.deliveredSeq;
    if (logged.length !== pausedAt - fromSeq + 1 || logged.some((s, i) => s.seq !== fromSeq + i)) {
      throw new Error(`input log does not hold inputs ${fromSeq}..${pausedAt} contiguously`);
    }
    const replay = inputsAfterSave(logged, pausedAt);
    if (replay.length !== logged.length) {
      this.o.log.info({ fromSeq, pausedAt, dropped: logged.length - replay.length }, 'guest upgrade: AUTH answers the old guest already read are not replayed');
    }
    this.queue = [...replay, ...this.queue];
    this.deliveredSeq = fromSeq - 1;
    this.authOpen.clear();
    this.authAnswered = undefined;
    this.lastAnswer = undefined;
    this.clock.clearTimeout(this.authHoldTimer);
    this.authHoldSince = 0;
    this.versionChange = true;
    this.resetDigests();
    this.witness?.reset(); // another version: its replies are not the primary's (resumed by the next follow)
    this.resumeDelivery();
    return replay.length;
  }

  /** The AUTH questions the local guest has open (as connection tracking sees them). */
  get openQuestions(): string[] {
    return [...this.authOpen];
  }

  /** The question whose answer the local guest was handed and may not have read yet (until its REG's outcome). */
  get answeredQuestion(): string | undefined {
    return this.authAnswered;
  }

  /** The answer to answeredQuestion the guest was handed (its bytes), if this side still has it. */
  get answeredQuestionAnswer(): Buffer | undefined {
    return this.authAnswered ? this.answerHandedFor(this.authAnswered) : undefined;
  }

  /** The bytes of the AUTH answer last handed to the guest, if it answers `sub`'s question. */
  answerHandedFor(sub: string): Buffer | undefined {
    return this.lastAnswer?.sub === sub ? this.lastAnswer.input.payload : undefined;
  }

  /** The answer a copy was handed for `authAnswered` (a cut's, a checkpoint's), kept to be handed again if it asks. */
  private savedAnswer(authAnswered: string | undefined, authAnswer: Buffer | undefined): { sub: string; input: GuestInput; at: number } | undefined {
    return authAnswered && authAnswer && authSubject('answer', authAnswer) === authAnswered
      ? { sub: authAnswered, input: { kind: 'auth-reply', payload: authAnswer }, at: -Infinity } : undefined;
  }

  /** Promoted or restored: what is queued still reaches the guest in order, under connection tracking. */
  private continueQueue(): void {
    this.deliveryEpoch++;
    this.deliveryPaused = false;
    this.replayUntil = this.lastSeq;
    this.pump();
  }

  /**
   * The guest asks one AUTH question at a time and blocks until it is answered or given up: a
   * question about another subscriber means the one before is over, whatever this side saw of it.
   * A question left open by mistake (its answer and outcome missed) otherwise stayed open for good,
   * and with one open every answer was handed over unasked: the guest discards an answer that comes
   * before its question, waits 5 s and answers ERR AUTHUNAVAIL (a replay from a checkpoint lost
   * acknowledged registrations that way, 2026-12-05).
   */
  private noteQuestion(output: GuestOutput): void {
    const sub = authSubject('question', output.payload);
    if (!sub) return;
    if (this.rehandAnswer(sub)) return;
    // The guest re-sends its question every 500 ms until it reads the answer: one that crossed the
    // answer reopened the question until the REG's outcome, and every AUTH answer in that window went
    // over as a "late duplicate" before the guest asked for it; the guest discarded them (ERR
    // AUTHUNAVAIL on the backup only: CI, 2026-12-06, right after a snapshot clone's cut-over).
    if (sub === this.authAnswered) {
      // Normally a retransmission that crossed its answer. Logged once per subscriber: a guest that
      // keeps asking for an answer this side holds no bytes of (a clone's or a checkpoint's) waits
      // for its own 5 s and answers ERR AUTHUNAVAIL, and this line says why.
      if (this.quietRetransmission !== sub) {
        this.quietRetransmission = sub;
        this.o.log.info({ sub, mode: this.mode, protected: this.isProtected, answerHeld: this.lastAnswer?.sub === sub }, 'AUTH question about the subscriber just answered: taken for a retransmission');
      }
      return;
    }
    this.authAnswered = undefined;
    if (this.authOpen.size && !this.authOpen.has(sub)) this.authOpen.clear();
    this.authOpen.add(sub);
    this.pump();
  }

  /**
   * The guest asks again about the subscriber whose answer it was handed AUTH_REHAND_MS or more ago,
   * with no outcome of its REG since: that answer never reached its question. The guest drops an
   * answer that comes before its question (it empties its AUTH socket when it starts asking), and a
   * frame can be lost with a copy (a restore starts from an image taken with the answer handed but
   * not read). Neither the AUTH service (a replay's fresh answer queues behind the rest of the log)
   * nor the stream (a backup's answer came once) gives it again, and the guest gave up after its
   * own 5 s: ERR AUTHUNAVAIL where the primary registered, and on a replay that lost acknowledged
   * registrations while the window it was counted to have worked through was written off (CI,
   * 2026-12-07). It is handed the same logged answer again: the guest acts on the first one it
   * reads and drops the others, so the copy decides as the primary's did. Not on a protected
   * primary (its question goes to the AUTH service, whose answer it is handed at once) and not
   * while delivery is paused (a cut or a checkpoint fixes what the copy holds; it asks again).
   */
  private rehandAnswer(sub: string): boolean {
    const a = this.lastAnswer;
    if (!a || a.sub !== sub || this.deliveryPaused) return false;
    if (this.mode === 'primary' ? this.isProtected : this.mode !== 'backup') return false;
    const now = this.clock.now();
    const ago = now - a.at;
    if (ago < AUTH_REHAND_MS) return false;
    a.at = now;
    this.answersRehanded++;
    this.authOpen.delete(sub);
    this.authAnswered = sub;
    this.o.log.warn({ sub, handedMsAgo: Number.isFinite(ago) ? Math.round(ago) : null }, 'the guest asked again for an AUTH answer it was handed: handing it again');
    this.o.guest.deliver(a.input);
    return true;
  }

  /** A REG answered (registered, denied, or given up after the guest's 5 s): its question is closed. */
  private noteOutcome(output: GuestOutput): void {
    const sub = registrationSubject('outcome', output.payload);
    if (sub && sub === this.lastAnswer?.sub) this.lastAnswer = undefined;
    if (sub && sub === this.authAnswered) this.authAnswered = undefined;
    if (sub && this.authOpen.delete(sub)) this.pump();
  }

  private onBackupOutput(output: GuestOutput): void {
    if (output.kind === 'auth-query') {
      const sub = authSubject('question', output.payload);
      if (sub && !this.versionChange && this.witnessOn) {
        this.witness!.onLocalQuestion(sub);
        this.armWitness();
      }
      this.noteQuestion(output);
      return;
    }
    const key = replyKey(output.clientPort, output.payload);
    if (!this.versionChange && this.witnessOn) {
      this.witness!.onLocalReply(key);
      this.armWitness();
    }
    this.localReplies.set(key, output.payload.toString('latin1').trim());
    if (this.localReplies.size > 1000) this.localReplies.delete(this.localReplies.keys().next().value!);
    this.compare(key, replyDigest(output.payload), this.localDigests, this.primaryDigests);
  }

  private onDigest(key: string, digest: Buffer): void {
    if (this.mode !== 'backup') return;
    if (this.witnessOn) this.witness!.onPrimaryDigest(key);
    this.compare(key, digest, this.primaryDigests, this.localDigests);
  }

  private compare(key: string, mine: Buffer, mineMap: Map<string, Buffer[]>, otherMap: Map<string, Buffer[]>): void {
    const other = otherMap.get(key);
    const theirs = other?.shift();
    if (other && other.length === 0) otherMap.delete(key);
    if (!theirs) {
      const l = mineMap.get(key);
      if (l) l.push(mine); else mineMap.set(key, [mine]);
      if (mineMap.size > MAX_DIGESTS) mineMap.delete(mineMap.keys().next().value!);
      return;
    }
    this.digestsCompared++;
    if (!theirs.equals(mine) && this.versionChange) {
      this.versionDifferences++;
    } else if (!theirs.equals(mine)) {
      this.divergences++;
      // The first of a burst, then at most one line a second (a diverged copy may differ on every reply).
      const now = this.clock.now();
      if (now - this.divergenceLoggedAt >= 1000) {
        this.divergenceLoggedAt = now;
        this.o.log.error({ key, backupReply: this.localReplies.get(key), divergences: this.divergences }, 'DIVERGENCE: the backup answered differently from the primary');
      }
      this.emit('divergence', key);
    }
  }

  /** Forgets digests (after a re-clone both copies start equal again). */
  resetDigests(): void {
    this.primaryDigests.clear();
    this.localDigests.clear();
    this.localReplies.clear();
  }

  // ------------------------------------------------------------------ channel
  private attachChannel(channel: MessageChannel): void {
    const old = this.channel;
    // Replace first: closing the old channel emits 'close' at once, which must not read as losing the partner.
    this.channel = channel;
    if (old && old !== channel) old.close();
    channel.on('message', (type, body) => {
      if (this.channel !== channel) return;
      if (!REPLICATION_TYPES.has(type)) { this.refuse('unknown-type', `message type ${type} (the replication channel carries 1 INPUT, 2 ACK, 3 DIGEST, 4 CONTROL)`); return; }
      if (type === T_CONTROL) return; // the clone manager's (manager.ts)
      let m: { input: SequencedInput } | { ack: number } | { digest: { key: string; digest: Buffer } };
      try {
        m = type === T_INPUT ? { input: decodeInput(body) } : type === T_ACK ? { ack: decodeAck(body) } : { digest: decodeDigest(body) };
      } catch (e) {
        this.refuse('malformed', (e as Error).message);
        return;
      }
      // An ACK of an input never sent would release replies whose inputs the backup does not hold.
      if ('ack' in m && m.ack > this.sentSeq) { this.refuse('ack-beyond', `ACK ${m.ack}, the last input sent is ${this.sentSeq}`); return; }
      try {
        if ('input' in m) this.onInputMessage(m.input);
        else if ('ack' in m) this.onAck(m.ack);
        else this.onDigest(m.digest.key, m.digest.digest);
      } catch (e) {
        this.o.log.error({ err: (e as Error).message, type }, 'replication message could not be handled: dropping the channel');
        this.dropChannel('message not handled');
      }
    });
    channel.on('close', () => {
      if (this.channel !== channel) return;
      this.channel = undefined;
      if (this.mode === 'primary') this.unprotect('replication channel closed');
      else { this.isProtected = false; this.watchPrimaryGuest(false); }
    });
  }

  sendControl(m: ControlMessage): void {
    this.channel?.send(T_CONTROL, encodeControl(m));
  }

  /**
   * A message that breaks the protocol: counted and journaled, and the channel dropped as if it had
   * closed (a primary serves unprotected and re-clones, a backup waits for that clone). Nothing in
   * the message is acted on.
   */
  private refuse(reason: RejectionReason, detail: string): void {
    this.rejections.reject('replication', reason, detail);
    if (this.mode === 'primary' && this.isProtected) { this.unprotect(`refused a replication message from the backup (${reason}): ${detail}`); return; }
    this.dropChannel(`refused a message (${reason})`);
    if (this.mode === 'backup') { this.isProtected = false; this.watchPrimaryGuest(false); }
  }

  private dropChannel(_reason: string): void {
    const c = this.channel;
    this.channel = undefined;
    c?.close();
  }

  status(): ReplicationStatus {
    return {
      mode: this.mode,
      protected: this.isProtected,
      lastSeq: this.lastSeq,
      ackedSeq: this.ackedSeq,
      deliveredSeq: this.deliveredSeq,
      lagInputs: !this.isProtected ? null : this.mode === 'primary' ? Math.max(0, this.lastSeq - this.ackedSeq) : Math.max(0, this.lastSeq - this.deliveredSeq),
      heldReplies: this.heldOutputs.length,
      heldInputs: this.held.length + this.queue.length,
      holding: this.holding,
      divergences: this.divergences,
      digestsCompared: this.digestsCompared,
      versionDifferences: this.versionDifferences,
      unprotectedReason: this.unprotectedReason,
      withheld: this.withheld ? { reason: this.withheld.reason, since: new Date(this.withheld.sinceWall).toISOString(), waiting: this.withheld.waiting } : null,
      authHolds: this.authHolds, answersAhead: this.answersAhead, answersRehanded: this.answersRehanded,
      delivery: {
        paused: this.deliveryPaused, awaitingRoom: this.awaitingRoom, authOpen: [...this.authOpen].slice(0, 10), queued: this.queue.length,
        head: this.queue[0] ? `${this.queue[0].input.kind} ${this.queue[0].seq}` : null,
      },
      clients: this.clients.size,
      pendingReplies: this.pendingCount,
      drops: { ...this.drops },
      witness: this.mode === 'backup' ? this.witness?.status() : undefined,
      hops: Object.fromEntries(HOPS.map((h) => [h, this.hops[h].snapshot()])) as Record<Hop, HistogramSnapshot>,
    };
  }

  close(): void {
    this.clock.clearInterval(this.protectionTimer);
    this.clock.clearTimeout(this.witnessTimer);
    this.clock.clearTimeout(this.authHoldTimer);
    this.dropChannel('closing');
  }
}
