/**
 * Messages from the partner that were refused: counted per channel and reason, journaled (one
 * readable line, at most one per channel every `journalIntervalMs`, with how many were refused
 * meanwhile) and logged. The caller drops the connection the message came on; this module only
 * keeps the account. One per controller, shared by the replication channel, the control messages
 * on it and the upgrade channel. Owns no socket.
 */
import type { Logger } from '../core/log.js';

/** The partner-link channels whose messages are checked. */
export type PartnerChannelName = 'replication' | 'control' | 'upgrade';

/**
 * Why a message was refused (a stable word, for counters and metrics):
 *   malformed     does not decode (bad length, bad field, not JSON, fails the schema)
 *   unknown-type  a message type the channel does not carry
 *   ack-beyond    an ACK of an input never sent
 *   out-of-order  an INPUT whose sequence number is not the next one
 *   unexpected    a well-formed message the channel's state does not allow
 */
export type RejectionReason = 'malformed' | 'unknown-type' | 'ack-beyond' | 'out-of-order' | 'unexpected';

export interface RejectionStatus {
  total: number;
  /** channel → reason → count */
  byChannel: Partial<Record<PartnerChannelName, Partial<Record<RejectionReason, number>>>>;
  last?: { at: string; channel: PartnerChannelName; reason: RejectionReason; detail: string };
}

export interface PartnerRejectionsOptions {
  /** Writes one line to the event journal (kind "partner-message"). */
  journal?: (message: string, detail: Record<string, unknown>) => void;
  log?: Logger;
  /** At most one journal line per channel this often (default 10 s); the rest are counted in the next line. */
  journalIntervalMs?: number;
  now?: () => number;
}

export class PartnerRejections {
  total = 0;
  private readonly counts: RejectionStatus['byChannel'] = {};
  private last?: RejectionStatus['last'];
  private readonly lastJournalAt = new Map<PartnerChannelName, number>();
  private readonly unjournaled = new Map<PartnerChannelName, number>();

  constructor(private o: PartnerRejectionsOptions = {}) {}

  /** Where the lines go (the daemon sets this once its store is open). */
  setSinks(o: Pick<PartnerRejectionsOptions, 'journal' | 'log'>): void {
    this.o = { ...this.o, ...o };
  }

  /** Counts one refused message and journals it (rate-limited). `detail` says what was wrong, e.g. the decoder's message. */
  reject(channel: PartnerChannelName, reason: RejectionReason, detail: string): void {
    this.total++;
    const byReason = (this.counts[channel] ??= {});
    byReason[reason] = (byReason[reason] ?? 0) + 1;
    const now = (this.o.now ?? Date.now)();
    this.last = { at: new Date(now).toISOString(), channel, reason, detail: detail.slice(0, 200) };
    this.o.log?.warn({ channel, reason, detail: this.last.detail }, 'refused a message from the partner: connection dropped');
    const prev = this.lastJournalAt.get(channel);
    if (prev !== undefined && now - prev < (this.o.journalIntervalMs ?? 10000)) {
      this.unjournaled.set(channel, (this.unjournaled.get(channel) ?? 0) + 1);
      return;
    }
    const more = this.unjournaled.get(channel) ?? 0;
    this.unjournaled.delete(channel);
    this.lastJournalAt.set(channel, now);
    this.o.journal?.(
      `refused a ${channel} message from the partner (${reason}): ${this.last.detail}; connection dropped${more ? ` (${more} more refused since the last such line)` : ''}`,
      { channel, reason, total: this.total, ...(more ? { notJournaled: more } : {}) },
    );
  }

  count(channel: PartnerChannelName, reason?: RejectionReason): number {
    const c = this.counts[channel] ?? {};
    return reason ? c[reason] ?? 0 : Object.values(c).reduce((a, n) => a + (n ?? 0), 0);
  }

  status(): RejectionStatus {
    return { total: this.total, byChannel: structuredClone(this.counts), ...(this.last ? { last: { ...this.last } } : {}) };
  }
}
