import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KVM_SLOWER_LIMIT, PROBE_WRITES, bootSector, chooseAccel } from '../../src/hw/hypervisor/kvm-probe.js';

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
    const child = spawn('qemu-system-x86_64', ['-accel', 'tcg', '-machine', 'pc', '-cpu', 'qemu64', '-nodefaults', '-no-user-config', '-display', 'none', '-m', '16',
      '-serial', 'stdio', '-drive', `file=${img},format=raw,if=ide`], { stdio: ['ignore', 'pipe', 'ignore'] });
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
