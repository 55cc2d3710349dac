/**
 * A simulated chassis of three boards with Pacemaker (`--manager pacemaker`) for a whole test file,
 * and Pacemaker's tools on its boards as a user runs them: through `understudy chassis crm <board>
 * -- <argv>`, the CLI in a child process.
 */
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { CLI_ENTRY } from '../../src/sim/chassis/layout.js';
import { Chassis } from '../../src/sim/chassis/rig.js';

const run = promisify(execFile);

export interface CrmTools {
  /** `understudy chassis crm <board> -- <argv>`: its exit status and its output (stdout, then stderr when it failed). */
  crm(board: string, argv: string[], timeoutMs?: number): Promise<{ code: number; out: string }>;
  /** The nodes crm_mon shows online, asked on `board` (none when it cannot be asked). */
  online(board: string): Promise<string[]>;
}

export function crmTools(name: string, runDir: string): CrmTools {
  const crm: CrmTools['crm'] = async (board, argv, timeoutMs = 60000) => {
    try {
      const r = await run(process.execPath, [CLI_ENTRY, 'chassis', 'crm', board, '--name', name, '--run-dir', runDir, '--', ...argv], { timeout: timeoutMs, maxBuffer: 4 << 20 });
      return { code: 0, out: r.stdout };
    } catch (e) {
      const x = e as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof x.code === 'number' ? x.code : -1, out: `${x.stdout ?? ''}${x.stderr ?? ''}` };
    }
  };
  const online: CrmTools['online'] = async (board) => {
    const r = await crm(board, ['crm_mon', '-1', '--output-as=xml'], 20000);
    if (r.code !== 0) return [];
    return [...r.out.matchAll(/<node name="([^"]+)"[^>]*\bonline="true"/g)].map((m) => m[1]!).sort();
  };
  return { crm, online };
}

/**
 * Mocha hooks for the file: before(), a fresh run directory and `chassis up --boards 3 --manager
 * pacemaker`, then the power controller broken (`set` receives the chassis); after(), `down` of
 * whatever `get` still returns, whether the tests passed or not (the logs stay in the run directory
 * until the next run).
 *
 * Why broken: a file about the boards' cluster manager must not have the pair's own HA (its
 * heartbeats at 25 ms deadtime, on a machine busy starting three Pacemakers) reset a board under a
 * test; with the power controller broken such a fence fails instead. The operator's switch (chassis
 * power) still works, and a test that fences on purpose fixes it first.
 */
export function pacemakerChassisForTheFile(name: string, runDir: string, set: (c: Chassis) => void, get: () => Chassis | undefined): void {
  before(async function () {
    this.timeout(240000);
    rmSync(runDir, { recursive: true, force: true });
    const chassis = await Chassis.up({ name, runDir, boards: 3, manager: 'pacemaker' });
    set(chassis);
    await chassis.powerController('break');
  });

  after(async function () {
    this.timeout(60000);
    await get()?.down();
  });
}
