/**
 * Planned hand-over of the primary role, both halves. The primary drains (holds new inputs, waits
 * briefly for the last ACKs and replies), tells the backup to take over and steps down in the same
 * tick; the backup takes the role through the HA machine (`takeover`). With `keepCopy` (the
 * switchover of a guest upgrade) the board stepping down keeps its guest and follows the new primary
 * on the same channel, and the new primary is protected by that copy without a clone.
 *
 * Owns the two keep-copy facts until the role change that consumes them (src/pair/controller.ts);
 * does not change the replicator's mode itself (the controller's `stepDown` does).
 */
import { UsError } from '../core/errors.js';
import { requirePrimary, type PairParts } from './parts.js';

/** How long the drain waits for the backup's last ACKs and the released replies (10 ms looks). */
const DRAIN_LOOKS = 50;

export class Switchover {
  /** This board stepped down keeping its guest as the backup copy. */
  private keptCopy = false;
  /** The partner handed the role over keeping its guest: the new primary is protected by it. */
  private partnerKeepsCopy = false;

  constructor(
    private readonly p: PairParts,
    /** Steps this board's replicator down to backup now; with keepCopy, follows on the current channel. Returns whether the copy is kept. */
    private readonly stepDown: (keepCopy: boolean) => boolean,
  ) {}

  /** Primary: drain, tell the backup to take over, step down. */
  async handOver(keepCopy = false): Promise<Record<string, unknown>> {
    const clones = requirePrimary(this.p, 'switchover');
    const r = this.p.host.replicator;
    if (!r.protectedNow) throw new UsError('US_ERR_ROLE', 'switchover: the backup holds no clone in sync (see understudy status); refusing to hand over');
    if (clones.cloneInProgress) throw new UsError('US_ERR_ROLE', 'switchover: a clone is in progress; try again when it is done');
    // From here no input reaches this guest or the stream: the partner holds a prefix of the inputs
    // and answers the rest. Held inputs are dropped when this board steps down (no reply was
    // released for them; clients retry). A short wait for the last ACKs and replies only spares
    // clients a retry: correctness does not depend on it.
    r.hold();
    const sent = r.lastSeq - r.heldCount;
    for (let i = 0; i < DRAIN_LOOKS && r.protectedNow && (r.ackedSeq < sent || r.status().heldReplies > 0); i++) {
      await new Promise((res) => setTimeout(res, 10));
    }
    if (!r.protectedNow) {
      r.release();
      throw new UsError('US_ERR_LINK', `switchover: the backup stopped acknowledging (${r.status().unprotectedReason ?? 'unprotected'}); not handed over`);
    }
    r.sendControl({ type: 'switchover', keepCopy });
    if (!this.p.ha.yieldPrimary()) {
      r.release();
      throw new UsError('US_ERR_ROLE', `switchover: this board could not step down (role ${this.p.ha.currentRole})`);
    }
    // Step down at once, in this tick: the new primary may clone to this board, or (keepCopy) send
    // it inputs, before the role change has been worked through (address released, endpoint closed).
    this.keptCopy = this.stepDown(keepCopy);
    this.p.journal.record('role', `switchover requested at input ${sent}: handing the primary role to the partner`);
    return { board: this.p.board.name, handedOverAt: sent };
  }

  /** Backup: the partner hands the primary role over (control message `switchover`). */
  onPartnerHandsOver(keepCopy: boolean): void {
    this.p.journal.record('role', `partner hands the primary role over (switchover${keepCopy ? ', keeping its guest as the backup copy' : ''})`);
    this.partnerKeepsCopy = keepCopy;
    this.p.ha.takeOver();
  }

  /** Read once by the role change that follows: did this board step down keeping its copy? */
  takeKeptCopy(): boolean {
    const k = this.keptCopy;
    this.keptCopy = false;
    return k;
  }

  /** Read once by the promotion that follows: does the partner keep its copy? */
  takePartnerKeepsCopy(): boolean {
    const k = this.partnerKeepsCopy;
    this.partnerKeepsCopy = false;
    return k;
  }
}
