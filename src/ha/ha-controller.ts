/**
 * The HA layer of one board: membership over every partner link (in its own process, see
 * membership-process.ts), the role state machine, fencing before promotion, and the hardware watchdog.
 * Carries out what src/ha/roles.ts decides and journals every transition, link change and fence with
 * its cause. Emits 'role' for the layers above (the guest and, later, replication) to follow; it
 * never touches the guest itself.
 */
import { EventEmitter } from 'node:events';
import { createHistogram } from 'node:perf_hooks';
import type { BoardProfile } from '../config/board-profile.js';
import { systemClock, type Clock, type TimerHandle } from '../core/clock.js';
import { UsError } from '../core/errors.js';
import { readKeyFile } from '../core/key-file.js';
import type { Logger } from '../core/log.js';
import { fencingFor, type FencingDevice } from '../hw/fencing/fencing.js';
import type { Store } from '../store/journal.js';
import type { GuestHealth, Heartbeat, Role } from './frame.js';
import type { LinkState, PartnerView } from './membership.js';
import { MembershipProcess, type MembershipSnapshot } from './membership-process.js';
import { isPreferred, nextRole, type RoleEvent } from './roles.js';

export interface RoleChange {
  from: Role;
  to: Role;
  cause: string;
  at: string;
}

export interface HaStatus {
  board: string;
  role: Role;
  since: string;
  generation: number;
  preferred: boolean | null;
  partner: PartnerView;
  links: LinkState[];
  alarms: string[];
  fencing: { method: string; attempts: number; failures: number; lastError?: string };
  watchdog: MembershipSnapshot['watchdog'];
  membershipProcess: MembershipSnapshot['thread'];
  loopDelayMs: { membership: MembershipSnapshot['loopDelayMs']; main: MembershipSnapshot['loopDelayMs'] };
  /** This controller's main loop as its membership process sees it: alive gaps, hang verdicts. */
  controller?: MembershipSnapshot['controller'];
  lastTransition?: RoleChange;
}

export interface HaControllerOptions {
  /**
   * Time and timers of the startup wait, the fence delay and retry, the health tick and the yield
   * after a switchover. Default: the system clock.
   */
  clock?: Clock;
}

export declare interface HaController {
  on(ev: 'role', fn: (c: RoleChange) => void): this;
}

/** Period of the guest-health poll (and of the main thread's loop-delay sample). */
const HEALTH_TICK_MS = 100;
/** Retry period of a failed fence while the partner stays silent. */
const FENCE_RETRY_MS = 1000;

export class HaController extends EventEmitter {
  readonly membership: MembershipProcess;
  private role: Role = 'STARTING';
  private since = Date.now();
  private readonly fencing: FencingDevice;
  private startupTimer?: TimerHandle;
  private fenceRetry?: TimerHandle;
  private healthTimer?: TimerHandle;
  private readonly clock: Clock;
  private guestHealth: () => GuestHealth = () => 'none';
  private readonly generation: number;
  private fenceStats = { attempts: 0, failures: 0, lastError: undefined as string | undefined };
  private lastTransition?: RoleChange;
  private fenceInFlight = false;
  private fenceSent = false;
  private lastGuest: GuestHealth = 'none';
  private watchdogStopped?: string;
  /** After a switchover this board does not take the primary role back on a tie until then. */
  private yieldUntil = 0;
  /**
   * Event-loop delay of the controller's main thread, ns: the lateness of the 100 ms health tick,
   * a sample every 100 ms (a 1 ms monitorEventLoopDelay timer would wake an idle board 1000 times a second).
   */
  private readonly mainLoopDelay = createHistogram();

  constructor(readonly board: BoardProfile, private readonly store: Store, private readonly log: Logger, opts: HaControllerOptions = {}) {
    super();
    this.clock = opts.clock ?? systemClock;
    const ha = board.ha;
    if (!ha || !board.partner) throw new UsError('US_ERR_CONFIG', `board profile ${board.sourceFile}: ha and partner are needed for the pair`);
    const key = readKeyFile(ha.keyFile);
    this.generation = store.nextGeneration();
    this.membership = new MembershipProcess({
      self: board.name, priority: ha.priority, generation: this.generation, keyHex: key.toString('hex'),
      intervalMs: ha.intervalMs, linkTimeoutMs: ha.linkTimeoutMs, deadtimeMs: ha.deadtimeMs,
      ethernet: board.partner.ethernet,
      serial: board.partner.serial ? { path: board.partner.serial.device, baudRate: board.partner.serial.baud } : undefined,
      watchdog: board.watchdog,
      rtPriority: ha.rtPriority,
      controllerPid: process.pid,
      controllerHangMs: ha.controllerHangMs,
    });
    this.fencing = fencingFor(board);
    this.membership.on('link', (link, up, cause) => {
      this.store.record('link', `${link} link ${up ? 'up' : 'DOWN'}: ${cause}`, { link, up });
      (up ? this.log.info.bind(this.log) : this.log.warn.bind(this.log))({ link, up, cause }, `partner link ${link} ${up ? 'up' : 'down'}`);
    });
    this.membership.on('partner-alive', (hb) => {
      this.store.record('partner', `partner ${hb.sender} heard (role ${hb.role}, generation ${hb.generation})`, { ...hb });
      this.onPartnerHeartbeat(hb);
    });
    this.membership.on('partner-update', (hb) => this.onPartnerHeartbeat(hb));
    this.membership.on('partner-dead', (silentMs) => {
      this.store.record('partner', `partner silent on every link for ${silentMs.toFixed(1)} ms: declared dead`, { silentMs });
      this.log.warn({ silentMs }, 'partner declared dead');
      this.fire('partner-dead');
    });
    this.membership.on('watchdog-stopped', (reason) => {
      this.watchdogStopped = reason;
      this.store.record('watchdog', `watchdog kicks stopped: ${reason}; the board will be reset`, { reason });
      this.log.error({ reason }, 'watchdog kicks stopped: the board will be reset');
    });
    this.membership.on('controller-health', (health, silentMs, reason) => {
      // Read only once this controller runs again: its partner has fenced it by then, or the hang
      // was shorter than the fence took (then this line explains the fence).
      this.store.record('controller', health === 'hung'
        ? `this controller was reported hung in its heartbeats: ${reason ?? ''}`
        : `this controller answers its membership process again (after ${silentMs} ms)`, { health, silentMs, reason });
      this.log[health === 'hung' ? 'error' : 'warn']({ health, silentMs, reason }, 'controller health as its membership process reports it');
    });
    this.membership.on('exit', (code) => {
      // Without its membership process the board is blind and its watchdog unkicked: it will be reset.
      this.store.record('watchdog', `membership process exited (${code}): the board will be reset by its watchdog`);
      this.log.fatal({ code }, 'membership process exited');
    });
  }

  /**
   * `healthy` is polled; when it turns false the watchdog kicks stop and the board's hardware resets
   * it. `guestHealth` goes into the heartbeats.
   */
  async start(opts: { healthy?: () => boolean; guestHealth?: () => GuestHealth } = {}): Promise<void> {
    if (opts.guestHealth) this.guestHealth = opts.guestHealth;
    this.store.record('role', `board ${this.board.name} starting (generation ${this.generation})`, { generation: this.generation });
    try {
      await this.membership.start();
    } catch (e) {
      throw new UsError('US_ERR_LINK', `membership could not start: ${(e as Error).message}`);
    }
    const healthy = opts.healthy ?? (() => true);
    let lastTick = this.clock.now();
    this.healthTimer = this.clock.setInterval(() => {
      const now = this.clock.now();
      this.mainLoopDelay.record(Math.max(1, Math.round((now - lastTick - HEALTH_TICK_MS) * 1e6)));
      lastTick = now;
      if (!healthy()) this.membership.stopKicking('guest supervision lost');
      const g = this.guestHealth();
      if (g !== this.lastGuest) { this.lastGuest = g; this.membership.setLocal(this.role, g); }
    }, HEALTH_TICK_MS);
    this.membership.setLocal(this.role, this.guestHealth());
    this.startupTimer = this.clock.setTimeout(() => this.fire('startup-timeout'), this.board.ha!.startupWaitMs);
  }

  get currentRole(): Role {
    return this.role;
  }

  /** Planned hand-over of the primary role: this board steps down and will not take it back for `yieldMs`. */
  yieldPrimary(yieldMs = 5000): boolean {
    if (this.role !== 'PRIMARY') return false;
    this.yieldUntil = this.clock.now() + yieldMs;
    return this.fire('switchover');
  }

  /** The partner handed the primary role to this board. */
  takeOver(): boolean {
    return this.fire('takeover', 'the partner handed over');
  }

  private preferredOver(partner: Heartbeat | undefined): boolean | null {
    return partner ? isPreferred({ name: this.board.name, priority: this.board.ha!.priority }, { name: partner.sender, priority: partner.priority }) : null;
  }

  /** Feeds an event to the state machine (also used by operators: switchover, takeover). */
  fire(event: RoleEvent, cause?: string): boolean {
    const t = nextRole(this.role, event, {
      preferred: this.preferredOver(this.membership.partnerView.heartbeat) ?? true,
      yielding: this.clock.now() < this.yieldUntil,
      fenceSent: this.fenceInFlight && this.fenceSent,
    });
    if (!t) return false;
    this.transition(t.to, cause ? `${t.cause} (${cause})` : t.cause, event);
    return true;
  }

  private onPartnerHeartbeat(hb: Heartbeat): void {
    // A hung controller's role claim is stale (its membership process repeats the last one).
    if (hb.health === 'hung') {
      this.fire('partner-hung');
      return;
    }
    const ev: RoleEvent | undefined = hb.role === 'PRIMARY' ? 'partner-primary'
      : hb.role === 'BACKUP' ? 'partner-backup'
      : hb.role === 'STARTING' || hb.role === 'FENCING' ? 'partner-starting'
      : hb.role === 'FAULT' ? 'partner-fault' : undefined;
    if (ev) this.fire(ev);
  }

  private transition(to: Role, cause: string, event: RoleEvent): void {
    const change: RoleChange = { from: this.role, to, cause, at: new Date().toISOString() };
    this.role = to;
    this.since = Date.now();
    this.lastTransition = change;
    this.clock.clearTimeout(this.startupTimer);
    this.membership.setLocal(to, this.guestHealth()); // tell the partner at once
    this.store.record('role.transition', `${change.from} -> ${to}: ${cause}`, { from: change.from, to, event });
    const level = to === 'FAULT' || cause.startsWith('FENCING FAILED') ? 'error' : 'info';
    this.log[level]({ from: change.from, to, event, cause }, `role ${change.from} -> ${to}`);
    this.emit('role', change);
    if (to === 'FENCING') void this.fencePartner();
  }

  private async fencePartner(): Promise<void> {
    if (this.fenceInFlight) return;
    this.fenceInFlight = true;
    const partner = this.membership.partnerView.heartbeat;
    const partnerName = partner?.sender ?? this.partnerNameGuess();
    try {
      // Only a board that its partner could be fencing at the same moment waits: a primary never
      // fences, so a backup fencing a primary that went silent goes at once.
      // Nor does a board whose partner's controller is hung: that controller fences nobody.
      const preferred = this.preferredOver(partner) ?? this.board.ha!.priority <= 100;
      if (!preferred && partner?.role !== 'PRIMARY' && partner?.health !== 'hung') {
        await this.clock.sleep(this.board.ha!.fenceDelayMs);
        if (this.role !== 'FENCING') return; // the partner came back
      }
      this.fenceStats.attempts++;
      const t0 = this.clock.now();
      this.fenceSent = true;
      await this.fencing.powerOff(partnerName);
      this.store.record('fence', `partner ${partnerName} powered off by ${this.fencing.method} in ${(this.clock.now() - t0).toFixed(1)} ms`, { partner: partnerName, method: this.fencing.method });
      this.fenceStats.lastError = undefined;
      this.membership.forgetPartner();
      if (this.role === 'FENCING') this.fire('fence-ok');
    } catch (e) {
      this.fenceStats.failures++;
      this.fenceStats.lastError = (e as Error).message;
      this.store.record('fence', `FENCING FAILED for ${partnerName}: ${(e as Error).message}`, { partner: partnerName, error: (e as Error).message });
      this.log.error({ err: (e as Error).message, partner: partnerName }, 'FENCING FAILED: this board will NOT promote');
      if (this.role === 'FENCING') this.fire('fence-failed', (e as Error).message);
      this.clock.clearTimeout(this.fenceRetry);
      this.fenceRetry = this.clock.setTimeout(() => {
        if (this.role !== 'BACKUP') return;
        const p = this.membership.partnerView;
        if (p.state !== 'alive') this.fire('partner-dead', 'retrying the fence');
        else if (p.heartbeat?.health === 'hung') this.fire('partner-hung', 'retrying the fence');
      }, FENCE_RETRY_MS);
    } finally {
      this.fenceInFlight = false;
      this.fenceSent = false;
    }
  }

  private partnerNameGuess(): string {
    // Before any heartbeat (startup-timeout) the partner's name follows the pair's naming
    // (…-a / …-b); the power controller refuses a name it does not know.
    const n = this.board.name;
    if (/-a$/.test(n)) return n.replace(/-a$/, '-b');
    if (/-b$/.test(n)) return n.replace(/-b$/, '-a');
    return 'partner';
  }

  async status(): Promise<HaStatus> {
    const alarms: string[] = [];
    // A membership process that is still starting (or stuck) must not make the role unreadable:
    // answer with what the controller knows and say so.
    const snap = await this.membership.snapshot().catch((e: Error): MembershipSnapshot => {
      alarms.push(`${e.message}: links and watchdog unknown`);
      return { links: [], partner: this.membership.partnerView, loopDelayMs: { p50: 0, p99: 0, max: 0 }, watchdog: null, thread: { tid: null, rtPriority: 0 }, sent: 0 };
    });
    for (const l of snap.links) if (!l.up) alarms.push(`partner link ${l.name} down`);
    if (snap.partner.state === 'dead') alarms.push('partner lost');
    if (this.fenceStats.lastError && this.role !== 'PRIMARY') alarms.push(`fencing failed: ${this.fenceStats.lastError}`);
    if (snap.watchdog && !snap.watchdog.kicking) alarms.push(`watchdog not kicked: ${snap.watchdog.stopReason ?? this.watchdogStopped ?? ''}`);
    return {
      board: this.board.name,
      role: this.role,
      since: new Date(this.since).toISOString(),
      generation: this.generation,
      preferred: this.preferredOver(snap.partner.heartbeat),
      partner: snap.partner,
      links: snap.links,
      alarms,
      fencing: { method: this.fencing.method, ...this.fenceStats },
      watchdog: snap.watchdog,
      membershipProcess: snap.thread,
      controller: snap.controller,
      loopDelayMs: { membership: snap.loopDelayMs, main: {
        p50: Math.round(this.mainLoopDelay.percentile(50) / 1e4) / 100,
        p99: Math.round(this.mainLoopDelay.percentile(99) / 1e4) / 100,
        max: Math.round(this.mainLoopDelay.max / 1e4) / 100,
      } },
      lastTransition: this.lastTransition,
    };
  }

  /** Orderly stop: announce STOPPING, stop heartbeats, magic-close the watchdog. */
  async stop(): Promise<void> {
    this.fire('stop');
    this.clock.clearTimeout(this.startupTimer);
    this.clock.clearTimeout(this.fenceRetry);
    this.clock.clearInterval(this.healthTimer);
    await this.membership.stop(true);
  }
}
