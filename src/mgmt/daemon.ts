/**
 * understudyd: the controller of one board. Composes the layers below (service endpoint, guest
 * supervisor, input pipeline) and serves local control requests. One per board (pid-file lock).
 * Startup is ordered so a failure leaves nothing half-started: lock, endpoint, control socket, guest.
 */
import { join } from 'node:path';
import { mkdirSync, chmodSync } from 'node:fs';
import { loadBoardProfile, type BoardProfile } from '../config/board-profile.js';
import { loadGuestDescriptor, type GuestDescriptor } from '../config/guest-descriptor.js';
import { UsError } from '../core/errors.js';
import { createLogger, type Logger } from '../core/log.js';
import { readInventory } from '../hw/inventory.js';
import { DirectPipeline } from '../guest/io.js';
import { ServiceEndpoint } from '../guest/service-endpoint.js';
import { GuestSupervisor } from '../guest/supervisor.js';
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
  private readonly endpoint: ServiceEndpoint;
  readonly supervisor: GuestSupervisor;
  private control?: ControlServer;
  private releaseLock?: () => void;
  private readonly startedAt = Date.now();
  private stopping?: Promise<void>;

  constructor(readonly board: BoardProfile, readonly guest: GuestDescriptor, readonly log: Logger) {
    this.endpoint = new ServiceEndpoint({ service: board.service, auth: board.externalServices.auth }, log.child({ component: 'endpoint' }));
    this.supervisor = new GuestSupervisor(board, guest, log.child({ component: 'guest' }));
    const pipeline = new DirectPipeline(this.supervisor.port, this.endpoint);
    this.endpoint.attach(pipeline);
    this.supervisor.port.on('output', (o) => pipeline.onGuestOutput(o));
  }

  async start(): Promise<void> {
    this.supervisor.preflight();
    mkdirSync(this.board.storageDir, { recursive: true, mode: 0o700 });
    chmodSync(this.board.storageDir, 0o700);
    this.releaseLock = acquireBoardLock(join(this.board.storageDir, 'understudyd.pid'), this.board.name);
    try {
      await this.endpoint.open();
      this.control = await serveControl(controlSocketPath(this.board), (cmd, args) => this.handle(cmd, args));
      await this.supervisor.start();
    } catch (e) {
      await this.stop();
      throw e;
    }
    this.log.info({ board: this.board.name, guest: this.guest.name }, 'controller running');
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.supervisor.stop().catch((e) => this.log.error({ err: (e as Error).message }, 'guest stop failed'));
      this.endpoint.close();
      this.control?.close();
      this.releaseLock?.();
      this.log.info('controller stopped');
    })();
    return this.stopping;
  }

  async status(): Promise<Record<string, unknown>> {
    return {
      board: this.board.name,
      pid: process.pid,
      uptimeS: Math.round((Date.now() - this.startedAt) / 1000),
      service: this.board.service,
      guest: await this.supervisor.status(),
      endpoint: { ...this.endpoint.counters, clients: this.endpoint.clients.size },
      rssMb: Math.round(process.memoryUsage().rss / 1048576),
    };
  }

  private async handle(command: string, args: Record<string, unknown>): Promise<unknown> {
    switch (command) {
      case 'ping':
        return { board: this.board.name, pid: process.pid };
      case 'status':
        return this.status();
      case 'board.info':
        return readInventory();
      case 'guest.manage': {
        const cmd = String(args.command ?? '').trim().toUpperCase();
        if (!MANAGEMENT_COMMANDS.has(cmd.split(' ')[0]!)) {
          throw new UsError('US_ERR_CONTROL', `unknown management command "${cmd}" (known: ${[...MANAGEMENT_COMMANDS].join(', ')})`);
        }
        return { reply: await this.supervisor.port.management(cmd, 5000) };
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
export async function runDaemon(boardFile: string, guestFile: string, onReady?: (err?: UsError) => void): Promise<Daemon> {
  const board = loadBoardProfile(boardFile);
  const guest = loadGuestDescriptor(guestFile);
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
