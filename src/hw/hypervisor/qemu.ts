/**
 * One QEMU process hosting one uniprocessor guest, driven over QMP on a unix socket.
 * Owns the process, its command line and its QMP connection; knows nothing of HA roles.
 *
 * No orphans: QEMU is started through `setpriv --pdeathsig SIGKILL`, so the kernel kills it when the
 * controller dies, even by SIGKILL. The same setpriv starts it as the board's QEMU user (qemu-user.ts),
 * never as root unless the board profile says `qemuUser: "root"`. The controller never adopts a leftover QEMU; at start it kills the
 * one recorded in the board's pid file if it is still alive (see guest/supervisor.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { openSync, closeSync } from 'node:fs';
import { UsError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { QmpClient, type QmpEvent } from '../qmp/client.js';
import { cpuModelFor, type Accel } from './kvm-probe.js';
import { setprivArgs, type QemuCredentials } from './qemu-user.js';
import type { Hypervisor } from './types.js';

export interface QemuOptions {
  /** QEMU binary. Default qemu-system-x86_64. */
  binary?: string;
  /** Name shown in process lists and thread names. */
  name: string;
  accel: Accel;
  memoryMb: number;
  kernel: string;
  initrd: string;
  append: string;
  nic: { model: string; mac: string };
  /** Unix stream socket the controller listens on; QEMU connects its NIC backend to it. */
  nicSocketPath: string;
  qmpSocketPath: string;
  /** Guest serial console: a unix socket anyone with access can attach to, and a log file of everything. */
  consoleSocketPath: string;
  consoleLogPath: string;
  stateDiskPath: string;
  watchdog: boolean;
  /** Where QEMU's own stderr goes. */
  stderrPath: string;
  /** Migration listen URI (a clone target); the guest then waits for the stream. */
  incoming?: string;
  /**
   * A migration stream saved in a file (a checkpoint), loaded at start: opened here and handed to
   * QEMU as its descriptor 3 (`-incoming fd:3`), so QEMU reads it itself, at the speed of the page
   * cache, rather than through a socket this process writes. Instead of `incoming`.
   */
  incomingFile?: string;
  /** Who QEMU runs as (setpriv); its working directory is `cwd`, a folder that user can reach. */
  credentials: QemuCredentials;
  cwd: string;
  /**
   * CPUs every QEMU thread starts on (taskset before setpriv); default: the controller's. A copy that
   * loads a migration stream before its vCPU runs starts on the guest's core, idle until then, rather
   * than on the housekeeping cores the controller keeps busy; the caller pins it properly before `cont`.
   */
  startCpus?: number[];
}

/** The descriptor QEMU reads an incomingFile from (the first after stdin, stdout and stderr). */
const INCOMING_FILE_FD = 3;

/**
 * QEMU's seccomp filter: besides the default deny list (obsolete syscalls are refused), no setuid or
 * privilege changes, no fork/exec (so no `exec:` migration, no helper scripts), no scheduler or
 * affinity changes from inside (the controller pins QEMU's threads from outside). Options checked
 * against QEMU 7.2 (`-sandbox on,bogus=deny` is refused with "Invalid parameter").
 */
export const QEMU_SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

export function qemuArgs(o: QemuOptions): string[] {
  const args = [
    '-sandbox', QEMU_SANDBOX,
    '-name', `${o.name},debug-threads=on`,
    '-accel', o.accel,
    '-machine', 'pc',
    '-cpu', cpuModelFor(o.accel),
    '-smp', '1',
    '-m', String(o.memoryMb),
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-S',
    '-qmp', `unix:${o.qmpSocketPath},server=on,wait=off`,
    '-chardev', `socket,id=con0,path=${o.consoleSocketPath},server=on,wait=off,logfile=${o.consoleLogPath},logappend=on`,
    '-serial', 'chardev:con0',
    '-kernel', o.kernel, '-initrd', o.initrd, '-append', o.append,
    '-netdev', `stream,id=n0,server=off,addr.type=unix,addr.path=${o.nicSocketPath}`,
    // e1000: without autonegotiation the link is up at once (the Linux driver polls it every 2 s).
    '-device', `${o.nic.model},netdev=n0,mac=${o.nic.mac}${o.nic.model === 'e1000' ? ',autonegotiation=off' : ''}`,
    '-drive', `file=${o.stateDiskPath},format=raw,if=ide,cache=writeback`,
  ];
  if (o.watchdog) args.push('-device', 'i6300esb', '-action', 'watchdog=none');
  if (o.incomingFile) args.push('-incoming', `fd:${INCOMING_FILE_FD}`);
  else if (o.incoming) args.push('-incoming', o.incoming);
  return args;
}

/** The program and arguments that start QEMU: setpriv (user, groups, parent-death signal), then QEMU. */
export function qemuCommand(o: QemuOptions): { file: string; args: string[] } {
  const setpriv = [...setprivArgs(o.credentials), '--', o.binary ?? 'qemu-system-x86_64', ...qemuArgs(o)];
  return o.startCpus?.length ? { file: 'taskset', args: ['-c', o.startCpus.join(','), 'setpriv', ...setpriv] } : { file: 'setpriv', args: setpriv };
}

export declare interface QemuProcess {
  on(ev: 'exit', fn: (code: number | null, signal: NodeJS.Signals | null) => void): this;
  on(ev: 'event', fn: (e: QmpEvent) => void): this;
}

export class QemuProcess extends EventEmitter implements Hypervisor {
  readonly qmp = new QmpClient();
  private exited = false;

  private constructor(readonly child: ChildProcess, readonly options: QemuOptions, private readonly log: Logger) {
    super();
    child.on('exit', (code, signal) => {
      this.exited = true;
      this.emit('exit', code, signal);
    });
    this.qmp.on('event', (e) => this.emit('event', e));
  }

  get pid(): number {
    return this.child.pid!;
  }

  onEvent(fn: (e: QmpEvent) => void): () => void {
    this.on('event', fn);
    return () => { this.off('event', fn); };
  }

  get alive(): boolean {
    return !this.exited;
  }

  /** Starts QEMU paused (-S) and connects QMP. The caller pins the vCPU, then calls `cont`. */
  static async launch(o: QemuOptions, log: Logger): Promise<QemuProcess> {
    const binary = o.binary ?? 'qemu-system-x86_64';
    const cmd = qemuCommand(o);
    const errFd = openSync(o.stderrPath, 'a', 0o600);
    let streamFd: number | undefined;
    let child: ChildProcess;
    try {
      streamFd = o.incomingFile ? openSync(o.incomingFile, 'r') : undefined;
      child = spawn(cmd.file, cmd.args, { stdio: streamFd === undefined ? ['ignore', 'ignore', errFd] : ['ignore', 'ignore', errFd, streamFd], cwd: o.cwd });
    } finally {
      closeSync(errFd);
      if (streamFd !== undefined) closeSync(streamFd); // QEMU has its own copy (descriptor 3)
    }
    const spawnError = await new Promise<Error | undefined>((resolve) => {
      child.once('spawn', () => resolve(undefined));
      child.once('error', (e) => resolve(e));
    });
    if (spawnError) throw new UsError('US_ERR_NOT_FOUND', `cannot start QEMU (${binary}): ${spawnError.message}`);
    const q = new QemuProcess(child, o, log);
    log.info({ pid: child.pid, accel: o.accel, nic: o.nic.model, user: o.credentials.user, uid: o.credentials.uid }, 'QEMU started');
    try {
      await q.qmp.connectWithRetry(o.qmpSocketPath, 10000, () => q.alive);
    } catch (e) {
      q.kill();
      throw new UsError('US_ERR_HYPERVISOR', `QEMU did not come up: ${(e as Error).message}; see ${o.stderrPath}`);
    }
    return q;
  }

  /** The thread id of the single vCPU, from query-cpus-fast. */
  async vcpuThreadId(): Promise<number> {
    const cpus = await this.qmp.execute<Array<{ 'cpu-index': number; 'thread-id': number }>>('query-cpus-fast');
    const cpu0 = cpus.find((c) => c['cpu-index'] === 0);
    if (!cpu0) throw new UsError('US_ERR_HYPERVISOR', 'query-cpus-fast returned no CPU 0');
    return cpu0['thread-id'];
  }

  async status(): Promise<string> {
    const s = await this.qmp.execute<{ status: string }>('query-status');
    return s.status;
  }

  /** Asks QEMU to quit, then kills it if it has not exited within `graceMs`. */
  async stop(graceMs = 3000): Promise<void> {
    if (this.exited) return;
    const exited = this.whenExited();
    this.qmp.execute('quit', undefined, graceMs).catch(() => undefined);
    const timer = setTimeout(() => this.kill(), graceMs);
    await exited;
    clearTimeout(timer);
    this.qmp.close();
  }

  kill(): void {
    if (!this.exited) this.child.kill('SIGKILL');
    this.qmp.close();
  }

  /** SIGKILL, then resolves once the process has exited (its QMP socket is gone with it). */
  async killAndWait(): Promise<void> {
    const exited = this.whenExited();
    this.kill();
    await exited;
  }

  private whenExited(): Promise<void> {
    return this.exited ? Promise.resolve() : new Promise<void>((r) => this.child.once('exit', () => r()));
  }
}
