/**
 * A fake QMP server for unit tests (a public test double, like undici's MockAgent): speaks the
 * protocol's framing (greeting, capabilities negotiation, ids, errors, events) over a unix socket,
 * with scripted command handlers. Never used by the product itself.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';

export type FakeHandler = (args: Record<string, unknown> | undefined) => unknown | { error: { class: string; desc: string } } | 'no-reply';

export class FakeQmpServer {
  private server?: Server;
  private clients = new Set<Socket>();
  readonly received: Array<{ execute: string; arguments?: Record<string, unknown>; id?: unknown }> = [];
  readonly handlers = new Map<string, FakeHandler>();
  /** Send the greeting on connect (false to test a silent server). */
  greet = true;

  constructor(readonly path: string) {
    this.handlers.set('qmp_capabilities', () => ({}));
    this.handlers.set('query-status', () => ({ status: 'running', running: true }));
  }

  async listen(): Promise<void> {
    rmSync(this.path, { force: true });
    this.server = createServer((s) => this.onClient(s));
    await new Promise<void>((r) => this.server!.listen(this.path, () => r()));
  }

  emitEvent(event: string, data?: Record<string, unknown>, atMs?: number): void {
    const timestamp = atMs === undefined ? { seconds: 1, microseconds: 0 } : { seconds: Math.floor(atMs / 1000), microseconds: Math.round((atMs % 1000) * 1000) };
    const line = JSON.stringify({ event, data, timestamp }) + '\r\n';
    for (const c of this.clients) c.write(line);
  }

  /** Writes raw bytes to every client (for malformed-input tests). */
  writeRaw(text: string): void {
    for (const c of this.clients) c.write(text);
  }

  dropClients(): void {
    for (const c of this.clients) c.destroy();
  }

  async close(): Promise<void> {
    this.dropClients();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    rmSync(this.path, { force: true });
  }

  private onClient(s: Socket): void {
    this.clients.add(s);
    s.on('close', () => this.clients.delete(s));
    s.on('error', () => undefined);
    if (this.greet) {
      s.write(JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 }, package: 'fake' }, capabilities: ['oob'] } }) + '\r\n');
    }
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.trim()) this.onCommand(s, JSON.parse(line) as { execute: string; arguments?: Record<string, unknown>; id?: unknown });
      }
    });
  }

  private onCommand(s: Socket, cmd: { execute: string; arguments?: Record<string, unknown>; id?: unknown }): void {
    this.received.push(cmd);
    const h = this.handlers.get(cmd.execute);
    const out = h ? h(cmd.arguments) : { error: { class: 'CommandNotFound', desc: `The command ${cmd.execute} has not been found` } };
    if (out === 'no-reply') return;
    const isErr = typeof out === 'object' && out !== null && 'error' in out;
    s.write(JSON.stringify(isErr ? { ...(out as object), id: cmd.id } : { return: out ?? {}, id: cmd.id }) + '\r\n');
  }
}
