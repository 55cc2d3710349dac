/**
 * Input-loss watch: a copy of the guest that silently lost inputs has a different state from its
 * partner even though every reply compared equal (a lost request simply has no reply to compare).
 * The controller knows how many service requests it handed to its guest (GuestSupervisor
 * appSeqExpected); the guest's management PING reports how many it has processed (`seq=`). While
 * the guest is busy the two differ by the requests still queued; once it is idle — nothing handed
 * over since the previous look, its count unchanged, no REG waiting for an AUTH answer — they must
 * be equal, and a shortfall is inputs the guest never saw. Reported once per shortfall; what to do
 * about it (a re-clone) is decided by the caller.
 */
import { EventEmitter } from 'node:events';
import type { GuestSupervisor } from '../guest/supervisor.js';

export interface InputLoss {
  /** Requests handed to the guest (as counted by the controller). */
  delivered: number;
  /** Requests the guest has processed. */
  processed: number;
  /** delivered - processed (negative: the guest counts requests the controller never gave it). */
  missing: number;
}

/** What the watch reads of the guest supervisor. */
export type WatchedGuest = Pick<GuestSupervisor, 'appSeqExpected' | 'currentState'> & {
  readonly port: Pick<GuestSupervisor['port'], 'authOutstanding' | 'delivered' | 'processedCount'>;
};

export declare interface InputLossWatch {
  on(ev: 'loss', fn: (l: InputLoss) => void): this;
}

export class InputLossWatch extends EventEmitter {
  private last?: { processed: number; delivered: number; expected: number };
  private reported?: number;
  private busy = false;
  checks = 0;
  losses = 0;
  lastLoss?: InputLoss & { at: string };

  constructor(private readonly supervisor: WatchedGuest, private readonly active: () => boolean) {
    super();
  }

  /** One look; meant to be called periodically (about once a second). */
  async check(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      await this.look();
    } finally {
      this.busy = false;
    }
  }

  private async look(): Promise<void> {
    const s = this.supervisor;
    const expected = s.appSeqExpected;
    if (!this.active() || s.currentState !== 'running' || expected === undefined) {
      // Inactive (a clone under way, the guest not running): a shortfall seen before is reported
      // again afterwards. A clone that failed leaves the copy as it was, and a report taken while
      // the caller could not act (a clone started during the look) must not be the only one.
      this.last = undefined;
      this.reported = undefined;
      return;
    }
    if (s.port.authOutstanding.size > 0) {
      this.last = undefined;
      return;
    }
    const delivered = s.port.delivered;
    let processed: number;
    try {
      processed = (await s.port.processedCount(1000)) ?? NaN;
    } catch {
      this.last = undefined;
      return;
    }
    this.checks++;
    if (!Number.isFinite(processed) || processed === expected) {
      this.last = undefined;
      this.reported = undefined;
      return;
    }
    const prev = this.last;
    this.last = { processed, delivered, expected };
    // Idle twice in a row with the same shortfall: nothing is on its way to the guest.
    const idle = prev && prev.processed === processed && prev.delivered === delivered && s.port.delivered === delivered
      && prev.expected === expected && s.appSeqExpected === expected && s.port.authOutstanding.size === 0;
    if (!idle || this.reported === expected - processed) return;
    this.reported = expected - processed;
    this.losses++;
    const loss: InputLoss = { delivered: expected, processed, missing: expected - processed };
    this.lastLoss = { ...loss, at: new Date().toISOString() };
    this.emit('loss', loss);
  }

  /** The guest's copy was replaced (clone, restore): start over. */
  reset(): void {
    this.last = undefined;
    this.reported = undefined;
  }
}
