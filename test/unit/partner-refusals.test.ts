/**
 * What the replicator, the clone manager and the upgrade channel do with a message that breaks the
 * protocol: refuse it (nothing in it acted on), count it per channel and reason, journal one line
 * (rate-limited), drop the connection. The replicator runs on a fake channel with a fake clock; the
 * manager and the upgrade channel on real loopback sockets.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeClock } from '../../src/core/clock.js';
import type { UsError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/log.js';
import type { GuestInput, GuestOutput } from '../../src/guest/io.js';
import { formatPartnerMessages } from '../../src/cli/replication-commands.js';
import { Metrics, snapshotFrom } from '../../src/mgmt/metrics.js';
import { ReplicationManager } from '../../src/replication/manager.js';
import { T_ACK, T_CONTROL, T_DIGEST, T_INPUT, encodeAck, encodeControl, encodeDigest, encodeInput, replyDigest } from '../../src/replication/messages.js';
import { PartnerRejections } from '../../src/replication/rejections.js';
import { Replicator } from '../../src/replication/replicator.js';
import { MessageChannel, connectAuthenticated, listenAuthenticated, type AuthServer } from '../../src/replication/secure-channel.js';
import { PeerClient, listenPeer } from '../../src/upgrade/peer.js';

const log = createLogger('test', { level: 'silent' });

/** The replicator's side of a channel: records what it sends, `deliver` plays the partner. */
class FakeChannel extends EventEmitter {
  sent: Array<{ type: number; body: Buffer }> = [];
  open = true;
  send(type: number, body: Buffer): boolean {
    if (!this.open) return false;
    this.sent.push({ type, body });
    return true;
  }
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.emit('close');
  }
  deliver(type: number, body: Buffer): void {
    this.emit('message', type, body);
  }
  get asChannel(): MessageChannel {
    return this as unknown as MessageChannel;
  }
}

const req = (clientPort: number, text: string): GuestInput => ({ kind: 'request', clientPort, payload: Buffer.from(text) });
const reply = (clientPort: number, text: string): GuestOutput => ({ kind: 'reply', clientPort, payload: Buffer.from(text) });

describe('partner messages that break the protocol', () => {
  describe('replicator (fake channel, fake clock)', () => {
    let clock: FakeClock, journal: string[], rejections: PartnerRejections, released: string[], delivered: string[], ch: FakeChannel, r: Replicator;
    const make = () => {
      journal = [];
      rejections = new PartnerRejections({ journal: (m) => journal.push(m), now: () => clock.now() });
      released = [];
      delivered = [];
      ch = new FakeChannel();
      r = new Replicator({ guest: { deliver: (i) => { delivered.push(i.payload.toString()); return true; } }, log, clock, rejections });
      r.setOutput({ release: (o) => released.push(o.payload.toString()) });
    };
    /** A protected primary with two inputs sent and the reply to the first held for its ACK. */
    const primary = () => {
      make();
      r.becomePrimary();
      r.protect(ch.asChannel, 0);
      r.submit(req(20000, 'a1 REG s1'));
      r.submit(req(20001, 'b1 STATS'));
      r.onGuestOutput(reply(20000, 'a1 OK REG s1 1'));
      assert.deepEqual(released, [], 'held for the ACK');
      assert.deepEqual(ch.sent.filter((m) => m.type === T_INPUT).length, 2);
    };
    const backup = () => {
      make();
      r.becomeBackup();
      r.follow(ch.asChannel, 10);
    };
    beforeEach(() => { clock = new FakeClock(1_000_000); });
    afterEach(() => r.close());

    it('an ACK beyond the last input sent is refused: not taken as an acknowledgement, counted, journaled, channel dropped', () => {
      primary();
      const unprotected: string[] = [];
      r.on('unprotected', (why) => unprotected.push(why));
      ch.deliver(T_ACK, encodeAck(1_000_000));
      assert.equal(r.ackedSeq, 0, 'the bogus ACK acknowledged nothing');
      assert.equal(ch.open, false, 'channel dropped');
      assert.equal(rejections.count('replication', 'ack-beyond'), 1);
      assert.match(journal[0] ?? '', /refused a replication message from the partner \(ack-beyond\): ACK 1000000, the last input sent is 2; connection dropped/);
      // As after any loss of the channel: unprotected (the pair re-clones), nothing waits for this backup.
      assert.equal(r.status().protected, false);
      assert.match(unprotected[0] ?? '', /ack-beyond/);
      assert.equal(r.status().heldReplies, 0);
    });

    it('an ACK of what was sent still releases exactly the replies it covers', () => {
      primary();
      ch.deliver(T_ACK, encodeAck(1));
      assert.deepEqual(released, ['a1 OK REG s1 1']);
      assert.equal(r.ackedSeq, 1);
      assert.ok(ch.open);
      assert.equal(rejections.total, 0);
    });

    it('an ACK beyond what was sent, while inputs are held for a cut-over, is refused too (held inputs were never sent)', () => {
      primary();
      r.hold();
      r.submit(req(20002, 'c1 STATS'));
      assert.equal(r.lastSeq, 3);
      ch.deliver(T_ACK, encodeAck(3));
      assert.equal(r.ackedSeq, 0);
      assert.equal(rejections.count('replication', 'ack-beyond'), 1);
    });

    it('a DIGEST of a bad length is refused on the backup: nothing compared, counted, channel dropped, no longer protected', () => {
      backup();
      const d = encodeDigest('20000 a1', replyDigest(Buffer.from('x')));
      ch.deliver(T_DIGEST, d.subarray(0, d.length - 1));
      assert.equal(ch.open, false);
      assert.equal(rejections.count('replication', 'malformed'), 1);
      assert.match(journal[0] ?? '', /DIGEST: 16 bytes, its key length 8 says 17/);
      assert.equal(r.status().protected, false);
      assert.equal(r.status().digestsCompared, 0);
    });

    it('an unknown message type is refused', () => {
      backup();
      ch.deliver(9, Buffer.from('hello'));
      assert.equal(ch.open, false);
      assert.equal(rejections.count('replication', 'unknown-type'), 1);
      assert.match(journal[0] ?? '', /message type 9/);
    });

    it('a malformed INPUT reaches neither the guest nor the log, and is refused', () => {
      backup();
      const logged: number[] = [];
      r.setInputLog((s) => logged.push(s.seq));
      const b = encodeInput({ seq: 11, input: req(20000, 'a1 STATS') });
      b[8] = 5; // kind
      ch.deliver(T_INPUT, b);
      assert.deepEqual([delivered, logged], [[], []]);
      assert.equal(rejections.count('replication', 'malformed'), 1);
      assert.equal(r.lastSeq, 10);
      assert.equal(ch.open, false);
    });

    it('an INPUT out of order is refused (counted) and the backup asks for a re-clone', () => {
      backup();
      ch.deliver(T_INPUT, encodeInput({ seq: 11, input: req(20000, 'a1 STATS') }));
      ch.deliver(T_INPUT, encodeInput({ seq: 11, input: req(20000, 'a1 STATS') })); // replayed
      assert.deepEqual(delivered, ['a1 STATS']);
      assert.equal(rejections.count('replication', 'out-of-order'), 1);
      const ctl = ch.sent.filter((m) => m.type === T_CONTROL).map((m) => JSON.parse(m.body.toString()) as { type: string });
      assert.deepEqual(ctl.map((m) => m.type), ['reclone']);
      assert.equal(ch.open, false);
    });

    it('journals at most one line per channel every 10 s, and says how many it left out', () => {
      make();
      for (let i = 0; i < 5; i++) rejections.reject('replication', 'malformed', `bad ${i}`);
      rejections.reject('upgrade', 'malformed', 'other channel');
      assert.equal(journal.length, 2);
      clock.advance(10_000);
      rejections.reject('replication', 'unknown-type', 'later');
      assert.equal(journal.length, 3);
      assert.match(journal[2]!, /\(unknown-type\): later; connection dropped \(4 more refused since the last such line\)/);
      assert.deepEqual(rejections.status().byChannel, { replication: { malformed: 5, 'unknown-type': 1 }, upgrade: { malformed: 1 } });
      assert.equal(rejections.status().total, 7);
    });

    it('operators see the account: a status line, and a Prometheus counter per channel and reason', async () => {
      make();
      assert.equal(formatPartnerMessages(rejections.status()), '', 'nothing shown while none was refused');
      rejections.reject('replication', 'ack-beyond', 'ACK 9, the last input sent is 2');
      rejections.reject('control', 'malformed', 'bad control message (cutSeq)');
      assert.match(formatPartnerMessages(rejections.status()), /^\npartner messages refused: 2 \(replication ack-beyond 1; control malformed 1\); last .*: control malformed: bad control message \(cutSeq\)$/);
      const m = new Metrics({ processMetrics: false });
      m.update(snapshotFrom({ board: 'sim-a', role: 'PRIMARY', partnerMessages: rejections.status() }));
      const text = await m.text();
      assert.match(text, /understudy_partner_messages_refused_total\{[^}]*channel="replication"[^}]*reason="ack-beyond"[^}]*\} 1/);
      assert.match(text, /understudy_partner_messages_refused_total\{[^}]*channel="control"[^}]*reason="malformed"[^}]*\} 1/);
    });
  });

  describe('clone manager (control messages on a loopback channel)', () => {
    let server: AuthServer, mgr: ReplicationManager, rep: Replicator, client: MessageChannel, closed: Promise<void>;
    const key = randomBytes(32);
    beforeEach(async () => {
      rep = new Replicator({ guest: { deliver: () => true }, log });
      const board = { partner: { ethernet: { port: 7000, localAddress: '127.0.0.1', partnerAddress: '127.0.0.1' } }, storageDir: tmpdir() };
      const supervisor = { guest: { sourceFile: 'g.json' }, stop: async () => undefined };
      mgr = new ReplicationManager(board as never, key, supervisor as never, rep, { record: () => 0 } as never, log);
      let onAccepted!: (s: Socket) => void;
      const accepted = new Promise<Socket>((res) => { onAccepted = res; });
      server = await listenAuthenticated('127.0.0.1', 0, key, 'inputs', (s) => onAccepted(s));
      const sock = await connectAuthenticated('127.0.0.1', server.port, key, 'inputs');
      (mgr as unknown as { onInputChannel(s: Socket): void }).onInputChannel(await accepted);
      client = new MessageChannel(sock);
      closed = new Promise((res) => client.on('close', () => res()));
    });
    afterEach(async () => { client.close(); await server.close(); rep.close(); });

    it('a malformed control message (null, a clone-done with no fields, not JSON) closes the channel, counted and journaled', async () => {
      for (const body of ['null', '{"type":"clone-done"}', '{"type":']) {
        client.send(T_CONTROL, Buffer.from(body));
      }
      await closed;
      assert.equal(rep.rejections.count('control', 'malformed'), 1, 'refused at the first: nothing after it is read');
      assert.match(rep.rejections.status().last?.detail ?? '', /bad control message/);
    });

    it('a well-formed clone-done on a channel that prepared no clone is refused as unexpected: the backup follows nothing', async () => {
      client.send(T_CONTROL, encodeControl({ type: 'clone-done', cutSeq: 5, guestSeq: 0, downtimeMs: 1, clients: { entries: [[20000, '192.0.2.1', 4000]], next: 20001 } }));
      await closed;
      assert.equal(rep.rejections.count('control', 'unexpected'), 1);
      assert.equal(rep.mode, 'standalone');
      assert.equal(rep.clients.size, 0, 'its client map was not imported');
    });
  });

  describe('upgrade channel', () => {
    let dir: string;
    const key = randomBytes(32);
    beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-peer-refuse-')); });
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it('a request that fails its schema never reaches the handler: counted, connection dropped', async () => {
      const rejections = new PartnerRejections();
      const seen: string[] = [];
      const server = await listenPeer({ address: '127.0.0.1', port: 0, key, incomingDir: join(dir, 'in'), rejections, handler: async (r) => { seen.push(r.op); return {}; } });
      try {
        const c = new PeerClient('127.0.0.1', server.port, key);
        await assert.rejects(c.call({ op: 'install', file: 42 } as never, 3000), (e: UsError) => e.code === 'US_ERR_LINK' && /closed the upgrade channel/.test(e.message));
        await assert.rejects(c.call({ op: 'format-disk' } as never, 3000), (e: UsError) => e.code === 'US_ERR_LINK');
        assert.deepEqual(seen, []);
        assert.equal(rejections.count('upgrade', 'malformed'), 2);
        assert.match(rejections.status().last?.detail ?? '', /bad upgrade request \(op\)/);
      } finally {
        await server.close();
      }
    });

    it('a push that would not leave the reserve free is refused before a byte is written', async () => {
      const server = await listenPeer({ address: '127.0.0.1', port: 0, key, incomingDir: join(dir, 'in'), handler: async () => ({}),
        reserveBytes: 64 * 1048576, freeBytes: () => 64 * 1048576 + 1000 });
      try {
        const src = join(dir, 'pkg.usp');
        writeFileSync(src, randomBytes(5000));
        const c = new PeerClient('127.0.0.1', server.port, key);
        await assert.rejects(c.put(src), (e: UsError) => e.code === 'US_ERR_NO_SPACE' && /in .*\/in with 64\.0 MiB kept free/.test(e.message));
        assert.deepEqual(readdirSync(join(dir, 'in')), [], 'no partial file');
      } finally {
        await server.close();
      }
    });

    it('an answer that fails its schema is refused: the rolling upgrade gets US_ERR_LINK, counted', async () => {
      // A partner whose status answer lacks its fields (another version, or damaged).
      const rejections = new PartnerRejections();
      const server = await listenAuthenticated('127.0.0.1', 0, key, 'upgrade', (s) => {
        const ch = new MessageChannel(s);
        ch.on('message', () => ch.send(1, Buffer.from(JSON.stringify({ ok: true, result: { role: 'PRIMARY', protected: 'yes' } }))));
      });
      try {
        const c = new PeerClient('127.0.0.1', server.port, key, rejections);
        await assert.rejects(c.call({ op: 'status' }, 3000), (e: UsError) => e.code === 'US_ERR_LINK' && /bad upgrade answer to "status" \(result\.board\)/.test(e.message));
        assert.equal(rejections.count('upgrade', 'malformed'), 1);
      } finally {
        await server.close();
      }
    });
  });
});
