/**
 * Fencing: making sure the partner blade runs nothing before taking over, so two primaries can never
 * serve. One small interface; the simulated chassis' power controller (a unix socket) and ipmitool to
 * the shelf manager on a real chassis. A fence either succeeds or throws US_ERR_FENCING.
 * Two actions: power the partner off (it stays off), or reset it (a power cycle: it boots again by
 * itself, as Pacemaker's default `reboot`). A reset resolves as soon as the partner is confirmed down,
 * not once it is up again: the fence is complete then. A partner that is already off is left off.
 * Beside it, the board's power as seen from itself (BoardPower): how it reboots itself, through the
 * same power controller on a simulated board, by the profile's reboot command on a real blade.
 */
import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { connect } from 'node:net';
import { promisify } from 'node:util';
import type { BoardProfile } from '../../config/board-profile.js';
import { UsError } from '../../core/errors.js';

const run = promisify(execFile);

/** What a fence does to the partner (`fencing.action`). */
export type FenceAction = 'reset' | 'off';

/**
 * What a reset did: power-cycled the partner (it boots again); found it off (left off); or powered it
 * off but could not power it on again (`why`). In every case the partner runs nothing: it is fenced.
 */
export interface ResetOutcome {
  outcome: 'reset' | 'was-off' | 'left-off';
  why?: string;
}

export interface FencingDevice {
  readonly method: string;
  /** Powers the partner off; resolves once the device confirms. */
  powerOff(partner: string, timeoutMs?: number): Promise<void>;
  /**
   * Power-cycles the partner; resolves once the device confirms it is down ('reset': it boots again
   * without anyone's help), or that it was off already ('was-off': it is left off).
   */
  reset(partner: string, timeoutMs?: number): Promise<ResetOutcome>;
  /**
   * The partner's power as the device sees it, if the device can say (a shelf manager can): a
   * silent partner that is powered off is not cut off, it is gone. Throws if the device does not answer.
   */
  powerState?(partner: string, timeoutMs?: number): Promise<'on' | 'off'>;
}

/**
 * The simulated chassis' power controller: line protocol `OFF <board>` → `OK OFF <board>`;
 * `RESET <board>` → `OK RESET <board>` once the board's processes are gone (it boots after the reset
 * delay), or `OK OFF <board>` for a board that was off (left off).
 */
export class SimulatedPowerController implements FencingDevice {
  readonly method = 'simulated';
  constructor(readonly socketPath: string) {}

  async powerOff(partner: string, timeoutMs = 2000): Promise<void> {
    await this.request('OFF', partner, timeoutMs);
  }

  /**
   * Power-cycles a board (`RESET <board>`): a fence, or how a simulated board reboots, itself
   * included (then the answer never arrives: the caller dies with its board). The default timeout
   * covers a reset already under way on that board (the power controller does one at a time).
   */
  async reset(board: string, timeoutMs = 5000): Promise<ResetOutcome> {
    const reply = await this.request('RESET', board, timeoutMs);
    return { outcome: reply.startsWith('OK OFF') ? 'was-off' : 'reset' };
  }

  async powerState(board: string, timeoutMs = 500): Promise<'on' | 'off'> {
    const reply = await this.request('STATUS', board, timeoutMs);
    return reply.startsWith('OK OFF') ? 'off' : 'on';
  }

  private request(verb: 'OFF' | 'RESET' | 'STATUS', board: string, timeoutMs: number): Promise<string> {
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
        if (line.startsWith('OK')) resolve(line);
        else reject(new UsError('US_ERR_FENCING', `power controller refused ${verb} ${board}: ${line}`));
      });
    });
  }
}

/** What IpmitoolFencing needs: the profile's `fencing` section with method ipmitool. */
export interface IpmitoolOptions {
  /** The shelf manager's (or the partner's BMC's) address. */
  host: string;
  /** Its RMCP+ UDP port (623). */
  port?: number;
  user: string;
  /** The password, read by ipmitool itself (-f): never on a command line another user could see in ps. */
  passwordFile: string;
  /** IPMB address of the partner's controller behind the shelf manager (-t, a bridged request); absent: the BMC at host is the partner's own. */
  partnerTarget?: string;
  /** RMCP+ cipher suite (-C); 3 (RAKP-HMAC-SHA1, AES-CBC-128) unless the BMC needs another. */
  cipherSuite?: number;
}

/**
 * ipmitool (`-I lanplus`) to the shelf manager (ATCA) on the partner's FRU target, or to the
 * partner's own BMC. A reset is `chassis power status`, then `power off` and `power on` (as
 * fence_ipmilan's default onoff method: the off is confirmed before the board comes back; `power
 * cycle` would not confirm it). A board found off is left off. Every failure is US_ERR_FENCING naming
 * the partner, the BMC and what went wrong (no answer, refused credentials, an unexpected answer);
 * a call that does not finish within its timeout is killed (the process group ipmitool runs in).
 */
export class IpmitoolFencing implements FencingDevice {
  readonly method = 'ipmitool';
  constructor(private readonly o: IpmitoolOptions, private readonly binary = 'ipmitool') {}

  /** The BMC as an operator names it: host[:port] (and the bridged target). */
  get bmc(): string {
    const where = `${this.o.host}${this.o.port !== undefined && this.o.port !== 623 ? `:${this.o.port}` : ''}`;
    return this.o.partnerTarget ? `${this.o.partnerTarget} at ${where}` : `BMC ${where}`;
  }

  /** ipmitool's arguments for one chassis power command (exported through the class for tests). */
  args(verb: 'off' | 'on' | 'status'): string[] {
    return ['-v', '-I', 'lanplus', '-H', this.o.host, '-p', String(this.o.port ?? 623), '-U', this.o.user, '-f', this.o.passwordFile,
      '-C', String(this.o.cipherSuite ?? 3), ...(this.o.partnerTarget ? ['-t', this.o.partnerTarget] : []), 'chassis', 'power', verb];
  }

  private async chassisPower(partner: string, verb: 'off' | 'on' | 'status', timeoutMs: number): Promise<string> {
    const what = `ipmitool power ${verb} of ${partner} (${this.bmc})`;
    try {
      accessSync(this.o.passwordFile, constants.R_OK);
    } catch (e) {
      throw new UsError('US_ERR_FENCING', `${what} failed: fencing.passwordFile ${this.o.passwordFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; write the BMC user's password into it (one line, owner root, mode 0600: printf '%s\n' PASSWORD > ${this.o.passwordFile}; chmod 600 ${this.o.passwordFile})`);
    }
    try {
      const { stdout } = await run(this.binary, this.args(verb), { timeout: timeoutMs, killSignal: 'SIGKILL' });
      return stdout;
    } catch (e) {
      throw new UsError('US_ERR_FENCING', `${what} failed: ${ipmitoolFailure(e as ExecFailure, timeoutMs)}`);
    }
  }

  async powerOff(partner: string, timeoutMs = 5000): Promise<void> {
    const out = await this.chassisPower(partner, 'off', timeoutMs);
    if (!/Down\/Off/i.test(out)) throw new UsError('US_ERR_FENCING', `ipmitool power off of ${partner} (${this.bmc}): not confirmed, the answer was "${firstLine(out)}"`);
  }

  async powerState(partner: string, timeoutMs = 2000): Promise<'on' | 'off'> {
    const out = await this.chassisPower(partner, 'status', timeoutMs);
    if (/\bis off\b/i.test(out)) return 'off';
    if (/\bis on\b/i.test(out)) return 'on';
    throw new UsError('US_ERR_FENCING', `ipmitool power status of ${partner} (${this.bmc}): unexpected answer "${firstLine(out)}"`);
  }

  async reset(partner: string, timeoutMs = 5000): Promise<ResetOutcome> {
    if ((await this.powerState(partner, timeoutMs)) === 'off') return { outcome: 'was-off' };
    await this.powerOff(partner, timeoutMs);
    try {
      await this.chassisPower(partner, 'on', timeoutMs);
    } catch (e) {
      return { outcome: 'left-off', why: (e as Error).message }; // fenced all the same; only its return failed
    }
    return { outcome: 'reset' };
  }
}

type ExecFailure = Error & { code?: string | number; killed?: boolean; signal?: string; stderr?: string; stdout?: string };

const firstLine = (s: string) => s.trim().split('\n')[0]!.slice(0, 120);

/**
 * What went wrong with one ipmitool call, in an operator's words. ipmitool -v names the RAKP step
 * that failed: message 2's HMAC does not match (the password), or the BMC refused the user name;
 * no answer to Get Channel Authentication Capabilities means nothing answers at that address.
 */
export function ipmitoolFailure(e: ExecFailure, timeoutMs: number): string {
  if (e.code === 'ENOENT') return 'ipmitool is not installed (Debian package ipmitool)';
  const err = `${e.stderr ?? ''}`;
  if (e.killed || e.signal === 'SIGKILL') return `the BMC did not answer within ${timeoutMs} ms (ipmitool killed)`;
  if (/RAKP 2 HMAC is invalid|invalid integrity check|unauthorized name|RAKP 2 message indicates an error/i.test(err)) {
    return `the BMC refused the credentials (${/unauthorized name/i.test(err) ? 'unknown user' : 'wrong password'}: fencing.user / fencing.passwordFile)`;
  }
  if (/Get Auth Capabilities error|Get Channel Authentication Capabilities|No response|Unable to establish/i.test(err) && !/RAKP/i.test(err)) {
    return 'no answer from the BMC (unreachable, wrong fencing.host or fencing.port, or not an IPMI 2.0 BMC)';
  }
  const lines = err.split('\n').map((l) => l.trim()).filter((l) => l && !/^Loading IANA|^Running Get|^>/.test(l));
  return lines.slice(-2).join('; ').slice(0, 200) || `exit ${String(e.code)}`;
}

/** No fencing configured: every fence fails, so the board never promotes over a silent partner. */
export class NoFencing implements FencingDevice {
  readonly method = 'none';
  async powerOff(partner: string): Promise<void> {
    throw new UsError('US_ERR_FENCING', `no fencing method configured: refusing to take over from ${partner}`);
  }

  async reset(partner: string): Promise<ResetOutcome> {
    return this.powerOff(partner) as never;
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

  async rebootSelf(): Promise<void> {
    await this.controller.reset(this.board, 10000);
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
