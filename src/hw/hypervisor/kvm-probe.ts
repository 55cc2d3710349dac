/**
 * Decides between KVM and TCG. /dev/kvm existing is not enough: on nested setups KVM starts and then
 * fails (MSR errors) or hangs. So boot a 512-byte boot sector that writes 'K' to the serial port under
 * KVM, with a short timeout; anything else means TCG.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type Accel = 'kvm' | 'tcg';

export interface AccelProbe {
  accel: Accel;
  reason: string;
}

let cached: AccelProbe | undefined;

/** The CPU model used with each accelerator; the probe uses the same one as the real guest. */
export function cpuModelFor(accel: Accel): string {
  return accel === 'kvm' ? 'host' : 'qemu64';
}

/** Records that KVM failed for real after the probe passed, so later starts go straight to TCG. */
export function markKvmBroken(reason: string): AccelProbe {
  return (cached = { accel: 'tcg', reason });
}

function bootSector(): Buffer {
  const b = Buffer.alloc(512);
  // mov dx,0x3f8; mov al,'K'; out dx,al; hlt; jmp $-1
  Buffer.from([0xba, 0xf8, 0x03, 0xb0, 0x4b, 0xee, 0xf4, 0xeb, 0xfd]).copy(b);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

export async function probeKvm(binary = 'qemu-system-x86_64', timeoutMs = 3000): Promise<AccelProbe> {
  if (cached) return cached;
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return (cached = { accel: 'tcg', reason: '/dev/kvm is not accessible' });
  }
  const dir = mkdtempSync(join(tmpdir(), 'us-kvm-probe-'));
  const img = join(dir, 'probe.img');
  writeFileSync(img, bootSector());
  try {
    const result = await new Promise<AccelProbe>((resolve) => {
      const child = spawn(binary, ['-accel', 'kvm', '-machine', 'pc', '-cpu', cpuModelFor('kvm'), '-nodefaults', '-no-user-config', '-display', 'none', '-m', '16',
        '-serial', 'stdio', '-drive', `file=${img},format=raw,if=ide`], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      const finish = (r: AccelProbe) => { clearTimeout(timer); child.kill('SIGKILL'); resolve(r); };
      const timer = setTimeout(() => finish({ accel: 'tcg', reason: `KVM guest did not run within ${timeoutMs} ms` }), timeoutMs);
      child.stdout.on('data', (d: Buffer) => { out += d.toString(); if (out.includes('K')) finish({ accel: 'kvm', reason: 'KVM probe guest ran' }); });
      child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      child.on('error', (e) => finish({ accel: 'tcg', reason: `cannot run ${binary}: ${e.message}` }));
      child.on('exit', (code) => finish({ accel: 'tcg', reason: `KVM probe exited (${code}): ${err.trim().split('\n')[0] ?? ''}` }));
    });
    return (cached = result);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
