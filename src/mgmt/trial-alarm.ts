/**
 * The `upgrade-trial-failed` alarm (src/store/alarms.ts): a firmware trial this board saw armed that
 * ended without a commit, with the board on its good slot again — the bootloader used up the trial's
 * attempts (it did not load, or the controller in it never committed), or the trial was abandoned
 * after it had booted (a rolling upgrade's health check, `commit-when-healthy`, `upgrade rollback`).
 * Cleared when a later trial is committed (`upgrade mark-good`, a rolling upgrade's commit).
 *
 * The controller cannot ask the bootloader what it did: it remembers the trial it saw (slot, version,
 * whether it booted it, which controller process saw it) in the store's meta table, and compares
 * that with the boot environment at start and every 30 s (on a blade each look runs grub-editenv or
 * fw_printenv; the alarm is not urgent, a restart is seen at once). A trial the operator
 * abandons before it ever booted, seen by the same controller, is no failure and raises nothing.
 * Owns that memory and the verdict; reads the boot environment, never writes it.
 */
import { randomUUID } from 'node:crypto';
import type { BoardProfile } from '../config/board-profile.js';
import type { AlarmList } from '../store/alarms.js';
import type { Store } from '../store/journal.js';
import { upgradeSetupFor } from '../upgrade/board-setup.js';
import { readBootState } from '../upgrade/bootflow.js';
import type { SlotName } from '../upgrade/slots.js';

/** What the controller remembers of the last trial it saw armed. */
export interface TrialMemory {
  slot: SlotName;
  version: string | null;
  /** The board ran the trial slot while it was armed. */
  booted: boolean;
  /** The controller process that first saw it armed (a later one means the board restarted since). */
  seenBy: string;
}

/** The boot state now: the slot running, the good slot, the armed trial, and the versions of the slots. */
export interface TrialObservation {
  running: SlotName | null;
  good: SlotName | null;
  trial: SlotName | null;
  version(slot: SlotName | null): string | null;
}

export interface TrialVerdict {
  /** The memory to keep: a new value, null to forget it, undefined to leave it. */
  remember?: TrialMemory | null;
  raise?: string;
  clear?: string;
}

const name = (slot: SlotName | null, version: string | null) => `slot ${slot ?? '?'} (${version ?? 'version unknown'})`;

/** Pure: what one look at the boot state means, given what was remembered. */
export function trialVerdict(memory: TrialMemory | undefined, now: TrialObservation, controller: string): TrialVerdict {
  if (now.trial) {
    const same = memory?.slot === now.trial;
    const next: TrialMemory = {
      slot: now.trial,
      version: now.version(now.trial),
      booted: (same && memory!.booted) || now.running === now.trial,
      seenBy: same ? memory!.seenBy : controller,
    };
    const changed = !memory || memory.slot !== next.slot || memory.version !== next.version || memory.booted !== next.booted || memory.seenBy !== next.seenBy;
    return changed ? { remember: next } : {};
  }
  if (!memory) return {};
  if (now.good === memory.slot) {
    return { remember: null, clear: `the firmware trial of ${name(memory.slot, now.version(memory.slot))} was committed` };
  }
  if (memory.booted || memory.seenBy !== controller) {
    const how = memory.booted ? 'booted, then was given up without a commit' : 'was armed when the board restarted and is no longer';
    return {
      remember: null,
      raise: `the firmware trial of ${name(memory.slot, memory.version)} ${how}: the board runs ${name(now.running ?? now.good, now.version(now.running ?? now.good))}, its good slot`,
    };
  }
  return { remember: null }; // abandoned before it booted, under this controller: the operator's choice
}

const META_KEY = 'firmwareTrial';

/** How often the boot environment is looked at after the start. */
export const TRIAL_CHECK_MS = 30000;

/**
 * Looks at the board's boot state now and every TRIAL_CHECK_MS (`check` looks once more at once);
 * `stop` ends it. A board whose boot environment cannot be read (no slots set up) is left alone.
 */
export function watchFirmwareTrial(board: BoardProfile, alarms: AlarmList, store: Pick<Store, 'getMeta' | 'setMeta' | 'record'>): { check(): Promise<void>; stop(): void } {
  const controller = randomUUID();
  const resource = alarms.resource('firmware');
  let setup: ReturnType<typeof upgradeSetupFor> | undefined;
  let running = false;
  const check = async () => {
    if (running) return;
    running = true;
    try {
      setup ??= upgradeSetupFor(board);
      const { store: slots, env } = setup;
      const st = await readBootState(env);
      const version = (s: SlotName | null) => (s ? slots.readRecord(s).record?.version ?? null : null);
      const raw = store.getMeta(META_KEY);
      const memory = raw ? JSON.parse(raw) as TrialMemory : undefined;
      const v = trialVerdict(memory, { running: slots.bootedSlot() ?? null, good: st.good ?? null, trial: st.trial ?? null, version }, controller);
      if (v.remember !== undefined) store.setMeta(META_KEY, v.remember ? JSON.stringify(v.remember) : '');
      if (v.raise && alarms.raise('upgrade-trial-failed', resource, v.raise)) store.record('upgrade', `ALARM upgrade-trial-failed: ${v.raise}`);
      if (v.clear) alarms.clear('upgrade-trial-failed', resource, v.clear);
    } catch {
      // No boot environment to read on this board (or not yet): nothing to say about trials.
    } finally {
      running = false;
    }
  };
  void check();
  const timer = setInterval(() => void check(), TRIAL_CHECK_MS);
  timer.unref();
  return { check, stop: () => clearInterval(timer) };
}
