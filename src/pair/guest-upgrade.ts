/**
 * Upgrading the pair's guest application while it serves, both halves, and the replay point.
 *
 * Primary (`run`): asks the backup to replace its clone by the new version, waits for it to report
 * ready, switches over keeping its own copy (the new primary is protected by it), then commits (the
 * new version is cloned back here) or, with `hold`, waits for `commit` / `rollback`.
 *
 * Backup (`onPrepare` → `replaceClone`): the running clone saves its state and stops (`SAVE STOP`,
 * the guest protocol's graceful stop), the new version boots on the same state disk and loads
 * (converts) that state, and every input the old copy had not processed is replayed to it from the
 * input log, then the live stream follows — all while the primary keeps serving and stays
 * protected (the backup keeps logging and acknowledging inputs throughout).
 *
 * The exact replay point: when delivery is paused at input D, the old application was given E
 * service requests in all (its `seq` counts each once) and reports having saved n of them. The
 * E - n it had not processed are the last E - n service requests delivered up to D; the replay
 * starts at the first of those. Of the AUTH answers in between only the pending REG's is replayed:
 * the old guest read the others (Replicator.restartDelivery says why). If the upgrade fails after
 * the save, no guest is left running and the replay point stays here: a promotion boots the old
 * version on the saved state and replays the log from it (`resumeFromSavedState`, the controller's
 * `replay-saved-state` effect). A new clone makes it meaningless (`onCloneTargetRunning`).
 */
import { loadGuestDescriptor, loadPartnerGuestDescriptor, partnerNameOf, type GuestDescriptor } from '../config/guest-descriptor.js';
import { UsError } from '../core/errors.js';
import { inputsAfterSave } from '../replication/replicator.js';
import type { ControlMessage } from '../replication/messages.js';
import { requirePrimary, until, type Journal, type PairParts } from './parts.js';
import type { Switchover } from './switchover.js';

export interface GuestUpgradeState {
  from: string;
  to: string;
  guestFile: string;
  step: 'backup' | 'switchover' | 'switched' | 'reprotect' | 'done' | 'aborted';
  startedAt: string;
  endedAt?: string;
  detail?: string;
  replayed?: number;
  error?: string;
}

export interface BackupUpgradeReport {
  from: string;
  to: string;
  /** Service requests in the saved state. */
  savedSeq: number;
  /** First input replayed to the new version. */
  replayFrom: number;
  replayed: number;
  bootMs: number;
}

/** The guest saved its state for an upgrade that did not complete: the log from `replayFrom` completes it. */
export interface SavedState {
  replayFrom: number;
  pausedAt: number;
}

export interface GuestUpgradeOptions {
  /** The lag (inputs received, not yet given to the new guest) the backup must get under before it reports ready. */
  catchUpInputs?: number;
  catchUpTimeoutMs?: number;
  /** How long the primary waits for the backup to report ready. */
  backupTimeoutMs?: number;
}

/** How long an upgrade waits for a clone under way before it starts (refused after that). */
const CLONE_WAIT_MS = 180000;
/** Backup: how long a guest upgrade asked for while a clone that has just arrived is resuming waits for it to run. */
const CLONE_RESUME_WAIT_MS = 30000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class GuestUpgrade {
  /** The upgrade this board (as primary) runs, and the last one's outcome. */
  private current?: GuestUpgradeState;
  private last?: GuestUpgradeState;
  /** Primary: the backup copy is the partner's previous version (an upgrade not committed yet). */
  private partnerCopy = false;
  /** Backup: set while this board replaces its clone by the new version (a promotion waits for it). */
  private local?: Promise<void>;
  private savedState?: SavedState;
  private waiter?: { resolve(m: { version: string; replayed: number }): void; reject(e: Error): void };

  constructor(private readonly p: PairParts, private readonly switchover: Switchover, private readonly o: GuestUpgradeOptions = {}) {}

  /** An upgrade is under way on this board (either half): the loss watch stays quiet. */
  get busy(): boolean {
    return this.current !== undefined || this.local !== undefined;
  }

  /** Backup: this board is replacing its clone right now. */
  get replacingClone(): boolean {
    return this.local !== undefined;
  }

  /** Primary: waiting for the backup to replace its clone (a re-clone request then is left to the upgrade). */
  get waitingForBackup(): boolean {
    return this.current?.step === 'backup';
  }

  get hasSavedState(): boolean {
    return this.savedState !== undefined;
  }

  /** Resolves once no clone replacement runs here (a promotion finishes it before serving). */
  async settled(): Promise<void> {
    await this.local;
  }

  status(): Record<string, unknown> {
    return { guestUpgrade: this.current ?? null, partnerRunsPreviousVersion: this.partnerCopy, lastGuestUpgrade: this.last ?? null };
  }

  // ------------------------------------------------------------------ primary half
  async run(guestFile: string, hold = false): Promise<Record<string, unknown>> {
    const clones = requirePrimary(this.p, 'guest upgrade');
    const { host, journal } = this.p;
    if (this.current) throw new UsError('US_ERR_ROLE', `guest upgrade: one is already running (to ${this.current.to})`);
    if (clones.cloneInProgress) {
      // A clone under way (a re-clone after a divergence, a previous upgrade's commit) ends within
      // seconds: wait for it rather than refuse the operator.
      journal.record('guest-upgrade', 'guest upgrade: waiting for the clone under way to finish before starting');
      await until(() => !clones.cloneInProgress, CLONE_WAIT_MS, 'guest upgrade: the clone under way did not finish').catch(() => undefined);
      const other = this.current as GuestUpgradeState | undefined; // one may have begun meanwhile
      if (other) throw new UsError('US_ERR_ROLE', `guest upgrade: one is already running (to ${other.to})`);
    }
    if (!host.replicator.protectedNow || clones.cloneInProgress) throw new UsError('US_ERR_ROLE', 'guest upgrade: the pair is not protected (the backup holds no clone in sync); see understudy status');
    const g = loadGuestDescriptor(guestFile);
    const from = host.supervisor.guest;
    if (g.version === from.version) throw new UsError('US_ERR_CONTROL', `guest upgrade: the guest already runs version ${g.version}`);
    const t0 = Date.now();
    const st: GuestUpgradeState = { from: from.version, to: g.version, guestFile: g.sourceFile, step: 'backup', startedAt: new Date(t0).toISOString() };
    this.current = st;
    const step = (s: GuestUpgradeState['step'], msg: string) => { st.step = s; st.detail = msg; journal.record('guest-upgrade', msg, { step: s }); };
    step('backup', `upgrading the guest from ${from.name} ${from.version} to ${g.name} ${g.version}: the backup replaces its clone first`);
    try {
      const ready = await this.backupReady(g);
      st.replayed = ready.replayed;
      step('switchover', `backup runs ${g.version} and has caught up (${ready.replayed} inputs replayed): switching over, this board keeping its ${from.version} copy`);
      await this.switchover.handOver(true);
      await until(() => host.replicator.mode === 'backup' && host.replicator.protectedNow, 60000, 'guest upgrade: this board did not become the backup of the new version');
      if (hold) {
        step('switched', `the partner serves ${g.version}, this board follows it with ${from.version}: commit (understudy guest upgrade --commit) or roll back (--rollback on the partner)`);
        return { board: this.p.board.name, from: from.version, to: g.version, replayed: ready.replayed, durationMs: Date.now() - t0, awaitingCommit: true };
      }
      step('reprotect', `the partner serves ${g.version}; committing: it clones ${g.version} to this board`);
      host.replicator.sendControl({ type: 'guest-upgrade-commit' });
      await until(() => host.replicator.mode === 'backup' && host.replicator.protectedNow && host.guestRunning && host.supervisor.guest.version === g.version,
        300000, `guest upgrade: this board did not receive a ${g.version} clone within 300 s (the partner serves ${g.version})`);
      step('done', `guest upgrade to ${g.name} ${g.version} complete in ${Math.round((Date.now() - t0) / 1000)} s: both boards run it, the pair is protected`);
      return { board: this.p.board.name, from: from.version, to: g.version, replayed: ready.replayed, durationMs: Date.now() - t0 };
    } catch (e) {
      const before = st.step === 'backup';
      st.step = 'aborted';
      st.error = (e as Error).message;
      journal.record('guest-upgrade', `guest upgrade ABORTED (${(e as Error).message})${before ? `: the pair stays on ${from.version}, the backup is cloned again` : ''}`);
      // The backup's clone may be gone (saved and stopped): clone the old version to it again.
      if (before && this.p.ha.currentRole === 'PRIMARY') host.replicator.unprotect(`guest upgrade aborted: ${(e as Error).message}`);
      throw e instanceof UsError ? e : new UsError('US_ERR_GUEST_UPGRADE', (e as Error).message);
    } finally {
      this.waiter = undefined;
      this.last = { ...st, endedAt: new Date().toISOString() };
      this.current = undefined;
    }
  }

  /** Asks the backup to replace its clone; resolves when it reports ready. */
  private backupReady(g: GuestDescriptor): Promise<{ version: string; replayed: number }> {
    const r = this.p.host.replicator;
    const ms = this.o.backupTimeoutMs ?? 300000;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new UsError('US_ERR_TIMEOUT', `guest upgrade: the backup did not report within ${ms / 1000} s`)), ms);
      const lost = () => reject(new UsError('US_ERR_GUEST_UPGRADE', 'guest upgrade: the backup stopped acknowledging inputs'));
      r.once('unprotected', lost);
      this.waiter = {
        resolve: (m) => { clearTimeout(timer); r.off('unprotected', lost); resolve(m); },
        reject: (e) => { clearTimeout(timer); r.off('unprotected', lost); reject(e); },
      };
      r.sendControl({ type: 'guest-upgrade-prepare', guestFile: partnerNameOf(g, this.p.board.storageDir), version: g.version });
    });
  }

  /** Control messages of the backup's half, seen by the primary. */
  onBackupReport(m: Extract<ControlMessage, { type: 'guest-upgrade-progress' | 'guest-upgrade-ready' | 'guest-upgrade-failed' }>): void {
    if (m.type === 'guest-upgrade-progress') {
      if (!this.current) return;
      this.current.detail = `${m.step}${m.detail ? `: ${m.detail}` : ''}`;
      this.p.journal.record('guest-upgrade', this.current.detail);
    } else if (m.type === 'guest-upgrade-ready') {
      this.waiter?.resolve(m);
    } else {
      this.waiter?.reject(new UsError('US_ERR_GUEST_UPGRADE', `the backup could not upgrade its guest: ${m.reason}`));
    }
  }

  /** Commit a guest upgrade held after its switchover: the new version is cloned over the partner's previous copy. */
  async commit(): Promise<Record<string, unknown>> {
    const { host, journal, board } = this.p;
    if (this.p.ha.currentRole === 'BACKUP') {
      if (!host.replicator.followsAnotherVersion || !host.replicator.protectedNow) {
        throw new UsError('US_ERR_ROLE', 'guest upgrade --commit: nothing to commit (this board\'s copy is not a previous version following the primary)');
      }
      host.replicator.sendControl({ type: 'guest-upgrade-commit' });
      return { board: board.name, commit: 'requested from the primary' };
    }
    const clones = requirePrimary(this.p, 'guest upgrade --commit');
    if (!this.partnerCopy) throw new UsError('US_ERR_ROLE', 'guest upgrade --commit: no upgrade waits for a commit (the backup runs this board\'s version)');
    journal.record('guest-upgrade', `upgrade committed: cloning ${host.supervisor.guest.version} over the partner's previous copy`);
    const rep = await clones.clone();
    return { board: board.name, committed: host.supervisor.guest.version, clone: rep };
  }

  /** Roll a held guest upgrade back: switch over to the partner's previous copy, which then clones itself back here. */
  async rollback(): Promise<Record<string, unknown>> {
    requirePrimary(this.p, 'guest upgrade --rollback');
    if (!this.partnerCopy) throw new UsError('US_ERR_ROLE', 'guest upgrade --rollback: the backup holds no previous version (nothing to roll back, or already committed)');
    const version = this.p.host.supervisor.guest.version;
    this.p.journal.record('guest-upgrade', `rolling back: handing the primary role back to the partner's previous copy; ${version} is then replaced by its clone`);
    const r = await this.switchover.handOver(false);
    return { board: this.p.board.name, rolledBackFrom: version, ...r };
  }

  /** Promoted with the partner's previous copy as its protection (the switchover of `run`). */
  onProtectedByPreviousCopy(): void {
    this.partnerCopy = true;
    this.p.journal.record('guest-upgrade', `protected by the partner's previous copy of the guest until the upgrade is committed (understudy guest upgrade --commit) or rolled back (--rollback)`);
  }

  /** A clone reached the partner: its copy is this board's version again. */
  onCloned(): void {
    this.partnerCopy = false;
  }

  /** A new clone runs on this board: a saved state of the old copy means nothing any more. */
  onCloneTargetRunning(): void {
    this.savedState = undefined;
  }

  // ------------------------------------------------------------------ backup half
  /** Backup: the primary asked this board to replace its clone by another version of the guest. */
  onPrepare(guestFile: string): Promise<void> {
    this.local ??= this.replaceCloneAndReport(guestFile).finally(() => { this.local = undefined; });
    return this.local;
  }

  private async replaceCloneAndReport(guestFile: string): Promise<void> {
    const { host, journal } = this.p;
    if (!this.p.checkpoints) return;
    const send = (m: ControlMessage) => host.replicator.sendControl(m);
    try {
      const report = await this.replaceClone(guestFile, (step, detail) => {
        journal.record('guest-upgrade', `${step}${detail ? `: ${detail}` : ''}`);
        send({ type: 'guest-upgrade-progress', step, detail });
      });
      this.rememberDescriptor(host.supervisor.guest, 'guest upgrade');
      journal.record('guest-upgrade', `clone upgraded from ${report.from} to ${report.to}: state of ${report.savedSeq} requests loaded, ${report.replayed} inputs replayed from input ${report.replayFrom}, booted in ${report.bootMs} ms`, { ...report });
      send({ type: 'guest-upgrade-ready', version: host.supervisor.guest.version, replayed: report.replayed });
    } catch (e) {
      journal.record('guest-upgrade', `clone upgrade FAILED: ${(e as Error).message}`);
      send({ type: 'guest-upgrade-failed', reason: (e as Error).message });
    }
  }

  /** Replaces the clone on this (backup) board by the guest described by `guestFile`. */
  private async replaceClone(guestFile: string, progress: (step: string, detail?: string) => void): Promise<BackupUpgradeReport> {
    const { supervisor, replicator } = this.p.host;
    const checkpointer = this.p.checkpoints!;
    const log = this.p.log;
    this.savedState = undefined;
    // The primary names the descriptor: only one beside this board's own is read.
    const g: GuestDescriptor = loadPartnerGuestDescriptor(guestFile, supervisor.guest.sourceFile, 'guest-upgrade-prepare guestFile', this.p.board.storageDir);
    const from = supervisor.guest;
    if (replicator.mode !== 'backup' || !replicator.protectedNow) throw new UsError('US_ERR_ROLE', 'guest upgrade: this board does not follow the primary');
    // A clone that has just arrived may still be resuming here when the primary, its clone complete,
    // asks (a full run, 2026-12-05: asked 0.3 s after the clone completed, "no clone running", aborted).
    if (supervisor.currentState === 'starting') {
      await until(() => supervisor.currentState !== 'starting', CLONE_RESUME_WAIT_MS, 'the clone arriving on this board did not run').catch(() => undefined);
    }
    if (supervisor.currentState !== 'running') throw new UsError('US_ERR_NOT_RUNNING', 'guest upgrade: no clone running on this board');
    if (g.version === from.version && g.sourceFile === from.sourceFile) throw new UsError('US_ERR_CONTROL', `guest upgrade: already running ${g.name} ${g.version}`);

    checkpointer.suspended = true;
    try {
      // A checkpoint already under way pauses and resumes delivery itself: let it end first.
      await checkpointer.idle();
      progress('save', `${from.name} ${from.version} saves its state and stops`);
      replicator.pauseDelivery();
      const pausedAt = replicator.deliveredSeq;
      const expected = supervisor.appSeqExpected;
      const reply = await supervisor.port.management('SAVE STOP', 15000);
      const m = /^OK SAVE (\d+) seq=(\d+)/.exec(reply);
      if (!m) {
        replicator.resumeDelivery(); // the old copy keeps running on a failed save
        throw new UsError('US_ERR_GUEST_UPGRADE', `guest upgrade: the clone could not save its state: ${reply}`);
      }
      const savedSeq = Number(m[2]);
      if (expected === undefined || savedSeq > expected) {
        throw new UsError('US_ERR_GUEST_UPGRADE', `guest upgrade: saved state holds ${savedSeq} requests, ${expected ?? 'an unknown number'} were delivered: no exact replay point`);
      }
      const unprocessed = expected - savedSeq;
      const replayFrom = unprocessed === 0 ? pausedAt + 1 : checkpointer.nthLastRequest(pausedAt, unprocessed);
      if (replayFrom === undefined) throw new UsError('US_ERR_GUEST_UPGRADE', `guest upgrade: the input log does not reach back ${unprocessed} requests`);
      const logged = checkpointer.inputsLogged(replayFrom, pausedAt);
      log.info({ pausedAt, expected, savedSeq, replayFrom, logged: logged.length }, 'guest upgrade: state saved');
      // From here the clone is gone: on failure the old version can still be booted on the saved
      // state plus the log from replayFrom (a promotion does that), so no new guest is left running.
      const abandon = async (why: string): Promise<never> => {
        await supervisor.stop().catch(() => undefined);
        supervisor.useDescriptor(from);
        this.savedState = { replayFrom, pausedAt };
        throw new UsError('US_ERR_GUEST_UPGRADE', `guest upgrade: ${why}`);
      };

      progress('boot', `${g.name} ${g.version} starts on the saved state`);
      await supervisor.stop();
      supervisor.useDescriptor(g);
      const t0 = performance.now();
      try {
        await supervisor.start();
      } catch (e) {
        return abandon(`${g.name} ${g.version} did not start: ${(e as Error).message}`);
      }
      const bootMs = Math.round(performance.now() - t0);
      const st = await supervisor.status();
      const wrong = st.appVersion !== g.version
        ? `the new guest reports version ${st.appVersion ?? '?'}, expected ${g.version}`
        : supervisor.appSeqExpected !== savedSeq
          ? `the new guest started at request ${supervisor.appSeqExpected ?? '?'}, not at the saved ${savedSeq}: it did not load the state`
          : undefined;
      if (wrong) return abandon(wrong);

      progress('replay', `logged inputs from input ${replayFrom} to ${pausedAt}, then the live stream`);
      let replayed: number;
      try {
        replayed = replicator.restartDelivery(replayFrom, logged);
      } catch (e) {
        return abandon((e as Error).message);
      }
      const limit = this.o.catchUpInputs ?? 20;
      const catchUpMs = this.o.catchUpTimeoutMs ?? 60000;
      const end = performance.now() + catchUpMs;
      for (;;) {
        const lag = replicator.lastSeq - replicator.deliveredSeq;
        if (lag <= limit && supervisor.currentState === 'running') break;
        if (supervisor.currentState !== 'running') throw new UsError('US_ERR_GUEST_UPGRADE', `guest upgrade: the new guest is ${supervisor.currentState}`);
        if (performance.now() > end) throw new UsError('US_ERR_TIMEOUT', `guest upgrade: the new guest is ${lag} inputs behind after ${catchUpMs} ms`);
        await sleep(50);
      }
      // The new guest answers while it works through what it was given (a busy guest may take a while).
      await supervisor.inputsInGuest(catchUpMs);
      return { from: `${from.name} ${from.version}`, to: `${g.name} ${g.version}`, savedSeq, replayFrom, replayed, bootMs };
    } finally {
      checkpointer.suspended = false;
    }
  }

  /**
   * The controller's `replay-saved-state` effect: promoted with no guest running after an upgrade
   * that failed past the save. Boots the (old) guest on the saved state and replays every logged
   * input after it. Returns false when there is no saved state to resume.
   */
  async resumeFromSavedState(): Promise<boolean> {
    const saved = this.savedState;
    const cp = this.p.checkpoints;
    if (!saved || !cp) return false;
    const { supervisor, replicator } = this.p.host;
    this.p.journal.record('guest', `promoted without a running guest: booting on the state saved for the upgrade and replaying the input log from input ${saved.replayFrom}`);
    await supervisor.start();
    replicator.replay(saved.replayFrom - 1, inputsAfterSave(cp.inputsLogged(saved.replayFrom, Number.MAX_SAFE_INTEGER), saved.pausedAt));
    this.savedState = undefined;
    return true;
  }

  // ------------------------------------------------------------------ which guest this board runs
  rememberDescriptor(g: GuestDescriptor, why: string): void {
    this.p.journal.setMeta('guestFile', g.sourceFile);
    this.p.journal.record('guest', `guest is now ${g.name} ${g.version} (${why})`, { file: g.sourceFile, version: g.version });
  }
}

/** The descriptor a board last ran survives a controller restart (it may differ from --guest after an upgrade). */
export function restoreGuestDescriptor(supervisor: Pick<PairParts['host']['supervisor'], 'guest' | 'useDescriptor'>, journal: Journal): void {
  const saved = journal.getMeta('guestFile');
  if (!saved || saved === supervisor.guest.sourceFile) return;
  try {
    supervisor.useDescriptor(loadGuestDescriptor(saved));
    journal.record('guest', `running ${supervisor.guest.name} ${supervisor.guest.version} (${saved}), the descriptor this board last ran`);
  } catch (e) {
    journal.record('guest', `the descriptor this board last ran (${saved}) cannot be used: ${(e as Error).message}; using ${supervisor.guest.sourceFile}`);
  }
}
