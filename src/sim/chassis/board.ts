/**
 * One simulated board: its power, its controller process (understudyd in the board's network
 * namespace, leader of its own process group) and its watchdog hardware. Power off and reset kill
 * the board's process group (its QEMU, if any, dies with it); a watchdog firing resets the board.
 * A controller that dies on its own is not restarted here: as on a real blade, the watchdog (if the
 * controller armed it) resets the board. Owns only the processes it spawns.
 */
import { spawn } from 'node:child_process';
import { connect } from 'node:net';
import { appendFileSync, closeSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadBoardProfile } from '../../config/board-profile.js';
import type { Logger } from '../../core/log.js';
import { DAEMON_ENV, DAEMON_NODE_FLAGS } from '../../core/footprint.js';
import { upgradeSetupFor } from '../../upgrade/board-setup.js';
import { simulateBoot } from '../../upgrade/bootflow.js';
import { SLOT_NAMES } from '../../upgrade/slots.js';
import { DAEMON_ENTRY, RUN_MARKER, type BoardLayout, type ChassisBoard } from './layout.js';
import { groupMembers, isAlive, signal, startTimeOf, stateOf, waitUntil, sleep, type RecordedProcess } from './procs.js';
import { BOOT_COUNT_ENV, namespaceInit } from './pacemaker.js';
import { discardSerialUntil, drainSerialEnd } from './serial-relay.js';
import { SimWatchdog, type SimWatchdogStatus } from './watchdog.js';

export type PowerState = 'on' | 'off';

/** Why a board was reset or powered off; shown in `chassis status`. */
export type ResetCause = 'watchdog' | 'fence' | 'power-controller' | 'operator' | 'power-fail';

export interface SimBoardOptions {
  layout: BoardLayout;
  runDir: string;
  /** Guest descriptor passed to the controller, or none (`--no-guest`). */
  guestFile?: string;
  watchdogTimeoutMs: number;
  /** Pause between killing the board and starting it again on a reset. Default 300 ms. */
  resetDelayMs?: number;
  log: Logger;
  /** Called whenever the recorded processes change (the chassis rewrites state.json). */
  onChange: () => void;
  /** At the power cut (its processes SIGKILLed): what a dead board's hardware stops doing (its NIC answering). */
  onKilled?: () => Promise<void>;
  /**
   * Started at every boot before the controller, in its own process group, and killed with the
   * board: the board's cluster manager (`chassis up --manager pacemaker`: corosync and pacemakerd in
   * their own namespaces; the `ip` arguments, and the log its output goes to).
   */
  clusterManager?: { argv: string[]; log: string; pidFile: string };
  /**
   * The controller is started at the first boot only; at later boots the cluster manager starts it
   * (`--manager pacemaker` with the guest in the cluster: the agent's start).
   */
  firstBootOnly?: boolean;
  /**
   * The watchdogs of further guests' controllers on this board (`--guests`: Pacemaker starts them):
   * any of them starving resets the whole board, as the board's own does.
   */
  guestWatchdogs?: Array<{ guest: number; fifo: string; timeoutMs: number }>;
}

export interface ControllerExit {
  pid: number;
  code: number | null;
  signal: string | null;
  at: string;
  /** The chassis killed it (power off, reset) rather than it dying on its own. */
  expected: boolean;
}

export interface SimBoardStatus {
  board: ChassisBoard;
  netns: string;
  power: PowerState;
  /** Powered on and a reset is in progress. */
  resetting: boolean;
  boots: number;
  controller: {
    pid: number;
    /** running, hung (SIGSTOPped), exited */
    state: 'running' | 'hung' | 'exited';
    alive: boolean;
    startedAt: string;
  } | null;
  lastExit: ControllerExit | null;
  resets: { count: number; last: { cause: ResetCause; at: string } | null };
  watchdog: SimWatchdogStatus;
  log: string;
  /** The further guests' controllers' watchdogs (`--guests`), by guest number. */
  guestWatchdogs?: Array<SimWatchdogStatus & { guest: number }>;
  /** With --manager pacemaker: the board's corosync and pacemaker (the recorded `unshare`, its namespace's pid 1). */
  pacemaker?: { pid: number; init: number | null; alive: boolean };
}

export class SimBoard {
  readonly name: ChassisBoard;
  private powerState: PowerState = 'off';
  private resetting = false;
  private boots = 0;
  /** The current controller; `expected` is set when the chassis itself ends it. */
  private current?: RecordedProcess & { startedAt: string; expected: boolean };
  /** The cluster manager's `unshare` (leader of its own process group). */
  private manager?: RecordedProcess;
  private lastExit: ControllerExit | null = null;
  private resetCount = 0;
  private lastReset: { cause: ResetCause; at: string } | null = null;
  readonly watchdog: SimWatchdog;
  /** Further guests' controllers' watchdogs (SimBoardOptions.guestWatchdogs). */
  private readonly guestWatchdogs: Array<{ guest: number; watchdog: SimWatchdog }>;
  /** Power operations run one at a time. */
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly o: SimBoardOptions) {
    this.name = o.layout.name;
    this.watchdog = new SimWatchdog({ fifo: o.layout.watchdogFifo, timeoutMs: o.watchdogTimeoutMs, onFire: () => this.onWatchdogFire() });
    this.guestWatchdogs = (o.guestWatchdogs ?? []).map((w) => ({
      guest: w.guest,
      watchdog: new SimWatchdog({ fifo: w.fifo, timeoutMs: w.timeoutMs, onFire: () => this.onWatchdogFire(w.guest, w.timeoutMs) }),
    }));
  }

  /** Every watchdog of the board: its own and its further guests' controllers'. */
  private get watchdogs(): SimWatchdog[] {
    return [this.watchdog, ...this.guestWatchdogs.map((g) => g.watchdog)];
  }

  /** Creates every watchdog FIFO of the board. */
  openWatchdogs(): void {
    for (const w of this.watchdogs) w.open();
  }

  closeWatchdogs(): void {
    for (const w of this.watchdogs) w.close();
  }

  get power(): PowerState {
    return this.powerState;
  }

  /** The running controller (leader of the board's process group), for state.json. */
  get controller(): RecordedProcess | undefined {
    return this.current ? { pid: this.current.pid, startTime: this.current.startTime } : undefined;
  }

  /** The running cluster manager, for state.json. */
  get clusterManager(): RecordedProcess | undefined {
    return this.manager ? { ...this.manager } : undefined;
  }

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const next = this.queue.then(op, op);
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** Powers the board on (starts its controller). No-op when already on. */
  powerOn(): Promise<void> {
    return this.serial(async () => {
      if (this.powerState === 'on') return;
      this.powerState = 'on';
      await this.boot();
    });
  }

  /**
   * Powers the board off: kills its process group and waits until it is gone. `killed` is called at
   * the power cut (every process SIGKILLed, its NIC silent: a fence is complete then).
   */
  powerOff(cause: ResetCause, killed?: () => void): Promise<void> {
    return this.serial(async () => {
      if (this.powerState === 'off') { killed?.(); return; }
      this.o.log.warn({ board: this.name, cause }, `power off ${this.name} (${cause})`);
      this.recordReset(cause);
      // Without power from now on, as a real blade is the instant its power is cut (what the power
      // controller's STATUS says); its processes take a moment more to be gone (an OFF or RESET
      // queued behind this one runs only then).
      this.powerState = 'off';
      await this.killBoard(killed);
      this.o.onChange();
    });
  }

  /**
   * Hard reset: kill the board, wait the reset delay, boot again. `killed` is called at the power cut
   * (every process SIGKILLed, its NIC silent: a fence is complete then; the boot follows once they
   * are gone and the reset delay has passed). A board that is off
   * stays off (resolves false, `killed` is not called): whoever switched it off meant it, and a
   * blade's power cycle does nothing to a blade that has no power.
   */
  reset(cause: ResetCause, killed?: () => void): Promise<boolean> {
    return this.serial(async () => {
      if (this.powerState === 'off') {
        this.o.log.warn({ board: this.name, cause }, `${cause} reset of ${this.name}: it is off, left off`);
        return false;
      }
      this.o.log.warn({ board: this.name, cause }, `${cause} reset ${this.name}`);
      this.recordReset(cause);
      this.resetting = true;
      try {
        await this.killBoard(killed);
        await sleep(this.o.resetDelayMs ?? 300);
      } finally {
        this.resetting = false;
      }
      await this.boot();
      return true;
    });
  }

  /** Fault injection: SIGKILL the controller process only (its children, if any, stay). */
  killController(): number | undefined {
    const pid = this.current?.pid;
    if (pid && isAlive(pid)) signal(pid, 'SIGKILL');
    return pid;
  }

  /** Fault injection: SIGSTOP the controller (it hangs; its watchdog starves). */
  hangController(): number | undefined {
    const pid = this.current?.pid;
    if (pid && isAlive(pid)) signal(pid, 'SIGSTOP');
    return pid;
  }

  /** Orderly stop for `chassis down`: SIGTERM (the daemon shuts down and magic-closes its watchdog), then the group is killed. */
  shutdown(graceMs = 5000): Promise<void> {
    return this.serial(async () => {
      const cur = this.current;
      const pid = cur?.pid;
      if (cur && pid && isAlive(pid)) {
        cur.expected = true;
        signal(pid, 'SIGTERM');
        signal(pid, 'SIGCONT'); // a hung controller must run to shut down
        await waitUntil(() => !isAlive(pid), graceMs);
      }
      await this.killBoard();
      this.powerState = 'off';
    });
  }

  private recordReset(cause: ResetCause): void {
    this.resetCount++;
    this.lastReset = { cause, at: new Date().toISOString() };
  }

  private onWatchdogFire(guest?: number, timeoutMs = this.o.watchdogTimeoutMs): void {
    this.o.log.warn({ board: this.name, timeoutMs, ...(guest ? { guest } : {}) }, `watchdog reset ${this.name}${guest ? ` (guest ${guest}'s controller's watchdog)` : ''}`);
    void this.reset('watchdog').catch((e) => this.o.log.error({ board: this.name, err: (e as Error).message }, 'watchdog reset failed'));
  }

  /**
   * Starts the controller in the board's namespace, in its own process group, output to board.log.
   * First the board's serial port is drained: bytes the partner sent while this board was off are
   * gone on real hardware, and must not reach the new controller as if they were fresh.
   */
  private async boot(): Promise<void> {
    const { layout } = this.o;
    this.boots++;
    const stale = await drainSerialEnd(layout.serialDevice);
    if (stale < 0) this.o.log.warn({ board: this.name, device: layout.serialDevice }, 'could not drain the serial port before boot (held by someone else?)');
    for (const w of this.watchdogs) w.listen();
    appendFileSync(layout.log, `# chassis: ${this.name} boot ${this.boots} at ${new Date().toISOString()}${stale > 0 ? ` (${stale} stale serial bytes discarded)` : ''}\n`, { mode: 0o600 });
    const firmware = await this.bootloader();
    if (this.o.clusterManager) this.startClusterManager(this.o.clusterManager);
    if (this.o.firstBootOnly && this.boots > 1) {
      appendFileSync(layout.log, `# chassis: ${this.name} boot ${this.boots}: the controller is the cluster manager's to start\n`, { mode: 0o600 });
      this.o.log.info({ board: this.name, boot: this.boots }, `${this.name}: controller left to the cluster manager at this boot`);
      // Until that controller listens, its UART is nobody's: what the partner sends is dropped.
      const boot = this.boots;
      void discardSerialUntil(layout.serialDevice, async () => this.boots !== boot || this.powerState !== 'on' || listening(layout.controlSocket))
        .then((n) => { if (n > 0) appendFileSync(layout.log, `# chassis: ${this.name} boot ${boot}: ${n} serial bytes dropped before its controller started\n`, { mode: 0o600 }); });
      this.o.onChange();
      return;
    }
    const out = openSync(layout.log, 'a', 0o600);
    const withGuest = this.o.guestFile && firmware.fault !== 'no-guest';
    const args = ['netns', 'exec', layout.netns, process.execPath, ...DAEMON_NODE_FLAGS, DAEMON_ENTRY, '--board', layout.profile,
      ...(withGuest ? ['--guest', this.o.guestFile!] : ['--no-guest'])];
    // `ip netns exec` execs the command, so the child's pid is the controller's and leads its group.
    const child = spawn('ip', args, {
      detached: true,
      stdio: ['ignore', out, out],
      env: { ...process.env, ...DAEMON_ENV, [RUN_MARKER]: this.o.runDir, UNDERSTUDY_LOG: process.env.UNDERSTUDY_LOG ?? 'info' },
    });
    closeSync(out);
    const pid = child.pid;
    if (pid === undefined) {
      this.o.log.error({ board: this.name }, 'controller could not be spawned');
      child.once('error', () => undefined);
      return;
    }
    const record = { pid, startTime: startTimeOf(pid), startedAt: new Date().toISOString(), expected: false };
    this.current = record;
    this.o.log.info({ board: this.name, pid, boot: this.boots }, `controller of ${this.name} started (pid ${pid})`);
    child.once('error', (e) => this.o.log.error({ board: this.name, err: e.message }, 'controller spawn failed'));
    child.once('exit', (code, sig) => {
      const expected = record.expected;
      this.lastExit = { pid, code, signal: sig, at: new Date().toISOString(), expected };
      const how = sig ? `signal ${sig}` : `code ${code}`;
      if (expected) this.o.log.info({ board: this.name, pid, code, signal: sig }, `controller of ${this.name} ended (${how})`);
      else this.o.log.warn({ board: this.name, pid, code, signal: sig }, `controller of ${this.name} exited on its own (${how}); see ${layout.log}`);
      this.o.onChange();
    });
    this.o.onChange();
  }

  /**
   * The bootloader's step at power-on, as on a blade: once a slot is installed, pick the slot to boot
   * (an armed trial, counting its attempt down, else the good slot) and hand it to the controller on
   * the simulated kernel command line. A board with no slot installed boots the controller as is.
   *
   * A slot image may carry a simulated firmware fault, the file `simulated-fault` at its root (docs/
   * chassis.md): `no-guest` — the controller from that slot cannot host the guest. It makes a
   * "package whose trial never becomes healthy" for tests, with no change to the controller.
   */
  private async bootloader(): Promise<{ fault?: string }> {
    const log = this.o.layout.log;
    try {
      const setup = upgradeSetupFor(loadBoardProfile(this.o.layout.profile));
      if (!SLOT_NAMES.some((s) => setup.store.isLoadable(s))) return {};
      const release = setup.store.lock('boot');
      let r;
      try {
        r = await simulateBoot(setup.env, setup.store);
      } finally {
        release();
      }
      let fault: string | undefined;
      try {
        fault = readFileSync(join(setup.store.slotDir(r.slot), 'simulated-fault'), 'utf8').trim();
      } catch { /* a healthy image */ }
      appendFileSync(log, `# chassis: bootloader: slot ${r.slot} (${r.version ?? '?'}, ${r.reason}${r.reason === 'trial' ? `, ${r.triesLeft} attempts left` : ''})${fault ? `; simulated firmware fault: ${fault}` : ''}\n`);
      this.o.log.info({ board: this.name, slot: r.slot, reason: r.reason, version: r.version, fault }, `bootloader of ${this.name}: slot ${r.slot} (${r.reason})`);
      return { fault };
    } catch (e) {
      appendFileSync(log, `# chassis: bootloader step failed: ${(e as Error).message}\n`);
      this.o.log.error({ board: this.name, err: (e as Error).message }, 'simulated bootloader step failed; booting the controller as is');
      return {};
    }
  }

  /**
   * The board's cluster manager: `ip netns exec … unshare … sh init.sh` in its own process group;
   * recorded before anything else happens to it. It is not restarted if it dies (a blade whose
   * corosync died is fenced by the others, as on a real shelf).
   */
  private startClusterManager(m: { argv: string[]; log: string; pidFile: string }): void {
    const out = openSync(m.log, 'a', 0o600);
    appendFileSync(m.log, `# chassis: ${this.name} boot ${this.boots}: corosync and pacemaker at ${new Date().toISOString()}\n`);
    const child = spawn('ip', m.argv, { detached: true, stdio: ['ignore', out, out], env: { ...process.env, [RUN_MARKER]: this.o.runDir, [BOOT_COUNT_ENV]: String(this.boots) } });
    closeSync(out);
    if (child.pid === undefined) {
      child.once('error', (e) => this.o.log.error({ board: this.name, err: e.message }, 'cluster manager could not be spawned'));
      return;
    }
    this.manager = { pid: child.pid, startTime: startTimeOf(child.pid) };
    writeFileSync(m.pidFile, `${child.pid}\n`, { mode: 0o600 }); // the board's in-cluster script enters through it
    child.once('error', (e) => this.o.log.error({ board: this.name, err: e.message }, 'cluster manager spawn failed'));
    child.once('exit', (code, sig) => {
      this.o.log.warn({ board: this.name, pid: child.pid, code, signal: sig }, `corosync and pacemaker of ${this.name} ended (${sig ?? `code ${code}`})`);
    });
    this.o.log.info({ board: this.name, pid: child.pid }, `corosync and pacemaker of ${this.name} started (unshare pid ${child.pid})`);
    this.o.onChange();
  }

  /** Ends the cluster manager: its process group, then (--kill-child) the namespace's pid 1 and with it every process in it. */
  private async killClusterManager(): Promise<void> {
    const m = this.manager;
    if (!m) return;
    const init = namespaceInit(m.pid);
    if (groupMembers(m.pid).length > 0) signal(-m.pid, 'SIGKILL');
    if (init && isAlive(init)) signal(init, 'SIGKILL');
    const gone = await waitUntil(() => groupMembers(m.pid).length === 0 && !(init && isAlive(init)), 5000, 5);
    if (!gone) this.o.log.error({ board: this.name, pgid: m.pid, init }, 'cluster manager did not die within 5 s');
    this.manager = undefined;
  }

  /** Kills the board's process group (controller, QEMU, anything it started) and waits until it is empty. */
  /**
   * The power cut, then the wait until the board's processes are gone. The cut is the SIGKILL of its
   * process group (the kernel lets none of them run another user-space instruction: a stopped or
   * busy one included) and its NIC falling silent (onKilled); `killed` is called then, as a fence
   * that powers a blade off is complete once the shelf manager has cut it. Tearing down the
   * processes (QEMU's guest memory: 20-100 ms on this machine) is the simulation's, not the blade's:
   * only what comes next on this board (a boot) waits for it.
   */
  private async killBoard(killed?: () => void): Promise<void> {
    for (const w of this.watchdogs) w.ignore();
    await this.killClusterManager();
    const cur = this.current;
    if (cur) {
      cur.expected = true;
      signal(-cur.pid, 'SIGKILL'); // ESRCH when none is left: nothing to cut
      await this.o.onKilled?.();
    }
    killed?.();
    if (!cur) return;
    const gone = await waitUntil(() => groupMembers(cur.pid).length === 0, 5000, 2);
    if (!gone) this.o.log.error({ board: this.name, pgid: cur.pid, left: groupMembers(cur.pid) }, 'board process group did not die within 5 s');
    this.current = undefined;
    this.o.onChange();
  }

  status(): SimBoardStatus {
    const cur = this.current;
    let controller: SimBoardStatus['controller'] = null;
    if (cur) {
      const st = stateOf(cur.pid);
      const alive = st !== undefined && st !== 'Z' && st !== 'X';
      controller = { pid: cur.pid, state: !alive ? 'exited' : st === 'T' || st === 't' ? 'hung' : 'running', alive, startedAt: cur.startedAt };
    }
    return {
      board: this.name,
      netns: this.o.layout.netns,
      power: this.powerState,
      resetting: this.resetting,
      boots: this.boots,
      controller,
      lastExit: this.lastExit,
      resets: { count: this.resetCount, last: this.lastReset },
      watchdog: this.watchdog.status(),
      ...(this.guestWatchdogs.length ? { guestWatchdogs: this.guestWatchdogs.map((g) => ({ guest: g.guest, ...g.watchdog.status() })) } : {}),
      log: this.o.layout.log,
      ...(this.o.clusterManager ? { pacemaker: this.manager ? { pid: this.manager.pid, init: namespaceInit(this.manager.pid) ?? null, alive: isAlive(this.manager.pid) } : undefined } : {}),
    };
  }
}

/** Whether something accepts connections on the unix socket `path` (a controller that is up). */
function listening(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(path);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}
