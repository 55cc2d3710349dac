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
import { UsError, asUsError, type UsErrorCode } from '../core/errors.js';
import { fsyncDir } from '../hw/bootenv/durable.js';
import { MessageChannel, connectAuthenticated, listenAuthenticated, type AuthServer } from '../replication/secure-channel.js';

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

export type PeerRequest =
  | { op: 'status' }
  | { op: 'install'; file: string }
  | { op: 'reboot' }
  | { op: 'commit' }
  | { op: 'rollback'; reboot: boolean }
  | { op: 'journal'; message: string };

type PutRequest = { op: 'put'; size: number; sha256: string };

type Answer = { ok: true; result: unknown } | { ok: false; error: { code: UsErrorCode; message: string } };

export type PeerHandler = (req: PeerRequest) => Promise<unknown>;

export interface PeerServerOptions {
  address: string;
  port: number;
  key: Buffer;
  /** Where pushed packages are stored (`rolling-<sha256 prefix>.usp`). */
  incomingDir: string;
  handler: PeerHandler;
  onReject?: (e: Error) => void;
}

/** Serves the partner's requests. */
export function listenPeer(o: PeerServerOptions): Promise<AuthServer> {
  return listenAuthenticated(o.address, o.port, o.key, UPGRADE_PURPOSE, (s) => servePeerConnection(s, o), o.onReject);
}

function servePeerConnection(sock: Socket, o: PeerServerOptions): void {
  const ch = new MessageChannel(sock);
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
    try {
      if (type === T_JSON && !upload && !answered) {
        const req = JSON.parse(body.toString('utf8')) as PeerRequest | PutRequest;
        if (req.op === 'put') {
          if (!Number.isSafeInteger(req.size) || req.size < 1 || req.size > MAX_PACKAGE || !/^[0-9a-f]{64}$/.test(String(req.sha256))) {
            throw new UsError('US_ERR_CONTROL', 'put: size (1 byte to 4 GiB) and sha256 (64 hex digits) expected');
          }
          mkdirSync(o.incomingDir, { recursive: true, mode: 0o700 });
          const tmp = join(o.incomingDir, `.rolling-${randomBytes(6).toString('hex')}.part`);
          upload = { fd: openSync(tmp, 'wx', 0o600), tmp, size: req.size, received: 0, hash: createHash('sha256'), sha256: req.sha256 };
          return;
        }
        o.handler(req).then((result) => answer({ ok: true, result }), fail);
      } else if (type === T_CHUNK && upload) {
        const u = upload;
        if (u.received + body.length > u.size) throw new UsError('US_ERR_CONTROL', `put: more than the announced ${u.size} bytes`);
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
      } else {
        throw new UsError('US_ERR_CONTROL', `unexpected message type ${type} on the upgrade channel`);
      }
    } catch (e) {
      dropUpload();
      fail(e);
    }
  });
}

/** The client side: the board running a rolling upgrade asks its partner. */
export class PeerClient {
  constructor(readonly address: string, readonly port: number, private readonly key: Buffer) {}

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
        if (type !== T_JSON) return;
        settle(() => {
          try {
            const a = JSON.parse(body.toString('utf8')) as Answer;
            if (a.ok) resolve(a.result);
            else reject(new UsError(a.error.code, `partner: ${a.error.message}`));
          } catch (e) {
            reject(new UsError('US_ERR_LINK', `malformed answer from the partner: ${(e as Error).message}`));
          }
        });
      });
      ch.on('close', () => settle(() => reject(new UsError('US_ERR_LINK', `partner closed the upgrade channel before answering "${op}"`))));
    });
  }
}
