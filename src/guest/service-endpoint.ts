/**
 * The board's external face for its guest: the UDP service endpoint clients talk to, and the UDP
 * socket through which the guest's AUTH queries reach the external service. Inputs go into the
 * InputPipeline; released outputs come back here to leave the board.
 *
 * A request is dropped here, counted, before it gets a sequence number (so both copies of a pair
 * see the same stream) when it is over maxRequestBytes, has no id the guest would read (it would
 * stay silent: nothing to answer, nothing to cache), goes over its source address's rate, finds the
 * pipeline's queue full, or is a new client while every identity is held (src/guest/client-map.ts).
 */
import { createSocket, type Socket } from 'node:dgram';
import { UsError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { ClientMap, requestId } from './client-map.js';
import type { GuestOutput, InputPipeline, OutputSink } from './io.js';

export interface ServiceEndpointOptions {
  service: { address: string; port: number };
  auth: { address: string; port: number };
  /** Largest request accepted; bigger datagrams are dropped and counted. */
  maxRequestBytes?: number;
  /** Requests per second accepted from one source address (token bucket). Default 20000; 0: no limit. */
  ratePerSource?: number;
  /** Requests one source address may send at once above its rate. Default 2000. */
  burstPerSource?: number;
  /** Source addresses whose rate is tracked (the longest idle is forgotten first). Default 4096. */
  trackedSources?: number;
}

/** Per-source token buckets in a bounded table (a Map in least-recently-seen order). */
export class SourceRateLimiter {
  private buckets = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly rate: number, private readonly burst: number, private readonly maxSources: number, private readonly now: () => number = () => performance.now()) {}

  /** True if one more request from this source is within its rate. */
  allow(source: string): boolean {
    if (this.rate <= 0) return true;
    const t = this.now();
    let b = this.buckets.get(source);
    if (b) {
      this.buckets.delete(source); // re-inserted last: most recently seen
      b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) * this.rate) / 1000);
      b.at = t;
    } else {
      b = { tokens: this.burst, at: t };
      if (this.buckets.size >= this.maxSources) this.buckets.delete(this.buckets.keys().next().value!);
    }
    this.buckets.set(source, b);
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  get tracked(): number {
    return this.buckets.size;
  }
}

export class ServiceEndpoint implements OutputSink {
  private service?: Socket;
  private authSocket?: Socket;
  private pipeline?: InputPipeline;
  readonly clients: ClientMap;
  readonly counters = {
    requests: 0, replies: 0, oversized: 0, unroutable: 0, authQueries: 0, authReplies: 0, authIgnored: 0,
    /** Dropped: no id the guest would read; over the source's rate; a new client with every identity held (a full queue is counted by the pipeline). */
    noId: 0, rateLimited: 0, clientsRefused: 0,
  };
  private readonly limiter: SourceRateLimiter;
  private lastDropLog = 0;
  private dropsAtLastLog = 0;

  constructor(private readonly o: ServiceEndpointOptions, private readonly log: Logger, clients?: ClientMap) {
    this.clients = clients ?? new ClientMap();
    this.limiter = new SourceRateLimiter(o.ratePerSource ?? 20000, o.burstPerSource ?? 2000, o.trackedSources ?? 4096);
  }

  /** Datagrams dropped before the pipeline, all reasons. */
  get dropped(): number {
    const c = this.counters;
    return c.oversized + c.noId + c.rateLimited + c.clientsRefused;
  }

  /** A log line when drops begin, then at most one every 10 s while they go on (never one per packet). */
  private noteDrop(): void {
    const now = performance.now();
    if (this.lastDropLog && now - this.lastDropLog < 10000) return;
    const total = this.dropped;
    const c = this.counters;
    this.log.warn({ since: total - this.dropsAtLastLog, oversized: c.oversized, noId: c.noId, rateLimited: c.rateLimited, clientsRefused: c.clientsRefused },
      'service endpoint dropping requests (oversized, no id, over a source\'s rate or every client identity held)');
    this.lastDropLog = now;
    this.dropsAtLastLog = total;
  }

  /** One datagram from a client: dropped (counted) or handed to the pipeline with the client's identity. */
  receive(msg: Buffer, from: { address: string; port: number }): void {
    const c = this.counters;
    if (msg.length > (this.o.maxRequestBytes ?? 512)) { c.oversized++; this.noteDrop(); return; }
    if (requestId(msg) === undefined) { c.noId++; this.noteDrop(); return; }
    if (!this.limiter.allow(from.address)) { c.rateLimited++; this.noteDrop(); return; }
    if (this.pipeline?.admit && !this.pipeline.admit()) return;
    const clientPort = this.clients.portFor(from);
    if (clientPort === undefined) { c.clientsRefused++; this.noteDrop(); return; }
    c.requests++;
    this.pipeline?.submit({ kind: 'request', clientPort, payload: msg });
  }

  attach(pipeline: InputPipeline): void {
    this.pipeline = pipeline;
  }

  async open(): Promise<void> {
    this.service = await bindUdp(this.o.service.address, this.o.service.port, 'service endpoint');
    this.service.on('message', (msg, rinfo) => this.receive(msg, rinfo));
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
