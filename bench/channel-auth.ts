/**
 * The cost of authenticating every message on the partner channels (src/replication/secure-channel.ts):
 * the same MessageChannel framing over a plain TCP socket (what the channels carried after the old
 * handshake) and over TLS-PSK (ECDHE-PSK-CHACHA20-POLY1305), on loopback, same run, phases alternated.
 * Per message size: round-trip latency of one message echoed (p50/p99, one in flight, as an INPUT and
 * its ACK), one-way throughput (messages/s, a window of messages in flight), and a bulk byte pipe as
 * the clone's migration stream uses it (MB/s). Also the connection set-up (handshake) time.
 *
 *   node dist/bench/channel-auth.js [--rounds N] [--messages N] [--bulk-mb N]
 */
import { randomBytes } from 'node:crypto';
import { createServer, connect, type Socket, type Server } from 'node:net';
import { MessageChannel, connectAuthenticated, listenAuthenticated, type AuthServer } from '../src/replication/secure-channel.js';
import { machine, printTable, summarize } from './lib.js';

type Mode = 'plain' | 'tls-psk';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const ROUNDS = arg('rounds', 3);
const MESSAGES = arg('messages', 2000);
const BULK_MB = arg('bulk-mb', 64);
const SIZES = [64, 512, 4096, 65536];
const key = randomBytes(32);

interface Endpoint {
  port: number;
  /** The server side's socket of the next connection. */
  next(): Promise<Socket>;
  close(): Promise<void>;
}

async function listen(mode: Mode, purpose: string): Promise<Endpoint> {
  const waiting: Array<(s: Socket) => void> = [];
  const ready: Socket[] = [];
  const hand = (s: Socket) => { const w = waiting.shift(); if (w) w(s); else ready.push(s); };
  const next = () => new Promise<Socket>((r) => { const s = ready.shift(); if (s) r(s); else waiting.push(r); });
  if (mode === 'tls-psk') {
    const srv: AuthServer = await listenAuthenticated('127.0.0.1', 0, key, purpose, hand);
    return { port: srv.port, next, close: () => srv.close() };
  }
  const srv: Server = createServer({ pauseOnConnect: true, noDelay: true }, hand);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  return { port: (srv.address() as { port: number }).port, next, close: () => new Promise<void>((r) => srv.close(() => r())) };
}

async function open(mode: Mode, port: number, purpose: string): Promise<Socket> {
  if (mode === 'tls-psk') return connectAuthenticated('127.0.0.1', port, key, purpose);
  const s = connect({ host: '127.0.0.1', port, noDelay: true });
  await new Promise<void>((r, j) => { s.once('connect', () => r()); s.once('error', j); });
  return s;
}

async function pair(mode: Mode, ep: Endpoint): Promise<{ a: MessageChannel; b: MessageChannel; setupMs: number }> {
  const t0 = performance.now();
  const [sa, sb] = await Promise.all([open(mode, ep.port, 'inputs'), ep.next()]);
  const setupMs = performance.now() - t0;
  return { a: new MessageChannel(sa), b: new MessageChannel(sb), setupMs };
}

/** One message in flight: send, the other side echoes a small ACK, measure the round trip. */
async function latency(a: MessageChannel, b: MessageChannel, size: number, n: number): Promise<number[]> {
  const body = randomBytes(size);
  const ack = Buffer.alloc(8);
  b.on('message', () => b.send(2, ack));
  const rtts: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await new Promise<void>((r) => { a.once('message', () => r()); a.send(1, body); });
    rtts.push(performance.now() - t0);
  }
  b.removeAllListeners('message');
  return rtts;
}

/** One-way stream with a window of messages in flight (acknowledged every 64). */
async function throughput(a: MessageChannel, b: MessageChannel, size: number, n: number): Promise<number> {
  const body = randomBytes(size);
  let got = 0;
  b.on('message', () => { got++; if (got % 64 === 0 || got === n) b.send(2, Buffer.alloc(4)); });
  const window = 256;
  let acked = 0;
  const t0 = performance.now();
  await new Promise<void>((done) => {
    let sent = 0;
    const pump = () => { while (sent < n && sent - acked < window) { a.send(1, body); sent++; } };
    a.on('message', () => { acked = Math.min(n, acked + 64); if (got >= n) done(); else pump(); });
    pump();
  });
  const s = (performance.now() - t0) / 1000;
  a.removeAllListeners('message');
  b.removeAllListeners('message');
  return n / s;
}

/** A bulk byte pipe (the migration stream): MB/s. */
async function bulk(mode: Mode, mb: number): Promise<number> {
  const ep = await listen(mode, 'migration');
  try {
    const [src, dst] = await Promise.all([open(mode, ep.port, 'migration'), ep.next()]);
    const total = mb * 1048576;
    let got = 0;
    const t0 = performance.now();
    const finished = new Promise<void>((r) => dst.on('data', (d: Buffer) => { got += d.length; if (got >= total) r(); }));
    dst.resume();
    const chunk = randomBytes(256 * 1024);
    for (let sent = 0; sent < total; sent += chunk.length) {
      if (!src.write(chunk)) await new Promise((r) => src.once('drain', r));
    }
    await finished;
    const s = (performance.now() - t0) / 1000;
    src.destroy();
    dst.destroy();
    return mb / s;
  } finally {
    await ep.close();
  }
}

async function main(): Promise<void> {
  console.log(`bench/channel-auth — ${new Date().toISOString()} — ${machine()}`);
  console.log(`${ROUNDS} rounds, phases alternated (plain, tls-psk, plain, …); ${MESSAGES} messages per latency and throughput phase; bulk ${BULK_MB} MiB`);
  const modes: Mode[] = ['plain', 'tls-psk'];
  const lat = new Map<string, number[]>();
  const tput = new Map<string, number[]>();
  const setup = new Map<Mode, number[]>();
  const bulkRate = new Map<Mode, number[]>();
  const push = <K>(m: Map<K, number[]>, k: K, v: number | number[]) => { const a = m.get(k) ?? []; m.set(k, a.concat(v)); };
  for (let round = 0; round < ROUNDS; round++) {
    for (const mode of round % 2 === 0 ? modes : [...modes].reverse()) {
      const ep = await listen(mode, 'inputs');
      try {
        for (const size of SIZES) {
          const { a, b, setupMs } = await pair(mode, ep);
          push(setup, mode, setupMs);
          const n = size >= 65536 ? Math.max(200, MESSAGES / 10) : MESSAGES;
          await latency(a, b, size, 100); // warm-up
          push(lat, `${mode}:${size}`, await latency(a, b, size, n));
          push(tput, `${mode}:${size}`, await throughput(a, b, size, n * 5));
          a.close();
          b.close();
        }
      } finally {
        await ep.close();
      }
      push(bulkRate, mode, await bulk(mode, BULK_MB));
    }
  }
  const rows: Array<Array<string | number>> = [['size B', 'mode', 'rtt p50 ms', 'rtt p99 ms', 'messages/s', 'MB/s']];
  for (const size of SIZES) {
    for (const mode of modes) {
      const l = summarize(lat.get(`${mode}:${size}`)!);
      const t = tput.get(`${mode}:${size}`)!;
      const mps = t.reduce((x, y) => x + y, 0) / t.length;
      rows.push([size, mode, l.p50, l.p99, Math.round(mps), (mps * size) / 1048576]);
    }
    const lp = summarize(lat.get(`plain:${size}`)!);
    const ls = summarize(lat.get(`tls-psk:${size}`)!);
    const tp = tput.get(`plain:${size}`)!.reduce((x, y) => x + y, 0);
    const ts = tput.get(`tls-psk:${size}`)!.reduce((x, y) => x + y, 0);
    rows.push([size, 'tls-psk / plain', ls.p50 / lp.p50, ls.p99 / lp.p99, ts / tp, '']);
  }
  printTable('messages over the channel (loopback; round trip = message + 8-byte answer)', rows);
  const s = (m: Mode) => summarize(setup.get(m)!);
  const b = (m: Mode) => bulkRate.get(m)!.reduce((x, y) => x + y, 0) / bulkRate.get(m)!.length;
  printTable('connection set-up and the migration byte pipe', [
    ['mode', 'set-up p50 ms', 'set-up max ms', `bulk MB/s (${BULK_MB} MiB)`],
    ['plain', s('plain').p50, s('plain').max, b('plain')],
    ['tls-psk', s('tls-psk').p50, s('tls-psk').max, b('tls-psk')],
  ]);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
