/**
 * Hosting the guest on this board: the service endpoint, the guest supervisor and the replicator
 * between them (the seam every input passes through). Serving (endpoint open, service address held)
 * and running the guest are separate, because a backup runs a clone without serving.
 */
import type { BoardProfile } from '../config/board-profile.js';
import type { GuestDescriptor } from '../config/guest-descriptor.js';
import { UsError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { releaseAddress, takeAddress } from '../hw/netaddr.js';
import { Replicator } from './replicator.js';
import { ServiceEndpoint } from '../guest/service-endpoint.js';
import { GuestSupervisor, type GuestStatus } from '../guest/supervisor.js';

/** Management commands an operator may send to the guest application. */
const MANAGEMENT_COMMANDS = new Set(['PING', 'STATE', 'SAVE', 'HANG']);

export class GuestHost {
  readonly endpoint: ServiceEndpoint;
  readonly supervisor: GuestSupervisor;
  readonly replicator: Replicator;
  private serving = false;

  constructor(readonly board: BoardProfile, readonly guest: GuestDescriptor, private readonly log: Logger) {
    this.supervisor = new GuestSupervisor(board, guest, log.child({ component: 'guest' }));
    const i = board.input;
    this.replicator = new Replicator({
      guest: this.supervisor.port, log: log.child({ component: 'replication' }), ...witnessBounds(board),
      maxQueuedInputs: i.maxQueuedInputs, maxPendingReplies: i.maxPendingReplies, pendingReplyMaxAgeMs: i.pendingReplyMaxAgeMs,
      clientMap: { cacheEntries: i.guestReplyCacheEntries, cacheMargin: i.replyCacheMargin },
    });
    this.endpoint = new ServiceEndpoint({
      service: board.service, auth: board.externalServices.auth, maxRequestBytes: i.maxRequestBytes,
      ratePerSource: i.ratePerSource, burstPerSource: i.burstPerSource, trackedSources: i.trackedSources,
    }, log.child({ component: 'endpoint' }), this.replicator.clients);
    this.endpoint.attach(this.replicator);
    this.supervisor.port.on('output', (o) => this.replicator.onGuestOutput(o));
  }

  get isServing(): boolean {
    return this.serving;
  }

  get guestRunning(): boolean {
    return this.supervisor.currentState === 'running';
  }

  /** A board on its own: boot the guest, then serve. The endpoint opens first so a port in use fails before QEMU starts. */
  async startStandalone(): Promise<void> {
    await this.serve();
    try {
      await this.supervisor.start();
    } catch (e) {
      await this.unserve();
      throw e;
    }
  }

  /** Takes the service address (if it moves) and opens the endpoint. */
  async serve(): Promise<void> {
    if (this.serving) return;
    const s = this.board.service;
    if (s.interface) await takeAddress(s.interface, s.address, s.prefixLength);
    await this.endpoint.open();
    this.replicator.setOutput(this.endpoint);
    this.serving = true;
    this.log.info({ address: s.address, port: s.port }, 'serving');
  }

  async unserve(): Promise<void> {
    if (!this.serving) return;
    this.serving = false;
    this.replicator.setOutput(undefined);
    this.endpoint.close();
    const s = this.board.service;
    if (s.interface) await releaseAddress(s.interface, s.address, s.prefixLength);
  }

  async stop(): Promise<void> {
    await this.unserve();
    await this.supervisor.stop();
    this.replicator.close();
  }

  /** The guest, for commands that act on it; names the board when it runs none. */
  private running(): GuestSupervisor {
    if (!this.guestRunning) throw new UsError('US_ERR_NOT_RUNNING', `no guest is running on board ${this.board.name}`);
    return this.supervisor;
  }

  /** A management command of the operator's (PING, STATE, SAVE, HANG) to the guest application. */
  async manage(command: unknown): Promise<{ reply: string }> {
    const s = this.running();
    const cmd = String(command ?? '').trim().toUpperCase();
    if (!MANAGEMENT_COMMANDS.has(cmd.split(' ')[0]!)) throw new UsError('US_ERR_CONTROL', `unknown management command "${cmd}" (known: ${[...MANAGEMENT_COMMANDS].join(', ')})`);
    return { reply: await s.port.management(cmd, 5000) };
  }

  /**
   * Fault injection for tests: lose the next `lose` requests on the way to this board's guest,
   * deliver `payload` to this board's guest only (never replicated), or with `nmi` send its CPU an
   * NMI (QMP inject-nmi): the kernel's command line (unknown_nmi_panic) makes that a kernel panic,
   * what an operator also does to take a crash dump of a hung guest. Returns the journal line.
   */
  async inject(a: { lose?: unknown; payload?: unknown; nmi?: unknown }): Promise<{ result: Record<string, unknown>; journal: string }> {
    const port = this.running().port;
    if (a.nmi === true) {
      const hv = this.supervisor.hypervisor;
      if (!hv) throw new UsError('US_ERR_NOT_RUNNING', 'guest.inject: no QEMU runs the guest here');
      await hv.qmp.execute('inject-nmi');
      return { result: { nmi: true }, journal: 'NMI sent to this board\'s guest (a kernel panic: unknown_nmi_panic)' };
    }
    if (a.lose !== undefined) {
      const n = Number(a.lose);
      if (!Number.isInteger(n) || n < 1 || n > 1000) throw new UsError('US_ERR_CONTROL', 'guest.inject: lose must be an integer 1-1000');
      port.loseNext = n;
      return { result: { lose: n }, journal: `the next ${n} requests for this board's guest will be lost on the way` };
    }
    const payload = String(a.payload ?? '');
    if (!payload || payload.length > 200) throw new UsError('US_ERR_CONTROL', 'guest.inject: payload of 1-200 characters');
    port.deliver({ kind: 'request', clientPort: 65000, payload: Buffer.from(payload) });
    return { result: { injected: payload }, journal: `injected "${payload}" into this board's guest only` };
  }

  async status(): Promise<{ guest: GuestStatus; endpoint: Record<string, number> }> {
    return { guest: await this.supervisor.status(), endpoint: { ...this.endpoint.counters, clients: this.endpoint.clients.size, replyCacheMirror: this.endpoint.clients.cachedEntries } };
  }
}

/**
 * The witness's bounds from the board's profile: with a fast bound, reported first at it and again
 * as often while the silence lasts (the primary declines while its guest is only slow, up to
 * guestHangMs); without one, once at guestHangMs. No witness when guestHangMs is 0.
 */
export function witnessBounds(board: BoardProfile): { guestHangMs?: number; guestHangRepeatMs?: number } {
  const slow = board.ha?.guestHangMs;
  if (!slow) return {};
  const fast = guestHangFastMs(board);
  return fast ? { guestHangMs: fast, guestHangRepeatMs: fast } : { guestHangMs: slow };
}

/** The witness's fast bound in effect (ms), or 0: none (off, or no witness, or not below guestHangMs). */
export function guestHangFastMs(board: BoardProfile): number {
  const ha = board.ha;
  return ha?.guestHangFastMs && ha.guestHangMs && ha.guestHangFastMs < ha.guestHangMs ? ha.guestHangFastMs : 0;
}
