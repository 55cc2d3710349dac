/**
 * Poison inputs, for the pair: a client request that makes every copy of the guest fail.
 *
 *  - Remembers how this board's copy last failed and what it had been handed and not answered (its
 *    suspects, src/replication/frontier.ts): a promotion that finds no running copy restores the
 *    checkpoint guarded by them (src/replication/poison.ts), and the restored copy failing on one of
 *    them alone confirms it.
 *  - A confirmed poison input is quarantined (src/store/quarantine.ts: SQLite, journaled, alarm via
 *    onQuarantined), skipped in the replay with every resend of it, and its client is answered
 *    `<id> ERR POISON q<N>` once the board serves; later retries get the same answer from the
 *    replicator's screen, before a sequence number is given (never applied to any copy again).
 *  - A promoted board that has no backup yet keeps logging its inputs after the checkpoint
 *    (Replicator.logWhileUnprotected): if its copy fails then (the poison reached it after the
 *    promotion), it recovers the same way instead of booting its state disk.
 *  - The quarantine is the pair's: the primary sends it to the backup after every clone and after
 *    every change; the backup merges it.
 *
 * Decides nothing about roles: the controller asks it to recover where it would otherwise restore.
 */
import { UsError } from '../core/errors.js';
import type { ControlMessage, SequencedInput } from '../replication/messages.js';
import { MAX_SUSPECTS, type PoisonRecovery, type RecoveryOutcome } from '../replication/poison.js';
import { poisonReply, requestIdOf, type Quarantine, type QuarantineEntry, type QuarantineFailure } from '../store/quarantine.js';
import type { PairParts } from './parts.js';

/** A failure of this board's copy counts as the first half of a poison input's evidence for this long. */
export const FAILURE_MEMORY_MS = 120_000;

type QuarantineMessage = Extract<ControlMessage, { type: 'quarantine' }>;

interface CopyFailed { at: number; cause: string; role: string; suspects: number[] }

export class PoisonGuard {
  private lastFailure?: CopyFailed;
  private recoveringNow = false;
  /** Poison inputs found by the last recovery whose clients have not been answered yet (the board did not serve). */
  private unanswered: Array<{ input: SequencedInput; entry: QuarantineEntry }> = [];
  /** Recoveries from the checkpoint run here, and the last one's outcome. */
  recoveries = 0;
  lastRecovery?: RecoveryOutcome & { at: string; quarantined: number[] };
  /** Called when an input is quarantined here (the alarm). */
  onQuarantined?: (e: QuarantineEntry) => void;
  /** Called when the partner's quarantine changed this board's (the alarms follow it). */
  onMerged?: () => void;
  private retriesLoggedAt = 0;

  constructor(private readonly p: PairParts, private readonly recovery: Pick<PoisonRecovery, 'recover'> | undefined, readonly quarantine: Quarantine | undefined) {
    const q = quarantine;
    if (q) {
      p.host.replicator.screen = (input, client) => {
        const e = q.match(client, input.payload);
        if (!e) return undefined;
        q.noteAnswered(e);
        if (Date.now() - this.retriesLoggedAt > 10_000) {
          this.retriesLoggedAt = Date.now();
          p.journal.record('quarantine', `a request matching quarantined input q${e.id} was answered ERR POISON and not given to the guest (${e.answered} so far)`, { id: e.id, answered: e.answered });
        }
        return poisonReply(requestIdOf(input.payload) || '-', e.id);
      };
    }
  }

  get recovering(): boolean {
    return this.recoveringNow;
  }

  /** This board's copy failed (the supervisor gave it up): remember what it was working on. */
  noteCopyFailed(cause: string): void {
    if (this.recoveringNow) return; // a restored copy's failures are the recovery's
    this.lastFailure = { at: Date.now(), cause, role: this.p.ha.currentRole, suspects: this.p.host.replicator.frontier.suspects(MAX_SUSPECTS) };
    if (this.lastFailure.suspects.length) {
      this.p.log.warn({ cause, suspects: this.lastFailure.suspects }, 'guest copy failed with requests outstanding');
    }
  }

  /**
   * A new copy runs here (a clone arrived): the one that failed is gone, and what it was working on
   * is in the clone's image. Its suspects would otherwise guard a later restore that has nothing to
   * do with them (journaled as evidence, in CI: suspects 10 s old, from before the clone).
   */
  forgetFailure(): void {
    this.lastFailure = undefined;
  }

  /**
   * A PRIMARY without a backup whose copy failed, and that can rebuild it from the checkpoint and its
   * log (promoted with a checkpoint, logging since): it recovers rather than booting its disk.
   */
  canRecoverAsPrimary(): boolean {
    const { host, checkpoints } = this.p;
    const r = host.replicator;
    return !!this.recovery && !!checkpoints && r.mode === 'primary' && !r.protectedNow && r.logWhileUnprotected && checkpoints.logCovers(r.lastSeq);
  }

  /**
   * Restores the checkpoint and replays the log, finding and quarantining any poison input on the
   * way. `why`: for the journal. Throws if the copy cannot be brought back.
   */
  async recover(why: string): Promise<RecoveryOutcome> {
    if (!this.recovery) throw new UsError('US_ERR_NOT_FOUND', 'no checkpoint recovery on this board');
    const { journal, board } = this.p;
    const f = this.lastFailure && Date.now() - this.lastFailure.at < FAILURE_MEMORY_MS ? this.lastFailure : undefined;
    this.lastFailure = undefined;
    const suspects = f?.suspects ?? [];
    const lastSeq = this.p.host.replicator.lastSeq;
    const cps = this.p.checkpoints;
    const cp = cps?.info;
    // This board was primary and protected after its checkpoint (its backup logged, not it): what it
    // holds ends before the stream does. Or it restarted since its checkpoint and no input has reached
    // it since: the stream went on without it. Restored anyway (the alternative is the disk's older state).
    const stale = !cps ? undefined
      : !cps.logCovers(lastSeq) ? `the checkpoint here (input ${cp?.seq ?? '?'}) and its log do not reach input ${lastSeq}: inputs the log lacks are lost`
      : lastSeq === 0 && cps.fromEarlierStart ? `the checkpoint here (input ${cp?.seq ?? '?'}, taken ${cp?.at ?? '?'}) is from before this controller started, and no input of the stream has reached this board since: what was acknowledged after it went down is lost`
      : undefined;
    if (stale) {
      journal.record('recovery', `STATE LOST: ${stale}; restoring what it holds`, { lastSeq });
      this.p.log.error({ lastSeq, checkpoint: cp?.seq }, 'stale checkpoint: restoring it anyway (acknowledged state lost)');
      // Should another board still serve the pair's state, two PRIMARYs keep that one.
      this.p.ha.markServingLostState(`restored a stale checkpoint: ${stale}`);
    }
    journal.record('recovery', `${why}: restoring the checkpoint and replaying the input log${suspects.length ? `, guarded by the ${suspects.length} request${suspects.length === 1 ? '' : 's'} this board's copy had not answered when it failed (${f!.cause}): inputs ${suspects.join(', ')}` : ''}`, { suspects });
    this.recoveringNow = true;
    const quarantined: number[] = [];
    try {
      const q = this.quarantine;
      const out = await this.recovery.recover(suspects, q ? (s) => s.input.kind === 'request' && q.match(s.client, s.input.payload) !== undefined : undefined);
      this.recoveries++;
      for (const found of out.poison) {
        const failures: QuarantineFailure[] = [];
        if (f) failures.push({ copy: f.role === 'PRIMARY' ? 'primary' : 'backup', board: board.name, how: /hung|hang/i.test(f.cause) ? 'hang' : 'crash', cause: f.cause, at: new Date(f.at).toISOString() });
        const partner = this.p.ha.membership.partnerView.heartbeat;
        if (partner && (partner.role === 'FAULT' || partner.guest === 'failed')) {
          failures.push({ copy: 'partner', board: partner.sender, how: 'crash', cause: `the partner's guest failed (partner role ${partner.role})`, at: new Date().toISOString() });
        }
        failures.push({ copy: 'restored', board: board.name, how: found.failure.how, cause: found.failure.cause, at: found.failure.at });
        const entry = this.quarantine?.add({
          seq: found.seq, client: found.input.client, payload: found.input.input.payload, failures,
          confirmation: `a copy restored from the checkpoint failed (${found.failure.how}) when given input ${found.seq} alone, after every input before it${found.resends.length ? `; ${found.resends.length} resend(s) of it skipped too` : ''}`,
        });
        const text = found.input.input.payload.toString('latin1').slice(0, 80);
        journal.record('quarantine', `POISON INPUT quarantined${entry ? ` as q${entry.id}` : ''}: input ${found.seq} "${text}" from ${found.input.client ? `${found.input.client.address}:${found.input.client.port}` : 'an unknown client'} made the guest ${found.failure.how === 'hang' ? 'hang' : 'crash'}; it is skipped in the replay and never given to a copy again`, { seq: found.seq, id: entry?.id, how: found.failure.how, resends: found.resends });
        this.p.log.error({ seq: found.seq, id: entry?.id, how: found.failure.how }, 'poison input quarantined');
        if (entry) {
          quarantined.push(entry.id);
          this.unanswered.push({ input: found.input, entry });
          this.onQuarantined?.(entry);
        }
      }
      if (out.shortfall) {
        const { handed, processed } = out.shortfall;
        journal.record('recovery', `REPLAY SHORT: the restored copy stopped at ${processed} requests processed where it was handed ${handed} (${handed - processed} never reached it); it serves from what it holds, counted from there; requests acknowledged among those may be missing from its state`, { ...out.shortfall });
        this.p.log.error({ ...out.shortfall }, 'restored copy short of the replayed log');
      }
      if (out.notReproduced) {
        journal.record('recovery', `the failure was not reproduced: a restored copy processed each of the inputs ${out.notReproduced.suspects.join(', ')} alone without failing (not deterministic: nothing quarantined)`, { suspects: out.notReproduced.suspects });
      }
      journal.record('recovery', `recovered from the checkpoint at input ${out.checkpointSeq}: ${out.replayed} logged inputs replayed, ${out.restores} restore${out.restores === 1 ? '' : 's'}, ${out.poison.length} poison input${out.poison.length === 1 ? '' : 's'} skipped${out.quarantinedSkipped ? ` (and ${out.quarantinedSkipped} logged request${out.quarantinedSkipped === 1 ? '' : 's'} already in quarantine)` : ''}, ${out.durationMs} ms`, { ...out, poison: out.poison.map((x) => x.seq) });
      this.lastRecovery = { ...out, at: new Date().toISOString(), quarantined };
      if (quarantined.length) this.sendToPartner();
      return out;
    } finally {
      this.recoveringNow = false;
    }
  }

  /** Once the board serves: the clients of the poison inputs just found get their answer. */
  answerPoisonClients(): void {
    const list = this.unanswered;
    this.unanswered = [];
    for (const { input, entry } of list) {
      if (input.input.kind !== 'request') continue;
      this.p.host.endpoint.release({ kind: 'reply', clientPort: input.input.clientPort, payload: poisonReply(requestIdOf(input.input.payload) || '-', entry.id) });
    }
  }

  /** Primary: the quarantine to the backup (after a clone, after a change). */
  sendToPartner(): void {
    const q = this.quarantine;
    const r = this.p.host.replicator;
    if (!q || this.p.ha.currentRole !== 'PRIMARY' || !r.protectedNow) return;
    const entries = q.list().slice(0, 1024);
    if (!entries.length) return;
    r.sendControl({
      type: 'quarantine',
      entries: entries.map((e) => ({
        id: e.id, key: e.key, seq: e.seq, clientAddress: e.clientAddress, clientPort: e.clientPort, payloadBase64: e.payload.toString('base64'),
        at: e.at, confirmation: e.confirmation, failures: e.failures.slice(0, 16).map((x) => ({ ...x })), status: e.status, releasedBy: e.releasedBy, releasedAt: e.releasedAt,
      })),
    });
  }

  /** Backup: the primary's quarantine. */
  onPartnerQuarantine(m: QuarantineMessage): void {
    const q = this.quarantine;
    if (!q) return;
    const changed = q.merge(m.entries.map((e) => ({
      id: e.id, key: e.key, seq: e.seq, clientAddress: e.clientAddress, clientPort: e.clientPort, requestId: '', payload: Buffer.from(e.payloadBase64, 'base64'),
      at: e.at, failures: e.failures, confirmation: e.confirmation, status: e.status, releasedAt: e.releasedAt, releasedBy: e.releasedBy, answered: 0,
    })));
    if (changed) {
      this.p.journal.record('quarantine', `${changed} quarantine entr${changed === 1 ? 'y' : 'ies'} learnt from the primary (${q.activeCount} active)`);
      this.onMerged?.();
    }
  }

  status(): Record<string, unknown> {
    return {
      quarantined: this.quarantine?.activeCount ?? 0,
      recoveries: this.recoveries,
      lastRecovery: this.lastRecovery ? { ...this.lastRecovery, poison: this.lastRecovery.poison.map((x) => ({ seq: x.seq, how: x.failure.how })) } : null,
    };
  }
}
