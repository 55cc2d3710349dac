/**
 * understudyd: the controller of one board. Composes the layers below — the store, the HA layer
 * (when the profile pairs the board with a partner), the hosted guest and replication — and serves
 * local control requests. One per board (pid-file lock). Startup is ordered so a failure leaves
 * nothing half-started: preflight, lock, store, control socket, then HA or the guest.
 *
 * In a pair the role decides: PRIMARY serves (service address, endpoint, guest, inputs replicated to
 * the backup once it holds a clone); BACKUP runs the clone it was given and follows the input stream.
 * The primary clones to a backup that has no clone by itself (protection and re-protection).
 */
import { join } from 'node:path';
import { mkdirSync, chmodSync } from 'node:fs';
import { loadBoardProfile, type BoardProfile } from '../config/board-profile.js';
import { loadGuestDescriptor, type GuestDescriptor } from '../config/guest-descriptor.js';
import { UsError } from '../core/errors.js';
import { createLogger, type Logger } from '../core/log.js';
import { releaseAddress } from '../hw/netaddr.js';
import { HaController, readKeyFile, type RoleChange } from '../ha/ha-controller.js';
import { GuestHost } from '../replication/guest-host.js';
import { ReplicationManager, type CloneProgress } from '../replication/manager.js';
import { inputsAfterSave } from '../replication/replicator.js';
import { Checkpointer } from '../replication/checkpoint.js';
import { InputLossWatch } from '../replication/loss-watch.js';
import { upgradeBackupGuest } from '../replication/guest-upgrade.js';
import type { ControlMessage } from '../replication/messages.js';
import { Store } from '../store/journal.js';
import { boardPowerFor } from '../hw/fencing/fencing.js';
import type { AuthServer } from '../replication/secure-channel.js';
import { upgradeSetupFor } from '../upgrade/board-setup.js';
import { PeerClient, UPGRADE_PORT_OFFSET, listenPeer } from '../upgrade/peer.js';
import { DEFAULT_ROLLING, RollingUpgrade } from '../upgrade/rolling.js';
import { acquireBoardLock } from './lock.js';
import type { SerialConsole } from './console/index.js';
import { serveMetrics, type MetricsEndpoint, type MetricsBody } from './metrics-endpoint.js';
import { serveControl, type ControlServer } from './ipc.js';
import { controlSocketPath, daemonLogPath } from './paths.js';

export { controlSocketPath, daemonLogPath };

/**
 * The controller outranks its QEMU's housekeeping threads on the shared cores (the clone renices
 * them to -5): a controller starved of CPU stops proving it is alive and its board gets reset.
 * Nice values are per thread on Linux; threads created later inherit from their creator.
 */
async function raiseOwnPriority(log: Logger): Promise<void> {
  const { readdirSync } = await import('node:fs');
  const { execFile } = await import('node:child_process');
  const tids = readdirSync(`/proc/${process.pid}/task`);
  await new Promise<void>((resolve) => execFile('renice', ['-n', '-10', '-p', ...tids], (err) => {
    if (err) log.warn({ err: err.message.trim() }, 'controller runs at normal priority');
    resolve();
  }));
}

interface GuestUpgradeState {
  from: string;
  to: string;
  guestFile: string;
  step: 'backup' | 'switchover' | 'switched' | 'reprotect' | 'done' | 'aborted';
  startedAt: string;
  endedAt?: string;
  detail?: string;
  replayed?: number;
  error?: string;
}

/** Where the controller process's memory is, MB: for operators and bench/daemon. */
function memoryMb(): Record<string, number> {
  const m = process.memoryUsage();
  const mb = (b: number) => Math.round((b / 1048576) * 10) / 10;
  return { rss: mb(m.rss), heapTotal: mb(m.heapTotal), heapUsed: mb(m.heapUsed), external: mb(m.external), arrayBuffers: mb(m.arrayBuffers) };
}

/** Management commands an operator may send to the guest application. */
const MANAGEMENT_COMMANDS = new Set(['PING', 'STATE', 'SAVE', 'HANG']);
/** A backup in sync takes a checkpoint this often. */
const CHECKPOINT_INTERVAL_MS = 60000;
/** Wait before retrying a failed clone. */
const CLONE_BACKOFF_MS = 5000;
/** How often the guest's processed-request count is compared with what it was handed (loss-watch.ts). */
const LOSS_CHECK_MS = 1000;
/** A backup that asked for a re-clone asks again only if none has started after this long. */
const RECLONE_ASK_MS = 10000;

export class Daemon {
  readonly host?: GuestHost;
  ha?: HaController;
  store?: Store;
  replication?: ReplicationManager;
  checkpointer?: Checkpointer;
  private checkpointTimer?: NodeJS.Timeout;
  private lossWatch?: InputLossWatch;
  private lossTimer?: NodeJS.Timeout;
  private recloneAskedAt = 0;
  private control?: ControlServer;
  private console?: SerialConsole;
  private metricsServer?: MetricsEndpoint;
  private releaseLock?: () => void;
  private readonly startedAt = Date.now();
  private stopping?: Promise<void>;
  /** Serialises the work that follows role changes. */
  private roleWork: Promise<void> = Promise.resolve();
  private protectTimer?: NodeJS.Timeout;
  private nextCloneAt = 0;
  private cloneProgress?: CloneProgress;
  /** The rolling upgrade of the pair (run here, or driven by the partner over the upgrade channel). */
  rolling?: RollingUpgrade;
  private upgradePeer?: AuthServer;
  failovers = 0;
  /** A guest upgrade this board (as primary) is running, and the last one's outcome. */
  private guestUpgrade?: GuestUpgradeState;
  private lastGuestUpgrade?: GuestUpgradeState;
  /** Switchover of a guest upgrade: the board stepping down keeps its guest, following the new primary. */
  private keptCopy = false;
  private partnerKeepsCopy = false;
  /** Primary: the backup copy is the partner's previous version (an upgrade not committed yet). */
  private partnerCopy = false;
  /** Set while this board (as backup) replaces its clone by the new version (onRole waits for it). */
  private localUpgrade?: Promise<void>;
  /** The clone saved its state for an upgrade that failed: the log from here on completes that state. */
  private savedState?: { replayFrom: number; pausedAt: number };
  private upgradeWaiter?: { resolve(m: { version: string; replayed: number }): void; reject(e: Error): void };

  constructor(readonly board: BoardProfile, readonly guest: GuestDescriptor | undefined, readonly log: Logger) {
    if (guest) {
      const host = new GuestHost(board, guest, log);
      this.host = host;
      // A primary whose backup holds an up-to-date clone hands over instead of rebooting its guest.
      // A backup whose clone dies does not reboot it (it would hold stale state): it asks for a new clone.
      host.supervisor.failurePolicy = () => {
        const role = this.ha?.currentRole;
        if (role === 'PRIMARY' && host.replicator.protectedNow) return 'give-up';
        if (role === 'BACKUP' && host.replicator.mode === 'backup') return 'give-up';
        return 'restart';
      };
      host.supervisor.on('state', (s, cause) => {
        if (s !== 'failed') return;
        if (this.ha?.currentRole === 'PRIMARY') this.ha.fire('guest-failed', cause);
        else if (this.ha?.currentRole === 'BACKUP' && !this.localUpgrade) {
          this.store?.record('guest', `clone lost (${cause}): asking the primary for a new clone`);
          host.replicator.sendControl({ type: 'reclone', reason: `clone lost: ${cause}` });
        }
      });
    }
  }

  async start(): Promise<void> {
    this.host?.supervisor.preflight();
    mkdirSync(this.board.storageDir, { recursive: true, mode: 0o700 });
    chmodSync(this.board.storageDir, 0o700);
    this.releaseLock = acquireBoardLock(join(this.board.storageDir, 'understudyd.pid'), this.board.name);
    await raiseOwnPriority(this.log);
    try {
      this.store = new Store(this.board.storageDir);
      this.restoreGuestDescriptor();
      this.control = await serveControl(controlSocketPath(this.board), (cmd, args) => this.handle(cmd, args));
      await this.startManagement();
      if (this.board.ha) {
        // A service address left on our interface by an earlier run is not ours until we are primary.
        const svc = this.board.service;
        if (svc.interface) await releaseAddress(svc.interface, svc.address, svc.prefixLength);
        if (this.host && this.board.partner?.ethernet) {
          this.replication = new ReplicationManager(this.board, readKeyFile(this.board.ha.keyFile), this.host.supervisor,
            this.host.replicator, this.store, this.log.child({ component: 'replication' }));
          this.wireReplication(this.replication);
          await this.replication.listen();
          const cp = new Checkpointer(this.board.storageDir, this.store, this.host.supervisor, this.host.replicator, this.log.child({ component: 'checkpoint' }));
          this.checkpointer = cp;
          this.host.replicator.setInputLog((s) => cp.logInput(s));
          this.checkpointTimer = setInterval(() => {
            if (this.host?.replicator.mode === 'backup' && this.host.replicator.protectedNow && this.host.guestRunning) cp.take().catch(() => undefined);
          }, CHECKPOINT_INTERVAL_MS);
          this.startLossWatch(this.host, this.replication);
        }
        this.ha = new HaController(this.board, this.store, this.log.child({ component: 'ha' }));
        this.ha.on('role', (c) => this.onRole(c));
        await this.ha.start({
          healthy: () => this.host?.supervisor.currentState !== 'failed' || this.ha?.currentRole !== 'PRIMARY',
          guestHealth: () => (this.host ? this.host.supervisor.currentState : 'none'),
        });
        this.protectTimer = setInterval(() => this.maybeProtect(), 500);
        if (this.board.partner?.ethernet) this.startRollingUpgrade();
      } else if (this.host) {
        await this.host.startStandalone();
      }
    } catch (e) {
      await this.stop();
      throw e;
    }
    this.log.info({ board: this.board.name, guest: this.guest?.name ?? null, paired: !!this.board.ha }, 'controller running');
  }

  /**
   * The serial console and the metrics endpoint, when the profile has them. Their code is loaded
   * only then (the console when configured, prom-client at the first scrape): an idle board keeps
   * the controller's footprint small (see BENCHMARKS.md, bench/daemon).
   */
  private async startManagement(): Promise<void> {
    const b = this.board;
    if (b.console) {
      const { SerialConsole, DEFAULT_CLI_ENTRY, consolePasswordPath } = await import('./console/index.js');
      this.console = new SerialConsole({
        device: b.console.device, baud: b.console.baud, board: b.name, boardFile: b.sourceFile,
        passwordFile: consolePasswordPath(b),
        guestConsoleSocket: () => (this.host?.guestRunning ? this.host.supervisor.paths.consoleSocket : undefined),
        guestConsoleLog: () => this.host?.supervisor.paths.consoleLog,
        cliEntry: DEFAULT_CLI_ENTRY,
        log: this.log.child({ component: 'console' }),
      });
      this.console.on('auth', (e) => this.store!.record('console', `${e.kind} ${e.user}${e.reason ? ` (${e.reason})` : ''}`, { ...e }));
      try {
        await this.console.start();
      } catch (e) {
        // A console that cannot start (no password file yet) must not keep the board from serving.
        this.store!.record('console', `serial console not started: ${(e as Error).message}`);
        this.log.error({ err: (e as Error).message }, 'serial console not started');
        this.console = undefined;
      }
    }
    if (b.metrics) {
      let registry: Promise<() => Promise<MetricsBody>> | undefined;
      const firstScrape = async () => {
        const { Metrics, snapshotFrom } = await import('./metrics.js');
        const metrics = new Metrics();
        metrics.onScrape(async () => {
          const st = (await this.status()) as Record<string, any>;
          return snapshotFrom({
            board: b.name, uptimeS: st.uptimeS, role: st.role, ha: this.ha ? await this.ha.status() : undefined,
            guest: st.guest, endpoint: st.endpoint, replication: this.host?.replicator.status() ?? null, failovers: this.failovers,
            inputLosses: this.lossWatch?.losses,
          });
        });
        return async () => ({ contentType: metrics.registry.contentType, body: await metrics.text() });
      };
      this.metricsServer = await serveMetrics(b.metrics.address, b.metrics.port, async () => (await (registry ??= firstScrape().catch((e) => { registry = undefined; throw e; })))());
    }
  }

  private wireReplication(r: ReplicationManager): void {
    const host = this.host!;
    r.on('clone-progress', (p) => { this.cloneProgress = p; });
    r.on('cloned', () => { this.partnerCopy = false; });
    r.on('guest-descriptor', (g) => this.rememberGuestDescriptor(g, 'a clone of the partner\'s guest'));
    r.on('clone-target', (phase) => { if (phase === 'running') this.savedState = undefined; });
    r.on('control', (m) => {
      if (m.type === 'reclone' && this.ha?.currentRole === 'PRIMARY' && this.guestUpgrade?.step === 'backup') {
        this.store!.record('guest-upgrade', `backup asks for a re-clone during the guest upgrade (${m.reason}): left to the upgrade`);
      } else if (m.type === 'reclone' && this.ha?.currentRole === 'PRIMARY') {
        this.store!.record('replication', `backup asks for a re-clone: ${m.reason}`);
        this.recloneToBackup();
      } else if (m.type === 'guest-upgrade-prepare' && this.ha?.currentRole === 'BACKUP') {
        void this.upgradeLocalClone(m.guestFile);
      } else if (m.type === 'guest-upgrade-progress' && this.guestUpgrade) {
        this.guestUpgrade.detail = `${m.step}${m.detail ? `: ${m.detail}` : ''}`;
        this.store!.record('guest-upgrade', this.guestUpgrade.detail);
      } else if (m.type === 'guest-upgrade-ready') {
        this.upgradeWaiter?.resolve(m);
      } else if (m.type === 'guest-upgrade-failed') {
        this.upgradeWaiter?.reject(new UsError('US_ERR_GUEST_UPGRADE', `the backup could not upgrade its guest: ${m.reason}`));
      } else if (m.type === 'switchover' && this.ha?.currentRole === 'BACKUP') {
        this.store!.record('role', `partner hands the primary role over (switchover${m.keepCopy ? ', keeping its guest as the backup copy' : ''})`);
        this.partnerKeepsCopy = m.keepCopy === true;
        this.ha.takeOver();
      } else if (m.type === 'guest-upgrade-commit' && this.ha?.currentRole === 'PRIMARY') {
        void this.commitGuestUpgrade().catch(() => undefined);
      }
    });
    r.on('clone-target', (phase) => { if (phase === 'started') this.recloneAskedAt = 0; });
    host.replicator.on('divergence', (key) => {
      const asked = this.askForReclone(`divergence on ${key}`);
      this.store!.record('divergence', `backup's reply to ${key} differs from the primary's: ${asked ? 'asking for a re-clone' : 're-clone already asked for'}`, { key });
    });
    host.replicator.on('unprotected', (reason) => this.store!.record('replication', `UNPROTECTED: ${reason}`));
  }

  /**
   * Primary: clone afresh over the backup's copy. The backup keeps logging and acknowledging the
   * input stream while its new clone is made, so the primary stays protected (output commit) through
   * the re-clone instead of serving alone; only a failed re-clone leaves it unprotected (and
   * maybeProtect tries again). Nothing to do while a clone is already under way.
   */
  private recloneToBackup(): void {
    const r = this.replication;
    if (!r || r.cloneInProgress) return;
    this.nextCloneAt = Date.now() + CLONE_BACKOFF_MS;
    r.clone().catch((e: Error) => this.host!.replicator.unprotect(`re-clone failed: ${e.message}`));
  }

  /**
   * Backup: one re-clone request for a burst of divergences (every later reply of a diverged copy
   * may differ too); asked again if no clone has started within RECLONE_ASK_MS.
   */
  private askForReclone(reason: string): boolean {
    if (this.recloneAskedAt && Date.now() - this.recloneAskedAt < RECLONE_ASK_MS) return false;
    this.recloneAskedAt = Date.now();
    this.host!.replicator.sendControl({ type: 'reclone', reason });
    return true;
  }

  /**
   * A guest copy that never saw some inputs differs from its partner although every reply compared
   * equal (a lost request has no reply to compare): once the guest is idle and short of what it was
   * handed, the copies are made equal again by a re-clone (src/replication/loss-watch.ts).
   */
  private startLossWatch(host: GuestHost, r: ReplicationManager): void {
    const w = new InputLossWatch(host.supervisor, () => host.replicator.mode !== 'standalone' && host.replicator.protectedNow
      && !r.cloneInProgress && !this.guestUpgrade && !this.localUpgrade && !this.stopping);
    this.lossWatch = w;
    r.on('cloned', () => w.reset());
    r.on('clone-target', () => w.reset());
    w.on('loss', (l) => {
      const what = l.missing > 0
        ? `the guest lost ${l.missing} inputs (${l.delivered} requests handed to it, ${l.processed} processed): its state differs from its partner's`
        : `the guest counts ${-l.missing} requests more than it was handed (${l.delivered} handed, ${l.processed} processed): its state differs from its partner's`;
      this.log.error({ ...l }, 'guest copy lost inputs');
      if (this.ha?.currentRole === 'BACKUP' && host.replicator.mode === 'backup') {
        const asked = this.askForReclone(`the clone is missing ${l.missing} inputs`);
        this.store!.record('divergence', `${what}; ${asked ? 'asking the primary for a re-clone' : 're-clone already asked for'}`, { ...l });
      } else if (this.ha?.currentRole === 'PRIMARY' && host.replicator.mode === 'primary' && !r.cloneInProgress) {
        this.store!.record('divergence', `${what}; cloning it to the backup again`, { ...l });
        this.recloneToBackup();
      }
    });
    this.lossTimer = setInterval(() => { void w.check().catch(() => undefined); }, LOSS_CHECK_MS);
  }

  /**
   * The upgrade channel to the partner (src/upgrade/peer.ts) and the rolling upgrade; a run that
   * rebooted this board into its trial resumes here.
   */
  private startRollingUpgrade(): void {
    const b = this.board;
    const eth = b.partner!.ethernet!;
    const key = readKeyFile(b.ha!.keyFile);
    const setup = upgradeSetupFor(b);
    const ha = this.ha!;
    const rolling = new RollingUpgrade({
      board: b.name,
      get partner() { return ha.membership.partnerView.heartbeat?.sender ?? 'the partner'; },
      setup,
      peer: new PeerClient(eth.partnerAddress, eth.port + UPGRADE_PORT_OFFSET, key),
      pairView: () => {
        const role = this.ha?.currentRole ?? 'STANDALONE';
        return {
          role,
          guest: this.host ? this.host.supervisor.currentState : null,
          protected: role === 'PRIMARY' && !!this.host?.replicator.protectedNow && !this.replication?.cloneInProgress,
          backlog: this.host ? Math.max(0, this.host.replicator.lastSeq - this.host.replicator.deliveredSeq) : 0,
        };
      },
      journal: (message, detail) => this.store?.record('upgrade', message, detail),
      switchover: () => this.switchover(),
      rebootSelf: () => this.rebootSelf(setup.rebootCommand),
    }, join(b.storageDir, 'rolling-upgrade.json'));
    this.rolling = rolling;
    void (async () => {
      // The partner-link address may not be up yet.
      for (let attempt = 0; attempt < 60 && !this.stopping; attempt++) {
        try {
          this.upgradePeer = await listenPeer({
            address: eth.localAddress, port: eth.port + UPGRADE_PORT_OFFSET, key, incomingDir: setup.incomingDir, handler: rolling.handler,
            onReject: (e) => this.store?.record('upgrade', `rejected a partner connection on the upgrade channel: ${e.message}`),
          });
          if (this.stopping) await this.upgradePeer.close();
          return;
        } catch {
          await new Promise((r) => setTimeout(r, 1000));
        }
      }
      this.store?.record('upgrade', 'the upgrade channel could not listen on the partner link: rolling upgrades cannot reach this board');
    })();
    rolling.resume();
  }

  /** A real blade runs the profile's reboot command; a simulated board is power-cycled by the chassis' power controller. */
  private async rebootSelf(command: string[]): Promise<void> {
    this.store?.record('upgrade', `rebooting board ${this.board.name}`);
    await boardPowerFor(this.board, command).rebootSelf();
  }

  /** Primary with a live backup that holds no clone: clone to it. */
  private maybeProtect(): void {
    const host = this.host;
    const r = this.replication;
    if (!host || !r || !this.ha || this.ha.currentRole !== 'PRIMARY') return;
    if (!host.guestRunning || host.replicator.protectedNow || r.cloneInProgress || Date.now() < this.nextCloneAt) return;
    const partner = this.ha.membership.partnerView;
    if (partner.state !== 'alive' || partner.heartbeat?.role !== 'BACKUP') return;
    this.nextCloneAt = Date.now() + CLONE_BACKOFF_MS;
    r.clone().catch(() => undefined); // journaled by the manager
  }

  private onRole(c: RoleChange): void {
    const host = this.host;
    if (!host) return;
    this.roleWork = this.roleWork.then(async () => {
      const role = this.ha!.currentRole;
      try {
        if (role === 'PRIMARY') {
          if (c.from === 'FENCING' || c.from === 'BACKUP') this.failovers++;
          // Promoted while replacing its clone (guest upgrade): let that finish first; it holds
          // the inputs it has not replayed yet, and ends with a running guest or a replay point.
          if (this.localUpgrade) {
            this.store!.record('guest', 'promoted during a guest upgrade: finishing it before serving');
            await this.localUpgrade;
          }
          host.replicator.becomePrimary();
          if (!host.guestRunning) {
            if (host.supervisor.currentState !== 'stopped') await host.supervisor.stop();
            const promoted = c.from === 'FENCING' || c.from === 'BACKUP';
            const saved = this.savedState;
            if (promoted && saved && this.checkpointer) {
              // The guest saved its state for an upgrade that did not complete: boot on that state
              // and replay every logged input after it.
              this.store!.record('guest', `promoted without a running guest: booting on the state saved for the upgrade and replaying the input log from input ${saved.replayFrom}`);
              await host.supervisor.start();
              host.replicator.replay(saved.replayFrom - 1, inputsAfterSave(this.checkpointer.inputsLogged(saved.replayFrom, Number.MAX_SAFE_INTEGER), saved.pausedAt));
              this.savedState = undefined;
            } else if (promoted && this.checkpointer?.info) {
              // Both guests lost: the checkpoint and the inputs logged since bring every acknowledged input back.
              this.store!.record('guest', 'promoted without a running clone: restoring the checkpoint and replaying the input log');
              await this.checkpointer.restore();
            } else {
              this.store!.record('guest', promoted
                ? 'promoted without a clone or a checkpoint: booting the guest from its saved state'
                : 'booting the guest: board is primary');
              host.replicator.discardQueue();
              await host.supervisor.start();
            }
          } else {
            this.store!.record('guest', `the clone takes over at input ${host.replicator.lastSeq}`);
            if (this.partnerKeepsCopy && host.replicator.protectOnCurrentChannel()) {
              this.partnerCopy = true;
              this.store!.record('guest-upgrade', `protected by the partner's previous copy of the guest until the upgrade is committed (understudy guest upgrade --commit) or rolled back (--rollback)`);
            }
          }
          this.partnerKeepsCopy = false;
          await host.serve();
          this.store!.record('guest', `serving on ${this.board.service.address}:${this.board.service.port}`);
          // A clone blocked on an AUTH answer that died with the old primary would wait for its own
          // retransmission (500 ms): ask the AUTH service on its behalf right away.
          for (const sub of host.supervisor.port.authOutstanding) {
            host.endpoint.release({ kind: 'auth-query', payload: Buffer.from(`AUTHQ ${sub}`) });
          }
        } else if (c.from === 'PRIMARY' || role === 'FAULT' || role === 'STOPPING') {
          await host.unserve();
          const kept = this.keptCopy && role === 'BACKUP';
          this.keptCopy = false;
          if (!kept) host.replicator.becomeBackup();
          if (kept) {
            this.store!.record('guest-upgrade', `this board keeps its guest (${host.supervisor.guest.version}) as the backup copy until the upgrade is committed or rolled back`);
          } else if (role !== 'STOPPING') {
            // Its guest would drift without the input stream: the new primary clones a fresh copy.
            await host.supervisor.stop();
            this.store!.record('guest', `guest stopped: board is ${role}; waiting for a clone`);
          }
        }
      } catch (e) {
        this.store!.record('guest', `role change to ${role} failed: ${(e as Error).message}`);
        this.log.error({ err: (e as Error).message, cause: c.cause }, 'guest failed to follow the role');
        this.ha!.fire('guest-failed', (e as Error).message);
      }
    });
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      clearInterval(this.protectTimer);
      clearInterval(this.checkpointTimer);
      clearInterval(this.lossTimer);
      await this.upgradePeer?.close().catch(() => undefined);
      await this.ha?.stop().catch((e) => this.log.error({ err: (e as Error).message }, 'HA stop failed'));
      await this.roleWork;
      await this.replication?.close().catch(() => undefined);
      await this.host?.stop().catch((e) => this.log.error({ err: (e as Error).message }, 'guest stop failed'));
      await this.console?.stop().catch(() => undefined);
      await this.metricsServer?.close().catch(() => undefined);
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

  replicationStatus(): Record<string, unknown> | null {
    if (!this.host) return null;
    return {
      ...this.host.replicator.status(),
      cloneInProgress: this.replication?.cloneInProgress ?? false,
      cloneProgress: this.replication?.cloneInProgress ? this.cloneProgress : undefined,
      lastClone: this.replication?.lastClone,
      lastCloneError: this.replication?.lastCloneError,
      inputLoss: this.lossWatch ? { checks: this.lossWatch.checks, losses: this.lossWatch.losses, last: this.lossWatch.lastLoss ?? null } : null,
      failovers: this.failovers,
      guestUpgrade: this.guestUpgrade ?? null,
      partnerRunsPreviousVersion: this.partnerCopy,
      lastGuestUpgrade: this.lastGuestUpgrade ?? null,
      checkpoint: this.checkpointer ? { last: this.checkpointer.info ?? null, inputsLoggedSince: this.checkpointer.loggedSince } : null,
    };
  }

  async status(): Promise<Record<string, unknown>> {
    const host = this.host;
    const st = host ? await host.status() : undefined;
    return {
      board: this.board.name,
      pid: process.pid,
      uptimeS: Math.round((Date.now() - this.startedAt) / 1000),
      service: this.board.service,
      serving: host?.isServing ?? false,
      role: this.ha?.currentRole ?? 'STANDALONE',
      partner: this.ha ? this.ha.membership.partnerView : null,
      guest: st?.guest ?? null,
      endpoint: st?.endpoint ?? {},
      replication: this.replicationStatus(),
      rssMb: Math.round(process.memoryUsage().rss / 1048576),
      memoryMb: memoryMb(),
    };
  }

  /** The descriptor a board last ran survives a controller restart (it may differ from --guest after an upgrade). */
  private restoreGuestDescriptor(): void {
    const host = this.host;
    const saved = this.store!.getMeta('guestFile');
    if (!host || !saved || saved === host.supervisor.guest.sourceFile) return;
    try {
      host.supervisor.useDescriptor(loadGuestDescriptor(saved));
      this.store!.record('guest', `running ${host.supervisor.guest.name} ${host.supervisor.guest.version} (${saved}), the descriptor this board last ran`);
    } catch (e) {
      this.store!.record('guest', `the descriptor this board last ran (${saved}) cannot be used: ${(e as Error).message}; using ${host.supervisor.guest.sourceFile}`);
    }
  }

  private rememberGuestDescriptor(g: GuestDescriptor, why: string): void {
    this.store!.setMeta('guestFile', g.sourceFile);
    this.store!.record('guest', `guest is now ${g.name} ${g.version} (${why})`, { file: g.sourceFile, version: g.version });
  }

  /** Backup: the primary asked this board to replace its clone by another version of the guest. */
  private upgradeLocalClone(guestFile: string): Promise<void> {
    this.localUpgrade ??= this.doUpgradeLocalClone(guestFile).finally(() => { this.localUpgrade = undefined; });
    return this.localUpgrade;
  }

  private async doUpgradeLocalClone(guestFile: string): Promise<void> {
    const host = this.host;
    if (!host || !this.checkpointer) return;
    const send = (m: ControlMessage) => host.replicator.sendControl(m);
    try {
      const report = await upgradeBackupGuest({
        supervisor: host.supervisor, replicator: host.replicator, checkpointer: this.checkpointer, log: this.log.child({ component: 'guest-upgrade' }),
        progress: (step, detail) => {
          this.store!.record('guest-upgrade', `${step}${detail ? `: ${detail}` : ''}`);
          send({ type: 'guest-upgrade-progress', step, detail });
        },
      }, guestFile);
      this.rememberGuestDescriptor(host.supervisor.guest, 'guest upgrade');
      this.store!.record('guest-upgrade', `clone upgraded from ${report.from} to ${report.to}: state of ${report.savedSeq} requests loaded, ${report.replayed} inputs replayed from input ${report.replayFrom}, booted in ${report.bootMs} ms`, { ...report });
      send({ type: 'guest-upgrade-ready', version: host.supervisor.guest.version, replayed: report.replayed });
    } catch (e) {
      const { replayFrom, pausedAt } = e as { replayFrom?: number; pausedAt?: number };
      this.savedState = replayFrom !== undefined && pausedAt !== undefined ? { replayFrom, pausedAt } : undefined;
      this.store!.record('guest-upgrade', `clone upgrade FAILED: ${(e as Error).message}`);
      send({ type: 'guest-upgrade-failed', reason: (e as Error).message });
    }
  }

  /**
   * Primary: upgrade the guest of the pair without losing an input. The backup replaces its clone by
   * the new version (save, boot on the saved state, replay) while this board serves; then the pair
   * switches over, and the new primary clones the new version back to this board.
   */
  private async until(cond: () => boolean, ms: number, what: string): Promise<void> {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new UsError('US_ERR_TIMEOUT', `${what} within ${Math.round(ms / 1000)} s`);
      await new Promise((res) => setTimeout(res, 200));
    }
  }

  /** Commit a guest upgrade held after its switchover: the new version is cloned over the partner's previous copy. */
  private async commitGuestUpgrade(): Promise<Record<string, unknown>> {
    const host = this.host!;
    if (this.ha?.currentRole === 'BACKUP') {
      if (!host.replicator.followsAnotherVersion || !host.replicator.protectedNow) {
        throw new UsError('US_ERR_ROLE', 'guest upgrade --commit: nothing to commit (this board\'s copy is not a previous version following the primary)');
      }
      host.replicator.sendControl({ type: 'guest-upgrade-commit' });
      return { board: this.board.name, commit: 'requested from the primary' };
    }
    const r = this.requirePrimaryReplication('guest upgrade --commit');
    if (!this.partnerCopy) throw new UsError('US_ERR_ROLE', 'guest upgrade --commit: no upgrade waits for a commit (the backup runs this board\'s version)');
    this.store!.record('guest-upgrade', `upgrade committed: cloning ${host.supervisor.guest.version} over the partner's previous copy`);
    const rep = await r.clone();
    return { board: this.board.name, committed: host.supervisor.guest.version, clone: rep };
  }

  /** Roll a held guest upgrade back: switch over to the partner's previous copy, which then clones itself back here. */
  private async rollbackGuestUpgrade(): Promise<Record<string, unknown>> {
    this.requirePrimaryReplication('guest upgrade --rollback');
    if (!this.partnerCopy) throw new UsError('US_ERR_ROLE', 'guest upgrade --rollback: the backup holds no previous version (nothing to roll back, or already committed)');
    const version = this.host!.supervisor.guest.version;
    this.store!.record('guest-upgrade', `rolling back: handing the primary role back to the partner's previous copy; ${version} is then replaced by its clone`);
    const r = await this.switchover(false);
    return { board: this.board.name, rolledBackFrom: version, ...r };
  }

  private async upgradeGuest(guestFile: string, hold = false): Promise<Record<string, unknown>> {
    const r = this.requirePrimaryReplication('guest upgrade');
    const host = this.host!;
    if (this.guestUpgrade) throw new UsError('US_ERR_ROLE', `guest upgrade: one is already running (to ${this.guestUpgrade.to})`);
    if (!host.replicator.protectedNow || r.cloneInProgress) throw new UsError('US_ERR_ROLE', 'guest upgrade: the pair is not protected (the backup holds no clone in sync); see understudy status');
    const g = loadGuestDescriptor(guestFile);
    const from = host.supervisor.guest;
    if (g.version === from.version) throw new UsError('US_ERR_CONTROL', `guest upgrade: the guest already runs version ${g.version}`);
    const t0 = Date.now();
    const st: GuestUpgradeState = { from: from.version, to: g.version, guestFile: g.sourceFile, step: 'backup', startedAt: new Date(t0).toISOString() };
    this.guestUpgrade = st;
    const step = (s: GuestUpgradeState['step'], msg: string) => { st.step = s; st.detail = msg; this.store!.record('guest-upgrade', msg, { step: s }); };
    step('backup', `upgrading the guest from ${from.name} ${from.version} to ${g.name} ${g.version}: the backup replaces its clone first`);
    try {
      const ready = await new Promise<{ version: string; replayed: number }>((resolve, reject) => {
        const timer = setTimeout(() => reject(new UsError('US_ERR_TIMEOUT', 'guest upgrade: the backup did not report within 300 s')), 300000);
        const lost = () => reject(new UsError('US_ERR_GUEST_UPGRADE', 'guest upgrade: the backup stopped acknowledging inputs'));
        host.replicator.once('unprotected', lost);
        this.upgradeWaiter = {
          resolve: (m) => { clearTimeout(timer); host.replicator.off('unprotected', lost); resolve(m); },
          reject: (e) => { clearTimeout(timer); host.replicator.off('unprotected', lost); reject(e); },
        };
        host.replicator.sendControl({ type: 'guest-upgrade-prepare', guestFile: g.sourceFile, version: g.version });
      });
      st.replayed = ready.replayed;
      step('switchover', `backup runs ${g.version} and has caught up (${ready.replayed} inputs replayed): switching over, this board keeping its ${from.version} copy`);
      await this.switchover(true);
      await this.until(() => host.replicator.mode === 'backup' && host.replicator.protectedNow, 60000, 'guest upgrade: this board did not become the backup of the new version');
      if (hold) {
        step('switched', `the partner serves ${g.version}, this board follows it with ${from.version}: commit (understudy guest upgrade --commit) or roll back (--rollback on the partner)`);
        return { board: this.board.name, from: from.version, to: g.version, replayed: ready.replayed, durationMs: Date.now() - t0, awaitingCommit: true };
      }
      step('reprotect', `the partner serves ${g.version}; committing: it clones ${g.version} to this board`);
      host.replicator.sendControl({ type: 'guest-upgrade-commit' });
      await this.until(() => host.replicator.mode === 'backup' && host.replicator.protectedNow && host.guestRunning && host.supervisor.guest.version === g.version,
        300000, `guest upgrade: this board did not receive a ${g.version} clone within 300 s (the partner serves ${g.version})`);
      step('done', `guest upgrade to ${g.name} ${g.version} complete in ${Math.round((Date.now() - t0) / 1000)} s: both boards run it, the pair is protected`);
      return { board: this.board.name, from: from.version, to: g.version, replayed: ready.replayed, durationMs: Date.now() - t0 };
    } catch (e) {
      const before = st.step === 'backup';
      st.step = 'aborted';
      st.error = (e as Error).message;
      this.store!.record('guest-upgrade', `guest upgrade ABORTED (${(e as Error).message})${before ? `: the pair stays on ${from.version}, the backup is cloned again` : ''}`);
      // The backup's clone may be gone (saved and stopped): clone the old version to it again.
      if (before && this.ha?.currentRole === 'PRIMARY') host.replicator.unprotect(`guest upgrade aborted: ${(e as Error).message}`);
      throw e instanceof UsError ? e : new UsError('US_ERR_GUEST_UPGRADE', (e as Error).message);
    } finally {
      this.upgradeWaiter = undefined;
      this.lastGuestUpgrade = { ...st, endedAt: new Date().toISOString() };
      this.guestUpgrade = undefined;
    }
  }

  private requireHa(): HaController {
    if (!this.ha) throw new UsError('US_ERR_ROLE', `board ${this.board.name} has no partner configured (no ha section in ${this.board.sourceFile})`);
    return this.ha;
  }

  private requirePrimaryReplication(what: string): ReplicationManager {
    if (!this.replication || !this.host) throw new UsError('US_ERR_ROLE', `${what}: board ${this.board.name} does not replicate (no partner or no guest)`);
    if (this.ha?.currentRole !== 'PRIMARY') throw new UsError('US_ERR_ROLE', `${what}: board ${this.board.name} is ${this.ha?.currentRole}; run it on the primary`);
    return this.replication;
  }

  /** Planned hand-over: drain, step down, tell the backup to take over. */
  private async switchover(keepCopy = false): Promise<Record<string, unknown>> {
    this.requirePrimaryReplication('switchover');
    const host = this.host!;
    const r = host.replicator;
    if (!r.protectedNow) throw new UsError('US_ERR_ROLE', 'switchover: the backup holds no clone in sync (see understudy status); refusing to hand over');
    if (this.replication?.cloneInProgress) throw new UsError('US_ERR_ROLE', 'switchover: a clone is in progress; try again when it is done');
    // From here no input reaches this guest or the stream: the partner holds a prefix of the inputs
    // and answers the rest. Held inputs are dropped when this board steps down (no reply was
    // released for them; clients retry). A short wait for the last ACKs and replies only spares
    // clients a retry: correctness does not depend on it.
    r.hold();
    const sent = r.lastSeq - r.heldCount;
    for (let i = 0; i < 50 && r.protectedNow && (r.ackedSeq < sent || r.status().heldReplies > 0); i++) {
      await new Promise((res) => setTimeout(res, 10));
    }
    if (!r.protectedNow) {
      r.release();
      throw new UsError('US_ERR_LINK', `switchover: the backup stopped acknowledging (${r.status().unprotectedReason ?? 'unprotected'}); not handed over`);
    }
    r.sendControl({ type: 'switchover', keepCopy });
    if (!this.ha!.yieldPrimary()) {
      r.release();
      throw new UsError('US_ERR_ROLE', `switchover: this board could not step down (role ${this.ha!.currentRole})`);
    }
    // Step down at once, in this tick: the new primary may clone to this board, or (keepCopy) send
    // it inputs, before the role change has been worked through (address released, endpoint closed).
    r.becomeBackup();
    if (keepCopy) this.keptCopy = r.followOnCurrentChannel(true);
    this.store!.record('role', `switchover requested at input ${sent}: handing the primary role to the partner`);
    return { board: this.board.name, handedOverAt: sent };
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
        return (await import('../hw/inventory.js')).readInventory();
      case 'replication.status':
        return { board: this.board.name, role: this.ha?.currentRole ?? 'STANDALONE', replication: this.replicationStatus() };
      case 'clone':
        return { board: this.board.name, clone: await this.requirePrimaryReplication('clone').clone() };
      case 'switchover':
        return this.switchover();
      case 'guest.upgrade':
        if (args.commit === true) return this.commitGuestUpgrade();
        if (args.rollback === true) return this.rollbackGuestUpgrade();
        if (typeof args.guestFile !== 'string' || !args.guestFile) throw new UsError('US_ERR_CONTROL', 'guest.upgrade: guestFile (a guest descriptor) is required');
        return this.upgradeGuest(args.guestFile, args.hold === true);
      case 'upgrade.rolling': {
        if (!this.rolling) throw new UsError('US_ERR_ROLE', `board ${this.board.name} has no partner on an Ethernet link: nothing to roll over`);
        const num = (v: unknown, d: number) => (v === undefined ? d : Number(v));
        const timeoutMs = num(args.timeoutMs, DEFAULT_ROLLING.timeoutMs);
        const stableMs = num(args.stableMs, DEFAULT_ROLLING.stableMs);
        if (!(timeoutMs >= 1000 && stableMs >= 0)) throw new UsError('US_ERR_CONTROL', 'upgrade.rolling: timeoutMs ≥ 1000 and stableMs ≥ 0');
        if (typeof args.package !== 'string' || !args.package) throw new UsError('US_ERR_CONTROL', 'upgrade.rolling: package (a path on this board) expected');
        return { board: this.board.name, run: await this.rolling.start(args.package, { timeoutMs, stableMs }) };
      }
      case 'upgrade.rolling.status':
        return { board: this.board.name, run: this.rolling?.current ?? null };
      case 'checkpoint': {
        if (!this.checkpointer) throw new UsError('US_ERR_ROLE', `board ${this.board.name} does not replicate (no partner or no guest)`);
        return { board: this.board.name, checkpoint: await this.checkpointer.take() };
      }
      case 'guest.manage': {
        if (!this.host?.guestRunning) throw new UsError('US_ERR_NOT_RUNNING', `no guest is running on board ${this.board.name}`);
        const cmd = String(args.command ?? '').trim().toUpperCase();
        if (!MANAGEMENT_COMMANDS.has(cmd.split(' ')[0]!)) {
          throw new UsError('US_ERR_CONTROL', `unknown management command "${cmd}" (known: ${[...MANAGEMENT_COMMANDS].join(', ')})`);
        }
        return { reply: await this.host.supervisor.port.management(cmd, 5000) };
      }
      case 'guest.inject': {
        // Fault injection for tests: a request delivered to this board's guest only, never replicated.
        if (!this.host?.guestRunning) throw new UsError('US_ERR_NOT_RUNNING', `no guest is running on board ${this.board.name}`);
        if (args.lose !== undefined) {
          // The next n requests for this board's guest are lost on the way (as if the guest dropped them).
          const n = Number(args.lose);
          if (!Number.isInteger(n) || n < 1 || n > 1000) throw new UsError('US_ERR_CONTROL', 'guest.inject: lose must be an integer 1-1000');
          this.host.supervisor.port.loseNext = n;
          this.store!.record('fault', `the next ${n} requests for this board's guest will be lost on the way`);
          return { lose: n };
        }
        const payload = String(args.payload ?? '');
        if (!payload || payload.length > 200) throw new UsError('US_ERR_CONTROL', 'guest.inject: payload of 1-200 characters');
        this.host.supervisor.port.deliver({ kind: 'request', clientPort: 65000, payload: Buffer.from(payload) });
        this.store!.record('fault', `injected "${payload}" into this board's guest only`);
        return { injected: payload };
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
