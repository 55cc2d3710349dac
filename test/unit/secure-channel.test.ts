/**
 * The partner channel (src/replication/secure-channel.ts) on loopback, with a real man-in-the-middle
 * TCP proxy between a client and a server: after a genuine handshake the proxy injects bytes, replays
 * recorded bytes and flips a bit, in either direction; a whole handshake recorded from one connection
 * is relayed on another, to the server and to a client. Each is rejected by the side that receives
 * it, counted by purpose and reason, ends that connection, and no attacker byte is ever delivered as
 * a message. A connection of one purpose cannot be used for another.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import {
  MessageChannel, connectAuthenticated, listenAuthenticated, partnerChannelRejections, type AuthServer, type ChannelRejection, type RejectReason,
} from '../../src/replication/secure-channel.js';
import { MitmProxy, sendRaw } from '../support/mitm-proxy.js';

const until = async (cond: () => boolean, what: string, ms = 3000) => {
  for (let t = 0; t < ms && !cond(); t += 5) await new Promise((r) => setTimeout(r, 5));
  assert.ok(cond(), what);
};

/** A framed message as the channel's plaintext framing writes it. */
function frame(type: number, body: Buffer): Buffer {
  const hdr = Buffer.allocUnsafe(5);
  hdr.writeUInt32BE(body.length + 1, 0);
  hdr[4] = type;
  return Buffer.concat([hdr, body]);
}

describe('partner channel: TLS-PSK, every record authenticated (man-in-the-middle on loopback)', () => {
  const key = randomBytes(32);
  const PURPOSE = 'inputs';
  let server: AuthServer;
  let proxy: MitmProxy;
  /** Messages the server side delivered, by connection. */
  let delivered: string[][];
  let serverChannels: MessageChannel[];
  let closeErrors: (Error | undefined)[];
  const rejections: ChannelRejection[] = [];
  const onRejected = (r: ChannelRejection) => rejections.push(r);

  const count = (reason: RejectReason, purpose = PURPOSE) => partnerChannelRejections.count(purpose, reason);

  before(async () => {
    partnerChannelRejections.on('rejected', onRejected);
    server = await listenAuthenticated('127.0.0.1', 0, key, PURPOSE, (s) => {
      const ch = new MessageChannel(s);
      const mine: string[] = [];
      delivered.push(mine);
      serverChannels.push(ch);
      ch.on('message', (_t, body) => mine.push(body.toString()));
      ch.on('close', (e) => closeErrors.push(e));
    });
    proxy = new MitmProxy({ host: '127.0.0.1', port: server.port });
    await proxy.start();
  });
  after(async () => {
    partnerChannelRejections.off('rejected', onRejected);
    await proxy.close();
    await server.close();
  });
  beforeEach(() => {
    delivered = [];
    serverChannels = [];
    closeErrors = [];
    rejections.length = 0;
  });
  afterEach(() => { for (const c of serverChannels) c.close(); });

  /** A genuine client through the proxy, one genuine message delivered. */
  async function genuine(): Promise<{ client: MessageChannel; conn: MitmProxy['connections'][number]; index: number }> {
    const before = proxy.connections.length;
    const index = delivered.length;
    const client = new MessageChannel(await connectAuthenticated('127.0.0.1', proxy.port, key, PURPOSE));
    client.send(1, Buffer.from('genuine-1'));
    await until(() => delivered.length > index && delivered[index]!.length === 1, 'the genuine message arrives through the proxy');
    assert.equal(proxy.connections.length, before + 1);
    assert.equal(delivered.length, index + 1, 'one connection handed over');
    return { client, conn: proxy.connections[before]!, index };
  }

  it('carries genuine messages through the proxy, encrypted (the proxy never sees the plaintext)', async () => {
    const { client, conn, index } = await genuine();
    client.send(1, Buffer.from('SECRET-INPUT 42 REG 123'));
    await until(() => delivered[index]!.length === 2, 'second message');
    assert.deepEqual(delivered[index], ['genuine-1', 'SECRET-INPUT 42 REG 123']);
    const seen = Buffer.concat(conn.recorded['to-server']);
    assert.equal(seen.indexOf('SECRET-INPUT'), -1, 'the plaintext is not on the wire');
    assert.equal(seen.indexOf('genuine-1'), -1);
    assert.equal(rejections.length, 0);
    client.close();
  });

  it('injected framed plaintext after the handshake: rejected (record), connection dropped, never delivered', async () => {
    const { client, conn, index } = await genuine();
    const before = count('record');
    conn.inject('to-server', frame(1, Buffer.from('INJECTED 1 switchover')));
    await until(() => closeErrors.length === 1, 'the server side dropped the connection');
    assert.equal(count('record'), before + 1);
    assert.equal(rejections.at(-1)?.side, 'server');
    assert.deepEqual(delivered[index], ['genuine-1'], 'nothing of the attacker was delivered');
    await until(() => !client.open, 'the client sees the connection end');
  });

  it('an injected TLS application-data record with a forged body: rejected (record)', async () => {
    const { conn, index } = await genuine();
    const before = count('record');
    const body = randomBytes(64);
    const rec = Buffer.concat([Buffer.from([23, 3, 3, 0, body.length]), body]);
    conn.inject('to-server', rec);
    await until(() => closeErrors.length === 1, 'dropped');
    assert.equal(count('record'), before + 1);
    assert.deepEqual(delivered[index], ['genuine-1']);
  });

  it('a replayed earlier record: rejected (record), the replayed message is not delivered twice', async () => {
    const { client, conn, index } = await genuine();
    const before = count('record');
    const recordOfGenuine1 = conn.recorded['to-server'].at(-1)!;
    client.send(1, Buffer.from('genuine-2'));
    await until(() => delivered[index]!.length === 2, 'genuine-2 arrives');
    conn.inject('to-server', recordOfGenuine1);
    await until(() => closeErrors.length === 1, 'dropped');
    assert.equal(count('record'), before + 1);
    assert.deepEqual(delivered[index], ['genuine-1', 'genuine-2'], 'genuine-1 not delivered a second time');
  });

  it('one flipped bit in a message (client to server): rejected (record), that message not delivered', async () => {
    const { client, conn, index } = await genuine();
    const before = count('record');
    conn.flipNext('to-server', -3);
    client.send(1, Buffer.from('ACK 999999999'));
    await until(() => closeErrors.length === 1, 'dropped');
    assert.equal(count('record'), before + 1);
    assert.deepEqual(delivered[index], ['genuine-1']);
  });

  it('one flipped bit from server to client: the client rejects it (record) and delivers nothing', async () => {
    const { client, conn, index } = await genuine();
    const got: string[] = [];
    client.on('message', (_t, b) => got.push(b.toString()));
    const closed = new Promise<Error | undefined>((r) => client.on('close', r));
    const before = count('record');
    conn.flipNext('to-client', 7);
    serverChannels[index]!.send(1, Buffer.from('clone-prepare /etc/evil.json'));
    await closed;
    assert.equal(count('record'), before + 1);
    assert.equal(rejections.at(-1)?.side, 'client');
    assert.deepEqual(got, []);
  });

  it('a whole handshake and its messages, relayed on a new connection to the server: rejected (handshake), nothing delivered', async () => {
    const { client, conn } = await genuine();
    client.send(1, Buffer.from('genuine-2'));
    await until(() => delivered.at(-1)!.length === 2, 'genuine-2');
    client.close();
    const capture = conn.recorded['to-server'].map((b) => Buffer.from(b));
    const before = count('handshake');
    const deliveredBefore = delivered.length;
    const attack = await sendRaw('127.0.0.1', server.port, capture);
    await attack.closed;
    assert.equal(count('handshake'), before + 1);
    assert.equal(delivered.length, deliveredBefore, 'no connection was handed to the channel');
  });

  it('a client does not accept a server that replays a recorded server handshake', async () => {
    const { client, conn } = await genuine();
    client.close();
    const serverSide = conn.recorded['to-client'].map((b) => Buffer.from(b));
    // The attacker's server answers whatever it is sent with the recorded server flight.
    const fake = createServer((s: Socket) => {
      s.on('error', () => undefined);
      s.once('data', () => { for (const b of serverSide) s.write(b); });
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', () => r()));
    try {
      const before = count('handshake');
      await assert.rejects(connectAuthenticated('127.0.0.1', (fake.address() as { port: number }).port, key, PURPOSE, 1500),
        (e: Error & { code?: string }) => e.code === 'US_ERR_LINK' && /failed to authenticate/.test(e.message));
      assert.equal(count('handshake'), before + 1);
      assert.equal(rejections.at(-1)?.side, 'client');
    } finally {
      await new Promise<void>((r) => fake.close(() => r()));
    }
  });

  it('a connection opened for another purpose, or with another key, is refused (handshake)', async () => {
    const before = count('handshake');
    await assert.rejects(connectAuthenticated('127.0.0.1', server.port, key, 'upgrade'), (e: Error & { code?: string }) => e.code === 'US_ERR_LINK');
    await assert.rejects(connectAuthenticated('127.0.0.1', server.port, randomBytes(32), PURPOSE), (e: Error & { code?: string }) => e.code === 'US_ERR_LINK');
    await until(() => count('handshake') >= before + 2, 'both refused by the server');
    assert.equal(delivered.length, 0);
  });

  it('plain framing from a board without TLS (the old handshake\'s traffic) is refused', async () => {
    const before = count('handshake');
    const attack = await sendRaw('127.0.0.1', server.port, [randomBytes(48), frame(1, Buffer.from('INPUT 1'))]);
    await attack.closed;
    assert.equal(count('handshake'), before + 1);
    assert.equal(delivered.length, 0);
  });

  it('a connection that never finishes its handshake is dropped after the handshake timeout (handshake-timeout)', async () => {
    const slow = await listenAuthenticated('127.0.0.1', 0, key, 'migration', () => assert.fail('never handed over'), undefined, 200);
    try {
      const before = count('handshake-timeout', 'migration');
      const attack = await sendRaw('127.0.0.1', slow.port, []);
      await attack.closed;
      assert.equal(count('handshake-timeout', 'migration'), before + 1);
    } finally {
      await slow.close();
    }
  });

  it('a key holder that sends an impossible message length: the connection is dropped and counted (framing)', async () => {
    const before = count('framing');
    const sock = await connectAuthenticated('127.0.0.1', server.port, key, PURPOSE);
    sock.write(Buffer.from([0xff, 0xff, 0xff, 0xff, 1]));
    await until(() => closeErrors.length === 1, 'dropped');
    assert.match(String(closeErrors[0]?.message), /bad message length/);
    assert.equal(count('framing'), before + 1);
    assert.equal(rejections.at(-1)?.side, 'server');
    assert.deepEqual(delivered.at(-1), []);
    sock.destroy();
  });

  it('a byte pipe (the migration stream) is protected the same way: a flipped bit ends it', async () => {
    const got: Buffer[] = [];
    let closedErr: Error | undefined;
    const mig = await listenAuthenticated('127.0.0.1', 0, key, 'migration', (s) => {
      s.on('data', (d: Buffer) => got.push(d));
      s.on('error', (e) => { closedErr = e; });
      s.resume();
    });
    const p = new MitmProxy({ host: '127.0.0.1', port: mig.port });
    await p.start();
    try {
      const before = count('record', 'migration');
      const sock = await connectAuthenticated('127.0.0.1', p.port, key, 'migration');
      const state = randomBytes(4096);
      sock.write(state);
      await until(() => Buffer.concat(got).length === state.length, 'the stream arrives');
      assert.ok(Buffer.concat(got).equals(state));
      p.connections[0]!.flipNext('to-server', 100);
      sock.write(randomBytes(4096));
      await until(() => closedErr !== undefined, 'the tampered stream is ended');
      assert.equal(count('record', 'migration'), before + 1);
      assert.equal(Buffer.concat(got).length, state.length, 'no byte of the tampered record reached the loader');
      sock.destroy();
    } finally {
      await p.close();
      await mig.close();
    }
  });
});

describe('partner channel server: close', () => {
  it('ends the connections a partner keeps open, so that a controller\'s orderly stop does not wait for the partner', async () => {
    const key = randomBytes(32);
    const accepted: MessageChannel[] = [];
    const server = await listenAuthenticated('127.0.0.1', 0, key, 'upgrade', (s) => { accepted.push(new MessageChannel(s)); });
    const client = new MessageChannel(await connectAuthenticated('127.0.0.1', server.port, key, 'upgrade'));
    const clientClosed = new Promise<void>((r) => client.on('close', () => r()));
    client.send(1, Buffer.from('hello'));
    for (let i = 0; i < 100 && !accepted.length; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(accepted.length, 1, 'the connection was accepted and stays open');
    // net.Server#close alone waits until every connection has ended: with the partner's open, forever.
    const closed = await Promise.race([server.close().then(() => 'closed'), new Promise((r) => setTimeout(() => r('still waiting'), 3000))]);
    assert.equal(closed, 'closed');
    await clientClosed;
  });
});

describe('partner channel: the messages of one callback go out in one write', () => {
  it('ten sends in one tick are one writev of ten messages, received whole and in order', async () => {
    const server = createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const accepted = new Promise<Socket>((r) => server.once('connection', r));
    const a = new MessageChannel(connect((server.address() as { port: number }).port, '127.0.0.1'));
    const b = new MessageChannel(await accepted);
    try {
      const sock = a.socket as Socket & { _writev?: (chunks: unknown[], cb: () => void) => void; _write: (c: unknown, e: unknown, cb: () => void) => void };
      const calls: number[] = [];
      const writev = sock._writev!.bind(sock);
      const write = sock._write.bind(sock);
      sock._writev = (chunks, cb) => { calls.push(chunks.length); writev(chunks, cb); };
      sock._write = (c, e, cb) => { calls.push(1); write(c, e, cb); };
      const got: number[] = [];
      b.on('message', (_type: number, body: Buffer) => got.push(body.readUInt32BE(0)));
      for (let i = 0; i < 10; i++) { const m = Buffer.alloc(4); m.writeUInt32BE(i); a.send(9, m); }
      for (let i = 0; i < 100 && got.length < 10; i++) await new Promise((r) => setTimeout(r, 5));
      assert.deepEqual(got, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
      assert.deepEqual(calls, [10], 'one system write for the ten');
    } finally {
      a.close();
      b.close();
      server.close();
    }
  });
});
