/**
 * The control socket module (src/mgmt/ipc.ts) on a real unix socket with a trivial handler: bad
 * input by hand, as in test/integration/daemon.test.ts. A client that streams a frame without its
 * delimiter past the size limit gets an error reply and its connection closed (node-ipc alone would
 * buffer it without limit), and the server keeps answering others.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { UsError } from '../../src/core/errors.js';
import { RawControl as Raw } from '../support/raw-control.js';
import { callControl, serveControl, MAX_FRAME_CHARS, MAX_REQUEST_CHARS, type ControlServer } from '../../src/mgmt/ipc.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, tries = 200): Promise<void> {
  for (let i = 0; i < tries && !cond(); i++) await sleep(25);
  assert.ok(cond(), what);
}

describe('control socket (node-ipc wrapper)', function () {
  this.timeout(20000);
  let dir: string;
  let path: string;
  let server: ControlServer;
  const raws: Raw[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-ipc-'));
    path = join(dir, 'control.sock');
    server = await serveControl(path, async (command, args) => {
      if (command === 'fail') throw new UsError('US_ERR_ROLE', 'refused on purpose');
      if (command === 'echo') return args;
      return { pong: command };
    });
  });

  after(() => {
    for (const r of raws) r.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers a request', async () => {
    assert.deepEqual(await callControl(path, 'ping'), { pong: 'ping' });
  });

  // callControl speaks node-ipc's framing itself (it does not load node-ipc): against the node-ipc server.
  it('the client: a large reply split over many reads, concurrent requests each get their own reply, an error keeps its code', async () => {
    const big = { text: 'x\u00e9\u20ac'.repeat(20000), n: 7 };
    const [a, b, c] = await Promise.all([callControl(path, 'echo', big), callControl(path, 'echo', { n: 1 }), callControl(path, 'ping')]);
    assert.deepEqual(a, big);
    assert.deepEqual(b, { n: 1 });
    assert.deepEqual(c, { pong: 'ping' });
    await assert.rejects(callControl(path, 'fail'), (e: UsError) => e.code === 'US_ERR_ROLE' && e.message === 'refused on purpose');
  });

  it('the client: no daemon is US_ERR_NOT_RUNNING; a socket that closes without answering is US_ERR_CONTROL, one that never answers times out', async () => {
    await assert.rejects(callControl(join(dir, 'none.sock'), 'ping'), (e: UsError) => e.code === 'US_ERR_NOT_RUNNING');
    const mute = createServer((s) => { s.on('data', () => undefined); });
    const closes = createServer((s) => s.once('data', () => s.end()));
    await new Promise<void>((r) => mute.listen(join(dir, 'mute.sock'), r));
    await new Promise<void>((r) => closes.listen(join(dir, 'closes.sock'), r));
    try {
      await assert.rejects(callControl(join(dir, 'closes.sock'), 'ping', {}, 5000), (e: UsError) => e.code === 'US_ERR_CONTROL' && /closed the connection/.test(e.message));
      await assert.rejects(callControl(join(dir, 'mute.sock'), 'ping', {}, 200), (e: UsError) => e.code === 'US_ERR_TIMEOUT');
    } finally {
      mute.close();
      closes.close();
    }
  });

  it('an unterminated frame past the limit: error reply with the request id, connection closed', async () => {
    const c = await Raw.open(path);
    raws.push(c);
    c.send('{"type":"request","data":{"id":"big-1","command":"ping","args":{"blob":"');
    const chunk = 'x'.repeat(16 * 1024);
    for (let sent = 0; sent <= MAX_FRAME_CHARS + chunk.length && !c.closed; sent += chunk.length) {
      c.send(chunk);
      await sleep(2); // separate chunks, as a slow client sends them
    }
    await until('the server closes the connection', () => c.closed);
    const [reply] = c.frames();
    assert.equal(reply?.type, 'reply');
    assert.equal(reply.data.id, 'big-1');
    assert.equal(reply.data.ok, false);
    assert.equal(reply.data.error.code, 'US_ERR_CONTROL');
    assert.match(reply.data.error.message, new RegExp(`larger than ${MAX_REQUEST_CHARS}`));
    assert.deepEqual(await callControl(path, 'ping'), { pong: 'ping' }, 'others are still served');
  });

  it('garbage without a delimiter past the limit: connection closed, no id', async () => {
    const c = await Raw.open(path);
    raws.push(c);
    for (let i = 0; i < 8 && !c.closed; i++) { c.send(Buffer.alloc(64 * 1024, 0x61)); await sleep(2); }
    await until('the server closes the connection', () => c.closed);
    assert.equal(c.frames()[0]?.data.id, '');
    assert.deepEqual(await callControl(path, 'ping'), { pong: 'ping' });
  });

  it('a large request with its delimiter, under the frame limit, is still answered with an error (not closed)', async () => {
    await assert.rejects(callControl(path, 'ping', { blob: 'x'.repeat(MAX_REQUEST_CHARS) }), { code: 'US_ERR_CONTROL', message: /larger than/ });
  });
});
