/**
 * ReplicationManager.cancelClone: a clone whose source copy is about to be replaced (a poison
 * recovery) ends at once, its held inputs released, instead of running on against a QEMU that is
 * gone. The partner here is a real authenticated listener on loopback that never answers
 * clone-prepare, so the clone waits on it (for 60 s if nothing cancels it).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { UsError } from '../../src/core/errors.js';
import { createLogger } from '../../src/core/log.js';
import { ReplicationManager } from '../../src/replication/manager.js';
import { T_CONTROL, decodeControl } from '../../src/replication/messages.js';
import { Replicator } from '../../src/replication/replicator.js';
import { MessageChannel, listenAuthenticated, type AuthServer } from '../../src/replication/secure-channel.js';
import { once } from 'node:events';

const log = createLogger('test', { level: 'silent' });

describe('clone manager: cancelling a clone under way', () => {
  let server: AuthServer | undefined;
  let rep: Replicator | undefined;
  const sockets: Socket[] = [];
  afterEach(async () => {
    for (const s of sockets) s.destroy();
    sockets.length = 0;
    await server?.close();
    rep?.close();
  });

  it('ends the clone waiting on its partner: clone() fails as cancelled, the journal says why, a second cancel is a no-op', async () => {
    const key = randomBytes(32);
    const prepares: string[] = [];
    server = await listenAuthenticated('127.0.0.1', 0, key, 'inputs', (s) => {
      sockets.push(s);
      new MessageChannel(s).on('message', (type, body) => { if (type === T_CONTROL) prepares.push(decodeControl(body).type); });
    });
    rep = new Replicator({ guest: { deliver: () => true }, log });
    // The manager talks to the partner on ethernet port + 1: the listener's port less one.
    const board = { name: 'sim-a', partner: { ethernet: { port: server.port - 1, localAddress: '127.0.0.1', partnerAddress: '127.0.0.1' } }, storageDir: tmpdir() };
    const supervisor = {
      guest: { sourceFile: 'g.json', memoryMb: 64 }, currentState: 'running',
      hypervisor: { alive: false, pid: 0 }, paths: { cloneOut: join(tmpdir(), `us-clone-cancel-${process.pid}.sock`) },
    };
    const journal: string[] = [];
    const mgr = new ReplicationManager(board as never, key, supervisor as never, rep, { record: (k: string, m: string) => journal.push(`${k}: ${m}`) } as never, log);
    const cloning = mgr.clone();
    const outcome = cloning.then(() => 'cloned', (e: UsError) => e.message);
    for (let i = 0; i < 200 && !prepares.length; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(prepares, ['clone-prepare'], 'the clone reached its partner and waits for clone-ready');
    assert.equal(mgr.cloneInProgress, true);
    await mgr.cancelClone('the copy it was taking failed');
    assert.equal(mgr.cloneInProgress, false, 'ended when cancelClone resolved');
    assert.match(await outcome, /^clone cancelled: the copy it was taking failed/);
    assert.ok(journal.some((l) => /cancelling the clone under way: the copy it was taking failed/.test(l)));
    assert.ok(journal.some((l) => /clone FAILED: clone cancelled/.test(l)));
    await mgr.cancelClone('again');
    assert.ok(!journal.some((l) => /again/.test(l)), 'nothing to cancel: nothing journaled');
  });

  /**
   * A clone's migration relay (the manager's own) to a partner's migration port on loopback whose
   * connection `onPartner` handles (handed over paused: it resumes it), with the journal it keeps.
   */
  const relayRig = async (name: string, onPartner: (s: Socket) => void) => {
    const key = randomBytes(32);
    server = await listenAuthenticated('127.0.0.1', 0, key, 'migration', (s) => { sockets.push(s); onPartner(s); s.resume(); });
    rep = new Replicator({ guest: { deliver: () => true }, log });
    const board = { name: 'sim-a', partner: { ethernet: { port: server.port - 2, localAddress: '127.0.0.1', partnerAddress: '127.0.0.1' } }, storageDir: tmpdir() };
    const path = join(tmpdir(), `us-relay-${name}-${process.pid}.sock`);
    const journal: string[] = [];
    const supervisor = { guest: { sourceFile: 'g.json', memoryMb: 64 }, giveToQemu: () => undefined };
    const mgr = new ReplicationManager(board as never, key, supervisor as never, rep, { record: (_k: string, m: string) => { journal.push(m); return 0; } } as never, log);
    const relay = await (mgr as unknown as { migrationRelay(p: string, partner: string): Promise<import('node:net').Server & { partnerGone?: string }> }).migrationRelay(path, '127.0.0.1');
    return { relay, path, journal, close: () => { relay.close(); rmSync(path, { force: true }); } };
  };

  it('the migration relay drains the rest of QEMU\'s stream when the partner\'s end goes, so the copy ends as QEMU\'s success, not a write error', async () => {
    let partnerGot = 0;
    // The partner's migration port: it takes 1 MB, then drops the connection.
    const { relay, path, close } = await relayRig('drain', (s) => s.on('data', (d: Buffer) => { partnerGot += d.length; if (partnerGot > 1 << 20) s.destroy(); }));
    try {
      // "QEMU": 16 MB into the relay, every write completing, then its own end of the stream.
      const qemu = connect(path);
      await once(qemu, 'connect');
      const chunk = Buffer.alloc(64 * 1024, 7);
      let errored: Error | undefined;
      qemu.on('error', (e) => { errored = e; });
      for (let i = 0; i < 256; i++) {
        if (!qemu.write(chunk)) await once(qemu, 'drain');
      }
      qemu.end();
      await once(qemu, 'close');
      assert.equal(errored, undefined, 'no write error reached QEMU');
      assert.ok(partnerGot > 1 << 20 && partnerGot < 16 << 20, `the partner took part of it (${partnerGot} bytes) and went`);
      assert.ok(relay.partnerGone, 'the relay says the partner\'s end went: the clone must not cut over');
    } finally {
      close();
    }
  });

  it('the partner closing its end once it has read the whole stream, before QEMU\'s own end reaches the relay, is not a partner gone', async () => {
    const total = 4 << 20;
    let partnerGot = 0;
    let partnerClosed!: () => void;
    const closed = new Promise<void>((r) => { partnerClosed = r; });
    // The partner's QEMU reads the stream's last section and closes at once.
    const { relay, path, journal, close } = await relayRig('end', (s) => s.on('data', (d: Buffer) => { partnerGot += d.length; if (partnerGot >= total) { s.destroy(); partnerClosed(); } }));
    try {
      const qemu = connect(path);
      const qemuClosed = once(qemu, 'close'); // the relay may end it first (the partner's end passed on)
      await once(qemu, 'connect');
      const chunk = Buffer.alloc(64 * 1024, 7);
      for (let i = 0; i < total / chunk.length; i++) {
        if (!qemu.write(chunk)) await once(qemu, 'drain');
      }
      await closed;
      await new Promise((r) => setTimeout(r, 50)); // the relay sees the partner's close first
      qemu.end();
      await qemuClosed;
      assert.equal(partnerGot, total, 'the partner got all of it');
      assert.equal(relay.partnerGone, undefined, 'a complete copy: nothing was lost, the clone may cut over');
      assert.deepEqual(journal.filter((l) => /is gone/.test(l)), [], 'nothing journaled as gone');
    } finally {
      close();
    }
  });
});
