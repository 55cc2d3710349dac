/**
 * Fencing: powering the partner blade off before taking over, so two primaries can never serve.
 * One small interface; the simulated chassis' power controller (a unix socket) and ipmitool to the
 * shelf manager on a real chassis. A fence either succeeds or throws US_ERR_FENCING.
 * Beside it, the board's power as seen from itself (BoardPower): how it reboots itself, through the
 * same power controller on a simulated board, by the profile's reboot command on a real blade.
 */
import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import { promisify } from 'node:util';
import type { BoardProfile } from '../../config/board-profile.js';
import { UsError } from '../../core/errors.js';

const run = promisify(execFile);

export interface FencingDevice {
  readonly method: string;
  /** Powers the partner off; resolves once the power controller confirms. */
  powerOff(partner: string, timeoutMs?: number): Promise<void>;
}

/** The simulated chassis' power controller: line protocol `OFF <board>` → `OK OFF <board>`. */
export class SimulatedPowerController implements FencingDevice {
  readonly method = 'simulated';
  constructor(readonly socketPath: string) {}

  powerOff(partner: string, timeoutMs = 2000): Promise<void> {
    return this.request('OFF', partner, timeoutMs);
  }

  /**
   * Power-cycles a board (`RESET <board>`): how a simulated board reboots, itself included (then the
   * answer never arrives: the caller dies with its board).
   */
  reset(board: string, timeoutMs = 10000): Promise<void> {
    return this.request('RESET', board, timeoutMs);
  }

  private request(verb: 'OFF' | 'RESET', board: string, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const s = connect(this.socketPath);
      let buf = '';
      const fail = (why: string) => { clearTimeout(timer); s.destroy(); reject(new UsError('US_ERR_FENCING', `power controller ${this.socketPath}: ${why}`)); };
      const timer = setTimeout(() => fail(`no answer within ${timeoutMs} ms`), timeoutMs);
      s.setEncoding('utf8');
      s.on('connect', () => s.write(`${verb} ${board}\n`));
      s.on('error', (e) => fail(e.message));
      s.on('data', (d: string) => {
        buf += d;
        const nl = buf.indexOf('\n');
        if (nl < 0) return;
        const line = buf.slice(0, nl).trim();
        clearTimeout(timer);
        s.destroy();
        if (line.startsWith('OK')) resolve();
        else reject(new UsError('US_ERR_FENCING', `power controller refused ${verb} ${board}: ${line}`));
      });
    });
  }
}

/** ipmitool to the shelf manager (ATCA): `chassis power off` on the partner's FRU target. */
export class IpmitoolFencing implements FencingDevice {
  readonly method = 'ipmitool';
  constructor(private readonly o: { host: string; user: string; passwordFile: string; partnerTarget: string }) {}

  async powerOff(partner: string, timeoutMs = 5000): Promise<void> {
    try {
      await run('ipmitool', ['-I', 'lanplus', '-H', this.o.host, '-U', this.o.user, '-f', this.o.passwordFile,
        '-t', this.o.partnerTarget, 'chassis', 'power', 'off'], { timeout: timeoutMs });
    } catch (e) {
      throw new UsError('US_ERR_FENCING', `ipmitool power off of ${partner} (${this.o.partnerTarget} at ${this.o.host}) failed: ${(e as Error).message.trim()}`);
    }
  }
}

/** No fencing configured: every fence fails, so the board never promotes over a silent partner. */
export class NoFencing implements FencingDevice {
  readonly method = 'none';
  async powerOff(partner: string): Promise<void> {
    throw new UsError('US_ERR_FENCING', `no fencing method configured: refusing to take over from ${partner}`);
  }
}

export function fencingFor(board: BoardProfile): FencingDevice {
  const f = board.fencing;
  if (!f || f.method === 'none') return new NoFencing();
  if (f.method === 'simulated') return new SimulatedPowerController(f.controlSocket);
  return new IpmitoolFencing(f);
}

/** How a board reboots itself (a rolling upgrade boots it into its new slot). Chosen once from the profile by boardPowerFor(). */
export interface BoardPower {
  readonly method: string;
  /**
   * Reboots this board. Resolves once the reboot is under way; when the board goes down at once (a
   * simulated board power-cycled) it may never resolve: the caller dies with its board.
   */
  rebootSelf(): Promise<void>;
}

/** A simulated board: the chassis' power controller power-cycles it (`RESET <board>`). */
export class PowerControllerReboot implements BoardPower {
  readonly method = 'simulated';
  constructor(private readonly controller: SimulatedPowerController, private readonly board: string) {}

  rebootSelf(): Promise<void> {
    return this.controller.reset(this.board);
  }
}

/** A real blade: runs the reboot command (argv) and waits at most 30 s for it to return. */
export class CommandReboot implements BoardPower {
  readonly method = 'command';
  constructor(private readonly command: string[]) {}

  async rebootSelf(): Promise<void> {
    try {
      await run(this.command[0]!, this.command.slice(1), { timeout: 30000 });
    } catch (e) {
      throw new UsError('US_ERR_INTERNAL', `reboot command ${this.command.join(' ')} failed: ${(e as Error).message}`);
    }
  }
}

/**
 * A simulated board reboots through the chassis' power controller (its fencing must be the
 * simulated one, or US_ERR_CONFIG); a real blade runs `rebootCommand` (the profile's
 * upgrade.rebootCommand with its default, see upgrade/board-setup.ts).
 */
export function boardPowerFor(board: BoardProfile, rebootCommand: string[]): BoardPower {
  if (board.kind !== 'simulated') return new CommandReboot(rebootCommand);
  const f = board.fencing;
  if (f?.method !== 'simulated') throw new UsError('US_ERR_CONFIG', `board ${board.name} is simulated but has no simulated power controller (fencing.method) to reboot it`);
  return new PowerControllerReboot(new SimulatedPowerController(f.controlSocket), board.name);
}
