/**
 * A man-in-the-middle TCP proxy on loopback for the partner channel's tests: it forwards a client's
 * connection to a server, records every chunk in both directions, and on demand injects bytes, replays
 * recorded ones or flips a bit in the next chunk it forwards. Only for tests; closes what it opened.
 */
import { createServer, connect, type Server, type Socket } from 'node:net';

export type Direction = 'to-server' | 'to-client';

export interface ProxiedConnection {
  client: Socket;
  server: Socket;
  /** Chunks forwarded so far, by direction, in order. */
  recorded: Record<Direction, Buffer[]>;
  /** Flip bit 0 of the byte at `offset` (from the chunk's end when negative) of the next chunk in that direction. */
  flipNext(dir: Direction, offset: number): void;
  /** Writes attacker bytes into the stream in that direction. */
  inject(dir: Direction, bytes: Buffer): void;
}

export class MitmProxy {
  private server?: Server;
  readonly connections: ProxiedConnection[] = [];
  port = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  async start(): Promise<void> {
    this.server = createServer((client) => {
      const server = connect(this.target.port, this.target.host);
      const flips: Partial<Record<Direction, number>> = {};
      const conn: ProxiedConnection = {
        client, server, recorded: { 'to-server': [], 'to-client': [] },
        flipNext: (dir, offset) => { flips[dir] = offset; },
        inject: (dir, bytes) => { (dir === 'to-server' ? server : client).write(bytes); },
      };
      const forward = (from: Socket, to: Socket, dir: Direction) => from.on('data', (d: Buffer) => {
        const chunk = Buffer.from(d);
        conn.recorded[dir].push(Buffer.from(chunk));
        const off = flips[dir];
        if (off !== undefined) {
          delete flips[dir];
          const i = off < 0 ? chunk.length + off : Math.min(off, chunk.length - 1);
          chunk[i]! ^= 1;
        }
        to.write(chunk);
      });
      forward(client, server, 'to-server');
      forward(server, client, 'to-client');
      const end = () => { client.destroy(); server.destroy(); };
      for (const s of [client, server]) { s.on('error', end); s.on('close', end); }
      this.connections.push(conn);
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', () => r()));
    this.port = (this.server.address() as { port: number }).port;
  }

  async close(): Promise<void> {
    for (const c of this.connections) { c.client.destroy(); c.server.destroy(); }
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
  }
}

/** Opens a raw TCP connection and writes the given chunks one after another (an attacker replaying a capture). */
export async function sendRaw(host: string, port: number, chunks: Buffer[], gapMs = 20): Promise<{ received: Buffer; closed: Promise<void>; socket: Socket }> {
  const socket = connect(port, host);
  socket.on('error', () => undefined);
  const got: Buffer[] = [];
  socket.on('data', (d: Buffer) => got.push(d));
  const closed = new Promise<void>((r) => socket.once('close', () => r()));
  await new Promise<void>((r, j) => { socket.once('connect', () => r()); socket.once('error', j); });
  for (const c of chunks) {
    if (socket.destroyed) break;
    socket.write(c);
    await new Promise((r) => setTimeout(r, gapMs));
  }
  return { get received() { return Buffer.concat(got); }, closed, socket };
}
