/**
 * The boards' profiles for one chassis run: the repository's board/sim-a.json and sim-b.json with
 * every path moved into the run directory and the links, watchdog, fencing and key pointed at the
 * chassis' own devices. A further board (sim-c… with `--boards N`) is a spare: sim-a's template
 * without partner, HA or fencing, its service on its own loopback address. Validated with the product's schema before any board boots, so a profile
 * the controller would reject fails `chassis up` at once, naming the field.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { boardProfileSchema } from '../../config/board-profile.js';
import { UsError } from '../../core/errors.js';
import { writeKeyFile } from '../../core/key-file.js';
import { ipmiFencingOf } from './bmc.js';
import {
  AUTH_SERVICE, PACKAGE_ROOT, PLINK_INTERFACE, PLINK_PORT, SERVICE_INTERFACE, SERVICE_PORT, SERVICE_PREFIX, SERVICE_VIP,
  boardIndex, isPairBoard, partnerOf, plinkAddress, type ChassisBoard, type ChassisLayout,
} from './layout.js';

/** Watchdog timeout when a template has none. */
export const DEFAULT_WATCHDOG_TIMEOUT_MS = 2000;

export interface GeneratedProfile {
  file: string;
  watchdogTimeoutMs: number;
}

/** A pair board's own template; a spare's is sim-a's. */
export function templateFile(board: ChassisBoard): string {
  return join(PACKAGE_ROOT, 'board', `${isPairBoard(board) ? board : 'sim-a'}.json`);
}

/** Builds one board's profile from its template (pure; exported for tests). */
export function chassisProfile(template: Record<string, any>, board: ChassisBoard, layout: ChassisLayout, baud: number, fencing: 'simulated' | 'ipmi' = 'simulated'): Record<string, any> {
  if (!isPairBoard(board)) return spareProfile(template, board, layout);
  const b = layout.boards[board];
  const p = structuredClone(template);
  p.storageDir = b.storageDir;
  p.partner = {
    ...(p.partner ?? {}),
    serial: { device: b.serialDevice, baud },
    ethernet: { interface: PLINK_INTERFACE, localAddress: plinkAddress(board), partnerAddress: plinkAddress(partnerOf(board)), port: PLINK_PORT },
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

/**
 * A spare board's profile (pure; exported for tests): its controller runs on its own, without a
 * partner, HA or fencing (nothing to fence, nobody to hear), and without the service address, which
 * belongs to the pair's primary: its service is on its own loopback (127.0.10.<n>). Its watchdog
 * and console are the chassis' devices as on the pair's boards.
 */
export function spareProfile(template: Record<string, any>, board: ChassisBoard, layout: ChassisLayout): Record<string, any> {
  const b = layout.boards[board];
  const { partner: _partner, ha: _ha, fencing: _fencing, ...p } = structuredClone(template);
  p.name = board;
  p.storageDir = b.storageDir;
  p.watchdog = { ...(p.watchdog ?? {}), device: b.watchdogFifo, timeoutMs: p.watchdog?.timeoutMs ?? DEFAULT_WATCHDOG_TIMEOUT_MS };
  p.service = { address: `127.0.10.${boardIndex(board) + 1}`, port: SERVICE_PORT };
  p.externalServices = { auth: { ...AUTH_SERVICE } };
  p.console = { ...(p.console ?? {}), device: b.consoleBoard };
  return p;
}

/** Writes both profiles (mode 0600) and the pair's fresh heartbeat key. */
export function writeChassisProfiles(layout: ChassisLayout, baud: number, fencing: 'simulated' | 'ipmi' = 'simulated'): Record<ChassisBoard, GeneratedProfile> {
  writeKeyFile(layout.keyFile, { force: true }); // the documented format, as `understudy ha keygen` writes it
  const out = {} as Record<ChassisBoard, GeneratedProfile>;
  for (const board of layout.boardNames) {
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
