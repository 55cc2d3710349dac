/**
 * One controller per board: an exclusive pid file in the board's storage directory, `<pid> <start
 * time>` (the process's start in clock ticks since boot, /proc/<pid>/stat field 22). A pid file whose
 * process is gone, is not a controller, or started at another time (its pid reused: after a reboot,
 * or in a fresh pid namespace, where pids start again from 1 and a stale file's pid soon names
 * another process, even another controller) is stale and taken over. A file of the earlier format
 * (the pid alone) is judged by the pid and the command line, as before.
 */
import { openSync, writeSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { UsError } from '../core/errors.js';
import { procStartTime } from '../hw/proc-state.js';

function holderOf(path: string): number | undefined {
  try {
    const [pidText, started] = readFileSync(path, 'utf8').trim().split(/\s+/);
    const pid = Number.parseInt(pidText ?? '', 10);
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
    if (started !== undefined && String(procStartTime(pid)) !== started) return undefined;
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return cmd.includes('understudy') ? pid : undefined;
  } catch {
    return undefined;
  }
}

export function acquireBoardLock(path: string, board: string): () => void {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fd = openSync(path, 'wx', 0o600);
      writeSync(fd, `${process.pid} ${procStartTime(process.pid) ?? ''}`.trim() + '\n');
      closeSync(fd);
      return () => {
        if (holderOf(path) === process.pid) rmSync(path, { force: true });
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const holder = holderOf(path);
      if (holder !== undefined && holder !== process.pid) {
        throw new UsError('US_ERR_ALREADY_RUNNING', `a controller (pid ${holder}) is already running on board ${board}`, { pid: holder });
      }
      rmSync(path, { force: true }); // stale
    }
  }
  throw new UsError('US_ERR_ALREADY_RUNNING', `cannot take the lock ${path} for board ${board}`);
}
