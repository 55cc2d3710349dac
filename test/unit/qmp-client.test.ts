import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient } from '../../src/hw/qmp/client.js';
import { FakeQmpServer } from '../../src/hw/qmp/fake-server.js';

describe('QmpClient against a fake QMP server', () => {
  let dir: string;
  let server: FakeQmpServer;
  let client: QmpClient;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-qmp-'));
    server = new FakeQmpServer(join(dir, 'qmp.sock'));
    await server.listen();
    client = new QmpClient({ commandTimeoutMs: 500 });
  });
  afterEach(async () => {
    client.close();
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads the greeting and negotiates capabilities before anything else', async () => {
    const g = await client.connect(server.path);
    assert.equal(g.version.qemu.major, 7);
    assert.equal(server.received[0]?.execute, 'qmp_capabilities');
  });

  it('matches answers to commands by id, even out of order', async () => {
    await client.connect(server.path);
    server.handlers.set('query-cpus-fast', () => [{ 'cpu-index': 0, 'thread-id': 4242 }]);
    const a = client.execute<Array<{ 'thread-id': number }>>('query-cpus-fast');
    const b = client.execute<{ status: string }>('query-status');
    const [ra, rb] = await Promise.all([a, b]);
    assert.equal(ra[0]!['thread-id'], 4242);
    assert.equal(rb.status, 'running');
    const ids = server.received.slice(1).map((r) => r.id);
    assert.equal(new Set(ids).size, ids.length, 'every command carries its own id');
  });

  it('turns QMP errors into US_ERR_QMP with the error class', async () => {
    await client.connect(server.path);
    await assert.rejects(client.execute('no-such-command'), (e: { code: string; detail: { class: string } }) => {
      assert.equal(e.code, 'US_ERR_QMP');
      assert.equal(e.detail.class, 'CommandNotFound');
      return true;
    });
  });

  it('times out a command QEMU never answers, and a late answer does no harm', async () => {
    server.handlers.set('stop', () => 'no-reply');
    await client.connect(server.path);
    await assert.rejects(client.execute('stop', undefined, 100), { code: 'US_ERR_QMP_TIMEOUT' });
    assert.equal((await client.execute<{ status: string }>('query-status')).status, 'running');
  });

  it('delivers events and lets callers wait for one', async () => {
    await client.connect(server.path);
    const seen: string[] = [];
    client.on('event', (e) => seen.push(e.event));
    const wait = client.waitEvent('WATCHDOG', 1000, (e) => e.data?.action === 'none');
    server.emitEvent('RESET');
    server.emitEvent('WATCHDOG', { action: 'none' });
    const e = await wait;
    assert.equal(e.data?.action, 'none');
    assert.deepEqual(seen, ['RESET', 'WATCHDOG']);
  });

  it('rejects pending commands when the connection drops', async () => {
    server.handlers.set('stop', () => 'no-reply');
    await client.connect(server.path);
    const p = client.execute('stop', undefined, 5000);
    server.dropClients();
    await assert.rejects(p, { code: 'US_ERR_QMP_CLOSED' });
    await assert.rejects(client.execute('query-status'), { code: 'US_ERR_QMP_CLOSED' });
  });

  it('gives up on a server that never greets', async () => {
    server.greet = false;
    await assert.rejects(client.connect(server.path, 200), { code: 'US_ERR_QMP_TIMEOUT' });
  });

  it('closes on a line that is not JSON instead of crashing', async () => {
    await client.connect(server.path);
    const closed = new Promise<Error | undefined>((r) => client.on('close', r));
    server.writeRaw('this is not json\r\n');
    const err = await closed;
    assert.match(String(err?.message), /not JSON/);
  });

  it('retries connecting while the socket does not exist yet', async () => {
    const later = new FakeQmpServer(join(dir, 'late.sock'));
    setTimeout(() => void later.listen(), 150);
    const g = await client.connectWithRetry(later.path, 3000);
    assert.equal(g.version.package, 'fake');
    client.close();
    await later.close();
  });
});
