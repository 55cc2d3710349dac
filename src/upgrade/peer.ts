/**
 * The upgrade channel between the two controllers of a pair, over the Ethernet partner link: an
 * authenticated TCP channel (purpose "upgrade", port partner.ethernet.port + 3) carrying a few
 * requests from the board that runs a rolling upgrade to its partner — status, the package bytes
 * (put), install, reboot, commit, rollback, journal — one request and one answer per connection.
 * Owns the wire format and the package transfer; what a request does is the handler's business
 * (src/upgrade/rolling.ts implements it).
 */
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { z } from 'zod';
import { UsError, asUsError, type UsErrorCode } from '../core/errors.js';
import { fsyncDir } from '../hw/bootenv/durable.js';
import { PartnerRejections } from '../replication/rejections.js';
import { MessageChannel, connectAuthenticated, listenAuthenticated, type AuthServer } from '../replication/secure-channel.js';
import { assertRoom, statfsFreeBytes, type FreeBytes } from './free-space.js';

export const UPGRADE_PURPOSE = 'upgrade';
/** Offset of the upgrade channel's port from the partner link's base port (inputs +1, migration +2). */
export const UPGRADE_PORT_OFFSET = 3;
/** Message types: a JSON request or answer, a chunk of package bytes. */
const T_JSON = 1;
const T_CHUNK = 2;
/** Package bytes per chunk (well below the channel's 1 MiB message limit). */
const CHUNK = 256 * 1024;
/** Largest package the partner accepts. */
const MAX_PACKAGE = 4 * 1024 ** 3;

const text = z.string().max(65536);
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, '64 lowercase hex digits');
const slotOrNull = z.enum(['A', 'B']).nullable();

/** Every request the upgrade channel carries, exactly (unknown fields refused). */
const REQUEST = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('status') }),
  z.strictObject({ op: z.literal('install'), file: z.string().min(1).max(4096) }),
  z.strictObject({ op: z.literal('reboot') }),
  z.strictObject({ op: z.literal('commit') }),
  z.strictObject({ op: z.literal('switchover') }),
  z.strictObject({ op: z.literal('guest-package'), file: z.string().min(1).max(4096) }),
  z.strictObject({ op: z.literal('rollback'), reboot: z.boolean() }),
  z.strictObject({ op: z.literal('journal'), message: text }),
  z.strictObject({ op: z.literal('put'), size: z.number().int().min(1).max(MAX_PACKAGE), sha256: sha256Hex }),
]);
type AnyRequest = z.output<typeof REQUEST>;
export type PeerRequest = Exclude<AnyRequest, { op: 'put' }>;
type PutRequest = Extract<AnyRequest, { op: 'put' }>;

/** An answer: a result, or a stable error code and its message. */
const ANSWER = z.discriminatedUnion('ok', [
  z.strictObject({ ok: z.literal(true), result: z.unknown() }),
  z.strictObject({ ok: z.literal(false), error: z.strictObject({ code: z.string().regex(/^US_ERR_[A-Z_]{1,40}$/, 'a US_ERR_* code'), message: text }) }),
]);
type Answer = { ok: true; result: unknown } | { ok: false; error: { code: UsErrorCode; message: string } };

/** What the results the rolling upgrade reads must hold (extra fields are kept, not trusted). */
const RESULTS: Partial<Record<AnyRequest['op'], z.ZodType>> = {
  status: z.looseObject({
    board: z.string().max(256), role: z.string().max(64), running: slotOrNull, good: slotOrNull, trial: slotOrNull,
    version: z.string().max(256).nullable(), guest: z.string().max(64).nullable(), protected: z.boolean(), rollingRunning: z.boolean(),
    backlog: z.number().int().nonnegative(),
  }),
  put: z.strictObject({ file: z.string().min(1).max(4096), bytes: z.number().int().min(1).max(MAX_PACKAGE) }),
  install: z.looseObject({ slot: z.enum(['A', 'B']), version: z.string().min(1).max(256), bootAttempts: z.number().int().nonnegative() }),
  'guest-package': z.looseObject({
    id: z.string().regex(/^[0-9a-f]{16}$/),
    descriptors: z.array(z.looseObject({ ref: z.string().max(4096), name: z.string().max(64), version: z.string().max(256) })).max(1000),
  }),
};

function parseJson<T>(what: string, schema: z.ZodType<T>, b: Buffer): T {
  let raw: unknown;
  try {
    raw = JSON.parse(b.toString('utf8'));
  } catch (e) {
    throw new RangeError(`${what} is not JSON: ${(e as Error).message}`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new RangeError(`bad ${what}${i.path.length ? ` (${i.path.join('.')})` : ''}: ${i.message}`);
  }
  return r.data;
}

/** One request from the partner, validated; throws a RangeError naming the bad field. */
export function decodePeerRequest(b: Buffer): PeerRequest | PutRequest {
  return parseJson('upgrade request', REQUEST, b);
}

/** One answer from the partner to `op`, validated with its result; throws a RangeError naming the bad field. */
export function decodePeerAnswer(op: string, b: Buffer): Answer {
  const a = parseJson('upgrade answer', ANSWER, b) as Answer;
  const schema = RESULTS[op as AnyRequest['op']];
  if (a.ok && schema) {
    const r = schema.safeParse(a.result);
    if (!r.success) {
      const i = r.error.issues[0]!;
      throw new RangeError(`bad upgrade answer to "${op}" (result${i.path.length ? `.${i.path.join('.')}` : ''}): ${i.message}`);
    }
  }
  return a;
}

export type PeerHandler = (req: PeerRequest) => Promise<unknown>;

export interface PeerServerOptions {
  address: string;
  port: number;
  key: Buffer;
  /** Where pushed packages are stored (`rolling-<sha256 prefix>.usp`). */
  incomingDir: string;
  handler: PeerHandler;
  onReject?: (e: Error) => void;
  /** Refused messages are counted and journaled here (channel "upgrade"). */
  rejections?: PartnerRejections;
  /** Bytes kept free in incomingDir after a push (upgrade.reserveMb). Default 64 MiB. */
  reserveBytes?: number;
  /** Free bytes on a filesystem (a seam for tests). Default: statfs. */
  freeBytes?: FreeBytes;
}

/** Serves the partner's requests. */
export function listenPeer(o: PeerServerOptions): Promise<AuthServer> {
  return listenAuthenticated(o.address, o.port, o.key, UPGRADE_PURPOSE, (s) => servePeerConnection(s, o), o.onReject);
}

function servePeerConnection(sock: Socket, o: PeerServerOptions): void {
  const ch = new MessageChannel(sock);
  const refuse = (reason: 'malformed' | 'unknown-type' | 'unexpected', detail: string) => {
    o.rejections?.reject('upgrade', reason, detail);
    ch.close();
  };
  let upload: { fd: number; tmp: string; size: number; received: number; hash: ReturnType<typeof createHash>; sha256: string } | undefined;
  let answered = false;
  const answer = (a: Answer) => {
    if (answered) return;
    answered = true;
    ch.send(T_JSON, Buffer.from(JSON.stringify(a)));
    ch.socket.end();
  };
  const fail = (e: unknown) => {
    const u = asUsError(e);
    answer({ ok: false, error: { code: u.code, message: u.message } });
  };
  const dropUpload = () => {
    if (!upload) return;
    try { closeSync(upload.fd); } catch { /* closed */ }
    rmSync(upload.tmp, { force: true });
    upload = undefined;
  };
  ch.on('close', () => dropUpload());
  ch.on('message', (type, body) => {
    // One request per connection, then (put) exactly its announced bytes: anything else breaks the
    // protocol. After the answer (an error may come mid-push) the rest is ignored: the socket is closing.
    if (answered || !ch.open) return;
    if (type !== T_JSON && type !== T_CHUNK) { dropUpload(); refuse('unknown-type', `message type ${type} (the upgrade channel carries 1 JSON, 2 CHUNK)`); return; }
    if ((type === T_JSON && upload) || (type === T_CHUNK && !upload)) {
      dropUpload();
      refuse('unexpected', type === T_CHUNK ? 'package bytes without a put request' : 'a second request on one connection');
      return;
    }
    let req: PeerRequest | PutRequest | undefined;
    if (type === T_JSON) {
      try {
        req = decodePeerRequest(body);
      } catch (e) {
        refuse('malformed', (e as Error).message);
        return;
      }
    }
    try {
      if (req) {
        if (req.op === 'put') {
          mkdirSync(o.incomingDir, { recursive: true, mode: 0o700 });
          assertRoom(o.incomingDir, req.size, o.reserveBytes ?? 64 * 1048576, 'put: the pushed package', o.freeBytes ?? statfsFreeBytes);
          const tmp = join(o.incomingDir, `.rolling-${randomBytes(6).toString('hex')}.part`);
          upload = { fd: openSync(tmp, 'wx', 0o600), tmp, size: req.size, received: 0, hash: createHash('sha256'), sha256: req.sha256 };
          return;
        }
        o.handler(req).then((result) => answer({ ok: true, result }), fail);
      } else if (upload) {
        const u = upload;
        if (u.received + body.length > u.size) { dropUpload(); refuse('unexpected', `put: more than the announced ${u.size} bytes`); return; }
        writeSync(u.fd, body);
        u.hash.update(body);
        u.received += body.length;
        if (u.received < u.size) return;
        fsyncSync(u.fd);
        closeSync(u.fd);
        upload = undefined;
        const got = u.hash.digest('hex');
        if (got !== u.sha256) {
          rmSync(u.tmp, { force: true });
          throw new UsError('US_ERR_PKG_HASH_MISMATCH', `put: the package arrived with SHA-256 ${got}, announced ${u.sha256}`);
        }
        const file = join(o.incomingDir, `rolling-${u.sha256.slice(0, 16)}.usp`);
        renameSync(u.tmp, file);
        fsyncDir(o.incomingDir);
        answer({ ok: true, result: { file, bytes: u.size } });
      }
    } catch (e) {
      dropUpload();
      fail(e);
    }
  });
}

/** The client side: the board running a rolling upgrade asks its partner. */
export class PeerClient {
  /** `address`: the partner's, or how to read it when it is asked (a partner adopted at run time). */
  constructor(private readonly to: string | (() => string), readonly port: number, private readonly key: Buffer, private readonly rejections?: PartnerRejections) {}

  get address(): string {
    return typeof this.to === 'string' ? this.to : this.to();
  }

  /** One request; rejects with the partner's UsError, or US_ERR_LINK / US_ERR_TIMEOUT. */
  async call<T = unknown>(req: PeerRequest, timeoutMs = 10000): Promise<T> {
    const ch = await this.open(Math.min(timeoutMs, 3000));
    const reply = this.answerOf(ch, timeoutMs, req.op);
    ch.send(T_JSON, Buffer.from(JSON.stringify(req)));
    return (await reply) as T;
  }

  /** Pushes a package file; resolves with where the partner stored it. */
  async put(file: string, onProgress?: (done: number, total: number) => void, timeoutMs = 600000): Promise<{ file: string; bytes: number }> {
    const fh = await open(file, 'r').catch((e: Error) => { throw new UsError('US_ERR_NOT_FOUND', `package ${file}: ${e.message}`); });
    try {
      const size = (await fh.stat()).size;
      const hash = createHash('sha256');
      const buf = Buffer.allocUnsafe(CHUNK);
      for (let off = 0; off < size;) {
        const { bytesRead } = await fh.read(buf, 0, CHUNK, off);
        if (bytesRead === 0) throw new UsError('US_ERR_PKG_TRUNCATED', `package ${file} shrank while being read`);
        hash.update(buf.subarray(0, bytesRead));
        off += bytesRead;
      }
      const sha256 = hash.digest('hex');
      const ch = await this.open(3000);
      const reply = this.answerOf(ch, timeoutMs, 'put');
      ch.send(T_JSON, Buffer.from(JSON.stringify({ op: 'put', size, sha256 } satisfies PutRequest)));
      for (let off = 0; off < size && ch.open;) {
        const { bytesRead } = await fh.read(buf, 0, CHUNK, off);
        ch.send(T_CHUNK, Buffer.from(buf.subarray(0, bytesRead)));
        off += bytesRead;
        onProgress?.(off, size);
        // Bounded memory: wait for the kernel to take the bytes.
        if (ch.backlog > 8 * CHUNK) await new Promise<void>((r) => { ch.socket.once('drain', r); ch.socket.once('close', r); });
      }
      return (await reply) as { file: string; bytes: number };
    } finally {
      await fh.close();
    }
  }

  private async open(timeoutMs: number): Promise<MessageChannel> {
    return new MessageChannel(await connectAuthenticated(this.address, this.port, this.key, UPGRADE_PURPOSE, timeoutMs));
  }

  private answerOf(ch: MessageChannel, timeoutMs: number, op: string): Promise<unknown> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (f: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        f();
        ch.close();
      };
      const timer = setTimeout(() => settle(() => reject(new UsError('US_ERR_TIMEOUT', `partner did not answer "${op}" within ${timeoutMs} ms`))), timeoutMs);
      ch.on('message', (type, body) => {
        settle(() => {
          if (type !== T_JSON) {
            this.rejections?.reject('upgrade', 'unknown-type', `message type ${type} in answer to "${op}"`);
            reject(new UsError('US_ERR_LINK', `malformed answer from the partner to "${op}": message type ${type}`));
            return;
          }
          let a: Answer;
          try {
            a = decodePeerAnswer(op, body);
          } catch (e) {
            this.rejections?.reject('upgrade', 'malformed', (e as Error).message);
            reject(new UsError('US_ERR_LINK', `malformed answer from the partner: ${(e as Error).message}`));
            return;
          }
          if (a.ok) resolve(a.result);
          else reject(new UsError(a.error.code, `partner: ${a.error.message}`));
        });
      });
      ch.on('close', () => settle(() => reject(new UsError('US_ERR_LINK', `partner closed the upgrade channel before answering "${op}"`))));
    });
  }
}
