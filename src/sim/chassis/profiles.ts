/**
 * The boards' profiles for one chassis run: the repository's board/sim-a.json and sim-b.json with
 * every path moved into the run directory and the links, watchdog, fencing and key pointed at the
 * chassis' own devices. A further board (sim-c… with `--boards N`) is a spare: sim-a's template
 * without partner, HA or fencing, its service on its own loopback address. Validated with the product's schema before any board boots, so a profile
 * the controller would reject fails `chassis up` at once, naming the field.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { boardProfileSchema } from '../../config/board-profile.js';
import { UsError } from '../../core/errors.js';
import { writeKeyFile } from '../../core/key-file.js';
import { DEFAULT_FENCE_CONFIRM_COMMAND, DEFAULT_QUORUM_COMMAND } from '../../ha/quorum.js';
import { ipmiFencingOf } from './bmc.js';
import {
  AUTH_SERVICE, PACKAGE_ROOT, PLINK_INTERFACE, PLINK_PORT, SERVICE_INTERFACE, SERVICE_PORT, SERVICE_PREFIX, SERVICE_VIP,
  boardIndex, guestOnBoard, guestPair, guestPlinkPort, guestServiceAddress, isPairBoard, partnerOf, plinkAddress, type ChassisBoard, type ChassisLayout,
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

/**
 * `<board dir>/pacemaker/in-cluster`: runs a command inside the board's cluster namespaces (where
 * corosync's IPC is: its /dev/shm and /run are private), from the machine's side (a controller the
 * chassis started) or from inside them (one Pacemaker's agent started). Written with the cluster's
 * files (pacemaker.ts); the pacemaker boards' profiles run corosync-quorumtool through it.
 */
export function clusterWrapperFile(layout: ChassisLayout, board: ChassisBoard): string {
  return join(layout.boards[board].dir, 'pacemaker', 'in-cluster');
}

/** `ha.manager: pacemaker`, the quorum tool and the fence confirmation through the board's wrapper (a pair board's profile under --manager pacemaker). */
function underPacemaker(p: Record<string, any>, board: ChassisBoard, layout: ChassisLayout): Record<string, any> {
  if (p.ha) {
    const inCluster = clusterWrapperFile(layout, board);
    p.ha = { ...p.ha, manager: 'pacemaker', quorumCommand: [inCluster, ...DEFAULT_QUORUM_COMMAND], fenceConfirmCommand: [inCluster, ...DEFAULT_FENCE_CONFIRM_COMMAND] };
  }
  return p;
}

/** Builds one board's profile from its template (pure; exported for tests). */
export function chassisProfile(template: Record<string, any>, board: ChassisBoard, layout: ChassisLayout, baud: number, fencing: 'simulated' | 'ipmi' = 'simulated', manager: 'understudy' | 'pacemaker' = 'understudy'): Record<string, any> {
  if (!isPairBoard(board)) return spareProfile(template, board, layout);
  if (manager === 'pacemaker') return underPacemaker(chassisProfile(template, board, layout, baud, fencing), board, layout);
  const partner = { ...(template.partner ?? {}), serial: { device: layout.boards[board].serialDevice, baud }, ethernet: backplaneLink(board, partnerOf(board)) };
  // The chassis' power controller, or (--fencing ipmi) the partner's simulated BMC in front of it.
  const device = fencing === 'ipmi' ? ipmiFencingOf(layout, board) : { method: 'simulated', controlSocket: layout.powerSocket };
  return pairedProfile(template, board, layout, partner, device);
}

/** The Ethernet partner link on the backplane from `board` to `partner`. */
function backplaneLink(board: ChassisBoard, partner: ChassisBoard): Record<string, unknown> {
  return { interface: PLINK_INTERFACE, localAddress: plinkAddress(board), partnerAddress: plinkAddress(partner), port: PLINK_PORT };
}

/**
 * A board of a pair, with `partner` (its links) and the fencing `device`: the board's own store,
 * watchdog and console, the pair's service address, the chassis' key. What a fence does (action,
 * escalation) stays the template's.
 */
function pairedProfile(template: Record<string, any>, board: ChassisBoard, layout: ChassisLayout, partner: Record<string, unknown>, device: Record<string, unknown>): Record<string, any> {
  const b = layout.boards[board];
  const p = structuredClone(template);
  p.storageDir = b.storageDir;
  p.partner = partner;
  p.watchdog = { ...(p.watchdog ?? {}), device: b.watchdogFifo, timeoutMs: p.watchdog?.timeoutMs ?? DEFAULT_WATCHDOG_TIMEOUT_MS };
  const { action, escalation } = (p.fencing ?? {}) as { action?: unknown; escalation?: unknown };
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

/**
 * With more than two boards, each board's profile for a pairing other than its default one (N+1
 * re-protection, docs/pacemaker.md): `<board dir>/with-<partner>.json`. A spare started as a
 * primary's new backup runs with it (the agent's `pair_profile`); a pair board with another
 * partner too (after its own partner was replaced). Paths, key, watchdog, console and fencing as
 * in the board's own profile; the partner is `partner` on the backplane only (the serial link runs
 * between sim-a and sim-b alone); the service is the pair's address on the service network.
 */
export function pairingProfileFile(layout: ChassisLayout, board: ChassisBoard, partner: ChassisBoard): string {
  return join(layout.boards[board].dir, PAIRING_PROFILE_PATTERN.replace('%s', partner));
}

/** The pairing profiles' names in a board's folder, `%s` for the partner (the agent's pair_profile). */
export const PAIRING_PROFILE_PATTERN = 'with-%s.json';

/** Builds the profile of `board` paired with `partner` (pure; exported for tests). */
export function pairingProfile(template: Record<string, any>, board: ChassisBoard, partner: ChassisBoard, layout: ChassisLayout, fencing: 'simulated' | 'ipmi' = 'simulated', manager: 'understudy' | 'pacemaker' = 'understudy'): Record<string, any> {
  if (board === partner) throw new UsError('US_ERR_CONFIG', `board ${board} cannot be its own partner`);
  if (fencing === 'ipmi') throw new UsError('US_ERR_CONFIG', '--fencing ipmi is for two boards: a BMC per pair board, none for a spare');
  const p = pairedProfile(template, board, layout, { name: partner, ethernet: backplaneLink(board, partner) }, { method: 'simulated', controlSocket: layout.powerSocket });
  p.name = board;
  return manager === 'pacemaker' ? underPacemaker(p, board, layout) : p;
}

/** The template a pairing starts from: a pair board's own; a spare's is sim-b's (a backup's priority). */
function pairingTemplateFile(board: ChassisBoard): string {
  return join(PACKAGE_ROOT, 'board', `${isPairBoard(board) ? board : 'sim-b'}.json`);
}

function readTemplate(file: string): Record<string, any> {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Record<string, any>;
  } catch (e) {
    throw new UsError('US_ERR_CONFIG', `board template ${file}: ${(e as Error).message}`);
  }
}

function writeValidated(profile: Record<string, any>, file: string, what: string, template: string): void {
  const check = boardProfileSchema.safeParse(profile);
  if (!check.success) {
    const i = check.error.issues[0]!;
    throw new UsError('US_ERR_CONFIG', `generated profile for ${what} is invalid at ${i.path.join('.') || '(root)'}: ${i.message} (template ${template})`);
  }
  writeFileSync(file, `${JSON.stringify(profile, null, 2)}\n`, { mode: 0o600 });
}

/** Writes both profiles (mode 0600) and the pair's fresh heartbeat key. */
export function writeChassisProfiles(layout: ChassisLayout, baud: number, fencing: 'simulated' | 'ipmi' = 'simulated', manager: 'understudy' | 'pacemaker' = 'understudy'): Record<ChassisBoard, GeneratedProfile> {
  writeKeyFile(layout.keyFile, { force: true }); // the documented format, as `understudy ha keygen` writes it
  const out = {} as Record<ChassisBoard, GeneratedProfile>;
  for (const board of layout.boardNames) {
    const profile = chassisProfile(readTemplate(templateFile(board)), board, layout, baud, fencing, manager);
    const file = layout.boards[board].profile;
    writeValidated(profile, file, board, templateFile(board));
    out[board] = { file, watchdogTimeoutMs: profile.watchdog.timeoutMs as number };
    if (layout.boardNames.length <= 2) continue;
    const pairingTemplate = readTemplate(pairingTemplateFile(board));
    for (const partner of layout.boardNames) {
      // The pair's boards with each other: their own profiles (with the serial link) pair them.
      if (partner === board || (isPairBoard(board) && isPairBoard(partner))) continue;
      writeValidated(pairingProfile(pairingTemplate, board, partner, layout, fencing, manager), pairingProfileFile(layout, board, partner), `${board} with ${partner}`, pairingTemplateFile(board));
    }
  }
  return out;
}

/**
 * Guest k ≥ 2's profile of `board` (pure; exported for tests), made from guest 1's profile of the
 * same kind: its natural pair's boards (layout.ts guestPair) paired with each other, every other
 * board a spare, and pairing profiles as for guest 1. Moved to the guest's own store and watchdog
 * (`<board dir>/guest<k>/`), service address (192.0.2.(9+k); a spare's on 127.0.(9+k).<n>),
 * partner-link ports (layout.ts guestPlinkPort) and metrics port (+10 per guest); no console (the
 * board's console is guest 1's controller's).
 */
export function forGuest(p: Record<string, any>, board: ChassisBoard, k: number, layout: ChassisLayout): Record<string, any> {
  const g = guestOnBoard(layout, board, k);
  const out = structuredClone(p);
  out.storageDir = g.storageDir;
  out.watchdog = { ...(out.watchdog ?? {}), device: g.watchdogFifo };
  delete out.console;
  out.service = out.partner
    ? { ...out.service, address: guestServiceAddress(k) }
    : { address: `127.0.${9 + k}.${boardIndex(board) + 1}`, port: SERVICE_PORT };
  if (out.partner?.ethernet) out.partner.ethernet = { ...out.partner.ethernet, port: guestPlinkPort(k) };
  if (out.metrics) out.metrics = { ...out.metrics, port: out.metrics.port + 10 * (k - 1) };
  return out;
}

/** Guest k's template for `board`: sim-a's (the preferred priority) on the board that serves it first, else sim-b's. */
function guestTemplateFile(layout: ChassisLayout, board: ChassisBoard, k: number): string {
  return join(PACKAGE_ROOT, 'board', guestPair(layout, k)[0] === board ? 'sim-a.json' : 'sim-b.json');
}

export interface GuestProfileFiles {
  guest: number;
  board: ChassisBoard;
  profile: string;
  watchdogFifo: string;
  watchdogTimeoutMs: number;
}

/**
 * Writes guest k's profiles (k ≥ 2) on every board: `<board dir>/guest<k>/profile.json` (its natural
 * pair's boards paired on the backplane, no serial link; a spare elsewhere) and
 * `guest<k>/with-<partner>.json` for every other pairing. Validated like guest 1's.
 */
export function writeGuestProfiles(layout: ChassisLayout, k: number, manager: 'understudy' | 'pacemaker' = 'pacemaker'): Record<ChassisBoard, GuestProfileFiles> {
  const [first, second] = guestPair(layout, k);
  const out = {} as Record<ChassisBoard, GuestProfileFiles>;
  for (const board of layout.boardNames) {
    const g = guestOnBoard(layout, board, k);
    mkdirSync(g.dir, { recursive: true, mode: 0o711 });
    const tf = guestTemplateFile(layout, board, k);
    const template = readTemplate(tf);
    const natural = board === first ? second : board === second ? first : undefined;
    const own = natural
      ? pairingProfile(template, board, natural, layout, 'simulated', manager)
      : spareProfile(template, board, layout);
    const profile = forGuest(own, board, k, layout);
    writeValidated(profile, g.profile, `${board} (guest ${k})`, tf);
    out[board] = { guest: k, board, profile: g.profile, watchdogFifo: g.watchdogFifo, watchdogTimeoutMs: profile.watchdog.timeoutMs as number };
    for (const partner of layout.boardNames) {
      if (partner === board || partner === natural) continue;
      writeValidated(forGuest(pairingProfile(template, board, partner, layout, 'simulated', manager), board, k, layout),
        join(g.dir, PAIRING_PROFILE_PATTERN.replace('%s', partner)), `${board} with ${partner} (guest ${k})`, tf);
    }
  }
  return out;
}
