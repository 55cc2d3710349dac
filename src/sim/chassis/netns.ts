/**
 * The chassis network with iproute2: one namespace per board (loopback up), a veth pair joining
 * them, renamed `plink` on both sides with 198.51.100.1/24 (sim-a) and .2/24 (sim-b); with more
 * than two boards a backplane bridge in its own namespace instead, every board's `plink`
 * (198.51.100.<n>/24) plugged into it. Cutting the Ethernet partner link sets sim-a's end down;
 * healing sets both ends up. Owns only namespaces and links whose names it is given; never touches
 * the root namespace's other interfaces.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { UsError } from '../../core/errors.js';
import { AUTH_SERVICE, BACKPLANE_BRIDGE, PLINK_INTERFACE, PLINK_PREFIX, SERVICE_BRIDGE, SERVICE_CLIENT_ADDRESS, SERVICE_INTERFACE, SERVICE_PREFIX } from './layout.js';

const run = promisify(execFile);

/** Runs `ip <args>`; rejects with US_ERR_CHASSIS naming the command and ip's own message. */
export async function ip(...args: string[]): Promise<string> {
  try {
    const r = await run('ip', args, { timeout: 10000 });
    return r.stdout;
  } catch (e) {
    const x = e as NodeJS.ErrnoException & { stderr?: string };
    if (x.code === 'ENOENT') throw new UsError('US_ERR_NOT_FOUND', 'iproute2 (`ip`) is not installed');
    throw new UsError('US_ERR_CHASSIS', `ip ${args.join(' ')}: ${(x.stderr ?? x.message).trim()}`);
  }
}

export async function listNamespaces(): Promise<string[]> {
  const out = await ip('-j', 'netns', 'list');
  if (!out.trim()) return [];
  return (JSON.parse(out) as Array<{ name: string }>).map((n) => n.name);
}

export async function linkExists(name: string, netns?: string): Promise<boolean> {
  try {
    await ip(...(netns ? ['-n', netns] : []), 'link', 'show', 'dev', name);
    return true;
  } catch {
    return false;
  }
}

/** Temporary names for the veth ends in the root namespace: unique, at most 15 characters. */
export function vethTempNames(chassis: string): [string, string] {
  const tag = randomBytes(2).toString('hex');
  return [`${chassis.slice(0, 6)}${tag}a`, `${chassis.slice(0, 6)}${tag}b`].map((n) => `v${n}`) as [string, string];
}

export interface NetworkSpec {
  namespaces: [string, string];
  /** The veth ends' temporary names in the root namespace, before they move. */
  vethTemp: [string, string];
  addresses: [string, string];
}

/**
 * Refuses names that are taken: they belong to someone else (another chassis with this name run
 * from another directory, say), so they must not be recorded as this run's, which would make its
 * cleanup delete them.
 */
export async function assertNetworkFree(spec: NetworkSpec): Promise<void> {
  const existing = await listNamespaces();
  for (const ns of spec.namespaces) {
    if (existing.includes(ns)) {
      throw new UsError('US_ERR_CHASSIS', `network namespace ${ns} already exists (another chassis with this name, run from another directory?); delete it with \`ip netns del ${ns}\` or pick another --name`);
    }
  }
  for (const v of spec.vethTemp) if (await linkExists(v)) throw new UsError('US_ERR_CHASSIS', `interface ${v} already exists; try again`);
}

/** Creates both namespaces and the partner link. Call only after assertNetworkFree and after recording the names. */
export async function createNetwork(spec: NetworkSpec): Promise<void> {
  for (const ns of spec.namespaces) {
    await ip('netns', 'add', ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
  const [ta, tb] = spec.vethTemp;
  await ip('link', 'add', ta, 'type', 'veth', 'peer', 'name', tb);
  for (let i = 0; i < 2; i++) {
    const ns = spec.namespaces[i]!;
    const tmp = spec.vethTemp[i]!;
    await ip('link', 'set', tmp, 'netns', ns);
    await ip('-n', ns, 'link', 'set', tmp, 'name', PLINK_INTERFACE);
    await ip('-n', ns, 'addr', 'add', `${spec.addresses[i]}/${PLINK_PREFIX}`, 'dev', PLINK_INTERFACE);
    await ip('-n', ns, 'link', 'set', PLINK_INTERFACE, 'up');
  }
}

export interface BackplaneSpec {
  /** The backplane bridge's namespace. */
  backplaneNetns: string;
  /** Every board's namespace, in board order. */
  boards: string[];
  /** Two temporary root-namespace names per board (its veth pair), in board order. */
  vethTemp: string[];
  /** Every board's address on its `plink`, in board order. */
  addresses: string[];
  /** The bridge ports' names in the backplane namespace, one per board (e.g. bp-a). */
  ports: string[];
}

/**
 * Refuses a backplane whose names are taken (see assertNetworkFree).
 */
export async function assertBackplaneFree(spec: BackplaneSpec): Promise<void> {
  const existing = await listNamespaces();
  for (const ns of [...spec.boards, spec.backplaneNetns]) {
    if (existing.includes(ns)) {
      throw new UsError('US_ERR_CHASSIS', `network namespace ${ns} already exists (another chassis with this name, run from another directory?); delete it with \`ip netns del ${ns}\` or pick another --name`);
    }
  }
  for (const v of spec.vethTemp) if (await linkExists(v)) throw new UsError('US_ERR_CHASSIS', `interface ${v} already exists; try again`);
}

/**
 * The boards' namespaces and the backplane: a bridge in its own namespace and a veth from each
 * board (`plink` there, with the board's address) to a port of the bridge. Call only after
 * assertBackplaneFree and after recording the names.
 */
export async function createBackplane(spec: BackplaneSpec): Promise<void> {
  const bp = spec.backplaneNetns;
  await ip('netns', 'add', bp);
  await ip('-n', bp, 'link', 'set', 'lo', 'up');
  await ip('-n', bp, 'link', 'add', BACKPLANE_BRIDGE, 'type', 'bridge');
  await ip('-n', bp, 'link', 'set', BACKPLANE_BRIDGE, 'up');
  for (let i = 0; i < spec.boards.length; i++) {
    const ns = spec.boards[i]!;
    const inBoard = spec.vethTemp[2 * i]!;
    const inBackplane = spec.vethTemp[2 * i + 1]!;
    const port = spec.ports[i]!;
    await ip('netns', 'add', ns);
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    await ip('link', 'add', inBoard, 'type', 'veth', 'peer', 'name', inBackplane);
    await ip('link', 'set', inBoard, 'netns', ns);
    await ip('-n', ns, 'link', 'set', inBoard, 'name', PLINK_INTERFACE);
    await ip('-n', ns, 'addr', 'add', `${spec.addresses[i]}/${PLINK_PREFIX}`, 'dev', PLINK_INTERFACE);
    await ip('-n', ns, 'link', 'set', PLINK_INTERFACE, 'up');
    await ip('link', 'set', inBackplane, 'netns', bp);
    await ip('-n', bp, 'link', 'set', inBackplane, 'name', port);
    await ip('-n', bp, 'link', 'set', port, 'master', BACKPLANE_BRIDGE);
    await ip('-n', bp, 'link', 'set', port, 'up');
  }
}

/** Removes what createNetwork made (or a part of it, after a crash). Missing pieces are fine. */
export async function removeNetwork(namespaces: readonly string[], vethTemp: readonly string[]): Promise<string[]> {
  const removed: string[] = [];
  const existing = await listNamespaces().catch(() => [] as string[]);
  for (const ns of namespaces) {
    if (!existing.includes(ns)) continue;
    await ip('netns', 'del', ns);
    removed.push(`netns ${ns}`);
  }
  // A veth end still in the root namespace (a crash between `link add` and the move).
  for (const t of vethTemp) {
    if (!(await linkExists(t))) continue;
    await ip('link', 'del', t);
    removed.push(`link ${t}`);
  }
  return removed;
}

export interface ServiceNetworkSpec {
  /** The service namespace, then the boards' namespaces (in board order). */
  serviceNetns: string;
  boards: readonly string[];
  /** Temporary root-namespace names of the boards' veth pairs (two per board). */
  vethTemp: readonly string[];
  addresses: readonly string[];
}

/**
 * The service LAN: a bridge in the service namespace (with the clients' and the AUTH service's
 * addresses), and a veth from each board's namespace (`svc0`, the board's own address) to it.
 */
export async function createServiceNetwork(spec: ServiceNetworkSpec): Promise<void> {
  const ns = spec.serviceNetns;
  await ip('netns', 'add', ns);
  await ip('-n', ns, 'link', 'set', 'lo', 'up');
  await ip('-n', ns, 'link', 'add', SERVICE_BRIDGE, 'type', 'bridge');
  await ip('-n', ns, 'addr', 'add', `${SERVICE_CLIENT_ADDRESS}/${SERVICE_PREFIX}`, 'dev', SERVICE_BRIDGE);
  await ip('-n', ns, 'addr', 'add', `${AUTH_SERVICE.address}/${SERVICE_PREFIX}`, 'dev', SERVICE_BRIDGE);
  await ip('-n', ns, 'link', 'set', SERVICE_BRIDGE, 'up');
  // Clients accept the new primary's gratuitous ARP at once (Linux otherwise ignores a GARP for
  // an entry confirmed in the last second: neigh locktime), as a well-configured service LAN does.
  await run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', `net.ipv4.neigh.${SERVICE_BRIDGE}.locktime=0`]).catch(() => undefined);
  for (let i = 0; i < spec.boards.length; i++) {
    const boardNs = spec.boards[i]!;
    const inBoard = spec.vethTemp[2 * i]!;
    const inService = spec.vethTemp[2 * i + 1]!;
    await ip('link', 'add', inBoard, 'type', 'veth', 'peer', 'name', inService);
    await ip('link', 'set', inBoard, 'netns', boardNs);
    await ip('-n', boardNs, 'link', 'set', inBoard, 'name', SERVICE_INTERFACE);
    await ip('-n', boardNs, 'addr', 'add', `${spec.addresses[i]}/${SERVICE_PREFIX}`, 'dev', SERVICE_INTERFACE);
    await ip('-n', boardNs, 'link', 'set', SERVICE_INTERFACE, 'up');
    const port = `svc-${'abcdefgh'[i]}`;
    await ip('link', 'set', inService, 'netns', ns);
    await ip('-n', ns, 'link', 'set', inService, 'name', port);
    await ip('-n', ns, 'link', 'set', port, 'master', SERVICE_BRIDGE);
    await ip('-n', ns, 'link', 'set', port, 'up');
  }
}

/** A dead board's NIC answers nothing: drop the service address it may still hold. */
export async function dropAddress(netns: string, address: string, prefix: number, dev: string): Promise<void> {
  await ip('-n', netns, 'addr', 'del', `${address}/${prefix}`, 'dev', dev).catch(() => undefined);
}

export async function setPlink(netns: string, up: boolean): Promise<void> {
  await ip('-n', netns, 'link', 'set', PLINK_INTERFACE, up ? 'up' : 'down');
}

export interface PlinkStatus {
  /** Administratively up (the UP flag). */
  adminUp: boolean;
  /** Kernel operstate: UP, DOWN, LOWERLAYERDOWN… */
  operstate: string;
  rxBytes?: number;
  txBytes?: number;
}

export async function plinkStatus(netns: string): Promise<PlinkStatus | undefined> {
  try {
    const out = await ip('-j', '-s', '-n', netns, 'link', 'show', 'dev', PLINK_INTERFACE);
    const l = (JSON.parse(out) as Array<{ flags: string[]; operstate: string; stats64?: { rx?: { bytes: number }; tx?: { bytes: number } } }>)[0];
    if (!l) return undefined;
    return { adminUp: l.flags.includes('UP'), operstate: l.operstate, rxBytes: l.stats64?.rx?.bytes, txBytes: l.stats64?.tx?.bytes };
  } catch {
    return undefined;
  }
}
