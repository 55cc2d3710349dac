/**
 * A client of the guest's protocol over UDP, as an external user would be: one request per datagram,
 * matched to its reply by id, with timeouts and retries (the same id, so the guest's reply cache makes
 * retries safe). Used by the demo, the tests and the benchmarks.
 */
import { createSocket, type Socket } from 'node:dgram';
import { UsError } from '../core/errors.js';

export class UdpClient {
  private socket?: Socket;
  private waiters = new Map<string, (reply: string) => void>();
  private seq = 0;

  constructor(readonly target: { address: string; port: number }, private readonly bindAddress = '127.0.0.1') {}

  async open(): Promise<this> {
    const s = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.bind(0, this.bindAddress, () => resolve());
    });
    s.on('message', (m) => {
      const text = m.toString('latin1');
      const id = text.split(' ', 1)[0]!;
      const w = this.waiters.get(id);
      if (w) { this.waiters.delete(id); w(text); }
    });
    this.socket = s;
    return this;
  }

  get port(): number {
    return this.socket!.address().port;
  }

  /** A fresh request id, unique for this client. */
  nextId(prefix = 'q'): string {
    return `${prefix}${++this.seq}`;
  }

  /** Sends raw bytes without waiting for anything. */
  sendRaw(data: Buffer | string): void {
    this.socket!.send(typeof data === 'string' ? Buffer.from(data, 'latin1') : data, this.target.port, this.target.address);
  }

  /** Sends `<id> <body>` and waits for the reply carrying that id, retrying `retries` times. */
  async request(id: string, body: string, timeoutMs = 2000, retries = 0): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      const reply = await new Promise<string | undefined>((resolve) => {
        const timer = setTimeout(() => { this.waiters.delete(id); resolve(undefined); }, timeoutMs);
        this.waiters.set(id, (r) => { clearTimeout(timer); resolve(r); });
        this.sendRaw(`${id} ${body}`);
      });
      if (reply !== undefined) return reply;
      if (attempt >= retries) throw new UsError('US_ERR_TIMEOUT', `no reply to "${id} ${body}" from ${this.target.address}:${this.target.port} after ${attempt + 1} tries`);
    }
  }

  close(): void {
    this.socket?.close();
    this.socket = undefined;
  }
}
