/**
 * understudyd: the controller of one board. Holds the board lock and the store, composes the HA
 * layer (when the profile pairs the board with a partner), the hosted guest and its pair
 * (src/pair/: what the board does in each role), and serves local control requests, the serial
 * console and metrics. One per board (pid-file lock). Startup is ordered so a failure leaves nothing
 * half-started: preflight, lock, store, control socket, then HA or the guest.
 */
import { join } from 'node:path';
import { mkdirSync, chmodSync } from 'node:fs';
import { loadBoardProfile, type BoardProfile } from '../config/board-profile.js';
import { loadGuestDescriptor, type GuestDescriptor } from '../config/guest-descriptor.js';
import { UsError } from '../core/errors.js';
import { readKeyFile } from '../core/key-file.js';
import { createLogger, type Logger } from '../core/log.js';
import { releaseAddress } from '../hw/netaddr.js';
import { HaController } from '../ha/ha-controller.js';
import { GuestHost } from '../replication/guest-host.js';
import { ReplicationManager } from '../replication/manager.js';
import { Checkpointer } from '../replication/checkpoint.js';
import { Store } from '../store/journal.js';
import { PairController } from '../pair/controller.js';
import { startFieldUpgrade, type FieldUpgrade } from '../pair/field-upgrade.js';
import { restoreGuestDescriptor } from '../pair/guest-upgrade.js';
import { acquireBoardLock } from './lock.js';
import { startManagement, type Management } from './management.js';
import { memoryMb, raiseOwnPriority } from './process-info.js';
import { serveControl, type ControlServer } from './ipc.js';
import { controlSocketPath, daemonLogPath } from './paths.js';

export { controlSocketPath, daemonLogPath };

type Command = (args: Record<string, unknown>) => unknown;

export class Daemon {
  readonly host?: GuestHost;
  ha?: HaController;
  store?: Store;
  pair?: PairController;
  private replication?: ReplicationManager;
  private checkpointer?: Checkpointer;
  private fieldUpgrade?: FieldUpgrade;
  private control?: ControlServer;
  private management?: Management;
  private releaseLock?: () => void;
  private readonly startedAt = Date.now();
  private stopping?: Promise<void>;

  constructor(readonly board: BoardProfile, readonly guest: GuestDescriptor | undefined, readonly log: Logger) {
    if (guest) this.host = new GuestHost(board, guest, log);
  }

  async start(): Promise<void> {
    this.host?.supervisor.preflight();
    mkdirSync(this.board.storageDir, { recursive: true, mode: 0o700 });
    chmodSync(this.board.storageDir, 0o700);
    this.releaseLock = acquireBoardLock(join(this.board.storageDir, 'understudyd.pid'), this.board.name);
    await raiseOwnPriority(this.log);
    try {
      const { host, board } = this;
      const store = (this.store = new Store(board.storageDir));
      if (host) restoreGuestDescriptor(host.supervisor, store);
      this.control = await serveControl(controlSocketPath(board), (cmd, args) => this.handle(cmd, args));
      this.management = await startManagement({
        board, store, log: this.log,
        guestConsole: () => ({ socket: host?.guestRunning ? host.supervisor.paths.consoleSocket : undefined, log: host?.supervisor.paths.consoleLog }),
        scrape: async () => {
          const st = (await this.status()) as Record<string, any>;
          return { board: board.name, uptimeS: st.uptimeS, role: st.role, ha: this.ha ? await this.ha.status() : undefined, guest: st.guest, endpoint: st.endpoint,
            replication: host?.replicator.status() ?? null, failovers: this.pair?.failovers ?? 0, inputLosses: this.pair?.protection.lossWatch?.losses };
        },
      });
      if (board.ha) {
        // A service address left on our interface by an earlier run is not ours until we are primary.
        if (board.service.interface) await releaseAddress(board.service.interface, board.service.address, board.service.prefixLength);
        if (host && board.partner?.ethernet) {
          this.replication = new ReplicationManager(board, readKeyFile(board.ha.keyFile), host.supervisor, host.replicator, store, this.log.child({ component: 'replication' }));
          const cp = (this.checkpointer = new Checkpointer(board.storageDir, store, host.supervisor, host.replicator, this.log.child({ component: 'checkpoint' })));
          host.replicator.setInputLog((s) => cp.logInput(s));
        }
        const ha = (this.ha = new HaController(board, store, this.log.child({ component: 'ha' })));
        if (host) {
          const pair = (this.pair = new PairController({ board, ha, host, clones: this.replication, checkpoints: this.checkpointer, journal: store, log: this.log.child({ component: 'pair' }) }));
          if (this.replication) this.replication.admitClone = (stage) => pair.admitClone(stage);
          await this.replication?.listen();
          pair.start();
        }
        await ha.start({ healthy: () => this.pair?.healthy() ?? true, guestHealth: () => (host ? host.supervisor.currentState : 'none') });
        if (board.partner?.ethernet) {
          this.fieldUpgrade = startFieldUpgrade({ board, ha, journal: store, host, pair: this.pair, stopping: () => !!this.stopping });
        }
      } else if (host) {
        await host.startStandalone();
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    this.log.info({ board: this.board.name, guest: this.guest?.name ?? null, paired: !!this.board.ha }, 'controller running');
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.fieldUpgrade?.close();
      await this.ha?.stop().catch((e) => this.log.error({ err: (e as Error).message }, 'HA stop failed'));
      await this.pair?.stop();
      await this.replication?.close().catch(() => undefined);
      await this.host?.stop().catch((e) => this.log.error({ err: (e as Error).message }, 'guest stop failed'));
      await this.management?.close();
      this.control?.close();
      this.store?.close();
      this.releaseLock?.();
      this.log.info('controller stopped');
    })();
    return this.stopping;
  }

  /**
   * SIGHUP: re-reads the profile and the descriptor. What can change live does (the log level, from
   * UNDERSTUDY_LOG at start, is fixed; the console re-reads its password file at each login); a change
   * that needs a restart is validated, journaled and named, never half-applied.
   */
  reload(boardFile: string, guestFile: string | undefined): void {
    try {
      const b = loadBoardProfile(boardFile);
      const g = guestFile ? loadGuestDescriptor(guestFile) : undefined;
      const changed: string[] = [];
      const cmp = (name: string, x: unknown, y: unknown) => { if (JSON.stringify(x) !== JSON.stringify(y)) changed.push(name); };
      for (const k of Object.keys({ ...b, ...this.board }) as Array<keyof BoardProfile>) if (k !== 'sourceFile') cmp(`board.${String(k)}`, b[k], this.board[k]);
      if (g && this.guest) for (const k of Object.keys({ ...g, ...this.guest }) as Array<keyof GuestDescriptor>) if (k !== 'sourceFile') cmp(`guest.${String(k)}`, g[k], this.guest[k]);
      const msg = changed.length ? `reload: ${changed.join(', ')} changed; these take effect at the next restart of the controller` : 'reload: configuration unchanged';
      this.store?.record('reload', msg, { changed });
      this.log.info({ changed }, msg);
    } catch (e) {
      this.store?.record('reload', `reload refused: ${(e as Error).message}`);
      this.log.error({ err: (e as Error).message }, 'reload refused: the running configuration stays');
    }
  }

  async status(): Promise<Record<string, unknown>> {
    const st = this.host ? await this.host.status() : undefined;
    return {
      board: this.board.name, pid: process.pid, uptimeS: Math.round((Date.now() - this.startedAt) / 1000),
      service: this.board.service, serving: this.host?.isServing ?? false, role: this.role,
      partner: this.ha ? this.ha.membership.partnerView : null,
      guest: st?.guest ?? null, endpoint: st?.endpoint ?? {}, replication: this.replicationStatus(),
      rssMb: Math.round(process.memoryUsage().rss / 1048576), memoryMb: memoryMb(),
    };
  }

  private get role(): string {
    return this.ha?.currentRole ?? 'STANDALONE';
  }

  private replicationStatus(): Record<string, unknown> | null {
    return this.pair ? this.pair.replicationStatus() : this.host ? { ...this.host.replicator.status(), cloneInProgress: false, failovers: 0 } : null;
  }

  private guestHost(): GuestHost {
    if (!this.host) throw new UsError('US_ERR_NOT_RUNNING', `no guest is running on board ${this.board.name}`);
    return this.host;
  }

  private requirePair(): PairController {
    if (!this.pair || !this.replication) throw new UsError('US_ERR_ROLE', `board ${this.board.name} does not replicate (no partner or no guest)`);
    return this.pair;
  }

  /** The control socket's commands (src/mgmt/ipc.ts), each mapped onto the part of the board that does it. */
  private readonly commands: Record<string, Command> = {
    ping: () => ({ board: this.board.name, pid: process.pid, role: this.role }),
    status: () => this.status(),
    role: () => (this.ha ? this.ha.status() : { board: this.board.name, role: 'STANDALONE' }),
    'link.status': async () => {
      if (!this.ha) throw new UsError('US_ERR_ROLE', `board ${this.board.name} has no partner configured (no ha section in ${this.board.sourceFile})`);
      const st = await this.ha.status();
      return { board: this.board.name, links: st.links, partner: st.partner, alarms: st.alarms };
    },
    'start-alone': () => {
      if (!this.ha) throw new UsError('US_ERR_ROLE', `board ${this.board.name} has no partner configured (no ha section in ${this.board.sourceFile}): it always serves alone`);
      return this.ha.startAlone();
    },
    events: (a) => {
      const limit = Number(a.limit ?? 50);
      const sinceId = Number(a.sinceId ?? 0);
      if (!Number.isFinite(limit) || !Number.isFinite(sinceId)) throw new UsError('US_ERR_CONTROL', 'events: limit and sinceId must be numbers');
      return { board: this.board.name, events: this.store!.events({ limit, kind: a.kind === undefined ? undefined : String(a.kind), sinceId }) };
    },
    'board.info': async () => (await import('../hw/inventory.js')).readInventory(),
    'replication.status': () => ({ board: this.board.name, role: this.role, replication: this.replicationStatus() }),
    clone: async () => ({ board: this.board.name, clone: await this.requirePair().clone() }),
    switchover: () => this.requirePair().switchover.handOver(),
    'guest.upgrade': (a) => {
      const up = this.requirePair().upgrade;
      if (a.commit === true) return up.commit();
      if (a.rollback === true) return up.rollback();
      if (typeof a.guestFile !== 'string' || !a.guestFile) throw new UsError('US_ERR_CONTROL', 'guest.upgrade: guestFile (a guest descriptor) is required');
      return up.run(a.guestFile, a.hold === true);
    },
    'upgrade.rolling': async (a) => {
      if (!this.fieldUpgrade) throw new UsError('US_ERR_ROLE', `board ${this.board.name} has no partner on an Ethernet link: nothing to roll over`);
      return { board: this.board.name, run: await this.fieldUpgrade.startRun(a) };
    },
    'upgrade.rolling.status': () => ({ board: this.board.name, run: this.fieldUpgrade?.rolling.current ?? null }),
    checkpoint: async () => {
      if (!this.checkpointer) throw new UsError('US_ERR_ROLE', `board ${this.board.name} does not replicate (no partner or no guest)`);
      return { board: this.board.name, checkpoint: await this.checkpointer.take() };
    },
    'guest.manage': (a) => this.guestHost().manage(a.command),
    'guest.inject': (a) => {
      const r = this.guestHost().inject(a);
      this.store!.record('fault', r.journal);
      return r.result;
    },
    'guest.stop': () => {
      setImmediate(() => void this.stop().then(() => process.exit(0)));
      return { stopping: true };
    },
  };

  private async handle(command: string, args: Record<string, unknown>): Promise<unknown> {
    const run = Object.hasOwn(this.commands, command) ? this.commands[command] : undefined;
    if (!run) throw new UsError('US_ERR_CONTROL', `unknown command "${command}"`);
    return run(args);
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
  process.on('SIGHUP', () => daemon.reload(boardFile, guestFile));
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
