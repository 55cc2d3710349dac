/**
 * Starting, driving and stopping a chassis from outside: the one code path the CLI and the test
 * rig share. `chassisUp` cleans up after a crashed run, starts chassisd detached (its own process
 * group, output to <run>/chassisd.log), and waits until both boards' controllers answer.
 * `chassisDown` asks chassisd to shut down, then undoes whatever state.json still names.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { closeSync, existsSync, mkdirSync, openSync, rmSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { join, resolve } from 'node:path';
import { UsError, type UsErrorCode } from '../../core/errors.js';
import { callControl } from '../../mgmt/ipc.js';
import { tail, type ChassisFencing, type ChassisStatus, type GuestMode } from './chassisd.js';
import { BOARD_NAMES, CLI_ENTRY, MIN_BOARDS, MIN_GUESTS, PACKAGE_ROOT, RUN_MARKER, boardNames, chassisLayout, guestCount, guestPair, type ChassisLayout } from './layout.js';
import { isSameProcess, sleep, waitUntil } from './procs.js';
import { FENCE_DEVICE_ID, fenceDeviceXml, guestCloneXml, guestIds, initialPlacementXml, namespaceInit, nsenterArgv, type ChassisManager } from './pacemaker.js';
import { chassisdAlive, cleanupRecorded, readState, type CleanupReport } from './state.js';

export interface UpOptions {
  /** Chassis name: namespaces are <name>-a and <name>-b. Default `us`. */
  name?: string;
  /** Default /run/understudy/chassis-<name>. */
  runDir?: string;
  /** `none`: boards run without a guest; `primary`: both get the reference guest, the primary runs it. */
  guest?: GuestMode;
  /** With `guest: 'primary'`: the guest descriptor both boards get (default guests/dx-legacy.json). */
  guestFile?: string;
  /** Serial partner link rate. Default 115200. */
  baud?: number;
  /** How the boards fence each other: `simulated` (the power controller, default) or `ipmi` (ipmitool to a simulated BMC per board, ipmi_sim). */
  fencing?: ChassisFencing;
  /** Bound on the wait for both controllers to answer. Default 30 s, or 180 s with a guest. */
  timeoutMs?: number;
  /**
   * How many boards, 2–8 (default 2): sim-a and sim-b are the pair as always; sim-c… are spares,
   * each in its own namespaces, all on one backplane bridge (docs/chassis.md).
   */
  boards?: number;
  /** pacemaker: every board also runs corosync and pacemaker (docs/pacemaker.md); `up` waits until all are online. Default understudy. */
  manager?: ChassisManager;
  /**
   * With `manager: 'pacemaker'`: configure the fence device stonith:fence_understudy_chassis on the
   * chassis' power controller and enable fencing (`stonith-enabled=true`). Default false: the
   * cluster has no fence device and fencing off (the pair fences for itself).
   */
  stonith?: boolean;
  /**
   * With `manager: 'pacemaker'` and `guest: 'primary'`: how many guests share the shelf (1 to
   * boards − 1, default 1). Guest k > 1 is a promotable clone of its own (`guest<k>-clone`), served
   * first on its natural pair (layout.ts guestPair), its controllers started by Pacemaker.
   */
  guests?: number;
}

export interface UpResult {
  pid: number;
  /** What was cleaned up first because the previous run had crashed, if anything. */
  recovered: CleanupReport | null;
  status: ChassisStatus;
}

export interface DownResult {
  name: string;
  runDir: string;
  wasRunning: boolean;
  /** chassisd shut down on request (rather than being killed). */
  orderly: boolean;
  cleanup: CleanupReport | null;
}

export const DEFAULT_NAME = 'us';
const run = promisify(execFile);
export const DEFAULT_BAUD = 115200;

function validBaud(baud: number): number {
  if (!Number.isInteger(baud) || baud < 300 || baud > 4_000_000) throw new UsError('US_ERR_CONFIG', `--baud: an integer from 300 to 4000000, got ${baud}`);
  return baud;
}

/** Undoes a previous run whose chassisd is gone; refuses if it is still running. */
async function recoverPrevious(L: ChassisLayout): Promise<CleanupReport | null> {
  const prev = readState(L.stateFile);
  if (!prev) return null;
  if (chassisdAlive(prev)) {
    throw new UsError('US_ERR_ALREADY_RUNNING', `chassis ${L.name} is already running (chassisd pid ${prev.chassisd!.pid}, ${L.runDir}); \`understudy chassis down --name ${L.name}\` first`);
  }
  const report = await cleanupRecorded(prev);
  if (report.survivors.length) throw new UsError('US_ERR_CHASSIS', `could not clean up the previous run: pids ${report.survivors.join(', ')} survive SIGKILL`);
  rmSync(L.stateFile, { force: true });
  return report;
}

/** Spawns chassisd and waits for its READY/FAILED line. */
async function spawnChassisd(L: ChassisLayout, guest: GuestMode, baud: number, fencing: ChassisFencing, guestFile?: string, manager: ChassisManager = 'understudy', guests = 1): Promise<number> {
  const logFd = openSync(L.log, 'a', 0o600);
  const boards = [...(L.boardNames.length > MIN_BOARDS ? ['--boards', String(L.boardNames.length)] : []), ...(manager === 'pacemaker' ? ['--manager', manager] : []),
    ...(guests > 1 ? ['--guests', String(guests)] : [])];
  const child = spawn(process.execPath, [CLI_ENTRY, 'chassis', 'run', '--name', L.name, '--run-dir', L.runDir, '--baud', String(baud), '--guest', guest, '--fencing', fencing, ...boards, ...(guestFile ? ['--guest-file', guestFile] : [])], {
    detached: true,
    stdio: ['ignore', 'pipe', logFd],
    env: { ...process.env, [RUN_MARKER]: L.runDir, UNDERSTUDY_LOG: process.env.UNDERSTUDY_LOG ?? 'info' },
  });
  closeSync(logFd);
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new UsError('US_ERR_TIMEOUT', `chassisd did not report within 30 s; see ${L.log}`)), 30000);
    rl.once('line', (l) => { clearTimeout(timer); resolve(l); });
    child.once('exit', (code) => { clearTimeout(timer); reject(new UsError('US_ERR_CHASSIS', `chassisd exited (${code}) while building the chassis:\n${tail(L.log)}`)); });
  });
  child.stdout!.destroy();
  child.unref();
  if (line.startsWith('READY')) return child.pid!;
  let err: { code: UsErrorCode; message: string };
  try {
    err = JSON.parse(line.slice('FAILED '.length)) as { code: UsErrorCode; message: string };
  } catch {
    err = { code: 'US_ERR_CHASSIS', message: `chassisd said "${line.slice(0, 200)}"` };
  }
  throw new UsError(err.code, `${err.message} (see ${L.log})`);
}

export async function chassisUp(o: UpOptions = {}): Promise<UpResult> {
  const name = o.name ?? DEFAULT_NAME;
  const guest = o.guest ?? 'none';
  if (guest !== 'none' && guest !== 'primary') throw new UsError('US_ERR_CONFIG', `--guest: none or primary, got "${String(guest)}"`);
  const baud = validBaud(o.baud ?? DEFAULT_BAUD);
  if (o.stonith && o.manager !== 'pacemaker') throw new UsError('US_ERR_CONFIG', '--stonith needs --manager pacemaker (it configures Pacemaker\'s fence device)');
  const fencing = o.fencing ?? 'simulated';
  if (fencing !== 'simulated' && fencing !== 'ipmi') throw new UsError('US_ERR_CONFIG', `--fencing: simulated or ipmi, got "${String(fencing)}"`);
  const count = boardNames(o.boards ?? MIN_BOARDS).length;
  if (count > MIN_BOARDS && fencing === 'ipmi') throw new UsError('US_ERR_CONFIG', '--fencing ipmi: only on a chassis of two boards (the BMCs sit in the pair\'s namespaces)');
  const guests = guestCount(o.guests ?? MIN_GUESTS, count);
  if (guests > 1 && (o.manager !== 'pacemaker' || guest !== 'primary')) throw new UsError('US_ERR_CONFIG', '--guests: more than one guest needs --manager pacemaker and --guest primary (Pacemaker places and starts guests 2…)');
  const L = chassisLayout(name, o.runDir, count);
  mkdirSync(L.runDir, { recursive: true, mode: 0o711 }); // searchable: the boards' QEMU users pass through (chassisd.ts)
  const recovered = await recoverPrevious(L);
  let guestFile: string | undefined;
  if (o.guestFile) {
    if (guest !== 'primary') throw new UsError('US_ERR_CONFIG', '--guest-file needs --guest primary');
    guestFile = resolve(o.guestFile);
    if (!existsSync(guestFile)) throw new UsError('US_ERR_NOT_FOUND', `--guest-file: no guest descriptor at ${guestFile}`);
  }
  const manager = o.manager ?? 'understudy';
  if (manager !== 'understudy' && manager !== 'pacemaker') throw new UsError('US_ERR_CONFIG', `--manager: understudy or pacemaker, got "${String(manager)}"`);
  const pid = await spawnChassisd(L, guest, baud, fencing, guestFile, manager, guests);
  const timeoutMs = o.timeoutMs ?? (guest === 'none' ? (manager === 'pacemaker' ? 120000 : 30000) : 180000);
  const end = Date.now() + timeoutMs;
  let status: ChassisStatus | undefined;
  // A board counts once it has answered: its HA layer may fence the other one a moment later.
  const answered = new Set<string>();
  while (Date.now() < end) {
    status = (await callControl(L.controlSocket, 'status', {}, 10000)) as ChassisStatus;
    for (const b of status.boards) if (b.answers) answered.add(b.board);
    if (answered.size === status.boards.length) {
      if (manager !== 'pacemaker') return { pid, recovered, status };
      const online = await clusterOnline(L).catch(() => [] as string[]);
      if (online.length === status.boards.length) {
        if (o.stonith) await configureStonith(L);
        // With a guest to protect, the chassis configures it in the cluster as ocf:understudy:guest
        // (each guest of the shelf its own clone).
        const descriptor = guestFile ?? join(PACKAGE_ROOT, 'guests', 'dx-legacy.json');
        if (guest === 'primary') for (let k = 1; k <= guests; k++) await configureGuestClone(L, descriptor, !!o.stonith, k, end);
        return { pid, recovered, status };
      }
    }
    const lost = status.boards.find((b) => !answered.has(b.board) && !b.resetting && (b.power === 'off' || !b.controller || !b.controller.alive));
    if (lost) {
      const ex = lost.lastExit;
      const what = lost.power === 'off'
        ? `${lost.board} was powered off (${lost.resets.last?.cause ?? 'unknown cause'})`
        : `${lost.board}'s controller exited (${ex ? (ex.signal ?? `code ${ex.code}`) : 'not started'})`;
      throw new UsError('US_ERR_NOT_RUNNING', `${what} before it answered; `
        + `the chassis stays up for inspection (\`understudy chassis status --name ${name}\`, \`chassis down\` to clean up). Last lines of ${lost.log}:\n${tail(lost.log)}`);
    }
    await sleep(200);
  }
  const silent = status?.boards.filter((b) => !answered.has(b.board)).map((b) => b.board).join(', ') ?? BOARD_NAMES.join(', ');
  if (!silent && manager === 'pacemaker') {
    const online = await clusterOnline(L).catch(() => [] as string[]);
    throw new UsError('US_ERR_TIMEOUT', `Pacemaker shows ${online.length ? online.join(', ') : 'no board'} online, not all ${L.boardNames.length} boards, after ${timeoutMs} ms; the chassis stays up for inspection (\`chassis crm <board> -- crm_mon -1\`, logs in <board dir>/pacemaker/; \`chassis down\` to clean up)`);
  }
  throw new UsError('US_ERR_TIMEOUT', `controllers of ${silent} did not answer within ${timeoutMs} ms; the chassis stays up for inspection (\`chassis down\` to clean up)`);
}

/** Runs one of Pacemaker's tools on the first board that has its daemons running (inside its namespaces); undefined when none has. */
export async function onCluster(L: ChassisLayout, argv: string[]): Promise<{ stdout: string } | undefined> {
  const st = readState(L.stateFile);
  for (const b of L.boardNames) {
    const rec = st?.boards[b]?.pacemaker;
    if (!rec || !isSameProcess(rec)) continue;
    const init = namespaceInit(rec.pid);
    if (!init) continue;
    return run('nsenter', nsenterArgv(init, argv), { timeout: 30000 });
  }
  return undefined;
}

/** The nodes Pacemaker shows online, asked on the first board that has its daemons running (`crm_mon --output-as=xml`). */
export async function clusterOnline(L: ChassisLayout): Promise<string[]> {
  const r = await onCluster(L, ['crm_mon', '-1', '--output-as=xml']);
  return r ? [...r.stdout.matchAll(/<node name="([^"]+)"[^>]*\bonline="true"/g)].map((m) => m[1]!) : [];
}

/** Runs Pacemaker tools on the cluster one after the other; a failure is a configuration error saying what was being configured. */
async function onClusterInTurn(L: ChassisLayout, what: string, steps: string[][]): Promise<void> {
  for (const argv of steps) {
    try {
      await onCluster(L, argv);
    } catch (e) {
      const x = e as { stderr?: string; message: string };
      throw new UsError('US_ERR_CONFIG', `configuring ${what} in the cluster: ${argv[0]} failed: ${(x.stderr ?? x.message).trim()}; the chassis stays up for inspection (\`chassis crm <board> -- crm configure show\`; \`chassis down\` to clean up)`);
    }
  }
}

/** Whether the cluster's CIB has an element (an XPath query on the first board that answers). */
const cibHas = (L: ChassisLayout, xpath: string) => onCluster(L, ['cibadmin', '--query', '--xpath', xpath]).then(() => true, () => false);

/**
 * Configures the guest as ocf:understudy:guest, a promotable clone over every board
 * (`guestCloneXml`), unless the cluster has it already (a chassis brought up again keeps the boards'
 * CIBs). Fencing: unless the chassis configured a fence device (`--stonith`), the cluster's
 * `stonith-enabled` is set false here (docs/pacemaker.md: the pair fences for itself through the
 * power controller). `guestFile` absent: the agent's default descriptor (a chassis brought up without a guest).
 */
export async function configureGuestClone(L: ChassisLayout, guestFile?: string, stonith = false, k = 1, until = Date.now() + 240000): Promise<void> {
  const ids = guestIds(k);
  if (await cibHas(L, `//clone[@id='${ids.clone}']`)) return;
  // Guest k > 1 runs nowhere yet: its first placement is its natural pair. The clone is created
  // stopped, the constraints added, then it is started; the constraints are removed once both
  // instances run, so that later placements are Pacemaker's alone, as for guest 1.
  const first = k === 1 ? [] : initialPlacementXml(L, k);
  const xml = guestCloneXml(L, { cli: join(PACKAGE_ROOT, 'bin', 'understudy'), daemon: join(PACKAGE_ROOT, 'bin', 'understudyd'), guestFile, stopped: first.length > 0 }, k);
  const what = k === 1 ? 'the guest' : `guest ${k}`;
  await onClusterInTurn(L, what, [
    ...(stonith ? [] : [['crm_attribute', '--type', 'crm_config', '--name', 'stonith-enabled', '--update', 'false']]),
    ['cibadmin', '--create', '--scope', 'resources', '--xml-text', xml],
    ...first.map((c) => ['cibadmin', '--create', '--scope', 'constraints', '--xml-text', c.xml]),
    ...(first.length ? [['crm_resource', '--resource', ids.clone, '--meta', '--delete-parameter', 'target-role']] : []),
  ]);
  if (!first.length) return;
  const pair = guestPair(L, k);
  let where: string[] = [];
  while (Date.now() < until) {
    const r = await onCluster(L, ['crm_resource', '--resource', ids.clone, '--locate']).catch(() => undefined);
    where = [...(r?.stdout ?? '').matchAll(/is running on: (\S+)/g)].map((m) => m[1]!);
    if (pair.every((b) => where.includes(b))) break;
    await sleep(1000);
  }
  if (!pair.every((b) => where.includes(b))) {
    throw new UsError('US_ERR_TIMEOUT', `${what} was not started on ${pair.join(' and ')} in time (running on: ${where.join(', ') || 'none'}); the chassis stays up for inspection (\`chassis crm <board> -- crm_mon -1\`; \`chassis down\` to clean up)`);
  }
  await onClusterInTurn(L, what, first.map((c) => ['cibadmin', '--delete', '--scope', 'constraints', '--xml-text', `<rsc_location id="${c.id}"/>`]));
}

/**
 * Configures Pacemaker's fencing (`chassis up --stonith`): the fence device `fenceDeviceXml`
 * (stonith:fence_understudy_chassis on the power controller) unless the cluster has it already,
 * and `stonith-enabled=true`.
 */
export async function configureStonith(L: ChassisLayout): Promise<void> {
  const has = await cibHas(L, `//primitive[@id='${FENCE_DEVICE_ID}']`);
  await onClusterInTurn(L, 'fencing', [
    ...(has ? [] : [['cibadmin', '--create', '--scope', 'resources', '--xml-text', fenceDeviceXml(L)]]),
    ['crm_attribute', '--type', 'crm_config', '--name', 'stonith-enabled', '--update', 'true'],
  ]);
}

/** Sends one request to a running chassis. */
export async function chassisCall(o: { name?: string; runDir?: string }, command: string, args: Record<string, unknown> = {}, timeoutMs = 15000): Promise<unknown> {
  const L = chassisLayout(o.name ?? DEFAULT_NAME, o.runDir);
  const st = readState(L.stateFile);
  if (!st) throw new UsError('US_ERR_NOT_RUNNING', `no chassis "${L.name}" is running (no ${L.stateFile}); \`understudy chassis up --name ${L.name}\``);
  if (!chassisdAlive(st)) throw new UsError('US_ERR_NOT_RUNNING', `chassis "${L.name}" crashed (chassisd pid ${st.chassisd?.pid} is gone); \`chassis down\` or \`chassis up\` cleans up after it`);
  return callControl(L.controlSocket, command, args, timeoutMs);
}

export async function chassisDown(o: { name?: string; runDir?: string; purge?: boolean } = {}): Promise<DownResult> {
  const L = chassisLayout(o.name ?? DEFAULT_NAME, o.runDir);
  const st = readState(L.stateFile);
  const result: DownResult = { name: L.name, runDir: L.runDir, wasRunning: false, orderly: false, cleanup: null };
  if (st) {
    result.wasRunning = chassisdAlive(st);
    if (result.wasRunning) {
      try {
        await callControl(L.controlSocket, 'shutdown', {}, 5000);
        result.orderly = await waitUntil(() => !chassisdAlive(st), 20000, 50);
      } catch {
        result.orderly = false;
      }
    }
    // Whatever chassisd did or did not undo, undo what the record still names.
    result.cleanup = await cleanupRecorded(st);
    if (result.cleanup.survivors.length) throw new UsError('US_ERR_CHASSIS', `chassis ${L.name}: pids ${result.cleanup.survivors.join(', ')} survive SIGKILL`, { cleanup: result.cleanup });
    rmSync(L.stateFile, { force: true });
  }
  if (o.purge && existsSync(L.runDir)) rmSync(L.runDir, { recursive: true, force: true });
  return result;
}
