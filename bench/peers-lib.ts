/**
 * What bench/peers measures on every set-up alike (Understudy, keepalived, QEMU COLO), with the
 * same client (the load generator in the service network, against 192.0.2.10:5000):
 *  - latency and throughput, protected (P) against the same guest unprotected (U: the backup board
 *    powered off), alternated in one run, the request mix of bench/replication-cost;
 *  - a fault under bench/hangs.ts's load (RATE requests/s, each retried every RETRY_MS) → the first
 *    reply after the clients' silence; what the client saw acknowledged and the survivor lacks;
 *    fault → protected again;
 *  - CPU and memory per board while protected and idle.
 * A run that meets the error path (an ERR reply the set-up's own design does not explain, a request
 * never answered) throws: no figure from it.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { PACKAGE_ROOT, SERVICE_CLIENT_ADDRESS, SERVICE_PORT, SERVICE_VIP, type BoardName, type ChassisLayout } from '../src/sim/chassis/layout.js';
import { startLoad } from '../src/sim/pair.js';
import { GAP_MS, type LoadResult } from '../src/sim/load.js';
import { RATE, RETRY_MS } from './hangs.js';
import { procTable, processKind } from './cost-lib.js';
import { summarize } from './lib.js';

export type FaultKind = 'kill' | 'power' | 'guest';
export const FAULT_KINDS: FaultKind[] = ['kill', 'power', 'guest'];
export const MIX = 'reg=1,get=59,call=40';
/** Subscribers for GETs and calls, registered once per guest (≥ 2 × 16 + 2 for 16 outstanding). */
export const POOL = 'P:40';
/** The clients' silence that follows a fault may begin this long after it (as in bench/hangs.ts). */
export const SILENCE_STARTS_WITHIN_MS = 50;
/** The fault round's load: bench/hangs.ts's (RATE/s, retry RETRY_MS, 8 outstanding), the fault 2.5 s in. */
export const FAULT_LOAD = { rate: RATE, retryMs: RETRY_MS, durationMs: 4000, faultAfterMs: 2500 };
/** Replies a set-up that keeps no state gives after its takeover: the survivor never knew the subscriber, or the call (END of a call the old master set up). */
export const LOST_STATE_REPLY = / ERR (UNKNOWN|NOCALL) /;

export interface FaultSample {
  kind: FaultKind;
  firstGoodReply: number;
  /** No silence longer than GAP_MS followed the fault: firstGoodReply is that bound. */
  withinResolution?: boolean;
  protectedAgain: number;
  ackedRegs: number;
  lostRegs: number;
  ackedCalls: number;
  lostCalls: number;
  /** Requests the clients saw answered in the round. */
  answered: number;
  /** ERR replies explained by lost state (a call between subscribers the survivor never knew). */
  lostStateReplies: number;
}

export interface ArmFigures { p50: number; p99: number; throughput: number }
export interface BoardFootprint { board: string; haCpuPct: number; guestCpuPct: number; haRssMb: number; guestRssMb: number }

export type PeerRow =
  | { setup: string; runnable: true; faults: FaultSample[]; protectedArm: ArmFigures[]; unprotectedArm: ArmFigures[]; footprint: BoardFootprint[]; notes: string[] }
  | { setup: string; runnable: false; reason: string; notes: string[] };

/** What must be undone if the run is interrupted (^C, SIGTERM): each set-up registers its own teardown while it runs. */
export const teardowns = new Set<() => Promise<unknown>>();

/** Runs `body` with `teardown` registered for an interruption, and runs `teardown` after it in any case. */
export async function withTeardown<T>(teardown: () => Promise<unknown>, body: () => Promise<T>): Promise<T> {
  teardowns.add(teardown);
  try {
    return await body();
  } finally {
    teardowns.delete(teardown);
    await teardown();
  }
}

/** startLoad needs only the service namespace of a layout. */
export const serviceLayout = (serviceNetns: string): ChassisLayout => ({ serviceNetns }) as ChassisLayout;

/**
 * Requests from one client in `netns` (by default the service network's client, to the service
 * address), each retried every 200 ms up to `tries` times.
 */
export async function ask(netns: string, requests: string[], tries = 100, to = { address: SERVICE_VIP, port: SERVICE_PORT, bind: SERVICE_CLIENT_ADDRESS }): Promise<string[]> {
  const script = `import { UdpClient } from ${JSON.stringify(`${PACKAGE_ROOT}/dist/src/sim/udp-client.js`)};
const c = await new UdpClient({ address: ${JSON.stringify(to.address)}, port: ${to.port} }, ${JSON.stringify(to.bind)}).open();
const out = [];
for (const [i, r] of ${JSON.stringify(requests)}.entries()) out.push(await c.request('b' + process.pid + 'x' + i, r, 200, ${tries}));
c.close();
console.log(JSON.stringify(out));`;
  const { stdout } = await promisify(execFile)('ip', ['netns', 'exec', netns, process.execPath, '--input-type=module', '-e', script], { timeout: 120000 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as string[];
}

/** The guest's `total` (calls set up since its state began), asked as `ask` asks. */
export async function callsTotal(netns: string, to?: Parameters<typeof ask>[3]): Promise<number> {
  const [r] = await ask(netns, ['STATS'], 100, to);
  const m = / OK STATS subs=\d+ active=\d+ total=(\d+) /.exec(r!);
  if (!m) throw new Error(`STATS answered "${r}"`);
  return Number(m[1]);
}

/** One closed-loop run of the mix (1 or 16 outstanding); any ERR or loss throws. */
export async function mixRun(serviceNetns: string, window: number, seconds: number, tag: string): Promise<LoadResult> {
  const r = await startLoad(serviceLayout(serviceNetns), { rate: 0, window, durationMs: seconds * 1000, tag, retryMs: 200, verify: true, mix: MIX, pool: POOL }).result;
  const v = r.verify!;
  if (r.errorReplies || v.missing.length || v.retriedDifferent.length || v.callIdsReused.length) {
    throw new Error(`${tag}: ${r.errorReplies} ERR replies (${r.errorSamples.join('; ')}), ${v.missing.length} lost, ${v.retriedDifferent.length} re-sent ids answered differently, ${v.callIdsReused.length} call ids reused: no figure from this run`);
  }
  return r;
}

/** P or U: latency at 1 outstanding, throughput at 16. */
export async function armFigures(serviceNetns: string, seconds: number, tag: string): Promise<ArmFigures> {
  const one = await mixRun(serviceNetns, 1, seconds, `${tag}a`);
  const sixteen = await mixRun(serviceNetns, 16, seconds, `${tag}b`);
  return { p50: one.latency.p50, p99: one.latency.p99, throughput: sixteen.throughput };
}

/**
 * A fault under load. `inject` applies it and returns its instant (ms); afterwards `recover` brings
 * the failed side back and resolves when the pair is protected again. `statelessOk`: the set-up
 * keeps no state across a takeover, so ERR UNKNOWN replies after the fault are its lost state, not
 * the error path. Calls lost: those acknowledged in the round that the survivor's call counter
 * (STATS total, after − before) does not account for.
 */
export async function faultRound(o: {
  serviceNetns: string; kind: FaultKind; tag: string; statelessOk: boolean;
  inject: () => Promise<number>; recover: () => Promise<void>;
  /** The survivor's call counter before the round; default: the service's (a replica has the same). */
  survivorTotal?: () => Promise<number>;
  /** How long the load runs (default FAULT_LOAD's): long enough to see a slow recovery's first reply. */
  durationMs?: number;
  /** How long a request may go unanswered before the round fails (the load's --give-up). */
  giveUpMs?: number;
  /** The load's mix: a registration every n-th step (default: the load's own, 3 in 4). A long round needs a sparse one (the guest holds 4096). */
  regEvery?: number;
  /**
   * The silence that counts begins within this long of the fault (default SILENCE_STARTS_WITHIN_MS):
   * more where the fault takes a while to land (a board powered off with a cluster in it answers
   * for another ~100 ms while its processes are killed).
   */
  silenceStartsWithinMs?: number;
}): Promise<FaultSample> {
  const total0 = await (o.survivorTotal ?? (() => callsTotal(o.serviceNetns)))();
  const load = startLoad(serviceLayout(o.serviceNetns), { rate: FAULT_LOAD.rate, durationMs: o.durationMs ?? FAULT_LOAD.durationMs, tag: o.tag, retryMs: FAULT_LOAD.retryMs, giveUpMs: o.giveUpMs, regEvery: o.regEvery, verify: true });
  load.result.catch(() => undefined);
  await new Promise((r) => setTimeout(r, FAULT_LOAD.faultAfterMs));
  const tFault = await o.inject();
  let recovered: Promise<number> | undefined;
  try {
    recovered = o.recover().then(() => Date.now() - tFault);
    recovered.catch(() => undefined);
    const res = await load.result;
    const v = res.verify!;
    const what = `${o.kind} ${o.tag}`;
    // A guest limit reached measures the limit, not the fault, in either arm (the samples below hold only 5 replies).
    if (res.limitReplies) throw new Error(`${what}: the guest answered ERR FULL ${res.limitReplies} times: a limit was reached; no figure from this round`);
    const unexplained = res.errorReplies - (o.statelessOk ? res.errorSamples.filter((s) => LOST_STATE_REPLY.test(s)).length : 0);
    if (!o.statelessOk && (res.errorReplies || v.missing.length || v.retriedDifferent.length || v.callIdsReused.length)) {
      throw new Error(`${what}: ${res.errorReplies} ERR (${res.errorSamples.join('; ')}), ${v.missing.length} acknowledged registrations lost, ${v.retriedDifferent.length} re-sent ids answered differently, ${v.callIdsReused.length} call ids reused`);
    }
    if (o.statelessOk && res.errorSamples.some((s) => !LOST_STATE_REPLY.test(s))) throw new Error(`${what}: ERR replies not explained by lost state: ${res.errorSamples.join('; ')} (${unexplained})`);
    // The fault's silence: the longest that begins within the window (not the one ending last: a
    // later pause of a few tens of ms inside a 1 s window was taken for it, 930 ms for a 20 ms takeover).
    const silence = res.gaps.filter(([from, to]) => to > tFault && from <= tFault + (o.silenceStartsWithinMs ?? SILENCE_STARTS_WITHIN_MS)).sort((a, b) => (b[1] - b[0]) - (a[1] - a[0]))[0];
    // No silence longer than the load's resolution (GAP_MS): the first good reply came within it.
    const firstGoodReply = silence ? silence[1] - tFault : GAP_MS;
    const total1 = Number(/total=(\d+)/.exec(v.stats)?.[1] ?? NaN);
    const kept = total1 - total0;
    const protectedAgain = await recovered;
    return {
      kind: o.kind, firstGoodReply, withinResolution: !silence, protectedAgain,
      ackedRegs: res.registered, lostRegs: v.missing.length, ackedCalls: res.calls,
      lostCalls: Math.min(res.calls, Math.max(0, res.calls - (Number.isFinite(kept) ? kept : 0))),
      answered: res.acked, lostStateReplies: res.errorReplies,
    };
  } finally {
    await recovered?.catch(() => undefined);
  }
}

function rssMb(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

/** Every process under each board's roots (the roots, their groups, their descendants), split guest (QEMU) / the rest. */
function boardProcesses(roots: Record<string, number[]>): Record<string, { guest: number[]; ha: number[]; cpu: Map<number, number> }> {
  const t = procTable();
  const out: Record<string, { guest: number[]; ha: number[]; cpu: Map<number, number> }> = {};
  for (const [board, rs] of Object.entries(roots)) {
    const mine = new Set<number>(rs.filter((p) => t.has(p)));
    for (let grew = true; grew;) {
      grew = false;
      for (const [pid, p] of t) if (!mine.has(pid) && (mine.has(p.ppid) || rs.includes(p.pgid))) { mine.add(pid); grew = true; }
    }
    const o = { guest: [] as number[], ha: [] as number[], cpu: new Map<number, number>() };
    for (const pid of mine) {
      const p = t.get(pid)!;
      (processKind(p) === 'qemu' ? o.guest : o.ha).push(pid);
      o.cpu.set(pid, p.cpuS);
    }
    out[board] = o;
  }
  return out;
}

/** CPU (% of one core) and resident memory per board over `seconds` while nothing else is asked of it. */
export async function footprint(roots: () => Promise<Record<string, number[]>>, seconds: number): Promise<BoardFootprint[]> {
  const before = boardProcesses(await roots());
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const after = boardProcesses(await roots());
  return Object.entries(after).map(([board, a]) => {
    const cpu = (pids: number[]) => pids.reduce((s, pid) => s + Math.max(0, a.cpu.get(pid)! - (before[board]?.cpu.get(pid) ?? a.cpu.get(pid)!)), 0);
    const rss = (pids: number[]) => pids.reduce((s, pid) => s + rssMb(pid), 0);
    return { board, haCpuPct: (100 * cpu(a.ha)) / seconds, guestCpuPct: (100 * cpu(a.guest)) / seconds, haRssMb: rss(a.ha), guestRssMb: rss(a.guest) };
  });
}

const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : '-');
const f2 = (n: number) => (Number.isFinite(n) ? n.toFixed(2) : '-');
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

/** The one table: a row per set-up and fault kind; the load and footprint columns on each set-up's first row. */
export function peersTable(rows: PeerRow[]): Array<Array<string | number>> {
  const out: Array<Array<string | number>> = [[
    'set-up', 'fault', 'n', 'fault → first good reply p50 / p99 ms', 'acknowledged lost: registrations / calls (answered)', 'protected again p50 / max s',
    'latency p50 / p99 ms (× unprotected)', 'throughput req/s (× unprotected)', 'per board, idle: CPU % HA + guest; RSS MB HA + guest',
  ]];
  for (const r of rows) {
    if (!r.runnable) {
      out.push([r.setup, 'all', 0, 'not runnable', 'not runnable', 'not runnable', 'not runnable', 'not runnable', `not runnable: ${r.reason.split('\n')[0]!.slice(0, 160)}`]);
      continue;
    }
    const P = r.protectedArm;
    const U = r.unprotectedArm;
    const ratio = (f: (a: ArmFigures) => number) => P.map((p, i) => f(p) / f(U[i]!));
    // The mean of the per-round ratios (P and U alternated in each round), with their range: the spread.
    const spreadOf = (v: number[]) => `${f2(mean(v))} [${f2(Math.min(...v))}–${f2(Math.max(...v))}]`;
    const lat = `${f2(mean(P.map((a) => a.p50)))} / ${f2(mean(P.map((a) => a.p99)))} (${spreadOf(ratio((a) => a.p50))} / ${spreadOf(ratio((a) => a.p99))})`;
    const tput = `${f0(mean(P.map((a) => a.throughput)))} (${spreadOf(ratio((a) => a.throughput))})`;
    const fp = r.footprint.map((b) => `${b.board}: ${b.haCpuPct.toFixed(1)} + ${b.guestCpuPct.toFixed(1)} %; ${f0(b.haRssMb)} + ${f0(b.guestRssMb)} MB`).join('; ');
    FAULT_KINDS.forEach((kind, i) => {
      const s = r.faults.filter((x) => x.kind === kind);
      const first = summarize(s.map((x) => x.firstGoodReply));
      const again = summarize(s.map((x) => x.protectedAgain / 1000));
      const sum = (g: (x: FaultSample) => number) => s.reduce((a, x) => a + g(x), 0);
      out.push([i === 0 ? r.setup : '', kind, s.length,
        s.length ? `${f0(first.p50)} / ${f0(first.p99)}${s.some((x) => x.withinResolution) ? ` (${s.filter((x) => x.withinResolution).length}× ≤ ${GAP_MS})` : ''}` : '-',
        s.length ? `${sum((x) => x.lostRegs)} / ${sum((x) => x.lostCalls)} (${sum((x) => x.answered)})` : '-',
        s.length ? `${again.p50.toFixed(1)} / ${again.max.toFixed(1)}` : '-',
        i === 0 ? lat : '', i === 0 ? tput : '', i === 0 ? fp : '']);
    });
  }
  return out;
}

export type { BoardName };
