/**
 * The HA layer of one board: membership over every partner link, the role state machine, fencing
 * before promotion, and the hardware watchdog. Carries out what src/ha/roles.ts decides and journals
 * every transition, link change and fence with its cause. Emits 'role' for the layers above (the
 * guest and, later, replication) to follow; it never touches the guest itself.
 */
import { EventEmitter } from 'node:events';
import { readFileSync, statSync } from 'node:fs';
import { loadavg, cpus } from 'node:os';
import type { BoardProfile } from '../config/board-profile.js';
import { UsError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { fencingFor, type FencingDevice } from '../hw/fencing/fencing.js';
import { EthernetLink, SerialLink, type PartnerLink } from '../hw/links/links.js';
import { LinuxWatchdog } from '../hw/watchdog/watchdog.js';
import type { Store } from '../store/journal.js';
import type { GuestHealth, Heartbeat, Role } from './frame.js';
import { Membership, type LinkState, type PartnerView } from './membership.js';
import { isPreferred, nextRole, type RoleEvent } from './roles.js';

/** Reads the pair's shared key: a root-only file holding hex (≥ 32 digits) or raw bytes (≥ 16). */
export function readKeyFile(path: string): Buffer {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    throw new UsError('US_ERR_NOT_FOUND', `heartbeat key file ${path}: ${(e as Error).message}`);
  }
  if ((st.mode & 0o077) !== 0) throw new UsError('US_ERR_CONFIG', `heartbeat key file ${path} must be readable by root only (mode 0600), it is ${(st.mode & 0o777).toString(8)}`);
  const raw = readFileSync(path);
  const text = raw.toString('latin1').trim();
  const key = /^[0-9a-fA-F]{32,}$/.test(text) && text.length % 2 === 0 ? Buffer.from(text, 'hex') : raw;
  if (key.length < 16) throw new UsError('US_ERR_CONFIG', `heartbeat key file ${path}: key shorter than 16 bytes`);
  return key;
}

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
  watchdog: { device: string; kicks: number; kicking: boolean } | null;
  loopDelayMs: { p50: number; p99: number; max: number };
  lastTransition?: RoleChange;
}

export declare interface HaController {
  on(ev: 'role', fn: (c: RoleChange) => void): this;
}

/** Kicks per watchdog timeout: 4 chances before it fires. */
const KICKS_PER_TIMEOUT = 4;
/** Retry period of a failed fence while the partner stays silent. */
const FENCE_RETRY_MS = 1000;

export class HaController extends EventEmitter {
  readonly membership: Membership;
  private role: Role = 'STARTING';
  private since = Date.now();
  private readonly fencing: FencingDevice;
  private readonly watchdog?: LinuxWatchdog;
  private kickTimer?: NodeJS.Timeout;
  private startupTimer?: NodeJS.Timeout;
  private fenceRetry?: NodeJS.Timeout;
  private healthy = () => true;
  private guestHealth: () => GuestHealth = () => 'none';
  private readonly generation: number;
  private fenceStats = { attempts: 0, failures: 0, lastError: undefined as string | undefined };
  private lastTransition?: RoleChange;
  private fenceInFlight = false;

  constructor(readonly board: BoardProfile, private readonly store: Store, private readonly log: Logger) {
    super();
    const ha = board.ha;
    if (!ha || !board.partner) throw new UsError('US_ERR_CONFIG', `board profile ${board.sourceFile}: ha and partner are needed for the pair`);
    const key = readKeyFile(ha.keyFile);
    this.generation = store.nextGeneration();
    const links: PartnerLink[] = [];
    if (board.partner.ethernet) links.push(new EthernetLink(board.partner.ethernet));
    if (board.partner.serial) links.push(new SerialLink({ path: board.partner.serial.device, baudRate: board.partner.serial.baud }));
    this.membership = new Membership({
      self: board.name, priority: ha.priority, generation: this.generation, key,
      intervalMs: ha.intervalMs, linkTimeoutMs: ha.linkTimeoutMs, deadtimeMs: ha.deadtimeMs, links,
      local: () => ({ role: this.role, guest: this.guestHealth(), watchdog: this.watchdog ? (this.kickTimer ? 'kicking' : 'starving') : 'none', cpuLoad: cpuLoadPercent() }),
    });
    this.fencing = fencingFor(board);
    if (board.watchdog) this.watchdog = new LinuxWatchdog(board.watchdog.device, board.watchdog.timeoutMs);
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
  }

  /**
   * `healthy` gates the watchdog kicks: when it returns false the kicks stop and the board's hardware
   * resets it. `guestHealth` goes into the heartbeats.
   */
  async start(opts: { healthy?: () => boolean; guestHealth?: () => GuestHealth } = {}): Promise<void> {
    if (opts.healthy) this.healthy = opts.healthy;
    if (opts.guestHealth) this.guestHealth = opts.guestHealth;
    this.store.record('role', `board ${this.board.name} starting (generation ${this.generation})`, { generation: this.generation });
    if (this.watchdog) {
      this.watchdog.open();
      this.startKicking();
    }
    await this.membership.start();
    this.startupTimer = setTimeout(() => this.fire('startup-timeout'), this.board.ha!.startupWaitMs);
  }

  get currentRole(): Role {
    return this.role;
  }

  /** Feeds an event to the state machine (also used by operators: switchover, takeover). */
  fire(event: RoleEvent, cause?: string): boolean {
    const partner = this.membership.partnerView.heartbeat;
    const preferred = partner ? isPreferred({ name: this.board.name, priority: this.board.ha!.priority }, { name: partner.sender, priority: partner.priority }) : true;
    const t = nextRole(this.role, event, { preferred });
    if (!t) return false;
    this.transition(t.to, cause ? `${t.cause} (${cause})` : t.cause, event);
    return true;
  }

  private onPartnerHeartbeat(hb: Heartbeat): void {
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
    clearTimeout(this.startupTimer);
    this.store.record('role.transition', `${change.from} -> ${to}: ${cause}`, { from: change.from, to, event });
    const level = to === 'FAULT' || cause.startsWith('FENCING FAILED') ? 'error' : 'info';
    this.log[level]({ from: change.from, to, event, cause }, `role ${change.from} -> ${to}`);
    this.membership.sendHeartbeat(); // tell the partner at once
    this.emit('role', change);
    if (to === 'FENCING') void this.fencePartner();
  }

  private async fencePartner(): Promise<void> {
    if (this.fenceInFlight) return;
    this.fenceInFlight = true;
    const partner = this.membership.partnerView.heartbeat;
    const partnerName = partner?.sender ?? this.partnerNameGuess();
    try {
      // Only a board that could be fenced by its partner at the same moment waits: a primary never
      // fences, so a backup fencing a primary that went silent goes at once.
      const preferred = partner ? isPreferred({ name: this.board.name, priority: this.board.ha!.priority }, { name: partner.sender, priority: partner.priority }) : this.board.ha!.priority <= 100;
      const lastPartnerRole = partner?.role;
      if (!preferred && lastPartnerRole !== 'PRIMARY') {
        await new Promise((r) => setTimeout(r, this.board.ha!.fenceDelayMs));
        if (this.role !== 'FENCING') return; // the partner came back
      }
      this.fenceStats.attempts++;
      const t0 = performance.now();
      await this.fencing.powerOff(partnerName);
      this.store.record('fence', `partner ${partnerName} powered off by ${this.fencing.method} in ${(performance.now() - t0).toFixed(1)} ms`, { partner: partnerName, method: this.fencing.method });
      this.membership.forgetPartner();
      if (this.role === 'FENCING') this.fire('fence-ok');
    } catch (e) {
      this.fenceStats.failures++;
      this.fenceStats.lastError = (e as Error).message;
      this.store.record('fence', `FENCING FAILED for ${partnerName}: ${(e as Error).message}`, { partner: partnerName, error: (e as Error).message });
      this.log.error({ err: (e as Error).message, partner: partnerName }, 'FENCING FAILED: this board will NOT promote');
      if (this.role === 'FENCING') this.fire('fence-failed', (e as Error).message);
      clearTimeout(this.fenceRetry);
      this.fenceRetry = setTimeout(() => {
        if (this.membership.partnerView.state !== 'alive' && this.role === 'BACKUP') this.fire('partner-dead', 'retrying the fence');
      }, FENCE_RETRY_MS);
    } finally {
      this.fenceInFlight = false;
    }
  }

  private partnerNameGuess(): string {
    // Before any heartbeat (startup-timeout) the partner's name follows the sim-a/sim-b convention
    // or the fencing target; the power controller validates it.
    const n = this.board.name;
    if (/-a$/.test(n)) return n.replace(/-a$/, '-b');
    if (/-b$/.test(n)) return n.replace(/-b$/, '-a');
    return 'partner';
  }

  private startKicking(): void {
    const period = Math.max(10, Math.floor(this.board.watchdog!.timeoutMs / KICKS_PER_TIMEOUT));
    this.kickTimer = setInterval(() => {
      if (this.healthy()) this.watchdog!.kick();
      else this.stopKicking('controller unhealthy');
    }, period);
    this.watchdog!.kick();
  }

  /** Stops kicking: the board's watchdog will reset it. */
  stopKicking(reason: string): void {
    if (!this.kickTimer) return;
    clearInterval(this.kickTimer);
    this.kickTimer = undefined;
    this.store.record('watchdog', `watchdog kicks stopped: ${reason}; the board will be reset`, { reason });
    this.log.error({ reason }, 'watchdog kicks stopped: the board will be reset');
  }

  get alarms(): string[] {
    const a: string[] = [];
    for (const l of this.membership.links) if (!l.up) a.push(`partner link ${l.name} down`);
    const p = this.membership.partnerView;
    if (p.state === 'dead') a.push('partner lost');
    if (this.fenceStats.lastError && this.role !== 'PRIMARY') a.push(`fencing failed: ${this.fenceStats.lastError}`);
    if (this.watchdog && !this.kickTimer) a.push('watchdog not kicked');
    return a;
  }

  status(): HaStatus {
    const partner = this.membership.partnerView.heartbeat;
    return {
      board: this.board.name,
      role: this.role,
      since: new Date(this.since).toISOString(),
      generation: this.generation,
      preferred: partner ? isPreferred({ name: this.board.name, priority: this.board.ha!.priority }, { name: partner.sender, priority: partner.priority }) : null,
      partner: this.membership.partnerView,
      links: this.membership.links,
      alarms: this.alarms,
      fencing: { method: this.fencing.method, ...this.fenceStats },
      watchdog: this.watchdog ? { device: this.watchdog.path, kicks: this.watchdog.kicks, kicking: this.kickTimer !== undefined } : null,
      loopDelayMs: this.membership.loopDelayMs,
      lastTransition: this.lastTransition,
    };
  }

  /** Orderly stop: announce STOPPING, stop heartbeats, magic-close the watchdog. */
  async stop(): Promise<void> {
    this.fire('stop');
    clearTimeout(this.startupTimer);
    clearTimeout(this.fenceRetry);
    await this.membership.stop();
    clearInterval(this.kickTimer);
    this.kickTimer = undefined;
    this.watchdog?.magicClose();
  }
}

function cpuLoadPercent(): number | null {
  const n = cpus().length;
  return n ? Math.min(100, (loadavg()[0]! / n) * 100) : null;
}
