/**
 * The boards' profiles for one chassis run: the repository's board/sim-a.json and sim-b.json with
 * every path moved into the run directory and the links, watchdog, fencing and key pointed at the
 * chassis' own devices. Validated with the product's schema before any board boots, so a profile
 * the controller would reject fails `chassis up` at once, naming the field.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { boardProfileSchema } from '../../config/board-profile.js';
import { UsError } from '../../core/errors.js';
import { writeKeyFile } from '../../core/key-file.js';
import { ipmiFencingOf } from './bmc.js';
import {
  AUTH_SERVICE, BOARD_NAMES, PACKAGE_ROOT, PLINK_ADDRESS, PLINK_INTERFACE, PLINK_PORT, SERVICE_INTERFACE, SERVICE_PORT, SERVICE_PREFIX, SERVICE_VIP,
  partnerOf, type BoardName, type ChassisLayout,
} from './layout.js';

/** Watchdog timeout when a template has none. */
export const DEFAULT_WATCHDOG_TIMEOUT_MS = 2000;

export interface GeneratedProfile {
  file: string;
  watchdogTimeoutMs: number;
}

export function templateFile(board: BoardName): string {
  return join(PACKAGE_ROOT, 'board', `${board}.json`);
}

/** Builds one board's profile from its template (pure; exported for tests). */
export function chassisProfile(template: Record<string, any>, board: BoardName, layout: ChassisLayout, baud: number, fencing: 'simulated' | 'ipmi' = 'simulated'): Record<string, any> {
  const b = layout.boards[board];
  const p = structuredClone(template);
  p.storageDir = b.storageDir;
  p.partner = {
    ...(p.partner ?? {}),
    serial: { device: b.serialDevice, baud },
    ethernet: { interface: PLINK_INTERFACE, localAddress: PLINK_ADDRESS[board], partnerAddress: PLINK_ADDRESS[partnerOf(board)], port: PLINK_PORT },
  };
  p.watchdog = { ...(p.watchdog ?? {}), device: b.watchdogFifo, timeoutMs: p.watchdog?.timeoutMs ?? DEFAULT_WATCHDOG_TIMEOUT_MS };
  // The chassis' power controller; what a fence does (action, escalation) stays the template's.
  const { action, escalation } = (p.fencing ?? {}) as { action?: unknown; escalation?: unknown };
  // The chassis' power controller, or (--fencing ipmi) the partner's simulated BMC in front of it.
  const device = fencing === 'ipmi' ? ipmiFencingOf(layout, board) : { method: 'simulated', controlSocket: layout.powerSocket };
  p.fencing = { ...device, ...(action !== undefined ? { action } : {}), ...(escalation !== undefined ? { escalation } : {}) };
  p.service = { address: SERVICE_VIP, port: SERVICE_PORT, interface: SERVICE_INTERFACE, prefixLength: SERVICE_PREFIX };
  p.externalServices = { auth: { ...AUTH_SERVICE } };
  if (p.ha) p.ha = { ...p.ha, keyFile: layout.keyFile };
  p.console = { ...(p.console ?? {}), device: b.consoleBoard };
  return p;
}

/** Writes both profiles (mode 0600) and the pair's fresh heartbeat key. */
export function writeChassisProfiles(layout: ChassisLayout, baud: number, fencing: 'simulated' | 'ipmi' = 'simulated'): Record<BoardName, GeneratedProfile> {
  writeKeyFile(layout.keyFile, { force: true }); // the documented format, as `understudy ha keygen` writes it
  const out = {} as Record<BoardName, GeneratedProfile>;
  for (const board of BOARD_NAMES) {
    let template: Record<string, any>;
    try {
      template = JSON.parse(readFileSync(templateFile(board), 'utf8')) as Record<string, any>;
    } catch (e) {
      throw new UsError('US_ERR_CONFIG', `board template ${templateFile(board)}: ${(e as Error).message}`);
    }
    const profile = chassisProfile(template, board, layout, baud, fencing);
    const check = boardProfileSchema.safeParse(profile);
    if (!check.success) {
      const i = check.error.issues[0]!;
      throw new UsError('US_ERR_CONFIG', `generated profile for ${board} is invalid at ${i.path.join('.') || '(root)'}: ${i.message} (template ${templateFile(board)})`);
    }
    const file = layout.boards[board].profile;
    writeFileSync(file, `${JSON.stringify(profile, null, 2)}\n`, { mode: 0o600 });
    out[board] = { file, watchdogTimeoutMs: profile.watchdog.timeoutMs as number };
  }
  return out;
}
