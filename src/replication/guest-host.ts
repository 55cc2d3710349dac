/**
 * Hosting the guest on this board: the service endpoint, the guest supervisor and the replicator
 * between them (the seam every input passes through). Serving (endpoint open, service address held)
 * and running the guest are separate, because a backup runs a clone without serving.
 */
import type { BoardProfile } from '../config/board-profile.js';
import type { GuestDescriptor } from '../config/guest-descriptor.js';
import type { Logger } from '../core/log.js';
import { releaseAddress, takeAddress } from '../hw/netaddr.js';
import { Replicator } from './replicator.js';
import { ServiceEndpoint } from '../guest/service-endpoint.js';
import { GuestSupervisor, type GuestStatus } from '../guest/supervisor.js';

export class GuestHost {
  readonly endpoint: ServiceEndpoint;
  readonly supervisor: GuestSupervisor;
  readonly replicator: Replicator;
  private serving = false;

  constructor(readonly board: BoardProfile, readonly guest: GuestDescriptor, private readonly log: Logger) {
    this.supervisor = new GuestSupervisor(board, guest, log.child({ component: 'guest' }));
    this.replicator = new Replicator({ guest: this.supervisor.port, log: log.child({ component: 'replication' }) });
    this.endpoint = new ServiceEndpoint({ service: board.service, auth: board.externalServices.auth }, log.child({ component: 'endpoint' }), this.replicator.clients);
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

  async status(): Promise<{ guest: GuestStatus; endpoint: Record<string, number> }> {
    return { guest: await this.supervisor.status(), endpoint: { ...this.endpoint.counters, clients: this.endpoint.clients.size } };
  }
}
