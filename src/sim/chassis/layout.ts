/**
 * Names and paths of one simulated chassis: its run directory, its boards (the pair sim-a and
 * sim-b, and with `--boards N` the further boards sim-c, sim-d, …), their network namespaces and
 * files. Pure functions of the chassis name, run directory and board count; owns no state and
 * touches nothing on the machine.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsError } from '../../core/errors.js';

/** The package root (holds board/, guests/, dist/). This file is at <root>/dist/src/sim/chassis/. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
export const CLI_ENTRY = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
export const DAEMON_ENTRY = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'understudyd.js');

/** The pair: the two boards every chassis has, partners of each other (serial and Ethernet). */
export const BOARD_NAMES = ['sim-a', 'sim-b'] as const;
/** A board of the pair. */
export type BoardName = (typeof BOARD_NAMES)[number];
/** Any board of the chassis: `sim-` and one letter (sim-a, sim-b: the pair; sim-c…: spares). */
export type ChassisBoard = `sim-${string}`;

/**
 * Boards a chassis may have (`--boards N`): the letters a–h. Namespaces are <name>-<letter>, and
 * the service network (<name>-n) and the backplane (<name>-p) take letters past these.
 */
export const MIN_BOARDS = 2;
export const MAX_BOARDS = 8;
const LETTERS = 'abcdefgh';

/** The boards of a chassis with `count` boards, in order: sim-a, sim-b, sim-c… */
export function boardNames(count: number = MIN_BOARDS): ChassisBoard[] {
  if (!Number.isInteger(count) || count < MIN_BOARDS || count > MAX_BOARDS) {
    throw new UsError('US_ERR_CONFIG', `--boards: an integer from ${MIN_BOARDS} to ${MAX_BOARDS}, got ${count}`);
  }
  return [...LETTERS.slice(0, count)].map((l) => `sim-${l}` as ChassisBoard);
}

/** 0 for sim-a, 1 for sim-b… */
export function boardIndex(b: ChassisBoard): number {
  const i = LETTERS.indexOf(b.slice(4));
  if (b.length !== 5 || i < 0) throw new UsError('US_ERR_CONFIG', `unknown board "${b}"`);
  return i;
}

export function isPairBoard(b: ChassisBoard): b is BoardName {
  return b === 'sim-a' || b === 'sim-b';
}

/** Environment variable set on every process the chassis starts; its value is the run directory. */
export const RUN_MARKER = 'UNDERSTUDY_CHASSIS_RUN';

/** Address of each board on the Ethernet partner link (inside its namespace, on `plink`). */
export const PLINK_ADDRESS: Record<BoardName, string> = { 'sim-a': '198.51.100.1', 'sim-b': '198.51.100.2' };
/** Any board's backplane address: 198.51.100.<n> for the n-th board (sim-a .1, sim-b .2, sim-c .3…). */
export function plinkAddress(b: ChassisBoard): string {
  return `198.51.100.${boardIndex(b) + 1}`;
}
export const PLINK_PREFIX = 24;
export const PLINK_INTERFACE = 'plink';
export const PLINK_PORT = 5405;

/**
 * The service network: a third namespace holding the "outside world" — a bridge the boards' service
 * interfaces (`svc0`) are plugged into, the clients and the external AUTH service. The service
 * address (VIP) moves between the boards with the primary role.
 */
export const SERVICE_INTERFACE = 'svc0';
export const SERVICE_BRIDGE = 'svcbr';
export const SERVICE_PREFIX = 24;
export const SERVICE_VIP = '192.0.2.10';
export const SERVICE_PORT = 5000;
export const SERVICE_BOARD_ADDRESS: Record<BoardName, string> = { 'sim-a': '192.0.2.1', 'sim-b': '192.0.2.2' };
/** Any board's own address on the service network: 192.0.2.<n> for the n-th board (below the VIP, .10). */
export function serviceBoardAddress(b: ChassisBoard): string {
  return `192.0.2.${boardIndex(b) + 1}`;
}
/**
 * The backplane of a chassis with more than two boards: a bridge in its own namespace (<name>-p)
 * that every board's `plink` is plugged into, so that any board reaches any other (corosync's
 * ring, and a spare becoming a backup). A two-board chassis keeps its single veth instead.
 */
export const BACKPLANE_BRIDGE = 'bplane';
/** Where clients (load generators, the demo) send from, inside the service namespace. */
export const SERVICE_CLIENT_ADDRESS = '192.0.2.100';
export const AUTH_SERVICE = { address: '192.0.2.200', port: 7000 };

export interface BoardLayout {
  name: ChassisBoard;
  /** Network namespace the board's controller runs in. */
  netns: string;
  dir: string;
  profile: string;
  storageDir: string;
  controlSocket: string;
  log: string;
  watchdogFifo: string;
  /** The board's end of the serial partner link (pty symlink), opened by its controller. */
  serialDevice: string;
  /** The relay's end of this board's serial pty pair. */
  relayDevice: string;
  consoleBoard: string;
  consoleUser: string;
}

export interface ChassisLayout {
  name: string;
  /** The service network's namespace (clients and the AUTH service live there). */
  serviceNetns: string;
  runDir: string;
  stateFile: string;
  controlSocket: string;
  powerSocket: string;
  keyFile: string;
  log: string;
  /** The boards in order (sim-a, sim-b, then any further board). */
  boardNames: ChassisBoard[];
  /** With more than two boards: the namespace of the backplane bridge. */
  backplaneNetns?: string;
  boards: Record<BoardName, BoardLayout> & Record<ChassisBoard, BoardLayout>;
}

/** Chassis names become namespace and interface names (at most 15 characters), hence the limit. */
export const CHASSIS_NAME = /^[a-z][a-z0-9]{0,7}$/;

export function defaultRunDir(name: string): string {
  return `/run/understudy/chassis-${name}`;
}

export function chassisLayout(name: string, runDir?: string, boardCount: number = MIN_BOARDS): ChassisLayout {
  if (!CHASSIS_NAME.test(name)) {
    throw new UsError('US_ERR_CONFIG', `chassis name "${name}": a lowercase letter then up to 7 lowercase letters or digits`);
  }
  const run = resolve(runDir ?? defaultRunDir(name));
  const names = boardNames(boardCount);
  const board = (b: ChassisBoard): BoardLayout => {
    const dir = join(run, b);
    const storageDir = join(dir, 'store');
    return {
      name: b,
      netns: `${name}-${b.slice(-1)}`,
      dir,
      profile: join(dir, 'profile.json'),
      storageDir,
      controlSocket: join(storageDir, 'understudyd.sock'),
      log: join(dir, 'board.log'),
      watchdogFifo: join(dir, 'watchdog'),
      serialDevice: join(dir, 'ttyPartner'),
      relayDevice: join(dir, 'ttyRelay'),
      consoleBoard: join(dir, 'console-board'),
      consoleUser: join(dir, 'console-user'),
    };
  };
  const layout: ChassisLayout = {
    name,
    serviceNetns: `${name}-n`,
    runDir: run,
    stateFile: join(run, 'state.json'),
    controlSocket: join(run, 'chassis.sock'),
    powerSocket: join(run, 'power.sock'),
    keyFile: join(run, 'ha.key'),
    log: join(run, 'chassisd.log'),
    boardNames: names,
    ...(names.length > MIN_BOARDS ? { backplaneNetns: `${name}-p` } : {}),
    boards: Object.fromEntries(names.map((b) => [b, board(b)])) as ChassisLayout['boards'],
  };
  const longest = layout.boards['sim-a'].controlSocket;
  if (Buffer.byteLength(longest) > 100) {
    throw new UsError('US_ERR_CONFIG', `run directory ${run} is too long: unix socket paths under it would exceed 100 bytes`);
  }
  return layout;
}

/**
 * Several guests on one shelf (`chassis up --guests G`, docs/pacemaker.md): guest 1 is the pair's
 * (sim-a and sim-b, the board's own files); guest k ≥ 2 runs on its own natural pair, the k-th
 * board + 1 (sim-c for guest 2, sim-d for guest 3…) as its primary and sim-b as its backup, so
 * that no blade holds two primaries (one guest core per blade on this machine) and sim-b holds the
 * backups. Each guest has its own service address, partner-link ports, store, watchdog and
 * profiles under `<board dir>/guest<k>/` on every board. Pure functions of the layout.
 */
export const MIN_GUESTS = 1;
/** Guests a chassis may run: one primary per blade, and sim-b (the backups') is not a primary. */
export function maxGuests(boardCount: number): number {
  return boardCount - 1;
}

/** Validates `--guests` against the board count. */
export function guestCount(guests: number, boardCount: number): number {
  if (!Number.isInteger(guests) || guests < MIN_GUESTS || guests > maxGuests(boardCount)) {
    throw new UsError('US_ERR_CONFIG', `--guests: an integer from ${MIN_GUESTS} to ${maxGuests(boardCount)} on a chassis of ${boardCount} boards (one primary per board, sim-b holds the backups), got ${guests}`);
  }
  return guests;
}

/** Guest k's service address: 192.0.2.10 for guest 1 (SERVICE_VIP), .11 for guest 2… */
export function guestServiceAddress(k: number): string {
  return `192.0.2.${9 + k}`;
}

/** Guest k's partner-link port (heartbeats; +1 inputs, +2 migration, +3 upgrades): 5405, 5505, 5605… */
export function guestPlinkPort(k: number): number {
  return PLINK_PORT + 100 * (k - 1);
}

/** Guest k's natural pair: [the board that serves it first, the board that backs it up]. */
export function guestPair(layout: ChassisLayout, k: number): [ChassisBoard, ChassisBoard] {
  if (k === 1) return ['sim-a', 'sim-b'];
  const primary = layout.boardNames[k];
  if (!primary) throw new UsError('US_ERR_CONFIG', `guest ${k} needs ${k + 1} boards, the chassis has ${layout.boardNames.length}`);
  return [primary, 'sim-b'];
}

/** Guest k's files on one board (guest 1: the board's own). */
export interface GuestOnBoard {
  guest: number;
  board: ChassisBoard;
  dir: string;
  profile: string;
  storageDir: string;
  controlSocket: string;
  watchdogFifo: string;
}

export function guestOnBoard(layout: ChassisLayout, board: ChassisBoard, k: number): GuestOnBoard {
  const b = layout.boards[board];
  if (k === 1) return { guest: 1, board, dir: b.dir, profile: b.profile, storageDir: b.storageDir, controlSocket: b.controlSocket, watchdogFifo: b.watchdogFifo };
  const dir = join(b.dir, `guest${k}`);
  const storageDir = join(dir, 'store');
  return { guest: k, board, dir, profile: join(dir, 'profile.json'), storageDir, controlSocket: join(storageDir, 'understudyd.sock'), watchdogFifo: join(dir, 'watchdog') };
}

/**
 * Accepts `sim-a`, `a`, `sim-b`, `b` (and, on a chassis with more boards, `sim-c`, `c`…: pass its
 * board names).
 */
export function parseBoardName(s: string, boards: readonly ChassisBoard[] = BOARD_NAMES): ChassisBoard {
  const v = s.trim().toLowerCase();
  const name = (v.length === 1 ? `sim-${v}` : v) as ChassisBoard;
  if (boards.includes(name)) return name;
  if (boards.length === MIN_BOARDS) throw new UsError('US_ERR_CONFIG', `unknown board "${s}" (boards: sim-a, sim-b; a and b also accepted)`);
  throw new UsError('US_ERR_CONFIG', `unknown board "${s}" (boards: ${boards.join(', ')}; ${boards.map((b) => b.slice(4)).join(', ')} also accepted)`);
}

/** The pair: sim-a and sim-b are each other's partner; a further board has none (a spare). */
export function partnerOf(b: BoardName): BoardName;
export function partnerOf(b: ChassisBoard): ChassisBoard;
export function partnerOf(b: ChassisBoard): ChassisBoard {
  if (b === 'sim-a') return 'sim-b';
  if (b === 'sim-b') return 'sim-a';
  throw new UsError('US_ERR_CONFIG', `board ${b} is a spare: it has no partner`);
}
