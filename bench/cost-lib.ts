/**
 * The pure part of bench/replication-cost: which runs may be used (the fail-on-error-path rule),
 * the ratios and spreads, the tables, and CPU seconds per process read from /proc. No I/O but /proc.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { CLOCK_TICKS_PER_S, parseProcStat } from '../src/hw/proc-state.js';
import type { LoadResult } from '../src/sim/load.js';
import { table } from './lib.js';

/**
 * The arm a run belongs to. R: replicated (backup in sync), every thread of both QEMUs at
 * SCHED_OTHER (equal shares); I: replicated, the backup's vCPU thread at SCHED_IDLE (it runs only
 * when the guest core is otherwise idle: board cores.followerYield); Q: replicated, every thread of
 * the backup's QEMU at SCHED_IDLE (its I/O thread on the housekeeping core too); U: backup off,
 * primary unprotected; S/D: the ceiling's one and two standalone guests.
 */
export type Arm = 'R' | 'I' | 'Q' | 'U' | 'S' | 'D';

/** The replicated arms, each set against U; R is the reference. */
export const REPLICATED_ARMS = ['R', 'I', 'Q'] as const;
export const ARM_LABELS: Record<string, string> = {
  R: 'replicated, both QEMUs at equal shares',
  I: 'replicated, the backup\'s vCPU at SCHED_IDLE (cores.followerYield)',
  Q: 'replicated, every thread of the backup\'s QEMU at SCHED_IDLE',
};

/** One load run of the benchmark: which arm, which round, how it was driven, what it measured. */
export interface PhaseRun {
  arm: Arm;
  round: number;
  /** 'closed-1', 'closed-16', 'open-<rate>' … */
  shape: string;
  result: Pick<LoadResult, 'acked' | 'throughput' | 'latency' | 'limitReplies' | 'errorReplies' | 'errorSamples' | 'verify' | 'requests'>;
  /** Subscribers in the guest after the run (STATS subs). */
  subscribers?: number;
}

/** The guest's subscriber table (PROTOCOL.md, Limits) and the share of it a run may fill. */
export const GUEST_SUBSCRIBERS = 4096;
export const SUBSCRIBER_BUDGET = GUEST_SUBSCRIBERS / 2;

/**
 * Why these runs must not be published, or [] when they may: any ERR reply (ERR FULL is a guest
 * limit; any other ERR is the error path too), a verify that found an acknowledged registration
 * missing, a re-sent id answered differently or a call id acknowledged twice, or a guest past the
 * subscriber budget.
 */
export function unusable(runs: PhaseRun[]): string[] {
  const why: string[] = [];
  for (const r of runs) {
    const at = `${r.arm}${r.round} ${r.shape}`;
    if (r.result.limitReplies > 0) why.push(`${at}: ${r.result.limitReplies} ERR FULL replies (a guest limit was reached)`);
    const other = r.result.errorReplies - r.result.limitReplies;
    if (other > 0) why.push(`${at}: ${other} other ERR replies (${(r.result.errorSamples ?? []).slice(0, 3).join('; ')})`);
    const v = r.result.verify;
    if (!v) why.push(`${at}: not verified`);
    else {
      if (v.missing.length) why.push(`${at}: ${v.missing.length} acknowledged registrations lost (${v.missing.slice(0, 3).join(', ')})`);
      if (v.retriedDifferent.length) why.push(`${at}: ${v.retriedDifferent.length} re-sent ids answered differently`);
      if (v.callIdsReused.length) why.push(`${at}: ${v.callIdsReused.length} call ids acknowledged twice`);
    }
    if (r.subscribers !== undefined && r.subscribers > SUBSCRIBER_BUDGET) why.push(`${at}: ${r.subscribers} subscribers in the guest, over the budget of ${SUBSCRIBER_BUDGET} (of ${GUEST_SUBSCRIBERS})`);
  }
  return why;
}

export interface Spread { values: number[]; min: number; max: number; mean: number }

export function spread(values: number[]): Spread {
  if (!values.length) return { values, min: NaN, max: NaN, mean: NaN };
  return { values, min: Math.min(...values), max: Math.max(...values), mean: values.reduce((a, b) => a + b, 0) / values.length };
}

const f = (x: number, d = 3): string => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');
const range = (s: Spread, d = 3): string => `${f(s.min, d)}–${f(s.max, d)}`;

/** Per-round pairs of one shape: R_i / U_i (round i), the ratio of each round. */
function pairs(runs: PhaseRun[], a: Arm, b: Arm, shape: string, pick: (r: PhaseRun) => number, op: (x: number, y: number) => number): number[] {
  const out: number[] = [];
  for (const ra of runs.filter((r) => r.arm === a && r.shape === shape)) {
    const rb = runs.find((r) => r.arm === b && r.shape === shape && r.round === ra.round);
    if (rb) out.push(op(pick(ra), pick(rb)));
  }
  return out;
}

export interface CostFigures {
  latency: { addedP50: Spread; addedP99: Spread };
  /** The same for every replicated arm the run had (R included), keyed by arm. */
  arms: Record<string, { addedP50: Spread; addedP99: Spread; raw: Spread; toCeiling: Spread }>;
  throughput: { raw: Spread; ceiling: Spread; toCeiling: Spread };
  tables: string;
}

/**
 * The figures and tables of a run, or an exception listing why there are none (unusable runs): a
 * run that saw the error path gets no table at all, so its numbers cannot be copied anywhere.
 */
export function costReport(runs: PhaseRun[], ceiling: PhaseRun[]): CostFigures {
  const bad = unusable([...runs, ...ceiling]);
  if (bad.length) throw new Error(`no table: these runs measured something else than the service:\n  ${bad.join('\n  ')}`);
  const shapes = [...new Set(runs.map((r) => r.shape))];
  const perPhase: Array<Array<string | number>> = [['phase', 'shape', 'requests', 'req/s', 'p50 ms', 'p99 ms', 'REG/GET/CALL/END', 'subscribers after']];
  for (const r of runs) {
    const q = r.result.requests;
    perPhase.push([`${r.arm}${r.round}`, r.shape, r.result.acked, Math.round(r.result.throughput), r.result.latency.p50, r.result.latency.p99, q ? `${q.REG}/${q.GET}/${q.CALL}/${q.END}` : '-', r.subscribers ?? '-']);
  }
  const of = (arm: Arm, shape: string, pick: (r: PhaseRun) => number) => spread(runs.filter((r) => r.arm === arm && r.shape === shape).map(pick));
  /** One arm against U, shape by shape: throughput ratio and added latency, each taken round by round. */
  const against = (a: Arm): Array<Array<string | number>> => {
    const rows: Array<Array<string | number>> = [['shape', 'U req/s', `${a} req/s`, `ratio ${a}/U`, 'U p50 ms', `${a} p50 ms`, 'added p50 ms', 'U p99 ms', `${a} p99 ms`, 'added p99 ms']];
    for (const s of shapes) {
      rows.push([s,
        range(of('U', s, (r) => r.result.throughput), 0), range(of(a, s, (r) => r.result.throughput), 0),
        range(spread(pairs(runs, a, 'U', s, (r) => r.result.throughput, (x, y) => x / y))),
        range(of('U', s, (r) => r.result.latency.p50)), range(of(a, s, (r) => r.result.latency.p50)),
        range(spread(pairs(runs, a, 'U', s, (r) => r.result.latency.p50, (x, y) => x - y))),
        range(of('U', s, (r) => r.result.latency.p99)), range(of(a, s, (r) => r.result.latency.p99)),
        range(spread(pairs(runs, a, 'U', s, (r) => r.result.latency.p99, (x, y) => x - y)))]);
    }
    return rows;
  };
  const present = REPLICATED_ARMS.filter((a) => runs.some((r) => r.arm === a));
  // The ceiling: per-guest throughput with two standalone guests loaded at once (D, two runs per
  // round) over one standalone guest alone (S), round by round.
  const ceilRows: Array<Array<string | number>> = [['round', 'one guest alone req/s', 'two guests at once, req/s each', 'ceiling (each of two / alone)']];
  const ceil: number[] = [];
  for (const round of [...new Set(ceiling.map((r) => r.round))]) {
    const s = ceiling.filter((r) => r.arm === 'S' && r.round === round && r.shape === 'closed-16');
    const d = ceiling.filter((r) => r.arm === 'D' && r.round === round && r.shape === 'closed-16');
    if (!s.length || !d.length) continue;
    const alone = s.reduce((a, r) => a + r.result.throughput, 0) / s.length;
    const each = d.reduce((a, r) => a + r.result.throughput, 0) / d.length;
    ceil.push(each / alone);
    ceilRows.push([round, Math.round(alone), d.map((r) => Math.round(r.result.throughput)).join(' + '), each / alone]);
  }
  // Two independent guests at 1 outstanding each on the shared core: what sharing it alone adds to a
  // reply's latency (no replication in it), against the same round's one guest alone.
  const shareRows: Array<Array<string | number>> = [['round', 'alone p50 ms', 'two at once p50 ms', 'added p50 ms', 'alone p99 ms', 'two at once p99 ms', 'added p99 ms']];
  for (const round of [...new Set(ceiling.map((r) => r.round))]) {
    const s1 = ceiling.find((r) => r.arm === 'S' && r.round === round && r.shape === 'closed-1');
    const d1 = ceiling.filter((r) => r.arm === 'D' && r.round === round && r.shape === 'closed-1');
    if (!s1 || !d1.length) continue;
    const dp50 = d1.reduce((a, r) => a + r.result.latency.p50, 0) / d1.length;
    const dp99 = d1.reduce((a, r) => a + r.result.latency.p99, 0) / d1.length;
    shareRows.push([round, f(s1.result.latency.p50), f(dp50), f(dp50 - s1.result.latency.p50), f(s1.result.latency.p99), f(dp99), f(dp99 - s1.result.latency.p99)]);
  }
  /** One replicated arm against U: added latency at 1 outstanding, throughput ratio at 16, that ratio over the ceiling. */
  const figuresOf = (a: Arm): CostFigures['arms'][string] => {
    const armRaw = spread(pairs(runs, a, 'U', 'closed-16', (r) => r.result.throughput, (x, y) => x / y));
    return {
      addedP50: spread(pairs(runs, a, 'U', 'closed-1', (r) => r.result.latency.p50, (x, y) => x - y)),
      addedP99: spread(pairs(runs, a, 'U', 'closed-1', (r) => r.result.latency.p99, (x, y) => x - y)),
      raw: armRaw,
      toCeiling: spread(armRaw.values.flatMap((x) => ceil.map((c) => x / c))),
    };
  };
  const arms: CostFigures['arms'] = Object.fromEntries(present.map((a) => [a, figuresOf(a)]));
  const { addedP50: p50, addedP99: p99, raw, toCeiling } = arms.R ?? figuresOf('R');
  const ceilingS = spread(ceil);
  const tables = [
    table(`every phase (${present.map((a) => `${a} = ${ARM_LABELS[a]}`).join('; ')}; U = backup powered off, primary unprotected)`, perPhase),
    ...present.map((a) => table(`${a}: ${ARM_LABELS[a]}, vs U, same mix, min–max over the rounds (ratios and differences taken round by round)`, against(a))),
    table('machine ceiling: two standalone guests on the same cores, same mix, 16 outstanding each', ceilRows),
    ...(shareRows.length > 1 ? [table('the shared guest core alone: two standalone guests at 1 outstanding each against one alone (no replication)', shareRows)] : []),
    table('throughput at 16 outstanding', [
      ['raw ratio R/U', 'ceiling', 'ratio to the ceiling (R/U ÷ ceiling)'],
      [range(raw), range(ceilingS), range(toCeiling)],
    ]),
  ].join('\n');
  return { latency: { addedP50: p50, addedP99: p99 }, arms, throughput: { raw, ceiling: ceilingS, toCeiling }, tables };
}

/** CPU seconds (user + system, all threads) of every live process, with its parent, group and name. */
export function procTable(): Map<number, { ppid: number; pgid: number; name: string; cmd: string; cpuS: number }> {
  const out = new Map<number, { ppid: number; pgid: number; name: string; cmd: string; cpuS: number }>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const st = parseProcStat(readFileSync(`/proc/${e}/stat`, 'utf8'));
      const cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8').replace(/\0/g, ' ');
      out.set(Number(e), { ppid: Number(st.field(4)), pgid: Number(st.field(5)), name: st.name, cmd, cpuS: st.cpuTicks / CLOCK_TICKS_PER_S });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** A root, its process group and its descendants, in a procTable. */
function treeOf(root: number, t: ReturnType<typeof procTable>): Set<number> {
  const mine = new Set<number>([root]);
  for (let grew = true; grew;) {
    grew = false;
    for (const [pid, p] of t) if (!mine.has(pid) && (mine.has(p.ppid) || p.pgid === root)) { mine.add(pid); grew = true; }
  }
  return mine;
}

/** The QEMU processes under a root (its group and descendants), as cpuByBoard counts them. */
export function qemuPidsUnder(root: number): number[] {
  const t = procTable();
  return [...treeOf(root, t)].filter((pid) => pid !== root && t.has(pid) && processKind(t.get(pid)!) === 'qemu');
}

/** What a process of a board is, by its name and command line. */
export function processKind(p: { name: string; cmd: string }): string {
  if (/qemu-system/.test(p.name) || /qemu-system/.test(p.cmd)) return 'qemu';
  if (/membership/.test(p.cmd)) return 'membership';
  if (/understudyd|daemon/.test(p.cmd)) return 'controller';
  return p.name;
}

/** CPU seconds by kind of process under each root (the root, its group and its descendants). */
export function cpuByBoard(roots: Record<string, number | undefined>): Record<string, Record<string, number>> {
  const t = procTable();
  const out: Record<string, Record<string, number>> = {};
  for (const [board, root] of Object.entries(roots)) {
    out[board] = {};
    if (!root) continue;
    for (const pid of treeOf(root, t)) {
      const p = t.get(pid);
      if (!p) continue;
      const k = pid === root ? 'controller' : processKind(p);
      out[board]![k] = (out[board]![k] ?? 0) + p.cpuS;
    }
  }
  return out;
}

/** The CPU seconds spent between two cpuByBoard snapshots. */
export function cpuDelta(before: Record<string, Record<string, number>>, after: Record<string, Record<string, number>>): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [b, kinds] of Object.entries(after)) {
    out[b] = {};
    for (const [k, s] of Object.entries(kinds)) out[b]![k] = Math.max(0, s - (before[b]?.[k] ?? 0));
  }
  return out;
}
