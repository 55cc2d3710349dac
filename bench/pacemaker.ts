/**
 * bench/pacemaker (issue 18): what a lost blade costs the service on three boards under Pacemaker,
 * Understudy against Pacemaker alone, in one run, the same fault, load and guest.
 *
 * - **Understudy + Pacemaker (N+1)**: `chassis up --boards 3 --manager pacemaker --guest primary`,
 *   the promotable clone of two instances; the primary's board loses power: its backup fences it
 *   and takes over; Pacemaker promotes it and starts the second instance on the idle board, which
 *   the survivor adopts and clones to ("protected again").
 * - **Pacemaker alone**: the same chassis with `--guest none`, and the guest as a plain resource:
 *   `ocf:heartbeat:anything` running the board's controller standalone with the guest on the
 *   service address (a VirtualDomain-style resource: the VM started on one node, started on
 *   another when that node is lost). No copy: its state is lost at each fault and it is never
 *   "protected". The pair's own controllers run there without a guest; the power controller is
 *   broken so that they fence nobody.
 *
 * Each round: peers-lib's faultRound (numbered requests with retries, every acknowledged
 * registration checked on the survivor; the Understudy arm fails the bench on any loss or ERR; the
 * other may only answer ERR UNKNOWN/NOCALL, its lost state). The arms alternate round by round (U, P, U, P…), each round on a fresh chassis of its own, one
 * chassis up at a time (both up at once starved a 2-core machine's controllers: see main()).
 *
 * Usage: node dist/bench/pacemaker.js [--rounds N]   (root; cleans up on error and ^C)
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { PACKAGE_ROOT, SERVICE_INTERFACE, SERVICE_PORT, SERVICE_PREFIX, SERVICE_VIP, type ChassisBoard } from '../src/sim/chassis/layout.js';
import { onCluster } from '../src/sim/chassis/launcher.js';
import { perNodeAttributes } from '../src/sim/chassis/pacemaker.js';
import { Chassis } from '../src/sim/chassis/rig.js';
import { waitProtectedAny } from '../src/sim/pair.js';
import { cleanUpOnSignal, commitOf, machine, printTable, summarize } from './lib.js';
import { FAULT_LOAD, ask, faultRound, teardowns, type FaultSample } from './peers-lib.js';

const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '5' }, arms: { type: 'string', default: 'understudy,plain' } } });
const arms = args.arms!.split(',').map((a) => a.trim());
for (const a of arms) if (!['understudy', 'plain'].includes(a)) { console.error(`--arms: unknown arm "${a}" (understudy, plain)`); process.exit(2); }
const rounds = Number(args.rounds);
if (!Number.isInteger(rounds) || rounds < 1) { console.error(`--rounds: an integer ≥ 1, got "${args.rounds}"`); process.exit(2); }
const say = (s: string) => process.stderr.write(`${s}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const GUEST = join(PACKAGE_ROOT, 'guests', 'dx-legacy.json');
/** Pacemaker alone restarts the guest on another board: corosync's loss detection, a transition, a boot under TCG. */
const PLAIN_LOAD_MS = 60000;
/** A request unanswered this long fails the round: Pacemaker alone took 20 s once, over 40 s another time. */
const PLAIN_GIVE_UP_MS = 180000;
/**
 * Both arms: the same load, as long, the same mix (a registration every 10th step): 60 s at 150
 * requests/s of the default mix (3 registrations in 4) would fill the guest's 4096 subscribers
 * and measure ERR FULL.
 */
const REG_EVERY = 10;
/**
 * The silence that a fault causes begins within this long of the power-off request: a board with a
 * cluster in it answers for up to ~100 ms while its processes are killed (the first run took an
 * 84 ms pause in that window for Pacemaker alone's outage). The same bound for both arms.
 */
const SILENCE_WITHIN_MS = 1000;

async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    await sleep(500);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms`);
}


/** An arm's chassis: brought up with its teardown registered (run on error and ^C), taken down. */
abstract class Arm {
  chassis!: Chassis;
  private teardown?: () => Promise<void>;

  abstract up(): Promise<void>;
  abstract round(i: number): Promise<FaultSample & { board: string }>;

  protected async upChassis(o: Parameters<typeof Chassis.up>[0]): Promise<void> {
    this.chassis = await Chassis.up(o);
    const teardown = async () => { await this.chassis.down({ purge: true }); };
    this.teardown = teardown;
    teardowns.add(teardown);
  }

  async down(): Promise<void> {
    const teardown = this.teardown;
    if (!teardown) return;
    this.teardown = undefined;
    teardowns.delete(teardown);
    await teardown();
  }
}

class UnderstudyArm extends Arm {
  async up(): Promise<void> {
    await this.upChassis({ name: `pmu${process.pid % 100}`, runDir: `/tmp/us-bench-pmu-${process.pid}`, boards: 3, manager: 'pacemaker', guest: 'primary' });
  }

  async round(i: number): Promise<FaultSample & { board: string }> {
    const L = this.chassis.layout;
    const { primary, backup } = await waitProtectedAny(L, 300000);
    const s = await faultRound({
      serviceNetns: L.serviceNetns, kind: 'power', tag: `pmU${i}x`, statelessOk: false, silenceStartsWithinMs: SILENCE_WITHIN_MS,
      durationMs: PLAIN_LOAD_MS, giveUpMs: PLAIN_GIVE_UP_MS, regEvery: REG_EVERY,
      inject: async () => { const t = Date.now(); await this.chassis.fail(primary, 'power'); return t; },
      // Protected again: the survivor primary, with a new backup that is not the dead board.
      recover: async () => { await until('protected again on a spare', async () => { const p = await waitProtectedAny(L, 5000); return p.primary === backup && p.backup !== primary ? p : undefined; }, 300000); },
    });
    return { ...s, board: primary };
  }
}

class PlainArm extends Arm {
  /** Each board's standalone profile for the plain resource: its own store, the service address. */
  private profileOf(b: ChassisBoard): string {
    const L = this.chassis.layout;
    const p = JSON.parse(readFileSync(L.boards[b].profile, 'utf8')) as Record<string, any>;
    for (const k of ['partner', 'ha', 'fencing', 'watchdog', 'console', 'metrics']) delete p[k];
    p.storageDir = join(L.boards[b].dir, 'plain-store');
    p.service = { address: SERVICE_VIP, port: SERVICE_PORT, interface: SERVICE_INTERFACE, prefixLength: SERVICE_PREFIX };
    const file = join(L.boards[b].dir, 'plain.json');
    writeFileSync(file, `${JSON.stringify(p, null, 2)}\n`, { mode: 0o600 });
    return file;
  }

  async up(): Promise<void> {
    await this.upChassis({ name: `pmp${process.pid % 100}`, runDir: `/tmp/us-bench-pmp-${process.pid}`, boards: 3, manager: 'pacemaker', guest: 'none' });
    await this.chassis.powerController('break'); // the guest-less pair's controllers fence nobody
    const L = this.chassis.layout;
    const perNode = perNodeAttributes(L, 'p', (b) => [['o', 'cmdline_options', `--board ${this.profileOf(b)} --guest ${GUEST}`]]);
    const xml = `<primitive id="guest-plain" class="ocf" provider="heartbeat" type="anything">${perNode}`
      + `<instance_attributes id="p-common"><nvpair id="p-bin" name="binfile" value="${join(PACKAGE_ROOT, 'bin', 'understudyd')}"/></instance_attributes>`
      + '<operations><op id="p-mon" name="monitor" interval="2s" timeout="20s"/><op id="p-start" name="start" interval="0s" timeout="120s"/><op id="p-stop" name="stop" interval="0s" timeout="60s"/></operations></primitive>';
    for (const argv of [['crm_attribute', '--type', 'crm_config', '--name', 'stonith-enabled', '--update', 'false'], ['cibadmin', '--create', '--scope', 'resources', '--xml-text', xml]]) {
      await onCluster(L, argv);
    }
    await this.serving();
  }

  /** The board whose plain controller serves the guest (it answers STATS on the service address). */
  private async serving(): Promise<ChassisBoard> {
    const L = this.chassis.layout;
    return until('the plain resource serves', async () => {
      const [reply] = await ask(L.serviceNetns, ['STATS'], 3);
      if (!/ OK STATS /.test(reply ?? '')) return undefined;
      const r = await onCluster(L, ['crm_resource', '--resource', 'guest-plain', '--locate']);
      return L.boardNames.find((b) => new RegExp(`running on: ${b}\\b`).test(r?.stdout ?? ''));
    }, 240000);
  }

  async round(i: number): Promise<FaultSample & { board: string }> {
    const L = this.chassis.layout;
    const board = await this.serving();
    const s = await faultRound({
      serviceNetns: L.serviceNetns, kind: 'power', tag: `pmP${i}x`, statelessOk: true, durationMs: PLAIN_LOAD_MS, silenceStartsWithinMs: SILENCE_WITHIN_MS,
      // Pacemaker alone restarts the one instance elsewhere: 20 s once, over 40 s another time (06:33).
      giveUpMs: PLAIN_GIVE_UP_MS, regEvery: REG_EVERY,
      inject: async () => { const t = Date.now(); await this.chassis.fail(board, 'power'); return t; },
      recover: async () => undefined, // no copy: never protected
      survivorTotal: async () => 0,
    });
    return { ...s, board, protectedAgain: NaN };
  }
}


async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces)');
  const started = new Date().toISOString();
  const u = new UnderstudyArm();
  const p = new PlainArm();
  // One chassis at a time, the arms alternated round by round, each round on a chassis of its own
  // (up, the fault, down). Both chassis up together (6 boards, 6 corosync + pacemaker, two guests'
  // QEMU) starved the controllers of this 2-core machine: the serving board's main loop went silent
  // for over 3 s, its watchdog reset it, and the service was lost with its state (2026-12-06 06:43).
  // A real shelf gives each blade its cores.
  const U: Array<FaultSample & { board: string }> = [];
  const P: Array<FaultSample & { board: string }> = [];
  /** One round of one arm: its chassis up, the fault, its chassis down; said as it ends. */
  async function runRound(arm: Arm, title: string, i: number, xs: Array<FaultSample & { board: string }>, line: (x: FaultSample & { board: string }) => string): Promise<void> {
    say(`${title}, round ${i}: bringing up the chassis (3 boards, corosync + pacemaker)…`);
    await arm.up();
    xs.push(await arm.round(i));
    await arm.down();
    say(line(xs.at(-1)!));
  }
  for (let i = 1; i <= rounds; i++) {
    if (arms.includes('understudy')) await runRound(u, 'Understudy + Pacemaker', i, U, (a) =>
      `U${i}: ${a.board} powered off: first good reply ${a.firstGoodReply.toFixed(0)} ms, protected again ${(a.protectedAgain / 1000).toFixed(1)} s, ${a.lostRegs} lost`);
    if (arms.includes('plain')) await runRound(p, 'Pacemaker alone', i, P, (b) =>
      `P${i}: ${b.board} powered off: first good reply ${b.firstGoodReply.toFixed(0)} ms, ${b.lostRegs}/${b.ackedRegs} acknowledged registrations lost`);
  }
  for (const s of P) if (s.withinResolution) throw new Error('Pacemaker alone answered within the load\'s resolution after a power loss: the fault did not hit the serving board; no figure from this run');
  const row = (name: string, xs: Array<FaultSample>, protectedAgain: boolean) => {
    const f = summarize(xs.map((x) => x.firstGoodReply));
    const pa = summarize(xs.map((x) => x.protectedAgain));
    return [name, xs.length, Math.round(f.p50), Math.round(f.p99), Math.round(f.max),
      protectedAgain ? `${(pa.p50 / 1000).toFixed(1)}` : 'never (no copy)', protectedAgain ? `${(pa.max / 1000).toFixed(1)}` : '—',
      `${xs.reduce((n, x) => n + x.lostRegs, 0)}/${xs.reduce((n, x) => n + x.ackedRegs, 0)}`, xs.reduce((n, x) => n + x.lostStateReplies, 0)];
  };
  const uf = summarize(U.map((x) => x.firstGoodReply)).p50;
  const pf = summarize(P.map((x) => x.firstGoodReply)).p50;
  console.log(`\nbench/pacemaker — ${started} — ${commitOf(['src', 'bench', 'board'])}\n${machine()}`);
  console.log(`${rounds} rounds per arm, alternated, each on a fresh chassis (one at a time); fault: the serving board loses power under load (${FAULT_LABEL})`);
  printTable('The serving blade lost on three boards under Pacemaker', [
    ['arm', 'rounds', 'fault → first good reply p50 ms', 'p99 ms', 'max ms', 'protected again on a spare p50 s', 'max s', 'acknowledged registrations lost', 'ERR (lost state)'],
    ...(U.length ? [row('Understudy + Pacemaker (N+1)', U, true)] : []),
    ...(P.length ? [row('Pacemaker alone (plain resource)', P, false)] : []),
  ]);
  if (U.length && P.length) console.log(`\nfirst good reply, Pacemaker alone / Understudy (p50): ${(pf / Math.max(uf, 1)).toFixed(0)}×`);
  console.log(`boards that lost power: Understudy ${U.map((x) => x.board).join(' ')}; Pacemaker alone ${P.map((x) => x.board).join(' ')}`);
}

const FAULT_LABEL = `${FAULT_LOAD.rate} req/s, retry ${FAULT_LOAD.retryMs} ms, a registration every ${REG_EVERY}th step, the fault ${FAULT_LOAD.faultAfterMs / 1000} s in; the load runs ${PLAIN_LOAD_MS / 1000} s in both arms`;

cleanUpOnSignal(() => Promise.allSettled([...teardowns].map((t) => t())));

try {
  await main();
} catch (e) {
  console.error(`pacemaker: ${(e as Error).stack ?? (e as Error).message}`);
  process.exitCode = 1;
} finally {
  // US_BENCH_KEEP=1: a failed run leaves its chassis up for a post-mortem (`understudy chassis down --name …`).
  if (process.exitCode && process.env.US_BENCH_KEEP === '1') console.error('US_BENCH_KEEP=1: the chassis stay up (chassis down --name pmu…/pmp… --run-dir /tmp/us-bench-…)');
  else await Promise.allSettled([...teardowns].map((t) => t()));
}
