/**
 * The guest application's UDP ports over the private wire: delivers inputs to its service port,
 * AUTH answers to its AUTH socket, management commands to its management port, and classifies what
 * the guest sends back. Owns no socket of its own (the guest NIC carries the frames: GuestLink, or a
 * fake in tests).
 */
import { EventEmitter } from 'node:events';
import { UsError } from '../core/errors.js';
import type { GuestDatagram, GuestNic } from '../hw/guestnet/nic.js';
import type { GuestDescriptor } from '../config/guest-descriptor.js';
import type { GuestInput, GuestOutput, InputSink } from './io.js';

/**
 * Controller-side source ports of management commands (outside the client port range). Management
 * commands carry no id, and the guest answers to the command's source port: each command in flight
 * gets its own port, so a late answer to a command that timed out is never taken for another's.
 */
export const MANAGEMENT_SOURCE_PORT = 61000;
const MANAGEMENT_PORTS = 256;

/**
 * Requests handed to the guest and not yet known to be processed, at most. The guest's service
 * socket buffers about 1800 datagrams (4 MB of e1000's 2 KB receive buffers); beyond that its
 * kernel drops them, which is an input lost in one copy only. A replayed log or the inputs released
 * after a clone's cut-over would arrive faster than the guest works, so delivery waits for room.
 */
export const GUEST_WINDOW = 256;
/**
 * A guest that answers PINGs with the same processed count for this long, with a full window
 * unconfirmed and no AUTH question open, is idle: what it was counted as handed and never processed
 * will never be (lost on the way: the loss watch reports it). Flow control stops waiting for it:
 * waiting forever stalled a restored copy's whole replay, and its service (2026-12-05).
 */
export const IDLE_WRITE_OFF_MS = 1000;
/**
 * Requests handed to a guest blocked on an AUTH question (it reads none until the answer, further
 * down the queue, reaches it), at most: below the ~1800 its service socket buffers. Unbounded, a
 * replay with an early AUTH answer handed 2000 requests at once to a blocked guest and it dropped a
 * run of them (acknowledged registrations missing after a restore, 2026-12-05). Past the bound
 * the guest's own AUTH timeout (5 s) unblocks it: slower, nothing lost.
 */
export const GUEST_BLOCKED_LIMIT = 1024;

/** Subscriber names as the guest protocol allows them (PROTOCOL.md §3). */
const SUB = '[A-Za-z0-9_.+-]{1,32}';
const AUTH_QUESTION = new RegExp(`^AUTHQ (${SUB})(?:\\s|$)`);
const AUTH_ANSWER = new RegExp(`^AUTHR (${SUB}) `);

const REG_REQUEST = new RegExp(`^\\S{1,16} REG (${SUB})\\s*$`);
/** A reply that ends a REG's AUTH question: registered, denied, or no answer within the guest's 5 s (PROTOCOL.md §5). */
const REG_OUTCOME = new RegExp(`^\\S{1,16} (?:OK REG|ERR DENIED|ERR AUTHUNAVAIL) (${SUB})(?:\\s|$)`);

/** The subscriber an AUTH question (`AUTHQ <sub>`, from the guest) or answer (`AUTHR <sub> <verdict>`, to it) is about. */
export function authSubject(kind: 'question' | 'answer', payload: Buffer): string | undefined {
  return (kind === 'question' ? AUTH_QUESTION : AUTH_ANSWER).exec(payload.toString('latin1'))?.[1];
}

/**
 * The subscriber of a service request `<id> REG <sub>` (the requests that make the guest ask AUTH),
 * or of a reply that ends such a question (`OK REG`, `ERR DENIED`, `ERR AUTHUNAVAIL`).
 */
export function registrationSubject(kind: 'request' | 'outcome', payload: Buffer): string | undefined {
  return (kind === 'request' ? REG_REQUEST : REG_OUTCOME).exec(payload.toString('latin1'))?.[1];
}

export declare interface GuestPort {
  on(ev: 'output', fn: (o: GuestOutput) => void): this;
}

export class GuestPort extends EventEmitter implements InputSink {
  /** Service requests delivered since the guest (or its state) started: the drain point is PING seq = base + this. */
  serviceDelivered = 0;
  /** Subscribers the guest asked AUTH about and has not been given an answer for yet. */
  readonly authOutstanding = new Set<string>();
  /**
   * The subscriber whose answer was handed to the guest while it asked, until its REG's outcome
   * (or a question about another). An AUTHQ about it meanwhile is a retransmission the guest sent
   * before it read the answer (every 500 ms): it opens nothing (see noteAuthQuestion).
   */
  authAnswered: string | undefined;
  private mgmtWaiters = new Map<number, { resolve(s: string): void; reject(e: Error): void; timer: NodeJS.Timeout }>();
  private mgmtNext = 0;
  delivered = 0;

  constructor(private readonly link: GuestNic, private readonly ports: GuestDescriptor['ports']) {
    super();
    link.on('datagram', (d) => this.onDatagram(d));
  }

  /** Fault injection (tests): this many next service requests are counted as delivered but never sent. */
  loseNext = 0;
  /** Of the requests counted in serviceDelivered, how many the guest has processed (from its PING `seq=`). */
  private confirmed = 0;
  /** The guest's processed-request count when serviceDelivered was last zero (undefined: it reports none). */
  private seqBase?: number;
  private refreshing = false;
  private roomWaiters: Array<() => void> = [];
  /** When the guest was handed the first request it has not answered since its last output. */
  private workSince?: number;
  /** The processed count seen while the window was full, and since when (IDLE_WRITE_OFF_MS). */
  private stall?: { seq: number; since: number };
  /** The guest's processed count in its last PING answer (undefined: none yet, or it reports none). */
  lastCount?: number;
  /** Requests flow control stopped waiting for (an idle guest never processed them); counted, never forgotten by the loss watch. */
  writtenOff = 0;
  /** When the guest's confirmed count last moved (or work was handed to an idle guest). */
  private lastProgressAt = 0;
  /** When the guest last sent an AUTH question (performance.now()): it blocks on it. */
  private lastQuestionAt = -Infinity;

  /**
   * How long the guest has had a request to answer and sent nothing at all (no reply, no AUTH
   * question), ms; 0 when it has answered everything it was handed. A guest that works, however
   * slowly, keeps resetting it; a hung one (its QEMU stopped, its application stuck) does not.
   */
  get silentWithWorkMs(): number {
    return this.workSince === undefined ? 0 : performance.now() - this.workSince;
  }

  /** Called when the guest is handed work while it had none (a possible silence begins): the supervisor's quick checks arm on it. */
  onWorkStart?: () => void;

  /** When the current silence with work began (performance.now()), or undefined: it names the episode. */
  get silentWithWorkSince(): number | undefined {
    return this.workSince;
  }

  /** Starts counting afresh: the guest (or its state) has processed `seqBase` requests, none handed over since. */
  resetCount(seqBase: number | undefined): void {
    this.serviceDelivered = 0;
    this.confirmed = 0;
    this.stall = undefined;
    this.seqBase = seqBase;
  }

  /** Requests the guest will have processed once it has worked through what it was handed (undefined: it reports no count). */
  get expectedSeq(): number | undefined {
    return this.seqBase === undefined ? undefined : this.seqBase + this.serviceDelivered;
  }

  /** Requests handed over that the guest may not have processed yet. */
  get unconfirmed(): number {
    return this.serviceDelivered - this.confirmed;
  }

  /**
   * Asks the guest (management PING) how many requests it has processed; undefined if its answer
   * carries no count. Every answer also confirms requests for the flow control.
   */
  async processedCount(timeoutMs: number): Promise<number | undefined> {
    const seq = Number(/seq=(\d+)/.exec(await this.management('PING', timeoutMs))?.[1]);
    if (!Number.isFinite(seq)) return undefined;
    this.lastCount = seq;
    if (this.seqBase !== undefined) {
      const before = this.confirmed;
      this.confirmed = Math.max(this.confirmed, Math.min(this.serviceDelivered, seq - this.seqBase));
      if (this.confirmed > before) this.lastProgressAt = performance.now();
      this.noteStall(seq);
    }
    return seq;
  }

  /** A full window that an idle guest will never work through: stop waiting for it (IDLE_WRITE_OFF_MS). */
  private noteStall(seq: number): void {
    const now = performance.now();
    // A guest that asked AUTH lately is blocked on its question (for up to its own 5 s), not idle,
    // whatever this side thinks of the question: written off then, the requests it would work
    // through once answered were handed on top of them, past what its socket buffers (requests
    // dropped in the guest after a restore, the restored copy short of its count: CI, 2026-12-07).
    if (this.unconfirmed < GUEST_WINDOW || this.authOutstanding.size > 0 || now - this.lastQuestionAt < IDLE_WRITE_OFF_MS) { this.stall = undefined; return; }
    if (!this.stall || this.stall.seq !== seq) { this.stall = { seq, since: now }; return; }
    if (now - this.stall.since < IDLE_WRITE_OFF_MS) return;
    this.writtenOff += this.unconfirmed;
    this.confirmed = this.serviceDelivered;
    this.stall = undefined;
  }

  working(): boolean {
    if (this.seqBase === undefined || this.unconfirmed <= 0) return false;
    this.refresh(); // one PING at a time: its count says whether it moved
    return performance.now() - this.lastProgressAt < IDLE_WRITE_OFF_MS;
  }

  hasRoom(guestBlocked = false): boolean {
    if (this.seqBase === undefined) return true; // a guest that reports no count gets no flow control
    const u = this.unconfirmed;
    if (guestBlocked) return u < GUEST_BLOCKED_LIMIT;
    if (u >= GUEST_WINDOW / 2) this.refresh(); // ask early, so a steady stream never has to wait
    return u < GUEST_WINDOW;
  }

  whenRoom(fn: () => void): void {
    this.roomWaiters.push(fn);
    this.refresh();
  }

  /** One PING at a time: its `seq=` says how many requests the guest has processed. */
  private refresh(): void {
    if (this.refreshing) return;
    this.refreshing = true;
    let failed = false;
    this.processedCount(1000).catch(() => { failed = true; }).finally(() => {
      this.refreshing = false;
      if (!this.roomWaiters.length) return;
      if (this.seqBase === undefined || this.unconfirmed < GUEST_WINDOW) {
        const waiters = this.roomWaiters;
        this.roomWaiters = [];
        for (const w of waiters) w();
      } else {
        setTimeout(() => this.refresh(), failed ? 50 : 2);
      }
    });
  }

  deliver(input: GuestInput): boolean {
    this.delivered++;
    if (input.kind === 'request') {
      if (this.unconfirmed <= 0) this.lastProgressAt = performance.now(); // an idle guest starts on it now
      this.serviceDelivered++;
      if (this.workSince === undefined) {
        this.workSince = performance.now();
        this.onWorkStart?.();
      }
      if (this.loseNext > 0) { this.loseNext--; return true; }
      return this.link.send(input.clientPort, this.ports.service, input.payload);
    }
    const sub = authSubject('answer', input.payload);
    if (sub && this.authOutstanding.delete(sub)) this.authAnswered = sub;
    return this.link.send(this.ports.auth, this.ports.guestAuth, input.payload);
  }

  /** Sends one management command (PING, SAVE, STATE, HANG) and waits for its one-line answer. */
  management(command: string, timeoutMs = 2000): Promise<string> {
    return new Promise((resolve, reject) => {
      let port = 0;
      for (let i = 0; i < MANAGEMENT_PORTS; i++) {
        const p = MANAGEMENT_SOURCE_PORT + ((this.mgmtNext + i) % MANAGEMENT_PORTS);
        if (!this.mgmtWaiters.has(p)) { port = p; break; }
      }
      if (!port) { reject(new UsError('US_ERR_TIMEOUT', `too many management commands in flight (${MANAGEMENT_PORTS})`)); return; }
      this.mgmtNext = (port - MANAGEMENT_SOURCE_PORT + 1) % MANAGEMENT_PORTS;
      const timer = setTimeout(() => {
        this.mgmtWaiters.delete(port);
        reject(new UsError('US_ERR_TIMEOUT', `guest did not answer management command ${command} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.mgmtWaiters.set(port, { resolve, reject, timer });
      if (!this.link.send(port, this.ports.management, Buffer.from(command))) {
        clearTimeout(timer);
        this.mgmtWaiters.delete(port);
        reject(new UsError('US_ERR_NOT_RUNNING', 'guest NIC is not connected'));
      }
    });
  }

  /** Forgets in-flight management commands (the guest was restarted). */
  resetManagement(): void {
    for (const w of this.mgmtWaiters.values()) { clearTimeout(w.timer); w.reject(new UsError('US_ERR_NOT_RUNNING', 'guest restarted')); }
    this.mgmtWaiters.clear();
    this.authOutstanding.clear();
    this.authAnswered = undefined;
    this.workSince = undefined;
  }

  /**
   * One question at a time (the guest blocks on it): a new subject ends any other. A question about
   * the subscriber just answered is the guest's retransmission that crossed the answer: reopened, it
   * stayed open until the REG's outcome, and a clone cut in that window was told to expect a
   * question it had been answered (CI, 2026-12-06: AUTH answers then handed to the clone before it
   * asked, ERR AUTHUNAVAIL on the backup only).
   */
  private noteAuthQuestion(sub: string): void {
    if (sub === this.authAnswered) return;
    this.authAnswered = undefined;
    if (!this.authOutstanding.has(sub)) { this.authOutstanding.clear(); this.authOutstanding.add(sub); }
  }

  private onDatagram(d: GuestDatagram): void {
    if (d.srcPort === this.ports.management && d.dstPort >= MANAGEMENT_SOURCE_PORT && d.dstPort < MANAGEMENT_SOURCE_PORT + MANAGEMENT_PORTS) {
      const w = this.mgmtWaiters.get(d.dstPort);
      if (w) { this.mgmtWaiters.delete(d.dstPort); clearTimeout(w.timer); w.resolve(d.payload.toString('utf8').trim()); }
      return;
    }
    if (d.srcPort === this.ports.service) {
      this.workSince = undefined;
      // A REG's outcome ends its question, whatever was seen before: a retransmitted AUTHQ the guest
      // sent just before it read the answer arrives after that answer was handed over, and left the
      // question "open" for good (the loss watch blind; a clone told to expect it, its delivery then
      // unpaced and AUTH answers handed to it before it asked, which the guest discards: ERR
      // AUTHUNAVAIL on the backup only, a divergence and a re-clone).
      if (this.authOutstanding.size || this.authAnswered) {
        const sub = registrationSubject('outcome', d.payload);
        if (sub) this.authOutstanding.delete(sub);
        if (sub && sub === this.authAnswered) this.authAnswered = undefined;
      }
      this.emit('output', { kind: 'reply', clientPort: d.dstPort, payload: d.payload } satisfies GuestOutput);
      return;
    }
    if (d.dstPort === this.ports.auth) {
      const sub = authSubject('question', d.payload);
      this.lastQuestionAt = performance.now();
      if (sub) this.noteAuthQuestion(sub);
      this.workSince = undefined;
      this.emit('output', { kind: 'auth-query', payload: d.payload } satisfies GuestOutput);
    }
  }
}
