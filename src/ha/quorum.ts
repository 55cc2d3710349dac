/**
 * The cluster's quorum as this board's corosync sees it (`ha.manager: pacemaker`): whether this
 * node's partition is quorate, and which nodes are in its membership. Read from a long-running
 * `corosync-quorumtool -m -p` (through `stdbuf -oL`: its standard output is a pipe), which prints a
 * whole status block at start and again at every change of membership or quorum; nothing is polled.
 *
 * The pair asks it two questions (docs/pacemaker.md, decision table rows 6-7):
 * - may a PRIMARY whose backup stopped acknowledging serve alone? Only once corosync has settled
 *   who is in the cluster without that backup (src/pair/serve-alone.ts);
 * - may a BACKUP take over? Not on a side that corosync says has lost quorum.
 *
 * The tool failing (corosync not running yet, or stopped) leaves the state unknown, and it is started
 * again every RESTART_MS. Unknown is not "quorate": the questions above wait.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { systemClock, type Clock, type TimerHandle } from '../core/clock.js';

/** The command that reports quorum changes, as the profile's default (`ha.quorumCommand`). */
export const DEFAULT_QUORUM_COMMAND: readonly string[] = ['stdbuf', '-oL', 'corosync-quorumtool', '-m', '-p'];
/** The command that tells Pacemaker a node was fenced by other means (`ha.fenceConfirmCommand`'s default; the node's name appended). */
export const DEFAULT_FENCE_CONFIRM_COMMAND: readonly string[] = ['stonith_admin', '--confirm'];
/** Wait before the quorum tool is started again after it exited. */
const RESTART_MS = 1000;

export interface QuorumState {
  /** This node's partition holds quorum. */
  quorate: boolean;
  /** Node names in this node's membership (this node included). */
  members: string[];
  /** corosync's ring id of that membership (e.g. `1.d`). */
  ring: string;
  /** When the block was read (clock ms). */
  at: number;
}

/**
 * Reads `corosync-quorumtool -p` status blocks line by line (pure, for tests). A block is complete
 * once it has listed as many members as its `Nodes:` line said.
 */
export class QuorumParser {
  private quorate?: boolean;
  private ring?: string;
  private nodes?: number;
  private members: string[] = [];
  private inMembers = false;

  /** One line of output; returns the state when the line completes a block. */
  feed(line: string, at: number): QuorumState | undefined {
    const t = line.trim();
    if (t === 'Quorum information') { this.reset(); return undefined; }
    let m: RegExpMatchArray | null;
    if ((m = /^Nodes:\s+(\d+)$/.exec(t))) this.nodes = Number(m[1]);
    else if ((m = /^Ring ID:\s+(\S+)$/.exec(t))) this.ring = m[1];
    else if ((m = /^Quorate:\s+(Yes|No)$/.exec(t))) this.quorate = m[1] === 'Yes';
    else if (t === 'Membership information') this.inMembers = true;
    else if (this.inMembers && (m = /^\d+\s+\d+\s+\S+\s+(\S+)(?:\s+\(local\))?$/.exec(t))) {
      this.members.push(m[1]!);
      if (this.nodes !== undefined && this.members.length === this.nodes && this.quorate !== undefined) {
        const s: QuorumState = { quorate: this.quorate, members: [...this.members], ring: this.ring ?? '?', at };
        this.reset();
        return s;
      }
    }
    return undefined;
  }

  private reset(): void {
    this.quorate = undefined;
    this.ring = undefined;
    this.nodes = undefined;
    this.members = [];
    this.inMembers = false;
  }
}

export interface QuorumStatus {
  command: string[];
  running: boolean;
  state: QuorumState | null;
  /** The tool's last complaint (its standard error, or why it could not start). */
  lastError: string | null;
  starts: number;
}

/** What the HA layer needs of a quorum source (the real watch, or a stand-in in unit tests). */
export interface QuorumSource {
  readonly state: QuorumState | undefined;
  on(ev: 'change', fn: (now: QuorumState | undefined, before: QuorumState | undefined) => void): unknown;
  start(): void;
  stop(): void;
  status(): QuorumStatus;
}

export declare interface QuorumWatch {
  on(ev: 'change', fn: (now: QuorumState | undefined, before: QuorumState | undefined) => void): this;
}

/** Keeps the quorum tool running and the last state it printed. */
export class QuorumWatch extends EventEmitter implements QuorumSource {
  private child?: ChildProcess;
  private current?: QuorumState;
  private restartTimer?: TimerHandle;
  private stopped = true;
  private lastError: string | null = null;
  private starts = 0;

  constructor(private readonly command: readonly string[], private readonly log: Logger, private readonly clock: Clock = systemClock) {
    super();
    if (command.length === 0) throw new Error('quorum command: empty');
  }

  /** The last state read; undefined while the tool does not run or has printed no whole block. */
  get state(): QuorumState | undefined {
    return this.current;
  }

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.spawnTool();
  }

  stop(): void {
    this.stopped = true;
    if (this.restartTimer) this.clock.clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
    const c = this.child;
    this.child = undefined;
    if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  }

  status(): QuorumStatus {
    return { command: [...this.command], running: !!this.child, state: this.current ?? null, lastError: this.lastError, starts: this.starts };
  }

  private set(s: QuorumState | undefined): void {
    const before = this.current;
    this.current = s;
    if (before?.quorate === s?.quorate && before?.ring === s?.ring && before?.members.join() === s?.members.join()) return;
    this.emit('change', s, before);
  }

  private spawnTool(): void {
    if (this.stopped) return;
    this.starts++;
    const parser = new QuorumParser();
    let child: ChildProcess;
    try {
      child = spawn(this.command[0]!, this.command.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (e) {
      this.onExit(`could not start ${this.command[0]}: ${(e as Error).message}`);
      return;
    }
    this.child = child;
    let pending = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (d: string) => {
      pending += d;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const s = parser.feed(pending.slice(0, nl), this.clock.now());
        pending = pending.slice(nl + 1);
        if (s && this.child === child) this.set(s);
      }
      if (pending.length > 65536) pending = ''; // not the tool's output: never grow without bound
    });
    let err = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => { err = (err + d).slice(-2000); });
    child.once('error', (e) => { if (this.child === child) { this.child = undefined; this.onExit(`${this.command[0]}: ${e.message}`); } });
    child.once('exit', (code, sig) => {
      if (this.child !== child) return;
      this.child = undefined;
      this.onExit(`${this.command.join(' ')} exited (${sig ?? `code ${code}`})${err.trim() ? `: ${err.trim().split('\n').pop()}` : ''}`);
    });
  }

  private onExit(why: string): void {
    if (why !== this.lastError) this.log.warn({ why }, 'quorum unknown: the quorum tool is not running; starting it again');
    this.lastError = why;
    this.set(undefined);
    if (this.stopped) return;
    this.restartTimer = this.clock.setTimeout(() => { this.restartTimer = undefined; this.spawnTool(); }, RESTART_MS);
  }
}
