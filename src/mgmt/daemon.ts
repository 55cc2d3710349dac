/**
 * understudyd: the controller of one board. Composes the layers below — the store, the HA layer
 * (when the profile pairs the board with a partner) and the guest host — and serves local control
 * requests. One per board (pid-file lock). Startup is ordered so a failure leaves nothing
 * half-started: preflight, lock, store, control socket, then HA or the guest.
 *
 * With a partner, the board serves (endpoint + guest) only while it is PRIMARY.
 */
import { join } from 'node:path';
import { mkdirSync, chmodSync } from 'node:fs';
import { loadBoardProfile, type BoardProfile } from '../config/board-profile.js';
import { loadGuestDescriptor, type GuestDescriptor } from '../config/guest-descriptor.js';
import { UsError } from '../core/errors.js';
import { createLogger, type Logger } from '../core/log.js';
import { readInventory } from '../hw/inventory.js';
import { GuestHost } from '../guest/guest-host.js';
import { HaController, type RoleChange } from '../ha/ha-controller.js';
import { Store } from '../store/journal.js';
import { acquireBoardLock } from './lock.js';
import { serveControl, type ControlServer } from './ipc.js';

export function controlSocketPath(board: BoardProfile): string {
  return join(board.storageDir, 'understudyd.sock');
}

export function daemonLogPath(board: BoardProfile): string {
  return join(board.storageDir, 'understudyd.log');
}

/** Management commands an operator may send to the guest application. */
const MANAGEMENT_COMMANDS = new Set(['PING', 'STATE', 'SAVE', 'HANG']);

export class Daemon {
  readonly host?: GuestHost;
  ha?: HaController;
  store?: Store;
  private control?: ControlServer;
  private releaseLock?: () => void;
  private readonly startedAt = Date.now();
  private stopping?: Promise<void>;
  /** Serialises guest starts/stops that follow role changes. */
  private roleWork: Promise<void> = Promise.resolve();

  constructor(readonly board: BoardProfile, readonly guest: GuestDescriptor | undefined, readonly log: Logger) {
    if (guest) this.host = new GuestHost(board, guest, log);
  }

  async start(): Promise<void> {
    this.host?.supervisor.preflight();
    mkdirSync(this.board.storageDir, { recursive: true, mode: 0o700 });
    chmodSync(this.board.storageDir, 0o700);
    this.releaseLock = acquireBoardLock(join(this.board.storageDir, 'understudyd.pid'), this.board.name);
    try {
      this.store = new Store(this.board.storageDir);
      this.control = await serveControl(controlSocketPath(this.board), (cmd, args) => this.handle(cmd, args));
      if (this.board.ha) {
        this.ha = new HaController(this.board, this.store, this.log.child({ component: 'ha' }));
        this.ha.on('role', (c) => this.onRole(c));
        await this.ha.start({
          healthy: () => this.host?.supervisor.currentState !== 'failed',
          guestHealth: () => (this.host ? this.host.supervisor.currentState : 'none'),
        });
      } else if (this.host) {
        await this.host.start();
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    this.log.info({ board: this.board.name, guest: this.guest?.name ?? null, paired: !!this.board.ha }, 'controller running');
  }

  private onRole(c: RoleChange): void {
    const host = this.host;
    if (!host) return;
    this.roleWork = this.roleWork.then(async () => {
      const role = this.ha!.currentRole;
      try {
        if (role === 'PRIMARY' && !host.isRunning) {
          this.store!.record('guest', 'starting the guest: board is primary');
          await host.start();
          this.store!.record('guest', 'guest serving');
        } else if (role !== 'PRIMARY' && host.isRunning) {
          this.store!.record('guest', `stopping the guest: board is ${role}`);
          await host.stop();
        }
      } catch (e) {
        this.store!.record('guest', `guest start failed: ${(e as Error).message}`);
        this.log.error({ err: (e as Error).message, cause: c.cause }, 'guest failed to start');
        this.ha!.fire('guest-failed', (e as Error).message);
      }
    });
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.ha?.stop().catch((e) => this.log.error({ err: (e as Error).message }, 'HA stop failed'));
      await this.roleWork;
      await this.host?.stop().catch((e) => this.log.error({ err: (e as Error).message }, 'guest stop failed'));
      this.control?.close();
      this.store?.close();
      this.releaseLock?.();
      this.log.info('controller stopped');
    })();
    return this.stopping;
  }

  async status(): Promise<Record<string, unknown>> {
    const hosted = this.host?.isRunning ? await this.host.status() : undefined;
    return {
      board: this.board.name,
      pid: process.pid,
      uptimeS: Math.round((Date.now() - this.startedAt) / 1000),
      service: this.board.service,
      role: this.ha?.currentRole ?? 'STANDALONE',
      guest: hosted?.guest ?? (this.host ? { state: 'stopped', guest: { name: this.guest!.name, version: this.guest!.version, nic: this.guest!.nic.model, memoryMb: this.guest!.memoryMb }, restarts: [], console: { socket: '', log: '' } } : null),
      endpoint: hosted?.endpoint ?? {},
      rssMb: Math.round(process.memoryUsage().rss / 1048576),
    };
  }

  private requireHa(): HaController {
    if (!this.ha) throw new UsError('US_ERR_ROLE', `board ${this.board.name} has no partner configured (no ha section in ${this.board.sourceFile})`);
    return this.ha;
  }

  private async handle(command: string, args: Record<string, unknown>): Promise<unknown> {
    switch (command) {
      case 'ping':
        return { board: this.board.name, pid: process.pid, role: this.ha?.currentRole ?? 'STANDALONE' };
      case 'status':
        return this.status();
      case 'role':
        return this.ha ? this.ha.status() : { board: this.board.name, role: 'STANDALONE' };
      case 'link.status': {
        const st = await this.requireHa().status();
        return { board: this.board.name, links: st.links, partner: st.partner, alarms: st.alarms };
      }
      case 'events': {
        const limit = Number(args.limit ?? 50);
        const kind = args.kind === undefined ? undefined : String(args.kind);
        const sinceId = Number(args.sinceId ?? 0);
        if (!Number.isFinite(limit) || !Number.isFinite(sinceId)) throw new UsError('US_ERR_CONTROL', 'events: limit and sinceId must be numbers');
        return { board: this.board.name, events: this.store!.events({ limit, kind, sinceId }) };
      }
      case 'board.info':
        return readInventory();
      case 'guest.manage': {
        if (!this.host?.isRunning) throw new UsError('US_ERR_NOT_RUNNING', `no guest is running on board ${this.board.name}`);
        const cmd = String(args.command ?? '').trim().toUpperCase();
        if (!MANAGEMENT_COMMANDS.has(cmd.split(' ')[0]!)) {
          throw new UsError('US_ERR_CONTROL', `unknown management command "${cmd}" (known: ${[...MANAGEMENT_COMMANDS].join(', ')})`);
        }
        return { reply: await this.host.supervisor.port.management(cmd, 5000) };
      }
      case 'guest.stop':
        setImmediate(() => void this.stop().then(() => process.exit(0)));
        return { stopping: true };
      default:
        throw new UsError('US_ERR_CONTROL', `unknown command "${command}"`);
    }
  }
}

/** Entry point of understudyd: runs until SIGTERM/SIGINT or `guest stop`. */
export async function runDaemon(boardFile: string, guestFile: string | undefined, onReady?: (err?: UsError) => void): Promise<Daemon> {
  const board = loadBoardProfile(boardFile);
  const guest = guestFile ? loadGuestDescriptor(guestFile) : undefined;
  mkdirSync(board.storageDir, { recursive: true, mode: 0o700 });
  const log = createLogger('understudyd', { file: daemonLogPath(board) }).child({ board: board.name });
  const daemon = new Daemon(board, guest, log);
  const shutdown = (sig: string) => {
    log.info({ signal: sig }, 'shutting down');
    void daemon.stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  process.once('SIGINT', () => shutdown('SIGINT'));
  try {
    await daemon.start();
  } catch (e) {
    log.error({ err: (e as Error).message, code: (e as UsError).code }, 'controller failed to start');
    onReady?.(e as UsError);
    throw e;
  }
  onReady?.();
  return daemon;
}
