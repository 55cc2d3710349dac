/**
 * One controller per board: an exclusive pid file in the board's storage directory. A pid file whose
 * process is gone (or is not a controller) is stale and taken over.
 */
import { openSync, writeSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { UsError } from '../core/errors.js';

function holderOf(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, 'utf8'), 10);
    if (!Number.isInteger(pid) || pid <= 0) return undefined;
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
      writeSync(fd, `${process.pid}\n`);
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
