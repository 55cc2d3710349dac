/**
 * The chassis as a test rig: `await Chassis.up({...})` goes through the same launcher as
 * `understudy chassis up`, and the methods send the same requests as the `chassis` commands. For
 * integration tests and benchmarks; a failed `up` cleans up before it throws.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import type { ChassisStatus, FailHow, LinkName, BoardView } from './chassisd.js';
import { chassisCall, chassisDown, chassisUp, DEFAULT_NAME, type DownResult, type UpOptions, type UpResult } from './launcher.js';
import { chassisLayout, parseBoardName, type BoardName, type ChassisLayout } from './layout.js';
import { readState, type ChassisState } from './state.js';

export class Chassis {
  private constructor(readonly layout: ChassisLayout, readonly started: UpResult) {}

  static async up(o: UpOptions = {}): Promise<Chassis> {
    const layout = chassisLayout(o.name ?? DEFAULT_NAME, o.runDir);
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
    const name = parseBoardName(board);
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

  cut(link: LinkName): Promise<unknown> {
    return chassisCall(this.where, 'cut', { link });
  }

  heal(link: LinkName): Promise<unknown> {
    return chassisCall(this.where, 'heal', { link });
  }

  /** What the run has recorded (pids, groups, namespaces, veth names). */
  recorded(): ChassisState | undefined {
    return readState(this.layout.stateFile);
  }

  netns(board: string): string {
    return this.layout.boards[parseBoardName(board) as BoardName].netns;
  }

  /** Starts a command inside a board's network namespace (the caller owns and ends the child). */
  spawnIn(board: string, command: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
    return spawn('ip', ['netns', 'exec', this.netns(board), command, ...args], opts);
  }

  down(o: { purge?: boolean } = {}): Promise<DownResult> {
    return chassisDown({ ...this.where, ...o });
  }
}
