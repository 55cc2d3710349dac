/**
 * The HA layer of one board: membership over every partner link (in its own process, see
 * membership-process.ts), the role state machine, fencing before promotion, and the hardware watchdog.
 * Carries out what src/ha/roles.ts decides and journals every transition, link change and fence with
 * its cause. Emits 'role' for the layers above (the guest and, later, replication) to follow; it
 * never touches the guest itself.
 */
import { execFile } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createHistogram } from 'node:perf_hooks';
import { adoptPartnerInProfile, partnerNameOf, type BoardProfile } from '../config/board-profile.js';
import { systemClock, type Clock, type TimerHandle } from '../core/clock.js';
import { UsError } from '../core/errors.js';
import { readKeyFile } from '../core/key-file.js';
import type { Logger } from '../core/log.js';
import { fencingFor, type FenceAction, type FencingDevice } from '../hw/fencing/fencing.js';
import type { AlarmList } from '../store/alarms.js';
import type { Store } from '../store/journal.js';
import { FRAME_VERSION, type GuestHealth, type Heartbeat, type HeartbeatVersion, type Role } from './frame.js';
import { BootGenerations } from './generations.js';
import type { LinkState, PartnerGenerations, PartnerView } from './membership.js';
import { MembershipProcess, type MembershipSnapshot } from './membership-process.js';
import { DEFAULT_FENCE_CONFIRM_COMMAND, DEFAULT_QUORUM_COMMAND, QuorumWatch, type QuorumSource, type QuorumState, type QuorumStatus } from './quorum.js';
import { isPreferred, nextRole, type FenceOrder, type RoleContext, type RoleEvent } from './roles.js';

/** The priority a PRIMARY serving a lost state advertises: the least preferred a profile can say. */
export const LOST_STATE_PRIORITY = 255;

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
  /** What this board knows of its partner's boot generations, and the heartbeat version it sends. */
  partnerGenerations?: PartnerGenerations & { sendVersion: HeartbeatVersion };
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
  /** ha.manager pacemaker: corosync's quorum as read here; null for the pair alone. */
  quorum: QuorumStatus | null;
}

export interface HaControllerOptions {
  /**
   * Time and timers of the startup wait, the fence delays and retry, the health tick and the yield
   * after a switchover. Default: the system clock.
   */
  clock?: Clock;
  /** Wall-clock ms, for the durable fence count of the escalation (it outlives a restart). Default Date.now. */
  wallNow?: () => number;
  /** The board's alarm list: partner links, fencing, the partner left off, the watchdog (docs/alarms.md). */
  alarms?: AlarmList;
  /** ha.manager pacemaker: where corosync's quorum is read. Default: the profile's `ha.quorumCommand`. */
  quorum?: QuorumSource;
  /**
   * ha.manager pacemaker: tells the cluster this board fenced `partner` (resolves with what the
   * command printed, rejects with why it failed). Default: the profile's `ha.fenceConfirmCommand`.
   */
  confirmFence?: (partner: string) => Promise<string>;
}

/** Runs `command` with the partner's name appended (ha.fenceConfirmCommand), bounded. */
function runFenceConfirm(command: readonly string[]): (partner: string) => Promise<string> {
  return (partner) => new Promise((resolve, reject) => {
    execFile(command[0]!, [...command.slice(1), partner], { timeout: FENCE_CONFIRM_TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${command.join(' ')} ${partner}: ${(stderr || err.message).trim().split('\n').pop()}`));
      else resolve(stdout.trim());
    });
  });
}

/** Bound on the cluster's answer to a fence confirmation. */
const FENCE_CONFIRM_TIMEOUT_MS = 30000;

/** A fence ordered after a wait, and called off if the partner is heard again meanwhile. */
interface PendingFence {
  timer: TimerHandle;
  role: Role;
  partner: string;
  waitMs: number;
  /** FenceWait `quorum`: decided by corosync (checkQuorumFence); the timer only calls it off. */
  quorum?: boolean;
  /** Carries the fence out (with why it goes now). */
  go?: (why: string) => void;
}

/** A fence that succeeded: the partner is down (reset or off). `by` is the role this board fenced it from. */
export interface PartnerFenced { partner: string; outcome: string; by: Role }

export declare interface HaController {
  on(ev: 'role', fn: (c: RoleChange) => void): this;
  on(ev: 'partner-fenced', fn: (f: PartnerFenced) => void): this;
  /** ha.manager pacemaker: corosync's quorum changed (undefined: unknown). */
  on(ev: 'quorum', fn: (q: QuorumState | undefined) => void): this;
}

/** Period of the guest-health poll (and of the main thread's loop-delay sample). */
const HEALTH_TICK_MS = 100;
/** How long the fencing device may take to say whether a silent primary is powered (else: the priority delay runs its course). */
const POWER_STATE_MS = 250;
/** Retry period of a failed fence while the partner stays silent. */
const FENCE_RETRY_MS = 1000;
/** Bad-MAC frames (reported at most once a second) older than this no longer make a partner "heard". */
const BAD_MAC_RECENT_MS = 3000;
/** Events on which a board that is not PRIMARY would take over (held back on a side without quorum). */
const TAKEOVER_EVENTS: ReadonlySet<RoleEvent> = new Set(['partner-dead', 'partner-hung', 'partner-gone', 'partner-fault']);
/** How long an operator's start-alone waits for its fence. */
const START_ALONE_TIMEOUT_MS = 30000;
/**
 * A partner link's alarm is raised once the link has stayed down this long (and cleared as soon as
 * it is up again, if it was raised). The link's state, its journal entries and the pair's decisions
 * change at once; the operator's alarm list and SNMP managers not at every flap of a link whose
 * timeout is a few heartbeats (the serial link's 20 ms: on the loaded test machine, a flap every
 * couple of seconds, each a raise and a clear).
 */
export const LINK_ALARM_HOLD_MS = 1000;

export class HaController extends EventEmitter {
  readonly membership: MembershipProcess;
  private role: Role = 'STARTING';
  private since = Date.now();
  private readonly fencing: FencingDevice;
  private startupTimer?: TimerHandle;
  /** Once, ha.startupWaitMs after start: the link alarms of links never heard since (no change event says so). */
  private linkAlarmTimer?: TimerHandle;
  /** Links down but not yet for LINK_ALARM_HOLD_MS: their alarm is raised when the timer fires. */
  private readonly linkDownHeld = new Map<string, TimerHandle>();
  private fenceRetry?: TimerHandle;
  private healthTimer?: TimerHandle;
  private readonly clock: Clock;
  private readonly wallNow: () => number;
  private guestHealth: () => GuestHealth = () => 'none';
  private readonly generations: BootGenerations;
  private fenceStats = { attempts: 0, failures: 0, lastError: undefined as string | undefined };
  private lastTransition?: RoleChange;
  private fenceInFlight = false;
  /**
   * The partner's boot this board fenced last (its generation as last heard): frames of that boot
   * still on their way when it went down (seconds' worth may wait in a serial line's buffer) make
   * it "heard" once more, and their end a second silence; that boot is down already, so the
   * silence is not fenced again (the board would be reset while it boots, its return delayed).
   */
  private fencedBoot?: { partner: string; generation: number };
  private fenceSent = false;
  private lastGuest: GuestHealth = 'none';
  private watchdogStopped?: string;
  /** After a switchover this board does not take the primary role back on a tie until then. */
  private yieldUntil = 0;
  /** Frames with a bad MAC lately: when (clock), on which links, how many in this episode. */
  private badMac?: { at: number; links: string[]; frames: number };
  /** A partner heard only with a bad MAC has been journaled (once per episode). */
  private misconfiguredJournaled = false;
  /** A fence waiting out its delay (priority, fence delay, a primary's confirmation), in the role it was ordered in. */
  private pendingFence?: PendingFence;
  /** The partner left powered off by escalation, not heard since: the alarm. */
  private escalated?: string;
  /**
   * Event-loop delay of the controller's main thread, ns: the lateness of the 100 ms health tick,
   * a sample every 100 ms (a 1 ms monitorEventLoopDelay timer would wake an idle board 1000 times a second).
   */
  private readonly mainLoopDelay = createHistogram();
  private readonly alarms?: AlarmList;
  /** ha.manager pacemaker: corosync's quorum on this board (src/ha/quorum.ts); absent for the pair alone. */
  readonly quorum?: QuorumSource;
  /** A takeover not made for want of quorum was journaled (once per spell without quorum). */
  private noQuorumJournaled = false;
  /**
   * A silent partner was left to corosync and nothing came of it yet (its fence called off: no
   * quorum, or the partner still a member; or a takeover held back for want of quorum): a later
   * verdict acts on it. Cleared when the partner is heard or a fence is carried out.
   */
  private silenceUndecided = false;
  /** ha.manager pacemaker: tells the cluster a fence this board carried out (HaControllerOptions.confirmFence). */
  private readonly confirmFence?: (partner: string) => Promise<string>;

  constructor(readonly board: BoardProfile, private readonly store: Store, private readonly log: Logger, opts: HaControllerOptions = {}) {
    super();
    this.clock = opts.clock ?? systemClock;
    this.wallNow = opts.wallNow ?? Date.now;
    this.alarms = opts.alarms;
    const ha = board.ha;
    if (!ha || !board.partner) throw new UsError('US_ERR_CONFIG', `board profile ${board.sourceFile}: ha and partner are needed for the pair`);
    const key = readKeyFile(ha.keyFile);
    this.generations = new BootGenerations(store, log, partnerNameOf(board));
    this.membership = new MembershipProcess({
      self: board.name, priority: ha.priority, generation: this.generations.own, known: this.generations.partner, keyHex: key.toString('hex'),
      intervalMs: ha.intervalMs, linkTimeoutMs: ha.linkTimeoutMs, deadtimeMs: ha.deadtimeMs,
      ethernet: board.partner.ethernet,
      serial: board.partner.serial ? { path: board.partner.serial.device, baudRate: board.partner.serial.baud } : undefined,
      watchdog: board.watchdog,
      rtPriority: ha.rtPriority,
      controllerPid: process.pid,
      controllerHangMs: ha.controllerHangMs,
    });
    this.fencing = fencingFor(board);
    if (ha.manager === 'pacemaker') {
      this.confirmFence = opts.confirmFence ?? runFenceConfirm(ha.fenceConfirmCommand ?? DEFAULT_FENCE_CONFIRM_COMMAND);
      this.quorum = opts.quorum ?? new QuorumWatch(ha.quorumCommand ?? DEFAULT_QUORUM_COMMAND, log, this.clock);
      this.quorum.on('change', (now, before) => this.onQuorum(now, before));
    }
    this.generations.attach(this.membership);
    const last = store.lastFence(this.partnerName);
    if (last?.escalated) this.escalated = this.escalationAlarm(new Date(last.atMs).toISOString());
    this.membership.on('link', (link, up, cause) => {
      this.store.record('link', `${link} link ${up ? 'up' : 'DOWN'}: ${cause}`, { link, up });
      (up ? this.log.info.bind(this.log) : this.log.warn.bind(this.log))({ link, up, cause }, `partner link ${link} ${up ? 'up' : 'down'}`);
      this.linkAlarm(link, up, cause);
    });
    this.membership.on('partner-alive', (hb) => {
      this.store.record('partner', `partner ${hb.sender} heard (role ${hb.role}, generation ${hb.generation})`, { ...hb });
      this.escalated = undefined; // powered on again by someone
      this.alarms?.clear('partner-left-off', this.alarms.resource('partner'), `partner ${hb.sender} heard again`);
      this.alarms?.clear('fencing-failed', this.alarms.resource('partner'), `partner ${hb.sender} heard again`);
      this.cancelPendingFence(`${hb.sender} heard again (role ${hb.role})`);
      this.silenceUndecided = false;
      this.onPartnerHeartbeat(hb);
    });
    this.membership.on('partner-update', (hb) => this.onPartnerHeartbeat(hb));
    this.membership.on('partner-dead', (silentMs) => {
      const last = this.membership.partnerView.heartbeat;
      const f = this.fencedBoot;
      if (last && f && last.sender === f.partner && last.generation <= f.generation) {
        this.store.record('partner', `partner ${f.partner} silent for ${silentMs.toFixed(1)} ms: the end of frames from its boot ${last.generation}, fenced already (they were on their way when it went down); not fenced again: waiting for its next boot`, { silentMs, generation: last.generation });
        this.membership.forgetPartner();
        return;
      }
      const left = last?.role === 'STOPPING';
      this.store.record('partner', `partner silent on every link for ${silentMs.toFixed(1)} ms: declared dead${left ? ' (its last heartbeat said STOPPING: it left in order)' : ''}`, { silentMs, lastRole: last?.role });
      this.log.warn({ silentMs, lastRole: last?.role }, 'partner declared dead');
      this.fire('partner-dead');
    });
    this.membership.on('bad-mac', (links, frames) => this.onBadMac(links, frames));
    // The partner channels follow the same event (src/replication/legacy-channel.ts, wired by the daemon).
    this.membership.on('send-version', (version) => {
      const previous = version < FRAME_VERSION; // the membership posts only changes
      this.log[previous ? 'warn' : 'info']({ heartbeatVersion: version }, previous
        ? `partner heard only in heartbeat version ${version}: it runs the previous firmware (partner channels before TLS)`
        : `partner heard in heartbeat version ${version} again`);
    });
    this.membership.on('watchdog-stopped', (reason) => {
      this.watchdogStopped = reason;
      this.store.record('watchdog', `watchdog kicks stopped: ${reason}; the board will be reset`, { reason });
      this.alarms?.raise('watchdog-reset', this.alarms.resource('watchdog'), `watchdog kicks stopped: ${reason}; the board will be reset`);
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
    this.membership.on('rt-dropped', (reason, threads) => {
      this.store.record('membership', `membership process ${reason}`, { reason, threads });
      this.log.error({ reason, threadTicks: threads }, 'membership process busy: real-time scheduling dropped');
    });
    this.membership.on('exit', (code) => {
      // Without its membership process the board is blind and its watchdog unkicked: it will be reset.
      this.store.record('watchdog', `membership process exited (${code}): the board will be reset by its watchdog`);
      this.log.fatal({ code }, 'membership process exited');
    });
  }

  /**
   * `healthy` is polled; when it turns false the watchdog kicks stop and the board's hardware resets
   * it. `guestHealth` goes into the heartbeats. `holdsState`: this board holds the partner's
   * guest state (a backup whose clone is cut over and runs, or a checkpoint whose input log reaches the
   * stream); without it, taken as held.
   */
  async start(opts: { healthy?: () => boolean; guestHealth?: () => GuestHealth; holdsState?: () => boolean } = {}): Promise<void> {
    if (opts.guestHealth) this.guestHealth = opts.guestHealth;
    if (opts.holdsState) this.holdsState = opts.holdsState;
    const generation = this.generations.own;
    this.store.record('role', `board ${this.board.name} starting (generation ${generation})`, { generation });
    this.quorum?.start();
    try {
      await this.membership.start();
    } catch (e) {
      throw new UsError('US_ERR_LINK', `membership could not start: ${(e as Error).message}`);
    }
    // The reset the alarm announced is over: this controller runs and its membership process kicks again.
    this.alarms?.clear('watchdog-reset', this.alarms.resource('watchdog'), `the controller runs again (generation ${generation}) and the watchdog is kicked`);
    const healthy = opts.healthy ?? (() => true);
    let lastTick = this.clock.now();
    this.healthTimer = this.clock.setInterval(() => {
      const now = this.clock.now();
      this.mainLoopDelay.record(Math.max(1, Math.round((now - lastTick - HEALTH_TICK_MS) * 1e6)));
      lastTick = now;
      if (!healthy()) this.membership.stopKicking('guest supervision lost');
      const g = this.guestHealth();
      if (g !== this.lastGuest) { this.lastGuest = g; this.membership.setLocal(this.role, g, this.advertisedPriority); }
    }, HEALTH_TICK_MS);
    this.membership.setLocal(this.role, this.guestHealth(), this.advertisedPriority);
    this.startupTimer = this.clock.setTimeout(() => this.fire('startup-timeout'), this.board.ha!.startupWaitMs);
    if (this.alarms) this.linkAlarmTimer = this.clock.setTimeout(() => void this.syncLinkAlarms(), this.board.ha!.startupWaitMs);
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

  /**
   * The operator's `understudy start-alone`: a board that has not heard its partner fences it and
   * serves. Refused while the partner is heard (even only with a bad MAC: it is alive) or when this
   * board is not waiting for it. Resolves once promoted; a fence that fails leaves the board waiting.
   */
  async startAlone(): Promise<{ board: string; role: Role; cause: string; partner: string }> {
    const refuse = (why: string): never => {
      this.store.record('role', `start-alone refused: ${why}`, { operator: true });
      throw new UsError('US_ERR_ROLE', `start-alone refused: ${why}`);
    };
    if (this.role !== 'STARTING' && this.role !== 'WAITING') {
      refuse(`board ${this.board.name} is ${this.role}: only a board waiting for its partner (STARTING or WAITING) starts alone`);
    }
    const pv = this.membership.partnerView;
    if (pv.state === 'alive') refuse(`partner ${pv.heartbeat?.sender ?? this.partnerName} is heard (${pv.heartbeat?.role ?? '?'}): the pair decides its roles by itself`);
    if (this.misconfigured()) {
      refuse(`partner ${this.partnerName} is heard with a bad MAC on ${this.badMac!.links.join(', ')} (another key?): it is alive; fix ha.keyFile on one board`);
    }
    this.store.record('role', `start-alone requested by the operator: fencing ${this.partnerName}, then serving alone`, { operator: true });
    this.log.warn({ partner: this.partnerName }, 'start-alone requested by the operator');
    if (!this.fire('start-alone')) refuse(`board ${this.board.name} is ${this.role}`);
    const done = new Promise<RoleChange>((resolve, reject) => {
      const timer = setTimeout(() => { this.off('role', on); reject(new UsError('US_ERR_TIMEOUT', `start-alone: still ${this.role} after ${START_ALONE_TIMEOUT_MS} ms`)); }, START_ALONE_TIMEOUT_MS);
      const on = (c: RoleChange) => {
        if (c.from !== 'FENCING') return;
        clearTimeout(timer);
        this.off('role', on);
        resolve(c);
      };
      this.on('role', on);
    });
    const c = await done;
    if (c.to !== 'PRIMARY') throw new UsError('US_ERR_FENCING', `start-alone: ${c.cause}`);
    return { board: this.board.name, role: c.to, cause: c.cause, partner: this.partnerName };
  }

  /**
   * N+1 re-protection: a surviving PRIMARY whose partner is gone takes another board (a spare that
   * Pacemaker, or the operator, started as its backup) as its partner: heartbeats, the fencing
   * target and the clone target all move to it; a serial link (point to point with the old
   * partner) is closed. Refused while a partner is heard, during a fence, on a board that is not
   * PRIMARY, and with IPMI fencing (its BMC address is the old partner's). The new partner then
   * joins as any returning backup does: heard, cloned to, protected.
   */
  async adoptPartner(name: string, address: string): Promise<{ board: string; partner: string; address: string; previous: string; linksClosed: string[] }> {
    const previous = partnerNameOf(this.board);
    const refuse = (why: string): never => {
      this.store.record('partner', `adopting ${name} as the partner refused: ${why}`, { operator: true, name, address });
      throw new UsError('US_ERR_ROLE', `partner adopt refused: ${why}`);
    };
    if (name === this.board.name) refuse(`${name} is this board`);
    if (this.role !== 'PRIMARY') refuse(`board ${this.board.name} is ${this.role}: only a PRIMARY serving alone takes a new partner (a backup whose primary died promotes itself)`);
    // The partner it has already (an agent asking again): nothing to do, heard or not.
    if (name === previous && this.board.partner?.ethernet?.partnerAddress === address) {
      return { board: this.board.name, partner: name, address, previous, linksClosed: [] };
    }
    const pv = this.membership.partnerView;
    if (pv.state === 'alive') refuse(`partner ${pv.heartbeat?.sender ?? previous} is heard (${pv.heartbeat?.role ?? '?'}): a new partner only replaces one that is gone`);
    if (this.fenceInFlight || this.pendingFence) refuse(`a fence of ${previous} is under way`);
    if (this.board.fencing?.method === 'ipmitool') refuse(`fencing.method ipmitool addresses ${previous}'s BMC (${this.board.fencing.host}); a new partner needs its own fencing device`);
    adoptPartnerInProfile(this.board, name, address);
    const known = this.generations.usePartner(name);
    const linksClosed = await this.membership.adoptPartner(address, known);
    this.escalated = undefined;
    this.misconfiguredJournaled = false;
    this.badMac = undefined;
    for (const l of linksClosed) {
      this.cancelLinkAlarmHold(l);
      this.alarms?.clear('partner-link-down', this.alarms.resource(`partner-link/${l}`), `partner link ${l} closed: it does not reach ${name}`);
    }
    this.alarms?.clear('partner-left-off', this.alarms.resource('partner'), `the partner is ${name} now`);
    this.alarms?.clear('fencing-failed', this.alarms.resource('partner'), `the partner is ${name} now`);
    const msg = `partner is now ${name} (${address}), replacing ${previous}${linksClosed.length ? `; link${linksClosed.length > 1 ? 's' : ''} ${linksClosed.join(', ')} closed (not to ${name})` : ''}; serving unprotected until ${name} is heard and cloned to`;
    this.store.record('partner', msg, { name, address, previous, linksClosed });
    this.log.warn({ partner: name, address, previous, linksClosed }, msg);
    return { board: this.board.name, partner: name, address, previous, linksClosed };
  }

  /**
   * Before this board reboots itself (a rolling upgrade): it announces STOPPING, as an orderly
   * shutdown does, so its partner sees it leave rather than fall silent, and does not fence it.
   */
  async leaveForReboot(cause: string): Promise<void> {
    this.fire('stop', cause);
    await this.clock.sleep(4 * this.board.ha!.intervalMs); // the STOPPING heartbeat goes out on every link
  }

  /** The reboot announced by leaveForReboot did not happen: the watchdog resets the board instead. */
  rebootFailed(reason: string): void {
    this.membership.stopKicking(`the reboot failed (${reason}): the watchdog resets the board`);
  }

  /** The partner board's name: as it signs its heartbeats, else the profile's. */
  get partnerName(): string {
    return this.membership.partnerView.heartbeat?.sender ?? partnerNameOf(this.board);
  }

  private preferredOver(partner: Heartbeat | undefined): boolean | null {
    return partner ? isPreferred({ name: this.board.name, priority: this.advertisedPriority ?? this.board.ha!.priority }, { name: partner.sender, priority: partner.priority }) : null;
  }

  /**
   * Why this PRIMARY serves a state it could not carry over (promoted with neither a copy nor a
   * checkpoint: it booted its disk), until its state has a copy on a backup or it leaves PRIMARY.
   */
  private servingLostState?: string;

  /**
   * The priority heartbeats advertise: the profile's, or the least preferred (255) while this board
   * serves a lost state. Two PRIMARYs keep the preferred one: a board that booted an empty guest
   * when promoted must never win over one that carried the service's state through the failure
   * (bench/pacemaker, 2026-12-06: a spare serving the state stepped down before a pair board that
   * had promoted with no copy, and was cloned over with its empty guest).
   */
  get advertisedPriority(): number | undefined {
    return this.servingLostState !== undefined ? LOST_STATE_PRIORITY : undefined;
  }

  /**
   * The pair layer says this PRIMARY now serves a state it lost (`why`), or, with undefined, that
   * its state has a copy on a backup again. Announced at once.
   */
  markServingLostState(why: string | undefined): void {
    if (why !== undefined && this.role !== 'PRIMARY') return;
    if ((why === undefined) === (this.servingLostState === undefined)) return;
    this.servingLostState = why;
    this.store.record('role', why !== undefined
      ? `serving a lost state (${why}): advertising priority ${LOST_STATE_PRIORITY} (least preferred) until a backup holds a copy of it`
      : `the state served has a copy on the backup: advertising the profile's priority ${this.board.ha!.priority} again`);
    this.membership.setLocal(this.role, this.guestHealth(), this.advertisedPriority);
  }

  /** Before any heartbeat only names are known on both sides: the lower name is preferred. */
  private preferredOverUnseen(): boolean {
    return this.board.name < partnerNameOf(this.board);
  }

  /** The partner sends only frames with a bad MAC, lately, and none authentic since this board started. */
  private misconfigured(): boolean {
    return !this.membership.partnerView.heartbeat && !!this.badMac && this.clock.now() - this.badMac.at <= BAD_MAC_RECENT_MS;
  }

  /** This board holds the partner's guest state: a copy in sync or a checkpoint and its log (start's `holdsState`). */
  private holdsState?: () => boolean;
  /** A hung partner not fenced for want of a copy was journaled (once per hung spell). */
  private hungWithoutCopyJournaled = false;

  private context(): RoleContext {
    const hb = this.membership.partnerView.heartbeat;
    return {
      preferred: this.preferredOver(hb) ?? this.preferredOverUnseen(),
      yielding: this.clock.now() < this.yieldUntil,
      fenceSent: this.fenceInFlight && this.fenceSent,
      partnerLast: hb?.role,
      partnerHung: hb?.health === 'hung',
      partnerGone: hb?.health === 'gone',
      holdsState: this.holdsState?.(),
      partnerMisconfigured: this.misconfigured(),
      startup: this.board.ha!.startup,
      quorumLost: this.quorum?.state?.quorate === false,
      quorumArbitrated: this.quorum !== undefined,
    };
  }

  /**
   * A fence waiting for corosync (FenceWait `quorum`): carried out once this side is quorate without
   * the partner, called off once this side has no quorum.
   */
  private checkQuorumFence(): void {
    const p = this.pendingFence;
    const q = this.quorum?.state;
    if (!p?.quorum || !q) return;
    if (!q.quorate) { this.cancelPendingFence(`this side has no quorum (corosync members ${q.members.join(' ')}): the side with quorum decides`); this.silenceUndecided = true; return; }
    if (q.members.includes(p.partner)) return;
    this.clock.clearTimeout(p.timer);
    this.pendingFence = undefined;
    p.go?.(`corosync shows this side quorate without ${p.partner} (members ${q.members.join(' ')}, ring ${q.ring})`);
  }

  /**
   * corosync's view changed: journaled; a side that regains quorum acts on a partner that died
   * meanwhile (its takeover was held back for want of quorum).
   */
  private onQuorum(now: QuorumState | undefined, before: QuorumState | undefined): void {
    const text = now === undefined
      ? `quorum unknown: ${this.quorum?.status().lastError ?? 'the quorum tool printed nothing yet'}`
      : `corosync: ${now.quorate ? 'quorate' : 'NO QUORUM'}, members ${now.members.join(' ')} (ring ${now.ring})`;
    this.store.record('quorum', text, { quorate: now?.quorate ?? null, members: now?.members ?? null, ring: now?.ring ?? null });
    this.log[now?.quorate === false ? 'warn' : 'info']({ quorate: now?.quorate, members: now?.members, ring: now?.ring }, text);
    if (now?.quorate !== false) this.noQuorumJournaled = false;
    this.checkQuorumFence();
    // A silent partner that corosync now shows gone from a quorate side (or a side that regained
    // quorum): act on it (a fence called off earlier, or a takeover held back for want of quorum).
    if (now?.quorate && this.silenceUndecided && !this.pendingFence && !this.fenceInFlight && this.membership.partnerView.state === 'dead'
      && (before?.quorate !== true || !now.members.includes(this.partnerName))) {
      this.silenceUndecided = false;
      this.fire('partner-dead', before?.quorate !== true ? 'this side has quorum again' : `corosync shows ${this.partnerName} gone`);
    }
    this.emit('quorum', now);
  }

  /** Feeds an event to the state machine (also used by operators: switchover, takeover). */
  fire(event: RoleEvent, cause?: string): boolean {
    const ctx = this.context();
    const t = nextRole(this.role, event, ctx);
    if (!t && ctx.quorumLost && TAKEOVER_EVENTS.has(event) && nextRole(this.role, event, { ...ctx, quorumLost: false })) {
      this.silenceUndecided = true;
      if (!this.noQuorumJournaled) {
        this.noQuorumJournaled = true;
        this.store.record('role', `${this.role} stays ${this.role}: ${event} (${cause ?? 'its partner'}), but corosync says this side has no quorum: not taking over (the side with quorum decides)`, { role: this.role, event, quorumLost: true });
      }
      return false;
    }
    if (!t) return false;
    const why = cause ? `${t.cause} (${cause})` : t.cause;
    const waitMs = t.fence ? this.waitMs(t.fence) : 0;
    if (t.fence && waitMs > 0) {
      // A fence after a wait: the board stays as it is meanwhile; the change of role comes with the
      // fence itself, and the partner heard again calls it off (a later verdict waits afresh).
      if (this.pendingFence || this.fenceInFlight) return false;
      const role = this.role;
      const partner = this.partnerName;
      this.store.record('role', `${role}: ${why}: fencing ${partner} in ${waitMs} ms unless it is heard again`, { role, event, partner, waitMs });
      this.log.warn({ role, event, partner, waitMs }, `${why}: fencing ${partner} in ${waitMs} ms unless it is heard again`);
      const byQuorum = t.fence.wait === 'quorum';
      const t0 = this.clock.now();
      const go = (how: string) => {
        if (this.role !== role) return;
        if (t.to !== role) this.transition(t.to, `${why} (${how})`, event);
        void this.fencePartner(t.fence!, Math.round(this.clock.now() - t0));
      };
      const pending: PendingFence = {
        role, partner, waitMs, quorum: byQuorum, go,
        timer: this.clock.setTimeout(() => {
          this.pendingFence = undefined;
          if (this.role !== role) return;
          if (byQuorum) {
            // The cluster still sees it after its failure detection: alive, cut off from this board only.
            this.store.record('role', `${role}: fence of ${partner} called off: corosync still counts it a member after ${waitMs} ms (ha.quorumSettleMs): alive, cut off from this board only`, { partner, calledOff: true, waitMs });
            this.silenceUndecided = true;
            return;
          }
          go(`silent for ${waitMs} ms more`);
        }, waitMs),
      };
      this.pendingFence = pending;
      if (byQuorum) this.checkQuorumFence();
      // The priority delay is for a primary that may be alive and cut off. One the fencing device
      // reports powered off is not cut off: fence it (found off) and promote now.
      if ((t.fence.wait === 'priority-delay' || t.fence.wait === 'no-state-delay' || t.fence.wait === 'quorum') && this.fencing.powerState) {
        const t0 = this.clock.now();
        this.fencing.powerState(partner, POWER_STATE_MS).then((state) => {
          if (state !== 'off' || this.pendingFence !== pending || this.role !== role) return;
          this.clock.clearTimeout(pending.timer);
          this.pendingFence = undefined;
          const asked = Math.round(this.clock.now() - t0);
          this.store.record('role', `${role}: ${partner} is powered off (${this.fencing.method}, asked in ${asked} ms): not a partition, fencing it now`, { role, partner, powerState: state, askedMs: asked });
          if (t.to !== role) this.transition(t.to, `${why} (the fencing device reports it powered off)`, event);
          void this.fencePartner(t.fence!, asked);
        }, (e: Error) => this.log.info({ partner, err: e.message }, 'power state of the partner unknown: waiting the priority fencing delay'));
      }
      return true;
    }
    if (t.fence) this.cancelPendingFence(`a fence is ordered now: ${why}`);
    if (t.to !== this.role) {
      this.transition(t.to, why, event);
    } else {
      // An order without a change of role: a PRIMARY fencing its silent backup while it serves on.
      this.store.record('role', `${this.role} stays ${this.role}: ${why}`, { role: this.role, event });
      this.log.warn({ role: this.role, event, cause: why }, `${this.role}: ${why}`);
    }
    if (t.fence) void this.fencePartner(t.fence, 0);
    return true;
  }

  private waitMs(order: FenceOrder): number {
    const ha = this.board.ha!;
    switch (order.wait) {
      case 'priority-delay': return ha.priorityFencingDelayMs;
      case 'no-state-delay': return ha.noStateFenceDelayMs;
      case 'fence-delay': return ha.fenceDelayMs;
      case 'confirm': return ha.primaryConfirmMs;
      case 'quorum': return ha.quorumSettleMs;
      case 'now': return 0;
    }
  }

  /** A fence waiting its turn is called off: the partner is heard again, or this board changed role. */
  private cancelPendingFence(why: string): void {
    const p = this.pendingFence;
    if (!p) return;
    this.clock.clearTimeout(p.timer);
    this.pendingFence = undefined;
    this.store.record('role', `${p.role}: fence of ${p.partner} called off: ${why}`, { partner: p.partner, calledOff: true, waitMs: p.waitMs });
    this.log.info({ partner: p.partner, why }, 'fence called off');
  }

  private onPartnerHeartbeat(hb: Heartbeat): void {
    // A hung controller's role claim is stale (its membership process repeats the last one).
    if (hb.health === 'hung') {
      if (!this.fire('partner-hung') && this.role === 'BACKUP' && this.holdsState?.() === false && !this.hungWithoutCopyJournaled) {
        this.hungWithoutCopyJournaled = true;
        this.store.record('role', `BACKUP stays BACKUP: ${hb.sender} reports its controller hung, but this board holds none of its guest state (no copy in sync: its clone is not cut over yet; no checkpoint whose log reaches the stream): not fencing it; if it stays hung, its watchdog resets it`, { role: this.role, partnerHung: true, holdsState: false });
      }
      return;
    }
    this.hungWithoutCopyJournaled = false;
    // Its dying gasp: the partner's controller exited (crashed, killed) and its membership process is
    // about to fall silent. Not a partition: no priority delay.
    if (hb.health === 'gone') {
      this.fire('partner-gone');
      return;
    }
    const ev: RoleEvent | undefined = hb.role === 'PRIMARY' ? 'partner-primary'
      : hb.role === 'BACKUP' ? 'partner-backup'
      : hb.role === 'STARTING' || hb.role === 'WAITING' || hb.role === 'FENCING' ? 'partner-starting'
      : hb.role === 'FAULT' ? 'partner-fault' : undefined;
    if (ev) this.fire(ev);
  }

  private onBadMac(links: string[], frames: number): void {
    const now = this.clock.now();
    const fresh = !this.badMac || now - this.badMac.at > BAD_MAC_RECENT_MS;
    this.badMac = { at: now, links, frames: (fresh ? 0 : this.badMac!.frames) + frames };
    if (this.misconfigured()) {
      if (fresh || !this.misconfiguredJournaled) {
        this.misconfiguredJournaled = true;
        const msg = `partner heard only with a bad MAC on ${links.join(', ')} (${frames} frames): alive and misconfigured (another key in ha.keyFile?); not fencing it, not serving`;
        this.store.record('partner', msg, { links, frames, misconfigured: true });
        this.log.error({ links, frames }, msg);
      }
      this.fire('partner-misconfigured');
    } else if (fresh) {
      const msg = `heartbeats with a bad MAC on ${links.join(', ')} (${frames} frames): forged, or a board with another key`;
      this.store.record('partner', msg, { links, frames });
      this.log.warn({ links, frames }, msg);
    }
  }

  private transition(to: Role, cause: string, event: RoleEvent): void {
    const change: RoleChange = { from: this.role, to, cause, at: new Date().toISOString() };
    if (this.pendingFence?.role === this.role) this.cancelPendingFence(`${this.role} -> ${to} first`);
    this.role = to;
    if (to !== 'PRIMARY') this.servingLostState = undefined;
    this.since = Date.now();
    this.lastTransition = change;
    this.clock.clearTimeout(this.startupTimer);
    this.membership.setLocal(to, this.guestHealth(), this.advertisedPriority); // tell the partner at once
    this.store.record('role.transition', `${change.from} -> ${to}: ${cause}`, { from: change.from, to, event });
    const level = to === 'FAULT' || cause.startsWith('FENCING FAILED') ? 'error' : 'info';
    this.log[level]({ from: change.from, to, event, cause }, `role ${change.from} -> ${to}`);
    this.emit('role', change);
  }

  /**
   * What the fence does: the table may say "leave it off"; else fencing.action, unless this board
   * already reset that partner fencing.escalation.maxResets times within windowS (then off, for good).
   */
  private fenceAction(partner: string, order: FenceOrder): { action: FenceAction; why: string; escalated: boolean } {
    const f = this.board.fencing;
    if (!f || f.method === 'none') return { action: 'off', why: 'no fencing method', escalated: false };
    if (order.keepOff) return { action: 'off', why: 'ha.startup fence-then-serve: it stays off', escalated: false };
    if (f.action === 'off') return { action: 'off', why: 'fencing.action off: it stays off', escalated: false };
    const { maxResets, windowS } = f.escalation;
    const resets = this.store.fencesSince(partner, this.wallNow() - windowS * 1000).filter((r) => r.outcome === 'reset').length;
    if (resets >= maxResets) {
      return { action: 'off', why: `ESCALATION: reset ${resets} times within ${windowS} s (fencing.escalation.maxResets ${maxResets}): LEFT OFF until an operator powers it on`, escalated: true };
    }
    return { action: 'reset', why: 'it boots again and rejoins as backup', escalated: false };
  }

  private escalationAlarm(at: string): string {
    const f = this.board.fencing;
    const e = f && f.method !== 'none' ? f.escalation : undefined;
    return `partner ${this.partnerName} left powered off since ${at}: reset ${e ? `${e.maxResets} times within ${e.windowS} s` : 'repeatedly'}, then powered off (fencing.escalation); power it on once it is fixed`;
  }

  /**
   * ha.manager pacemaker: once this board has fenced its partner, the cluster is told (Pacemaker's
   * manual fence confirmation), so that it does not fence the partner's node again when corosync
   * loses it: one fence per death, the fast one. In the background: the promotion never waits for it.
   * Journaled either way; a failure only means Pacemaker fences the node itself (if its fencing is on).
   */
  private tellClusterFenced(partner: string): void {
    const confirm = this.confirmFence;
    if (!confirm) return;
    void confirm(partner).then(
      () => this.store.record('fence', `told the cluster that ${partner} was fenced (manual confirmation): Pacemaker does not fence it again`, { partner, confirmed: true }),
      (e: Error) => {
        this.store.record('fence', `could not tell the cluster that ${partner} was fenced: ${e.message}; Pacemaker may fence it again`, { partner, confirmed: false, error: e.message });
        this.log.warn({ partner, err: e.message }, 'fence confirmation to the cluster failed');
      },
    );
  }

  /** Fences the partner now (any wait is over: `waitedMs`), and promotes from FENCING when it is done. */
  private async fencePartner(order: FenceOrder, waitedMs: number): Promise<void> {
    if (this.fenceInFlight) return;
    this.fenceInFlight = true;
    this.silenceUndecided = false;
    const partnerName = this.partnerName;
    const fencer = this.role; // FENCING, or a PRIMARY that serves on
    try {
      const { action, why, escalated } = this.fenceAction(partnerName, order);
      this.fenceStats.attempts++;
      const t0 = this.clock.now();
      this.fenceSent = true;
      let outcome: string;
      let note = why;
      if (action === 'off') {
        await this.fencing.powerOff(partnerName);
        outcome = 'off';
      } else {
        const r = await this.fencing.reset(partnerName);
        outcome = r.outcome;
        if (r.outcome === 'was-off') note = 'it was already off: left off';
        if (r.outcome === 'left-off') note = `it did not power on again: ${r.why}`;
      }
      const ms = this.clock.now() - t0;
      this.store.recordFence({ atMs: this.wallNow(), partner: partnerName, outcome, escalated });
      const what = outcome === 'reset' ? 'reset (power-cycled)' : outcome === 'was-off' ? 'found off' : 'powered off';
      this.store.record('fence', `partner ${partnerName} fenced: ${what} by ${this.fencing.method} in ${ms.toFixed(1)} ms; ${note}`,
        { partner: partnerName, method: this.fencing.method, action, outcome, escalated, waitedMs, ms: Math.round(ms * 10) / 10 });
      if (escalated) {
        this.escalated = this.escalationAlarm(new Date(this.wallNow()).toISOString());
        this.log.error({ partner: partnerName }, this.escalated);
        this.alarms?.raise('partner-left-off', this.alarms.resource('partner'), this.escalated);
      }
      this.fenceStats.lastError = undefined;
      this.alarms?.clear('fencing-failed', this.alarms.resource('partner'), `partner ${partnerName} fenced: ${what} by ${this.fencing.method}`);
      const boot = this.membership.partnerView.heartbeat;
      if (boot?.sender === partnerName) this.fencedBoot = { partner: partnerName, generation: boot.generation };
      this.membership.forgetPartner();
      this.tellClusterFenced(partnerName);
      this.emit('partner-fenced', { partner: partnerName, outcome, by: fencer } satisfies PartnerFenced);
      if (this.role === 'FENCING') this.fire('fence-ok');
    } catch (e) {
      this.fenceStats.failures++;
      this.fenceStats.lastError = (e as Error).message;
      this.store.record('fence', `FENCING FAILED for ${partnerName}: ${(e as Error).message}`, { partner: partnerName, error: (e as Error).message });
      this.alarms?.raise('fencing-failed', this.alarms.resource('partner'), `fencing ${partnerName} by ${this.fencing.method} failed: ${(e as Error).message}`);
      this.log.error({ err: (e as Error).message, partner: partnerName }, `FENCING FAILED: this board will NOT ${fencer === 'PRIMARY' ? 'be protected until it succeeds' : 'promote'}`);
      if (this.role === 'FENCING') this.fire('fence-failed', (e as Error).message);
      this.clock.clearTimeout(this.fenceRetry);
      this.fenceRetry = this.clock.setTimeout(() => {
        const p = this.membership.partnerView;
        if (p.state === 'alive') {
          // Heard, but its controller still hung: fence it again (its heartbeats do not call a fence off).
          if (p.heartbeat?.health === 'hung' && this.role === 'BACKUP') this.fire('partner-hung', 'retrying the fence');
          if (p.heartbeat?.health === 'gone' && (this.role === 'BACKUP' || this.role === 'PRIMARY')) this.fire('partner-gone', 'retrying the fence');
          return;
        }
        if (this.role === 'BACKUP' || this.role === 'PRIMARY') this.fire('partner-dead', 'retrying the fence');
        else if (this.role === 'WAITING') this.fire('startup-timeout', 'retrying the fence');
      }, FENCE_RETRY_MS);
    } finally {
      this.fenceInFlight = false;
      this.fenceSent = false;
    }
  }

  /** A link down raises its alarm after LINK_ALARM_HOLD_MS unless it is up again by then; up clears it. */
  private linkAlarm(link: string, up: boolean, cause: string): void {
    const a = this.alarms;
    if (!a) return;
    const resource = a.resource(`partner-link/${link}`);
    if (up) {
      this.cancelLinkAlarmHold(link);
      a.clear('partner-link-down', resource, `partner link ${link} up: ${cause}`);
      return;
    }
    if (this.linkDownHeld.has(link) || a.isActive('partner-link-down', resource)) return;
    this.linkDownHeld.set(link, this.clock.setTimeout(() => {
      this.linkDownHeld.delete(link);
      a.raise('partner-link-down', resource, `partner link ${link} down: ${cause}`);
    }, LINK_ALARM_HOLD_MS));
  }

  private cancelLinkAlarmHold(link: string): void {
    this.clock.clearTimeout(this.linkDownHeld.get(link));
    this.linkDownHeld.delete(link);
  }

  /**
   * The link alarms as the membership process sees the links now: a link silent since this controller
   * started raises its alarm (its membership reports only changes), one up clears a stale one.
   */
  private async syncLinkAlarms(): Promise<void> {
    const a = this.alarms!;
    const snap = await this.membership.snapshot().catch(() => undefined);
    for (const l of snap?.links ?? []) {
      a.set('partner-link-down', a.resource(`partner-link/${l.name}`), l.up ? undefined : `partner link ${l.name} down: not heard since the controller started`,
        { clearText: `partner link ${l.name} up` });
    }
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
    if (this.fenceStats.lastError) alarms.push(`fencing failed: ${this.fenceStats.lastError}`);
    if (this.escalated) alarms.push(this.escalated);
    if (this.misconfigured()) {
      alarms.push(`partner misconfigured: heard only with a bad MAC on ${this.badMac!.links.join(', ')} (another key?): not fencing it, not serving`);
    } else if (this.badMac && this.clock.now() - this.badMac.at <= BAD_MAC_RECENT_MS) {
      alarms.push(`heartbeats with a bad MAC on ${this.badMac.links.join(', ')}: forged, or a board with another key`);
    }
    if (this.role === 'WAITING' && !this.misconfigured()) alarms.push('no partner heard since start: not serving (`understudy start-alone` fences it and serves alone)');
    if (snap.thread.rtDropped) alarms.push(`membership process ${snap.thread.rtDropped}`);
    if (this.quorum && this.quorum.state?.quorate === false) alarms.push('no quorum (corosync): this board neither takes over nor serves alone');
    else if (this.quorum && !this.quorum.state) alarms.push(`quorum unknown: ${this.quorum.status().lastError ?? 'no status from the quorum tool yet'}`);
    if (snap.watchdog && !snap.watchdog.kicking) alarms.push(`watchdog not kicked: ${snap.watchdog.stopReason ?? this.watchdogStopped ?? ''}`);
    alarms.push(...this.generations.alarms);
    if (snap.generations?.sendVersion === 1) alarms.push('partner speaks heartbeat version 1 (previous firmware): its frames are not bound to this boot; finish the rolling upgrade');
    return {
      board: this.board.name,
      role: this.role,
      since: new Date(this.since).toISOString(),
      generation: this.generations.own,
      partnerGenerations: snap.generations,
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
      quorum: this.quorum?.status() ?? null,
    };
  }

  /** Orderly stop: announce STOPPING, stop heartbeats, magic-close the watchdog. */
  async stop(): Promise<void> {
    this.fire('stop');
    this.clock.clearTimeout(this.startupTimer);
    this.clock.clearTimeout(this.linkAlarmTimer);
    for (const l of [...this.linkDownHeld.keys()]) this.cancelLinkAlarmHold(l);
    this.clock.clearTimeout(this.fenceRetry);
    this.clock.clearTimeout(this.pendingFence?.timer);
    this.pendingFence = undefined;
    this.clock.clearInterval(this.healthTimer);
    this.quorum?.stop();
    await this.membership.stop(true);
  }
}
