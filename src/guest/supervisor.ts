/**
 * Supervises one guest on one board: boots it under QEMU, pins its vCPU to the board's guest core
 * (QEMU's other threads and the controller to the housekeeping cores), waits until the application
 * answers, restarts it when its watchdog fires or QEMU dies, and stops it. Owns the QEMU process,
 * the guest NIC link and the guest's management port; does not own the service endpoint.
 *
 * Orphans: QEMU dies with the controller (pdeathsig, see hw/hypervisor/qemu.ts). A QEMU recorded in
 * the board's pid file that is somehow still alive at start is killed, never adopted.
 */
import { EventEmitter } from 'node:events';
import { chownSync, existsSync, readdirSync, fchownSync, lchownSync, lstatSync, mkdirSync, openSync, closeSync, ftruncateSync, fstatSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { basename, delimiter, dirname, isAbsolute, join } from 'node:path';
import { accessSync, constants as fsConstants } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BoardProfile } from '../config/board-profile.js';
import type { GuestDescriptor } from '../config/guest-descriptor.js';
import { UsError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { makeParentDirs } from '../core/dirs.js';
import { listThreads, onlineCpus, readThreadAffinity, setProcessAffinity, setRealtimePriority, setThreadAffinity, setThreadIdle, type ThreadAffinity } from '../hw/affinity.js';
import { GuestLink } from '../hw/guestnet/link.js';
import { markKvmBroken, probeKvm, type Accel } from '../hw/hypervisor/kvm-probe.js';
import { QemuProcess } from '../hw/hypervisor/qemu.js';
import { readFrom, readableByQemu, resolveQemuUser, unreachableFor, type QemuCredentials } from '../hw/hypervisor/qemu-user.js';
import type { Hypervisor } from '../hw/hypervisor/types.js';
import { cpuAvailability, procState, readSchedSample, type SchedSample } from '../hw/proc-state.js';
import type { QmpEvent } from '../hw/qmp/client.js';
import { GuestPort } from './guest-port.js';

export type GuestState = 'stopped' | 'starting' | 'running' | 'restarting' | 'failed';

/**
 * What the guest application said about its saved state at its last boot (its `DX-STATE` console
 * line, guests/dx-legacy/PROTOCOL.md), and whether a state was expected: the state disk held one.
 */
export interface StateLoadOutcome {
  expected: boolean;
  outcome: 'loaded' | 'empty' | 'unknown';
  /** The guest's reason for starting empty (`badformat`, `badcrc`, `nomagic`, …). */
  reason?: string;
  line?: string;
  at: string;
}

/** The guest's state-load line on its console. */
const DX_STATE_LINE = /DX-STATE (loaded|empty)(?: reason=(\S+))?[^\r\n]*/;
/** How long after the guest answers its first PING its DX-STATE line may still be on its way to the console log. */
const STATE_LINE_WAIT_MS = 5000;
/** Bytes of the state disk's header (DX_STATE_HDR_LEN): all zero means no state was ever saved. */
const STATE_HEADER_BYTES = 64;

export interface RestartRecord {
  at: string;
  cause: string;
}

export interface GuestStatus {
  state: GuestState;
  guest: { name: string; version: string; nic: string; memoryMb: number };
  accel?: Accel;
  accelReason?: string;
  qemuPid?: number;
  vcpuTid?: number;
  bootToReadyMs?: number;
  appVersion?: string;
  requestsProcessed?: number;
  /** Requests the application should have processed once it has worked through what it was given. */
  appSeqExpected?: number;
  /** Frames over the guest's NIC link: to the guest, from it, and dropped because QEMU was not connected. */
  nic?: { framesToGuest: number; framesFromGuest: number; dropped: number };
  /** Requests flow control stopped waiting for: handed to the guest, never processed by it while idle (guest-port.ts IDLE_WRITE_OFF_MS). */
  flowWrittenOff?: number;
  pinning?: { guestCore: number; housekeeping: number[]; vcpu?: ThreadAffinity; threads: ThreadAffinity[]; controller: string };
  restarts: RestartRecord[];
  console: { socket: string; log: string };
  /** The user QEMU runs as (board profile qemuUser) and its uid; `root` (uid 0) only when the profile says so. */
  qemuUser?: { name: string; uid: number };
  /** The state-load outcome of the last boot (none for a clone: it continues its source's memory). */
  stateLoad?: StateLoadOutcome;
}

/**
 * Where the board's guest files are. QEMU runs as the board's QEMU user, which must not write the
 * controller's storageDir (the store, the keys, the control socket): what QEMU creates, and the
 * sockets it connects to, are in `qemuDir` (owned by that user, mode 0700); the controller reads
 * and creates there only without following a symlink. The state disk stays in storageDir (mode
 * 0711: searchable, not listable or writable by QEMU's user), owned by QEMU's user; QEMU's stderr
 * and pid file stay the controller's.
 */
export interface SupervisorPaths {
  /** `<storageDir>/qemu`: QEMU's own folder. */
  qemuDir: string;
  /** `<storageDir>/qemu-image`: copies of the kernel and initrd when QEMU's user cannot read them where they are (root's, mode 0755). */
  imageDir: string;
  qmp: string;
  /** The guest NIC's stream socket: the controller listens, QEMU connects. */
  nic: string;
  consoleSocket: string;
  consoleLog: string;
  /** A clone target's `-incoming` socket (QEMU listens; the relay connects). */
  cloneIn: string;
  /** The clone source's relay socket (the controller listens; QEMU migrates to it). */
  cloneOut: string;
  /** A checkpoint's socket (the controller listens and writes the file; QEMU migrates to it). */
  checkpointOut: string;
  stateDisk: string;
  qemuStderr: string;
  qemuPid: string;
}

export function boardPaths(board: BoardProfile, guest: GuestDescriptor): SupervisorPaths {
  const d = board.storageDir;
  const q = join(d, 'qemu');
  return {
    qemuDir: q,
    imageDir: join(d, 'qemu-image'),
    qmp: join(q, 'qmp.sock'),
    nic: join(q, 'guest-nic.sock'),
    consoleSocket: join(q, 'console.sock'),
    consoleLog: join(q, 'console.log'),
    cloneIn: join(q, 'migrate-in.sock'),
    cloneOut: join(q, 'migrate-out.sock'),
    checkpointOut: join(q, 'checkpoint-out.sock'),
    stateDisk: join(d, `${guest.name}-state.img`),
    qemuStderr: join(d, 'qemu.log'),
    qemuPid: join(d, 'qemu.pid'),
  };
}

/** Bounds on automatic restarts: more than this many within the window means the guest is failed. */
const RESTART_LIMIT = 5;
const RESTART_WINDOW_MS = 120000;
/**
 * The hang check without a witness: a guest that has had a request to answer and sent nothing for
 * this long is asked for a PING; two unanswered PINGs (1 s each), and it is hung. Far slower than
 * the backup's witness (src/replication/guest-witness.ts), which it backs up when there is no
 * backup in sync; it also catches a stopped QEMU, which the guest's own watchdog cannot (QEMU's
 * emulated watchdog stops with it).
 */
export const GUEST_HANG_FALLBACK_MS = 3000;
const HANG_CHECK_EVERY_MS = 1000;
/**
 * A stopped QEMU (SIGSTOP, a tracer: process state T or t) cannot answer anything, and no healthy
 * one is ever in that state, however slow: once the guest has had requests to answer for this long,
 * its QEMU's state is read (one /proc read) and, stopped, the guest is offered as hung to
 * `onStoppedQemu` (the pair: a protected primary hands over at once).
 */
export const STOPPED_CHECK_MS = 20;
/**
 * How often the quick checks (a stopped QEMU, the PINGs ahead) run while the guest sits on work:
 * armed when it is handed work while it had none, not a periodic timer (a 10 ms interval costs an
 * idle Node process about 1.2 % of a core here against 0.04 % without, measured 2026-12-07).
 */
const QUICK_CHECK_MS = 10;
/** The fast hang check asks again this often, this many times, when a QEMU thread is runnable at the look (its wait not counted yet). */
const FAST_RELOOK_MS = 5;
const FAST_LOOKS = 4;
/** How long QEMU may take to say whether it runs the guest (query-status) before that counts as hung too. */
const QMP_LOOK_MS = 500;
const HANG_PINGS = 2;
/** How long a guest suspected of a hang has to answer a PING (hangEvidence): a healthy guest answers in 1-2 ms. */
const CONFIRM_PING_MS = 100;
/** Fixed addresses of the controller on the private wire. */
const CONTROLLER_MAC = '52:54:00:00:00:01';

function findExecutable(name: string): string | undefined {
  const candidates = isAbsolute(name) ? [name] : (process.env.PATH ?? '').split(delimiter).map((d) => join(d, name));
  for (const c of candidates) {
    try {
      accessSync(c, fsConstants.X_OK);
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}

export declare interface GuestSupervisor {
  on(ev: 'state', fn: (s: GuestState, cause: string) => void): this;
}

export class GuestSupervisor extends EventEmitter {
  readonly paths: SupervisorPaths;
  readonly link: GuestLink;
  readonly port: GuestPort;
  private qemu?: QemuProcess;
  private state: GuestState = 'stopped';
  private accel?: { accel: Accel; reason: string };
  private vcpuTid?: number;
  /** This board's copy follows the primary's (any role but PRIMARY): with cores.followerYield its vCPU runs at SCHED_IDLE. */
  private following = false;
  /** Work that needs the copy at its full share while it follows (a checkpoint): how many are under way. */
  private fullShareHolds = 0;
  /** The vCPU thread SCHED_IDLE is applied to, if any. */
  private idleTid?: number;
  private bootToReadyMs?: number;
  private appVersion?: string;
  /** Set for a clone: its sequence base comes from the source, not from its first PING. */
  private keepSeqOnReady = false;
  private restarts: RestartRecord[] = [];
  private stateLoad?: StateLoadOutcome;
  private stopping = false;
  private hangTimer?: NodeJS.Timeout;
  private quickTimer?: NodeJS.Timeout;
  private hangChecking = false;
  private unansweredPings = 0;
  private restartChain: Promise<void> = Promise.resolve();
  private credentials?: QemuCredentials;
  /**
   * start, startClone and stop run one at a time, in call order: a clone target being prepared for
   * the partner and a promotion restoring a checkpoint must not launch two QEMUs over each other.
   */
  private lifecycle: Promise<unknown> = Promise.resolve();

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.lifecycle.then(fn, fn);
    this.lifecycle = next.catch(() => undefined);
    return next;
  }

  constructor(readonly board: BoardProfile, public guest: GuestDescriptor, private readonly log: Logger) {
    super();
    this.paths = boardPaths(board, guest);
    this.link = new GuestLink({
      socketPath: this.paths.nic,
      controllerIp: guest.network.controllerAddress,
      controllerMac: CONTROLLER_MAC,
      guestIp: guest.network.guestAddress,
      guestMac: guest.nic.mac,
    });
    this.port = new GuestPort(this.link, guest.ports);
    this.port.onWorkStart = () => this.armQuickChecks();
  }

  get currentState(): GuestState {
    return this.state;
  }

  /** Checks everything that can be checked before anything is started, so a bad start leaves nothing behind. */
  preflight(): void {
    this.credentials = resolveQemuUser(this.board.qemuUser, `board profile ${this.board.sourceFile}: qemuUser`);
    // The folder storageDir is in must let QEMU's user through (checked again, to its own folder, at each start).
    const parent = dirname(this.board.storageDir);
    if (existsSync(parent)) this.checkQemuReaches(parent);
    for (const [what, file] of [['kernel', this.guest.image.kernel], ['initrd', this.guest.image.initrd]] as const) {
      if (!existsSync(file)) {
        throw new UsError('US_ERR_NOT_FOUND', `guest image ${what} ${file} (from ${this.guest.sourceFile}) does not exist: run image-build/build-guest.sh`);
      }
    }
    if (!findExecutable(this.board.qemuBinary)) {
      throw new UsError('US_ERR_NOT_FOUND', `QEMU binary "${this.board.qemuBinary}" (board profile ${this.board.sourceFile}: qemuBinary) not found: install qemu-system-x86`);
    }
    const cpus = onlineCpus();
    const { guest: gc, housekeeping } = this.board.cores;
    for (const c of [gc, ...housekeeping]) {
      if (cpus.length && !cpus.includes(c)) {
        throw new UsError('US_ERR_CONFIG', `board profile ${this.board.sourceFile}: cores: CPU ${c} is not online on this machine (online: ${cpus.join(',')})`);
      }
    }
  }

  private controllerPinned = false;

  private async prepare(): Promise<void> {
    this.preflight();
    this.stopping = false;
    this.prepareDirs();
    this.killStaleQemu();
    this.ensureStateDisk();
    this.accel ??= this.board.accel === 'auto'
      ? await probeKvm(this.board.qemuBinary)
      : { accel: this.board.accel, reason: `set by board profile ${this.board.name}` };
    this.log.info({ accel: this.accel.accel, reason: this.accel.reason }, 'accelerator chosen');
    if (!this.controllerPinned) {
      // Once: the controller's threads stay where they are put (new ones inherit).
      await setProcessAffinity(process.pid, this.board.cores.housekeeping);
      this.controllerPinned = true;
    }
    await this.link.listen();
    this.giveToQemu(this.paths.nic);
  }

  /** The user QEMU runs as (resolved at the last start; before one, from the profile). */
  get qemuCredentials(): QemuCredentials {
    return this.credentials ??= resolveQemuUser(this.board.qemuUser, `board profile ${this.board.sourceFile}: qemuUser`);
  }

  /**
   * Makes a socket the controller listens on in the QEMU folder connectable by QEMU's user: lchown
   * (never follows a symlink QEMU's user could have put there) and mode 0600.
   */
  giveToQemu(socketPath: string): void {
    const c = this.qemuCredentials;
    lchownSync(socketPath, c.uid, c.gid);
    if (!lstatSync(socketPath).isSymbolicLink()) chmodSync(socketPath, 0o600);
  }

  /**
   * storageDir (0700 when QEMU runs as root, else 0711: QEMU's user may pass through it to its own
   * folder and the state disk, but neither list nor write it), QEMU's folder (its user's, 0700) and
   * the image folder (root's, 0755). Fails, naming the folder, when QEMU's user cannot reach its
   * folder (a folder above storageDir it may not search).
   */
  private prepareDirs(): void {
    const c = this.qemuCredentials;
    const { storageDir } = this.board;
    makeParentDirs(storageDir);
    mkdirSync(storageDir, { recursive: true, mode: 0o700 });
    chmodSync(storageDir, c.uid === 0 ? 0o700 : 0o711);
    for (const [dir, uid, gid, mode] of [[this.paths.qemuDir, c.uid, c.gid, 0o700], [this.paths.imageDir, 0, 0, 0o755]] as const) {
      mkdirSync(dir, { recursive: true, mode });
      // Only root writes storageDir, so these are the folders made here, not something put in their place.
      if (!lstatSync(dir).isDirectory()) throw new UsError('US_ERR_CONFIG', `${dir} is not a folder: remove it`);
      chownSync(dir, uid, gid);
      chmodSync(dir, mode);
    }
    if (c.uid !== 0) this.closeStorageToOthers();
    this.checkQemuReaches(this.paths.qemuDir);
  }

  /** US_ERR_CONFIG naming qemuUser and the folder in the way when QEMU's user cannot search `dir` (and every folder above it). */
  private checkQemuReaches(dir: string): void {
    const c = this.qemuCredentials;
    const why = unreachableFor(c, dir, 'search');
    if (why) {
      throw new UsError('US_ERR_CONFIG', `board profile ${this.board.sourceFile}: qemuUser: QEMU runs as ${c.user} (uid ${c.uid}), which cannot reach its folder ${this.paths.qemuDir}: ${why}; `
        + 'make the folders above storageDir searchable by it (chmod o+x), move storageDir, or set qemuUser to "root"', { qemuUser: c.user, folder: this.paths.qemuDir });
    }
  }

  /**
   * storageDir is searchable by others (0711) when QEMU runs as its own user: whatever is in it must
   * not be readable by them, also a file made before (an earlier version, a CLI command with root's
   * umask 022): every entry but QEMU's folder, the image folder and the state disk loses its bits
   * for others. A folder without them hides all below it.
   */
  private closeStorageToOthers(): void {
    const open = new Set([basename(this.paths.qemuDir), basename(this.paths.imageDir), basename(this.paths.stateDisk)]);
    for (const name of readdirSync(this.board.storageDir)) {
      if (open.has(name)) continue;
      const f = join(this.board.storageDir, name);
      const st = lstatSync(f);
      if (st.isSymbolicLink() || !(st.mode & 0o007)) continue;
      chmodSync(f, st.mode & 0o7770);
      this.log.info({ file: f, mode: (st.mode & 0o7770).toString(8) }, 'closed to other users (storageDir is searchable by QEMU\'s user)');
    }
  }

  /** The kernel or initrd where QEMU's user can read it (a cached copy in the image folder if need be). */
  private imageForQemu(file: string, what: 'kernel' | 'initrd'): string {
    const r = readableByQemu(file, this.qemuCredentials, this.paths.imageDir, what);
    if (r.copied) this.log.info({ from: file, to: r.path, user: this.qemuCredentials.user }, `guest ${what} copied where QEMU's user can read it`);
    return r.path;
  }

  /**
   * Starts a clone target: QEMU waiting for a migration stream on `incomingUri`, pinned like a booted
   * guest. finishClone() resumes it once the stream is complete.
   */
  /**
   * Runs another descriptor of the guest from the next start on (a guest upgrade, or a clone of a
   * source that runs another version). Only while stopped. The board's files (state disk, sockets,
   * logs) stay where they are: the new version starts on the same state disk.
   */
  useDescriptor(g: GuestDescriptor): void {
    if (this.state !== 'stopped' && this.state !== 'failed') throw new UsError('US_ERR_ROLE', `cannot change the guest descriptor while the guest is ${this.state}`);
    if (g.sourceFile === this.guest.sourceFile && g.version === this.guest.version) return;
    this.log.info({ from: `${this.guest.name} ${this.guest.version}`, to: `${g.name} ${g.version}`, file: g.sourceFile }, 'guest descriptor changed');
    this.guest = g;
  }

  /**
   * Starts QEMU waiting for a migration stream: at `incoming` (a `unix:` URI: a clone's relay writes
   * it there), or read by QEMU itself from `{ file }` (a saved image: a restore).
   */
  startClone(incoming: string | { file: string }): Promise<void> {
    return this.serial(() => this.doStartClone(incoming));
  }

  private async doStartClone(incoming: string | { file: string }): Promise<void> {
    await this.prepare();
    this.setState('starting', 'clone target waiting for the migration stream');
    try {
      await this.launch(incoming);
    } catch (e) {
      await this.teardown();
      this.setState('failed', (e as Error).message);
      throw e;
    }
  }

  /** Requests processed by the application so far, counting what was delivered (exact once drained). */
  get appSeqExpected(): number | undefined {
    return this.port.expectedSeq;
  }

  /**
   * A clone's application has processed exactly what its source had at the cut-over: count from
   * there (inputs may be delivered to the clone before it is resumed). `authOpen`: the AUTH
   * questions its source had asked and not had answered at the cut. The clone is blocked on them
   * (same memory) without ever asking them itself: they are outstanding here too, or the loss
   * watch took the requests queued behind a blocked REG for lost inputs, and a promoted clone would
   * not ask the AUTH service on their behalf. `authAnswered`: the question it had been handed the
   * answer to, perhaps unread (a retransmission of it opens nothing).
   */
  expectAppSeq(seq: number, authOpen: readonly string[] = [], authAnswered?: string): void {
    this.port.resetCount(seq);
    this.port.authOutstanding.clear();
    for (const sub of authOpen) this.port.authOutstanding.add(sub);
    this.port.authAnswered = authAnswered;
    this.keepSeqOnReady = true;
  }

  /**
   * The running guest (idle: nothing handed over is still on its way) has processed `processed`
   * requests while the controller counted more: those inputs never reached it and never will. Count
   * from what it really holds, or every clone made from this copy would carry the shortfall into
   * its partner's count (which then reports the same loss after each clone: a re-clone loop).
   */
  rebaseAppSeq(processed: number): void {
    this.port.resetCount(processed);
  }

  /** The migration stream is in: run the clone (it continues exactly where its source was). */
  async finishClone(timeoutMs = 60000): Promise<void> {
    const q = this.qemu;
    if (!q?.alive) throw new UsError('US_ERR_HYPERVISOR', 'no clone target to finish');
    const end = performance.now() + timeoutMs;
    for (;;) {
      const st = await q.status();
      if (st === 'paused' || st === 'postmigrate' || st === 'running') break;
      if (performance.now() > end) throw new UsError('US_ERR_TIMEOUT', `clone target still "${st}" after ${timeoutMs} ms`);
      await sleep(20);
    }
    const t0 = performance.now();
    if (this.loadingOnGuestCore) await this.pinForRun(q, this.vcpuTid!);
    await q.qmp.execute('cont');
    await this.waitReady(t0);
    this.setState('running', 'clone running');
  }

  start(): Promise<void> {
    return this.serial(() => this.doStart());
  }

  private async doStart(): Promise<void> {
    await this.prepare();
    this.setState('starting', 'start requested');
    try {
      try {
        await this.boot();
      } catch (e) {
        if (this.board.accel !== 'auto' || this.accel?.accel !== 'kvm' || (e as UsError).code === 'US_ERR_GUEST_STATE') throw e;
        // KVM passed the probe but the real guest failed under it (nested KVM): fall back to TCG once.
        this.accel = markKvmBroken(`KVM failed for the real guest: ${(e as Error).message}`, this.board.qemuBinary);
        this.log.warn({ reason: this.accel.reason }, 'falling back to TCG');
        // Wait for the KVM QEMU to be gone: its QMP socket has the same path as the next one's.
        await this.qemu?.killAndWait();
        await this.boot();
      }
    } catch (e) {
      await this.teardown();
      this.setState('failed', (e as Error).message);
      throw e;
    }
    this.setState('running', 'guest ready');
  }

  private async boot(): Promise<void> {
    const t0 = performance.now();
    const look = this.beforeStateLoad();
    const qemu = await this.launch();
    await qemu.qmp.execute('cont');
    await this.waitReady(t0);
    await this.checkStateLoad(look);
  }

  /** Before a boot: whether the disk holds a saved state, and where the console log ends now. */
  private beforeStateLoad(): { expected: boolean; consoleOffset: number } {
    let consoleOffset = 0;
    try {
      consoleOffset = statSync(this.paths.consoleLog).size;
    } catch {
      // no console log yet
    }
    return { expected: stateDiskHoldsState(this.paths.stateDisk), consoleOffset };
  }

  /**
   * After a boot: the guest's DX-STATE line. A guest that came up empty (or said nothing) although
   * its disk held a saved state must neither serve nor SAVE over that disk: its QEMU is killed at
   * once and the start fails with US_ERR_GUEST_STATE; the disk is left as it was. The operator
   * decides (`understudy guest start --start-empty` sets the disk aside and starts empty).
   */
  private async checkStateLoad(look: { expected: boolean; consoleOffset: number }): Promise<void> {
    const end = performance.now() + STATE_LINE_WAIT_MS;
    let m: RegExpExecArray | null = null;
    for (;;) {
      m = DX_STATE_LINE.exec(readFrom(this.paths.consoleLog, look.consoleOffset));
      if (m || !look.expected || performance.now() > end) break; // nothing expected: one look, for the status
      await sleep(50);
    }
    const outcome: StateLoadOutcome = {
      expected: look.expected, outcome: m ? (m[1] as 'loaded' | 'empty') : 'unknown',
      ...(m?.[2] ? { reason: m[2] } : {}), ...(m ? { line: m[0].trim() } : {}), at: new Date().toISOString(),
    };
    this.stateLoad = outcome;
    this.log.info({ stateLoad: outcome }, 'guest state load');
    if (!look.expected || outcome.outcome === 'loaded') return;
    // Before anything can ask it to SAVE; and not an unexpected exit to restart from (that would
    // boot the same disk again): it stays down until the operator decides.
    this.stopping = true;
    await this.qemu?.killAndWait();
    const said = m ? `it said "${outcome.line}"` : `it printed no DX-STATE line within ${STATE_LINE_WAIT_MS} ms`;
    throw new UsError('US_ERR_GUEST_STATE', `guest ${this.guest.name} ${this.guest.version} came up without the saved state on ${this.paths.stateDisk} (${said}): `
      + 'not serving, and the disk is left as it was; run "understudy guest start --start-empty" to set that disk aside and start with an empty state, '
      + 'or start a guest version that reads it', { stateDisk: this.paths.stateDisk, reason: outcome.reason ?? outcome.outcome });
  }

  /**
   * The operator's decision after a refused state: the state disk is renamed aside (kept, never
   * deleted) and the next boot starts on a blank one. Only while stopped. Returns where it went,
   * or undefined when there was no disk.
   */
  setStateDiskAside(): string | undefined {
    if (this.state !== 'stopped' && this.state !== 'failed') throw new UsError('US_ERR_ROLE', `cannot set the state disk aside while the guest is ${this.state}`);
    if (!existsSync(this.paths.stateDisk)) return undefined;
    const aside = `${this.paths.stateDisk}.aside-${new Date().toISOString().replace(/[:.]/g, '-')}`;
    renameSync(this.paths.stateDisk, aside);
    this.log.warn({ from: this.paths.stateDisk, to: aside }, 'state disk set aside: the guest starts empty');
    return aside;
  }

  /** Launches QEMU paused (or waiting for a migration stream) and pins it. */
  private async launch(incoming?: string | { file: string }): Promise<QemuProcess> {
    const g = this.guest;
    const append = [
      // A kernel fault is the end of this copy: an oops panics, a panic reboots at once, and the reboot
      // (QEMU's RESET event, guest-initiated) is handled as the guest's failure (onQmpEvent). An NMI
      // nobody claims panics too (an operator's crash dump; guest.inject nmi).
      'console=ttyS0', 'quiet', 'ipv6.disable=1', 'oops=panic', 'panic=-1', 'unknown_nmi_panic',
      `dx.ip=${g.network.guestAddress}`, `dx.mask=${g.network.netmask}`, `dx.gw=${g.network.controllerAddress}`,
      `dx.port=${g.ports.service}`, `dx.mport=${g.ports.management}`, `dx.auth=${g.network.controllerAddress}:${g.ports.auth}`, `dx.aport=${g.ports.guestAuth}`,
      `dx.wdt=${g.watchdog.timeoutS}`, g.image.append,
    ].filter(Boolean).join(' ');
    const qemu = await QemuProcess.launch({
      binary: this.board.qemuBinary,
      name: `understudy-${this.board.name}-${g.name}`,
      accel: this.accel!.accel,
      memoryMb: g.memoryMb,
      kernel: this.imageForQemu(g.image.kernel, 'kernel'),
      initrd: this.imageForQemu(g.image.initrd, 'initrd'),
      append,
      nic: g.nic,
      nicSocketPath: this.paths.nic,
      qmpSocketPath: this.paths.qmp,
      consoleSocketPath: this.paths.consoleSocket,
      consoleLogPath: this.paths.consoleLog,
      stateDiskPath: this.paths.stateDisk,
      watchdog: g.watchdog.timeoutS > 0,
      stderrPath: this.paths.qemuStderr,
      incoming: typeof incoming === 'string' ? incoming : undefined,
      incomingFile: typeof incoming === 'object' ? incoming.file : undefined,
      credentials: this.qemuCredentials,
      cwd: this.paths.qemuDir,
      // A restore (a saved image) first starts on the guest's core, idle until it runs: its start
      // and the load (0.6-1.1 s under TCG) do not queue behind the controllers on the housekeeping
      // core. Not a clone target: its stream comes while the partner's guest serves through a
      // snapshot copy, and where boards share cores (the simulated chassis) the load would take the
      // serving vCPU's core from it for the whole copy.
      startCpus: typeof incoming === 'object' ? [this.board.cores.guest] : undefined,
    }, this.log);
    this.qemu = qemu;
    writeFileSync(this.paths.qemuPid, `${qemu.pid}\n`, { mode: 0o600 });
    qemu.on('event', (e) => this.onQmpEvent(e));
    qemu.on('exit', (code, signal) => this.onQemuExit(qemu, code, signal));
    await this.pin(qemu, typeof incoming === 'object');
    return qemu;
  }

  /** The running QEMU (for migration), through the hypervisor seam. */
  get hypervisor(): Hypervisor | undefined {
    return this.qemu?.alive ? this.qemu : undefined;
  }

  /**
   * Resolves once every frame delivered so far is inside the guest (in its NIC ring or its socket
   * buffers, i.e. in guest RAM), processed or not: a management PING sent now travels the same wire
   * after them, in order, so its answer proves they arrived. This is the exact cut-over point of a
   * clone or a checkpoint: a copy of the guest's memory taken after it holds every one of them.
   * A frame the guest itself dropped is dropped in the copy alike. Resolves with the requests the
   * guest has processed by then (its PING `seq=`; undefined if it reports none).
   */
  async inputsInGuest(timeoutMs = 10000): Promise<number | undefined> {
    const end = performance.now() + timeoutMs;
    for (;;) {
      try {
        return await this.port.processedCount(Math.max(100, Math.min(2000, end - performance.now())));
      } catch (e) {
        if (performance.now() >= end || !this.qemu?.alive) {
          throw new UsError('US_ERR_TIMEOUT', `guest did not answer a PING within ${timeoutMs} ms: cannot fix the cut-over point (${(e as Error).message})`);
        }
      }
    }
  }

  /**
   * Every QEMU thread to the housekeeping cores in one taskset (one per thread cost a process start
   * each, 0.1-0.3 s of every launch on a loaded 2-core board: a restore's critical path), then the
   * vCPU alone to its core. Threads QEMU starts later inherit from their creator.
   */
  private async pinForRun(qemu: QemuProcess, vcpu: number): Promise<void> {
    const { guest: guestCore, housekeeping } = this.board.cores;
    await setProcessAffinity(qemu.pid, housekeeping);
    await setThreadAffinity(vcpu, [guestCore]);
    this.loadingOnGuestCore = false;
    await this.applyShare();
  }

  /** QEMU runs on the guest's core only, loading a stream (pin `loading`); pinForRun before its vCPU runs. */
  private loadingOnGuestCore = false;

  /**
   * True when the application has processed every request delivered. A REG counts only once its
   * reply is out, so this also means no REG is waiting for an AUTH answer.
   */
  async drained(): Promise<boolean> {
    const processed = await this.port.processedCount(1000);
    return this.port.expectedSeq !== undefined && processed === this.port.expectedSeq;
  }

  /**
   * `loading`: QEMU was started on the guest's core to load a saved image (startCpus): it stays
   * there, all of it, until finishClone pins it for running (pinForRun), just before its vCPU runs.
   */
  private async pin(qemu: QemuProcess, loading = false): Promise<void> {
    const { guest: guestCore, housekeeping, guestRtPriority } = this.board.cores;
    const vcpu = await qemu.vcpuThreadId();
    this.vcpuTid = vcpu;
    if (loading) this.loadingOnGuestCore = true;
    else await this.pinForRun(qemu, vcpu);
    if (guestRtPriority > 0) await setRealtimePriority(vcpu, guestRtPriority);
    const got = readThreadAffinity(qemu.pid, vcpu);
    if (got.cpus !== String(guestCore)) {
      throw new UsError('US_ERR_PINNING', `vCPU thread ${vcpu} runs on CPUs ${got.cpus}, expected ${guestCore}`);
    }
    this.log.info({ vcpuTid: vcpu, guestCore, housekeeping, rtPriority: guestRtPriority }, 'vCPU pinned');
  }

  /**
   * This board's copy serves (false) or follows the primary's (true). With cores.followerYield a
   * follower's vCPU thread yields the guest core it shares with the serving copy (the simulated
   * chassis); applied to the running vCPU now and to every later one once it runs its guest (not
   * while its QEMU loads a clone's stream). Only the vCPU: a whole QEMU at SCHED_IDLE (its I/O thread
   * too, on the housekeeping core) served the primary a little better still, but its copy then
   * answered late whenever that core was busy, and the witness found a hung primary guest 100 ms
   * later (BENCHMARKS.md, bench/failover-detect). Never throws: a failure is logged and the vCPU
   * keeps the share it has.
   */
  async setFollowing(following: boolean): Promise<void> {
    this.following = following;
    await this.applyShare();
  }

  /**
   * Runs `work` with the copy at its full share even while it follows: a checkpoint stops the copy
   * and saves it, and inputs wait for it meanwhile; at SCHED_IDLE on a loaded core it would last as
   * long as the primary kept that core busy.
   */
  async withFullShare<T>(work: () => Promise<T>): Promise<T> {
    this.fullShareHolds++;
    try {
      await this.applyShare();
      return await work();
    } finally {
      this.fullShareHolds--;
      void this.applyShare();
    }
  }

  /** One change of the vCPU's share at a time, each reading `following` when it runs: the last call wins. */
  private shareChain: Promise<void> = Promise.resolve();

  private applyShare(): Promise<void> {
    this.shareChain = this.shareChain.then(() => this.applyShareNow());
    return this.shareChain;
  }

  private async applyShareNow(): Promise<void> {
    const { followerYield, guestRtPriority } = this.board.cores;
    if (!followerYield || guestRtPriority > 0) return;
    // Only the vCPU of a QEMU that runs its guest, not of one loading a clone's stream.
    const tid = this.loadingOnGuestCore ? undefined : this.vcpuTid;
    if (tid === undefined || !this.qemu?.alive) return;
    const idle = this.following && this.fullShareHolds === 0;
    if ((this.idleTid === tid) === idle) return;
    try {
      await setThreadIdle(tid, idle);
      this.idleTid = idle ? tid : undefined;
      this.log.info({ vcpuTid: tid, following: this.following }, idle ? 'vCPU at SCHED_IDLE: the following copy yields the guest core to the serving one' : 'vCPU at its full share');
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'vCPU share not changed');
    }
  }

  private async waitReady(t0: number): Promise<void> {
    const deadline = t0 + this.guest.bootTimeoutMs;
    while (performance.now() < deadline) {
      if (!this.qemu?.alive) throw new UsError('US_ERR_HYPERVISOR', `QEMU exited during boot; see ${this.paths.qemuStderr} and ${this.paths.consoleLog}`);
      if (this.link.connected) {
        try {
          const pong = await this.port.management('PING', 250);
          const m = /^OK PING (\S+)(?: seq=(\d+))?/.exec(pong);
          if (m) {
            this.appVersion = m[1];
            if (this.keepSeqOnReady) this.keepSeqOnReady = false;
            else {
              this.port.resetCount(m[2] === undefined ? undefined : Number(m[2]));
            }
            this.bootToReadyMs = Math.round(performance.now() - t0);
            this.log.info({ bootToReadyMs: this.bootToReadyMs, version: this.appVersion }, 'guest ready');
            return;
          }
        } catch {
          // not up yet
        }
      } else {
        await sleep(50);
      }
    }
    throw new UsError('US_ERR_GUEST_TIMEOUT', `guest did not answer within ${this.guest.bootTimeoutMs} ms; see ${this.paths.consoleLog}`);
  }

  private onQmpEvent(e: QmpEvent): void {
    if (e.event === 'WATCHDOG') {
      this.restart(`guest watchdog expired (${String(e.data?.action ?? '')}): the application stopped kicking it`, 'reset');
    } else if (e.event === 'GUEST_PANICKED' || (e.event === 'RESET' && e.data?.guest === true)) {
      // The guest rebooted (or panicked) by itself: a kernel panic (the command line makes every oops
      // one) or the application rebooting it. Its memory, the state this copy holds, is gone: the
      // same failure as QEMU dying, through the same policy (a protected primary hands over, a
      // backup's copy asks for a new clone). Our own system_reset (a watchdog restart) is not a
      // guest reset, and only a running copy can fail this way.
      this.log.error({ event: e.event, data: e.data }, 'guest reset itself');
      if (this.state === 'running') this.restart(`the guest ${e.event === 'RESET' ? 'rebooted itself' : 'panicked'} (${String(e.data?.reason ?? e.event)}): a kernel panic or crash; see ${this.paths.consoleLog}`, 'relaunch');
    } else if (e.event === 'RESET' || e.event === 'SHUTDOWN') {
      this.log.info({ event: e.event, data: e.data }, 'QEMU event');
    }
  }

  private onQemuExit(q: QemuProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.stopping || this.qemu !== q) return;
    this.restart(`QEMU exited unexpectedly (code ${code}, signal ${signal})`, 'relaunch');
  }

  /**
   * The guest is hung, as someone with evidence says (the backup's witness, confirmed by
   * hangEvidence): handled like a guest watchdog firing, through the failure policy (a protected
   * primary gives up and hands over; otherwise QEMU is relaunched). False if it is not running.
   */
  declareHung(cause: string): boolean {
    if (this.state !== 'running') return false;
    this.log.error({ cause }, 'guest hung');
    this.restart(cause, 'relaunch');
    return true;
  }

  /**
   * This board's own evidence that its guest is hung, or undefined: QEMU stopped (its /proc state,
   * at once), or the guest silent with requests to answer for at least `minSilentMs` while QEMU
   * runs it and, with `ping`, not answering a PING within CONFIRM_PING_MS either. A guest QEMU has
   * paused on purpose (a migration's stop-and-copy, a checkpoint) is not hung; a QEMU that does not
   * answer QMP within QMP_LOOK_MS either is. The PING tells a hung guest from one that is idle
   * because requests were lost on their way to it (the input-loss watch repairs those): requests it
   * never received leave it "silent with work" as much as a hang does, but it answers the PING.
   */
  async hangEvidence(minSilentMs: number, ping = true): Promise<string | undefined> {
    const q = this.qemu?.alive ? this.qemu : undefined;
    if (!q || this.state !== 'running') return undefined;
    const st = procState(q.pid);
    if (st === 'T' || st === 't') return `its QEMU process ${q.pid} is stopped (state ${st})`;
    if (this.port.silentWithWorkMs < minSilentMs) return undefined;
    // A PING sent ahead in this same silence (quickChecks), late enough in it, and left unanswered
    // is the evidence: no second wait for one. One it answered proves nothing about now: asked again.
    const a = this.pingAhead;
    const ahead = a && a.since === this.port.silentWithWorkSince && a.atSilentMs >= minSilentMs / 2 ? a.answered : undefined;
    const [run, pong] = await Promise.all([
      q.qmp.execute<{ status: string }>('query-status', undefined, QMP_LOOK_MS).then((r) => r.status, () => undefined),
      !ping ? Promise.resolve(false) : ahead ? ahead.then((answered) => (answered ? this.pingAnswered() : false)) : this.pingAnswered(),
    ]);
    if (pong) return undefined; // it answers: idle, not hung
    if (run !== undefined && run !== 'running') return undefined;
    const silent = this.port.silentWithWorkMs;
    if (silent < minSilentMs) return undefined; // it answered meanwhile
    const how = run === undefined ? `and QEMU does not answer QMP within ${QMP_LOOK_MS} ms` : 'while QEMU runs it';
    return `its guest has answered nothing for ${Math.round(silent)} ms with requests to answer${ping ? `, nor a PING within ${CONFIRM_PING_MS} ms,` : ''} ${how}`;
  }

  /**
   * The fast check of a guest the backup's witness reports silent (ha.guestHangFastMs): hung if it
   * has requests to answer and has left a PING unanswered for `confirmMs` while its QEMU had the CPU
   * it asked for (cpuAvailability in src/hw/proc-state.ts, from the scheduler's own accounting in
   * /proc: little run-queue wait, no thread runnable at two looks without running, none in host
   * I/O; or a vCPU that sat idle with work to do). A healthy guest answers a PING in 1-2 ms whenever
   * it gets a CPU, so one that had the CPU and answered neither is stuck; one whose QEMU waited for a
   * CPU is merely slow, and this declines (`declined` says why, `slowed` marks that case): the
   * witness asks again, and from guestHangMs on the slower check (hangEvidence) decides. A QEMU
   * paused on purpose (QMP says so) is not hung.
   */
  async fastHangEvidence(confirmMs: number): Promise<{ evidence?: string; declined?: string; slowed?: boolean }> {
    const q = this.qemu?.alive ? this.qemu : undefined;
    if (!q || this.state !== 'running') return { declined: 'the guest is not running' };
    const st = procState(q.pid);
    if (st === 'T' || st === 't') return { evidence: `its QEMU process ${q.pid} is stopped (state ${st})` };
    const since = this.port.silentWithWorkSince;
    if (since === undefined) return { declined: 'it has answered everything it was handed' };
    if (this.pingAhead?.since !== since) this.sendPingAhead(q.pid, since);
    const ahead = this.pingAhead!;
    const answered = () => ahead.result === true; // read afresh after each wait
    if (!ahead.sample) return { declined: 'its QEMU\'s threads could not be read' };
    const run = q.qmp.execute<{ status: string }>('query-status', undefined, Math.max(confirmMs, 10)).then((r) => r.status, () => undefined);
    let lastLook: SchedSample | undefined; // the previous look: a thread runnable at both without running waits for a CPU
    for (let look = 1; ; look++) {
      const wait = ahead.sentAt + confirmMs - performance.now();
      await new Promise((r) => setTimeout(r, Math.max(0, wait)));
      await new Promise((r) => setImmediate(r)); // answers already in the sockets are read first
      if (answered()) return { declined: 'it answered a PING' };
      if (this.port.silentWithWorkSince !== since) return { declined: 'it answered meanwhile' };
      if (!this.qemu?.alive || this.qemu !== q || this.state !== 'running') return { declined: 'the guest is no longer running' };
      const now = readSchedSample(q.pid, performance.now());
      if (!now) return { declined: 'its QEMU\'s threads could not be read' };
      const cpu = cpuAvailability(ahead.sample, now, lastLook);
      if (cpu.verdict === 'starved') return { declined: `its QEMU was slowed: ${cpu.why}`, slowed: true };
      if (cpu.verdict === 'unsure' && look < FAST_LOOKS) { lastLook = now; await new Promise((r) => setTimeout(r, FAST_RELOOK_MS)); continue; }
      if (cpu.verdict === 'unsure') return { declined: `unsure after ${look} looks: ${cpu.why}` };
      const status = await run;
      if (status !== undefined && status !== 'running') return { declined: `QEMU has paused it (${status})` };
      if (answered() || this.port.silentWithWorkSince !== since) return { declined: 'it answered meanwhile' };
      const silent = Math.round(this.port.silentWithWorkMs);
      const pingMs = Math.round(performance.now() - ahead.sentAt);
      return { evidence: `its guest has answered nothing for ${silent} ms with requests to answer, nor a PING for ${pingMs} ms, while its QEMU had the CPU (${cpu.why})${status === undefined ? ' and does not answer QMP' : ''}` };
    }
  }

  /**
   * Asked when the running guest's QEMU is found stopped with requests to answer (`evidence` says
   * so): true declares the guest hung at once (the caller journals why). Unset, or false, leaves it
   * to the slower checks (a stopped QEMU resumed by SIGCONT still holds its state, and with no
   * copy elsewhere a relaunch would lose it).
   */
  onStoppedQemu?: (evidence: string) => boolean;

  /**
   * Silences with work (ms, ascending) at which the guest is sent a PING, ahead of any hang report,
   * so that the hang checks find the answer (or its absence) waiting instead of sending their own and
   * waiting for it; empty: none. Set by the pair (on a protected primary, half of each of the
   * witness's bounds): a healthy guest answers in milliseconds, and a busy one rarely sits on work
   * that long. With each PING the QEMU's threads are sampled (fastHangEvidence).
   */
  pingAheadAtMs: () => number[] = () => [];
  /** A PING ahead falling due between two quick checks, sent on time. */
  private pingAheadTimer?: NodeJS.Timeout;
  /** The PING sent ahead in the current silence (its start names it), when, its outcome and the threads' sample then. */
  private pingAhead?: { since: number; sentAt: number; atSilentMs: number; answered: Promise<boolean>; result?: boolean; sample?: SchedSample };

  private sendPingAhead(pid: number, since: number): void {
    const sentAt = performance.now();
    const a: NonNullable<typeof this.pingAhead> = { since, sentAt, atSilentMs: sentAt - since, answered: this.pingAnswered(), sample: readSchedSample(pid, sentAt) };
    void a.answered.then((r) => { a.result = r; });
    this.pingAhead = a;
  }

  /**
   * The quick checks run QUICK_CHECK_MS after the running guest is handed work while it had none,
   * and again as often while it stays silent with work; an idle or answering guest costs no timer.
   */
  private armQuickChecks(): void {
    if (this.quickTimer || this.state !== 'running' || this.port.silentWithWorkSince === undefined) return;
    this.quickTimer = setTimeout(() => {
      this.quickTimer = undefined;
      this.quickChecks();
      this.armQuickChecks();
    }, QUICK_CHECK_MS);
  }

  /**
   * QUICK_CHECK_MS apart while the running guest sits on work: a stopped QEMU with requests to
   * answer for STOPPED_CHECK_MS (see onStoppedQemu), and the PINGs ahead (pingAheadAtMs).
   */
  private quickChecks(): void {
    const q = this.qemu?.alive ? this.qemu : undefined;
    if (!q || this.state !== 'running') return;
    const silent = this.port.silentWithWorkMs;
    if (silent <= 0) return; // nothing to answer
    if (this.onStoppedQemu && silent >= STOPPED_CHECK_MS) {
      const st = procState(q.pid);
      if (st === 'T' || st === 't') {
        const evidence = `its QEMU process ${q.pid} is stopped (state ${st}) with requests to answer for ${Math.round(silent)} ms`;
        if (this.onStoppedQemu(evidence)) { this.declareHung(`guest hung: ${evidence}`); return; }
      }
    }
    const since = this.port.silentWithWorkSince;
    if (since === undefined) return;
    const sent = this.pingAhead?.since === since ? this.pingAhead.atSilentMs : -1;
    // A threshold passed that no PING of this silence was sent at or after.
    const at = this.pingAheadAtMs();
    if (at.some((t) => t > 0 && silent >= t && sent < t)) this.sendPingAhead(q.pid, since);
    // One falling due before the next look: on time, not up to QUICK_CHECK_MS late.
    const next = at.find((t) => t > silent && sent < t);
    if (next !== undefined && next - silent < QUICK_CHECK_MS && !this.pingAheadTimer) {
      this.pingAheadTimer = setTimeout(() => { this.pingAheadTimer = undefined; this.quickChecks(); }, next - silent);
      this.pingAheadTimer.unref();
    }
  }

  /** A PING to the guest: whether it answered within CONFIRM_PING_MS. */
  private pingAnswered(): Promise<boolean> {
    return this.port.management('PING', CONFIRM_PING_MS).then(() => true, () => false);
  }

  /** The fallback hang check (GUEST_HANG_FALLBACK_MS), once a second while the guest runs. */
  private async hangCheck(): Promise<void> {
    if (this.state !== 'running' || this.hangChecking) return;
    if (this.port.silentWithWorkMs < GUEST_HANG_FALLBACK_MS) { this.unansweredPings = 0; return; }
    this.hangChecking = true;
    try {
      await this.port.management('PING', 1000);
      this.unansweredPings = 0;
    } catch {
      if (++this.unansweredPings >= HANG_PINGS) {
        const evidence = await this.hangEvidence(GUEST_HANG_FALLBACK_MS, false); // it has just pinged
        if (evidence && this.state === 'running') {
          this.unansweredPings = 0;
          this.declareHung(`guest hung: ${evidence}, and ${HANG_PINGS} PINGs unanswered`);
        }
      }
    } finally {
      this.hangChecking = false;
    }
  }

  /**
   * Asked when the guest dies or hangs: restart it here, or give up and let the caller act (a
   * protected primary hands over to its backup, whose clone is up to date, rather than rebooting
   * from a saved state). Default: restart.
   */
  failurePolicy: (cause: string) => 'restart' | 'give-up' = () => 'restart';

  /** Restarts are serialised: a watchdog firing during a relaunch waits its turn. */
  private restart(cause: string, how: 'reset' | 'relaunch'): void {
    if (this.failurePolicy(cause) === 'give-up') {
      this.restarts.push({ at: new Date().toISOString(), cause: `${cause} (not restarted: handing over)` });
      this.qemu?.kill();
      this.setState('failed', cause);
      return;
    }
    this.restartChain = this.restartChain.then(() => this.doRestart(cause, how)).catch(() => undefined);
  }

  private async doRestart(cause: string, how: 'reset' | 'relaunch'): Promise<void> {
    if (this.stopping || this.state === 'failed') return;
    const now = Date.now();
    this.restarts.push({ at: new Date(now).toISOString(), cause });
    const recent = this.restarts.filter((r) => now - Date.parse(r.at) < RESTART_WINDOW_MS).length;
    this.log.warn({ cause, how, restartsInWindow: recent }, 'restarting guest');
    if (recent > RESTART_LIMIT) {
      this.qemu?.kill();
      this.setState('failed', `more than ${RESTART_LIMIT} restarts in ${RESTART_WINDOW_MS / 1000} s; last: ${cause}`);
      return;
    }
    this.setState('restarting', cause);
    this.port.resetManagement();
    try {
      if (how === 'reset' && this.qemu?.alive) {
        const t0 = performance.now();
        const look = this.beforeStateLoad();
        await this.qemu.qmp.execute('system_reset');
        await this.waitReady(t0);
        await this.checkStateLoad(look);
      } else {
        this.qemu?.kill();
        await this.boot();
      }
      this.setState('running', `restarted after: ${cause}`);
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'guest restart failed');
      this.qemu?.kill();
      this.setState('failed', `restart failed: ${(e as Error).message}`);
    }
  }

  async status(): Promise<GuestStatus> {
    const st: GuestStatus = {
      state: this.state,
      guest: { name: this.guest.name, version: this.guest.version, nic: this.guest.nic.model, memoryMb: this.guest.memoryMb },
      accel: this.accel?.accel,
      accelReason: this.accel?.reason,
      qemuPid: this.qemu?.alive ? this.qemu.pid : undefined,
      vcpuTid: this.vcpuTid,
      bootToReadyMs: this.bootToReadyMs,
      appVersion: this.appVersion,
      appSeqExpected: this.appSeqExpected,
      nic: { framesToGuest: this.link.framesOut, framesFromGuest: this.link.framesIn, dropped: this.link.dropped },
      flowWrittenOff: this.port.writtenOff,
      restarts: this.restarts,
      console: { socket: this.paths.consoleSocket, log: this.paths.consoleLog },
      // Once resolved by a start (a missing user is that start's error, not the status's).
      ...(this.credentials ? { qemuUser: { name: this.credentials.user, uid: this.credentials.uid } } : {}),
      ...(this.stateLoad ? { stateLoad: this.stateLoad } : {}),
    };
    if (this.qemu?.alive) {
      try {
        const threads = listThreads(this.qemu.pid).map((t) => readThreadAffinity(this.qemu!.pid, t));
        st.pinning = {
          guestCore: this.board.cores.guest,
          housekeeping: this.board.cores.housekeeping,
          vcpu: threads.find((t) => t.tid === this.vcpuTid),
          threads,
          controller: readThreadAffinity(process.pid, process.pid).cpus,
        };
      } catch {
        // QEMU exited while we read /proc
      }
    }
    if (this.state === 'running') {
      try {
        const pong = await this.port.management('PING', 1000);
        const m = /seq=(\d+)/.exec(pong);
        if (m) st.requestsProcessed = Number(m[1]);
      } catch {
        // reported through state on the next watchdog/exit event
      }
    }
    return st;
  }

  stop(): Promise<void> {
    return this.serial(() => this.doStop());
  }

  private async doStop(): Promise<void> {
    this.stopping = true;
    await this.restartChain;
    await this.teardown();
    this.setState('stopped', 'stop requested');
  }

  private async teardown(): Promise<void> {
    await this.qemu?.stop();
    this.port.resetManagement();
    await this.link.close();
    rmSync(this.paths.qemuPid, { force: true });
  }

  private setState(s: GuestState, cause: string): void {
    if (s === this.state) return;
    this.log.info({ from: this.state, to: s, cause }, 'guest state');
    this.state = s;
    if (s === 'running') {
      this.unansweredPings = 0;
      this.hangTimer ??= setInterval(() => void this.hangCheck(), HANG_CHECK_EVERY_MS);
      this.armQuickChecks();
    } else {
      clearInterval(this.hangTimer);
      this.hangTimer = undefined;
      clearTimeout(this.quickTimer);
      this.quickTimer = undefined;
    }
    this.emit('state', s, cause);
  }

  /** The state disk: at least its size, owned by QEMU's user (it writes it), mode 0600. */
  private ensureStateDisk(): void {
    const fd = openSync(this.paths.stateDisk, 'a+', 0o600);
    try {
      const want = this.guest.stateDisk.sizeMb * 1048576;
      if (fstatSync(fd).size < want) ftruncateSync(fd, want);
      fchownSync(fd, this.qemuCredentials.uid, this.qemuCredentials.gid);
    } finally {
      closeSync(fd);
    }
  }

  private killStaleQemu(): void {
    let pid: number;
    try {
      pid = Number.parseInt(readFileSync(this.paths.qemuPid, 'utf8'), 10);
    } catch {
      return;
    }
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmd.includes('qemu-system') && cmd.includes(this.paths.qmp)) {
        this.log.warn({ pid }, 'killing a QEMU left behind by an earlier controller of this board');
        process.kill(pid, 'SIGKILL');
      }
    } catch {
      // not running
    }
    rmSync(this.paths.qemuPid, { force: true });
  }
}

/** True when the state disk's header is not all zero: something was saved there (valid or not). */
export function stateDiskHoldsState(file: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return false;
  }
  try {
    const hdr = Buffer.alloc(STATE_HEADER_BYTES);
    const n = readSync(fd, hdr, 0, hdr.length, 0);
    return hdr.subarray(0, n).some((b) => b !== 0);
  } finally {
    closeSync(fd);
  }
}
