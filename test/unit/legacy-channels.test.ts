/**
 * A rolling upgrade from the previous firmware (partner channels before TLS): this firmware against
 * that firmware's own channel code (test/support/previous-firmware-channel.ts, from git history), on
 * loopback. While the partner is heard only in heartbeat version 1 or 2 the two talk — the input
 * stream, a clone-prepare and the migration stream, upgrade requests — in both directions; otherwise
 * this firmware refuses the old handshake and counts it, and never offers it. A real Membership
 * decides: a partner heard in version 3 never turns the old protocol on; version-1 and version-2
 * frames do (not forged ones without the key), and version 3 heard turns it off and ends the old
 * connections. What an
 * operator sees: the alarm in `understudy status`, the metrics, the journal lines.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { pino } from 'pino';
import { formatReplication } from '../../src/cli/replication-commands.js';
import { encodeHeartbeat, type Heartbeat } from '../../src/ha/frame.js';
import { encodeHeartbeatV1 } from '../../src/ha/frame-v1.js';
import { Membership, type LocalState } from '../../src/ha/membership.js';
import { MembershipProcess } from '../../src/ha/membership-process.js';
import { journalLegacyChannels } from '../../src/mgmt/channel-rejections.js';
import { Metrics, snapshotFrom } from '../../src/mgmt/metrics.js';
import { LEGACY_ALARM, legacyPartnerChannels } from '../../src/replication/legacy-channel.js';
import { T_CONTROL, T_INPUT, decodeControl, decodeInput, encodeControl, encodeInput } from '../../src/replication/messages.js';
import {
  CHANNEL_CIPHERS, MessageChannel, channelPsk, connectAuthenticated, listenAuthenticated, partnerChannelRejections, type AuthServer,
} from '../../src/replication/secure-channel.js';
import { PeerClient, listenPeer } from '../../src/upgrade/peer.js';
import { memLinkPair } from '../support/mem-link.js';
import { OldFrames, oldConnect, oldListen } from '../support/previous-firmware-channel.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const until = async (cond: () => boolean, what: string, ms = 5000) => {
  for (let t = 0; t < ms && !cond(); t += 5) await sleep(5);
  assert.ok(cond(), what);
};
const quiet = pino({ level: 'silent' });
const key = randomBytes(32);
const count = (purpose: string, reason: 'handshake' | 'handshake-timeout') => partnerChannelRejections.count(purpose, reason);
const closedOf = (s: Socket) => new Promise<void>((r) => (s.destroyed ? r() : s.once('close', () => r())));
/** A status answer as every firmware's upgrade handler gives it. */
const STATUS = { board: 'sim-a', role: 'PRIMARY', running: 'A', good: 'A', trial: null, version: '0.1.0', guest: 'running', protected: true, rollingRunning: true, backlog: 0 };

/** A server of this firmware that hands each connection to a MessageChannel and records what it gets. */
async function newServer(purpose: string, handshakeTimeoutMs = 3000) {
  const got: Array<{ type: number; body: Buffer }> = [];
  const channels: MessageChannel[] = [];
  const server: AuthServer = await listenAuthenticated('127.0.0.1', 0, key, purpose, (s) => {
    const ch = new MessageChannel(s);
    channels.push(ch);
    ch.on('message', (type, body) => { got.push({ type, body }); ch.send(type, Buffer.concat([Buffer.from('echo:'), body])); });
  }, undefined, handshakeTimeoutMs);
  return { server, got, channels, close: async () => { for (const c of channels) c.close(); await server.close(); } };
}

describe('partner channels with a board of the previous firmware (rolling upgrade)', function () {
  this.timeout(20000);
  afterEach(() => legacyPartnerChannels.set(false, 'test over'));

  describe('while the partner is heard only in heartbeat version 1', () => {
    beforeEach(() => legacyPartnerChannels.set(true, 'test: partner heard only in version 1'));

    it('input stream: the previous firmware\'s client is accepted (the old nonce, no ClientHello came) and messages flow both ways', async () => {
      const s = await newServer('inputs');
      try {
        const before = legacyPartnerChannels.status().connections.inputs ?? 0;
        const rejected = partnerChannelRejections.total;
        const old = new OldFrames(await oldConnect(s.server.port, key, 'inputs'));
        const input = encodeInput({ seq: 7, input: { kind: 'request', clientPort: 20001, payload: Buffer.from('a1 REG alice') } });
        const answer = old.next();
        old.send(T_INPUT, input);
        const echo = await answer;
        assert.equal(s.got.length, 1);
        assert.equal(s.got[0]!.type, T_INPUT);
        assert.equal(decodeInput(s.got[0]!.body).input.payload.toString(), 'a1 REG alice');
        assert.equal(echo.body.subarray(5).toString('hex'), input.toString('hex'), 'the answer reached the old client intact');
        assert.equal(legacyPartnerChannels.status().connections.inputs, before + 1, 'counted as a connection of the previous firmware');
        assert.equal(partnerChannelRejections.total, rejected, 'not a rejection');
        old.socket.destroy();
      } finally {
        await s.close();
      }
    });

    it('clone: this firmware\'s clone-prepare and migration stream reach the previous firmware\'s servers, and its clone-ready comes back', async () => {
      const oldGot: Array<{ type: number; body: Buffer }> = [];
      const migrated: Buffer[] = [];
      const inputs = await oldListen(key, 'inputs', (sock) => {
        const f = new OldFrames(sock);
        f.on('message', (type: number, body: Buffer) => { oldGot.push({ type, body }); f.send(T_CONTROL, encodeControl({ type: 'clone-ready' })); });
      });
      const migration = await oldListen(key, 'migration', (sock) => { sock.on('data', (d: Buffer) => migrated.push(d)); sock.resume(); });
      try {
        const ch = new MessageChannel(await connectAuthenticated('127.0.0.1', inputs.port, key, 'inputs'));
        const ready = new Promise<Buffer>((r) => ch.once('message', (_t, b) => r(b)));
        ch.send(T_CONTROL, encodeControl({ type: 'clone-prepare', memoryMb: 64, guestFile: 'guests/dx-legacy/guest.json' }));
        assert.deepEqual(decodeControl(await ready), { type: 'clone-ready' });
        assert.equal(oldGot[0]!.type, T_CONTROL);
        assert.deepEqual(decodeControl(oldGot[0]!.body), { type: 'clone-prepare', memoryMb: 64, guestFile: 'guests/dx-legacy/guest.json' });
        const state = randomBytes(256 * 1024);
        const pipe = await connectAuthenticated('127.0.0.1', migration.port, key, 'migration');
        pipe.end(state);
        await until(() => Buffer.concat(migrated).length === state.length, 'the migration stream arrives');
        assert.ok(Buffer.concat(migrated).equals(state), 'byte for byte');
        assert.ok((legacyPartnerChannels.status().connections.migration ?? 0) >= 1);
        ch.close();
      } finally {
        await inputs.close();
        await migration.close();
      }
    });

    it('upgrade channel: the previous firmware asks this one for its status (and the reverse) and gets a valid answer', async () => {
      const dir = mkdtempSync(join(tmpdir(), 'us-legacy-peer-'));
      const ops: string[] = [];
      const server = await listenPeer({ address: '127.0.0.1', port: 0, key, incomingDir: join(dir, 'in'), handler: async (r) => { ops.push(r.op); return STATUS; } });
      const oldServer = await oldListen(key, 'upgrade', (sock) => {
        const f = new OldFrames(sock);
        f.on('message', (_t: number, body: Buffer) => {
          assert.deepEqual(JSON.parse(body.toString()), { op: 'status' });
          f.send(1, Buffer.from(JSON.stringify({ ok: true, result: { ...STATUS, board: 'sim-b', role: 'BACKUP' } })));
          sock.end();
        });
      });
      try {
        // The old primary polls this (upgraded) backup during partner-healthy.
        const old = new OldFrames(await oldConnect(server.port, key, 'upgrade'));
        const answer = old.next();
        old.send(1, Buffer.from(JSON.stringify({ op: 'status' })));
        assert.deepEqual(JSON.parse((await answer).body.toString()), { ok: true, result: STATUS });
        assert.deepEqual(ops, ['status']);
        // After the switchover this firmware drives the old board.
        const r = await new PeerClient('127.0.0.1', oldServer.port, key).call<typeof STATUS>({ op: 'status' }, 5000);
        assert.equal(r.board, 'sim-b');
        assert.equal(r.role, 'BACKUP');
        old.socket.destroy();
      } finally {
        await server.close();
        await oldServer.close();
        rmSync(dir, { recursive: true, force: true });
      }
    });

    it('a TLS client of this firmware is still served by TLS (its ClientHello comes first)', async () => {
      const s = await newServer('inputs');
      try {
        const before = legacyPartnerChannels.status().total;
        const identity = 'understudy/v2/inputs';
        const psk = channelPsk(key, 'inputs');
        const tls = tlsConnect({
          host: '127.0.0.1', port: s.server.port, ciphers: CHANNEL_CIPHERS, minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2',
          pskCallback: () => ({ psk, identity }), checkServerIdentity: () => undefined,
        });
        await new Promise<void>((res, rej) => { tls.once('secureConnect', () => res()); tls.once('error', rej); });
        const ch = new MessageChannel(tls);
        const echo = new Promise<Buffer>((r) => ch.once('message', (_t, b) => r(b)));
        ch.send(9, Buffer.from('over TLS'));
        assert.equal((await echo).toString(), 'echo:over TLS');
        assert.equal(legacyPartnerChannels.status().total, before, 'not a connection of the previous firmware');
        ch.close();
      } finally {
        await s.close();
      }
    });

    it('still refused: the old handshake without the key, and a probe that is neither TLS nor the old client (counted)', async () => {
      const s = await newServer('inputs');
      try {
        const before = count('inputs', 'handshake');
        await assert.rejects(oldConnect(s.server.port, randomBytes(32), 'inputs', 1500));
        await until(() => count('inputs', 'handshake') === before + 1, 'the wrong key is counted by the server');
        await assert.rejects(oldConnect(s.server.port, key, 'upgrade', 1500), 'another purpose\'s label');
        await until(() => count('inputs', 'handshake') === before + 2, 'another purpose is counted');
        const probe = await new Promise<Socket>((res) => { const c = netConnect({ host: '127.0.0.1', port: s.server.port }); c.once('connect', () => res(c)); });
        probe.write('GET / HTTP/1.0\r\n\r\n');
        await closedOf(probe);
        await until(() => count('inputs', 'handshake') === before + 3, 'the probe is counted');
        assert.equal(s.channels.length, 0, 'nothing handed to the channel');
      } finally {
        await s.close();
      }
    });

    it('turned off (the partner heard in version 3): the open connections of the old protocol end, the next old handshake is refused', async () => {
      const s = await newServer('inputs', 400);
      try {
        const old = await oldConnect(s.server.port, key, 'inputs');
        await until(() => s.channels.length === 1, 'accepted');
        const ended = closedOf(old);
        legacyPartnerChannels.set(false, 'test: partner heard in version 3');
        await ended;
        assert.equal(s.channels[0]!.open, false);
        const before = count('inputs', 'handshake-timeout');
        await assert.rejects(oldConnect(s.server.port, key, 'inputs', 1500));
        await until(() => count('inputs', 'handshake-timeout') === before + 1, 'refused and counted as today');
        assert.equal(s.channels.length, 1);
      } finally {
        await s.close();
      }
    });
    it('turned off while a new connection waits for its ClientHello: that connection gets TLS only (refused, counted)', async () => {
      const s = await newServer('inputs', 300);
      try {
        const before = count('inputs', 'handshake-timeout');
        const attempt = assert.rejects(oldConnect(s.server.port, key, 'inputs', 2000));
        await sleep(50); // within the server's wait for a ClientHello (or before it accepted: the same outcome)
        legacyPartnerChannels.set(false, 'test: partner heard in version 3');
        await attempt;
        await until(() => count('inputs', 'handshake-timeout') === before + 1, 'counted as a handshake timeout');
        assert.equal(s.channels.length, 0);
      } finally {
        await s.close();
      }
    });
  });

  describe('otherwise (TLS only)', () => {
    it('the previous firmware\'s client is refused by this firmware\'s server and counted (handshake-timeout): no connection handed over', async () => {
      const s = await newServer('inputs', 300);
      try {
        const before = count('inputs', 'handshake-timeout');
        const legacyBefore = legacyPartnerChannels.status().total;
        await assert.rejects(oldConnect(s.server.port, key, 'inputs', 2000));
        await until(() => count('inputs', 'handshake-timeout') === before + 1, 'counted');
        assert.equal(s.channels.length, 0);
        assert.equal(legacyPartnerChannels.status().total, legacyBefore);
      } finally {
        await s.close();
      }
    });

    it('this firmware\'s client never offers the old handshake: the previous firmware\'s server gets no connection, the client counts a failed handshake', async () => {
      let accepted = 0;
      let oldRejected = 0;
      const old = await oldListen(key, 'upgrade', () => { accepted++; }, () => { oldRejected++; });
      try {
        const before = count('upgrade', 'handshake');
        await assert.rejects(connectAuthenticated('127.0.0.1', old.port, key, 'upgrade', 2000), (e: Error & { code?: string }) => e.code === 'US_ERR_LINK');
        assert.equal(count('upgrade', 'handshake'), before + 1, 'counted on the client side');
        assert.equal(partnerChannelRejections.last?.side, 'client');
        await until(() => oldRejected === 1, 'the old server saw no valid answer to its nonce');
        assert.equal(accepted, 0);
      } finally {
        await old.close();
      }
    });
  });

  describe('decided by the partner\'s heartbeats', () => {
    const TIMERS = { key, intervalMs: 5, linkTimeoutMs: 30, deadtimeMs: 60 };
    const local = (role: LocalState['role']): (() => LocalState) => () => ({ role, guest: 'running', watchdog: 'none', cpuLoad: null, health: 'ok' });
    const hb = (over: Partial<Heartbeat>): Heartbeat => ({
      sender: 'sim-a', generation: 3, echo: 0, seq: 1, role: 'PRIMARY', guest: 'running', watchdog: 'kicking', cpuLoad: 1, priority: 10, health: 'ok', ...over,
    });
    let running: Membership[] = [];
    let unfollow: Array<() => void> = [];
    /**
     * Two boards of this firmware on one Ethernet link; `changes` collects the old protocol's
     * on/off; `start` starts both and waits until each hears the other.
     */
    const thisFirmwarePair = () => {
      const [ea, eb] = memLinkPair('ethernet');
      const a = new Membership({ ...TIMERS, self: 'sim-a', priority: 10, generation: 5, links: [ea], local: local('PRIMARY') });
      const b = new Membership({ ...TIMERS, self: 'sim-b', priority: 20, generation: 8, links: [eb], local: local('BACKUP') });
      running.push(a, b);
      const changes: boolean[] = [];
      legacyPartnerChannels.on('change', (on) => changes.push(on));
      unfollow.push(() => legacyPartnerChannels.removeAllListeners('change'));
      const start = async () => {
        await a.start();
        await b.start();
        await until(() => a.partnerView.state === 'alive' && b.partnerView.state === 'alive', 'the pair hears itself');
      };
      return { a, b, changes, start };
    };
    afterEach(async () => {
      for (const u of unfollow) u();
      for (const m of running) await m.stop();
      running = []; unfollow = [];
    });

    it('a board whose partner is heard in heartbeat version 3 (this firmware) never speaks the old protocol, client or server', async () => {
      const { a, b, changes, start } = thisFirmwarePair();
      unfollow.push(legacyPartnerChannels.follow(b));
      await start();
      await sleep(100);
      assert.deepEqual(changes, [], 'never turned on');
      assert.equal(b.generations.sendVersion, 3);
      assert.equal(a.generations.sendVersion, 3);
      const old = await oldListen(key, 'inputs', () => assert.fail('no old handshake offered'));
      const s = await newServer('inputs', 300);
      try {
        await assert.rejects(connectAuthenticated('127.0.0.1', old.port, key, 'inputs', 1500));
        await assert.rejects(oldConnect(s.server.port, key, 'inputs', 1500));
        assert.equal(s.channels.length, 0);
      } finally {
        await old.close();
        await s.close();
      }
    });

    it('version-1 frames under the pair key turn it on (not forged ones); version 3 heard turns it off and ends the old connections', async () => {
      const [, eb] = memLinkPair('ethernet');
      const b = new Membership({ ...TIMERS, self: 'sim-b', priority: 20, generation: 8, links: [eb], local: local('BACKUP') });
      running.push(b);
      unfollow.push(legacyPartnerChannels.follow(b));
      await b.start();
      eb.inject(encodeHeartbeatV1(hb({ generation: 3, seq: 1 }), randomBytes(32))); // a forger without the key
      await sleep(20);
      assert.equal(legacyPartnerChannels.allowed, false, 'a version-1 frame with a bad MAC changes nothing');
      eb.inject(encodeHeartbeatV1(hb({ generation: 3, seq: 2 }), key));
      assert.equal(legacyPartnerChannels.allowed, true, 'the previous firmware heard');
      const s = await newServer('inputs');
      try {
        const old = await oldConnect(s.server.port, key, 'inputs');
        await until(() => s.channels.length === 1, 'the previous firmware\'s client accepted');
        const ended = closedOf(old);
        // The partner rebooted into this firmware: version 3, bound to this board's boot.
        eb.inject(encodeHeartbeat(hb({ generation: 4, echo: 8, seq: 0, role: 'BACKUP' }), key));
        assert.equal(legacyPartnerChannels.allowed, false);
        await ended;
        assert.equal(s.channels[0]!.open, false, 'the old connection ended');
      } finally {
        await s.close();
      }
    });

    it('the deployed firmware (heartbeat version 2, channels before TLS) turns it on too, not a forged version-2 frame; version 3 turns it off for good', async () => {
      const [, eb] = memLinkPair('ethernet');
      eb.record = true;
      const b = new Membership({ ...TIMERS, self: 'sim-b', priority: 20, generation: 8, links: [eb], local: local('BACKUP') });
      running.push(b);
      unfollow.push(legacyPartnerChannels.follow(b));
      await b.start();
      // Frames exactly as the deployed firmware (fdc23d0) encodes them: this layout, version byte 2.
      const deployed = (over: Partial<Heartbeat>, k = key) => encodeHeartbeat(hb(over), k, 2);
      eb.inject(deployed({ generation: 3, echo: 8, seq: 1 }, randomBytes(32))); // a forger without the key
      await sleep(20);
      assert.equal(legacyPartnerChannels.allowed, false, 'a version-2 frame with a bad MAC changes nothing');
      assert.equal(b.generations.sendVersion, 3);
      eb.inject(deployed({ generation: 3, echo: 8, seq: 2 }));
      assert.equal(legacyPartnerChannels.allowed, true, 'the deployed firmware heard');
      assert.equal(b.generations.sendVersion, 2);
      assert.equal(eb.sentFrames.at(-1)![0], 2, 'answered in version 2, which the deployed firmware decodes');
      const s = await newServer('inputs');
      try {
        // Both ways, as the deployed firmware's channel code (the same as 519281f's) speaks them.
        const old = await oldConnect(s.server.port, key, 'inputs');
        await until(() => s.channels.length === 1, 'the deployed firmware\'s client accepted');
        const accepted: Socket[] = [];
        const oldServer = await oldListen(key, 'inputs', (sock) => accepted.push(sock));
        try {
          const out = await connectAuthenticated('127.0.0.1', oldServer.port, key, 'inputs', 3000);
          out.destroy();
          await until(() => accepted.length === 1, 'this board\'s client accepted by the deployed firmware\'s server');
        } finally {
          for (const sock of accepted) sock.destroy();
          await oldServer.close();
        }
        const ended = closedOf(old);
        // The partner rebooted into this firmware: version 3.
        eb.inject(encodeHeartbeat(hb({ generation: 4, echo: 8, seq: 0, role: 'BACKUP' }), key));
        assert.equal(legacyPartnerChannels.allowed, false);
        await ended;
        // A version-2 frame of that boot now (a downgrade, or a replay) is refused and turns nothing back on.
        eb.inject(deployed({ generation: 4, echo: 8, seq: 1 }));
        assert.equal(b.links[0]!.rejected.version, 1);
        assert.equal(legacyPartnerChannels.allowed, false);
        assert.equal(b.generations.sendVersion, 3);
        await assert.rejects(oldConnect(s.server.port, key, 'inputs', 1500));
      } finally {
        await s.close();
      }
    });

    it('two boards of this firmware settle on version 3 with the old protocol never on', async () => {
      const { a, b, changes, start } = thisFirmwarePair();
      const versions: number[] = [];
      for (const m of [a, b]) m.on('send-version', (v) => versions.push(v));
      unfollow.push(legacyPartnerChannels.follow(a), legacyPartnerChannels.follow(b));
      await start();
      await sleep(100);
      assert.deepEqual(versions, [], 'neither ever left version 3');
      assert.deepEqual(changes, [], 'never turned on');
      assert.deepEqual([a.generations.sendVersion, b.generations.sendVersion], [3, 3]);
    });
    it('the controller follows what its membership process posts (send-version crosses the process boundary)', () => {
      const mp = new MembershipProcess({} as never); // not started: the test posts as its process would
      const post = (m: unknown) => (mp as unknown as { onMessage(m: unknown): void }).onMessage(m);
      unfollow.push(legacyPartnerChannels.follow(mp));
      post({ t: 'send-version', version: 1 });
      assert.equal(legacyPartnerChannels.allowed, true);
      post({ t: 'send-version', version: 2 });
      assert.equal(legacyPartnerChannels.allowed, true, 'version 2: the deployed firmware, channels before TLS');
      post({ t: 'send-version', version: 3 });
      assert.equal(legacyPartnerChannels.allowed, false);
    });
  });

  it('operators see it: the alarm in understudy status, the metrics, the journal', async () => {
    const journal: string[] = [];
    const unjournal = journalLegacyChannels({ record: (_k: string, m: string) => { journal.push(m); return 0; } } as never, quiet);
    try {
      legacyPartnerChannels.set(true, 'the partner is heard only in heartbeat version 1 (the previous firmware)');
      const s = await newServer('upgrade');
      try {
        const old = await oldConnect(s.server.port, key, 'upgrade');
        await until(() => s.channels.length === 1, 'accepted');
        old.destroy();
        const old2 = await oldConnect(s.server.port, key, 'upgrade');
        old2.destroy();
      } finally {
        await s.close();
      }
      const st = legacyPartnerChannels.status();
      assert.equal(st.inUse, true);
      assert.equal(st.alarm, LEGACY_ALARM);
      const repl = { mode: 'primary', protected: true, lastSeq: 0, ackedSeq: 0, deliveredSeq: 0, lagInputs: 0, divergences: 0, failovers: 0, cloneInProgress: false, legacyChannels: st };
      assert.match(formatReplication('PRIMARY', repl as never), /ALARM: partner runs the previous firmware: partner channels without TLS; finish the rolling upgrade \(since .*; connections without TLS: \d+: .*upgrade \d+/);
      const m = new Metrics({ processMetrics: false });
      m.update(snapshotFrom({ board: 'sim-b', role: 'BACKUP', legacyChannels: st }));
      const text = await m.text();
      assert.match(text, /understudy_partner_channel_legacy\{[^}]*\} 1/);
      assert.match(text, new RegExp(`understudy_partner_channel_legacy_connections_total\\{[^}]*purpose="upgrade"[^}]*\\} ${st.connections.upgrade}`));
      legacyPartnerChannels.set(false, 'the partner is heard in heartbeat version 3');
      assert.doesNotMatch(formatReplication('PRIMARY', { ...repl, legacyChannels: legacyPartnerChannels.status() } as never), /ALARM/);
      assert.match(journal[0] ?? '', /^partner runs the previous firmware: partner channels without TLS; finish the rolling upgrade \(the partner is heard only in heartbeat version 1/);
      assert.equal(journal.filter((l) => /partner channel upgrade: a connection of the previous firmware \(no TLS\) accepted from 127\.0\.0\.1:\d+/.test(l)).length, 1, 'the first connection journaled, not every one');
      assert.match(journal.at(-1) ?? '', /^partner channels TLS only again \(the partner is heard in heartbeat version 3\)/);
    } finally {
      unjournal();
    }
  });
});

