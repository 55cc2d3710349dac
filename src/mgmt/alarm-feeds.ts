/**
 * What feeds the alarm list (src/store/alarms.ts) from the parts the daemon composes: the guest
 * supervisor (guest-restarted), the replicator, the input-loss watch and the clone manager
 * (replica-repaired), and a periodic check of the limits of the profile's `alarms` section
 * (pair-unprotected, disk-space-low, memory-high, clock-jump). The HA layer raises its own (partner
 * links, fencing, the partner left off, the watchdog) and the console's lockout is fed where the
 * console is started (management.ts). Only raises and clears; decides nothing for the pair.
 */
import { statfsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { BoardProfile } from '../config/board-profile.js';
import type { AlarmList } from '../store/alarms.js';

/** The narrow views of the parts this module listens to (the real ones satisfy them). */
export interface AlarmSources {
  supervisor?: { on(ev: 'state', fn: (s: string, cause: string) => void): unknown; off(ev: 'state', fn: (s: string, cause: string) => void): unknown };
  replicator?: {
    on(ev: 'divergence', fn: (key: string) => void): unknown; off(ev: 'divergence', fn: (key: string) => void): unknown;
    status(): { protected: boolean; unprotectedReason?: string | null };
  };
  lossWatch?: { on(ev: 'loss', fn: (l: unknown) => void): unknown; off(ev: 'loss', fn: (l: unknown) => void): unknown };
  clones?: { on(ev: 'cloned', fn: () => void): unknown; off(ev: 'cloned', fn: () => void): unknown };
  /** The board's role now (PRIMARY, BACKUP, … or STANDALONE). */
  role(): string;
}

/** Free space of a file system in percent, or undefined when it cannot be read. */
export function freePercent(path: string): number | undefined {
  try {
    const s = statfsSync(path);
    return s.blocks > 0 ? (s.bavail / s.blocks) * 100 : undefined;
  } catch {
    return undefined;
  }
}

export interface LimitReadings {
  diskFreePercent?: number;
  rssMb: number;
  /** How far the wall clock moved against the monotonic clock since the last check (ms, signed). */
  clockStepMs: number;
}

/**
 * The limit alarms from one set of readings, with hysteresis: returns what to raise (a text) or
 * clear (undefined) per alarm type. Pure, for the unit tests.
 */
export function limitVerdicts(limits: BoardProfile['alarms'], r: LimitReadings, active: { disk: boolean; memory: boolean }): {
  disk: string | undefined; memory: string | undefined; clockStep: string | undefined;
} {
  const disk = r.diskFreePercent === undefined ? (active.disk ? 'storage directory unreadable' : undefined)
    : r.diskFreePercent < limits.diskFreeMinPercent || (active.disk && r.diskFreePercent < limits.diskFreeMinPercent + 2)
      ? `${r.diskFreePercent.toFixed(1)} % free on the storage directory's file system (alarms.diskFreeMinPercent ${limits.diskFreeMinPercent})` : undefined;
  const memory = r.rssMb > limits.controllerRssMaxMb || (active.memory && r.rssMb > 0.9 * limits.controllerRssMaxMb)
    ? `controller resident memory ${Math.round(r.rssMb)} MB (alarms.controllerRssMaxMb ${limits.controllerRssMaxMb})` : undefined;
  const clockStep = Math.abs(r.clockStepMs) > limits.clockStepMaxMs
    ? `the wall clock stepped ${r.clockStepMs > 0 ? 'forward' : 'back'} ${Math.round(Math.abs(r.clockStepMs))} ms (alarms.clockStepMaxMs ${limits.clockStepMaxMs})` : undefined;
  return { disk, memory, clockStep };
}

/** A clock-jump alarm clears after this long without another step. */
const CLOCK_JUMP_CLEAR_MS = 3600_000;

/** Starts feeding; returns the function that stops it. */
export function feedAlarms(board: BoardProfile, alarms: AlarmList, src: AlarmSources): () => void {
  const limits = board.alarms;
  const offs: Array<() => void> = [];
  const guest = alarms.resource('guest');
  const replica = alarms.resource('pair/backup-copy');
  if (src.supervisor) {
    const onState = (s: string, cause: string) => {
      if (s === 'restarting') alarms.raise('guest-restarted', guest, `guest restarting: ${cause}`);
      else if (s === 'failed') alarms.raise('guest-restarted', guest, `guest given up: ${cause}`, { severity: 'critical' });
      else if (s === 'running') alarms.clear('guest-restarted', guest, `guest running again: ${cause}`);
    };
    src.supervisor.on('state', onState);
    offs.push(() => src.supervisor!.off('state', onState));
  }
  if (src.replicator) {
    const onDivergence = (key: string) => alarms.raise('replica-repaired', replica, `the backup's reply to ${key} differs from the primary's: re-cloning`, { qualifier: 'divergence' });
    src.replicator.on('divergence', onDivergence);
    offs.push(() => src.replicator!.off('divergence', onDivergence));
  }
  if (src.lossWatch) {
    const onLoss = () => alarms.raise('replica-repaired', replica, 'the backup lost inputs: re-cloning', { qualifier: 'input-loss' });
    src.lossWatch.on('loss', onLoss);
    offs.push(() => src.lossWatch!.off('loss', onLoss));
  }
  if (src.clones) {
    const onCloned = () => {
      for (const q of ['divergence', 'input-loss']) alarms.clear('replica-repaired', replica, 'a new clone of the guest reached the backup', { qualifier: q });
    };
    src.clones.on('cloned', onCloned);
    offs.push(() => src.clones!.off('cloned', onCloned));
  }

  // The periodic checks.
  const pair = alarms.resource('pair');
  const storage = alarms.resource('storage');
  const controller = alarms.resource('controller');
  const clock = alarms.resource('clock');
  let unprotectedSince: number | undefined;
  let lastWall = Date.now();
  let lastMono = performance.now();
  let lastStepAt: number | undefined;
  const check = () => {
    const mono = performance.now();
    if (src.replicator) {
      const st = src.role() === 'PRIMARY' ? src.replicator.status() : undefined;
      if (st && !st.protected) {
        unprotectedSince ??= mono;
        if (mono - unprotectedSince >= limits.unprotectedAfterS * 1000) {
          alarms.raise('pair-unprotected', pair, `serving without a following backup for ${Math.round((mono - unprotectedSince) / 1000)} s${st.unprotectedReason ? `: ${st.unprotectedReason}` : ''}`);
        }
      } else {
        unprotectedSince = undefined;
        alarms.clear('pair-unprotected', pair, st ? 'a backup follows again' : `no longer primary (${src.role()})`);
      }
    }
    const wall = Date.now();
    const step = (wall - lastWall) - (mono - lastMono);
    lastWall = wall;
    lastMono = mono;
    const v = limitVerdicts(limits, { diskFreePercent: freePercent(board.storageDir), rssMb: process.memoryUsage().rss / 1048576, clockStepMs: step },
      { disk: alarms.isActive('disk-space-low', storage), memory: alarms.isActive('memory-high', controller) });
    alarms.set('disk-space-low', storage, v.disk, { clearText: 'free space on the storage directory is back above the limit' });
    alarms.set('memory-high', controller, v.memory, { clearText: 'controller memory is back below the limit' });
    if (v.clockStep) {
      lastStepAt = mono;
      alarms.raise('clock-jump', clock, v.clockStep);
    } else if (lastStepAt === undefined || mono - lastStepAt >= CLOCK_JUMP_CLEAR_MS) {
      alarms.clear('clock-jump', clock, 'no clock step for an hour');
    }
  };
  const timer = setInterval(check, limits.checkEveryS * 1000);
  timer.unref();
  offs.push(() => clearInterval(timer));
  return () => { for (const off of offs) off(); };
}
