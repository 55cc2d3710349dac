/**
 * A hung guest on the primary, found by the backup's witness and acted on by the primary.
 *
 *  Backup: its replicator's witness (src/replication/guest-witness.ts) says the primary's guest has
 *  sent no reply for the bound while this copy answered requests of the same stream. The backup
 *  journals it and tells the primary (control message `guest-hung`). It does not act itself: the
 *  primary's controller is healthy (a hung controller is reported in its heartbeats and fenced
 *  first, src/ha/controller-watch.ts), so it can hand over cleanly without a fence.
 *  Primary: it acts only if its own view agrees (its QEMU stopped, or its guest silent with requests
 *  to answer for half the bound and not answering a PING either: a guest that lost requests on their
 *  way to it is idle, not hung, and answers): then the guest is declared hung, which goes through the guest
 *  failure policy like a guest watchdog firing — a protected primary gives up its guest, fires
 *  `guest-failed` (FAULT), and the backup promotes on partner-fault with its copy as it is. A report
 *  the primary cannot confirm (its guest answered meanwhile) is journaled and ignored.
 *
 * Owns no timer; decides from the role, the report and the supervisor's evidence.
 */
import type { WitnessVerdict } from '../replication/guest-witness.js';
import type { ControlMessage } from '../replication/messages.js';
import type { PairParts } from './parts.js';

type Report = Extract<ControlMessage, { type: 'guest-hung' }>;

export class GuestHang {
  /** Reports sent (backup) and acted on (primary), for status and tests. */
  reportsSent = 0;
  handedOver = 0;

  constructor(private readonly p: PairParts) {
    p.host.replicator.on('primary-guest-silent', (v) => this.onWitness(v));
  }

  /** The primary's guest as the backup's witness sees it: at most half the bound is asked of the primary's own evidence. */
  private get confirmAfterMs(): number {
    return (this.p.board.ha?.guestHangMs ?? 0) / 2;
  }

  /** Backup: the witness's verdict. */
  private onWitness(v: WitnessVerdict): void {
    const { ha, host, journal } = this.p;
    if (ha.currentRole !== 'BACKUP' || host.replicator.mode !== 'backup' || !host.replicator.protectedNow) return;
    const silentMs = Math.round(v.silentMs);
    journal.record('guest-hang', `the primary's guest has sent no reply for ${silentMs} ms while this board's copy answered ${v.replies} requests of the same stream: telling the primary`, { silentMs, replies: v.replies });
    this.p.log.warn({ silentMs, replies: v.replies }, 'primary guest silent: reporting it to the primary');
    host.replicator.sendControl({ type: 'guest-hung', silentMs, replies: v.replies });
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
