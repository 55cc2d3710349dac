/**
 * ha.manager pacemaker: when may a PRIMARY whose backup stopped acknowledging serve alone (release
 * replies its backup may not hold)? On a shelf under Pacemaker another board's cluster may promote
 * that backup: if this board has been cut off from the cluster (its backplane link down, its
 * partner still heard on the serial link), the side with quorum takes over with the backup's copy,
 * and every reply this board released meanwhile would be an acknowledged request lost
 * (docs/pacemaker.md, decision table rows 6-7).
 *
 * So it waits for corosync's verdict on the membership, not for the replicator's 500 ms:
 * - quorate, and the partner's node has left the membership: serve alone (the partner's side has no
 *   quorum; its Pacemaker stops its instance);
 * - quorate, the partner still a member, for ha.quorumSettleMs since protection ended: a partition
 *   would have shown by then (corosync's token + consensus); the channel failed on its own: serve
 *   alone;
 * - quorate, the partner a member whose controller is reported hung: it cannot be promoted by
 *   anyone quickly (the agent's promote asks that controller); serve alone;
 * - no quorum, or quorum unknown: wait (the pair layer steps down on a known loss: `quorum-lost`).
 *
 * A fenced backup ends the wait at once (Replicator.unprotect with partnerDown). Pure but for the
 * sources it reads.
 */
import type { QuorumState } from '../ha/quorum.js';

export interface ServeAloneInputs {
  /** corosync's last state; undefined: not known. */
  quorum: () => QuorumState | undefined;
  /** The partner board's name (as corosync knows the node: the chassis and the docs name them alike). */
  partner: () => string;
  /** The partner's heartbeats say its controller is hung. */
  partnerHung: () => boolean;
  settleMs: number;
}

/** The replicator's serveAlone for ha.manager pacemaker: undefined to serve alone, else why not yet. */
export function serveAloneGate(i: ServeAloneInputs): (waitedMs: number) => string | undefined {
  return (waited) => {
    const q = i.quorum();
    if (!q) return 'quorum unknown (corosync not answering): waiting for it';
    if (!q.quorate) return `no quorum (corosync members ${q.members.join(' ')}): the side with quorum takes over`;
    const partner = i.partner();
    if (!q.members.includes(partner)) return undefined;
    if (i.partnerHung()) return undefined;
    if (waited >= i.settleMs) return undefined;
    return `corosync still counts ${partner} a member: waiting until it leaves the membership, or ${i.settleMs} ms (ha.quorumSettleMs) pass with this side quorate`;
  };
}
