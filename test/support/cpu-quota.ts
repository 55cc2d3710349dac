/**
 * Holds a running process (every thread) to a share of one CPU with a CFS bandwidth quota in a
 * cgroup of its own, together with a CPU burner started in the same cgroup, the way a busy host
 * slows a healthy guest: the burner uses the quota up early in every period (a quota alone throttles
 * nothing that uses less than it), then the process's threads are runnable but kept from running for
 * the rest of the period, which the kernel counts as run-queue wait (what the primary's fast hang
 * check reads). cgroup v1's `cpu` controller or cgroup v2's `cpu.max`, whichever this machine mounts.
 * The release kills the burner (by its pid: it is ours), moves the process back and removes the
 * cgroup; it is safe to call twice.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';

export function holdToCpuShare(pid: number, percent: number, name: string): () => void {
  const v1 = '/sys/fs/cgroup/cpu';
  const v2 = '/sys/fs/cgroup';
  const periodUs = 100000;
  const quotaUs = Math.round((periodUs * percent) / 100);
  let root: string;
  let dir: string;
  if (existsSync(`${v1}/cpu.cfs_quota_us`)) {
    root = v1;
    dir = `${v1}/${name}`;
    mkdirSync(dir);
    writeFileSync(`${dir}/cpu.cfs_period_us`, String(periodUs));
    writeFileSync(`${dir}/cpu.cfs_quota_us`, String(quotaUs));
  } else if (existsSync(`${v2}/cgroup.controllers`) && readFileSync(`${v2}/cgroup.controllers`, 'utf8').split(/\s+/).includes('cpu')) {
    root = v2;
    dir = `${v2}/${name}`;
    if (!readFileSync(`${v2}/cgroup.subtree_control`, 'utf8').split(/\s+/).includes('cpu')) writeFileSync(`${v2}/cgroup.subtree_control`, '+cpu');
    mkdirSync(dir);
    writeFileSync(`${dir}/cpu.max`, `${quotaUs} ${periodUs}`);
  } else {
    throw new Error('no cgroup cpu controller on this machine (neither /sys/fs/cgroup/cpu nor cgroup v2 with cpu): cannot slow a guest');
  }
  const burner = spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' });
  burner.on('error', () => undefined);
  try {
    writeFileSync(`${dir}/cgroup.procs`, String(burner.pid));
    writeFileSync(`${dir}/cgroup.procs`, String(pid));
  } catch (e) {
    burner.kill('SIGKILL');
    throw e;
  }
  let released = false;
  return () => {
    if (released) return;
    released = true;
    burner.kill('SIGKILL');
    for (const p of [pid, burner.pid]) {
      try {
        writeFileSync(`${root}/cgroup.procs`, String(p));
      } catch {
        // the process has exited (the burner, killed)
      }
    }
    // Busy a moment after the move (EBUSY) until the kernel has moved every thread: a few tries.
    const pause = new Int32Array(new SharedArrayBuffer(4));
    for (let i = 0; ; i++) {
      try {
        rmdirSync(dir);
        return;
      } catch (e) {
        if (i >= 50) throw new Error(`cannot remove the cgroup ${dir}: ${(e as Error).message}`);
        Atomics.wait(pause, 0, 0, 20);
      }
    }
  };
}
