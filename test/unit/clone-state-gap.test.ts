/**
 * A primary that served inputs unprotected says so when it begins a clone (clone-prepare's
 * servedUnprotected), and a backup whose log stops short of that input holds none of the primary's
 * state (Replicator.stateGap, read by the daemon's holdsState) until the new clone is cut over or
 * it is primary itself: its checkpoint and log would rebuild an older state, so it fences no
 * primary on a hang report.
 * CI, 2026-12-06: both boards starved for a second, the primary served unprotected and re-cloned,
 * was reported hung, and the backup fenced it and served its checkpoint: registrations lost.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../src/core/log.js';
import { ReplicationManager } from '../../src/replication/manager.js';
import { T_CONTROL, decodeControl, type ControlMessage } from '../../src/replication/messages.js';
import { Replicator } from '../../src/replication/replicator.js';
import { MessageChannel, listenAuthenticated, type AuthServer } from '../../src/replication/secure-channel.js';

const log = createLogger('test', { level: 'silent' });

/** Two ends of a loopback TCP connection as message channels. */
async function channelPair(): Promise<{ a: MessageChannel; b: MessageChannel; close(): void }> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const accepted = new Promise<Socket>((r) => srv.once('connection', r));
  const s1 = connect((srv.address() as { port: number }).port, '127.0.0.1');
  const a = new MessageChannel(s1);
  const b = new MessageChannel(await accepted);
  return { a, b, close: () => { a.close(); b.close(); srv.close(); } };
}
const req = (text: string) => ({ kind: 'request' as const, clientPort: 20000, payload: Buffer.from(text) });

describe('clone manager: a backup whose log misses what its primary served unprotected holds none of its state', () => {
  let server: AuthServer | undefined;
  const sockets: Socket[] = [];
  const replicators: Replicator[] = [];
  afterEach(async () => {
    for (const s of sockets) s.destroy();
    sockets.length = 0;
    await server?.close();
    server = undefined;
    for (const r of replicators) r.close();
    replicators.length = 0;
  });

  const replicator = () => {
    const r = new Replicator({ guest: { deliver: () => true }, log });
    replicators.push(r);
    return r;
  };

  /** The clone-prepare a primary sends when it begins a clone (to a listener that never answers it). */
  async function prepareOf(rep: Replicator): Promise<Extract<ControlMessage, { type: 'clone-prepare' }>> {
    const key = randomBytes(32);
    const got: ControlMessage[] = [];
    server = await listenAuthenticated('127.0.0.1', 0, key, 'inputs', (s) => {
      sockets.push(s);
      new MessageChannel(s).on('message', (type, body) => { if (type === T_CONTROL) got.push(decodeControl(body)); });
    });
    const board = { name: 'sim-a', partner: { ethernet: { port: server.port - 1, localAddress: '127.0.0.1', partnerAddress: '127.0.0.1' } }, storageDir: tmpdir() };
    const supervisor = {
      guest: { sourceFile: 'g.json', memoryMb: 64 }, currentState: 'running',
      hypervisor: { alive: false, pid: 0 }, paths: { cloneOut: join(tmpdir(), `us-state-gap-${process.pid}.sock`) },
    };
    const mgr = new ReplicationManager(board as never, key, supervisor as never, rep, { record: () => 0 } as never, log);
    const cloning = mgr.clone().catch(() => undefined);
    for (let i = 0; i < 200 && !got.length; i++) await new Promise((r) => setTimeout(r, 10));
    await mgr.cancelClone('test over');
    await cloning;
    const m = got[0];
    assert.ok(m?.type === 'clone-prepare', `the partner got clone-prepare: ${JSON.stringify(got)}`);
    return m;
  }

  it('an unprotected primary\'s clone-prepare names the last input it served; a protected or withholding one\'s does not', async () => {
    const unprotected = replicator();
    unprotected.becomePrimary();
    for (const t of ['r1 GET A', 'r2 GET B', 'r3 GET C']) unprotected.submit(req(t));
    assert.equal(unprotected.lastSeq, 3);
    assert.equal((await prepareOf(unprotected)).servedUnprotected, 3);
    await server?.close();
    // Protected, or withholding its replies (ha.manager pacemaker: nothing released without the
    // backup's ACK): the backup's log holds what clients were answered from.
    for (const serveAlone of [undefined, () => 'corosync still counts sim-b a member']) {
      const covered = new Replicator({ guest: { deliver: () => true }, log, serveAlone });
      replicators.push(covered);
      covered.becomePrimary();
      const ch = await channelPair();
      covered.protect(ch.a, 0);
      covered.submit(req('r1 GET A'));
      if (serveAlone) covered.unprotect('backup stopped acknowledging');
      assert.equal(covered.servingUnprotected, false);
      assert.equal((await prepareOf(covered)).servedUnprotected, undefined, serveAlone ? 'withholding' : 'protected');
      ch.close();
      await server?.close();
    }
  });

  it('the backup: a gap is noted and journaled, none when its log reaches the input; the cut-over of a new clone ends it', async () => {
    const backup = replicator();
    backup.becomeBackup();
    const journal: string[] = [];
    const supervisor = { guest: { sourceFile: 'g.json', memoryMb: 64 }, expectAppSeq: () => undefined, finishClone: () => new Promise<void>(() => undefined) };
    const board = { name: 'sim-b', partner: { ethernet: { port: 1, localAddress: '127.0.0.1', partnerAddress: '127.0.0.1' } }, storageDir: tmpdir() };
    const mgr = new ReplicationManager(board as never, randomBytes(32), supervisor as never, backup, { record: (_k: string, m: string) => { journal.push(m); return 0; } } as never, log);
    const target = mgr as unknown as { noteServedUnprotected(n: number | undefined): void; finishCloneTarget(ch: MessageChannel, m: unknown): void };
    backup.lastSeq = 40;
    target.noteServedUnprotected(undefined);
    target.noteServedUnprotected(40);
    assert.equal(backup.stateGap, undefined, 'a protected source, or one that served nothing past this log');
    target.noteServedUnprotected(57);
    assert.equal(backup.stateGap, 'the partner served through input 57 unprotected; this board\'s log ends at input 40');
    assert.deepEqual(journal, [`${backup.stateGap}: this board holds none of the partner's state until the new clone is cut over`]);
    // The new clone is cut over: its copy holds the state again.
    const ch = await channelPair();
    try {
      target.finishCloneTarget(ch.b, { type: 'clone-done', cutSeq: 60, guestSeq: 60, clients: { entries: [], next: 20000 }, downtimeMs: 1 });
      assert.equal(backup.stateGap, undefined);
    } finally {
      ch.close();
    }
    // A board that becomes primary serves its own state: no gap is left over for a later time as backup.
    target.noteServedUnprotected(90);
    assert.ok(backup.stateGap);
    backup.becomePrimary();
    assert.equal(backup.stateGap, undefined);
  });
});
