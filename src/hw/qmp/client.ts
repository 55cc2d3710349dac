/**
 * A QMP client: the protocol done well (greeting, capability negotiation, command ids, events,
 * errors, per-command timeouts, connection loss), without wrapping every QEMU command in a method.
 * The few commands the product uses get typed helpers one layer up (hw/hypervisor).
 * Owns one unix-socket connection; knows nothing about guests or boards.
 */
import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { UsError } from '../../core/errors.js';

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

export interface QmpEvent {
  event: string;
  data?: Record<string, unknown>;
  timestamp?: { seconds: number; microseconds: number };
}

export interface QmpClientOptions {
  /** Default timeout of one command, ms. Default 10000. */
  commandTimeoutMs?: number;
}

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
  command: string;
}

export declare interface QmpClient {
  on(ev: 'event', fn: (e: QmpEvent) => void): this;
  on(ev: 'close', fn: (err?: Error) => void): this;
}

export class QmpClient extends EventEmitter {
  private socket?: Socket;
  private buffer = '';
  private nextId = 1;
  private pending = new Map<string, Pending>();
  private greetingWaiter?: { resolve(g: QmpGreeting): void; reject(e: Error): void };
  private closed = false;
  greeting?: QmpGreeting;
  readonly commandTimeoutMs: number;

  constructor(opts: QmpClientOptions = {}) {
    super();
    this.commandTimeoutMs = opts.commandTimeoutMs ?? 10000;
  }

  /** Connects, reads the greeting and leaves capabilities negotiation mode. */
  async connect(path: string, timeoutMs = 5000): Promise<QmpGreeting> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => resolve(s));
      s.once('error', reject);
    });
    this.socket = socket;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (err) => this.shutdown(err));
    socket.on('close', () => this.shutdown());
    const greeting = await new Promise<QmpGreeting>((resolve, reject) => {
      const timer = setTimeout(() => reject(new UsError('US_ERR_QMP_TIMEOUT', `no QMP greeting on ${path} within ${timeoutMs} ms`)), timeoutMs);
      this.greetingWaiter = {
        resolve: (g) => { clearTimeout(timer); resolve(g); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      };
    });
    this.greeting = greeting;
    await this.execute('qmp_capabilities');
    return greeting;
  }

  /** Connects, retrying while the socket does not exist yet (QEMU still starting). */
  async connectWithRetry(path: string, deadlineMs: number, isAlive: () => boolean = () => true): Promise<QmpGreeting> {
    const end = Date.now() + deadlineMs;
    for (;;) {
      try {
        return await this.connect(path);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if ((code !== 'ENOENT' && code !== 'ECONNREFUSED') || Date.now() > end || !isAlive()) {
          throw new UsError('US_ERR_QMP', `cannot connect to QMP at ${path}: ${(e as Error).message}`);
        }
        await sleep(20);
      }
    }
  }

  /** Runs one command; resolves with its `return`, rejects with US_ERR_QMP carrying QEMU's error class. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs = this.commandTimeoutMs): Promise<T> {
    if (this.closed || !this.socket) return Promise.reject(new UsError('US_ERR_QMP_CLOSED', `QMP connection closed (command ${command})`));
    const id = `us-${this.nextId++}`;
    const msg = JSON.stringify(args ? { execute: command, arguments: args, id } : { execute: command, id });
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new UsError('US_ERR_QMP_TIMEOUT', `QMP command ${command} got no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer, command });
      this.socket!.write(msg + '\n');
    });
  }

  /** Resolves with the next event of this name (optionally matching a predicate), or rejects on timeout. */
  waitEvent(name: string, timeoutMs: number, match: (e: QmpEvent) => boolean = () => true): Promise<QmpEvent> {
    return new Promise((resolve, reject) => {
      const onEvent = (e: QmpEvent) => {
        if (e.event === name && match(e)) { cleanup(); resolve(e); }
      };
      const onClose = () => { cleanup(); reject(new UsError('US_ERR_QMP_CLOSED', `QMP closed while waiting for ${name}`)); };
      const timer = setTimeout(() => { cleanup(); reject(new UsError('US_ERR_QMP_TIMEOUT', `no ${name} event within ${timeoutMs} ms`)); }, timeoutMs);
      const cleanup = () => { clearTimeout(timer); this.off('event', onEvent); this.off('close', onClose); };
      this.on('event', onEvent);
      this.on('close', onClose);
    });
  }

  get isOpen(): boolean {
    return !this.closed && this.socket !== undefined;
  }

  close(): void {
    this.socket?.destroy();
    this.shutdown();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl).trim();
      this.buffer = this.buffer.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      this.shutdown(new UsError('US_ERR_QMP', `QEMU sent a line that is not JSON: ${line.slice(0, 80)}`));
      return;
    }
    if ('QMP' in msg) {
      this.greetingWaiter?.resolve(msg.QMP as QmpGreeting);
      this.greetingWaiter = undefined;
      return;
    }
    if (typeof msg.event === 'string') {
      this.emit('event', msg as unknown as QmpEvent);
      return;
    }
    const id = typeof msg.id === 'string' ? msg.id : undefined;
    const p = id ? this.pending.get(id) : undefined;
    if (!p) return; // an answer to a command that already timed out
    this.pending.delete(id!);
    clearTimeout(p.timer);
    if ('error' in msg) {
      const err = msg.error as { class?: string; desc?: string };
      p.reject(new UsError('US_ERR_QMP', `QMP ${p.command}: ${err.desc ?? 'error'}`, { class: err.class, command: p.command }));
    } else {
      p.resolve(msg.return);
    }
  }

  private shutdown(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    const reason = new UsError('US_ERR_QMP_CLOSED', `QMP connection closed${err ? `: ${err.message}` : ''}`);
    this.greetingWaiter?.reject(reason);
    for (const p of this.pending.values()) { clearTimeout(p.timer); p.reject(reason); }
    this.pending.clear();
    this.emit('close', err);
  }
}
