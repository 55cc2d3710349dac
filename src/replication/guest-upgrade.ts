/**
 * Dynamic upgrade of the guest application, the backup's half: the running clone saves its state
 * and stops (`SAVE STOP`, the guest protocol's graceful stop), the new version boots on the same
 * state disk and loads (converts) that state, and every input the old copy had not processed is
 * replayed to it from the input log, then the live stream follows — all while the primary keeps
 * serving and stays protected (the backup keeps logging and acknowledging inputs throughout).
 * The primary's half (ask, wait, switch over, re-protect) is in the daemon.
 *
 * The exact replay point: when delivery is paused at input D, the old application was given E
 * service requests in all (its `seq` counts each once) and reports having saved n of them. The
 * E - n it had not processed are the last E - n service requests delivered up to D; the replay
 * starts at the first of those. Of the AUTH answers in between only the pending REG's is replayed:
 * the old guest read the others (Replicator.restartDelivery says why).
 */
import { loadGuestDescriptor, type GuestDescriptor } from '../config/guest-descriptor.js';
import { UsError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { GuestSupervisor } from '../guest/supervisor.js';
import type { Checkpointer } from './checkpoint.js';
import type { Replicator } from './replicator.js';

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

export interface BackupUpgradeDeps {
  supervisor: GuestSupervisor;
  replicator: Replicator;
  checkpointer: Checkpointer;
  log: Logger;
  progress(step: string, detail?: string): void;
  /** The lag (inputs received, not yet given to the new guest) it must get under before it reports ready. */
  catchUpInputs?: number;
  catchUpTimeoutMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Upgrades the clone on this (backup) board to the guest described by `guestFile`. */
export async function upgradeBackupGuest(d: BackupUpgradeDeps, guestFile: string): Promise<BackupUpgradeReport> {
  const { supervisor, replicator, checkpointer } = d;
  const g: GuestDescriptor = loadGuestDescriptor(guestFile);
  const from = supervisor.guest;
  if (replicator.mode !== 'backup' || !replicator.protectedNow) throw new UsError('US_ERR_ROLE', 'guest upgrade: this board does not follow the primary');
  if (supervisor.currentState !== 'running') throw new UsError('US_ERR_NOT_RUNNING', 'guest upgrade: no clone running on this board');
  if (g.version === from.version && g.sourceFile === from.sourceFile) throw new UsError('US_ERR_CONTROL', `guest upgrade: already running ${g.name} ${g.version}`);

  checkpointer.suspended = true;
  try {
    // A checkpoint already under way pauses and resumes delivery itself: let it end first.
    await checkpointer.idle();
    d.progress('save', `${from.name} ${from.version} saves its state and stops`);
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
    d.log.info({ pausedAt, expected, savedSeq, replayFrom, logged: logged.length }, 'guest upgrade: state saved');
    // From here the clone is gone: on failure the old version can still be booted on the saved
    // state plus the log from replayFrom (a promotion does that), so no new guest is left running.
    const abandon = async (why: string): Promise<never> => {
      await supervisor.stop().catch(() => undefined);
      supervisor.useDescriptor(from);
      throw Object.assign(new UsError('US_ERR_GUEST_UPGRADE', `guest upgrade: ${why}`), { replayFrom, pausedAt });
    };

    d.progress('boot', `${g.name} ${g.version} starts on the saved state`);
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

    d.progress('replay', `logged inputs from input ${replayFrom} to ${pausedAt}, then the live stream`);
    let replayed: number;
    try {
      replayed = replicator.restartDelivery(replayFrom, logged);
    } catch (e) {
      return abandon((e as Error).message);
    }
    const limit = d.catchUpInputs ?? 20;
    const end = performance.now() + (d.catchUpTimeoutMs ?? 60000);
    for (;;) {
      const lag = replicator.lastSeq - replicator.deliveredSeq;
      if (lag <= limit && supervisor.currentState === 'running') break;
      if (supervisor.currentState !== 'running') throw new UsError('US_ERR_GUEST_UPGRADE', `guest upgrade: the new guest is ${supervisor.currentState}`);
      if (performance.now() > end) throw new UsError('US_ERR_TIMEOUT', `guest upgrade: the new guest is ${lag} inputs behind after ${d.catchUpTimeoutMs ?? 60000} ms`);
      await sleep(50);
    }
    // The new guest answers while it works through what it was given (a busy guest may take a while).
    await supervisor.inputsInGuest(d.catchUpTimeoutMs ?? 60000);
    return { from: `${from.name} ${from.version}`, to: `${g.name} ${g.version}`, savedSeq, replayFrom, replayed, bootMs };
  } finally {
    checkpointer.suspended = false;
  }
}
