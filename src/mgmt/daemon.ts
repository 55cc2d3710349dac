/**
 * understudyd: the controller of one board. Holds the board lock and the store, composes the HA
 * layer (when the profile pairs the board with a partner), the hosted guest and its pair
 * (src/pair/: what the board does in each role), and serves local control requests, the serial
 * console and metrics. One per board (pid-file lock). Startup is ordered so a failure leaves nothing
 * half-started: lock, store, control socket and console, then (`serve`) the guest's preflight, HA or
 * the guest. A configuration error in that last part, on a board with a console, leaves the console
 * and the control socket up and nothing else (role CONFIG-ERROR, not-serving.ts) until a retry.
 */
import { isIP } from 'node:net';
import { join } from 'node:path';
import { makeParentDirs } from '../core/dirs.js';
import { mkdirSync, chmodSync } from 'node:fs';
import type { BoardProfile } from '../config/board-profile.js';
import { loadGuestDescriptor, type GuestDescriptor } from '../config/guest-descriptor.js';
import { UsError } from '../core/errors.js';
import { readKeyFile } from '../core/key-file.js';
import type { Logger } from '../core/log.js';
import { releaseAddress } from '../hw/netaddr.js';
import { HaController } from '../ha/ha-controller.js';
import { GuestHost } from '../replication/guest-host.js';
import { allowUnprivilegedUserfaultfd } from '../hw/hypervisor/userfaultfd.js';
import { ReplicationManager } from '../replication/manager.js';
import { Checkpointer } from '../replication/checkpoint.js';
import { PoisonRecovery } from '../replication/poison.js';
import { Quarantine } from '../store/quarantine.js';
import { quarantineCommands, raisePoisonAlarm, syncPoisonAlarms } from './quarantine-control.js';
import { GUEST_HANG_FALLBACK_MS } from '../guest/supervisor.js';
import { PartnerRejections } from '../replication/rejections.js';
import { upgradeSetupFor } from '../upgrade/board-setup.js';
import { cleanUpgradeLeftovers } from '../upgrade/leftovers.js';
import { Store } from '../store/journal.js';
import { AlarmList, toIetfAlarms } from '../store/alarms.js';
import { feedAlarms } from './alarm-feeds.js';
import { watchFirmwareTrial } from './trial-alarm.js';
import { SnmpNotifier } from './snmp-notifier.js';
import { PairController } from '../pair/controller.js';
import { startFieldUpgrade, type FieldUpgrade } from '../pair/field-upgrade.js';
import { restoreGuestDescriptor } from '../pair/guest-upgrade.js';
import { legacyPartnerChannels } from '../replication/legacy-channel.js';
import { partnerChannelRejections } from '../replication/secure-channel.js';
import { journalChannelRejections, journalLegacyChannels } from './channel-rejections.js';
import { acquireBoardLock } from './lock.js';
import { startManagement, type Management } from './management.js';
import { CONFIG_ERROR_ROLE, assertAnsweredWhileNotServing, consoleNotice, isConfigError, journalGuestStateRefused, journalNotServing, reloadConfig, retryProfile, type ConfigErrorState } from './not-serving.js';
import { EventLoopDelay, memoryMb, raiseOwnPriority } from './process-info.js';
import { serveControl, type ControlServer } from './ipc.js';
import { controlSocketPath } from './paths.js';

/** A board's name as a partner (the power controller's and Pacemaker's node name). */
const BOARD_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Bound on each step of an orderly stop that waits on the partner or on work in flight (stopStep). */
const STOP_STEP_MS = 10000;

type Command = (args: Record<string, unknown>) => unknown;

export class Daemon {
  host?: GuestHost;
  guest?: GuestDescriptor;
  /** Set while only the console and the control socket run (role CONFIG-ERROR). */
  configError?: ConfigErrorState;
  ha?: HaController;
  store?: Store;
  /** The board's alarm list (docs/alarms.md): fed by HA, the guest, replication, the console and the limit checks. */
  alarms?: AlarmList;
  pair?: PairController;
  private snmp?: SnmpNotifier;
  private unfeedAlarms?: () => void;
  /** Stops looking for a firmware trial that did not commit (trial-alarm.ts). */
  private unwatchTrial?: () => void;
  private replication?: ReplicationManager;
  private checkpointer?: Checkpointer;
  private recovery?: PoisonRecovery;
  /** The pair's quarantine of poison inputs (docs/poison.md). */
  quarantine?: Quarantine;
  private fieldUpgrade?: FieldUpgrade;
  private control?: ControlServer;
  private management?: Management;
  private releaseLock?: () => void;
  private unjournalRejections?: () => void;
  /** Stops following the partner's heartbeat version for the previous firmware's channels (and turns them off). */
  private unfollowLegacy?: () => void;
  private readonly startedAt = Date.now();
  /** How late this process's event loop runs (inputs, heartbeats and ACKs all wait for it). */
  private readonly loopDelay = new EventLoopDelay();
  private stopping?: Promise<void>;
  /** Messages refused from the partner, every channel (the replicator's when a guest is hosted). */
  private rejections = new PartnerRejections();

  /** Set aside the guest's state disk before the next boot (the operator's --start-empty); one-shot. */
  private startEmpty: boolean;

  constructor(public board: BoardProfile, private readonly files: { board: string; guest?: string }, readonly log: Logger, o: { startEmpty?: boolean } = {}) {
    this.startEmpty = o.startEmpty ?? false;
  }

  async start(): Promise<void> {
    makeParentDirs(this.board.storageDir);
    mkdirSync(this.board.storageDir, { recursive: true, mode: 0o700 });
    chmodSync(this.board.storageDir, 0o700);
    this.releaseLock = acquireBoardLock(join(this.board.storageDir, 'understudyd.pid'), this.board.name);
    await raiseOwnPriority(this.log);
    try {
      const { board } = this;
      const store = (this.store = new Store(board.storageDir));
      this.alarms = new AlarmList(store, { board: board.name });
      this.cleanLeftovers(store);
      this.unwatchTrial = watchFirmwareTrial(board, this.alarms, store).stop;
      this.control = await serveControl(controlSocketPath(board), (cmd, args) => this.handle(cmd, args));
      this.management = await startManagement({
        board, store, alarms: this.alarms, log: this.log,
        guestConsole: () => ({ socket: this.host?.guestRunning ? this.host.supervisor.paths.consoleSocket : undefined, log: this.host?.supervisor.paths.consoleLog }),
        notice: () => {
          if (this.configError) return consoleNotice(this.configError);
          // Poison inputs in quarantine: shown at every login until released (docs/poison.md).
          const n = this.quarantine?.activeCount ?? 0;
          return n ? `${n} poison input${n === 1 ? '' : 's'} in quarantine (answered ERR POISON, never given to the guest): \`quarantine list\`` : undefined;
        },
        scrape: async () => {
          const st = (await this.status()) as Record<string, any>;
          return { board: board.name, uptimeS: st.uptimeS, role: st.role, ha: this.ha ? await this.ha.status() : undefined, guest: st.guest, endpoint: st.endpoint,
            replication: this.host?.replicator.status() ?? null, failovers: this.pair?.failovers ?? 0, inputLosses: this.pair?.protection.lossWatch?.losses,
            channelRejections: partnerChannelRejections.snapshot(), legacyChannels: legacyPartnerChannels.status(), partnerMessages: this.rejections.status(),
            eventLoopDelay: this.loopDelay.status(),
            alarmList: { alarms: this.alarms!.list({ activeOnly: true }), notifications: this.snmp?.status() } };
        },
      });
      await this.serve();
    } catch (e) {
      if ((e as UsError).code === 'US_ERR_GUEST_STATE') journalGuestStateRefused(e, this.store);
      if (this.board.console && this.management && isConfigError(e)) return this.notServing(e);
      await this.stop();
      throw e;
    }
    this.log.info({ board: this.board.name, guest: this.guest?.name ?? null, paired: !!this.board.ha }, 'controller running');
  }

  /** Everything that serves: the guest (from its descriptor) and, with a partner, HA and the pair. */
  private async serve(): Promise<void> {
    const { board, store } = this as { board: BoardProfile; store: Store };
    this.guest = this.files.guest ? loadGuestDescriptor(this.files.guest) : undefined;
    const host = (this.host = this.guest ? new GuestHost(board, this.guest, this.log) : undefined);
    // One account of refused partner messages for every channel; it survives a CONFIG-ERROR retry.
    if (host) this.rejections = host.replicator.rejections;
    this.rejections.setSinks({ journal: (m, detail) => store.record('partner-message', m, detail), log: this.log.child({ component: 'partner-messages' }) });
    host?.supervisor.preflight();
    // SNMP first: a pass phrase file that cannot be read is a configuration error like any other.
    if (board.snmp) this.snmp = new SnmpNotifier(board, this.alarms!, this.log.child({ component: 'snmp' }));
    if (host && this.startEmpty) {
      this.startEmpty = false;
      const aside = host.supervisor.setStateDiskAside();
      store.record('guest', aside
        ? `operator chose to start the guest empty: its state disk was set aside as ${aside} (kept, not deleted)`
        : 'operator chose to start the guest empty: there was no state disk to set aside', { aside: aside ?? null });
    }
    if (host) restoreGuestDescriptor(host.supervisor, store);
    if (board.ha) {
      if (!this.unjournalRejections) {
        const log = this.log.child({ component: 'partner-channel' });
        const unjournal = [journalChannelRejections(store, log), journalLegacyChannels(store, log)];
        this.unjournalRejections = () => { for (const u of unjournal) u(); };
      }
      // A service address left on our interface by an earlier run is not ours until we are primary.
      if (board.service.interface) await releaseAddress(board.service.interface, board.service.address, board.service.prefixLength);
      if (host && board.partner?.ethernet) {
        this.replication = new ReplicationManager(board, readKeyFile(board.ha.keyFile), host.supervisor, host.replicator, store, this.log.child({ component: 'replication' }));
        this.replication.snapshotClones = board.partner.snapshotClones;
        if (board.partner.snapshotClones && board.qemuUser !== 'root') {
          const u = allowUnprivilegedUserfaultfd();
          if (u.changed) store.record('clone', `vm.unprivileged_userfaultfd set to 1: QEMU's user (${board.qemuUser}) tracks the guest's writes during a snapshot clone (partner.snapshotClones)`);
          else if (u.error) store.record('clone', `vm.unprivileged_userfaultfd could not be set (${u.error}): clones stop the guest's inputs for the whole copy`);
        }
        const cp = (this.checkpointer = new Checkpointer(board.storageDir, store, host.supervisor, host.replicator, this.log.child({ component: 'checkpoint' })));
        cp.maxLoggedInputs = board.input.inputLogMaxInputs;
        host.replicator.setInputLog((s) => cp.logInput(s), () => cp.flushLog());
        this.quarantine ??= new Quarantine(store);
        this.recovery = new PoisonRecovery({
          checkpoints: cp, supervisor: host.supervisor, replicator: host.replicator, log: this.log.child({ component: 'recovery' }),
          hangMs: GUEST_HANG_FALLBACK_MS, onStep: (what) => store.record('recovery', what),
        });
      }
      const ha = (this.ha = new HaController(board, store, this.log.child({ component: 'ha' }), { alarms: this.alarms }));
      // The previous firmware's partner channels only while the partner is heard only in heartbeat version 1 or 2.
      this.unfollowLegacy = legacyPartnerChannels.follow(ha.membership);
      if (host) {
        const pair = (this.pair = new PairController({ board, ha, host, clones: this.replication, checkpoints: this.checkpointer, recovery: this.recovery, quarantine: this.quarantine, journal: store, log: this.log.child({ component: 'pair' }) }));
        if (this.replication) this.replication.admitClone = (stage) => pair.admitClone(stage);
        const alarms = this.alarms;
        if (alarms && this.quarantine) {
          const q = this.quarantine;
          pair.poison.onQuarantined = (e) => { raisePoisonAlarm(alarms, e); };
          pair.poison.onMerged = () => { syncPoisonAlarms(alarms, q); };
          syncPoisonAlarms(alarms, q);
        }
        await this.replication?.listen();
        pair.start();
      }
      this.unfeedAlarms = feedAlarms(board, this.alarms!, {
        supervisor: host?.supervisor, replicator: host?.replicator, lossWatch: this.pair?.protection.lossWatch, clones: this.replication,
        role: () => this.role,
      });
      await ha.start({
        healthy: () => this.pair?.healthy() ?? true,
        guestHealth: () => (host ? host.supervisor.currentState : 'none'),
        // A pair without a guest (the chassis' --guest none) has no state to hold: a hung or silent partner is fenced as always.
        // The checkpoint and its log are read only when no copy runs (a count of the inputs since it).
        ...(host ? {
          holdsState: () => !host.replicator.stateGap && ((host.replicator.protectedNow && host.supervisor.currentState === 'running')
            || (this.checkpointer?.rebuilds(host.replicator.lastSeq) ?? false)),
        } : {}),
      });
      if (board.partner?.ethernet) {
        this.fieldUpgrade = startFieldUpgrade({ board, ha, journal: store, host, pair: this.pair, rejections: this.rejections, stopping: () => !!this.stopping });
      }
    } else {
      this.unfeedAlarms = feedAlarms(board, this.alarms!, { supervisor: host?.supervisor, role: () => this.role });
      if (host) await host.startStandalone();
    }
  }

  /** Stops what `serve` started (all of it, or the part it got to). */
  private async stopServing(): Promise<void> {
    await this.stopStep('the upgrade channel', this.fieldUpgrade?.close());
    await this.ha?.stop().catch((e) => this.log.error({ err: (e as Error).message }, 'HA stop failed'));
    this.unfollowLegacy?.();
    this.unfollowLegacy = undefined;
    await this.stopStep('the pair\'s role work', this.pair?.stop());
    await this.replication?.close().catch(() => undefined);
    await this.host?.stop().catch((e) => this.log.error({ err: (e as Error).message }, 'guest stop failed'));
    this.unjournalRejections?.();
    this.unjournalRejections = undefined;
    this.unfeedAlarms?.();
    this.unfeedAlarms = undefined;
    // What changed while stopping (links down, the guest stopped) still reaches the managers.
    await this.snmp?.flush().catch(() => undefined);
    this.snmp?.close();
    this.snmp = undefined;
    this.fieldUpgrade = this.ha = this.pair = this.replication = this.checkpointer = this.recovery = this.host = undefined;
  }

  /**
   * One step of an orderly stop, bounded: a step that has not ended within STOP_STEP_MS is logged
   * and journaled by name, and the stop goes on (the guest is stopped further on either way). An
   * orderly stop must end: a Pacemaker stop, a rolling upgrade's reboot wait for it.
   */
  private async stopStep(what: string, p: Promise<unknown> | undefined): Promise<void> {
    if (!p) return;
    let timer: NodeJS.Timeout | undefined;
    const late = await Promise.race([p.then(() => false, () => false), new Promise<boolean>((r) => { timer = setTimeout(() => r(true), STOP_STEP_MS); })]);
    clearTimeout(timer);
    if (late) {
      this.log.error({ step: what, waitedMs: STOP_STEP_MS }, 'stop: a step did not end; going on');
      this.store?.record('controller', `stop: ${what} did not end within ${STOP_STEP_MS} ms; stopping without it`);
    }
  }

  /** A configuration error: only the console and the control socket stay, journaled and shown. */
  private async notServing(e: unknown): Promise<void> {
    await this.stopServing();
    this.configError = journalNotServing(e, this.store, this.log);
  }

  /** Out of CONFIG-ERROR: re-reads the profile (and the descriptor) and starts serving, or stays. */
  async retryStart(o: { startEmpty?: boolean } = {}): Promise<{ board: string; role: string }> {
    if (!this.configError) throw new UsError('US_ERR_ROLE', `board ${this.board.name} is serving (${this.role}): nothing to retry`);
    if (o.startEmpty) this.startEmpty = true;
    try {
      this.board = retryProfile(this.board, this.files.board);
      this.configError = undefined;
      await this.serve();
    } catch (e) {
      if ((e as UsError).code === 'US_ERR_GUEST_STATE') journalGuestStateRefused(e, this.store);
      await this.notServing(e);
      throw e;
    }
    this.store?.record('config', `configuration fixed: serving (${this.role})`);
    this.log.info({ role: this.role }, 'configuration fixed: serving');
    return { board: this.board.name, role: this.role };
  }

  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.stopServing();
      await this.management?.close();
      this.control?.close();
      this.unwatchTrial?.();
      this.checkpointer?.flushLog();
      this.store?.close();
      this.releaseLock?.();
      this.log.info('controller stopped');
    })();
    return this.stopping;
  }

  /** SIGHUP: a retry while not serving; else the configuration re-read and compared (reloadConfig). */
  reload(): void {
    if (this.configError) void this.retryStart().catch(() => undefined); // journaled either way
    else reloadConfig(this, this.files);
  }

  async status(): Promise<Record<string, unknown>> {
    const st = this.host ? await this.host.status() : undefined;
    return {
      board: this.board.name, pid: process.pid, uptimeS: Math.round((Date.now() - this.startedAt) / 1000),
      service: this.board.service, serving: this.host?.isServing ?? false, role: this.role, configError: this.configError ?? null,
      partner: this.ha ? this.ha.membership.partnerView : null,
      guest: st?.guest ?? null, endpoint: st?.endpoint ?? {}, replication: this.replicationStatus(),
      partnerMessages: this.rejections.status(),
      alarms: this.alarmSummary(),
      rssMb: Math.round(process.memoryUsage().rss / 1048576), memoryMb: memoryMb(), eventLoopDelay: this.loopDelay.status(),
    };
  }

  /** For `understudy status`: active alarms by severity, and the SNMP notifications by manager. */
  private alarmSummary(): Record<string, unknown> | null {
    if (!this.alarms) return null;
    return { active: this.alarms.list({ activeOnly: true }).length, bySeverity: this.alarms.activeBySeverity(), notifications: this.snmp?.status() ?? [] };
  }

  /** `understudy alarms`: active and recent alarms in the ietf-alarms shape, and the notifications. */
  private alarmList(a: Record<string, unknown>): Record<string, unknown> {
    const list = this.alarms!.list({ activeOnly: a.active === true });
    return { board: this.board.name, ...toIetfAlarms(list), summary: this.alarmSummary() };
  }

  /** Start-up: what an interrupted push or install left (upgrade/leftovers.ts), removed and journaled. */
  private cleanLeftovers(store: Store): void {
    try {
      const r = cleanUpgradeLeftovers(upgradeSetupFor(this.board));
      if (r.removed.length) store.record('upgrade', `removed what an interrupted push or install left: ${r.removed.join(', ')}`, { removed: r.removed });
      if (r.skipped) this.log.info({ reason: r.skipped }, 'upgrade leftovers not looked at');
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'could not clean upgrade leftovers');
    }
  }

  private get role(): string {
    return this.configError ? CONFIG_ERROR_ROLE : this.ha?.currentRole ?? 'STANDALONE';
  }

  private replicationStatus(): Record<string, unknown> | null {
    const st = this.pair ? this.pair.replicationStatus() : this.host ? { ...this.host.replicator.status(), cloneInProgress: false, failovers: 0 } : null;
    // The partner channels' rejections (inputs, migration, upgrade), by purpose and reason.
    return st && { ...st, channelRejections: partnerChannelRejections.snapshot(), channelRejectionsTotal: partnerChannelRejections.total,
      lastChannelRejection: partnerChannelRejections.last ?? null, legacyChannels: legacyPartnerChannels.status() };
  }

  private guestHost(): GuestHost {
    if (!this.host) throw new UsError('US_ERR_NOT_RUNNING', `no guest is running on board ${this.board.name}`);
    return this.host;
  }

  private requirePair(): PairController {
    if (!this.pair || !this.replication) throw new UsError('US_ERR_ROLE', `board ${this.board.name} does not replicate (no partner or no guest)`);
    return this.pair;
  }

  private quarantineHandlers?: ReturnType<typeof quarantineCommands>;
  /** `understudy quarantine …` (src/mgmt/quarantine-control.ts), made at the first use. */
  private quarantineControl(): ReturnType<typeof quarantineCommands> {
    return (this.quarantineHandlers ??= quarantineCommands({
      board: this.board.name, quarantine: () => this.quarantine, store: this.store!, alarms: this.alarms,
      onReleased: () => this.pair?.poison.sendToPartner(),
    }));
  }

  /** The control socket's commands (src/mgmt/ipc.ts), each mapped onto the part of the board that does it. */
  private readonly commands: Record<string, Command> = {
    ping: () => ({ board: this.board.name, pid: process.pid, role: this.role }),
    status: () => this.status(),
    role: () => (this.ha ? this.ha.status() : { board: this.board.name, role: this.role, ...(this.configError ? { configError: this.configError } : {}) }),
    'link.status': async () => {
      if (!this.ha) throw new UsError('US_ERR_ROLE', `board ${this.board.name} has no partner configured (no ha section in ${this.board.sourceFile})`);
      const st = await this.ha.status();
      return { board: this.board.name, links: st.links, partner: st.partner, alarms: st.alarms };
    },
    'start-alone': () => {
      if (!this.ha) throw new UsError('US_ERR_ROLE', `board ${this.board.name} has no partner configured (no ha section in ${this.board.sourceFile}): it always serves alone`);
      return this.ha.startAlone();
    },
    'partner.adopt': (a) => {
      if (!this.ha) throw new UsError('US_ERR_ROLE', `board ${this.board.name} has no partner configured (no ha section in ${this.board.sourceFile})`);
      const name = typeof a.name === 'string' ? a.name : '';
      const address = typeof a.address === 'string' ? a.address : '';
      if (!BOARD_NAME.test(name)) throw new UsError('US_ERR_CONTROL', `partner.adopt: name: expected a board name (letters, digits, . _ -), got ${JSON.stringify(a.name ?? null)}`);
      if (isIP(address) !== 4) throw new UsError('US_ERR_CONTROL', `partner.adopt: address: expected the partner's IPv4 address on the partner link, got ${JSON.stringify(a.address ?? null)}`);
      return this.ha.adoptPartner(name, address);
    },
    events: (a) => {
      const limit = Number(a.limit ?? 50);
      const sinceId = Number(a.sinceId ?? 0);
      if (!Number.isFinite(limit) || !Number.isFinite(sinceId)) throw new UsError('US_ERR_CONTROL', 'events: limit and sinceId must be numbers');
      return { board: this.board.name, events: this.store!.events({ limit, kind: a.kind === undefined ? undefined : String(a.kind), sinceId }) };
    },
    alarms: (a) => this.alarmList(a),
    'quarantine.list': (a) => this.quarantineControl()['quarantine.list']!(a),
    'quarantine.show': (a) => this.quarantineControl()['quarantine.show']!(a),
    'quarantine.release': (a) => this.quarantineControl()['quarantine.release']!(a),
    'board.info': async () => (await import('../hw/inventory.js')).readInventory(),
    'replication.status': () => ({ board: this.board.name, role: this.role, replication: this.replicationStatus() }),
    clone: async (a) => {
      const copy = (a as { copy?: unknown }).copy;
      if (copy !== undefined && copy !== 'snapshot' && copy !== 'plain') throw new UsError('US_ERR_CONTROL', `clone: copy must be "snapshot" or "plain", not ${JSON.stringify(copy)}`);
      return { board: this.board.name, clone: await this.requirePair().clone({ copy }) };
    },
    switchover: () => this.requirePair().switchover.handOver(),
    'guest.upgrade': async (a) => {
      const up = this.requirePair().upgrade;
      if (a.commit === true) return up.commit();
      if (a.rollback === true) return up.rollback();
      if (typeof a.package === 'string' && a.package) {
        // A guest package: unpacked here and on the partner first (field-upgrade.ts), then its descriptor.
        if (!this.fieldUpgrade) throw new UsError('US_ERR_ROLE', `guest upgrade: board ${this.board.name} has no partner on an Ethernet link to send the package over`);
        return up.run(await this.fieldUpgrade.prepareGuestPackage(a.package), a.hold === true);
      }
      if (typeof a.guestFile !== 'string' || !a.guestFile) throw new UsError('US_ERR_CONTROL', 'guest.upgrade: guestFile (a guest descriptor) or package (a guest package) is required');
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
    'guest.inject': async (a) => {
      const r = await this.guestHost().inject(a);
      this.store!.record('fault', r.journal);
      return r.result;
    },
    'guest.stop': () => {
      setImmediate(() => void this.stop().then(() => process.exit(0)));
      return { stopping: true };
    },
    'start.retry': (args) => this.retryStart({ startEmpty: args.startEmpty === true }),
  };

  private async handle(command: string, args: Record<string, unknown>): Promise<unknown> {
    const run = Object.hasOwn(this.commands, command) ? this.commands[command] : undefined;
    if (!run) throw new UsError('US_ERR_CONTROL', `unknown command "${command}"`);
    if (this.configError) assertAnsweredWhileNotServing(command, this.board.name, this.configError);
    return run(args);
  }
}
