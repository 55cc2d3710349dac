/**
 * The processes a peer set-up starts (QEMU, keepalived, the AUTH stand-in): each in its own process
 * group inside a network namespace (`ip netns exec` execs the command, so the pid is the command's),
 * its output to a log file. Signals go only to the groups this object started, by pgid; never by
 * name. Owns nothing else.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';

export interface Started {
  key: string;
  child: ChildProcess;
  pid: number;
  exited: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class ProcessGroups {
  private readonly started = new Map<string, Started>();

  /** Starts `command args` in `netns` (or here when netns is undefined), output appended to `log`. */
  async spawnIn(key: string, netns: string | undefined, command: string, args: string[], log: string): Promise<Started> {
    if (this.started.get(key) && !this.started.get(key)!.exited) throw new Error(`${key} is already running (pid ${this.started.get(key)!.pid})`);
    const fd = openSync(log, 'a', 0o600);
    let child: ChildProcess;
    try {
      const argv = netns ? ['netns', 'exec', netns, command, ...args] : args;
      child = spawn(netns ? 'ip' : command, argv, { detached: true, stdio: ['ignore', fd, fd] });
    } finally {
      closeSync(fd);
    }
    const err = await new Promise<Error | undefined>((resolve) => {
      child.once('spawn', () => resolve(undefined));
      child.once('error', resolve);
    });
    if (err) throw new Error(`cannot start ${command}: ${err.message}`);
    const s: Started = { key, child, pid: child.pid!, exited: false };
    child.once('exit', () => { s.exited = true; });
    this.started.set(key, s);
    return s;
  }

  get(key: string): Started | undefined {
    const s = this.started.get(key);
    return s && !s.exited ? s : undefined;
  }

  /** Sends `signal` to the group of `key` (SIGSTOP / SIGCONT for a hang, SIGKILL for a death). */
  signal(key: string, signal: NodeJS.Signals): void {
    const s = this.get(key);
    if (!s) throw new Error(`${key} is not running`);
    process.kill(-s.pid, signal);
  }

  /** SIGKILLs the group of `key` (continued first if stopped) and waits for its exit. */
  async kill(key: string): Promise<void> {
    const s = this.started.get(key);
    if (!s || s.exited) return;
    try {
      process.kill(-s.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    for (let i = 0; i < 200 && !s.exited; i++) await sleep(25);
    if (!s.exited) throw new Error(`${key} (pid ${s.pid}) survives SIGKILL`);
  }

  async killAll(): Promise<void> {
    const errors: string[] = [];
    for (const key of [...this.started.keys()]) await this.kill(key).catch((e: Error) => errors.push(e.message));
    if (errors.length) throw new Error(errors.join('; '));
  }
}
