/**
 * The upgrade channel between the two controllers (src/upgrade/peer.ts) on loopback: a pushed package
 * arrives byte for byte under incoming/, requests reach the handler and its errors come back with
 * their code, and a client without the pair's key is refused.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UsError } from '../../src/core/errors.js';
import type { AuthServer } from '../../src/replication/secure-channel.js';
import { PeerClient, listenPeer, type PeerRequest } from '../../src/upgrade/peer.js';

describe('upgrade channel between the controllers', () => {
  let dir: string;
  let server: AuthServer;
  const key = randomBytes(32);
  const seen: PeerRequest[] = [];
  const view = { board: 'sim-b', role: 'BACKUP', running: 'A', good: 'A', trial: null, version: '1.0.0', guest: 'running', protected: false, rollingRunning: false, backlog: 0 };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-peer-'));
    server = await listenPeer({
      address: '127.0.0.1', port: 0, key, incomingDir: join(dir, 'incoming'),
      handler: async (req) => {
        seen.push(req);
        if (req.op === 'commit') throw new UsError('US_ERR_UPGRADE_STATE', 'no trial is running');
        return req.op === 'status' ? view : { op: req.op };
      },
    });
  });
  after(async () => {
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('pushes a package of several chunks intact into incoming/', async () => {
    const data = randomBytes(3 * 256 * 1024 + 123);
    const src = join(dir, 'pkg.usp');
    writeFileSync(src, data);
    const c = new PeerClient('127.0.0.1', server.port, key);
    let last = 0;
    const r = await c.put(src, (done) => { last = done; });
    assert.equal(r.bytes, data.length);
    assert.equal(last, data.length);
    assert.ok(readFileSync(r.file).equals(data));
    assert.deepEqual(readdirSync(join(dir, 'incoming')).filter((f) => f.endsWith('.part')), [], 'no partial file left');
  });

  it('carries requests and the handler\'s errors with their code', async () => {
    const c = new PeerClient('127.0.0.1', server.port, key);
    assert.deepEqual(await c.call({ op: 'status' }), view);
    await assert.rejects(c.call({ op: 'commit' }), (e: UsError) => e.code === 'US_ERR_UPGRADE_STATE' && /no trial is running/.test(e.message));
    assert.deepEqual(seen.map((r) => r.op), ['status', 'commit']);
  });

  it('refuses a client without the pair\'s key', async () => {
    const c = new PeerClient('127.0.0.1', server.port, randomBytes(32));
    await assert.rejects(c.call({ op: 'status' }), (e: UsError) => e.code === 'US_ERR_LINK');
    assert.equal(seen.length, 2, 'the handler never saw it');
  });
});
