/**
 * Journals the partner channels' rejections (src/replication/secure-channel.ts): one line an operator
 * can read per rejected connection, `partner channel <purpose>: rejected <reason> from <peer> (<detail>):
 * connection dropped`. A flood of them (an attacker on the partner link) is journaled at most once a
 * second per purpose and reason, the line saying how many were not; every one is still counted in
 * `status` and metrics. Also journals the previous firmware's channels (legacy-channel.ts): when
 * they are turned on and off, and the first connection of each purpose while they are on. Owns nothing
 * but those subscriptions.
 */
import type { Logger } from '../core/log.js';
import type { Store } from '../store/journal.js';
import { LEGACY_ALARM, legacyPartnerChannels, type LegacyConnection } from '../replication/legacy-channel.js';
import { partnerChannelRejections, type ChannelRejection } from '../replication/secure-channel.js';

/** Shortest gap between two journal lines of the same purpose and reason. */
export const REJECTION_JOURNAL_INTERVAL_MS = 1000;

/** Subscribes; returns the unsubscribe. */
export function journalChannelRejections(store: Store, log: Logger, now: () => number = Date.now): () => void {
  const last = new Map<string, { at: number; unjournaled: number }>();
  const onRejected = (r: ChannelRejection) => {
    const k = `${r.purpose}:${r.reason}`;
    const t = now();
    const seen = last.get(k);
    if (seen && t - seen.at < REJECTION_JOURNAL_INTERVAL_MS) { seen.unjournaled++; return; }
    const more = seen?.unjournaled ? ` (${seen.unjournaled} more not journaled since the last line)` : '';
    last.set(k, { at: t, unjournaled: 0 });
    const by = r.side === 'server' ? `from ${r.remote}` : `by this board connecting to ${r.remote}`;
    store.record('partner-channel', `partner channel ${r.purpose}: rejected ${r.reason} ${by} (${r.detail}): connection dropped${more}`,
      { purpose: r.purpose, reason: r.reason, side: r.side, remote: r.remote, detail: r.detail, total: partnerChannelRejections.count(r.purpose, r.reason) });
    log.warn({ purpose: r.purpose, reason: r.reason, remote: r.remote, detail: r.detail }, `partner channel ${r.purpose}: rejected ${r.reason}: connection dropped`);
  };
  partnerChannelRejections.on('rejected', onRejected);
  return () => { partnerChannelRejections.off('rejected', onRejected); };
}

/**
 * Journals (kind partner-channel) the previous firmware's channels: on, off (with the connections that
 * ended), and the first connection of each purpose while on. Returns the unsubscribe.
 */
export function journalLegacyChannels(store: Store, log: Logger): () => void {
  const seen = new Set<string>();
  const onChange = (inUse: boolean, why: string, dropped: number) => {
    seen.clear();
    const msg = inUse
      ? `${LEGACY_ALARM} (${why}): its handshake is accepted and spoken on the partner channels until it is heard in heartbeat version 3`
      : `partner channels TLS only again (${why})${dropped ? `: ${dropped} connections of the previous firmware ended` : ''}`;
    store.record('partner-channel', msg, { legacy: inUse, why, dropped });
    log[inUse ? 'warn' : 'info']({ legacy: inUse, why, dropped }, msg);
  };
  const onConnection = (c: LegacyConnection) => {
    if (seen.has(c.purpose)) return;
    seen.add(c.purpose);
    const how = c.side === 'server' ? `accepted from ${c.remote}` : `opened to ${c.remote}`;
    store.record('partner-channel', `partner channel ${c.purpose}: a connection of the previous firmware (no TLS) ${how}; further ones are counted, not journaled`,
      { purpose: c.purpose, side: c.side, remote: c.remote, legacy: true });
  };
  legacyPartnerChannels.on('change', onChange);
  legacyPartnerChannels.on('connection', onConnection);
  return () => { legacyPartnerChannels.off('change', onChange); legacyPartnerChannels.off('connection', onConnection); };
}
