/**
 * Keeping the pair protected: the primary clones to a live backup that holds no clone (protect),
 * clones again over a copy that diverged or lost inputs (re-clone); the backup asks for a re-clone
 * once per burst of divergences, watches its own copy for lost inputs, and takes a checkpoint as
 * soon as a clone runs on it and then every CHECKPOINT_INTERVAL_MS while it follows the primary.
 *
 * Decides only from the role the HA machine gives and the replicator's state; never changes the
 * replicator's mode (src/pair/controller.ts does).
 */
import { InputLossWatch } from '../replication/loss-watch.js';
import type { PairParts } from './parts.js';

/** A backup in sync takes a checkpoint this often. */
const CHECKPOINT_INTERVAL_MS = 60000;
/**
 * A backup takes a checkpoint this soon after a clone starts running on it. A re-clone stops the
 * backup's copy before the new one arrives; if the primary dies in that window, the checkpoint and
 * the input log (kept through the re-clone) are the pair's state. Without one, a promotion there
 * found nothing and booted the state disk (STATE LOST, seen in 20-fault runs on 2026-12-05:
 * a re-clone asked 3.5 s after a clone, the primary killed 3.6 s later, no checkpoint yet).
 */
const CHECKPOINT_AFTER_CLONE_MS = 300;
/** Attempts of that checkpoint (one every CHECKPOINT_AFTER_CLONE_MS while the backup is not yet protected or busy). */
const CHECKPOINT_AFTER_CLONE_TRIES = 50;
/** Wait before retrying a failed clone. */
const CLONE_BACKOFF_MS = 5000;
/** How often the guest's processed-request count is compared with what it was handed (loss-watch.ts). */
const LOSS_CHECK_MS = 1000;
/** A backup that asked for a re-clone asks again only if none has started after this long. */
const RECLONE_ASK_MS = 10000;
/** How often the primary looks for a backup to protect. */
const PROTECT_CHECK_MS = 500;

/** At most one journal line a second for divergences after the first of a burst. */
const DIVERGENCE_LINE_MS = 1000;

export class Protection {
  readonly lossWatch?: InputLossWatch;
  private nextCloneAt = 0;
  private recloneAskedAt = 0;
  private timers: NodeJS.Timeout[] = [];
  private afterCloneTimer?: NodeJS.Timeout;
  /** Checkpoints taken because a clone arrived (status, tests). */
  afterCloneCheckpoints = 0;
  private stopped = false;
  /** The divergence journal's rate limit: when it last wrote a line, and the divergences since. */
  private divergenceLineAt = 0;
  private divergencesUnlisted = 0;
  /**
   * Backup: its running copy is known to differ from the primary's (a reply that differed, or inputs
   * it lost), since when and why; cleared when a new clone starts arriving. A promotion in that
   * state rebuilds the copy from the checkpoint taken before it (src/pair/controller.ts), and no
   * checkpoint is taken of it meanwhile. Serving it as it was answered retried requests differently
   * from the old primary (CI, 2026-12-06: "OK REG … 1489" then "… 1488").
   */
  private diverged?: { at: number; why: string };

  constructor(
    private readonly p: PairParts,
    /** True while the watch must stay quiet (a guest upgrade, the controller stopping). */
    private readonly quiet: () => boolean,
    /** True while the copy is being rebuilt from the checkpoint (no clone of a half-replayed copy). */
    private readonly rebuilding: () => boolean = () => false,
  ) {
    const { host, clones } = p;
    if (!clones) return;
    // A primary watches its own copy protected or not: its count is what a clone inherits, and an
    // inflated count also stalls the flow control of a restored copy serving alone. Not while that
    // copy is being rebuilt: a replay may hold the guest on an AUTH answer for seconds, and a
    // "loss" seen then rebased the count under the replay's flow control (a restored copy that
    // then dropped requests: calls given ids twice, CI 2026-12-07). The watch looks at the copy again
    // once the recovery is over (its replay processed).
    const w = new InputLossWatch(host.supervisor, () => (host.replicator.mode === 'primary' || (host.replicator.mode === 'backup' && host.replicator.protectedNow))
      && !clones.cloneInProgress && !this.quiet() && !this.rebuilding());
    this.lossWatch = w;
    clones.on('cloned', () => w.reset());
    if (p.checkpoints) p.checkpoints.refusal = () => (this.diverged ? `it differs from the primary's since ${new Date(this.diverged.at).toISOString()} (${this.diverged.why})` : undefined);
    clones.on('clone-target', (phase) => {
      w.reset();
      if (phase === 'started') this.recloneAskedAt = 0;
      if (phase === 'started' || phase === 'running') this.diverged = undefined; // replaced: the new copy starts equal
      clearTimeout(this.afterCloneTimer);
      if (phase === 'running') this.checkpointAfterClone(0);
    });
    w.on('loss', (l) => this.onLoss(l));
    host.replicator.on('divergence', (key) => {
      this.markDiverged(`its reply to ${key} differed`);
      const asked = this.askForReclone(`divergence on ${key}`);
      // Every later reply of a diverged copy may differ too: one journal line per burst and at most
      // one a second after it, each counting the divergences it stands for (a line per reply flooded
      // the journal until the re-clone).
      const now = Date.now();
      if (!asked && now - this.divergenceLineAt < DIVERGENCE_LINE_MS) { this.divergencesUnlisted++; return; }
      const more = this.divergencesUnlisted;
      this.divergenceLineAt = now;
      this.divergencesUnlisted = 0;
      p.journal.record('divergence', `backup's reply to ${key} differs from the primary's${more ? ` (and ${more} more since the last line)` : ''}: ${asked ? 'asking for a re-clone' : 're-clone already asked for'}`, { key, more });
    });
    host.replicator.on('unprotected', (reason) => p.journal.record('replication', `UNPROTECTED: ${reason}`));
    host.replicator.on('withheld', (reason, waiting) => p.journal.record('replication', `REPLIES WITHHELD: ${reason}; not serving alone yet: ${waiting}`, { reason, waiting }));
    // Emitted when drops begin and at most once every 10 s while they go on (never one per packet).
    host.replicator.on('dropping', (d) => p.journal.record('replication',
      `input queue full: new client requests dropped (${d.queueFull} with the queue full, ${d.heldFull} during a cut-over so far; input.maxQueuedInputs)`, { ...d }));
  }

  /** The periodic work: look for a backup to protect, checkpoints, the loss watch. */
  start(): void {
    const { host, checkpoints } = this.p;
    this.timers.push(setInterval(() => this.maybeProtect(), PROTECT_CHECK_MS));
    if (!this.p.clones) return;
    if (checkpoints) {
      this.timers.push(setInterval(() => {
        if (host.replicator.mode === 'backup' && host.replicator.protectedNow && host.guestRunning) checkpoints.take().catch(() => undefined);
      }, CHECKPOINT_INTERVAL_MS));
    }
    const w = this.lossWatch!;
    this.timers.push(setInterval(() => { void w.check().catch(() => undefined); }, LOSS_CHECK_MS));
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    clearTimeout(this.afterCloneTimer);
  }

  /**
   * Backup: a checkpoint of the clone that just arrived, once the replicator follows (protected)
   * and no other checkpoint or guest upgrade is under way; retried a few times, given up when the
   * board stops following (a new clone, a promotion).
   */
  private checkpointAfterClone(attempt: number): void {
    const { host, checkpoints, log } = this.p;
    if (!checkpoints || this.stopped || attempt >= CHECKPOINT_AFTER_CLONE_TRIES) return;
    this.afterCloneTimer = setTimeout(() => {
      const r = host.replicator;
      if (r.mode !== 'backup' || !host.guestRunning || this.stopped) return;
      if (!r.protectedNow || this.quiet()) { this.checkpointAfterClone(attempt + 1); return; }
      checkpoints.take().then(() => { this.afterCloneCheckpoints++; }, (e: Error) => {
        log.debug({ err: e.message, attempt }, 'checkpoint after a clone: not yet');
        this.checkpointAfterClone(attempt + 1);
      });
    }, CHECKPOINT_AFTER_CLONE_MS);
  }

  /** Primary with a live backup that holds no clone: clone to it. */
  maybeProtect(): void {
    const { host, clones, ha } = this.p;
    if (!clones || ha.currentRole !== 'PRIMARY' || this.rebuilding()) return;
    if (!host.guestRunning || host.replicator.protectedNow || clones.cloneInProgress || Date.now() < this.nextCloneAt) return;
    const partner = ha.membership.partnerView;
    if (partner.state !== 'alive' || partner.heartbeat?.role !== 'BACKUP') return;
    this.nextCloneAt = Date.now() + CLONE_BACKOFF_MS;
    clones.clone().catch(() => undefined); // journaled by the manager
  }

  /**
   * Primary: clone afresh over the backup's copy. The backup keeps logging and acknowledging the
   * input stream while its new clone is made, so the primary stays protected (output commit) through
   * the re-clone instead of serving alone; only a failed re-clone leaves it unprotected (and
   * maybeProtect tries again). Nothing to do while a clone is already under way.
   */
  recloneToBackup(): void {
    const clones = this.p.clones;
    if (!clones || clones.cloneInProgress || this.rebuilding()) return;
    this.nextCloneAt = Date.now() + CLONE_BACKOFF_MS;
    clones.clone().catch((e: Error) => this.p.host.replicator.unprotect(`re-clone failed: ${e.message}`));
  }

  /** Primary: the backup asks for a re-clone (control message `reclone`). */
  onRecloneRequest(reason: string): void {
    this.p.journal.record('replication', `backup asks for a re-clone: ${reason}`);
    this.recloneToBackup();
  }

  /** Backup: the first sign since its clone that its copy differs from the primary's. */
  private markDiverged(why: string): void {
    if (this.p.host.replicator.mode === 'backup' && !this.diverged) this.diverged = { at: Date.now(), why };
  }

  /**
   * A promotion takes the divergence record: since when (ms since the epoch) and why the copy it
   * finds running differs from the old primary's, if it does. The promoted copy (rebuilt or not) is
   * the reference from then on.
   */
  takeDiverged(): { at: number; why: string } | undefined {
    const d = this.diverged;
    this.diverged = undefined;
    return d;
  }

  /** Backup: its clone failed; the primary makes a new one (the backup never reboots stale state). */
  onCloneLost(cause: string): void {
    this.p.journal.record('guest', `clone lost (${cause}): asking the primary for a new clone`);
    this.p.host.replicator.sendControl({ type: 'reclone', reason: `clone lost: ${cause}` });
  }

  /**
   * Backup: one re-clone request for a burst of divergences (every later reply of a diverged copy
   * may differ too); asked again if no clone has started within RECLONE_ASK_MS.
   */
  private askForReclone(reason: string): boolean {
    if (this.recloneAskedAt && Date.now() - this.recloneAskedAt < RECLONE_ASK_MS) return false;
    this.recloneAskedAt = Date.now();
    this.p.host.replicator.sendControl({ type: 'reclone', reason });
    return true;
  }

  /**
   * A guest copy that never saw some inputs differs from its partner although every reply compared
   * equal (a lost request has no reply to compare): once the guest is idle and short of what it was
   * handed, the copies are made equal again by a re-clone (src/replication/loss-watch.ts).
   */
  private onLoss(l: { missing: number; delivered: number; processed: number }): void {
    const { host, ha, clones, journal } = this.p;
    const what = l.missing > 0
      ? `the guest lost ${l.missing} inputs (${l.delivered} requests handed to it, ${l.processed} processed): its state differs from its partner's`
      : `the guest counts ${-l.missing} requests more than it was handed (${l.delivered} handed, ${l.processed} processed): its state differs from its partner's`;
    this.p.log.error({ ...l }, 'guest copy lost inputs');
    if (ha.currentRole === 'BACKUP' && host.replicator.mode === 'backup') {
      this.markDiverged(`it lost ${l.missing} inputs`);
      const asked = this.askForReclone(`the clone is missing ${l.missing} inputs`);
      journal.record('divergence', `${what}; ${asked ? 'asking the primary for a re-clone' : 're-clone already asked for'}`, { ...l });
    } else if (ha.currentRole === 'PRIMARY' && host.replicator.mode === 'primary' && !clones!.cloneInProgress) {
      // This copy is the reference from now on: its count is what it processed (the clone's
      // cut-over hands that count to the backup).
      if (l.missing > 0) host.supervisor.rebaseAppSeq(l.processed);
      journal.record('divergence', `${what}; cloning it to the backup again`, { ...l });
      this.recloneToBackup();
    }
  }
}
