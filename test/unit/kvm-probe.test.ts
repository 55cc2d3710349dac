import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KVM_SLOWER_LIMIT, PROBE_WRITES, bootSector, chooseAccel, forgetProbe, markKvmBroken, probeArgs, probeKvm } from '../../src/hw/hypervisor/kvm-probe.js';

describe('accelerator probe (KVM against TCG)', () => {
  it('chooses KVM when it ran the probe no slower than the limit allows', () => {
    assert.equal(chooseAccel(80, 70).accel, 'kvm');
    assert.equal(chooseAccel(70 * KVM_SLOWER_LIMIT, 70).accel, 'kvm');
  });

  it('chooses TCG when KVM is slower than the limit (nested virtualization), naming both times', () => {
    const r = chooseAccel(1517, 79);
    assert.equal(r.accel, 'tcg');
    assert.match(r.reason, /1517 ms.*79 ms/);
  });

  it('chooses TCG when KVM failed, with its reason; KVM when only TCG failed', () => {
    assert.deepEqual(chooseAccel('KVM probe exited (1): MSR', 50), { accel: 'tcg', reason: 'KVM probe exited (1): MSR' });
    assert.equal(chooseAccel(90, 'TCG probe guest did not run within 3000 ms').accel, 'kvm');
  });

  it('the boot sector writes dots in its loop and then K (real QEMU, TCG)', async function () {
    this.timeout(30000);
    const dir = mkdtempSync(join(tmpdir(), 'us-probe-test-'));
    const img = join(dir, 'probe.img');
    writeFileSync(img, bootSector());
    const child = spawn('qemu-system-x86_64', probeArgs('tcg', img), { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      let out = '';
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no K after 20 s; got ${out.length} bytes`)), 20000);
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString('latin1');
          if (out.includes('K')) { clearTimeout(timer); resolve(); }
        });
      });
      // QEMU's UART drops a byte written while the previous one is still going out (the sector
      // does not poll LSR), so count at most PROBE_WRITES dots, all before the K.
      const tail = out.slice(out.indexOf('.'));
      assert.match(tail, /^\.+K$/);
      assert.ok(tail.length - 1 <= PROBE_WRITES && tail.length - 1 > PROBE_WRITES / 10, `${tail.length - 1} dots`);
    } finally {
      child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('accelerator probe verdict kept for the boot', () => {
  let dir: string;
  let dev: string; // stands in for /dev/kvm (the probe only checks it can open it)
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'us-probe-cache-'));
    dev = join(dir, 'kvm');
    writeFileSync(dev, '');
    forgetProbe();
  });
  afterEach(() => { forgetProbe(); rmSync(dir, { recursive: true, force: true }); });

  it('a verdict recorded for this boot and binary is used without probing; another binary probes', async () => {
    const file = join(dir, 'accel.json');
    markKvmBroken('KVM failed for the real guest: test', 'qemu-system-x86_64', file);
    forgetProbe();
    const t0 = performance.now();
    const v = await probeKvm('qemu-system-x86_64', 3000, file, dev);
    assert.equal(v.accel, 'tcg');
    assert.match(v.reason, /KVM failed for the real guest: test \(probed .*, kept in /);
    assert.ok(performance.now() - t0 < 1000, 'no probe QEMU was run');
    forgetProbe();
    // A binary that does not exist: the cache entry is not for it, so it probes (and fails to run it).
    const other = await probeKvm('/nonexistent/qemu', 3000, file, dev);
    assert.equal(other.accel, 'tcg');
    assert.match(other.reason, /cannot run \/nonexistent\/qemu/);
    const kept = JSON.parse(readFileSync(file, 'utf8')) as { binary: string; bootId: string };
    assert.equal(kept.binary, '/nonexistent/qemu', 'the new verdict replaced the old one');
    assert.equal(kept.bootId, readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
  });

  it('a verdict from another boot is ignored', async () => {
    const file = join(dir, 'accel.json');
    writeFileSync(file, JSON.stringify({ accel: 'kvm', reason: 'old', bootId: 'another-boot', binary: '/nonexistent/qemu', at: 'then' }));
    const v = await probeKvm('/nonexistent/qemu', 3000, file, dev);
    assert.equal(v.accel, 'tcg', 'probed again (and could not run the binary)');
  });
});
