/**
 * Checkpoints, kept on the backup board: a frozen copy of the clone (QEMU migration to a file) with
 * the input sequence number it contains (written by Node from a unix socket QEMU migrates to: no shell), and the log of every input received since, in SQLite. If
 * both guests are lost, the surviving controller restores the checkpoint and replays the log, so
 * every acknowledged input is back. The log is truncated after each checkpoint: disk use stays bounded
 * (one checkpoint file, the inputs of one interval).
 */
import { closeSync, existsSync, fsyncSync, openSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type Database from 'better-sqlite3';
import { UsError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { ClientMapState } from '../guest/client-map.js';
import type { GuestSupervisor } from '../guest/supervisor.js';
import { migrateToFile, recoverFromMigration } from '../hw/hypervisor/migration.js';
import type { Hypervisor } from '../hw/hypervisor/types.js';
import type { Store } from '../store/journal.js';
import type { SequencedInput } from './messages.js';
import type { Replicator } from './replicator.js';

/** The AUTH answer a checkpoint's copy had been handed for its answered question (CheckpointInfo.authAnswer). */
export function answerOf(cp: Pick<CheckpointInfo, 'authAnswer'>): Buffer | undefined {
  return cp.authAnswer ? Buffer.from(cp.authAnswer, 'base64') : undefined;
}

/** Logged inputs deleted per statement when a checkpoint truncates the log (truncateLog). */
const TRUNCATE_SLICE = 2000;

export interface CheckpointInfo {
  seq: number;
  guestSeq: number;
  at: string;
  bytes: number;
  pauseMs: number | null;
  durationMs: number;
  clients: ClientMapState;
  /** AUTH questions the clone had open at the checkpoint (their answers come later in the log). */
  authOpen?: string[];
  /** The question the clone had been handed the answer to, perhaps unread (its retransmission opens nothing). */
  authAnswered?: string;
  /**
   * That answer's bytes (base64), when the controller still had them: a restored copy that asks for
   * it again did not have it in its image, and is handed it again (Replicator.rehandAnswer). The log
   * may no longer hold it (truncated up to the checkpoint).
   */
  authAnswer?: string;
  /**
   * Logged inputs after `seq` the image already holds (AUTH answers a recovery's snapshot was taken
   * after: src/replication/poison.ts): never replayed onto it again.
   */
  alreadyIn?: number[];
}

/** How long a restore's completion is watched for, to journal how long the replay took. */
const RECOVERY_RECORD_MS = 15 * 60 * 1000;

export class Checkpointer {
  /** Writes a batch of inputs in one transaction (flushLog). */
  private readonly insertBatch: (batch: SequencedInput[]) => void;
  /** Inputs logged and not written yet: written at the end of the event loop's turn (flushLog). */
  private pending: SequencedInput[] = [];
  private flushScheduled = false;
  /** Transactions that wrote logged inputs (each one turn's worth): logged / groupCommits is the batch. */
  groupCommits = 0;
  private readonly file: string;
  /** A recovery's snapshot (snapshot()): scratch, not durable, removed when the recovery ends. */
  private readonly snapshotFile: string;
  private taking?: Promise<unknown>;
  logged = 0;
  /** Inputs logged since the last checkpoint (what the log holds, roughly). */
  private sinceCheckpoint = 0;
  private lastForcedAt = 0;
  /** Checkpoints forced because the log reached maxLoggedInputs. */
  forced = 0;
  /**
   * The input log's bound: at this many inputs logged since the last checkpoint, a checkpoint is
   * forced (it truncates the log), at most one attempt every 5 s. Set from the board profile
   * (input.inputLogMaxInputs).
   */
  maxLoggedInputs = 200000;
  private readonly startedAt: number;

  constructor(
    private readonly storageDir: string,
    private readonly store: Store,
    private readonly supervisor: GuestSupervisor,
    private readonly replicator: Replicator,
    private readonly log: Logger,
    /** When this controller started serving (ms since the epoch): older checkpoints are from an earlier start. */
    startedAt = Date.now(),
  ) {
    this.startedAt = startedAt;
    this.file = join(storageDir, 'checkpoint.img');
    this.snapshotFile = join(storageDir, 'recovery-snapshot.img');
    store.db.exec(`CREATE TABLE IF NOT EXISTS inputs (
      seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, client_port INTEGER NOT NULL,
      client_address TEXT, client_source_port INTEGER, payload BLOB NOT NULL)`);
    const insert = store.db.prepare('INSERT OR REPLACE INTO inputs (seq, kind, client_port, client_address, client_source_port, payload) VALUES (?, ?, ?, ?, ?, ?)');
    this.insertBatch = store.db.transaction((batch: SequencedInput[]) => {
      for (const s of batch) {
        const i = s.input;
        insert.run(s.seq, i.kind === 'request' ? 0 : 1, i.kind === 'request' ? i.clientPort : 0, s.client?.address ?? null, s.client?.port ?? null, i.payload);
      }
    });
  }

  /**
   * Logs one input the backup received (or a primary serving alone sequenced). Group commit: the
   * inputs of one turn of the event loop are written in one transaction, by flushLog(), which the
   * replicator calls before it acknowledges them and which runs by itself at the end of the turn
   * (setImmediate: before any later I/O, so before a reply to any of them can be read). An
   * autocommit per input cost ~10 µs of the event loop each here, against ~2 µs in batches of 16
   * (2026-12-07, better-sqlite3 in WAL with synchronous=NORMAL, as the store runs).
   */
  logInput(s: SequencedInput): void {
    this.pending.push(s);
    this.logged++;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => { this.flushScheduled = false; this.flushLog(); });
    }
    if (++this.sinceCheckpoint >= this.maxLoggedInputs) this.forceCheckpoint();
  }

  /** Writes the inputs logInput() holds, in one transaction; every reader of the log calls it first. */
  flushLog(): void {
    if (!this.pending.length) return;
    const batch = this.pending;
    this.pending = [];
    if (!this.store.db.open) {
      // The controller is stopping and closed its store before the turn ended: nothing of these
      // was acknowledged (an ACK flushes first), so the partner still holds them.
      this.log.warn({ inputs: batch.length, from: batch[0]!.seq }, 'input log closed: the last inputs of the turn were not written (none acknowledged)');
      return;
    }
    this.insertBatch(batch);
    this.groupCommits++;
  }

  /** The log is at its bound: take a checkpoint now rather than at the next interval (journaled). */
  private forceCheckpoint(): void {
    const now = performance.now();
    if (this.taking || this.suspended || this.refusal() || (this.lastForcedAt && now - this.lastForcedAt < 5000)) return;
    this.lastForcedAt = now;
    this.forced++;
    this.store.record('checkpoint', `input log holds ${this.sinceCheckpoint} inputs since the last checkpoint (input.inputLogMaxInputs ${this.maxLoggedInputs}): forcing a checkpoint to truncate it`, { logged: this.sinceCheckpoint, limit: this.maxLoggedInputs });
    this.take().catch((e: Error) => this.log.warn({ err: e.message }, 'forced checkpoint failed: the input log keeps growing until one succeeds'));
  }

  /** Inputs logged since the last checkpoint and checkpoints forced by the log's bound. */
  get logStatus(): { sinceCheckpoint: number; limit: number; forced: number; groupCommits: number; logged: number } {
    return { sinceCheckpoint: this.sinceCheckpoint, limit: this.maxLoggedInputs, forced: this.forced, groupCommits: this.groupCommits, logged: this.logged };
  }

  get info(): CheckpointInfo | undefined {
    const m = this.store.getMeta('checkpoint');
    return m && existsSync(this.file) ? (JSON.parse(m) as CheckpointInfo) : undefined;
  }

  get loggedSince(): number {
    const cp = this.info?.seq ?? 0;
    return (this.store.db.prepare('SELECT COUNT(*) AS n FROM inputs WHERE seq > ?').get(cp) as { n: number }).n;
  }

  /**
   * Backup only: freezes a copy of the running clone at an exact input, then truncates the log. A
   * checkpoint already under way (the one taken when a clone arrives, the periodic one) is let
   * finish first: the caller gets its own, at a later input.
   */
  async take(): Promise<CheckpointInfo> {
    for (let i = 0; this.taking && i < 3; i++) await this.taking;
    if (this.replicator.mode !== 'backup' || !this.replicator.protectedNow) throw new UsError('US_ERR_ROLE', 'checkpoints are taken on the backup, while it follows the primary');
    const qemu = this.supervisor.hypervisor;
    if (!qemu || this.supervisor.currentState !== 'running') throw new UsError('US_ERR_NOT_RUNNING', 'the clone is not running');
    if (this.taking) throw new UsError('US_ERR_ROLE', 'a checkpoint is already being taken');
    if (this.suspended) throw new UsError('US_ERR_ROLE', 'no checkpoint during a guest upgrade');
    this.refuseIfDiverged();
    const run = this.takeNow(qemu);
    this.taking = run.catch(() => undefined).finally(() => { this.taking = undefined; });
    return run;
  }

  /** Resolves once no checkpoint is being taken (a guest upgrade must not pause delivery under one). */
  async idle(): Promise<void> {
    await this.taking;
  }

  private takeNow(qemu: Hypervisor): Promise<CheckpointInfo> {
    // A following copy that yields its cores (board cores.followerYield) is saved at its full share.
    return this.supervisor.withFullShare(() => this.takeAt(qemu));
  }

  private async takeAt(qemu: Hypervisor): Promise<CheckpointInfo> {
    const t0 = performance.now();
    const tmp = `${this.file}.tmp`;
    const paused = this.replicator.pauseDelivery(); // inputs keep arriving, being logged and acknowledged
    try {
      // Every input delivered so far is in the clone's memory once a PING sent after them is answered.
      const processed = await this.supervisor.inputsInGuest(10000);
      const seq = this.replicator.deliveredSeq;
      const guestSeq = this.supervisor.appSeqExpected ?? 0;
      // The snapshot holds every delivered input, but a guest upgrade replays from the first request
      // the guest has not processed: keep the log from there (it may lie before seq).
      const unprocessed = processed === undefined ? 0 : guestSeq - processed;
      const keepFrom = unprocessed > 0 ? (this.nthLastRequest(seq, unprocessed) ?? seq + 1) : seq + 1;
      rmSync(tmp, { force: true });
      const { downtimeMs } = await migrateToFile(qemu, tmp, this.supervisor.paths.checkpointOut, { pollMs: 50, errorPrefix: 'checkpoint migration', onListening: (sock) => this.supervisor.giveToQemu(sock) });
      const authOpen = this.replicator.openQuestions; // the guest is stopped: what it asked so far is in the copy
      const authAnswered = this.replicator.answeredQuestion;
      const authAnswer = this.replicator.answeredQuestionAnswer?.toString('base64');
      await qemu.qmp.execute('cont');
      // The cut is fixed (seq, authOpen) and the log keeps everything after it: the guest may have its
      // inputs again now, not after the file is made durable. Its AUTH timer runs from here, and an
      // answer held behind the fsyncs of a loaded disk could outlast the guest's 5 s wait (ERR
      // AUTHUNAVAIL on the backup only: a divergence, and a re-clone).
      this.replicator.resumeDelivery(paused);
      // Found to differ from the primary while it was being frozen: it must not replace the last good one.
      this.refuseIfDiverged();
      this.install(tmp);
      const cp: CheckpointInfo = {
        seq, guestSeq, at: new Date().toISOString(), bytes: statSync(this.file).size,
        pauseMs: downtimeMs, durationMs: Math.round(performance.now() - t0),
        clients: this.replicator.clients.export(), authOpen, authAnswered, authAnswer,
      };
      this.flushLog(); // what is logged before the cut is truncated with it, not written after the DELETE
      this.store.setMeta('checkpoint', JSON.stringify(cp));
      this.sinceCheckpoint = Math.max(0, this.replicator.lastSeq - keepFrom + 1);
      // The log before the cut, in slices between which the event loop runs (a 60 000-row DELETE
      // held it for tens of ms: ACKs and digests waited). Rows left below the cut meanwhile are
      // never read (every reader starts after a checkpoint's input).
      await this.truncateLog(keepFrom);
      this.store.record('checkpoint', `checkpoint at input ${seq}: ${Math.round(cp.bytes / 1048576)} MB, clone paused ${cp.pauseMs ?? '?'} ms, ${cp.durationMs} ms`, { seq, pauseMs: cp.pauseMs });
      return cp;
    } catch (e) {
      await recoverFromMigration(qemu, { cancelActive: false });
      rmSync(tmp, { force: true });
      this.store.record('checkpoint', `checkpoint FAILED: ${(e as Error).message}`);
      throw e;
    } finally {
      this.replicator.resumeDelivery(paused);
    }
  }

  /**
   * Deletes the logged inputs before `keepFrom`, TRUNCATE_SLICE rows at a time with a turn of the
   * event loop between slices.
   */
  private async truncateLog(keepFrom: number): Promise<void> {
    const slice = this.store.db.prepare('DELETE FROM inputs WHERE seq IN (SELECT seq FROM inputs WHERE seq < ? ORDER BY seq LIMIT ?)');
    for (;;) {
      if (!this.store.db.open) return;
      const { changes } = slice.run(keepFrom, TRUNCATE_SLICE);
      if (changes < TRUNCATE_SLICE) return;
      await new Promise((r) => setImmediate(r));
    }
  }

  /**
   * Makes a finished image file durable and the checkpoint: the file, its rename, the folder, each
   * fsynced, on the event loop. Tried on libuv's pool (2026-12-07): the backup's loop then ran
   * during the 72 MB flush while the primary's, on the same disk in the simulation, waited on its
   * own journal's fsync behind it, and the backup's witness reported the primary's guest silent
   * (hang.test, "no hang reported", failed in a full run). Kept synchronous until that is measured.
   */
  private install(tmp: string): void {
    const fd = openSync(tmp, 'r');
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, this.file);
    const dir = openSync(this.storageDir, 'r');
    fsyncSync(dir);
    closeSync(dir);
  }

  /** Logged inputs from..to (inclusive), in order. */
  inputsLogged(from: number, to: number): SequencedInput[] {
    this.flushLog();
    const rows = this.store.db.prepare('SELECT * FROM inputs WHERE seq >= ? AND seq <= ? ORDER BY seq').all(from, to) as Array<{
      seq: number; kind: number; client_port: number; client_address: string | null; client_source_port: number | null; payload: Buffer;
    }>;
    return rows.map((r) => ({
      seq: r.seq,
      input: r.kind === 0 ? { kind: 'request', clientPort: r.client_port, payload: r.payload } : { kind: 'auth-reply', payload: r.payload },
      client: r.client_address ? { address: r.client_address, port: r.client_source_port ?? 0 } : undefined,
    }));
  }

  /** Sequence number of the n-th last service request (n ≥ 1) logged at or before `upTo`; undefined if the log does not reach back. */
  nthLastRequest(upTo: number, n: number): number | undefined {
    this.flushLog();
    const row = this.store.db.prepare('SELECT seq FROM inputs WHERE seq <= ? AND kind = 0 ORDER BY seq DESC LIMIT 1 OFFSET ?').get(upTo, n - 1) as { seq: number } | undefined;
    return row?.seq;
  }

  /** While set (a guest upgrade on this board), no checkpoint is taken and the log is not truncated. */
  suspended = false;
  /**
   * Why the running copy must not be checkpointed, if it must not: it is known to differ from the
   * primary's (a divergence or lost inputs since its clone), and a checkpoint of it would replace
   * the last one taken before it went wrong (src/pair/protection.ts).
   */
  refusal: () => string | undefined = () => undefined;

  private refuseIfDiverged(): void {
    const refused = this.refusal();
    if (refused) throw new UsError('US_ERR_ROLE', `no checkpoint of this copy: ${refused}`);
  }

  /**
   * Both guests lost: start the guest from the checkpoint and replay every logged input after it,
   * in order. Resolves with how many inputs were replayed.
   */
  async restore(): Promise<{ seq: number; replayed: number }> {
    const t0 = performance.now();
    const cp = await this.restoreImage();
    const skip = new Set(cp.alreadyIn ?? []);
    const inputs = this.inputsLogged(cp.seq + 1, Number.MAX_SAFE_INTEGER).filter((s) => !skip.has(s.seq));
    this.replicator.replay(cp.seq, inputs, cp.authOpen ?? [], cp.authAnswered, answerOf(cp));
    this.store.record('checkpoint', `restored the checkpoint at input ${cp.seq} and replayed ${inputs.length} logged inputs`, { seq: cp.seq, replayed: inputs.length });
    this.log.warn({ seq: cp.seq, replayed: inputs.length }, 'guest restored from checkpoint + input log');
    // The board serves meanwhile (new requests queue behind the replay in the guest); when the guest
    // has processed all of it is recorded on its own, for operators and bench/replication.
    void this.recordRecovery(t0, inputs.length).catch(() => undefined); // the store may close first (controller stopping)
    return { seq: cp.seq, replayed: inputs.length };
  }

  /**
   * Starts the guest from the checkpoint's image, holding it at the checkpoint's input (nothing is
   * replayed: the caller hands it the log, all at once or in parts). Delivery stays held meanwhile:
   * QEMU connects the guest's NIC before it has loaded the state, and inputs queued for the copy
   * that failed reached the new one ahead of the replay (AUTH answers out of step).
   */
  async restoreImage(snapshot?: CheckpointInfo): Promise<CheckpointInfo> {
    // A checkpoint under way may rename its image over the file between this read of the record
    // and QEMU opening the file: read the record once it is done, or QEMU could load the new image
    // from the old record's input on.
    if (!snapshot) await this.idle();
    const cp = snapshot ?? this.info;
    if (!cp) throw new UsError('US_ERR_NOT_FOUND', 'no checkpoint on this board');
    const file = snapshot ? this.snapshotFile : this.file;
    if (snapshot && !existsSync(file)) throw new UsError('US_ERR_NOT_FOUND', `no recovery snapshot at ${file}`);
    const t0 = performance.now();
    this.replicator.holdDelivery();
    await this.supervisor.stop();
    const t1 = performance.now();
    // QEMU reads the image itself (-incoming fd:): 40 ms for 72 MB, where feeding it through a socket
    // from here took 0.2-0.7 s under TCG on a loaded board (and a clone target's QEMU, already started
    // and waiting at its socket when a promotion abandons it, was no quicker to feed than a new one).
    await this.supervisor.startClone({ file });
    const t2 = performance.now();
    this.replicator.clients.import(cp.clients);
    this.supervisor.expectAppSeq(cp.guestSeq, cp.authOpen ?? [], cp.authAnswered);
    this.log.info({ seq: cp.seq, guestSeq: cp.guestSeq, authOpen: cp.authOpen ?? [], authAnswered: cp.authAnswered ?? null, answerKept: cp.authAnswer !== undefined, snapshot: !!snapshot }, 'restoring an image: the count and AUTH questions it holds');
    await this.supervisor.finishClone();
    const ms = (a: number, b: number) => Math.round(b - a);
    this.store.record('checkpoint', `${snapshot ? 'recovery snapshot' : 'checkpoint image'} at input ${cp.seq} running in ${ms(t0, performance.now())} ms (old copy stopped ${ms(t0, t1)}, QEMU started ${ms(t1, t2)}, image loaded and resumed ${ms(t2, performance.now())})`, { seq: cp.seq });
    return cp;
  }

  /**
   * A recovery's snapshot: the restored copy, which has processed the log up to `seq` (and the inputs
   * `alreadyIn` after it), saved to a scratch file, so that the next restore of this recovery
   * (restoreImage(snapshot)) does not replay that part of the log again. Not the checkpoint and not
   * made durable: it serves this recovery only, and a restart mid-recovery restores the checkpoint and
   * replays the whole log, which is kept (nothing is truncated). Installed as the checkpoint (fsync of
   * 72 MB, rename, folder fsync), it cost 0.15-0.4 s more of the outage. The copy runs on.
   */
  async snapshot(seq: number, alreadyIn: number[]): Promise<CheckpointInfo> {
    const t0 = performance.now();
    const qemu = this.supervisor.hypervisor;
    if (!qemu || this.supervisor.currentState !== 'running') throw new UsError('US_ERR_NOT_RUNNING', 'the restored copy is not running');
    const tmp = `${this.snapshotFile}.tmp`;
    rmSync(tmp, { force: true });
    const guestSeq = this.supervisor.appSeqExpected ?? 0;
    try {
      const { downtimeMs } = await migrateToFile(qemu, tmp, this.supervisor.paths.checkpointOut, { pollMs: 20, errorPrefix: 'recovery snapshot', onListening: (sock) => this.supervisor.giveToQemu(sock) });
      const authOpen = this.replicator.openQuestions;
      const authAnswered = this.replicator.answeredQuestion;
      const authAnswer = this.replicator.answeredQuestionAnswer?.toString('base64');
      await qemu.qmp.execute('cont');
      renameSync(tmp, this.snapshotFile);
      const cp: CheckpointInfo = {
        seq, guestSeq, at: new Date().toISOString(), bytes: statSync(this.snapshotFile).size, pauseMs: downtimeMs,
        durationMs: Math.round(performance.now() - t0), clients: this.replicator.clients.export(), authOpen, authAnswered, authAnswer, alreadyIn,
      };
      this.store.record('checkpoint', `recovery snapshot at input ${seq}: ${Math.round(cp.bytes / 1048576)} MB, ${cp.durationMs} ms`, { seq, pauseMs: cp.pauseMs });
      return cp;
    } catch (e) {
      await recoverFromMigration(qemu, { cancelActive: false });
      rmSync(tmp, { force: true });
      throw e;
    }
  }

  /**
   * The checkpoint here was taken before this controller started: it belongs to a stream this board
   * stopped following when it went down (what the primary acknowledged since is not in its log).
   */
  get fromEarlierStart(): boolean {
    const cp = this.info;
    return !!cp && this.takenEarlier(cp);
  }

  /**
   * This board can rebuild the stream's state up to `lastSeq` from what it holds: a checkpoint taken
   * since this controller started and a log that reaches `lastSeq`. Read by the HA layer (a backup
   * holding none of its primary's state does not fence it on silence alone): one meta read and a
   * count of the inputs since the checkpoint.
   */
  rebuilds(lastSeq: number): boolean {
    const cp = this.info;
    return lastSeq > 0 && !!cp && !this.takenEarlier(cp) && this.covers(cp, lastSeq);
  }

  /**
   * Whether the checkpoint and the log hold the whole stream up to `lastSeq` (every input after the
   * checkpoint logged, none missing): only then can a copy be rebuilt from them.
   */
  logCovers(lastSeq: number): boolean {
    const cp = this.info;
    return !!cp && this.covers(cp, lastSeq);
  }

  private takenEarlier(cp: CheckpointInfo): boolean {
    return Date.parse(cp.at) < this.startedAt;
  }

  private covers(cp: CheckpointInfo, lastSeq: number): boolean {
    if (lastSeq <= cp.seq) return true;
    this.flushLog();
    const r = this.store.db.prepare('SELECT COUNT(*) AS n, MAX(seq) AS top FROM inputs WHERE seq > ? AND seq <= ?').get(cp.seq, lastSeq) as { n: number; top: number | null };
    return r.n === lastSeq - cp.seq && r.top === lastSeq;
  }

  /**
   * A guarded restore (src/replication/poison.ts) ended: journaled as a plain restore is, for
   * operators and the benchmarks. `caughtUp`: the copy has processed every replayed input already
   * (otherwise that is watched for and journaled when it has).
   */
  noteRestored(seq: number, replayed: number, t0: number, caughtUp: boolean): void {
    rmSync(this.snapshotFile, { force: true }); // the recovery's snapshot, if it took one, is done with
    this.store.record('checkpoint', `restored the checkpoint at input ${seq} and replayed ${replayed} logged inputs`, { seq, replayed });
    if (caughtUp) {
      const durationMs = Math.round(performance.now() - t0);
      this.store.record('checkpoint', `the restored guest has processed the ${replayed} replayed inputs, ${durationMs} ms after the restore began`, { replayed, durationMs });
    } else void this.recordRecovery(t0, replayed).catch(() => undefined);
  }

  private async recordRecovery(t0: number, replayed: number): Promise<void> {
    // Bounded by time, not by a count of looks: a long log replays for minutes (every REG waits
    // for its guest's AUTH question), and the record is what operators and bench/replication read.
    const end = performance.now() + RECOVERY_RECORD_MS;
    while (performance.now() < end) {
      const state = this.supervisor.currentState;
      if (state === 'stopped' || state === 'failed') return; // the restored guest is gone
      if (this.replicator.queuedLocally === 0 && (await this.supervisor.drained().catch(() => false))) {
        const durationMs = Math.round(performance.now() - t0);
        this.store.record('checkpoint', `the restored guest has processed the ${replayed} replayed inputs, ${durationMs} ms after the restore began`, { replayed, durationMs });
        return;
      }
      await sleep(100);
    }
  }
}
