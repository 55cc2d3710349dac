/**
 * The A/B boot protocol on a boot environment: three variables, the same names on U-Boot, GRUB and
 * the simulated file env.
 *
 *   us_slot_good  A|B  the committed slot, booted when no trial is armed
 *   us_slot_try   A|B  a one-shot trial of the other slot (absent: none)
 *   us_try_left   n    boot attempts the trial has left
 *
 * The installer arms a trial; the bootloader (simulated here by `simulateBoot`, with the equivalent
 * U-Boot and GRUB scripts in docs/upgrade.md) decrements the counter before each trial boot and,
 * once it is exhausted, disarms the trial and boots the good slot; `markGood` commits a running
 * trial. Owns the protocol; not the slot layout (slots.ts) nor installation (installer.ts).
 */
import { UsError } from '../core/errors.js';
import type { BootEnv } from '../hw/bootenv/boot-env.js';
import { isSlotName, otherSlot, SLOT_NAMES, type SlotName, type SlotStore } from './slots.js';

export const VAR_GOOD = 'us_slot_good';
export const VAR_TRY = 'us_slot_try';
export const VAR_TRY_LEFT = 'us_try_left';

export interface BootState {
  good?: SlotName;
  trial?: SlotName;
  /** Attempts the trial has left (0 when none armed or exhausted). */
  triesLeft: number;
}

/** Reads the three variables; values that are not what we write read as absent. */
export async function readBootState(env: BootEnv): Promise<BootState> {
  const v = await env.read();
  const left = Number.parseInt(v[VAR_TRY_LEFT] ?? '', 10);
  return {
    good: isSlotName(v[VAR_GOOD]) ? v[VAR_GOOD] : undefined,
    trial: isSlotName(v[VAR_TRY]) ? v[VAR_TRY] : undefined,
    triesLeft: Number.isInteger(left) && left > 0 ? left : 0,
  };
}

/** Arms a one-shot trial of `trial` with `attempts` boots, keeping `good` as the fallback: one env write. */
export async function armTrial(env: BootEnv, good: SlotName, trial: SlotName, attempts: number): Promise<void> {
  if (good === trial) throw new UsError('US_ERR_INTERNAL', `armTrial: trial slot ${trial} is the good slot`);
  await env.update({ [VAR_GOOD]: good, [VAR_TRY]: trial, [VAR_TRY_LEFT]: String(attempts) });
}

/** Makes `slot` the good slot with no trial (first install on an empty board). */
export async function commitSlot(env: BootEnv, slot: SlotName): Promise<void> {
  await env.update({ [VAR_GOOD]: slot, [VAR_TRY]: null, [VAR_TRY_LEFT]: null });
}

export async function disarmTrial(env: BootEnv): Promise<void> {
  await env.update({ [VAR_TRY]: null, [VAR_TRY_LEFT]: null });
}

export type BootReason =
  | 'good'          // no trial armed: the good slot
  | 'trial'         // an armed trial, one attempt used
  | 'rollback'      // the trial's attempts are exhausted: disarmed, back to the good slot
  | 'last-resort';  // the good slot is not loadable; the other one is

export interface BootResult {
  slot: SlotName;
  reason: BootReason;
  /** Trial attempts left after this boot (trial boots only). */
  triesLeft: number;
  version?: string;
  /** Trial slots that failed to load during this boot (each failure used an attempt). */
  failedLoads: SlotName[];
}

/**
 * One power-on of the simulated board, doing what the U-Boot/GRUB script does on a blade: decrement
 * an armed trial's counter and boot it, or, when exhausted, disarm it and boot the good slot. A slot
 * that does not load (no valid record) is a failed attempt, as a kernel that fails to load is. Writes
 * the chosen slot to the simulated kernel command line.
 */
export async function simulateBoot(env: BootEnv, store: SlotStore): Promise<BootResult> {
  const failedLoads: SlotName[] = [];
  for (let step = 0; step < 32; step++) {
    const st = await readBootState(env);
    let slot: SlotName | undefined;
    let reason: BootReason;
    let triesLeft = 0;
    if (st.trial && st.triesLeft > 0) {
      triesLeft = st.triesLeft - 1;
      await env.update({ [VAR_TRY_LEFT]: String(triesLeft) });
      slot = st.trial;
      reason = 'trial';
    } else if (st.trial) {
      await disarmTrial(env);
      slot = st.good;
      reason = 'rollback';
    } else {
      slot = st.good;
      reason = 'good';
    }
    if (reason === 'trial') {
      if (store.isLoadable(slot!)) return done(store, slot!, reason, triesLeft, failedLoads);
      failedLoads.push(slot!);
      continue;
    }
    if (slot && store.isLoadable(slot)) return done(store, slot, reason, 0, failedLoads);
    // The good slot (or, on a board whose env was never written, any slot) does not load.
    const fallback = slot ? [otherSlot(slot)] : SLOT_NAMES;
    for (const s of fallback) if (store.isLoadable(s)) return done(store, s, slot ? 'last-resort' : 'good', 0, failedLoads);
    throw new UsError('US_ERR_NO_BOOTABLE_SLOT', `no slot loads (good slot ${slot ?? 'unset'}; ${SLOT_NAMES.map((s) => `${s}: ${store.readRecord(s).problem ?? 'ok'}`).join(', ')})`);
  }
  throw new UsError('US_ERR_INTERNAL', 'simulated boot did not settle');
}

function done(store: SlotStore, slot: SlotName, reason: BootReason, triesLeft: number, failedLoads: SlotName[]): BootResult {
  store.writeCmdline(slot);
  return { slot, reason, triesLeft, version: store.readRecord(slot).record?.version, failedLoads };
}

export interface MarkGoodResult {
  slot: SlotName;
  /** True if this call committed a trial; false if the running slot already was the good one. */
  committed: boolean;
  version?: string;
}

/** Commits the running slot if it is the armed trial (after its health checks passed). */
export async function markGood(env: BootEnv, store: SlotStore): Promise<MarkGoodResult> {
  const running = store.bootedSlot();
  if (!running) throw new UsError('US_ERR_UPGRADE_STATE', `cannot tell which slot is running: no ${'understudy.slot='} in ${store.cmdlineFile}`);
  const st = await readBootState(env);
  const version = store.readRecord(running).record?.version;
  if (st.trial === running) {
    await commitSlot(env, running);
    return { slot: running, committed: true, version };
  }
  if (st.good === running) return { slot: running, committed: false, version };
  throw new UsError('US_ERR_UPGRADE_STATE', `running slot ${running} is neither the armed trial (${st.trial ?? 'none'}) nor the good slot (${st.good ?? 'unset'})`);
}

export interface RollbackResult {
  /** The trial that was disarmed. */
  abandoned: SlotName;
  /** The slot the next boot selects. */
  nextBoot?: SlotName;
}

/** Disarms an armed trial so the next boot selects the good slot (an unhealthy start, or the operator). */
export async function abandonTrial(env: BootEnv): Promise<RollbackResult> {
  const st = await readBootState(env);
  if (!st.trial) throw new UsError('US_ERR_UPGRADE_STATE', 'no trial is armed: nothing to roll back');
  await disarmTrial(env);
  return { abandoned: st.trial, nextBoot: st.good };
}
