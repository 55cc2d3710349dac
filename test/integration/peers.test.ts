/**
 * Smoke tests of bench/peers's set-ups, so the benchmark cannot rot: keepalived (VRRP, a guest per
 * board) and QEMU COLO (primary and secondary VMs, our heartbeat) each start in namespaces made like
 * the chassis's, serve one request through the service address, fail over once, and are torn down
 * (every process by its group, every namespace), failed or not. COLO is skipped, with the reason,
 * only when this QEMU has no x-colo migration capability. The COLO test keeps to COLO's default
 * x-checkpoint-delay (20 s) and fails over before its first checkpoint: on QEMU 7.2 under TCG a
 * checkpoint corrupts the secondary (docs/peers.md), which bench/peers reports as "not runnable".
 * Real keepalived, real QEMU; no wall-clock assertions.
 */
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { partnerOf } from '../../src/sim/chassis/layout.js';
import { probeKvm } from '../../src/hw/hypervisor/kvm-probe.js';
import { startAuth } from '../../src/sim/peers/auth.js';
import { ColoPair, DEFAULT_CHECKPOINT_DELAY_MS } from '../../src/sim/peers/colo.js';
import { loadDescriptor } from '../../src/sim/peers/guest-vm.js';
import { KeepalivedPair } from '../../src/sim/peers/keepalived.js';
import { peerNetDown, peerNetUp, takeServiceAddress, type PeerNet } from '../../src/sim/peers/net.js';
import { ProcessGroups } from '../../src/sim/peers/procs.js';
import { ask } from '../../bench/peers-lib.js';

describe('peer set-ups of bench/peers: keepalived and QEMU COLO (root, real QEMU)', function () {
  this.timeout(180000);
  let procs: ProcessGroups;
  let net: PeerNet | undefined;
  let dir = '';
  const tag = process.pid % 1000;

  beforeEach(() => {
    procs = new ProcessGroups();
    net = undefined;
  });

  afterEach(async () => {
    await procs.killAll();
    if (net) await peerNetDown(net);
    rmSync(dir, { recursive: true, force: true });
  });

  it('keepalived: the VRRP master\'s guest answers; keepalived killed, the backup takes the address and its own guest answers', async () => {
    dir = `/tmp/us-peers-it-k-${process.pid}`;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    net = await peerNetUp(`tk${tag}`);
    await startAuth(procs, net.serviceNetns, join(dir, 'auth.log'));
    const k = new KeepalivedPair(net, procs, dir, (await probeKvm()).accel);
    await Promise.all([k.startBoard('sim-a'), k.startBoard('sim-b')]);
    const master = await k.waitProtected();
    const [reg] = await ask(net.serviceNetns, ['REG alice']);
    assert.match(reg!, / OK REG alice 1$/);
    process.kill(k.keepalivedPid(master)!, 'SIGKILL');
    const backup = partnerOf(master);
    for (let i = 0; i < 3000 && k.state(backup) !== 'MASTER'; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(k.state(backup), 'MASTER', `${backup} did not become MASTER`);
    // The new master's guest was booted on its own: it answers, and has never heard of alice.
    const [stats, get] = await ask(net.serviceNetns, ['STATS', 'GET alice']);
    assert.match(stats!, / OK STATS subs=0 /);
    assert.match(get!, / ERR UNKNOWN alice/);
  });

  it('COLO: the primary VM answers with the secondary in lock-step; the primary killed, our heartbeat fails over and the secondary answers with the state', async function () {
    dir = `/tmp/us-peers-it-c-${process.pid}`;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    net = await peerNetUp(`tc${tag}`);
    await startAuth(procs, net.serviceNetns, join(dir, 'auth.log'));
    const blank = join(dir, 'blank.raw');
    writeFileSync(blank, Buffer.alloc(loadDescriptor().stateDisk.sizeMb * 2 ** 20));
    const c = new ColoPair(net, procs, dir, (await probeKvm()).accel, DEFAULT_CHECKPOINT_DELAY_MS, blank);
    const pvm = await c.bootPrimary('sim-a');
    const caps = (await pvm.qmp.execute('query-migrate-capabilities')) as Array<{ capability: string }>;
    if (!caps.some((x) => x.capability === 'x-colo')) {
      console.log(`      skipped: this QEMU has no x-colo migration capability (${caps.map((x) => x.capability).join(', ')})`);
      this.skip();
    }
    await takeServiceAddress(net, 'sim-a');
    await c.protect('sim-a');
    assert.equal((await c.coloStatus('sim-b')).mode, 'secondary');
    const [reg] = await ask(net.serviceNetns, ['REG alice']);
    assert.match(reg!, / OK REG alice 1$/);
    await c.startHeartbeat('sim-a', { intervalMs: 5, deadtimeMs: 250 });
    await procs.kill(c.key('sim-a'));
    const fo = await c.waitHeartbeatEvent('failover', 30000);
    assert.deepEqual(fo.errors, []);
    const [get] = await ask(net.serviceNetns, ['GET alice']);
    assert.match(get!, / OK GET alice calls=0 state=idle/, 'the secondary has what the primary acknowledged');
  });
});
