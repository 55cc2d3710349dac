/**
 * The chassis as a test rig: `await Chassis.up({...})` goes through the same launcher as
 * `understudy chassis up`, and the methods send the same requests as the `chassis` commands. For
 * integration tests and benchmarks; a failed `up` cleans up before it throws. coldStart() restarts
 * both boards with edited profiles.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import type { ChassisStatus, FailHow, LinkName, BoardView } from './chassisd.js';
import { chassisCall, chassisDown, chassisUp, DEFAULT_NAME, type DownResult, type UpOptions, type UpResult } from './launcher.js';
import { BOARD_NAMES, chassisLayout, parseBoardName, type BoardName, type ChassisLayout } from './layout.js';
import { sleep } from './procs.js';
import { readState, type ChassisState } from './state.js';

export class Chassis {
  private constructor(readonly layout: ChassisLayout, readonly started: UpResult) {}

  static async up(o: UpOptions = {}): Promise<Chassis> {
    const layout = chassisLayout(o.name ?? DEFAULT_NAME, o.runDir, o.boards);
    try {
      return new Chassis(layout, await chassisUp(o));
    } catch (e) {
      await chassisDown({ name: layout.name, runDir: layout.runDir }).catch(() => undefined);
      throw e;
    }
  }

  private get where(): { name: string; runDir: string } {
    return { name: this.layout.name, runDir: this.layout.runDir };
  }

  status(): Promise<ChassisStatus> {
    return chassisCall(this.where, 'status') as Promise<ChassisStatus>;
  }

  async board(board: string): Promise<BoardView> {
    const name = parseBoardName(board, this.layout.boardNames);
    return (await this.status()).boards.find((b) => b.board === name)!;
  }

  fail(board: string, how: FailHow): Promise<unknown> {
    return chassisCall(this.where, 'fail', { board, how });
  }

  power(board: string, state: 'on' | 'off'): Promise<unknown> {
    return chassisCall(this.where, 'power', { board, state });
  }

  powerController(action: 'break' | 'fix'): Promise<unknown> {
    return chassisCall(this.where, 'power-controller', { action });
  }

  /** ethernet: `board`'s plink down (default sim-a), off the backplane; serial: the relay drops bytes. */
  cut(link: LinkName, board?: string): Promise<unknown> {
    return chassisCall(this.where, 'cut', { link, ...(board ? { board } : {}) });
  }

  heal(link: LinkName): Promise<unknown> {
    return chassisCall(this.where, 'heal', { link });
  }

  /**
   * A cold start of both boards with their generated profiles edited, for a test or a benchmark that
   * needs another configuration than the templates': both powered off (the power controller broken
   * meanwhile, so neither fences the other on the way down), `edit` on each board's profile.json,
   * `before` (cut a link, say), both powered on. Resolves once both controllers answer.
   */
  async coldStart(edit: (board: BoardName, profile: Record<string, any>) => void, before?: () => Promise<unknown>, timeoutMs = 30000): Promise<void> {
    await this.powerController('break');
    await Promise.all(BOARD_NAMES.map((b) => this.power(b, 'off')));
    await this.powerController('fix');
    for (const b of BOARD_NAMES) {
      const file = this.layout.boards[b].profile;
      const profile = JSON.parse(readFileSync(file, 'utf8')) as Record<string, any>;
      edit(b, profile);
      writeFileSync(file, `${JSON.stringify(profile, null, 2)}\n`, { mode: 0o600 });
    }
    await before?.();
    await Promise.all(BOARD_NAMES.map((b) => this.power(b, 'on')));
    const end = Date.now() + timeoutMs;
    while (!(await this.status()).boards.every((b) => b.answers)) {
      if (Date.now() > end) throw new Error(`cold start: both controllers did not answer within ${timeoutMs} ms`);
      await sleep(100);
    }
  }

  /** What the run has recorded (pids, groups, namespaces, veth names). */
  recorded(): ChassisState | undefined {
    return readState(this.layout.stateFile);
  }

  netns(board: string): string {
    return this.layout.boards[parseBoardName(board, this.layout.boardNames)].netns;
  }

  /** Starts a command inside a board's network namespace (the caller owns and ends the child). */
  spawnIn(board: string, command: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.netns(board), command, ...args], opts);
  }

  down(o: { purge?: boolean } = {}): Promise<DownResult> {
    return chassisDown({ ...this.where, ...o });
  }
}
