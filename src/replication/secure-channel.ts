/**
 * An authenticated TCP channel between the two controllers over the Ethernet partner link: a mutual
 * HMAC-SHA256 challenge-response under the pair's shared key, then length-prefixed binary messages.
 * Used for the input stream and, as a raw byte pipe after the handshake, for the clone's migration
 * stream. Owns sockets and framing; knows nothing of what the messages mean.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { UsError } from '../core/errors.js';

const NONCE = 16;
const MAC = 32;
/** Largest message accepted; an input is at most a UDP datagram plus a header. */
export const MAX_MESSAGE = 1 << 20;

function mac(key: Buffer, label: string, a: Buffer, b: Buffer): Buffer {
  return createHmac('sha256', key).update(label).update(a).update(b).digest();
}

/** Reads exactly n bytes from a socket that has not been given a 'data' listener yet. */
function readExactly(sock: Socket, n: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new UsError('US_ERR_TIMEOUT', 'partner handshake timed out')), timeoutMs);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= n) {
        finish();
        if (buf.length > n) sock.unshift(buf.subarray(n));
        resolve(buf.subarray(0, n));
      }
    };
    const onEnd = () => finish(new UsError('US_ERR_LINK', 'partner closed the connection during the handshake'));
    const finish = (err?: Error) => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('error', onEnd);
      sock.pause();
      if (err) reject(err);
    };
    sock.on('data', onData);
    sock.once('end', onEnd);
    sock.once('error', onEnd);
    sock.resume();
  });
}

/** Server side of the handshake; resolves when the client proved the key. */
export async function acceptHandshake(sock: Socket, key: Buffer, purpose: string, timeoutMs = 3000): Promise<void> {
  const ns = randomBytes(NONCE);
  sock.write(ns);
  const reply = await readExactly(sock, NONCE + MAC, timeoutMs);
  const nc = reply.subarray(0, NONCE);
  if (!timingSafeEqual(reply.subarray(NONCE), mac(key, `client:${purpose}`, ns, nc))) {
    sock.destroy();
    throw new UsError('US_ERR_LINK', `partner failed to authenticate (${purpose})`);
  }
  sock.write(mac(key, `server:${purpose}`, nc, ns));
}

/** Client side of the handshake; resolves when the server proved the key too. */
export async function offerHandshake(sock: Socket, key: Buffer, purpose: string, timeoutMs = 3000): Promise<void> {
  const ns = await readExactly(sock, NONCE, timeoutMs);
  const nc = randomBytes(NONCE);
  sock.write(Buffer.concat([nc, mac(key, `client:${purpose}`, ns, nc)]));
  const proof = await readExactly(sock, MAC, timeoutMs);
  if (!timingSafeEqual(proof, mac(key, `server:${purpose}`, nc, ns))) {
    sock.destroy();
    throw new UsError('US_ERR_LINK', `partner failed to authenticate (${purpose})`);
  }
}

export async function connectAuthenticated(address: string, port: number, key: Buffer, purpose: string, timeoutMs = 3000): Promise<Socket> {
  const sock = connect({ host: address, port, noDelay: true });
  sock.pause();
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { sock.destroy(); reject(new UsError('US_ERR_TIMEOUT', `connect to partner ${address}:${port} timed out`)); }, timeoutMs);
    sock.once('connect', () => { clearTimeout(timer); resolve(); });
    sock.once('error', (e) => { clearTimeout(timer); reject(new UsError('US_ERR_LINK', `partner ${address}:${port}: ${e.message}`)); });
  });
  await offerHandshake(sock, key, purpose, timeoutMs);
  return sock;
}

export interface AuthServer {
  close(): Promise<void>;
  readonly port: number;
}

/** Listens; every connection that passes the handshake for `purpose` is handed to onSocket. */
export async function listenAuthenticated(address: string, port: number, key: Buffer, purpose: string,
  onSocket: (s: Socket) => void, onReject?: (e: Error) => void): Promise<AuthServer> {
  const server: Server = createServer({ pauseOnConnect: true, noDelay: true }, (sock) => {
    sock.on('error', () => undefined);
    acceptHandshake(sock, key, purpose).then(() => onSocket(sock), (e: Error) => { sock.destroy(); onReject?.(e); });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new UsError('US_ERR_ADDRESS_IN_USE', `partner channel ${address}:${port}: ${e.message}`)));
    server.listen(port, address, () => resolve());
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : port,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

export declare interface MessageChannel {
  on(ev: 'message', fn: (type: number, body: Buffer) => void): this;
  on(ev: 'close', fn: (err?: Error) => void): this;
}

/** Length-prefixed messages over an authenticated socket: [u32 length][u8 type][body]. */
export class MessageChannel extends EventEmitter {
  private pending: Buffer = Buffer.alloc(0);
  private closed = false;
  sentMessages = 0;
  receivedMessages = 0;

  constructor(readonly socket: Socket) {
    super();
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.onData(d));
    socket.on('close', () => this.shutdown());
    socket.on('error', (e) => this.shutdown(e));
    socket.resume();
  }

  get open(): boolean {
    return !this.closed;
  }

  /** Bytes written but not yet handed to the kernel. */
  get backlog(): number {
    return this.socket.writableLength;
  }

  send(type: number, body: Buffer): boolean {
    if (this.closed) return false;
    const hdr = Buffer.allocUnsafe(5);
    hdr.writeUInt32BE(body.length + 1, 0);
    hdr[4] = type;
    this.socket.write(Buffer.concat([hdr, body]));
    this.sentMessages++;
    return true;
  }

  close(): void {
    this.socket.destroy();
    this.shutdown();
  }

  private onData(d: Buffer): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, d]) : d;
    while (this.pending.length >= 4) {
      const len = this.pending.readUInt32BE(0);
      if (len < 1 || len > MAX_MESSAGE) { this.shutdown(new UsError('US_ERR_LINK', `bad message length ${len} from partner`)); this.socket.destroy(); return; }
      if (this.pending.length < 4 + len) break;
      const type = this.pending[4]!;
      const body = this.pending.subarray(5, 4 + len);
      this.pending = this.pending.subarray(4 + len);
      this.receivedMessages++;
      this.emit('message', type, body);
    }
  }

  private shutdown(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('close', err);
  }
}
