/**
 * Hosting the guest on this board: the service endpoint, the guest supervisor and the input pipeline
 * between them, started and stopped as one. The daemon starts it when the board should serve.
 */
import type { BoardProfile } from '../config/board-profile.js';
import type { GuestDescriptor } from '../config/guest-descriptor.js';
import type { Logger } from '../core/log.js';
import { DirectPipeline } from './io.js';
import { ServiceEndpoint } from './service-endpoint.js';
import { GuestSupervisor, type GuestStatus } from './supervisor.js';

export class GuestHost {
  readonly endpoint: ServiceEndpoint;
  readonly supervisor: GuestSupervisor;
  private running = false;

  constructor(readonly board: BoardProfile, readonly guest: GuestDescriptor, log: Logger) {
    this.endpoint = new ServiceEndpoint({ service: board.service, auth: board.externalServices.auth }, log.child({ component: 'endpoint' }));
    this.supervisor = new GuestSupervisor(board, guest, log.child({ component: 'guest' }));
    const pipeline = new DirectPipeline(this.supervisor.port, this.endpoint);
    this.endpoint.attach(pipeline);
    this.supervisor.port.on('output', (o) => pipeline.onGuestOutput(o));
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** Opens the endpoint first (a port in use fails before QEMU starts), then boots the guest. */
  async start(): Promise<void> {
    if (this.running) return;
    await this.endpoint.open();
    try {
      await this.supervisor.start();
    } catch (e) {
      this.endpoint.close();
      throw e;
    }
    this.running = true;
  }

  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    await this.supervisor.stop();
    this.endpoint.close();
  }

  async status(): Promise<{ guest: GuestStatus; endpoint: Record<string, number> }> {
    return { guest: await this.supervisor.status(), endpoint: { ...this.endpoint.counters, clients: this.endpoint.clients.size } };
  }
}
