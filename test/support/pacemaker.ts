/**
 * Pacemaker on the simulated chassis, for the integration tests: a chassis of three boards with
 * Pacemaker for a whole test file, its tools run on a board through `understudy chassis crm` (the
 * user's command), the nodes online, and where the clone's instances run (the clone itself is
 * configured by the chassis: launcher.ts's configureGuestClone).
 */
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { promisify } from 'node:util';
import { CLI_ENTRY } from '../../src/sim/chassis/layout.js';
import { Chassis } from '../../src/sim/chassis/rig.js';

const run = promisify(execFile);

export class ClusterTools {
  constructor(private readonly name: string, private readonly runDir: string) {}

  /** `understudy chassis crm <board> -- <argv>`: its output (stdout, then stderr) and exit status. */
  async crm(board: string, argv: string[], timeoutMs = 60000): Promise<{ code: number; out: string }> {
    try {
      const r = await run(process.execPath, [CLI_ENTRY, 'chassis', 'crm', board, '--name', this.name, '--run-dir', this.runDir, '--', ...argv], { timeout: timeoutMs, maxBuffer: 4 << 20 });
      return { code: 0, out: r.stdout };
    } catch (e) {
      const x = e as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof x.code === 'number' ? x.code : -1, out: `${x.stdout ?? ''}${x.stderr ?? ''}` };
    }
  }

  /** Nodes crm_mon shows online, asked on `board`. */
  async online(board: string): Promise<string[]> {
    const r = await this.crm(board, ['crm_mon', '-1', '--output-as=xml'], 20000);
    if (r.code !== 0) return [];
    return [...r.out.matchAll(/<node name="([^"]+)"[^>]*\bonline="true"/g)].map((m) => m[1]!).sort();
  }

  /**
   * Where crm_mon (asked on `board`) shows the clone's instances of `resource` active, by role,
   * and whether it lists a failed action; undefined when crm_mon does not answer.
   */
  async placement(board: string, resource = 'guest'): Promise<{ promoted: string[]; unpromoted: string[]; failures: boolean; xml: string } | undefined> {
    const r = await this.crm(board, ['crm_mon', '-1', '--output-as=xml'], 20000);
    if (r.code !== 0) return undefined;
    const nodes = (role: string) => [...r.out.matchAll(new RegExp(`<resource id="${resource}" [^>]*role="${role}"[^>]*active="true"[^>]*>\\s*<node name="([^"]+)"`, 'g'))].map((m) => m[1]!).sort();
    // Pacemaker 2.1 names the roles Promoted and Unpromoted; its XML may still say Master and Slave.
    return { promoted: nodes('(?:Promoted|Master)'), unpromoted: nodes('(?:Unpromoted|Slave)'), failures: /<failure /.test(r.out), xml: r.out };
  }

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
export function pacemakerChassisForTheFile(name: string, runDir: string, set: (c: Chassis) => void, get: () => Chassis | undefined, o: { stonith?: boolean } = {}): void {
  before(async function () {
    this.timeout(240000);
    rmSync(runDir, { recursive: true, force: true });
    const chassis = await Chassis.up({ name, runDir, boards: 3, manager: 'pacemaker', stonith: o.stonith });
    set(chassis);
    await chassis.powerController('break');
  });

  after(async function () {
    this.timeout(60000);
    await get()?.down();
  });
}
