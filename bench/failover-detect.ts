/**
 * bench/failover-detect: how fast the backup takes over from a primary whose controller dies, and
 * whether the pair stays quiet when nothing dies but both CPU cores are saturated.
 *
 *  1. Over N kills on the simulated chassis (boards without a guest, the board profiles' default
 *     timers): SIGKILL the primary's controller (what `chassis fail <board> --how kill` does, sent
 *     from here so the kill instant is known to the millisecond), then read the backup's journal:
 *       kill → "partner declared dead" (kind `partner`)           detection
 *       dead → the PRIMARY transition (kind `role.transition`)     fencing + promotion
 *       kill → PRIMARY                                             detection + promotion (target ≤ 30 ms p99)
 *     Journal timestamps are wall-clock ISO written by the backup's controller on this same host, so
 *     they compare with Date.now() taken here at the kill. The backup waits ha.priorityFencingDelayMs
 *     before it fences a silent primary (shown on its own row). Between kills the killed board (fenced
 *     by a reset) boots again by itself and must come back as BACKUP.
 *  1b. Partitions (--partitions N): both links cut for --cut-ms (3 s) on a healthy pair, then healed.
 *     Counts failovers (the backup promoted, or the primary stepping down), fences of each board and
 *     resets of the primary (target: 0 failovers, the primary never fenced); times the primary's fence
 *     of the backup (its verdict → the chassis killing the backup, from chassisd.log, and → the fence
 *     confirmed), the skew of the two verdicts (as journaled by each main process), the margin left
 *     before the backup's own fence would have gone out (its pending fence order + its wait − the
 *     kill), and heal → protected again (one PRIMARY, one BACKUP, every link up).
 *  2. A soak: CPU burners (`ip netns exec <ns> node -e 'busy loop'`, two per board, so both cores
 *     of this machine are saturated from inside each board's namespace) for --soak-seconds; counts
 *     false failovers (role transitions and fences in both journals), "partner declared dead"
 *     verdicts, link-down events and watchdog resets. Target: 0 in 10 minutes (--soak-seconds 600).
 *  Optionally (--baseline-seconds) the same counts without burners first, to tell the machine's own
 *  noise from the load's effect.
 *  3. Hangs (--hangs N, each kind; --guest-soak-seconds S), on a second chassis with the guest
 *     replicated and a client sending continuously (bench/hangs.ts): SIGSTOP of the primary's
 *     controller and of its QEMU → first good reply and protected again; and a loaded soak with
 *     CPU burners, checkpoints and re-clones that reads what the hang bounds must stay above (alive
 *     gaps, main-loop delay, how far the primary's replies trail the backup's) and counts false
 *     hang verdicts (target 0).
 * Prints tables; the numbers go to BENCHMARKS.md with the machine and date, never into assertions.
 *
 * Usage: node dist/bench/failover-detect.js [--kills 20] [--partitions 10] [--cut-ms 3000] [--soak-seconds 60] [--baseline-seconds 0]
 *                                           [--hangs 0] [--hang-kinds controller,guest,app,kill,power,partition] [--guest-soak-seconds 0] [--guest-soak-burners 1]
 *                                           [--burners-per-board 2] [--baud 115200] [--name fdNNN] [--keep]
 * Needs root (namespaces). Cleans up the chassis and every burner it started, on error and on ^C.
 */
import { execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import type { Role } from '../src/ha/frame.js';
import type { HaStatus } from '../src/ha/ha-controller.js';
import { callControl } from '../src/mgmt/ipc.js';
import { chassisDown } from '../src/sim/chassis/launcher.js';
import { PACKAGE_ROOT, type BoardName } from '../src/sim/chassis/layout.js';
import { Chassis } from '../src/sim/chassis/rig.js';
import type { JournalEvent } from '../src/store/journal.js';
import { HANG_KINDS_ALL, HangBench, PARTITION_MS, RATE, RETRY_MS, hangRows, type HangKind, type HangSample } from './hangs.js';
import { cleanUpOnSignal, machine, printTable, summarize, type LatencySummary } from './lib.js';

const { values: args } = parseArgs({
  options: {
    kills: { type: 'string', default: '20' },
    partitions: { type: 'string', default: '10' },
    'cut-ms': { type: 'string', default: '3000' },
    'soak-seconds': { type: 'string', default: '60' },
    'baseline-seconds': { type: 'string', default: '0' },
    hangs: { type: 'string', default: '0' },
    'hang-kinds': { type: 'string', default: 'controller,guest,app,kill,power,partition' },
    'guest-soak-seconds': { type: 'string', default: '0' },
    'guest-soak-burners': { type: 'string', default: '1' },
    'burners-per-board': { type: 'string', default: String(Math.max(1, cpus().length)) },
    baud: { type: 'string', default: '115200' },
    name: { type: 'string', default: `fd${process.pid % 1000}` },
    keep: { type: 'boolean', default: false },
  },
});

function intArg(name: string, v: string | undefined, min: number): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) {
    console.error(`--${name}: an integer ≥ ${min}, got "${v}"`);
    process.exit(2);
  }
  return n;
}
const KILLS = intArg('kills', args.kills, 0);
const PARTITIONS = intArg('partitions', args.partitions, 0);
const CUT_MS = intArg('cut-ms', args['cut-ms'], 100);
const SOAK_S = intArg('soak-seconds', args['soak-seconds'], 0);
const BASELINE_S = intArg('baseline-seconds', args['baseline-seconds'], 0);
const BURNERS = intArg('burners-per-board', args['burners-per-board'], 1);
const BAUD = intArg('baud', args.baud, 300);
const HANGS = intArg('hangs', args.hangs, 0);
const HANG_KINDS = args['hang-kinds'].split(',').map((k) => k.trim()).filter(Boolean) as HangKind[];
for (const k of HANG_KINDS) if (!HANG_KINDS_ALL.includes(k)) throw new Error(`--hang-kinds: unknown kind '${k}' (${HANG_KINDS_ALL.join(', ')})`);
const GUEST_SOAK_S = intArg('guest-soak-seconds', args['guest-soak-seconds'], 0);
const GUEST_SOAK_BURNERS = intArg('guest-soak-burners', args['guest-soak-burners'], 0);
const TARGET_P99_MS = 30;
/** Issue 13: a hung controller or guest → first good reply ≤ 100 ms p99. */
const HANG_TARGET_P99_MS = 100;
/** partner killed → first good reply (the product brief's target). */
const KILL_TARGET_P99_MS = 40;
const BOARDS: BoardName[] = ['sim-a', 'sim-b'];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let chassis: Chassis | undefined;
/** The chassis with a replicated guest, for the hang rows. */
let guestChassis: Chassis | undefined;
/** Keep the run directory (logs, journals) for a post-mortem: --keep, or something went wrong. */
let keepRun = false;
const runDir = `/tmp/us-fd-${process.pid}`;
const burners: ChildProcess[] = [];

const sock = (b: BoardName) => chassis!.layout.boards[b].controlSocket;
const role = (b: BoardName) => callControl(sock(b), 'role', {}, 3000) as Promise<HaStatus>;
async function roleOf(b: BoardName): Promise<Role | 'unavailable'> {
  try {
    return (await role(b)).role;
  } catch {
    return 'unavailable';
  }
}
async function events(b: BoardName, sinceId: number): Promise<JournalEvent[]> {
  return ((await callControl(sock(b), 'events', { limit: 10000, sinceId }, 5000)) as { events: JournalEvent[] }).events;
}
async function lastEventId(b: BoardName): Promise<number> {
  return ((await callControl(sock(b), 'events', { limit: 1 }, 5000)) as { events: JournalEvent[] }).events.at(-1)?.id ?? 0;
}

/** Polls until `check` gives a value; bounded by count and time. */
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, everyMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (let i = 0; i < Math.ceil(timeoutMs / everyMs) + 10 && Date.now() < end; i++) {
    const v = await check().catch(() => undefined);
    if (v !== undefined) return v;
    await sleep(everyMs);
  }
  throw new Error(`${what}: not within ${timeoutMs} ms`);
}

/**
 * Every partition and kill resets a board: the fencing escalation (3 resets of a partner within an
 * hour, then it is left off) would end the run after a few rounds. For the bench both boards get a
 * maxResets above the rounds it runs (Chassis.coldStart with edited profiles).
 */
async function raiseEscalation(maxResets: number): Promise<void> {
  await chassis!.coldStart((_, p) => { p.fencing.escalation = { ...(p.fencing.escalation ?? {}), maxResets }; });
}

/** One PRIMARY, one BACKUP, both links up on both boards. */
async function settledPair(timeoutMs = 30000): Promise<{ primary: BoardName; backup: BoardName }> {
  return until('a settled pair (one PRIMARY, one BACKUP, every link up)', async () => {
    const st = await Promise.all(BOARDS.map(role));
    const roles = st.map((s) => s.role);
    if (!st.every((s) => s.links.every((l) => l.up) && s.partner.state === 'alive')) return undefined;
    if (roles[0] === 'PRIMARY' && roles[1] === 'BACKUP') return { primary: 'sim-a' as BoardName, backup: 'sim-b' as BoardName };
    if (roles[0] === 'BACKUP' && roles[1] === 'PRIMARY') return { primary: 'sim-b' as BoardName, backup: 'sim-a' as BoardName };
    return undefined;
  }, timeoutMs, 100);
}

interface KillSample {
  killed: BoardName;
  killToDead: number;
  /** Kill → the last frame the backup accepted (kill→dead minus the silence it measured): frames still in flight after the death. */
  killToLastHeard: number;
  deadToPrimary: number;
  killToPrimary: number;
  /** FENCING transition → fence confirmed by the power controller. */
  fence: number;
  /** Fence confirmed → PRIMARY transition. */
  promote: number;
  /** The priority fencing delay the backup waited (the fence's waitedMs). */
  waited: number;
  /** Role transitions on the backup other than BACKUP→FENCING→PRIMARY (flaps), if any. */
  extra: string[];
}

async function oneKill(i: number): Promise<KillSample> {
  const { primary, backup } = await settledPair();
  await sleep(300); // a few hundred heartbeats in the steady state before the kill
  const mark = await lastEventId(backup);
  const board = await chassis!.board(primary);
  const pid = board.controller?.pid;
  if (!pid || board.controller?.state !== 'running') throw new Error(`kill ${i}: ${primary} has no running controller`);
  // What `chassis fail <board> --how kill` does (SimBoard.killController), timed here.
  const before = Date.now();
  process.kill(pid, 'SIGKILL');
  const after = Date.now();
  const tKill = (before + after) / 2;
  await until(`kill ${i}: ${backup} PRIMARY`, async () => ((await roleOf(backup)) === 'PRIMARY' ? true : undefined), 20000, 10);
  const j = await events(backup, mark);
  const dead = j.find((e) => e.kind === 'partner' && /declared dead/.test(e.message));
  const fencing = j.find((e) => e.kind === 'role.transition' && e.detail?.to === 'FENCING');
  const fence = j.find((e) => e.kind === 'fence' && e.detail?.outcome !== undefined);
  const promoted = j.filter((e) => e.kind === 'role.transition' && e.detail?.to === 'PRIMARY').at(-1);
  if (!dead || !fencing || !fence || !promoted) throw new Error(`kill ${i}: the backup's journal lacks a step:\n${j.map((e) => `${e.at} ${e.kind} ${e.message}`).join('\n')}`);
  const at = (e: JournalEvent) => Date.parse(e.at);
  const transitions = j.filter((e) => e.kind === 'role.transition').map((e) => `${e.detail!.from}->${e.detail!.to}`);
  const extra = transitions.join(' ') === 'BACKUP->FENCING FENCING->PRIMARY' ? [] : transitions;
  const sample: KillSample = {
    killed: primary,
    killToDead: at(dead) - tKill,
    killToLastHeard: at(dead) - tKill - Number(dead.detail?.silentMs ?? NaN),
    deadToPrimary: at(promoted) - at(dead),
    killToPrimary: at(promoted) - tKill,
    fence: at(fence) - at(fencing),
    promote: at(promoted) - at(fence),
    waited: Number(fence.detail?.waitedMs ?? NaN),
    extra,
  };
  // The fenced board was reset: it boots again by itself and must rejoin as BACKUP.
  if ((await chassis!.board(primary)).power === 'off') await chassis!.power(primary, 'on'); // fencing.action off
  const back = await settledPair();
  if (back.primary !== backup) throw new Error(`kill ${i}: ${primary} came back as PRIMARY (preempted)`);
  return sample;
}

interface QuietCounts {
  seconds: number;
  burners: number;
  roleTransitions: number;
  fences: number;
  deadVerdicts: number;
  linkDown: Record<string, number>;
  watchdogResets: number;
  /** Resets and power-offs of either board in chassis status (fences included). */
  boardResets: number;
  controllerRestarts: number;
  /** Each board's loop delay at the end of the period (missing if it was down). */
  loop: Partial<Record<BoardName, HaStatus['loopDelayMs']>>;
  notes: string[];
  transitions: string[];
}

/** Watches the pair for `seconds` (with `burnersPerBoard` burners in each namespace) and counts what should not happen. */
async function quietPeriod(seconds: number, burnersPerBoard: number): Promise<QuietCounts> {
  await settledPair();
  const marks = { 'sim-a': await lastEventId('sim-a'), 'sim-b': await lastEventId('sim-b') };
  const st0 = await chassis!.status();
  const started: ChildProcess[] = [];
  const burnMs = (seconds + 60) * 1000; // bounded: each burner stops by itself even if we could not kill it
  for (const b of BOARDS) {
    for (let k = 0; k < burnersPerBoard; k++) {
      const c = chassis!.spawnIn(b, process.execPath, ['-e', `const e = Date.now() + ${burnMs}; let x = 0; while (Date.now() < e) x++;`], { stdio: 'ignore' });
      burners.push(c);
      started.push(c);
    }
  }
  try {
    const end = Date.now() + seconds * 1000;
    let lastPrint = Date.now();
    while (Date.now() < end) {
      await sleep(Math.min(1000, Math.max(0, end - Date.now())));
      if (Date.now() - lastPrint >= 30000) {
        lastPrint = Date.now();
        process.stderr.write(`  … ${Math.round((end - Date.now()) / 1000)} s left\n`);
      }
    }
  } finally {
    for (const c of started) if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
    await Promise.all(started.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
  }
  const periodEnd = Date.now();
  const st1 = await chassis!.status();
  const counts: QuietCounts = {
    seconds, burners: started.length, roleTransitions: 0, fences: 0, deadVerdicts: 0, linkDown: { ethernet: 0, serial: 0 },
    watchdogResets: 0, boardResets: 0, controllerRestarts: 0, loop: {} as QuietCounts['loop'], notes: [], transitions: [],
  };
  for (const b of BOARDS) {
    const b0 = st0.boards.find((x) => x.board === b)!;
    const b1 = st1.boards.find((x) => x.board === b)!;
    counts.watchdogResets += b1.watchdog.fired - b0.watchdog.fired;
    counts.boardResets += b1.resets.count - b0.resets.count;
    if (b0.controller?.pid !== b1.controller?.pid) counts.controllerRestarts++;
    if (b1.role.ok) counts.loop[b] = (b1.role.result as HaStatus).loopDelayMs;
    if (!b1.answers) {
      // Fenced (or reset) during the period: its journal survives in its store; boot it to read it.
      counts.notes.push(`${b} ${b1.power === 'off' ? 'was off' : 'did not answer'} at the end (last reset: ${b1.resets.last ? `${b1.resets.last.cause} at ${b1.resets.last.at}` : 'none'})`);
      if (b1.power === 'off') await chassis!.power(b, 'on');
      await until(`${b} answers again`, async () => ((await chassis!.board(b)).answers ? true : undefined), 30000, 200);
    }
    for (const e of await events(b, marks[b])) {
      if (e.kind === 'role.transition' && Date.parse(e.at) <= periodEnd) { counts.roleTransitions++; counts.transitions.push(`${e.at} ${b}: ${e.message}`); }
      if (e.kind === 'fence' && Date.parse(e.at) <= periodEnd) { counts.fences++; counts.transitions.push(`${e.at} ${b}: ${e.message}`); }
      if (e.kind === 'partner' && /declared dead/.test(e.message) && Date.parse(e.at) <= periodEnd) counts.deadVerdicts++;
      if (e.kind === 'link' && e.detail?.up === false && Date.parse(e.at) <= periodEnd) counts.linkDown[String(e.detail.link)] = (counts.linkDown[String(e.detail.link)] ?? 0) + 1;
    }
  }
  const anomalies = counts.roleTransitions + counts.fences + counts.deadVerdicts + counts.watchdogResets + counts.boardResets + counts.controllerRestarts;
  if (anomalies > 0) keepRun = true;
  if (anomalies > 0) await settledPair().catch(() => undefined); // the next period starts from a whole pair
  return counts;
}

const fmt = (n: number) => (Number.isFinite(n) ? n.toFixed(1) : '-');

function latencyRows(samples: KillSample[]): Array<Array<string | number>> {
  const row = (what: string, s: LatencySummary, target: string) => [what, s.n, fmt(s.p50), fmt(s.p99), fmt(s.max), target];
  const p = (f: (k: KillSample) => number) => summarize(samples.map(f));
  const total = p((k) => k.killToPrimary);
  return [
    ['measure (ms)', 'n', 'p50', 'p99', 'max', 'target'],
    row('kill → partner declared dead', p((k) => k.killToDead), ''),
    row('  of which kill → last frame heard', p((k) => k.killToLastHeard), ''),
    row('declared dead → PRIMARY', p((k) => k.deadToPrimary), ''),
    row('  of which the priority fencing delay (still BACKUP)', p((k) => k.waited), ''),
    row('  of which FENCING → fence confirmed', p((k) => k.fence), ''),
    row('  of which fence confirmed → PRIMARY', p((k) => k.promote), ''),
    row('kill → PRIMARY', total, `≤ ${TARGET_P99_MS} p99: ${total.p99 <= TARGET_P99_MS ? 'met' : 'NOT met'}`),
    row('kill → PRIMARY without the priority delay', p((k) => k.killToPrimary - k.waited), ''),
  ];
}

interface PartitionSample {
  primary: BoardName;
  /** Role transitions to PRIMARY on the backup, or away from PRIMARY on the primary. */
  failovers: number;
  fencesByPrimary: number;
  fencesByBackup: number;
  primaryResets: number;
  /** The primary's verdict → the chassis kills the backup (its reset begins: SIGKILL to its process group). */
  primaryKill?: number;
  /** The primary's verdict → its fence of the backup confirmed. */
  primaryFence?: number;
  /** The backup's verdict − the primary's verdict. */
  skew?: number;
  /** (The backup's pending fence order + its wait) − the backup killed: > 0, or the backup would have fenced too. */
  margin?: number;
  healToProtected: number;
  cutToProtected: number;
  notes: string[];
}

/** Cuts both links for CUT_MS on a settled pair, heals, waits for the pair to be whole again. */
/** When chassisd began resetting `board` (its first SIGKILL) at or after `sinceMs`, from chassisd.log. */
function chassisResetAt(board: BoardName, sinceMs: number): number {
  for (const line of readFileSync(`${runDir}/chassisd.log`, 'utf8').split('\n')) {
    try {
      const l = JSON.parse(line) as { time?: number; msg?: string };
      if (l.time !== undefined && l.time >= sinceMs && l.msg === `power-controller reset ${board}`) return l.time;
    } catch {
      // not a log line
    }
  }
  return NaN;
}

async function onePartition(i: number): Promise<PartitionSample> {
  const { primary, backup } = await settledPair();
  await sleep(300);
  const mark = { [primary]: await lastEventId(primary), [backup]: await lastEventId(backup) } as Record<BoardName, number>;
  const resets0 = (await chassis!.board(primary)).resets.count;
  const tCut = Date.now();
  await chassis!.cut('ethernet');
  await chassis!.cut('serial');
  await sleep(CUT_MS);
  await chassis!.heal('ethernet');
  await chassis!.heal('serial');
  const tHeal = Date.now();
  await settledPair(60000);
  const tBack = Date.now();
  const pj = await events(primary, mark[primary]!);
  const bj = await events(backup, mark[backup]!); // its store survives its reset
  const at = (e: JournalEvent | undefined) => (e ? Date.parse(e.at) : NaN);
  const pDead = pj.find((e) => e.kind === 'partner' && /declared dead/.test(e.message));
  const bDead = bj.find((e) => e.kind === 'partner' && /declared dead/.test(e.message));
  const pFence = pj.find((e) => e.kind === 'fence' && e.detail?.outcome !== undefined);
  const bOrder = bj.find((e) => e.kind === 'role' && e.detail?.role === 'BACKUP' && typeof e.detail?.waitMs === 'number' && !e.detail?.calledOff);
  const killedAt = chassisResetAt(backup, tCut);
  const failovers = bj.filter((e) => e.kind === 'role.transition' && e.detail?.to === 'PRIMARY').length
    + pj.filter((e) => e.kind === 'role.transition' && e.detail?.from === 'PRIMARY').length;
  const fin = (n: number) => (Number.isFinite(n) ? n : undefined);
  const s: PartitionSample = {
    primary,
    failovers,
    fencesByPrimary: pj.filter((e) => e.kind === 'fence' && e.detail?.outcome !== undefined).length,
    fencesByBackup: bj.filter((e) => e.kind === 'fence' && e.detail?.outcome !== undefined).length,
    primaryResets: (await chassis!.board(primary)).resets.count - resets0,
    primaryKill: fin(killedAt - at(pDead)),
    primaryFence: fin(at(pFence) - at(pDead)),
    skew: fin(at(bDead) - at(pDead)),
    margin: fin(at(bOrder) + Number(bOrder?.detail?.waitMs) - killedAt),
    healToProtected: tBack - tHeal,
    cutToProtected: tBack - tCut,
    notes: [],
  };
  if (failovers || s.fencesByBackup || s.primaryResets) {
    keepRun = true;
    s.notes.push(`partition ${i}: ${[...pj, ...bj].filter((e) => /role|fence/.test(e.kind)).map((e) => `${e.at} ${e.message}`).join(' | ')}`);
  }
  return s;
}

function partitionRows(samples: PartitionSample[]): Array<Array<string | number>> {
  const sum = (f: (p: PartitionSample) => number) => samples.reduce((a, p) => a + f(p), 0);
  const lat = (what: string, f: (p: PartitionSample) => number | undefined) => {
    const v = samples.map(f).filter((x): x is number => x !== undefined);
    const s = summarize(v);
    return [what, s.n, fmt(s.p50), fmt(s.p99), fmt(s.max), v.length ? fmt(Math.min(...v)) : '-'];
  };
  return [
    ['partition (both links cut)', 'n', 'p50', 'p99', 'max', 'min / total'],
    ['failovers (backup promoted, primary stepped down)', samples.length, '', '', '', `${sum((p) => p.failovers)} (target 0)`],
    ['fences of the primary by the backup', samples.length, '', '', '', `${sum((p) => p.fencesByBackup)} (target 0)`],
    ['resets of the primary', samples.length, '', '', '', `${sum((p) => p.primaryResets)} (target 0)`],
    ['fences of the backup by the primary (resets)', samples.length, '', '', '', String(sum((p) => p.fencesByPrimary))],
    lat('primary verdict → backup killed (ms)', (p) => p.primaryKill),
    lat('primary verdict → fence confirmed (ms)', (p) => p.primaryFence),
    lat('verdict skew, backup − primary (ms)', (p) => p.skew),
    lat('margin before the backup\'s own fence (ms)', (p) => p.margin),
    lat('heal → protected again (ms)', (p) => p.healToProtected),
    lat('cut → protected again (ms)', (p) => p.cutToProtected),
  ];
}

function quietRows(label: string, q: QuietCounts): Array<Array<string | number>> {
  const loop = (b: BoardName) => (q.loop[b] ? `${q.loop[b]!.membership.p99} / ${q.loop[b]!.membership.max}` : 'board was down');
  return [
    [`${label} (${q.seconds} s, ${q.burners} burners)`, 'count', 'target'],
    ['false failovers (role transitions, both boards)', q.roleTransitions, '0'],
    ['fences', q.fences, '0'],
    ['"partner declared dead" verdicts', q.deadVerdicts, '0'],
    ['ethernet link-down events', q.linkDown.ethernet ?? 0, '0'],
    ['serial link-down events', q.linkDown.serial ?? 0, '0'],
    ['watchdog resets', q.watchdogResets, '0'],
    ['board resets / power-offs (chassis status)', q.boardResets, '0'],
    ['controllers restarted', q.controllerRestarts, '0'],
    ['membership loop delay sim-a p99 / max ms (since boot)', loop('sim-a'), ''],
    ['membership loop delay sim-b p99 / max ms (since boot)', loop('sim-b'), ''],
  ];
}

/** The commit the build came from (and whether the tree had changes), for the results file. */
function sourceVersion(): string {
  try {
    const git = (...a: string[]) => execFileSync('git', ['-C', PACKAGE_ROOT, ...a], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return `commit ${git('rev-parse', '--short', 'HEAD')}${git('status', '--porcelain', '--', 'src', 'board') ? ' + uncommitted changes in src/ or board/' : ''}`;
  } catch {
    return `source ${PACKAGE_ROOT} (not a git checkout)`;
  }
}

async function cleanup(): Promise<void> {
  for (const c of burners) if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
  const keep = args.keep || keepRun;
  if (chassis) await chassisDown({ name: chassis.layout.name, runDir, purge: !keep }).catch((e) => console.error(`chassis down: ${(e as Error).message}`));
  if (chassis && keep) console.log(`run directory kept for its logs and journals: ${runDir}`);
  chassis = undefined;
  if (guestChassis) await chassisDown({ name: guestChassis.layout.name, runDir: `${runDir}-g`, purge: !keep }).catch((e) => console.error(`chassis down: ${(e as Error).message}`));
  if (guestChassis && keep) console.log(`run directory kept for its logs and journals: ${runDir}-g`);
  guestChassis = undefined;
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces)');
  console.log(`bench/failover-detect — ${new Date().toISOString()} — ${sourceVersion()}\n${machine()}`);
  if (KILLS > 0 || BASELINE_S > 0 || SOAK_S > 0) await killsAndSoaks();
  if (HANGS > 0 || GUEST_SOAK_S > 0) await hangs();
}

async function killsAndSoaks(): Promise<void> {
  chassis = await Chassis.up({ name: args.name, runDir, guest: 'none', baud: BAUD });
  const profile = (await role('sim-a'));
  const ha = JSON.parse(readFileSync(chassis.layout.boards['sim-a'].profile, 'utf8')).ha as Record<string, number>;
  console.log(`timers (board profile defaults): interval ${ha.intervalMs} ms, link timeout ${ha.linkTimeoutMs} ms, deadtime ${ha.deadtimeMs} ms, `
    + `fence delay ${ha.fenceDelayMs} ms, priority fencing delay ${ha.priorityFencingDelayMs} ms; serial ${BAUD} baud; watchdog ${profile.watchdog ? 'armed' : 'none'}; membership process ${profile.membershipProcess.rtPriority ? `SCHED_FIFO ${profile.membershipProcess.rtPriority}` : `normal scheduling${profile.membershipProcess.rtError ? ` (${profile.membershipProcess.rtError})` : ''}`}`);

  const priorityDelayMs = Number(ha.priorityFencingDelayMs);
  if (KILLS + PARTITIONS > 2) {
    const maxResets = KILLS + PARTITIONS + 10;
    await raiseEscalation(maxResets);
    console.log(`fencing.escalation.maxResets raised to ${maxResets} on both boards for the run (each kill and partition resets a board)`);
  }
  const parts: PartitionSample[] = [];
  for (let i = 1; i <= PARTITIONS; i++) {
    try {
      const p = await onePartition(i);
      parts.push(p);
      process.stderr.write(`  partition ${i}/${PARTITIONS} (primary ${p.primary}): ${p.failovers} failovers, ${p.fencesByPrimary} fences by the primary, ${p.fencesByBackup} by the backup, `
        + `backup killed ${fmt(p.primaryKill ?? NaN)} ms after the primary's verdict (fence confirmed ${fmt(p.primaryFence ?? NaN)} ms), skew ${fmt(p.skew ?? NaN)} ms, `
        + `margin ${fmt(p.margin ?? NaN)} ms, heal → protected ${p.healToProtected} ms\n`);
    } catch (e) {
      keepRun = true;
      process.stderr.write(`  partition ${i}/${PARTITIONS}: FAILED ${(e as Error).message}\n`);
      await chassis.heal('ethernet').catch(() => undefined);
      await chassis.heal('serial').catch(() => undefined);
      for (const b of BOARDS) if ((await chassis.board(b)).power === 'off') await chassis.power(b, 'on');
    }
  }
  if (PARTITIONS > 0) {
    printTable(`partition: both links cut for ${CUT_MS} ms on a healthy pair, then healed (${parts.length} of ${PARTITIONS} measured; priority fencing delay ${priorityDelayMs} ms)`, partitionRows(parts));
    for (const n of parts.flatMap((p) => p.notes)) console.log(`  ${n}`);
  }

  const samples: KillSample[] = [];
  const failures: string[] = [];
  for (let i = 1; i <= KILLS; i++) {
    try {
      const s = await oneKill(i);
      samples.push(s);
      process.stderr.write(`  kill ${i}/${KILLS} ${s.killed}: last heard ${fmt(s.killToLastHeard)} ms, dead ${fmt(s.killToDead)} ms, fence ${fmt(s.fence)} ms, PRIMARY ${fmt(s.killToPrimary)} ms${s.extra.length ? ` (backup transitions: ${s.extra.join(' ')})` : ''}\n`);
    } catch (e) {
      keepRun = true;
      failures.push((e as Error).message);
      process.stderr.write(`  kill ${i}/${KILLS}: FAILED ${(e as Error).message}\n`);
      // Bring the pair back for the next round if we can.
      for (const b of BOARDS) if ((await chassis.board(b)).power === 'off') await chassis.power(b, 'on');
    }
  }
  if (KILLS > 0) {
    printTable(`failover: SIGKILL of the primary's controller → backup PRIMARY (${samples.length} of ${KILLS} kills measured)`, latencyRows(samples));
    const flaps = samples.filter((s) => s.extra.length);
    if (flaps.length) console.log(`${flaps.length} kills with extra backup transitions: ${flaps.map((s) => s.extra.join(' ')).join(' | ')}`);
    for (const f of failures) console.log(`failed round: ${f.split('\n')[0]}`);
  }

  if (BASELINE_S > 0) {
    const q = await quietPeriod(BASELINE_S, 0);
    printTable('baseline, no burners', quietRows('baseline', q));
    for (const t of [...q.notes, ...q.transitions]) console.log(`  ${t}`);
  }
  if (SOAK_S > 0) {
    const q = await quietPeriod(SOAK_S, BURNERS);
    printTable(`soak: ${BURNERS} CPU burners in each board's namespace (${cpus().length} cores)`, quietRows('soak', q));
    for (const t of [...q.notes, ...q.transitions]) console.log(`  ${t}`);
  }
  await chassisDown({ name: chassis.layout.name, runDir, purge: !(args.keep || keepRun) });
  chassis = undefined;
}

/** The hang rows (bench/hangs.ts) on a chassis with the guest replicated. Any failed round fails the bench. */
async function hangs(): Promise<void> {
  const g = (guestChassis = await Chassis.up({ name: `${args.name}g`, runDir: `${runDir}-g`, guest: 'primary', baud: BAUD }));
  const burn = (b: BoardName, ms: number) => {
    const c = g.spawnIn(b, process.execPath, ['-e', `const e = Date.now() + ${ms}; let x = 0; while (Date.now() < e) x++;`], { stdio: 'ignore' });
    burners.push(c);
    return c;
  };
  const bench = new HangBench(g, burn);
  if (HANGS > 0) {
    // Each controller hang, kill and partition resets a board: keep the escalation (3 resets of a
    // partner within an hour → left off) out of the rounds, as for the kills above.
    const maxResets = HANGS * 3 + 10;
    await g.coldStart((_, p) => { p.fencing.escalation = { ...(p.fencing.escalation ?? {}), maxResets }; });
    console.log(`guest chassis: fencing.escalation.maxResets raised to ${maxResets} on both boards for the hang rounds`);
  }
  const profile = JSON.parse(readFileSync(g.layout.boards['sim-a'].profile, 'utf8')).ha as Record<string, number>;
  console.log(`hang bounds (board profile): controllerHangMs ${profile.controllerHangMs ?? 'default'}, guestHangMs ${profile.guestHangMs ?? 'default'}, guestHangFastMs ${profile.guestHangFastMs ?? 'default'}; hang rounds: load ${RATE} requests/s, retry ${RETRY_MS} ms`);
  const samples: HangSample[] = [];
  for (let i = 1; i <= HANGS; i++) {
    for (const kind of HANG_KINDS) {
      const s = await bench.round(kind, i); // throws: no figure from a round that went another way
      samples.push(s);
      process.stderr.write(`  ${kind} ${i}/${HANGS} ${s.board}: first good reply ${s.firstGoodReply.toFixed(0)} ms, backup transition ${s.verdict.toFixed(0)} ms, PRIMARY ${s.primary.toFixed(0)} ms, protected again ${(s.protectedAgain / 1000).toFixed(1)} s\n`);
    }
  }
  if (samples.length) {
    printTable(`with the guest replicated, a client sending continuously (${HANGS} of each of ${HANG_KINDS.join(', ')}; controller: SIGSTOP of the primary's controller, guest: SIGSTOP of its QEMU, app: its guest application hung (HANG), kill: SIGKILL of its controller, power: its board loses power, partition: both links cut for ${PARTITION_MS} ms)`,
      hangRows(samples, { controller: HANG_TARGET_P99_MS, guest: HANG_TARGET_P99_MS, app: HANG_TARGET_P99_MS, kill: KILL_TARGET_P99_MS, power: KILL_TARGET_P99_MS }));
  }
  if (GUEST_SOAK_S > 0) {
    const f = await bench.soak(GUEST_SOAK_S, GUEST_SOAK_BURNERS);
    const b = (x: BoardName) => f.boards[x];
    printTable(`loaded pair with the guest (${f.seconds} s, ${f.burners} CPU burners, ${f.checkpoints} checkpoints, ${f.clones} re-clones, ${f.answered} requests answered)`, [
      ['measure', 'sim-a', 'sim-b'],
      ['role at the end', b('sim-a')?.role ?? '-', b('sim-b')?.role ?? '-'],
      ['controller alive gap p99 / max ms (since boot)', ...(['sim-a', 'sim-b'] as const).map((x) => (b(x)?.aliveGapMs ? `${b(x)!.aliveGapMs!.p99} / ${b(x)!.aliveGapMs!.max}` : '-'))],
      ['controller main loop delay p99 / max ms (since boot)', ...(['sim-a', 'sim-b'] as const).map((x) => (b(x) ? `${b(x)!.mainLoop.p99} / ${b(x)!.mainLoop.max}` : '-'))],
    ]);
    if (f.witness) {
      const w = f.witness;
      printTable(`the backup's witness of the primary's guest (ms; first report at ${w.boundMs} ms${w.repeatMs ? `, again every ${w.repeatMs} ms` : ''}; ${w.verdicts} silences reported, ${w.reports} reports; the primary declined ${f.fastChecks?.declined ?? 0} fast ones (${f.fastChecks?.slowed ?? 0} with its QEMU kept from the CPU)${f.fastChecks?.lastDeclined ? `, the last: ${f.fastChecks.lastDeclined}` : ''})`, [
        ['measure', 'n', 'p50', 'p99', 'max'],
        ['primary\'s reply after the backup\'s copy\'s, same request (0: before)', w.late.count, w.late.p50, w.late.p99, w.late.max],
        ['primary silent after the copy\'s first unmatched reply (vs the bound)', w.suspected.count, w.suspected.p50, w.suspected.p99, w.suspected.max],
      ]);
    }
    console.log(`false hang verdicts, reports, role changes or losses in the soak: ${f.falseVerdicts.length}${f.falseVerdicts.map((x) => `\n  ${x}`).join('')}`);
    if (f.falseVerdicts.length) keepRun = true;
  }
}

cleanUpOnSignal(cleanup);

try {
  await main();
} catch (e) {
  keepRun = true;
  console.error(`failover-detect: ${(e as Error).message}`);
  process.exitCode = 1;
} finally {
  await cleanup();
}
