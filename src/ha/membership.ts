/**
 * Membership: is the partner alive? Sends a heartbeat on every link each `intervalMs`, accepts only
 * authentic, fresh frames from the partner, keeps a state per link (down after `linkTimeoutMs` of
 * silence on it, like knet) and declares the partner dead only when EVERY link has been silent for
 * `deadtimeMs`. Owns the links it is given and the timers; decides nothing about roles.
 *
 * Event-loop stalls: a verdict never comes straight from a timer. Node runs timers before it polls
 * for I/O, so after a stall the partner's frames may be sitting unread in the socket buffers; every
 * verdict is therefore confirmed in a setImmediate (after the poll phase has read them). The loop
 * delay is measured and reported: as the lateness of the heartbeat timer itself, which is what a
 * stall costs the partner, rather than by monitorEventLoopDelay's own 1 ms timer (another 1000
 * wake-ups a second: a few % of a core on an idle board).
 */
import { EventEmitter } from 'node:events';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import type { PartnerLink } from '../hw/links/links.js';
import { decodeHeartbeat, encodeHeartbeat, type ControllerHealth, type GuestHealth, type Heartbeat, type Role, type WatchdogHealth } from './frame.js';

export interface LocalState {
  role: Role;
  guest: GuestHealth;
  watchdog: WatchdogHealth;
  cpuLoad: number | null;
  health: ControllerHealth;
}

export interface MembershipOptions {
  self: string;
  priority: number;
  generation: number;
  key: Buffer;
  /** advert interval: one heartbeat per link per interval. */
  intervalMs: number;
  /** link_timeout: silence on one link before it is reported down. */
  linkTimeoutMs: number;
  /** deadtime: silence on every link before the partner is declared dead. */
  deadtimeMs: number;
  links: PartnerLink[];
  local: () => LocalState;
}

export type RejectReason = 'malformed' | 'crc' | 'version' | 'mac' | 'self' | 'stale' | 'old-generation';

export interface LinkState {
  name: string;
  up: boolean;
  lastHeardMsAgo: number | null;
  since: string;
  changes: number;
  counters: PartnerLink['counters'];
  rejected: Record<RejectReason, number>;
  lastSeq?: number;
  lastGeneration?: number;
}

export interface PartnerView {
  state: 'unknown' | 'alive' | 'dead';
  heartbeat?: Heartbeat;
  lastHeardMsAgo: number | null;
  since: string;
}

interface LinkBook {
  link: PartnerLink;
  up: boolean;
  lastHeard: number;
  since: number;
  changes: number;
  lastGeneration: number;
  lastSeq: number;
  rejected: Record<RejectReason, number>;
  timer?: NodeJS.Timeout;
}

export declare interface Membership {
  on(ev: 'link', fn: (link: string, up: boolean, cause: string) => void): this;
  on(ev: 'partner-alive', fn: (hb: Heartbeat) => void): this;
  on(ev: 'partner-dead', fn: (silentMs: number) => void): this;
  on(ev: 'partner-update', fn: (hb: Heartbeat, previous: Heartbeat | undefined) => void): this;
}

/** How early a timer may fire by performance.now(): libuv timers use a clock cached per loop turn. */
const TIMER_SLACK_MS = 2;

const emptyRejects = (): Record<RejectReason, number> => ({ malformed: 0, crc: 0, version: 0, mac: 0, self: 0, stale: 0, 'old-generation': 0 });

export class Membership extends EventEmitter {
  private readonly books: LinkBook[];
  private seq = 0;
  private sendTimer?: NodeJS.Timeout;
  private deadTimer?: NodeJS.Timeout;
  private partnerState: PartnerView['state'] = 'unknown';
  private partnerSince = Date.now();
  private lastHeardAny = 0;
  private highestGeneration = 0;
  /** Frames of this boot generation of the partner (or older) come from a board we powered off. */
  private fencedGeneration = 0;
  private partner?: Heartbeat;
  /** How late each heartbeat timer tick ran, ns (the event-loop delay as the heartbeats see it). */
  private readonly loopDelay: RecordableHistogram = createHistogram();
  private lastTick = 0;
  sent = 0;

  constructor(readonly o: MembershipOptions) {
    super();
    this.books = o.links.map((link) => ({
      link, up: false, lastHeard: 0, since: Date.now(), changes: 0, lastGeneration: 0, lastSeq: -1, rejected: emptyRejects(),
    }));
    for (const b of this.books) b.link.on('frame', (f: Buffer) => this.onFrame(b, f));
  }

  async start(): Promise<void> {
    for (const b of this.books) await b.link.open();
    this.lastTick = performance.now();
    this.sendTimer = setInterval(() => this.tick(), this.o.intervalMs);
    this.sendHeartbeat();
  }

  async stop(): Promise<void> {
    clearInterval(this.sendTimer);
    clearTimeout(this.deadTimer);
    for (const b of this.books) { clearTimeout(b.timer); await b.link.close(); }
  }

  private tick(): void {
    const now = performance.now();
    this.loopDelay.record(Math.max(1, Math.round((now - this.lastTick - this.o.intervalMs) * 1e6)));
    this.lastTick = now;
    this.sendHeartbeat();
  }

  /** Sends a heartbeat now (also used to announce a role change without waiting for the interval). */
  sendHeartbeat(): void {
    const l = this.o.local();
    const frame = encodeHeartbeat({
      sender: this.o.self, generation: this.o.generation, echo: this.highestGeneration, seq: this.seq++, role: l.role, guest: l.guest,
      watchdog: l.watchdog, cpuLoad: l.cpuLoad, priority: this.o.priority, health: l.health,
    }, this.o.key);
    for (const b of this.books) b.link.send(frame);
    this.sent++;
  }

  private onFrame(b: LinkBook, f: Buffer): void {
    const hb = decodeHeartbeat(f, this.o.key);
    if (typeof hb === 'string') { b.rejected[hb]++; return; }
    if (hb.sender === this.o.self) { b.rejected.self++; return; }
    if (hb.generation < this.highestGeneration) { b.rejected['old-generation']++; return; }
    if (hb.generation === b.lastGeneration && hb.seq <= b.lastSeq) { b.rejected.stale++; return; }
    if (hb.generation > this.highestGeneration) this.highestGeneration = hb.generation;
    b.lastGeneration = hb.generation;
    b.lastSeq = hb.seq;
    const now = performance.now();
    b.lastHeard = now;
    if (!b.up) this.setLink(b, true, 'heartbeat received');
    b.timer ??= setTimeout(() => this.checkLink(b), this.o.linkTimeoutMs);
    b.timer.refresh();
    // Both links carry the same heartbeats, the serial one later: a copy older than what another
    // link already delivered proves its link alive, but says nothing new about the partner — it
    // must neither postpone a death verdict nor turn the partner's view back. Nor may a frame from
    // a boot we fenced bring that partner back.
    const prev = this.partner;
    const newer = !prev || hb.generation > prev.generation || (hb.generation === prev.generation && hb.seq > prev.seq);
    if (!newer || hb.generation <= this.fencedGeneration) return;
    this.lastHeardAny = now;
    this.deadTimer ??= setTimeout(() => this.checkPartner(), this.o.deadtimeMs);
    this.deadTimer.refresh();
    this.partner = hb;
    if (this.partnerState !== 'alive') {
      this.partnerState = 'alive';
      this.partnerSince = Date.now();
      this.emit('partner-alive', hb);
    } else if (prev && (prev.role !== hb.role || prev.guest !== hb.guest || prev.generation !== hb.generation || prev.watchdog !== hb.watchdog || prev.health !== hb.health)) {
      this.emit('partner-update', hb, prev);
    }
  }

  private checkLink(b: LinkBook): void {
    setImmediate(() => {
      const silent = performance.now() - b.lastHeard;
      if (silent >= this.o.linkTimeoutMs) {
        if (b.up) this.setLink(b, false, `silent for ${silent.toFixed(1)} ms (link timeout ${this.o.linkTimeoutMs} ms)`);
      } else if (silent >= this.o.linkTimeoutMs - TIMER_SLACK_MS) {
        // Timers run on libuv's cached loop clock and may fire a fraction of a ms early.
        setTimeout(() => this.checkLink(b), this.o.linkTimeoutMs - silent + 1);
      }
      // else a frame arrived in the meantime and refreshed the timer
    });
  }

  private checkPartner(): void {
    setImmediate(() => {
      const silent = performance.now() - this.lastHeardAny;
      if (silent >= this.o.deadtimeMs) {
        if (this.partnerState === 'alive') {
          this.partnerState = 'dead';
          this.partnerSince = Date.now();
          this.emit('partner-dead', silent);
        }
      } else if (silent >= this.o.deadtimeMs - TIMER_SLACK_MS) {
        setTimeout(() => this.checkPartner(), this.o.deadtimeMs - silent + 1);
      }
      // else a frame arrived in the meantime and refreshed the timer
    });
  }

  private setLink(b: LinkBook, up: boolean, cause: string): void {
    b.up = up;
    b.since = Date.now();
    b.changes++;
    this.emit('link', b.link.name, up, cause);
  }

  /** Treats the partner as unknown again (after it was fenced): only a new boot of it is news. */
  forgetPartner(): void {
    this.fencedGeneration = Math.max(this.fencedGeneration, this.partner?.generation ?? 0);
    this.partnerState = 'unknown';
    this.partnerSince = Date.now();
  }

  get partnerView(): PartnerView {
    return {
      state: this.partnerState,
      heartbeat: this.partner,
      lastHeardMsAgo: this.lastHeardAny ? Math.round(performance.now() - this.lastHeardAny) : null,
      since: new Date(this.partnerSince).toISOString(),
    };
  }

  get links(): LinkState[] {
    const now = performance.now();
    return this.books.map((b) => ({
      name: b.link.name,
      up: b.up,
      lastHeardMsAgo: b.lastHeard ? Math.round(now - b.lastHeard) : null,
      since: new Date(b.since).toISOString(),
      changes: b.changes,
      counters: { ...b.link.counters },
      rejected: { ...b.rejected },
      lastSeq: b.lastSeq >= 0 ? b.lastSeq : undefined,
      lastGeneration: b.lastGeneration || undefined,
    }));
  }

  /** Event-loop delay of this thread, ms. */
  get loopDelayMs(): { p50: number; p99: number; max: number } {
    const h = this.loopDelay;
    const ms = (ns: number) => Math.round(ns / 1e4) / 100;
    return { p50: ms(h.percentile(50)), p99: ms(h.percentile(99)), max: ms(h.max) };
  }
}
