/**
 * The board's external face for its guest: the UDP service endpoint clients talk to, and the UDP
 * socket through which the guest's AUTH queries reach the external service. Inputs go into the
 * InputPipeline; released outputs come back here to leave the board.
 */
import { createSocket, type Socket } from 'node:dgram';
import { UsError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { ClientMap } from './client-map.js';
import type { GuestOutput, InputPipeline, OutputSink } from './io.js';

export interface ServiceEndpointOptions {
  service: { address: string; port: number };
  auth: { address: string; port: number };
  /** Largest request accepted; bigger datagrams are dropped and counted. */
  maxRequestBytes?: number;
}

export class ServiceEndpoint implements OutputSink {
  private service?: Socket;
  private authSocket?: Socket;
  private pipeline?: InputPipeline;
  readonly clients: ClientMap;
  readonly counters = { requests: 0, replies: 0, oversized: 0, unroutable: 0, authQueries: 0, authReplies: 0, authIgnored: 0 };

  constructor(private readonly o: ServiceEndpointOptions, private readonly log: Logger, clients?: ClientMap) {
    this.clients = clients ?? new ClientMap();
  }

  attach(pipeline: InputPipeline): void {
    this.pipeline = pipeline;
  }

  async open(): Promise<void> {
    const max = this.o.maxRequestBytes ?? 512;
    this.service = await bindUdp(this.o.service.address, this.o.service.port, 'service endpoint');
    this.service.on('message', (msg, rinfo) => {
      if (msg.length > max) { this.counters.oversized++; return; }
      this.counters.requests++;
      const clientPort = this.clients.portFor({ address: rinfo.address, port: rinfo.port });
      this.pipeline?.submit({ kind: 'request', clientPort, payload: msg });
    });
    // The AUTH client socket binds to the service address so answers come back to this board only.
    this.authSocket = await bindUdp(this.o.service.address, 0, 'AUTH client socket');
    this.authSocket.on('message', (msg, rinfo) => {
      if (rinfo.address !== this.o.auth.address || rinfo.port !== this.o.auth.port) { this.counters.authIgnored++; return; }
      this.counters.authReplies++;
      this.pipeline?.submit({ kind: 'auth-reply', payload: msg });
    });
    this.log.info({ service: this.o.service, auth: this.o.auth }, 'service endpoint open');
  }

  release(output: GuestOutput): void {
    if (output.kind === 'reply') {
      const client = this.clients.clientOf(output.clientPort);
      if (!client || !this.service) { this.counters.unroutable++; return; }
      this.counters.replies++;
      this.service.send(output.payload, client.port, client.address);
    } else {
      this.counters.authQueries++;
      this.authSocket?.send(output.payload, this.o.auth.port, this.o.auth.address);
    }
  }

  close(): void {
    this.service?.close();
    this.authSocket?.close();
    this.service = this.authSocket = undefined;
  }
}

async function bindUdp(address: string, port: number, what: string): Promise<Socket> {
  const s = createSocket({ type: 'udp4', recvBufferSize: 4 << 20, sendBufferSize: 4 << 20 });
  await new Promise<void>((resolve, reject) => {
    s.once('error', (e: NodeJS.ErrnoException) => {
      s.close();
      reject(new UsError(e.code === 'EADDRINUSE' ? 'US_ERR_ADDRESS_IN_USE' : 'US_ERR_CONFIG',
        `${what} ${address}:${port}: ${e.code === 'EADDRINUSE' ? 'address already in use' : e.message}`, { address, port }));
    });
    s.bind(port, address, () => resolve());
  });
  s.on('error', () => undefined);
  return s;
}
