/**
 * Pacemaker on the simulated chassis, for the integration tests: a chassis of three boards with
 * Pacemaker for a whole test file, its tools run on a board through `understudy chassis crm` (the
 * user's command), the nodes online, and where the clone's instances run (the clone itself is
 * configured by the chassis: launcher.ts's configureGuestClone).
 */
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CLI_ENTRY, type ChassisBoard } from '../../src/sim/chassis/layout.js';
import { Chassis } from '../../src/sim/chassis/rig.js';
import { Store } from '../../src/store/journal.js';

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
  postMortemOnFailure(runDir, ['sim-a', 'sim-b', 'sim-c'], (b) => get()?.layout.boards[b as ChassisBoard]?.storageDir ?? join(runDir, b, 'store'));
}

/**
 * For the first failing test of a file: each board's last journal entries (from its store on disk)
 * and the last lines the agent logged in its Pacemaker log, appended to the failure's message.
 * CI shows the end of the run, where mocha prints the failures; a dump in the middle is lost.
 */
/**
 * Lines of the boards' pacemaker.log that say a daemon of the cluster failed for want of resources
 * (its private /dev/shm full: libqb cannot map its ring buffers): the cluster then restarts on that
 * board and re-probes, which no test scenario means. Empty when none.
 */
export function clusterResourceFailures(runDir: string, boards: readonly string[]): string[] {
  const out: string[] = [];
  for (const b of boards) {
    const log = join(runDir, b, 'pacemaker', 'log-pacemaker', 'pacemaker.log');
    if (!existsSync(log)) continue;
    for (const l of readFileSync(log, 'utf8').split('\n')) if (/No space left on device|Cannot allocate memory/.test(l)) out.push(`${b}: ${l.slice(0, 200)}`);
  }
  return out;
}

export function postMortemOnFailure(runDir: string, boards: readonly string[], storageDirOf: (board: string) => string): void {
  let done = false;
  afterEach(function () {
    const t = this.currentTest;
    if (done || t?.state !== 'failed' || !t.err) return;
    done = true;
    const out: string[] = ['--- post-mortem (first failure of the file): last journal entries and agent lines per board (link flaps left out) ---'];
    for (const b of boards) {
      out.push(`${b}:`);
      const dir = storageDirOf(b);
      if (existsSync(join(dir, 'understudy.db'))) {
        try {
          const st = new Store(dir);
          try {
            // Link flaps (the serial link's 20 ms timeout) would crowd out what decided the roles.
            for (const e of st.events({ limit: 60 }).filter((x) => x.kind !== 'link').slice(-14)) out.push(`  ${e.at.slice(11, 23)} ${e.kind}: ${e.message.slice(0, 180)}`);
          } finally { st.close(); }
        } catch (e) { out.push(`  journal unreadable: ${(e as Error).message}`); }
      } else out.push('  no journal');
      const log = join(runDir, b, 'pacemaker', 'log-pacemaker', 'pacemaker.log');
      if (existsSync(log)) {
        const agent = readFileSync(log, 'utf8').split('\n').filter((l) => / guest\(\S+\)\[\d+\]:/.test(l) || /Result of \w+ operation for guest\d* on .*: (?!ok)/.test(l) || /No space left on device/.test(l));
        for (const l of agent.slice(-8)) out.push(`  pcmk ${l.replace(/\s+/g, ' ').slice(0, 200)}`);
      }
    }
    t.err.message += `\n${out.join('\n')}`;
  });
}
