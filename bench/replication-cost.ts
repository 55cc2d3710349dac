/**
 * bench/replication-cost: what replication costs, with ONE request mix in every phase, in one run
 * with real QEMU and real controllers.
 *  - The machine ceiling first: two standalone controllers (no partner), each with its own guest
 *    pinned like a pair's guests (both on the board profile's guest core), each with its own AUTH
 *    service; S = one guest loaded alone, D = both loaded at the same time, alternated (S, D, S, D).
 *    Ceiling = each guest's throughput in D over the one guest's in S: the most a replicated pair,
 *    whose two guests both process every input on the same core, could reach here.
 *  - Then the simulated chassis: R = the pair protected (backup in sync, replies held for its ACK),
 *    U = the backup board powered off (the primary unprotected), alternated R, U, R, U…; in each:
 *    closed loop at 1 and at 16 outstanding, then an open-loop sweep of offered rates.
 * Every load verifies what it was acknowledged. Any ERR reply (ERR FULL above all), anything lost,
 * or a guest past half its subscriber table: no table, exit code 1.
 *  - How the backup's copy shares the machine with the primary's (--arms R,I,Q,U, the default), set
 *    by this script with chrt before each phase whatever the board's cores.followerYield: R = every
 *    thread of the backup's QEMU at SCHED_OTHER (equal shares: the simulated chassis as it runs), I =
 *    its vCPU thread alone at SCHED_IDLE (what cores.followerYield does), Q = every thread of it at SCHED_IDLE (its I/O
 *    thread, on the housekeeping core with the controllers, too). The replicated arms' order rotates
 *    from round to round; U ends each round. On real blades each copy has its own cores.
 *  - The ceiling is also measured at 1 outstanding: what two independent guests on the shared core
 *    add to a reply's latency, with no replication in it.
 * Usage: node dist/bench/replication-cost.js [--seconds S] [--rounds N] [--rates a,b,c] [--mix reg=1,get=59,call=40] [--arms R,I,Q,U]
 */
import { spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { callControl } from '../src/mgmt/ipc.js';
import { PACKAGE_ROOT } from '../src/cli/locate.js';
import { startDaemonInBackground } from '../src/cli/guest-commands.js';
import { Chassis } from '../src/sim/chassis/rig.js';
import { BOARD_NAMES, CLI_ENTRY, partnerOf, type BoardName } from '../src/sim/chassis/layout.js';
import { Hlr } from '../src/sim/hlr.js';
import { mixCycle, parseMix, type LoadResult } from '../src/sim/load.js';
import { snapshotDelta, type HistogramSnapshot } from '../src/core/histogram.js';
import { startLoad, waitProtected, waitUnprotected } from '../src/sim/pair.js';
import { ARM_LABELS, REPLICATED_ARMS, costReport, cpuByBoard, cpuDelta, qemuPidsUnder, GUEST_SUBSCRIBERS, SUBSCRIBER_BUDGET, type Arm, type PhaseRun } from './cost-lib.js';
import { machine, table } from './lib.js';
import { listThreads, readThreadAffinity, setThreadIdle } from '../src/hw/affinity.js';

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '2' },
    rates: { type: 'string', default: '250,500,1000' },
    mix: { type: 'string', default: 'reg=1,get=59,call=40' },
    arms: { type: 'string', default: 'R,I,Q,U' },
  },
});
const SECONDS = Number(args.seconds);
const ROUNDS = Number(args.rounds);
const RATES = args.rates!.split(',').filter(Boolean).map(Number);
const MIX = args.mix!;
const mix = parseMix(MIX);
const ARMS = args.arms!.split(',').filter(Boolean) as Arm[];
if (!ARMS.includes('R') || !ARMS.includes('U') || ARMS.some((a) => ![...REPLICATED_ARMS, 'U'].includes(a)) || new Set(ARMS).size !== ARMS.length) throw new Error(`--arms: R and U, and I and Q if wanted, each once, expected (got ${args.arms})`);
/** The replicated arms of a round, rotated by one each round (round 1 as given), then U. */
const armsOf = (round: number): Arm[] => {
  const rep = ARMS.filter((a) => a !== 'U');
  const k = (round - 1) % rep.length;
  return [...rep.slice(k), ...rep.slice(0, k), 'U'];
};
if (!(SECONDS > 0) || !(ROUNDS >= 2) || RATES.some((r) => !(r > 0))) throw new Error('--seconds > 0, --rounds ≥ 2 and --rates > 0 expected');
/** Outstanding requests at most in the open-loop sweep (it is paced by the rate, the window only bounds it). */
const OPEN_WINDOW = 64;
/** One pool of subscribers for GETs and calls, shared by every run on one guest: registered once. */
const POOL = { tag: 'P', count: 2 * OPEN_WINDOW + 2 };
const SHAPES: Array<{ shape: string; window: number; rate: number }> = [
  { shape: 'closed-1', window: 1, rate: 0 },
  { shape: 'closed-16', window: 16, rate: 0 },
  ...RATES.map((rate) => ({ shape: `open-${rate}`, window: OPEN_WINDOW, rate })),
];
const say = (s: string) => process.stderr.write(`${s}\n`);
const subscribersIn = (r: LoadResult) => Number(/subs=(\d+)/.exec(r.verify?.stats ?? '')?.[1] ?? NaN);

/** `understudy load` against a standalone board's service address, on loopback. */
function loadOn(target: string, o: { tag: string; window: number; rate: number }): Promise<LoadResult> {
  const child = spawn(process.execPath, [CLI_ENTRY, 'load', '--target', target, '--bind', '127.0.0.1', '--rate', String(o.rate), '--window', String(o.window),
    '--duration', String(SECONDS * 1000), '--tag', o.tag, '--retry', '200', '--mix', MIX, '--pool', `${POOL.tag}:${POOL.count}`, '--verify'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  return new Promise((resolve, reject) => {
    let final: LoadResult | undefined;
    createInterface({ input: child.stdout }).on('line', (line) => {
      try { final = (JSON.parse(line) as { result?: LoadResult }).result ?? final; } catch { /* not ours */ }
    });
    child.on('exit', (code) => (final ? resolve(final) : reject(new Error(`load on ${target} exited (${code}): ${stderr.trim()}`))));
  });
}

/** Two standalone boards (no partner) made from the simulated boards' profiles, each with its own AUTH service. */
async function standaloneBoards(dir: string): Promise<{ targets: string[]; pids: number[]; close: () => Promise<void> }> {
  const hlrs: Hlr[] = [];
  const pids: number[] = [];
  const targets: string[] = [];
  const close = async () => {
    for (const pid of pids) {
      try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ }
      for (let i = 0; i < 200; i++) { try { process.kill(pid, 0); } catch { break; } await new Promise((r) => setTimeout(r, 50)); }
    }
    for (const h of hlrs) h.close();
  };
  try {
    for (const [k, name] of BOARD_NAMES.entries()) {
      const b = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board', `${name}.json`), 'utf8'));
      b.name = `${name}-alone`;
      b.storageDir = join(dir, name);
      b.service = { address: `127.0.250.${k + 1}`, port: 5000 };
      b.externalServices = { auth: { address: `127.0.250.${k + 101}`, port: 7000 } };
      for (const key of ['ha', 'partner', 'watchdog', 'fencing', 'console', 'metrics']) delete b[key];
      const boardFile = join(dir, `${name}.json`);
      writeFileSync(boardFile, JSON.stringify(b));
      const hlr = new Hlr({ ...b.externalServices.auth });
      await hlr.start();
      hlrs.push(hlr);
      pids.push(await startDaemonInBackground(boardFile, join(PACKAGE_ROOT, 'guests', 'dx-legacy.json'), 180000));
      targets.push(`${b.service.address}:${b.service.port}`);
    }
  } catch (e) {
    await close();
    throw e;
  }
  return { targets, pids, close };
}

async function measureCeiling(): Promise<{ runs: PhaseRun[]; cpu: Array<{ phase: string; seconds: number; cpu: Record<string, Record<string, number>> }> }> {
  const dir = mkdtempSync(join(tmpdir(), 'us-bench-cost-'));
  chmodSync(dir, 0o711); // searchable by the boards' QEMU user, on its way to <storageDir>/qemu
  const runs: PhaseRun[] = [];
  const cpu: Array<{ phase: string; seconds: number; cpu: Record<string, Record<string, number>> }> = [];
  const boards = await standaloneBoards(dir);
  try {
    const roots = { 'alone-a': boards.pids[0], 'alone-b': boards.pids[1] };
    for (let round = 1; round <= ROUNDS; round++) {
      for (const arm of ['S', 'D'] as const) {
        const before = cpuByBoard(roots);
        const t0 = Date.now();
        for (const window of [1, 16]) {
          say(`ceiling ${arm}${round}: ${arm === 'S' ? 'one standalone guest loaded' : 'both standalone guests loaded at once'}, ${window} outstanding…`);
          const loads = (arm === 'S' ? [boards.targets[0]!] : boards.targets).map((t, i) => loadOn(t, { tag: `${arm}${round}${'ab'[i]}${window}`, window, rate: 0 }));
          for (const result of await Promise.all(loads)) runs.push({ arm, round, shape: `closed-${window}`, result, subscribers: subscribersIn(result) });
        }
        cpu.push({ phase: `${arm}${round}`, seconds: (Date.now() - t0) / 1000, cpu: cpuDelta(before, cpuByBoard(roots)) });
      }
    }
  } finally {
    await boards.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return { runs, cpu };
}

/**
 * How the backup's QEMU shares the machine for a replicated arm (util-linux chrt, then read back
 * from /proc): R every thread SCHED_OTHER, I the vCPU thread alone SCHED_IDLE, Q every thread
 * SCHED_IDLE. A missing QEMU, a chrt failure or a policy not read back ends the run.
 */
async function backupQemuPolicy(root: number | undefined, arm: Arm): Promise<void> {
  const pids = root ? qemuPidsUnder(root) : [];
  if (pids.length !== 1) throw new Error(`the backup's QEMU: ${pids.length} found under controller ${root}, 1 expected`);
  const pid = pids[0]!;
  const threads = listThreads(pid).map((t) => readThreadAffinity(pid, t));
  const vcpu = threads.find((t) => /^CPU \d/.test(t.name));
  if (!vcpu) throw new Error(`the backup's QEMU ${pid}: no vCPU thread`);
  const want = (t: { tid: number }) => (arm === 'Q' || (arm === 'I' && t.tid === vcpu.tid) ? 'SCHED_IDLE' : 'SCHED_OTHER');
  for (const t of threads) await setThreadIdle(t.tid, want(t) === 'SCHED_IDLE');
  const wrong = listThreads(pid).map((t) => readThreadAffinity(pid, t)).filter((t) => t.policy !== want(t));
  if (wrong.length) throw new Error(`arm ${arm}: threads of the backup's QEMU not as set: ${wrong.map((t) => `${t.tid} ${t.name} ${t.policy}`).join(', ')}`);
  say(`arm ${arm}: the backup's QEMU ${pid}: ${arm === 'R' ? 'every thread SCHED_OTHER' : arm === 'I' ? `vCPU ${vcpu.tid} SCHED_IDLE, the rest SCHED_OTHER` : 'every thread SCHED_IDLE'}`);
}

type HopRow = { phase: string; shape: string; hops: Record<string, HistogramSnapshot> };
type Hops = Record<string, HistogramSnapshot>;

/** Both boards' per-hop histograms (replication.hops), the backup's named backup*. */
async function hopsOf(chassis: Chassis, primary: BoardName, arm: Arm): Promise<Hops> {
  const out: Hops = {};
  for (const b of BOARD_NAMES) {
    if (arm === 'U' && b !== primary) continue;
    const st = (await callControl(chassis.layout.boards[b].controlSocket, 'status')) as { replication?: { hops?: Hops } | null };
    for (const [k, v] of Object.entries(st.replication?.hops ?? {})) if ((b === primary) !== k.startsWith('backup')) out[k] = v;
  }
  return out;
}

type LoopRow = { phase: string; board: string; lastWindow: { p50Ms: number; p99Ms: number; maxMs: number } | null; windowS: number };

async function measurePair(): Promise<{ runs: PhaseRun[]; cpu: Array<{ phase: string; seconds: number; cpu: Record<string, Record<string, number>> }>; loop: LoopRow[]; hops: HopRow[] }> {
  const loop: LoopRow[] = [];
  const hops: HopRow[] = [];
  const runs: PhaseRun[] = [];
  const cpu: Array<{ phase: string; seconds: number; cpu: Record<string, Record<string, number>> }> = [];
  const chassis = await Chassis.up({ name: 'bench', runDir: '/tmp/us-bench-cost', guest: 'primary' });
  try {
    let primary: BoardName = await waitProtected(chassis.layout, 240000);
    let backupOff = false;
    for (let round = 1; round <= ROUNDS; round++) {
      for (const arm of armsOf(round)) {
        if (arm === 'U') {
          say(`U${round}: powering the backup (${partnerOf(primary)}) off…`);
          await chassis.power(partnerOf(primary), 'off');
          backupOff = true;
          await waitUnprotected(chassis.layout, primary);
        } else {
          if (backupOff) await chassis.power(partnerOf(primary), 'on');
          backupOff = false;
          primary = await waitProtected(chassis.layout, 240000);
        }
        const backupRoot = (await chassis.board(partnerOf(primary))).controller?.pid;
        if (arm !== 'U') await backupQemuPolicy(backupRoot, arm);
        const roots: Record<string, number | undefined> = {};
        for (const b of BOARD_NAMES) roots[b === primary ? `${b} (primary)` : `${b} (backup)`] = (await chassis.board(b)).controller?.pid;
        const before = cpuByBoard(roots);
        const t0 = Date.now();
        for (const [i, s] of SHAPES.entries()) {
          say(`${arm}${round} ${s.shape}…`);
          const hopsBefore = await hopsOf(chassis, primary, arm);
          const result = await startLoad(chassis.layout, { rate: s.rate, durationMs: SECONDS * 1000, tag: `${arm}${round}${'abcdefghij'[i]}`, retryMs: 200, window: s.window, verify: true, mix: MIX, pool: `${POOL.tag}:${POOL.count}` }).result;
          const run = { arm, round, shape: s.shape, result, subscribers: subscribersIn(result) };
          const hopsAfter = await hopsOf(chassis, primary, arm);
          hops.push({ phase: `${arm}${round}`, shape: s.shape, hops: Object.fromEntries(Object.entries(hopsAfter).map(([k, v]) => [k, snapshotDelta(hopsBefore[k], v)])) });
          runs.push(run);
          if (result.errorReplies || (run.subscribers > SUBSCRIBER_BUDGET)) throw new Error(`${arm}${round} ${s.shape}: ${result.errorReplies} ERR replies (${result.errorSamples.join('; ')}), ${run.subscribers} subscribers: stopping, no table`);
        }
        cpu.push({ phase: `${arm}${round}`, seconds: (Date.now() - t0) / 1000, cpu: cpuDelta(before, cpuByBoard(roots)) });
        for (const b of BOARD_NAMES) {
          if (arm === 'U' && b !== primary) continue;
          const st = (await callControl(chassis.layout.boards[b].controlSocket, 'status')) as { eventLoopDelay?: { windowS: number; lastWindow: LoopRow['lastWindow'] } };
          loop.push({ phase: `${arm}${round}`, board: b === primary ? `${b} (primary)` : `${b} (backup)`, lastWindow: st.eventLoopDelay?.lastWindow ?? null, windowS: st.eventLoopDelay?.windowS ?? NaN });
        }
      }
    }
  } finally {
    await chassis.down({ purge: true });
  }
  return { runs, cpu, loop, hops };
}

function cpuTable(rows: Array<{ phase: string; seconds: number; cpu: Record<string, Record<string, number>> }>): string {
  const out: Array<Array<string | number>> = [['phase', 'seconds', 'board', 'controller s', 'membership s', 'qemu s', 'other s', 'total % of a core']];
  for (const r of rows) {
    for (const [board, k] of Object.entries(r.cpu)) {
      const known = (k.controller ?? 0) + (k.membership ?? 0) + (k.qemu ?? 0);
      const total = Object.values(k).reduce((a, b) => a + b, 0);
      out.push([r.phase, r.seconds, board, k.controller ?? 0, k.membership ?? 0, k.qemu ?? 0, total - known, `${((100 * total) / r.seconds).toFixed(0)} %`]);
    }
  }
  return table('CPU seconds per process per phase (from /proc/<pid>/stat; a powered-off board shows nothing)', out);
}

async function main(): Promise<void> {
  const cycle = mixCycle(mix);
  const share = (k: string) => `${((100 * cycle.filter((c) => c === k).length) / cycle.length).toFixed(1)} %`;
  say(`mix ${MIX}: REG of a new subscriber ${share('reg')}, GET ${share('get')}, CALL + END ${share('call')} of steps; ${POOL.count} pool subscribers`);
  const ceiling = await measureCeiling();
  const pair = await measurePair();
  let report;
  try {
    report = costReport(pair.runs, ceiling.runs);
  } catch (e) {
    say((e as Error).message);
    process.exitCode = 1;
    return;
  }
  const maxSubs = Math.max(...pair.runs.map((r) => r.subscribers ?? 0), ...ceiling.runs.map((r) => r.subscribers ?? 0));
  console.log(`\nbench/replication-cost — ${new Date().toISOString()} — ${machine()}`);
  console.log(`mix ${MIX} (steps: REG of a new subscriber ${share('reg')}, GET ${share('get')}, CALL + END ${share('call')}); ${SECONDS} s per phase, ${ROUNDS} rounds; open loop at ${RATES.join(', ')} steps/s with ≤ ${OPEN_WINDOW} outstanding`);
  console.log(`subscribers: at most ${maxSubs} in any guest (budget ${SUBSCRIBER_BUDGET}, table ${GUEST_SUBSCRIBERS}); 0 ERR replies; every run verified, nothing lost`);
  console.log(report.tables);
  console.log(cpuTable([...ceiling.cpu, ...pair.cpu]));
  console.log(table(`controllers' event-loop delay, the last full ${pair.loop[0]?.windowS ?? '?'} s window of each phase (its open-loop end)`, [
    ['phase', 'board', 'p50 ms', 'p99 ms', 'max ms'],
    ...pair.loop.map((l) => [l.phase, l.board, l.lastWindow?.p50Ms ?? 'n/a', l.lastWindow?.p99Ms ?? 'n/a', l.lastWindow?.maxMs ?? 'n/a']),
  ]));
  const HOP_COLUMNS = ['forwarded', 'delivered', 'replied', 'covered', 'released', 'authAnswer', 'backupLogged', 'backupAcked'];
  const pct = (h: HistogramSnapshot | undefined) => (h && h.n ? `${h.p50Ms} / ${h.p99Ms}` : '-');
  console.log(table('where the time goes: ms from an input\'s receipt to each hop, p50 / p99 (primary: forwarded to the backup, delivered to the guest, guest replied, covered by the ACK, released; AUTHQ → AUTHR; backup: logged, ACK sent)', [
    ['phase', 'shape', ...HOP_COLUMNS],
    ...pair.hops.map((h) => [h.phase, h.shape, ...HOP_COLUMNS.map((c) => pct(h.hops[c]))]),
  ]));
  const r = report;
  const fmt = (s: { min: number; max: number }, d = 3) => `${s.min.toFixed(d)}–${s.max.toFixed(d)}`;
  console.log('\nagainst the targets (added p50 ≤ 0.3 ms, added p99 ≤ 1 ms at 1 outstanding; ≥ 0.9 of the ceiling at 16):');
  for (const [a, x] of Object.entries(r.arms)) console.log(`  ${a} (${ARM_LABELS[a]}): added p50 ${fmt(x.addedP50)} ms, added p99 ${fmt(x.addedP99)} ms, throughput raw ${fmt(x.raw)}, to the ceiling ${fmt(x.toCeiling)}`);
}

await main();
