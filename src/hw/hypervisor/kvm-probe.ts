/**
 * Decides between KVM and TCG. /dev/kvm existing is not enough: on nested setups KVM starts and then
 * fails (MSR errors), hangs, or runs but far slower than TCG (every exit of a nested guest goes
 * through two hypervisors: here SeaBIOS alone took 1.3 s under KVM and 60 ms under TCG, and the
 * reference guest 20-50x slower). So the probe boots the same 512-byte boot sector under both, one
 * after the other: it writes PROBE_WRITES bytes to the serial port (an exit each under KVM) and then
 * 'K'. KVM is chosen only if it printed the 'K' within the timeout and took at most
 * KVM_SLOWER_LIMIT times as long as TCG did in the same run (on a real board KVM is the faster one).
 *
 * The verdict is kept for the machine's uptime in PROBE_CACHE (keyed by the kernel's boot id and the
 * QEMU binary), so the probe runs once per boot, not at every controller start: under nested KVM
 * the probe itself stalls the whole machine for tens of ms, which on the simulated chassis (both
 * boards on one machine) starved the partner's heartbeats into a false failover. The chassis probes
 * before it starts the boards. Delete the file to probe again.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

export type Accel = 'kvm' | 'tcg';

export interface AccelProbe {
  accel: Accel;
  reason: string;
}

/** Serial writes in the probe's loop. */
export const PROBE_WRITES = 2000;
/** KVM may take up to this many times TCG's probe time and still be chosen. */
export const KVM_SLOWER_LIMIT = 3;

let cached: AccelProbe | undefined;

/** Where the verdict is kept until the next boot (a tmpfs). */
export const PROBE_CACHE = '/run/understudy/accel-probe.json';

interface CachedVerdict extends AccelProbe {
  bootId: string;
  binary: string;
  at: string;
}

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

function readCache(file: string, binary: string): AccelProbe | undefined {
  try {
    const c = JSON.parse(readFileSync(file, 'utf8')) as Partial<CachedVerdict>;
    if (c.bootId !== bootId() || c.binary !== binary || (c.accel !== 'kvm' && c.accel !== 'tcg') || typeof c.reason !== 'string') return undefined;
    return { accel: c.accel, reason: `${c.reason} (probed ${c.at}, kept in ${file})` };
  } catch {
    return undefined;
  }
}

function writeCache(file: string, binary: string, v: AccelProbe): void {
  try {
    mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
    const tmp = `${file}.${process.pid}.tmp`;
    const c: CachedVerdict = { ...v, bootId: bootId(), binary, at: new Date().toISOString() };
    writeFileSync(tmp, `${JSON.stringify(c)}\n`, { mode: 0o644 });
    renameSync(tmp, file);
  } catch {
    // not cached: the next controller start probes again
  }
}

/** The CPU model used with each accelerator; the probe uses the same one as the real guest. */
export function cpuModelFor(accel: Accel): string {
  return accel === 'kvm' ? 'host' : 'qemu64';
}

/** Records that KVM failed for real after the probe passed, so later starts go straight to TCG. */
export function markKvmBroken(reason: string, binary = 'qemu-system-x86_64', cacheFile: string | null = PROBE_CACHE): AccelProbe {
  cached = { accel: 'tcg', reason };
  if (cacheFile) writeCache(cacheFile, binary, cached);
  return cached;
}

/** Forgets the in-process verdict (tests). */
export function forgetProbe(): void {
  cached = undefined;
}

/** The boot sector: PROBE_WRITES times '.' to COM1, then 'K', then halt. */
export function bootSector(writes = PROBE_WRITES): Buffer {
  const b = Buffer.alloc(512);
  // mov dx,0x3f8; mov cx,writes; l: mov al,'.'; out dx,al; dec cx; jnz l; mov al,'K'; out dx,al; hlt; jmp $-1
  Buffer.from([0xba, 0xf8, 0x03, 0xb9, writes & 0xff, writes >> 8, 0xb0, 0x2e, 0xee, 0x49, 0x75, 0xfa, 0xb0, 0x4b, 0xee, 0xf4, 0xeb, 0xfd]).copy(b);
  b[510] = 0x55;
  b[511] = 0xaa;
  return b;
}

/** The choice from the two probe runs (ms to the 'K', or an error text). Exported for unit tests. */
export function chooseAccel(kvm: number | string, tcg: number | string): AccelProbe {
  if (typeof kvm === 'string') return { accel: 'tcg', reason: kvm };
  if (typeof tcg === 'string') return { accel: 'kvm', reason: `KVM probe guest ran in ${kvm} ms (TCG probe failed: ${tcg})` };
  if (kvm > tcg * KVM_SLOWER_LIMIT) {
    return { accel: 'tcg', reason: `KVM ran the probe guest in ${kvm} ms, TCG in ${tcg} ms: KVM is slower here (nested virtualization), using TCG` };
  }
  return { accel: 'kvm', reason: `KVM probe guest ran in ${kvm} ms (TCG ${tcg} ms)` };
}

/** QEMU's arguments to boot the probe image `img` under `accel`, its serial port on stdout. */
export function probeArgs(accel: Accel, img: string): string[] {
  return ['-accel', accel, '-machine', 'pc', '-cpu', cpuModelFor(accel), '-nodefaults', '-no-user-config', '-display', 'none', '-m', '16',
    '-serial', 'stdio', '-drive', `file=${img},format=raw,if=ide`];
}

/** Boots the probe image under `accel`; resolves with the ms until the 'K', or why not. */
function runProbe(binary: string, img: string, accel: Accel, timeoutMs: number): Promise<number | string> {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const child = spawn(binary, probeArgs(accel, img), { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    let done = false;
    const finish = (r: number | string) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(r);
    };
    const what = accel === 'kvm' ? 'KVM' : 'TCG';
    const timer = setTimeout(() => finish(`${what} probe guest did not run within ${timeoutMs} ms`), timeoutMs);
    child.stdout.on('data', (d: Buffer) => { if (d.includes(0x4b)) finish(Math.round(performance.now() - t0)); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    child.on('error', (e) => finish(`cannot run ${binary}: ${e.message}`));
    child.on('exit', (code) => finish(`${what} probe exited (${code}): ${err.trim().split('\n')[0] ?? ''}`));
  });
}

export async function probeKvm(binary = 'qemu-system-x86_64', timeoutMs = 3000, cacheFile: string | null = PROBE_CACHE, kvmDevice = '/dev/kvm'): Promise<AccelProbe> {
  if (cached) return cached;
  try {
    accessSync(kvmDevice, constants.R_OK | constants.W_OK);
  } catch {
    return (cached = { accel: 'tcg', reason: `${kvmDevice} is not accessible` });
  }
  const known = cacheFile ? readCache(cacheFile, binary) : undefined;
  if (known) return (cached = known);
  const dir = mkdtempSync(join(tmpdir(), 'us-kvm-probe-'));
  const img = join(dir, 'probe.img');
  writeFileSync(img, bootSector());
  try {
    const kvm = await runProbe(binary, img, 'kvm', timeoutMs);
    const tcg = typeof kvm === 'string' ? 0 : await runProbe(binary, img, 'tcg', timeoutMs);
    cached = chooseAccel(kvm, tcg);
    if (cacheFile) writeCache(cacheFile, binary, cached);
    return cached;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
