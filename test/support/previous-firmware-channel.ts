/**
 * Test double: the partner channels of the PREVIOUS firmware (before issue 14's TLS), as that firmware
 * speaks them — its handshake and its connect/listen functions are the code of
 * `git show 519281f:src/replication/secure-channel.ts` (unchanged from 70bfbca up to the merge of
 * TLS), kept here, not in src, so that the compatibility tests pit this firmware's code against the
 * old firmware's own, not against a copy of itself. The message frame is that firmware's
 * `[u32 length][u8 type][body]`, written and parsed here by a small reader of its own.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { connect, createServer, type Server, type Socket } from 'node:net';

const NONCE = 16;
const MAC = 32;

function mac(key: Buffer, label: string, a: Buffer, b: Buffer): Buffer {
  return createHmac('sha256', key).update(label).update(a).update(b).digest();
}

/** Reads exactly n bytes from a socket that has not been given a 'data' listener yet. */
function readExactly(sock: Socket, n: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new Error('partner handshake timed out')), timeoutMs);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= n) {
        finish();
        if (buf.length > n) sock.unshift(buf.subarray(n));
        resolve(buf.subarray(0, n));
      }
    };
    const onEnd = () => finish(new Error('partner closed the connection during the handshake'));
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

/** Server side of the previous firmware's handshake (the server speaks first). */
export async function oldAcceptHandshake(sock: Socket, key: Buffer, purpose: string, timeoutMs = 3000): Promise<void> {
  const ns = randomBytes(NONCE);
  sock.write(ns);
  const reply = await readExactly(sock, NONCE + MAC, timeoutMs);
  const nc = reply.subarray(0, NONCE);
  if (!timingSafeEqual(reply.subarray(NONCE), mac(key, `client:${purpose}`, ns, nc))) {
    sock.destroy();
    throw new Error(`partner failed to authenticate (${purpose})`);
  }
  sock.write(mac(key, `server:${purpose}`, nc, ns));
}

/** Client side of the previous firmware's handshake. */
export async function oldOfferHandshake(sock: Socket, key: Buffer, purpose: string, timeoutMs = 3000): Promise<void> {
  const ns = await readExactly(sock, NONCE, timeoutMs);
  const nc = randomBytes(NONCE);
  sock.write(Buffer.concat([nc, mac(key, `client:${purpose}`, ns, nc)]));
  const proof = await readExactly(sock, MAC, timeoutMs);
  if (!timingSafeEqual(proof, mac(key, `server:${purpose}`, nc, ns))) {
    sock.destroy();
    throw new Error(`partner failed to authenticate (${purpose})`);
  }
}

/** The previous firmware's connectAuthenticated. */
export async function oldConnect(port: number, key: Buffer, purpose: string, timeoutMs = 3000): Promise<Socket> {
  const sock = connect({ host: '127.0.0.1', port, noDelay: true });
  sock.pause();
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', (e) => reject(e));
  });
  await oldOfferHandshake(sock, key, purpose, timeoutMs);
  return sock;
}

/** The previous firmware's listenAuthenticated, on 127.0.0.1 and a free port. */
export async function oldListen(key: Buffer, purpose: string, onSocket: (s: Socket) => void, onReject?: (e: Error) => void): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer({ pauseOnConnect: true, noDelay: true }, (sock) => {
    sock.on('error', () => undefined);
    oldAcceptHandshake(sock, key, purpose).then(() => onSocket(sock), (e: Error) => { sock.destroy(); onReject?.(e); });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { port: (server.address() as { port: number }).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** The previous firmware's framing on an authenticated socket: 'message' (type, body) events, send(type, body). */
export class OldFrames extends EventEmitter {
  private pending = Buffer.alloc(0);
  constructor(readonly socket: Socket) {
    super();
    socket.on('data', (d: Buffer) => {
      this.pending = Buffer.concat([this.pending, d]);
      for (;;) {
        if (this.pending.length < 4) return;
        const len = this.pending.readUInt32BE(0);
        if (this.pending.length < 4 + len) return;
        this.emit('message', this.pending[4], Buffer.from(this.pending.subarray(5, 4 + len)));
        this.pending = this.pending.subarray(4 + len);
      }
    });
    socket.on('error', () => undefined);
    socket.resume();
  }
  send(type: number, body: Buffer): void {
    const hdr = Buffer.alloc(5);
    hdr.writeUInt32BE(body.length + 1, 0);
    hdr[4] = type;
    this.socket.write(Buffer.concat([hdr, body]));
  }
  next(): Promise<{ type: number; body: Buffer }> {
    return new Promise((resolve) => this.once('message', (type: number, body: Buffer) => resolve({ type, body })));
  }
}
