/**
 * A hung guest on the primary, found by the backup's witness and acted on by the primary.
 *
 *  Backup: its replicator's witness (src/replication/guest-witness.ts) says the primary's guest has
 *  sent no reply for the bound while this copy answered requests of the same stream. The backup
 *  journals it and tells the primary (control message `guest-hung`). It does not act itself: the
 *  primary's controller is healthy (a hung controller is reported in its heartbeats and fenced
 *  first, src/ha/controller-watch.ts), so it can hand over cleanly without a fence.
 *  With a fast bound (ha.guestHangFastMs) the witness reports at it and again as often while the
 *  silence lasts; only the first report at or past guestHangMs is journaled here (the others are
 *  logged and counted: a guest that is merely slow causes them).
 *  Primary: it acts only if its own view agrees; then the guest is declared hung, which goes through
 *  the guest failure policy like a guest watchdog firing — a protected primary gives up its guest,
 *  fires `guest-failed` (FAULT), and the backup promotes on partner-fault with its copy as it is.
 *  Its view, by how long the witness has seen the silence:
 *   - below guestHangMs, or within the witness's quiet window after a cut-over or a checkpoint
 *     (`fastOnly`), whatever its length: its guest has left a PING unanswered for half the fast bound
 *     while its QEMU had the CPU it asked for (supervisor.fastHangEvidence). A guest that waited for
 *     a CPU is slow, not hung: the report is declined (logged, counted) and the next one asks again;
 *   - from guestHangMs: its QEMU stopped, or its guest silent with requests to answer for half that
 *     bound and not answering a PING within 100 ms either (a guest that lost requests on their way to
 *     it is idle, not hung, and answers). A report it cannot confirm is journaled and ignored.
 *
 * Owns no timer; decides from the role, the report and the supervisor's evidence.
 */
import type { WitnessVerdict } from '../replication/guest-witness.js';
import { guestHangFastMs } from '../replication/guest-host.js';
import type { ControlMessage } from '../replication/messages.js';
import type { PairParts } from './parts.js';

type Report = Extract<ControlMessage, { type: 'guest-hung' }>;

export class GuestHang {
  /** Reports sent (backup) and acted on (primary), for status and tests. */
  reportsSent = 0;
  handedOver = 0;
  /** Fast reports the primary declined (its guest slow, not hung), and the last reason. */
  fastDeclined = 0;
  /** Of those, declined because its QEMU was kept from the CPU (or in host I/O): a slow guest. */
  fastDeclinedSlowed = 0;
  lastDeclined?: string;
  /** Backup: the current silence's report at the slow bound has been journaled. */
  private slowJournaled = false;
  /** Primary: a fast check is under way. */
  private judging = false;

  constructor(private readonly p: PairParts) {
    p.host.replicator.on('primary-guest-silent', (v) => this.onWitness(v));
  }

  /** The primary's guest as the backup's witness sees it: at most half the bound is asked of the primary's own evidence. */
  private get confirmAfterMs(): number {
    return (this.p.board.ha?.guestHangMs ?? 0) / 2;
  }

  /** For `understudy status` (replication.guestHang): reports sent and acted on, fast checks declined. */
  status(): { reportsSent: number; handedOver: number; fastDeclined: number; fastDeclinedSlowed: number; lastDeclined: string | null } {
    return { reportsSent: this.reportsSent, handedOver: this.handedOver, fastDeclined: this.fastDeclined, fastDeclinedSlowed: this.fastDeclinedSlowed, lastDeclined: this.lastDeclined ?? null };
  }

  /** The witness's fast bound (0: none), only when it is below the slow one. */
  private get fastMs(): number {
    return guestHangFastMs(this.p.board);
  }

  /** Backup: the witness's verdict. */
  private onWitness(v: WitnessVerdict): void {
    const { ha, host, journal } = this.p;
    if (ha.currentRole !== 'BACKUP' || host.replicator.mode !== 'backup' || !host.replicator.protectedNow) return;
    const silentMs = Math.round(v.silentMs);
    const slow = this.p.board.ha?.guestHangMs ?? 0;
    // Journaled once per silence, at the first report at or past the slow bound; fast ones logged.
    if (v.report === 1) this.slowJournaled = false;
    if (!this.fastMs || (silentMs >= slow && !v.quiet && !this.slowJournaled)) {
      this.slowJournaled = true;
      journal.record('guest-hang', `the primary's guest has sent no reply for ${silentMs} ms while this board's copy answered ${v.replies} requests of the same stream: telling the primary`, { silentMs, replies: v.replies });
      this.p.log.warn({ silentMs, replies: v.replies }, 'primary guest silent: reporting it to the primary');
    } else {
      this.p.log.info({ silentMs, replies: v.replies, report: v.report }, 'primary guest silent: reporting it to the primary (fast bound)');
    }
    host.replicator.sendControl(v.quiet ? { type: 'guest-hung', silentMs, replies: v.replies, fastOnly: true } : { type: 'guest-hung', silentMs, replies: v.replies });
    this.reportsSent++;
  }

  /**
   * Primary: the backup's report. Looked at after the current poll phase (setImmediate): replies
   * of this board's guest read in the same turn of the loop count as answers.
   */
  onBackupReport(m: Report): void {
    setImmediate(() => void this.judge(m));
  }

  private async judge(m: Report): Promise<void> {
    const { ha, host, journal } = this.p;
    if (ha.currentRole !== 'PRIMARY') return;
    const heard = `the backup's copy answered ${m.replies} requests the primary's guest has not answered for ${m.silentMs} ms`;
    if (this.fastMs && (m.fastOnly || m.silentMs < (this.p.board.ha?.guestHangMs ?? 0))) {
      if (this.judging) return; // the check under way answers this report too
      this.judging = true;
      try {
        const r = await host.supervisor.fastHangEvidence(this.fastMs / 2);
        if (ha.currentRole !== 'PRIMARY') return;
        if (r.evidence) {
          journal.record('guest-hang', `${heard}; here ${r.evidence}: the guest is hung`, { ...m, confirmed: true, evidence: r.evidence, fast: true });
          if (host.supervisor.declareHung(`guest hung: ${r.evidence}; the backup's copy answered ${m.replies} requests meanwhile`)) this.handedOver++;
        } else {
          this.fastDeclined++;
          if (r.slowed) this.fastDeclinedSlowed++;
          this.lastDeclined = r.declined;
          this.p.log.info({ ...m, declined: r.declined }, 'backup reports the guest silent: not hung here (fast check)');
        }
      } finally {
        this.judging = false;
      }
      return;
    }
    const evidence = await host.supervisor.hangEvidence(this.confirmAfterMs);
    if (ha.currentRole !== 'PRIMARY') return;
    if (!evidence) {
      journal.record('guest-hang', `${heard}; not confirmed here (the guest answered or has nothing to answer): ignored`, { ...m, confirmed: false });
      return;
    }
    journal.record('guest-hang', `${heard}; here ${evidence}: the guest is hung`, { ...m, confirmed: true, evidence });
    if (host.supervisor.declareHung(`guest hung: ${evidence}; the backup's copy answered ${m.replies} requests meanwhile`)) this.handedOver++;
  }
}
