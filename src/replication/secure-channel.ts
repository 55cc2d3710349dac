/**
 * An authenticated, encrypted TCP channel between the two controllers over the Ethernet partner link:
 * TLS 1.2 with a pre-shared key (no certificates), the key derived from the pair's shared key with a
 * label per purpose (inputs, migration, upgrade), so a connection opened for one purpose cannot be used
 * for another. Every record carries a MAC under keys both sides derive from the handshake's fresh
 * randoms and an implicit sequence number: injected, replayed, reordered or altered bytes, and a
 * handshake relayed from another connection, fail it. Such a failure ends that connection, is counted
 * by purpose and reason (`partnerChannelRejections`) and reported to whoever listens (the daemon
 * journals it); it never throws out of an event handler.
 *
 * On top: length-prefixed binary messages (MessageChannel) for the input stream, and the socket itself
 * as a byte pipe for the clone's migration stream. Owns sockets, TLS and framing; knows nothing of
 * what the messages mean.
 *
 * A rolling upgrade from the previous firmware (before TLS): while the membership says the partner is
 * heard only in heartbeat version 1 or 2 (`legacyPartnerChannels`, legacy-channel.ts), a connecting board
 * speaks that firmware's handshake, and a listening board waits LEGACY_SNIFF_MS for a TLS ClientHello
 * and, if none comes (the old client sends nothing first), speaks the old server-first nonce.
 * Otherwise TLS only: the old handshake is refused and counted as any other failed handshake.
 */
import { constants, createHmac } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { connect as netConnect, createServer as netCreateServer, type Socket } from 'node:net';
import { connect as tlsConnect, createServer as tlsCreateServer, type TLSSocket } from 'node:tls';
import { UsError } from '../core/errors.js';
import { corkForThisTick } from '../core/cork.js';
import { LegacyHandshakeError, acceptLegacyHandshake, legacyPartnerChannels, offerLegacyHandshake } from './legacy-channel.js';

/** Largest message accepted; an input is at most a UDP datagram plus a header. */
export const MAX_MESSAGE = 1 << 20;

/**
 * The only suite offered and accepted: ephemeral ECDH mixed with the PSK (forward secrecy: a key file
 * stolen later does not decrypt recorded traffic), ChaCha20-Poly1305 AEAD. Node 20's pskCallback works
 * with TLS 1.2 suites only (TLS 1.3 without a certificate fails with "no suitable signature
 * algorithm", measured on Node 20.20), hence TLS 1.2 exactly.
 */
export const CHANNEL_CIPHERS = 'ECDHE-PSK-CHACHA20-POLY1305';
const TLS_VERSION = 'TLSv1.2';
/** Version of the channel's key derivation and identity; a board speaking another one is refused. */
const CHANNEL_VERSION = 2;
/**
 * While the previous firmware's channels are allowed: how long a listening board waits for a TLS
 * ClientHello (sent at once by this firmware's client) before it speaks the previous firmware's
 * server-first nonce (whose client sends nothing first and waits up to 3 s for it).
 */
export const LEGACY_SNIFF_MS = 300;
/** The first byte of a TLS handshake record (a ClientHello). */
const TLS_HANDSHAKE_RECORD = 0x16;

/** Why a partner connection was dropped. */
export type RejectReason =
  /** The TLS handshake failed: no or another key, another purpose, a relayed or replayed handshake, not TLS. */
  | 'handshake'
  /** The peer did not finish the handshake in time. */
  | 'handshake-timeout'
  /** A record after the handshake failed its MAC or was malformed: injected, replayed, reordered or altered bytes. */
  | 'record'
  /** An authenticated message with an impossible length (a key holder's bug or version skew). */
  | 'framing';

export const REJECT_REASONS: readonly RejectReason[] = ['handshake', 'handshake-timeout', 'record', 'framing'];

export interface ChannelRejection {
  purpose: string;
  reason: RejectReason;
  /** 'server' when a listening board dropped it, 'client' when the connecting board did. */
  side: 'server' | 'client';
  remote: string;
  detail: string;
}

export declare interface ChannelRejections {
  on(ev: 'rejected', fn: (r: ChannelRejection) => void): this;
}

/** Rejections by purpose and reason since the process started (one controller per process). */
export class ChannelRejections extends EventEmitter {
  private readonly counts = new Map<string, Map<RejectReason, number>>();
  last?: ChannelRejection & { at: string };

  record(r: ChannelRejection): void {
    let m = this.counts.get(r.purpose);
    if (!m) this.counts.set(r.purpose, (m = new Map()));
    m.set(r.reason, (m.get(r.reason) ?? 0) + 1);
    this.last = { ...r, at: new Date().toISOString() };
    this.emit('rejected', r);
  }

  count(purpose: string, reason?: RejectReason): number {
    const m = this.counts.get(purpose);
    if (!m) return 0;
    if (reason) return m.get(reason) ?? 0;
    let n = 0;
    for (const v of m.values()) n += v;
    return n;
  }

  get total(): number {
    let n = 0;
    for (const p of this.counts.keys()) n += this.count(p);
    return n;
  }

  /** { purpose: { reason: count } }, for status and metrics. */
  snapshot(): Record<string, Partial<Record<RejectReason, number>>> {
    const out: Record<string, Partial<Record<RejectReason, number>>> = {};
    for (const [p, m] of this.counts) out[p] = Object.fromEntries(m) as Partial<Record<RejectReason, number>>;
    return out;
  }
}

export const partnerChannelRejections = new ChannelRejections();

/** The TLS pre-shared key of one purpose: HMAC-SHA256 of a label under the pair's key. */
export function channelPsk(key: Buffer, purpose: string): Buffer {
  return createHmac('sha256', key).update(`understudy partner channel v${CHANNEL_VERSION} psk\0${purpose}`).digest();
}

function identityOf(purpose: string): string {
  return `understudy/v${CHANNEL_VERSION}/${purpose}`;
}

/** The purpose and side of an established channel socket (set by connect/listen), for MessageChannel's counts. */
const channelOf = new WeakMap<Socket, { purpose: string; side: 'server' | 'client' }>();

function remoteOf(sock: Socket): string {
  return `${sock.remoteAddress ?? '?'}:${sock.remotePort ?? '?'}`;
}

/**
 * An alert the peer sent means the peer (which holds the key) rejected something and counted it there:
 * not counted again here. A forged alert cannot pass as one: after the handshake it would fail its MAC.
 */
function isPeerAlert(e: Error & { code?: string }): boolean {
  return typeof e.code === 'string' && e.code.includes('_ALERT_');
}

function isTlsError(e: Error & { code?: string }): boolean {
  return typeof e.code === 'string' && (e.code.startsWith('ERR_SSL_') || e.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' || e.code.startsWith('ERR_TLS_'))
    || /SSL routines|wrong version number|bad record mac|decryption failed/i.test(e.message);
}

/**
 * After the handshake: a record that fails (MAC, framing, replay) ends the connection and is counted.
 * A plain close or reset is not a rejection.
 */
function guardEstablished(sock: TLSSocket, purpose: string, side: 'server' | 'client'): void {
  channelOf.set(sock, { purpose, side });
  const remote = remoteOf(sock);
  sock.on('error', (e: Error & { code?: string }) => {
    if (isTlsError(e) && !isPeerAlert(e)) partnerChannelRejections.record({ purpose, reason: 'record', side, remote, detail: e.code ?? e.message });
    sock.destroy();
  });
}

export async function connectAuthenticated(address: string, port: number, key: Buffer, purpose: string, timeoutMs = 3000): Promise<Socket> {
  const raw = netConnect({ host: address, port, noDelay: true });
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { raw.destroy(); reject(new UsError('US_ERR_TIMEOUT', `connect to partner ${address}:${port} timed out`)); }, timeoutMs);
    raw.once('connect', () => { clearTimeout(timer); resolve(); });
    raw.once('error', (e) => { clearTimeout(timer); reject(new UsError('US_ERR_LINK', `partner ${address}:${port}: ${e.message}`)); });
  });
  if (legacyPartnerChannels.allowed) return connectLegacy(raw, `${address}:${port}`, key, purpose, timeoutMs);
  const identity = identityOf(purpose);
  const psk = channelPsk(key, purpose);
  const sock = tlsConnect({
    socket: raw, ciphers: CHANNEL_CIPHERS, minVersion: TLS_VERSION, maxVersion: TLS_VERSION,
    // A server that announces another purpose (or none) gets no key from us.
    pskCallback: (hint) => (hint === identity ? { psk, identity } : null) as unknown as { psk: Buffer; identity: string },
    checkServerIdentity: () => undefined,
  });
  await new Promise<void>((resolve, reject) => {
    let settled = false;
    const done = () => { settled = true; clearTimeout(timer); sock.off('error', fail); sock.off('close', onClose); };
    const fail = (e: Error & { code?: string }) => {
      if (settled) return;
      done();
      sock.destroy();
      if (isTlsError(e)) {
        if (!isPeerAlert(e)) partnerChannelRejections.record({ purpose, reason: 'handshake', side: 'client', remote: `${address}:${port}`, detail: e.code ?? e.message });
        reject(new UsError('US_ERR_LINK', `partner ${address}:${port} failed to authenticate (${purpose}): ${e.code ?? e.message}`));
      } else {
        reject(new UsError('US_ERR_LINK', `partner ${address}:${port} (${purpose}): ${e.message}`));
      }
    };
    const onClose = () => fail(new UsError('US_ERR_LINK', 'partner closed the connection during the handshake'));
    const timer = setTimeout(() => {
      if (settled) return;
      done();
      sock.destroy();
      partnerChannelRejections.record({ purpose, reason: 'handshake-timeout', side: 'client', remote: `${address}:${port}`, detail: `no handshake within ${timeoutMs} ms` });
      reject(new UsError('US_ERR_TIMEOUT', `partner handshake timed out (${purpose})`));
    }, timeoutMs);
    sock.once('secureConnect', () => { done(); resolve(); });
    sock.on('error', fail);
    sock.on('close', onClose);
  });
  sock.pause();
  guardEstablished(sock, purpose, 'client');
  return sock;
}

/** The previous firmware's client handshake on a connected socket (its partner is heard only in heartbeat version 1 or 2). */
async function connectLegacy(raw: Socket, remote: string, key: Buffer, purpose: string, timeoutMs: number): Promise<Socket> {
  raw.on('error', () => undefined); // the channel on top listens; a reset before that is not a crash
  try {
    await offerLegacyHandshake(raw, key, purpose, timeoutMs);
  } catch (e) {
    raw.destroy();
    const err = e as LegacyHandshakeError;
    partnerChannelRejections.record({ purpose, reason: err.reason, side: 'client', remote, detail: err.message });
    throw new UsError(err.code, `partner ${remote} failed to authenticate (${purpose}): ${err.message}`);
  }
  if (!legacyPartnerChannels.established(raw, { purpose, side: 'client', remote })) {
    throw new UsError('US_ERR_LINK', `partner ${remote} (${purpose}): the previous firmware's channels were turned off during the handshake`);
  }
  channelOf.set(raw, { purpose, side: 'client' });
  raw.pause();
  return raw;
}

/**
 * The first bytes of a new connection, or null if none came within ms (the previous firmware's
 * client, which waits for the server's nonce). Whatever was read is put back for the TLS server.
 */
function firstBytes(sock: Socket, ms: number): Promise<Buffer | null | 'closed'> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => done(null), ms);
    const onData = (d: Buffer) => { done(d); sock.unshift(d); };
    const onClose = () => done('closed');
    const done = (r: Buffer | null | 'closed') => {
      clearTimeout(timer);
      sock.pause();
      sock.off('data', onData);
      sock.off('close', onClose);
      resolve(r);
    };
    sock.on('data', onData);
    sock.once('close', onClose);
  });
}

export interface AuthServer {
  close(): Promise<void>;
  readonly port: number;
}

/** Listens; every connection that passes the handshake for `purpose` is handed to onSocket. */
export async function listenAuthenticated(address: string, port: number, key: Buffer, purpose: string,
  onSocket: (s: Socket) => void, onReject?: (e: Error) => void, handshakeTimeoutMs = 3000): Promise<AuthServer> {
  const identity = identityOf(purpose);
  const psk = channelPsk(key, purpose);
  const tlsServer = tlsCreateServer({
    ciphers: CHANNEL_CIPHERS, minVersion: TLS_VERSION, maxVersion: TLS_VERSION, honorCipherOrder: true,
    pskIdentityHint: identity,
    // Another purpose's identity, or none, gets no key: the handshake fails.
    pskCallback: (_sock, id) => (id === identity ? psk : null) as unknown as Buffer,
    handshakeTimeout: handshakeTimeoutMs,
    // No session tickets: every connection runs a full handshake with fresh randoms.
    secureOptions: constants.SSL_OP_NO_TICKET,
    noDelay: true,
  }, (sock) => {
    sock.pause();
    guardEstablished(sock, purpose, 'server');
    onSocket(sock);
  });
  tlsServer.on('tlsClientError', (e: Error & { code?: string }, sock: TLSSocket) => {
    const timeout = e.code === 'ERR_TLS_HANDSHAKE_TIMEOUT';
    const reason: RejectReason = timeout ? 'handshake-timeout' : 'handshake';
    // A connection reset before a single byte (a port probe) is still a rejected connection.
    partnerChannelRejections.record({ purpose, reason, side: 'server', remote: remoteOf(sock), detail: e.code ?? e.message });
    sock.destroy();
    onReject?.(new UsError('US_ERR_LINK', `partner failed to authenticate (${purpose}): ${e.code ?? e.message}`));
  });
  const refuse = (remote: string, reason: RejectReason, detail: string) => {
    partnerChannelRejections.record({ purpose, reason, side: 'server', remote, detail });
    onReject?.(new UsError('US_ERR_LINK', `partner failed to authenticate (${purpose}): ${detail}`));
  };
  /** The previous firmware's client: it sent nothing and waits for the nonce. */
  const serveLegacy = (sock: Socket, remote: string) => {
    acceptLegacyHandshake(sock, key, purpose, handshakeTimeoutMs).then(() => {
      if (!legacyPartnerChannels.established(sock, { purpose, side: 'server', remote })) {
        refuse(remote, 'handshake', 'the previous firmware\'s handshake completed after its channels were turned off (the partner heard in heartbeat version 3)');
        return;
      }
      channelOf.set(sock, { purpose, side: 'server' });
      onSocket(sock);
    }, (e: LegacyHandshakeError) => {
      sock.destroy();
      refuse(remote, e.reason, e.message);
    });
  };
  // TLS is handed the TCP connection; while the previous firmware's channels are allowed, only once
  // its first bytes show a ClientHello.
  // Every connection accepted, so that close() ends them: net.Server#close waits for every open
  // connection to end, and a partner that keeps one open (its upgrade client, its replication
  // stream) made a controller's orderly stop wait forever (2026-12-05, a Pacemaker stop of a board).
  const open = new Set<Socket>();
  const server = netCreateServer({ noDelay: true }, (sock) => {
    open.add(sock);
    sock.once('close', () => open.delete(sock));
    sock.on('error', () => undefined);
    if (!legacyPartnerChannels.allowed) { tlsServer.emit('connection', sock); return; }
    const remote = remoteOf(sock);
    void firstBytes(sock, LEGACY_SNIFF_MS).then((first) => {
      if (first === 'closed') refuse(remote, 'handshake', 'closed before any byte');
      else if (first === null && legacyPartnerChannels.allowed) serveLegacy(sock, remote);
      // A ClientHello, or silence after the old protocol was turned off meanwhile: TLS only.
      else if (first === null || first[0] === TLS_HANDSHAKE_RECORD) tlsServer.emit('connection', sock);
      else {
        // Neither TLS nor the previous firmware's client (which waits for the nonce): a probe.
        sock.destroy();
        refuse(remote, 'handshake', `neither TLS nor the previous firmware's client (first byte 0x${first[0]!.toString(16)})`);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new UsError('US_ERR_ADDRESS_IN_USE', `partner channel ${address}:${port}: ${e.message}`)));
    server.listen(port, address, () => resolve());
  });
  server.on('error', () => undefined);
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : port,
    close: () => new Promise<void>((r) => {
      server.close(() => r());
      for (const sock of open) sock.destroy();
    }),
  };
}

export declare interface MessageChannel {
  on(ev: 'message', fn: (type: number, body: Buffer) => void): this;
  on(ev: 'close', fn: (err?: Error) => void): this;
}

/** Length-prefixed messages over an authenticated socket (or, in unit tests and the benchmark's plain phase, any socket): [u32 length][u8 type][body]. */
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
    corkForThisTick(this.socket);
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
      if (len < 1 || len > MAX_MESSAGE) {
        const ch = channelOf.get(this.socket);
        if (ch) partnerChannelRejections.record({ ...ch, reason: 'framing', remote: remoteOf(this.socket), detail: `message length ${len}` });
        this.shutdown(new UsError('US_ERR_LINK', `bad message length ${len} from partner`));
        this.socket.destroy();
        return;
      }
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
