/**
 * chassisd: the simulated chassis' supervisor, one process per chassis run. Builds the chassis
 * (namespaces and the veth partner link, the serial pty pairs and their pacing relay, console pty
 * pairs, watchdog FIFOs, the power controller), powers both boards on, and then serves the
 * `chassis` commands on <run>/chassis.sock until told to shut down. Everything it creates is
 * recorded in state.json before it is made, so a crash never leaves something nobody can find.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { UsError, asUsError } from '../../core/errors.js';
import { createLogger, type Logger } from '../../core/log.js';
import { probeKvm } from '../../hw/hypervisor/kvm-probe.js';
import { callControl, serveControl, type ControlServer } from '../../mgmt/ipc.js';
import { SimBoard, type SimBoardStatus } from './board.js';
import {
  AUTH_SERVICE, BOARD_NAMES, CLI_ENTRY, MIN_BOARDS, PACKAGE_ROOT, RUN_MARKER, SERVICE_INTERFACE, SERVICE_PREFIX,
  chassisLayout, guestOnBoard, guestServiceAddress, isPairBoard, parseBoardName, plinkAddress, serviceBoardAddress, type BoardName, type ChassisBoard, type ChassisLayout,
} from './layout.js';
import { assertBackplaneFree, assertNetworkFree, createBackplane, createNetwork, createServiceNetwork, dropAddress, plinkStatus, setPlink, vethTempNames, type PlinkStatus } from './netns.js';
import { PowerController } from './power-controller.js';
import { startTimeOf, isAlive, signal, sleep } from './procs.js';
import { BMC_CIPHER_SUITE, BMC_USER, writeBmcFiles } from './bmc.js';
import { IpmitoolFencing } from '../../hw/fencing/fencing.js';
import { writeChassisProfiles, writeGuestProfiles, type GuestProfileFiles } from './profiles.js';
import { pacemakerArgv, writePacemakerFiles, type ChassisManager } from './pacemaker.js';
import { consolePasswordPath, hashPassword, writePasswordFile } from '../../mgmt/console/index.js';
import { startPtyPair, type PtyPair } from './pty-pair.js';
import { SerialRelay, openSerialEnd, type DirectionCounters } from './serial-relay.js';
import { cleanupRecorded, writeState, type ChassisState } from './state.js';

export type GuestMode = 'none' | 'primary';
export type LinkName = 'ethernet' | 'serial';
export type FailHow = 'kill' | 'hang' | 'power';
/** How the boards fence each other: the power controller's socket, or IPMI to a simulated BMC per board (ipmi_sim) in front of it. */
export type ChassisFencing = 'simulated' | 'ipmi';

export interface ChassisdOptions {
  name: string;
  runDir?: string;
  /** Serial partner link rate, written into both profiles and used by the relay. */
  baud: number;
  guest: GuestMode;
  /** With guest 'primary': the descriptor (default guests/dx-legacy.json). */
  guestFile?: string;
  /** Default simulated. */
  fencing?: ChassisFencing;
  /** How many boards (2–8): sim-a and sim-b are the pair, further boards spares. Default 2. */
  boards?: number;
  /** pacemaker: every board also runs corosync and pacemaker in its own namespaces (pacemaker.ts). Default understudy. */
  manager?: ChassisManager;
  /**
   * Guests on the shelf (`--guests`, with --manager pacemaker and --guest primary): guest 1 is the
   * pair's; guest 2… run on their own natural pairs, started by Pacemaker (layout.ts guestPair,
   * docs/pacemaker.md). Default 1.
   */
  guests?: number;
}

/** What a board's controller says about itself, or why it could not be asked. */
export type Answer = { ok: true; result: unknown } | { ok: false; unavailable: string };

export interface BoardView extends SimBoardStatus {
  /** The controller answered `ping` on its control socket. */
  answers: boolean;
  controlSocket: string;
  role: Answer;
  linkStatus: Answer;
  /** `--guests`: the further guests' controllers on this board (Pacemaker's to start), asked on their own sockets. */
  guests?: Array<{ guest: number; serviceAddress: string; controlSocket: string; role: Answer }>;
}

export interface ChassisStatus {
  chassis: { name: string; runDir: string; pid: number; uptimeS: number; guest: GuestMode; baud: number; fencing: ChassisFencing; boards?: number; backplaneNetns?: string; manager?: ChassisManager; guests?: number };
  boards: BoardView[];
  links: {
    ethernet: { state: 'up' | 'cut'; ends: Record<ChassisBoard, PlinkStatus | null> };
    serial: { state: 'up' | 'cut'; baud: number; aToB: DirectionCounters; bToA: DirectionCounters };
  };
  powerController: { socket: string; broken: boolean; requests: number; recent: Array<{ at: string; request: string; reply: string }> };
  /** With --fencing ipmi: each board's simulated BMC (ipmi_sim), where it listens (in its partner's namespace) and whether it runs. */
  bmcs: Array<{ board: ChassisBoard; address: string; port: number; netns: string; pid: number; alive: boolean }>;
  /** The helper processes: socat behind the serial links and consoles, the AUTH service, the BMCs (--fencing ipmi). */
  helpers: Array<{ role: string; pid: number; alive: boolean }>;
}

/** How long a status query waits for a board's controller. */
const BOARD_QUERY_MS = 800;

export function parseLink(s: string): LinkName {
  const v = String(s).toLowerCase();
  if (v === 'ethernet' || v === 'eth') return 'ethernet';
  if (v === 'serial') return 'serial';
  throw new UsError('US_ERR_CONFIG', `unknown link "${s}" (links: ethernet, serial)`);
}

const run = promisify(execFile);
/** Console password of the simulated boards (docs/console.md). */
export const SIM_CONSOLE_PASSWORD = 'understudy';

export class Chassisd {
  readonly layout: ChassisLayout;
  private readonly state: ChassisState;
  private readonly boards = {} as Record<ChassisBoard, SimBoard>;
  private readonly ptys: PtyPair[] = [];
  private relay?: SerialRelay;
  private hlr?: ChildProcess;
  private power?: PowerController;
  private readonly bmcs: Array<{ board: ChassisBoard; address: string; port: number; netns: string; pid: number; process: ChildProcess }> = [];
  private control?: ControlServer;
  private ethernetCut = false;
  private readonly startedAt = Date.now();
  private stopping?: Promise<void>;

  constructor(private readonly o: ChassisdOptions, private readonly log: Logger) {
    this.layout = chassisLayout(o.name, o.runDir, o.boards ?? MIN_BOARDS);
    this.state = {
      version: 1,
      name: o.name,
      runDir: this.layout.runDir,
      startedAt: new Date().toISOString(),
      chassisd: { pid: process.pid, startTime: startTimeOf(process.pid) },
      namespaces: [],
      vethTemp: [],
      helpers: [],
      boards: {},
      ...(this.layout.boardNames.length > MIN_BOARDS ? { boardCount: this.layout.boardNames.length } : {}),
    };
  }

  /**
   * Updates state.json. Never throws: the run directory may have been removed under a running
   * chassis (a tmpfs cleaner, an operator), and a teardown must still stop everything it started;
   * the in-memory record stays the truth for stop(). While the chassis is being built (`strict`) a
   * failed write fails the build: the names must be on disk before the things are made.
   */
  private record(strict = false): void {
    for (const b of this.layout.boardNames) if (this.boards[b]) this.state.boards[b] = { controller: this.boards[b].controller, pacemaker: this.boards[b].clusterManager };
    try {
      writeState(this.layout.stateFile, this.state);
      this.recordFailed = false;
    } catch (e) {
      if (strict) throw e;
      if (!this.recordFailed) this.log.error({ err: (e as Error).message, file: this.layout.stateFile }, 'could not write the chassis state file');
      this.recordFailed = true;
    }
  }
  private recordFailed = false;

  /** Builds the chassis and boots both boards. On failure, undoes what it made and throws. */
  async start(): Promise<void> {
    const L = this.layout;
    // The chassis simulates hardware (the serial line's pacing, watchdogs): it must not be the one
    // that is late, so it runs real-time — but below the boards' membership processes (20), which
    // it must never starve on the shared housekeeping core.
    await run('chrt', ['-a', '-R', '-f', '-p', '9', String(process.pid)]).then(() => run('chrt', ['-R', '-f', '-p', '10', String(process.pid)])).catch((e: Error) => {
      this.log.warn({ err: e.message }, 'chassis runs without real-time priority');
    });
    // 0711: each board's QEMU user must pass through to its board's storageDir/qemu (the files here are 0600).
    mkdirSync(L.runDir, { recursive: true, mode: 0o711 });
    chmodSync(L.runDir, 0o711);
    for (const b of L.boardNames) {
      mkdirSync(L.boards[b].dir, { recursive: true, mode: 0o711 });
      chmodSync(L.boards[b].dir, 0o711);
    }
    this.record(true);
    try {
      // Names first, then the things: a crash in between still leaves them findable.
      const boardNetns = L.boardNames.map((b) => L.boards[b].netns);
      if (L.backplaneNetns) {
        const backplane = {
          backplaneNetns: L.backplaneNetns,
          boards: boardNetns,
          vethTemp: L.boardNames.flatMap(() => vethTempNames(this.o.name)),
          addresses: L.boardNames.map(plinkAddress),
          ports: L.boardNames.map((b) => `bp-${b.slice(4)}`),
        };
        await assertBackplaneFree(backplane);
        this.state.namespaces = [...boardNetns, L.backplaneNetns];
        this.state.vethTemp = [...backplane.vethTemp];
        this.record(true);
        await createBackplane(backplane);
      } else {
        const net = {
          namespaces: boardNetns as [string, string],
          vethTemp: vethTempNames(this.o.name),
          addresses: [plinkAddress('sim-a'), plinkAddress('sim-b')] as [string, string],
        };
        await assertNetworkFree(net);
        this.state.namespaces = [...net.namespaces];
        this.state.vethTemp = [...net.vethTemp];
        this.record(true);
        await createNetwork(net);
      }
      const svc = {
        serviceNetns: L.serviceNetns,
        boards: boardNetns,
        vethTemp: L.boardNames.flatMap(() => vethTempNames(this.o.name)),
        addresses: L.boardNames.map(serviceBoardAddress),
      };
      this.state.namespaces.push(L.serviceNetns);
      this.state.vethTemp.push(...svc.vethTemp);
      this.record(true);
      await createServiceNetwork(svc);
      this.log.info({ namespaces: this.state.namespaces }, 'network namespaces, the Ethernet partner link and the service network are up');
      await this.startHlr();

      // Probe the accelerator once, before any board runs: the controllers read the verdict
      // (kvm-probe.ts), and a nested-KVM probe stalls the machine, so never while heartbeats count.
      const accel = await probeKvm();
      this.log.info({ accel: accel.accel, reason: accel.reason }, 'accelerator for the boards\' guests');
      const profiles = writeChassisProfiles(L, this.o.baud, this.o.fencing ?? 'simulated', this.o.manager ?? 'understudy');
      const pacemaker = this.o.manager === 'pacemaker' ? writePacemakerFiles(L) : undefined;
      // Guests 2… (Pacemaker starts their controllers): their profiles, and a watchdog each on every board.
      const moreGuests: GuestProfileFiles[] = [];
      for (let k = 2; k <= (this.o.guests ?? 1); k++) moreGuests.push(...Object.values(writeGuestProfiles(L, k, this.o.manager ?? 'understudy')));
      // The simulated boards' serial consoles accept the documented default password.
      for (const b of L.boardNames) {
        mkdirSync(L.boards[b].storageDir, { recursive: true, mode: 0o700 });
        writePasswordFile(consolePasswordPath(L.boards[b]), await hashPassword(SIM_CONSOLE_PASSWORD));
      }
      // The serial partner link joins the pair only: a spare has no partner (its profile none).
      for (const b of L.boardNames) {
        if (isPairBoard(b)) await this.startPty(`socat serial ${b}`, [L.boards[b].serialDevice, L.boards[b].relayDevice]);
        await this.startPty(`socat console ${b}`, [L.boards[b].consoleBoard, L.boards[b].consoleUser]);
      }
      const onError = (e: Error) => this.log.error({ err: e.message }, 'serial relay port error');
      const [ra, rb] = await Promise.all(BOARD_NAMES.map((b) => openSerialEnd(L.boards[b].relayDevice, onError)));
      this.relay = new SerialRelay(ra!, rb!, { baud: this.o.baud });
      this.relay.start();
      this.log.info({ baud: this.o.baud }, 'serial partner link relay running');

      const guestFile = this.o.guest === 'primary' ? (this.o.guestFile ?? join(PACKAGE_ROOT, 'guests', 'dx-legacy.json')) : undefined;
      for (const b of L.boardNames) {
        this.boards[b] = new SimBoard({
          layout: L.boards[b],
          runDir: L.runDir,
          // A spare stands by without a guest (ready to be started by a cluster manager), as a blade
          // without a partner would; only the pair serves one.
          guestFile: isPairBoard(b) ? guestFile : undefined,
          watchdogTimeoutMs: profiles[b].watchdogTimeoutMs,
          log: this.log.child({ component: 'board' }),
          onChange: () => this.record(),
          onKilled: async () => {
            for (let k = 1; k <= (this.o.guests ?? 1); k++) await dropAddress(L.boards[b].netns, guestServiceAddress(k), SERVICE_PREFIX, SERVICE_INTERFACE);
          },
          guestWatchdogs: moreGuests.filter((g) => g.board === b).map((g) => ({ guest: g.guest, fifo: g.watchdogFifo, timeoutMs: g.watchdogTimeoutMs })),
          ...(pacemaker ? { clusterManager: { argv: pacemakerArgv(L, b), log: pacemaker[b].out, pidFile: pacemaker[b].unsharePid } } : {}),
          // With the guest in the cluster, Pacemaker starts a rebooted board's instance (the agent's
          // start, with the profile that pairs it with whichever board is promoted by then).
          firstBootOnly: !!pacemaker && guestFile !== undefined,
        });
        this.boards[b].openWatchdogs();
      }
      this.power = new PowerController(this.boards, this.log.child({ component: 'power' }));
      await this.power.listen(L.powerSocket);
      if (this.o.fencing === 'ipmi') for (const b of BOARD_NAMES) await this.startBmc(b);
      this.control = await serveControl(L.controlSocket, (cmd, args) => this.handle(cmd, args));
      await Promise.all(L.boardNames.map((b) => this.boards[b].powerOn()));
      this.record(true);
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'chassis failed to start; undoing');
      await this.stop();
      throw e;
    }
    this.log.info({ runDir: L.runDir }, 'chassis up');
  }

  /** The external AUTH service, in the service network. */
  private async startHlr(): Promise<void> {
    const L = this.layout;
    const child = spawn('ip', ['netns', 'exec', L.serviceNetns, process.execPath, CLI_ENTRY, 'hlr',
      '--listen', `${AUTH_SERVICE.address}:${AUTH_SERVICE.port}`, '--deny', '^blocked'], {
      stdio: 'ignore', env: { ...process.env, [RUN_MARKER]: L.runDir },
    });
    await new Promise<void>((resolve, reject) => { child.once('spawn', () => resolve()); child.once('error', reject); });
    this.state.helpers.push({ role: 'AUTH service', pid: child.pid!, startTime: startTimeOf(child.pid!) });
    this.record(true);
    this.hlr = child;
  }

  /**
   * One board's simulated BMC: ipmi_sim in the partner's namespace (where the fence comes from),
   * recorded by pid before anything else; ready once `chassis power status` answers through it.
   */
  private async startBmc(board: BoardName): Promise<void> {
    const { files, argv } = writeBmcFiles(this.layout, board);
    const logFd = openSync(files.log, 'a', 0o600);
    const child = spawn('ip', ['netns', 'exec', files.netns, ...argv], { stdio: ['ignore', logFd, logFd], env: { ...process.env, [RUN_MARKER]: this.layout.runDir } });
    closeSync(logFd);
    await new Promise<void>((resolve, reject) => { child.once('spawn', () => resolve()); child.once('error', (e) => reject(new UsError('US_ERR_NOT_FOUND', `cannot start ipmi_sim for ${board}: ${e.message}`))); });
    this.state.helpers.push({ role: `BMC ${board} (ipmi_sim)`, pid: child.pid!, startTime: startTimeOf(child.pid!) });
    this.record(true);
    this.bmcs.push({ board, address: files.address, port: files.port, netns: files.netns, pid: child.pid!, process: child });
    child.once('exit', (code, sig) => {
      if (!this.stopping) this.log.error({ board, code, signal: sig, log: files.log }, `BMC of ${board} (ipmi_sim) exited: IPMI fencing of ${board} fails until the next chassis up`);
    });
    const probe = new IpmitoolFencing({ host: files.address, port: files.port, user: BMC_USER, passwordFile: files.partnerPasswordFile, cipherSuite: BMC_CIPHER_SUITE });
    const end = Date.now() + 10000;
    for (;;) {
      try {
        await run('ip', ['netns', 'exec', files.netns, 'ipmitool', ...probe.args('status')], { timeout: 2000 });
        break;
      } catch (e) {
        if (child.exitCode !== null || Date.now() > end) {
          throw new UsError('US_ERR_CHASSIS', `the simulated BMC of ${board} (ipmi_sim at ${files.address}:${files.port} in ${files.netns}) does not answer: ${((e as { stderr?: string }).stderr ?? (e as Error).message).trim().slice(-200)}; see ${files.log} (is openipmi installed? image-build/setup.sh installs it)`);
        }
        await sleep(100);
      }
    }
    this.log.info({ board, address: files.address, port: files.port, netns: files.netns, pid: child.pid }, `BMC of ${board} (ipmi_sim) answers`);
  }

  private async startPty(role: string, ends: [string, string]): Promise<void> {
    const pair = await startPtyPair(ends, this.layout.runDir);
    this.ptys.push(pair);
    this.state.helpers.push({ role, pid: pair.pid, startTime: pair.startTime });
    this.record(true);
    pair.process.once('exit', (code, sig) => {
      if (!this.stopping) this.log.error({ role, code, signal: sig }, `${role} (socat) exited; that link is dead until the next chassis up`);
    });
  }

  /** Orderly teardown: boards shut down (SIGTERM, then their groups killed), helpers, network. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info('chassis shutting down');
      this.control?.close();
      this.power?.close();
      await Promise.allSettled(this.layout.boardNames.filter((b) => this.boards[b]).map((b) => this.boards[b].shutdown()));
      for (const b of this.layout.boardNames) this.boards[b]?.closeWatchdogs();
      this.record();
      await this.relay?.close();
      for (const p of this.ptys) if (isAlive(p.pid)) signal(p.pid, 'SIGTERM');
      for (const b of this.bmcs) if (isAlive(b.pid)) signal(b.pid, 'SIGTERM');
      if (this.hlr?.pid && isAlive(this.hlr.pid)) signal(this.hlr.pid, 'SIGTERM');
      const report = await cleanupRecorded(this.state);
      this.log.info(report, 'chassis torn down');
      if (report.survivors.length === 0) {
        for (const f of [this.layout.stateFile, this.layout.controlSocket, this.layout.powerSocket, this.layout.keyFile]) rmSync(f, { force: true });
        for (const b of this.layout.boardNames) {
          const B = this.layout.boards[b];
          for (const f of [B.serialDevice, B.relayDevice, B.consoleBoard, B.consoleUser, B.watchdogFifo]) rmSync(f, { force: true });
        }
      }
    })();
    return this.stopping;
  }

  private board(args: Record<string, unknown>): SimBoard {
    return this.boards[parseBoardName(String(args.board ?? ''), this.layout.boardNames)];
  }

  private async handle(command: string, args: Record<string, unknown>): Promise<unknown> {
    if (this.stopping && command !== 'ping') throw new UsError('US_ERR_CHASSIS', 'the chassis is shutting down');
    switch (command) {
      case 'ping':
        return { chassis: this.o.name, pid: process.pid };
      case 'status':
        return this.status();
      case 'fail': {
        const board = this.board(args);
        const how = String(args.how ?? '');
        if (how === 'kill') return { board: board.name, how, pid: board.killController() ?? null };
        if (how === 'hang') return { board: board.name, how, pid: board.hangController() ?? null };
        if (how === 'power') {
          await board.powerOff('power-fail');
          return { board: board.name, how, power: board.power };
        }
        throw new UsError('US_ERR_CONFIG', `unknown failure "${how}" (kill, hang, power)`);
      }
      case 'power': {
        const board = this.board(args);
        const to = String(args.state ?? '');
        if (to === 'on') await board.powerOn();
        else if (to === 'off') await board.powerOff('operator');
        else throw new UsError('US_ERR_CONFIG', `power: expected on or off, got "${to}"`);
        return { board: board.name, power: board.power };
      }
      case 'power-controller': {
        const action = String(args.action ?? '');
        if (action === 'break') this.power!.break();
        else if (action === 'fix') this.power!.fix();
        else throw new UsError('US_ERR_CONFIG', `power-controller: expected break or fix, got "${action}"`);
        return { broken: this.power!.broken };
      }
      case 'cut':
      case 'heal':
        return this.setLink(parseLink(String(args.link ?? '')), command === 'heal', args.board === undefined ? undefined : String(args.board));
      case 'shutdown':
        setImmediate(() => void this.stop().then(() => process.exit(0), () => process.exit(1)));
        return { stopping: true };
      default:
        throw new UsError('US_ERR_CONTROL', `unknown chassis command "${command}"`);
    }
  }

  private async setLink(link: LinkName, up: boolean, board?: string): Promise<unknown> {
    if (link === 'serial') {
      if (board !== undefined) throw new UsError('US_ERR_CONFIG', 'cut serial: the serial link joins sim-a and sim-b alone; no --board');
      if (up) this.relay!.heal(); else this.relay!.cut();
      this.log.warn(`serial partner link ${up ? 'healed' : 'cut'}`);
      return { link, state: this.relay!.isCut ? 'cut' : 'up' };
    }
    const L = this.layout;
    // Cut: one board's plink down (sim-a's by default): that board is off the backplane. Heal: every plink up.
    const cut = board === undefined ? 'sim-a' : parseBoardName(board, L.boardNames);
    const targets = up ? L.boardNames : [cut];
    for (const b of targets) await setPlink(L.boards[b].netns, up);
    for (const b of targets) {
      const st = await plinkStatus(L.boards[b].netns);
      if (!st || st.adminUp !== up) throw new UsError('US_ERR_CHASSIS', `ethernet ${up ? 'heal' : 'cut'}: plink of ${b} in ${L.boards[b].netns} is ${st ? (st.adminUp ? 'up' : 'down') : 'missing'}`);
    }
    this.ethernetCut = !up;
    this.log.warn(`ethernet partner link ${up ? 'healed' : `cut (${cut}'s plink down)`}`);
    return { link, state: up ? 'up' : 'cut', ...(up ? {} : { board: cut }) };
  }

  private async askBoard(sock: string, command: string): Promise<Answer> {
    try {
      return { ok: true, result: await callControl(sock, command, {}, BOARD_QUERY_MS) };
    } catch (e) {
      const u = asUsError(e);
      return { ok: false, unavailable: `${u.code}: ${u.message}` };
    }
  }

  /** One board as the chassis sees it, and its controller's answers. */
  private async boardView(b: ChassisBoard): Promise<BoardView> {
    const st = this.boards[b].status();
    const sock = this.layout.boards[b].controlSocket;
    if (!st.controller || st.controller.state !== 'running') {
      const why = st.controller ? `controller ${st.controller.state}` : `board ${st.power === 'off' ? 'powered off' : 'has no controller'}`;
      return { ...st, answers: false, controlSocket: sock, role: { ok: false, unavailable: why }, linkStatus: { ok: false, unavailable: why } };
    }
    const [ping, role, linkStatus] = await Promise.all([this.askBoard(sock, 'ping'), this.askBoard(sock, 'role'), this.askBoard(sock, 'link.status')]);
    return { ...st, answers: ping.ok, controlSocket: sock, role, linkStatus };
  }

  /** The further guests' controllers on board `b` (none without `--guests`). */
  private async guestViews(b: ChassisBoard): Promise<Pick<BoardView, 'guests'>> {
    const n = this.o.guests ?? 1;
    if (n < 2) return {};
    const guests = [];
    for (let k = 2; k <= n; k++) {
      const sock = guestOnBoard(this.layout, b, k).controlSocket;
      const role = this.boards[b].power === 'on' ? await this.askBoard(sock, 'role') : { ok: false as const, unavailable: 'board powered off' };
      guests.push({ guest: k, serviceAddress: guestServiceAddress(k), controlSocket: sock, role });
    }
    return { guests };
  }

  async status(): Promise<ChassisStatus> {
    const L = this.layout;
    const boards = await Promise.all(L.boardNames.map(async (b) => ({ ...await this.boardView(b), ...await this.guestViews(b) })));    const ends = await Promise.all(L.boardNames.map((b) => plinkStatus(L.boards[b].netns)));
    const counters = this.relay!.counters();
    const pc = this.power!.status();
    return {
      chassis: {
        name: this.o.name, runDir: L.runDir, pid: process.pid, uptimeS: Math.round((Date.now() - this.startedAt) / 1000), guest: this.o.guest, baud: this.o.baud, fencing: this.o.fencing ?? 'simulated',
        ...(L.backplaneNetns ? { boards: L.boardNames.length, backplaneNetns: L.backplaneNetns } : {}),
        ...(this.o.manager === 'pacemaker' ? { manager: this.o.manager } : {}),
        ...((this.o.guests ?? 1) > 1 ? { guests: this.o.guests } : {}),
      },
      boards,
      links: {
        ethernet: { state: this.ethernetCut ? 'cut' : 'up', ends: Object.fromEntries(L.boardNames.map((b, i) => [b, ends[i] ?? null])) },
        serial: { state: this.relay!.isCut ? 'cut' : 'up', baud: this.o.baud, aToB: counters.aToB, bToA: counters.bToA },
      },
      powerController: { socket: L.powerSocket, broken: pc.broken, requests: pc.requests, recent: pc.recent },
      bmcs: this.bmcs.map((b) => ({ board: b.board, address: b.address, port: b.port, netns: b.netns, pid: b.pid, alive: isAlive(b.pid) })),
      helpers: this.state.helpers.map((h) => ({ role: h.role, pid: h.pid, alive: isAlive(h.pid) })),
    };
  }
}

/**
 * Entry of `understudy chassis run` (internal; started detached by `chassis up`). Writes one line
 * to stdout once the chassis is built — `READY <pid>` or `FAILED <json error>` — then runs until
 * SIGTERM/SIGINT or the `shutdown` request.
 */
export async function runChassisd(o: ChassisdOptions): Promise<void> {
  const log = createLogger('chassisd').child({ chassis: o.name });
  const d = new Chassisd(o, log);
  const notify = (line: string) => {
    try {
      process.stdout.write(`${line}\n`);
    } catch {
      // the launcher has gone; the log has it
    }
  };
  process.stdout.on('error', () => undefined);
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.once(sig, () => {
      log.info({ signal: sig }, 'signal: shutting down');
      void d.stop().then(() => process.exit(0), () => process.exit(1));
    });
  }
  try {
    await d.start();
  } catch (e) {
    notify(`FAILED ${JSON.stringify(asUsError(e).toJSON())}`);
    process.exit(1);
  }
  notify(`READY ${process.pid}`);
}

/** The last lines of a log file, for error messages. */
export function tail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').split('\n').filter(Boolean).slice(-lines).join('\n');
  } catch {
    return '';
  }
}
