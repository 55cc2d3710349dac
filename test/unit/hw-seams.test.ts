/**
 * The hypervisor and guest NIC seams: their fakes stand where QemuProcess and GuestLink stand, and
 * the code above (written against Hypervisor and GuestNic) runs on them unchanged.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GuestPort } from '../../src/guest/guest-port.js';
import type { GuestOutput } from '../../src/guest/io.js';
import { FakeGuestNic } from '../../src/hw/guestnet/fake-nic.js';
import type { GuestNic } from '../../src/hw/guestnet/nic.js';
import { FakeHypervisor } from '../../src/hw/hypervisor/fake.js';
import type { Hypervisor } from '../../src/hw/hypervisor/types.js';

describe('FakeHypervisor (the Hypervisor seam over the fake QMP server)', () => {
  let dir: string;
  let fake: FakeHypervisor;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-hv-'));
    fake = await FakeHypervisor.start(join(dir, 'qmp.sock'));
  });
  afterEach(async () => {
    await fake.exit();
    rmSync(dir, { recursive: true, force: true });
  });

  it('answers run state, vCPU thread and commands through QMP, as QEMU does', async () => {
    const hv: Hypervisor = fake;
    assert.equal(hv.alive, true);
    assert.equal(hv.pid, process.pid);
    assert.equal(await hv.vcpuThreadId(), 4242);
    assert.equal(await hv.status(), 'running');
    await hv.qmp.execute('stop');
    assert.equal(await hv.status(), 'paused');
    await hv.qmp.execute('cont');
    assert.equal(await hv.status(), 'running');
    assert.deepEqual(fake.commands, ['query-cpus-fast', 'query-status', 'stop', 'query-status', 'cont', 'query-status']);
    await assert.rejects(hv.qmp.execute('no-such-command'), { code: 'US_ERR_QMP' });
  });

  it('scripts a migration: active with progress, then completed with the source left postmigrate', async () => {
    const hv: Hypervisor = fake;
    fake.script = { totalBytes: 8 * 1048576, polls: 2, downtimeMs: 7 };
    await hv.qmp.execute('migrate', { uri: 'unix:/run/relay.sock' });
    const first = await hv.qmp.execute<{ status: string; ram: { transferred: number; total: number } }>('query-migrate');
    assert.equal(first.status, 'active');
    assert.deepEqual([first.ram.transferred, first.ram.total], [4 * 1048576, 8 * 1048576]);
    const last = await hv.qmp.execute<{ status: string; downtime: number }>('query-migrate');
    assert.deepEqual([last.status, last.downtime], ['completed', 7]);
    assert.equal(await hv.status(), 'postmigrate');
    assert.equal(fake.migration.uri, 'unix:/run/relay.sock');
  });

  it('is not alive once it exited, and its QMP is closed', async () => {
    await fake.exit();
    assert.equal(fake.alive, false);
    await assert.rejects(fake.status(), { code: 'US_ERR_QMP_CLOSED' });
  });
});

describe('FakeGuestNic (the GuestNic seam) under the guest port', () => {
  const ports = { service: 5000, management: 5002, auth: 7000, guestAuth: 5001 };

  it('carries inputs to the guest\'s ports and the guest\'s datagrams back as outputs', async () => {
    const fake = new FakeGuestNic();
    const nic: GuestNic = fake;
    fake.responder = (d) => (d.dstPort === ports.management ? 'OK PING 1.0.0 seq=3' : undefined);
    const port = new GuestPort(nic, ports);
    const outputs: GuestOutput[] = [];
    port.on('output', (o) => outputs.push(o));

    assert.equal(await port.management('PING', 500), 'OK PING 1.0.0 seq=3');
    port.deliver({ kind: 'request', clientPort: 20001, payload: Buffer.from('r1 GET a') });
    port.deliver({ kind: 'auth-reply', payload: Buffer.from('AUTHR a OK') });
    assert.deepEqual(fake.sent.slice(1).map((d) => [d.srcPort, d.dstPort, d.payload.toString()]),
      [[20001, ports.service, 'r1 GET a'], [ports.auth, ports.guestAuth, 'AUTHR a OK']]);

    fake.fromGuest(ports.service, 20001, 'r1 OK GET a');
    fake.fromGuest(ports.guestAuth, ports.auth, 'AUTHQ bob');
    assert.deepEqual(outputs.map((o) => [o.kind, o.payload.toString()]), [['reply', 'r1 OK GET a'], ['auth-query', 'AUTHQ bob']]);
    assert.deepEqual([...port.authOutstanding], ['bob']);
  });

  it('a silence with work is announced once, when work reaches an idle guest (the supervisor\'s quick checks arm on it; an idle guest costs no timer)', () => {
    const fake = new FakeGuestNic();
    const port = new GuestPort(fake, ports);
    let starts = 0;
    port.onWorkStart = () => starts++;
    assert.equal(port.silentWithWorkSince, undefined);
    port.deliver({ kind: 'request', clientPort: 20001, payload: Buffer.from('r1 GET a') });
    const since = port.silentWithWorkSince;
    assert.ok(since !== undefined);
    port.deliver({ kind: 'request', clientPort: 20002, payload: Buffer.from('r2 GET b') });
    assert.equal(starts, 1, 'more work in the same silence: not again');
    assert.equal(port.silentWithWorkSince, since);
    fake.fromGuest(ports.service, 20001, 'r1 OK GET a');
    assert.equal(port.silentWithWorkSince, undefined, 'an answer ends the silence');
    port.deliver({ kind: 'auth-reply', payload: Buffer.from('AUTHR a OK') });
    assert.equal(starts, 1, 'an AUTH answer is not a request to answer');
    port.deliver({ kind: 'request', clientPort: 20003, payload: Buffer.from('r3 GET c') });
    assert.equal(starts, 2);
  });

  it('a NIC that is not connected drops, and a management command says so at once', async () => {
    const fake = new FakeGuestNic();
    fake.connected = false;
    const port = new GuestPort(fake, ports);
    await assert.rejects(port.management('PING', 500), { code: 'US_ERR_NOT_RUNNING' });
    assert.equal(port.deliver({ kind: 'request', clientPort: 20001, payload: Buffer.from('r1 GET a') }), false);
    assert.equal(fake.dropped, 2);
  });
});
