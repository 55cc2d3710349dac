/**
 * The processes a peer set-up starts (QEMU, keepalived, the AUTH stand-in): each in its own process
 * group inside a network namespace (`ip netns exec` execs the command, so the pid is the command's),
 * its output to a log file. Signals go only to the groups this object started, by pgid; never by
 * name. Owns nothing else.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs';
import { parseProcStat } from '../../hw/proc-state.js';

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

  /**
   * SIGKILLs the whole group of `key` (its leader may be gone while a child it forked lives on, as
   * keepalived's VRRP child does) and waits until no live member is left.
   */
  async kill(key: string): Promise<void> {
    const s = this.started.get(key);
    if (!s) return;
    const pgid = s.pid;
    const alive = () => livingMembers(pgid).length > 0;
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // no member left
    }
    for (let i = 0; i < 200 && (alive() || !s.exited); i++) await sleep(25);
    if (alive()) throw new Error(`${key}: pids ${livingMembers(pgid).join(', ')} of group ${pgid} survive SIGKILL`);
  }

  async killAll(): Promise<void> {
    const errors: string[] = [];
    for (const key of [...this.started.keys()]) await this.kill(key).catch((e: Error) => errors.push(e.message));
    if (errors.length) throw new Error(errors.join('; '));
  }
}

/** Members of process group `pgid` that are not zombies. */
function livingMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const st = parseProcStat(readFileSync(`/proc/${e}/stat`, 'utf8'));
      if (Number(st.field(5)) === pgid && st.field(3) !== 'Z') out.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
