/**
 * Names and paths of one simulated chassis: its run directory, the two boards, their network
 * namespaces and files. Pure functions of the chassis name and run directory; owns no state and
 * touches nothing on the machine.
 */
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { UsError } from '../../core/errors.js';

/** The package root (holds board/, guests/, dist/). This file is at <root>/dist/src/sim/chassis/. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
export const CLI_ENTRY = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
export const DAEMON_ENTRY = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'understudyd.js');

export const BOARD_NAMES = ['sim-a', 'sim-b'] as const;
export type BoardName = (typeof BOARD_NAMES)[number];

/** Environment variable set on every process the chassis starts; its value is the run directory. */
export const RUN_MARKER = 'UNDERSTUDY_CHASSIS_RUN';

/** Address of each board on the Ethernet partner link (inside its namespace, on `plink`). */
export const PLINK_ADDRESS: Record<BoardName, string> = { 'sim-a': '198.51.100.1', 'sim-b': '198.51.100.2' };
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
/** Where clients (load generators, the demo) send from, inside the service namespace. */
export const SERVICE_CLIENT_ADDRESS = '192.0.2.100';
export const AUTH_SERVICE = { address: '192.0.2.200', port: 7000 };

export interface BoardLayout {
  name: BoardName;
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
  boards: Record<BoardName, BoardLayout>;
}

/** Chassis names become namespace and interface names (at most 15 characters), hence the limit. */
export const CHASSIS_NAME = /^[a-z][a-z0-9]{0,7}$/;

export function defaultRunDir(name: string): string {
  return `/run/understudy/chassis-${name}`;
}

export function chassisLayout(name: string, runDir?: string): ChassisLayout {
  if (!CHASSIS_NAME.test(name)) {
    throw new UsError('US_ERR_CONFIG', `chassis name "${name}": a lowercase letter then up to 7 lowercase letters or digits`);
  }
  const run = resolve(runDir ?? defaultRunDir(name));
  const board = (b: BoardName): BoardLayout => {
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
    boards: { 'sim-a': board('sim-a'), 'sim-b': board('sim-b') },
  };
  const longest = layout.boards['sim-a'].controlSocket;
  if (Buffer.byteLength(longest) > 100) {
    throw new UsError('US_ERR_CONFIG', `run directory ${run} is too long: unix socket paths under it would exceed 100 bytes`);
  }
  return layout;
}

/** Accepts `sim-a`, `a`, `sim-b`, `b`. */
export function parseBoardName(s: string): BoardName {
  const v = s.trim().toLowerCase();
  if (v === 'a' || v === 'sim-a') return 'sim-a';
  if (v === 'b' || v === 'sim-b') return 'sim-b';
  throw new UsError('US_ERR_CONFIG', `unknown board "${s}" (boards: sim-a, sim-b; a and b also accepted)`);
}

export function partnerOf(b: BoardName): BoardName {
  return b === 'sim-a' ? 'sim-b' : 'sim-a';
}
