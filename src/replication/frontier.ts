/**
 * How far the local guest has worked through the requests it was handed, from what it sends back:
 * the guest processes its service requests one at a time, in the order received (PROTOCOL.md §5),
 * so a reply to one request says every request handed over before it was processed too. When the
 * guest fails, the requests handed over after the last one known processed are the suspects: one of
 * them was being processed when it crashed or hung (a poison input, src/replication/poison.ts), in
 * all likelihood the first.
 *
 * Owns a bounded list of (sequence number, reply key) of the requests handed over and not known
 * processed; no timer, no I/O.
 */

/** Requests remembered past the frontier, at most (the guest's own window is 256: GUEST_WINDOW). */
export const FRONTIER_MAX = 4096;

export class ProcessedFrontier {
  private pending: Array<{ seq: number; key: string }> = [];
  /** Sequence number of the last request known processed (0: none yet). */
  processedSeq = 0;

  /** A request handed to the guest. */
  delivered(seq: number, key: string): void {
    this.pending.push({ seq, key });
    if (this.pending.length > FRONTIER_MAX) this.pending.splice(0, this.pending.length - FRONTIER_MAX);
  }

  /** A reply of the guest's, by reply key: that request and every one before it are processed. */
  replied(key: string): void {
    const i = this.pending.findIndex((p) => p.key === key);
    if (i < 0) return;
    this.processedSeq = this.pending[i]!.seq;
    this.pending.splice(0, i + 1);
  }

  /** The guest (or its state) starts afresh at `seq`: nothing is pending. */
  reset(seq = 0): void {
    this.pending = [];
    this.processedSeq = seq;
  }

  /** Requests handed over and not known processed, oldest first (at most `max`). */
  suspects(max = 16): number[] {
    return this.pending.slice(0, max).map((p) => p.seq);
  }
}
