/**
 * The previous firmware's partner channels, spoken only for a rolling upgrade from it: a mutual
 * HMAC-SHA256 challenge-response under the pair's key in which the SERVER speaks first (a 16-byte
 * nonce; the client answers its own nonce and a MAC; the server proves the key back), then the same
 * length-prefixed frames as today with no MAC on them. Byte for byte what that firmware sends
 * (src/replication/secure-channel.ts before issue 14).
 *
 * It authenticates the handshake only: anyone on the partner link can inject into, replay or relay
 * such a connection. So it is allowed only while this board sends a heartbeat version below 3, i.e.
 * while the partner is heard only in version 1 or 2 (frames under the pair key's MAC that only the
 * previous firmware sends: src/ha/frame-v1.ts, and version 2, the deployed firmware before TLS), and
 * never again once the partner is heard in version 3 (`LegacyPartnerChannels`, below, follows the
 * membership's `send-version`). Owns that handshake and that permission; secure-channel.ts decides
 * which protocol a connection speaks.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { UsError } from '../core/errors.js';
import { FRAME_VERSION, type HeartbeatVersion } from '../ha/frame.js';

const NONCE = 16;
const MAC = 32;

/** The alarm (status, journal) while the previous firmware's channels are allowed. */
export const LEGACY_ALARM = 'partner runs the previous firmware: partner channels without TLS; finish the rolling upgrade';

function mac(key: Buffer, label: string, a: Buffer, b: Buffer): Buffer {
  return createHmac('sha256', key).update(label).update(a).update(b).digest();
}

/** Reads exactly n bytes from a socket that has no other 'data' listener; leaves it paused. */
function readExactly(sock: Socket, n: number, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new UsError('US_ERR_TIMEOUT', `no answer within ${timeoutMs} ms`)), timeoutMs);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < n) return;
      finish();
      if (buf.length > n) sock.unshift(buf.subarray(n));
      resolve(buf.subarray(0, n));
    };
    const onEnd = () => finish(new UsError('US_ERR_LINK', 'partner closed the connection during the handshake'));
    const finish = (err?: Error) => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('close', onEnd);
      sock.pause();
      if (err) reject(err);
    };
    sock.on('data', onData);
    sock.once('end', onEnd);
    sock.once('close', onEnd);
    sock.resume();
  });
}

/** Why a legacy handshake failed: the reason it is counted under. */
export class LegacyHandshakeError extends UsError {
  constructor(readonly reason: 'handshake' | 'handshake-timeout', message: string) {
    super(reason === 'handshake' ? 'US_ERR_LINK' : 'US_ERR_TIMEOUT', message);
  }
}

function failed(e: unknown, purpose: string): LegacyHandshakeError {
  if (e instanceof LegacyHandshakeError) return e;
  const timeout = (e as UsError).code === 'US_ERR_TIMEOUT';
  return new LegacyHandshakeError(timeout ? 'handshake-timeout' : 'handshake', `previous firmware's handshake (${purpose}): ${(e as Error).message}`);
}

/** Server side (the server speaks first); resolves when the client proved the key. */
export async function acceptLegacyHandshake(sock: Socket, key: Buffer, purpose: string, timeoutMs: number): Promise<void> {
  try {
    const ns = randomBytes(NONCE);
    sock.write(ns);
    const reply = await readExactly(sock, NONCE + MAC, timeoutMs);
    const nc = reply.subarray(0, NONCE);
    if (!timingSafeEqual(reply.subarray(NONCE), mac(key, `client:${purpose}`, ns, nc))) {
      throw new LegacyHandshakeError('handshake', `previous firmware's handshake (${purpose}): the client's MAC does not verify (another key or purpose, or not the previous firmware)`);
    }
    sock.write(mac(key, `server:${purpose}`, nc, ns));
  } catch (e) {
    throw failed(e, purpose);
  }
}

/** Client side; resolves when the server proved the key too. */
export async function offerLegacyHandshake(sock: Socket, key: Buffer, purpose: string, timeoutMs: number): Promise<void> {
  try {
    const ns = await readExactly(sock, NONCE, timeoutMs);
    const nc = randomBytes(NONCE);
    sock.write(Buffer.concat([nc, mac(key, `client:${purpose}`, ns, nc)]));
    const proof = await readExactly(sock, MAC, timeoutMs);
    if (!timingSafeEqual(proof, mac(key, `server:${purpose}`, nc, ns))) {
      throw new LegacyHandshakeError('handshake', `previous firmware's handshake (${purpose}): the server's proof does not verify`);
    }
  } catch (e) {
    throw failed(e, purpose);
  }
}

export interface LegacyConnection {
  purpose: string;
  side: 'server' | 'client';
  remote: string;
}

export interface LegacyChannelsStatus {
  /** True while the partner is heard only in heartbeat version 1 or 2: the previous firmware's channels are spoken. */
  inUse: boolean;
  since: string | null;
  /** The alarm while inUse. */
  alarm: string | null;
  /** Connections of the previous firmware's protocol established since the controller started, by purpose. */
  connections: Record<string, number>;
  total: number;
  last: (LegacyConnection & { at: string }) | null;
}

/** What LegacyPartnerChannels follows: the membership (process) or, in tests, a Membership. */
export interface HeartbeatVersionSource {
  on(ev: 'send-version', fn: (version: HeartbeatVersion) => void): this;
  off(ev: 'send-version', fn: (version: HeartbeatVersion) => void): this;
}

export declare interface LegacyPartnerChannels {
  on(ev: 'change', fn: (inUse: boolean, why: string, dropped: number) => void): this;
  on(ev: 'connection', fn: (c: LegacyConnection) => void): this;
}

/**
 * Whether this board speaks the previous firmware's partner channels now, and what it did with them.
 * Off unless the membership says the partner is heard only in heartbeat version 1 or 2. Turned off, it
 * ends the legacy connections still open (the previous firmware is gone from the partner, so a
 * connection of its protocol that outlives it can only be someone else's).
 */
export class LegacyPartnerChannels extends EventEmitter {
  private inUse = false;
  private since?: string;
  private readonly counts = new Map<string, number>();
  private readonly open = new Set<Socket>();
  private last?: LegacyConnection & { at: string };

  get allowed(): boolean {
    return this.inUse;
  }

  set(inUse: boolean, why: string): void {
    if (inUse === this.inUse) return;
    this.inUse = inUse;
    this.since = inUse ? new Date().toISOString() : undefined;
    let dropped = 0;
    if (!inUse) {
      for (const s of this.open) { s.destroy(); dropped++; }
      this.open.clear();
    }
    this.emit('change', inUse, why, dropped);
  }

  /** Follows the heartbeat version the membership sends; returns the unsubscribe (which also turns it off). */
  follow(source: HeartbeatVersionSource): () => void {
    const on = (v: HeartbeatVersion) => this.set(v < FRAME_VERSION, v < FRAME_VERSION
      ? `the partner is heard only in heartbeat version ${v} (the previous firmware)`
      : `the partner is heard in heartbeat version ${v}`);
    source.on('send-version', on);
    return () => { source.off('send-version', on); this.set(false, 'the controller stops serving'); };
  }

  /**
   * A connection of the previous firmware's protocol finished its handshake: counted, and ended when
   * the permission ends. False (and the socket destroyed) if the permission ended meanwhile.
   */
  established(sock: Socket, c: LegacyConnection): boolean {
    if (!this.inUse) { sock.destroy(); return false; }
    this.open.add(sock);
    sock.once('close', () => this.open.delete(sock));
    this.counts.set(c.purpose, (this.counts.get(c.purpose) ?? 0) + 1);
    this.last = { ...c, at: new Date().toISOString() };
    this.emit('connection', c);
    return true;
  }

  status(): LegacyChannelsStatus {
    let total = 0;
    for (const n of this.counts.values()) total += n;
    return {
      inUse: this.inUse, since: this.since ?? null, alarm: this.inUse ? LEGACY_ALARM : null,
      connections: Object.fromEntries(this.counts), total, last: this.last ?? null,
    };
  }
}

/** One per controller process, as the rejections (secure-channel.ts partnerChannelRejections). */
export const legacyPartnerChannels = new LegacyPartnerChannels();
