/**
 * The only module that touches node-ipc (pinned to exactly 12.0.0: other versions carried malicious
 * code). Local control requests and replies over a unix socket that only root can open.
 * Everything above speaks ControlRequest/ControlReply and never sees node-ipc.
 *
 * The daemon serves with node-ipc. The client side (`callControl`, one request per connection)
 * speaks node-ipc's framing itself — a JSON `{type, data}` message ended by the delimiter `\f`, as
 * node-ipc's EventParser and js-message write it — because loading node-ipc costs a CLI process
 * ~30 ms of its start (of a ~150 ms `understudy status`); node-ipc is imported only when a server
 * starts. test/unit/ipc.test.ts runs this client against the node-ipc server. For the same reason a
 * request's id is this process's id and a counter, not a random UUID (node:crypto: ~13 ms more): it
 * only has to tell this connection's reply from anything else on it.
 */
import { chmodSync } from 'node:fs';
import { connect } from 'node:net';
import type { IPCModule } from 'node-ipc';
import { UsError, asUsError, type UsErrorCode } from '../core/errors.js';

export interface ControlRequest {
  id: string;
  command: string;
  args?: Record<string, unknown>;
}

export type ControlReply =
  | { id: string; ok: true; result: unknown }
  | { id: string; ok: false; error: { code: UsErrorCode; message: string } };

export type ControlHandler = (command: string, args: Record<string, unknown>) => Promise<unknown>;

/** Largest request accepted, in characters of its JSON. */
export const MAX_REQUEST_CHARS = 64 * 1024;

/**
 * Largest frame node-ipc may hold without its delimiter: a request of MAX_REQUEST_CHARS plus the
 * envelope (`{"type":"request","data":…}`). node-ipc itself buffers an unterminated frame without
 * limit, so a client that never sends the delimiter would grow the daemon's memory.
 */
export const MAX_FRAME_CHARS = MAX_REQUEST_CHARS + 1024;

/** How long a client that was sent an error and EOF may keep its connection before it is destroyed. */
const CLOSE_GRACE_MS = 2000;

/** node-ipc's server-side socket: a net.Socket carrying its partial frame in `ipcBuffer`. */
interface IpcSocketLike {
  ipcBuffer?: string;
  pause?(): void;
  end?(): void;
  destroy?(): void;
  on?(ev: 'data', fn: () => void): void;
}

function quiet(ipc: IPCModule): void {
  ipc.config.silent = true;
  ipc.config.logInColor = false;
  ipc.config.logger = () => undefined;
}

export interface ControlServer {
  close(): void;
}

/** node-ipc's frame delimiter (its default `config.delimiter`), which the server and callControl use. */
const FRAME_DELIMITER = '\f';

export async function serveControl(socketPath: string, handler: ControlHandler): Promise<ControlServer> {
  const { IPCModule } = await import('node-ipc');
  const ipc = new IPCModule();
  quiet(ipc);
  ipc.config.id = 'understudyd';
  ipc.config.maxConnections = 16;
  await new Promise<void>((resolve) => {
    ipc.serve(socketPath, () => resolve());
    ipc.server.on('request', (data: unknown, socket: IpcSocketLike) => {
      void handleOne(data, handler).then((reply) => ipc.server.emit(socket, 'reply', reply));
    });
    ipc.server.on('connect', (socket: IpcSocketLike) => {
      // Runs after node-ipc's own 'data' listener has appended the chunk to the partial frame.
      socket.on?.('data', () => {
        const partial = socket.ipcBuffer ?? '';
        if (partial.length <= MAX_FRAME_CHARS) return;
        socket.ipcBuffer = '';
        socket.pause?.();
        // The request's id comes first in what callControl sends: answer it, so the client sees the error.
        const id = /^\{"type":"request","data":\{"id":"([^"\\]{1,64})"/.exec(partial)?.[1] ?? '';
        const reply: ControlReply = { id, ok: false, error: { code: 'US_ERR_CONTROL', message: `request larger than ${MAX_REQUEST_CHARS} characters (no frame delimiter within ${MAX_FRAME_CHARS}): connection closed` } };
        ipc.server.emit(socket, 'reply', reply);
        // Half-close: the client reads the reply, then EOF. Destroying at once could reset a client
        // that is still writing before it has read the reply; one that ignores the EOF is cut off.
        socket.end?.();
        setTimeout(() => socket.destroy?.(), CLOSE_GRACE_MS).unref();
      });
    });
    ipc.server.on('error', () => undefined);
    ipc.server.start();
  });
  chmodSync(socketPath, 0o600);
  return { close: () => ipc.server.stop() };
}

async function handleOne(data: unknown, handler: ControlHandler): Promise<ControlReply> {
  const req = data as Partial<ControlRequest> | null;
  const id = typeof req?.id === 'string' ? req.id.slice(0, 64) : '';
  try {
    if (JSON.stringify(data ?? null).length > MAX_REQUEST_CHARS) throw new UsError('US_ERR_CONTROL', `request larger than ${MAX_REQUEST_CHARS} characters`);
    if (!req || typeof req !== 'object' || typeof req.command !== 'string' || !/^[a-z][a-z.-]{0,40}$/.test(req.command)) {
      throw new UsError('US_ERR_CONTROL', 'malformed request: expected {id, command, args}');
    }
    const args = req.args ?? {};
    if (typeof args !== 'object' || Array.isArray(args)) throw new UsError('US_ERR_CONTROL', 'malformed request: args must be an object');
    return { id, ok: true, result: await handler(req.command, args) };
  } catch (e) {
    const u = asUsError(e);
    return { id, ok: false, error: { code: u.code, message: u.message } };
  }
}

/**
 * Sends one request to the daemon and resolves with its result, or rejects with its UsError. One
 * connection per request, in node-ipc's framing (see the top comment); frames other than this
 * request's reply are ignored.
 */
let requests = 0;

export function callControl(socketPath: string, command: string, args: Record<string, unknown> = {}, timeoutMs = 15000): Promise<unknown> {
  const id = `${process.pid}-${++requests}`;
  return new Promise((resolve, reject) => {
    const sock = connect(socketPath);
    let done = false;
    let buffered = '';
    const finish = (err: Error | undefined, result?: unknown) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock.destroy();
      if (err) reject(err); else resolve(result);
    };
    const timer = setTimeout(() => finish(new UsError('US_ERR_TIMEOUT', `daemon did not answer "${command}" within ${timeoutMs} ms`)), timeoutMs);
    sock.setEncoding('utf8');
    sock.once('connect', () => sock.write(JSON.stringify({ type: 'request', data: { id, command, args } satisfies ControlRequest }) + FRAME_DELIMITER));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      const notRunning = e.code === 'ENOENT' || e.code === 'ECONNREFUSED';
      finish(new UsError(notRunning ? 'US_ERR_NOT_RUNNING' : 'US_ERR_CONTROL',
        notRunning ? `no daemon is running on this board (${socketPath})` : `control socket ${socketPath}: ${e.message}`));
    });
    sock.on('close', () => finish(new UsError('US_ERR_CONTROL', `control socket ${socketPath}: the daemon closed the connection without answering "${command}"`)));
    sock.on('data', (chunk: string) => {
      buffered += chunk;
      let end: number;
      while ((end = buffered.indexOf(FRAME_DELIMITER)) >= 0) {
        const frame = buffered.slice(0, end);
        buffered = buffered.slice(end + 1);
        let msg: { type?: unknown; data?: ControlReply } | undefined;
        try {
          msg = JSON.parse(frame) as typeof msg;
        } catch {
          finish(new UsError('US_ERR_CONTROL', `control socket ${socketPath}: a frame that is not JSON`));
          return;
        }
        const reply = msg?.data;
        if (msg?.type !== 'reply' || !reply || reply.id !== id) continue;
        if (reply.ok) finish(undefined, reply.result);
        else finish(new UsError(reply.error.code, reply.error.message));
      }
    });
  });
}
