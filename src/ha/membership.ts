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
 *
 * Replays and restarts: a frame is believed only if it is bound to this board's current boot (its
 * `echo` is our generation, which the store never hands out twice): a frame made before the partner
 * heard this boot proves nothing, however authentic. The partner's generations (the highest heard, the
 * one fenced, the highest heard in version 2 or later and in version 3) survive restarts: they come in as `known` and every
 * change is emitted ('generations') for the store. See docs/ha.md, "Replays, restarts and generations".
 */
import { EventEmitter } from 'node:events';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import type { PartnerLink } from '../hw/links/links.js';
import { FRAME_VERSION, encodeHeartbeat, type ControllerHealth, type GuestHealth, type Heartbeat, type HeartbeatVersion, type Role, type WatchdogHealth } from './frame.js';
import { decodeAnyHeartbeat, encodeHeartbeatV1 } from './frame-v1.js';

export interface LocalState {
  role: Role;
  guest: GuestHealth;
  watchdog: WatchdogHealth;
  cpuLoad: number | null;
  health: ControllerHealth;
  /** The priority to advertise instead of MembershipOptions.priority (a board serving a state it lost). */
  priority?: number;
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
  /** The partner's generations as persisted (default: none heard yet). */
  known?: PartnerGenerations;
  /**
   * First sequence number sent (default 0). For tests that start a counter near 2^32; a board
   * always starts at 0 (its generation, not its sequence, tells its boots apart).
   */
  initialSeq?: number;
}

/** What this board knows of its partner's boot generations; persisted (src/ha/generations.ts). */
export interface PartnerGenerations {
  /** The highest boot generation of the partner seen in an authentic frame: older ones are rejected. */
  highest: number;
  /** The partner's generation when this board last fenced it: frames of it or older never bring it back. */
  fenced: number;
  /** The highest partner generation heard in a frame of version 2 or later: version-1 frames of it or older are refused. */
  v2: number;
  /** The highest partner generation heard in a version-3 frame: version-2 (and 1) frames of it or older are refused. */
  v3: number;
}

export type RejectReason = 'malformed' | 'crc' | 'version' | 'mac' | 'self' | 'stale' | 'old-generation' | 'unbound';

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
  /** The partner's generations changed (a partner boot, a fence): to be persisted. */
  on(ev: 'generations', fn: (g: PartnerGenerations) => void): this;
  /**
   * The heartbeat version this board sends changed: 1 or 2 while the partner is heard only in that
   * version (an older firmware, during a rolling upgrade), 3 again once it is heard in version 3. The
   * layers above speak the previous firmware's partner channels only while it is below 3.
   */
  on(ev: 'send-version', fn: (version: HeartbeatVersion) => void): this;
  /** The partner has heard a generation of ours above our own: our store lost or rolled it back. Once per generation. */
  on(ev: 'generation-behind', fn: (echo: number) => void): this;
  /** Frames bound to this boot keep being rejected while the partner is not alive (see IGNORED_GRACE_MS). Once per generation and reason. */
  on(ev: 'partner-ignored', fn: (hb: Heartbeat, reason: IgnoredReason) => void): this;
}

export type IgnoredReason = 'fenced' | 'old-generation' | 'stale';

/** How early a timer may fire by performance.now(): libuv timers use a clock cached per loop turn. */
const TIMER_SLACK_MS = 2;
/**
 * Frames of a fenced or superseded partner boot still arrive for a while (the serial line's backlog);
 * after this long they are not in flight any more: a replay, or a partner whose generation went back.
 */
const IGNORED_GRACE_MS = 1000;

const emptyRejects = (): Record<RejectReason, number> => ({ malformed: 0, crc: 0, version: 0, mac: 0, self: 0, stale: 0, 'old-generation': 0, unbound: 0 });

export class Membership extends EventEmitter {
  private books: LinkBook[];
  private seq: number;
  private generation: number;
  private sendTimer?: NodeJS.Timeout;
  private deadTimer?: NodeJS.Timeout;
  private partnerState: PartnerView['state'] = 'unknown';
  private partnerSince = Date.now();
  private lastHeardAny = 0;
  private known: PartnerGenerations;
  /** When `known` last moved on (a newer partner boot heard, a fence): the start of IGNORED_GRACE_MS. */
  private knownChangedAt = performance.now();
  /** The frame version sent: 1 or 2 while the partner is heard only in that version (a rolling upgrade). */
  private sendVersion: HeartbeatVersion = FRAME_VERSION;
  private behindReported = 0;
  private readonly ignoredReported = new Set<string>();
  private partner?: Heartbeat;
  private stopped = false;
  /** How late each heartbeat timer tick ran, ns (the event-loop delay as the heartbeats see it). */
  private readonly loopDelay: RecordableHistogram = createHistogram();
  private lastTick = 0;
  sent = 0;

  constructor(readonly o: MembershipOptions) {
    super();
    this.seq = o.initialSeq ?? 0;
    this.generation = o.generation;
    this.known = { highest: 0, fenced: 0, v2: 0, v3: 0, ...o.known };
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
    this.stopped = true;
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
    if (this.stopped) return;
    const l = this.o.local();
    const hb: Heartbeat = {
      sender: this.o.self, generation: this.generation, echo: this.echo, seq: this.seq++, role: l.role, guest: l.guest,
      watchdog: l.watchdog, cpuLoad: l.cpuLoad, priority: l.priority ?? this.o.priority, health: l.health,
    };
    const frame = this.sendVersion === 1 ? encodeHeartbeatV1(hb, this.o.key) : encodeHeartbeat(hb, this.o.key, this.sendVersion);
    for (const b of this.books) b.link.send(frame);
    this.sent++;
  }

  /**
   * The partner's generation as we accept it, which binds its frames to its boot: the highest heard;
   * after a fence, the lowest generation that can bring the partner back (fenced + 1), so that a
   * partner still running at the fenced generation (or below) learns that it is behind.
   */
  private get echo(): number {
    const k = this.known;
    return k.highest > k.fenced || k.highest === 0 ? k.highest : k.fenced + 1;
  }

  private onFrame(b: LinkBook, f: Buffer): void {
    if (this.stopped) return; // a link may deliver what it had read before it closed
    const d = decodeAnyHeartbeat(f, this.o.key);
    if (typeof d === 'string') { b.rejected[d]++; return; }
    const { hb, version } = d;
    if (hb.sender === this.o.self) { b.rejected.self++; return; }
    // Version 1 has no echo: a frame of it is believed only from a partner boot newer than any heard
    // in version 2 or 3 (the previous firmware during a rolling upgrade, never a replay from before it).
    // Nor is a partner boot heard in version 3 ever taken back to version 2 (no downgrade).
    const bound = version === 1 || hb.echo === this.generation;
    if (hb.generation < this.known.highest) { b.rejected['old-generation']++; if (bound) this.ignored(hb, 'old-generation'); return; }
    if ((version === 1 && hb.generation <= this.known.v2) || (version === 2 && hb.generation <= this.known.v3)) { b.rejected.version++; return; }
    if (version !== 1 && hb.echo > this.generation && this.behindReported !== this.generation) {
      this.behindReported = this.generation;
      this.emit('generation-behind', hb.echo);
    }
    this.learn(hb.generation, version);
    if (!bound) { b.rejected.unbound++; return; }
    if (hb.generation === b.lastGeneration && hb.seq <= b.lastSeq) { b.rejected.stale++; this.ignored(hb, 'stale'); return; }
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
    if (hb.generation <= this.known.fenced) { this.ignored(hb, 'fenced'); return; }
    if (!newer) return;
    this.lastHeardAny = now;
    this.deadTimer ??= setTimeout(() => this.checkPartner(), this.o.deadtimeMs);
    this.deadTimer.refresh();
    this.partner = hb;
    if (this.partnerState !== 'alive') {
      this.partnerState = 'alive';
      this.partnerSince = Date.now();
      this.ignoredReported.clear();
      this.emit('partner-alive', hb);
    } else if (prev && (prev.role !== hb.role || prev.guest !== hb.guest || prev.generation !== hb.generation || prev.watchdog !== hb.watchdog || prev.health !== hb.health)) {
      this.emit('partner-update', hb, prev);
    }
  }

  /**
   * An authentic frame that is not older than the highest generation heard teaches us the partner's
   * generation (for the echo; bound or not, so that both boards echo each other within one interval)
   * and which frame version it speaks. Any change is announced at once and handed on for the store.
   */
  private learn(generation: number, version: HeartbeatVersion): void {
    const k = this.known;
    let changed = false;
    if (generation > k.highest) { k.highest = generation; this.knownChangedAt = performance.now(); changed = true; }
    if (version >= 2 && generation > k.v2) { k.v2 = generation; changed = true; }
    if (version === 3 && generation > k.v3) { k.v3 = generation; changed = true; }
    const switched = this.sendVersion !== version;
    this.sendVersion = version;
    if (changed) this.emit('generations', { ...k });
    if (switched) this.emit('send-version', version);
    if (changed || switched) this.sendHeartbeat(); // the new echo (or frame version), now
  }

  /**
   * Frames bound to this boot but refused while the partner is not alive, once the in-flight ones
   * have had time to arrive: either a replay, or a partner that cannot be heard (its generation went
   * back, or it reuses one). Never silent: reported once per generation and reason.
   */
  private ignored(hb: Heartbeat, reason: IgnoredReason): void {
    if (this.partnerState === 'alive' || performance.now() - this.knownChangedAt < IGNORED_GRACE_MS) return;
    const key = `${hb.generation}:${reason}`;
    if (this.ignoredReported.has(key)) return;
    this.ignoredReported.add(key);
    this.emit('partner-ignored', hb, reason);
  }

  /** This board took a new generation while running (it was behind its partner's record of it). */
  setGeneration(generation: number): void {
    if (generation <= this.generation) return;
    this.generation = generation;
    this.sendHeartbeat();
  }

  /** The partner's generations as this board knows them (persisted by the HA controller). */
  get generations(): PartnerGenerations & { sendVersion: HeartbeatVersion } {
    return { ...this.known, sendVersion: this.sendVersion };
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
    const fenced = Math.max(this.known.fenced, this.partner?.generation ?? 0);
    this.partnerState = 'unknown';
    this.partnerSince = Date.now();
    if (fenced === this.known.fenced) return;
    this.known.fenced = fenced;
    this.knownChangedAt = performance.now();
    this.emit('generations', { ...this.known });
    this.sendHeartbeat(); // the echo now asks for a newer boot
  }

  /**
   * Takes another board as the partner (N+1 re-protection: the old partner is gone, a spare becomes
   * the new one). Only while no partner is heard. The links that can be re-addressed (Ethernet) now
   * send to and hear only `partnerAddress`; a point-to-point link (serial) cannot reach the new board
   * and is closed. What was known of the old partner's boots is replaced by `known` (the new
   * partner's, as persisted), so its frames are judged on their own. Returns the links closed.
   */
  async adoptPartner(partnerAddress: string, known: PartnerGenerations): Promise<string[]> {
    if (this.partnerState === 'alive') throw new Error(`the partner ${this.partner?.sender ?? ''} is heard: a new partner only replaces one that is gone`);
    const closed: LinkBook[] = [];
    for (const b of this.books) {
      clearTimeout(b.timer);
      b.timer = undefined;
      if (b.link.retarget) {
        b.link.retarget(partnerAddress);
        Object.assign(b, { lastHeard: 0, lastGeneration: 0, lastSeq: -1 });
        if (b.up) this.setLink(b, false, `partner changed: now ${partnerAddress}`);
      } else {
        closed.push(b);
      }
    }
    this.books = this.books.filter((b) => !closed.includes(b));
    for (const b of closed) {
      if (b.up) this.setLink(b, false, 'partner changed: this link does not reach the new partner');
      await b.link.close();
    }
    clearTimeout(this.deadTimer);
    this.deadTimer = undefined;
    this.known = { ...known };
    this.knownChangedAt = performance.now();
    this.partner = undefined;
    this.partnerState = 'unknown';
    this.partnerSince = Date.now();
    this.lastHeardAny = 0;
    if (this.sendVersion !== FRAME_VERSION) {
      this.sendVersion = FRAME_VERSION;
      this.emit('send-version', FRAME_VERSION);
    }
    this.behindReported = 0;
    this.ignoredReported.clear();
    this.sendHeartbeat();
    return closed.map((b) => b.link.name);
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
