/**
 * bench/daemon: the controller's footprint and the CLI's responsiveness on a board with its guest.
 *  - --mode pair (default): the simulated chassis (chassis `bdm`, guest on the primary), both boards.
 *    Per board: the controller (understudyd) and its membership process, each with RSS and PSS from
 *    /proc/<pid>/smaps_rollup, and the board total three ways: RSS summed (counts the Node binary's
 *    pages twice), PSS summed (shared pages split among every process that maps them, on this
 *    machine), and distinct resident pages (the two processes' page frames from /proc/<pid>/pagemap,
 *    each counted once: what the board's controller really holds in RAM). CPU from utime+stime.
 *  - --mode standalone: one board without a partner (no membership process), as before.
 *  QEMU (the guest) is reported on its own line. Targets: board controller total ≤ 100 MB,
 *  ≤ 2 % of a core idle.
 *  - Round-trip latency p50/p99 of a CLI command (a new CLI process each time, as an operator or a
 *    script runs it: `understudy status --json`; `guest status --json` standalone) and of a raw
 *    control request (callControl 'ping').
 * Usage: node dist/bench/daemon.js [--mode pair|standalone] [--seconds S] [--settle S] [--cli N] [--pings N]
 * (--settle: seconds between the pair becoming protected and the sampling, default 30.)
 */
import { execFile } from 'node:child_process';
import { closeSync, openSync, readFileSync, readSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { loadBoardProfile } from '../src/config/board-profile.js';
import { PACKAGE_ROOT } from '../src/cli/locate.js';
import { controlSocketPath } from '../src/mgmt/paths.js';
import { callControl } from '../src/mgmt/ipc.js';
import { parseProcStat } from '../src/hw/proc-state.js';
import { Chassis } from '../src/sim/chassis/rig.js';
import { machine, printTable, summarize } from './lib.js';
import { startStandaloneBoard } from './standalone-board.js';

const run = promisify(execFile);
const { values: args } = parseArgs({
  options: {
    mode: { type: 'string', default: 'pair' },
    seconds: { type: 'string', default: '60' },
    settle: { type: 'string', default: '30' },
    cli: { type: 'string', default: '50' },
    pings: { type: 'string', default: '500' },
  },
});
const MODE = args.mode;
if (MODE !== 'pair' && MODE !== 'standalone') throw new Error(`--mode: pair or standalone, not ${MODE}`);
const SECONDS = Number(args.seconds);
const SETTLE_S = Number(args.settle);
const CLI_RUNS = Number(args.cli);
const PINGS = Number(args.pings);
const CLI = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');

interface ProcSample {
  pid: number;
  comm: string;
  ppid: number;
  /** utime + stime, clock ticks */
  ticks: number;
}

function readStat(pid: number): ProcSample | undefined {
  try {
    const st = parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    return { pid, comm: st.name, ppid: Number(st.field(4)), ticks: st.cpuTicks };
  } catch {
    return undefined;
  }
}

/** Rss and Pss of a process, MB, from smaps_rollup. */
function rollup(pid: number): { rss: number; pss: number } {
  try {
    const t = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(t)?.[1] ?? 0);
    return { rss: kb('Rss') / 1024, pss: kb('Pss') / 1024 };
  } catch {
    return { rss: 0, pss: 0 };
  }
}

/**
 * The resident page frames of a process (root: /proc/<pid>/pagemap shows frame numbers). Only the
 * mappings smaps reports resident are read.
 */
function frames(pid: number, into: Set<number>): void {
  let smaps: string;
  let fd: number;
  try {
    smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
    fd = openSync(`/proc/${pid}/pagemap`, 'r');
  } catch {
    return;
  }
  try {
    let range: [number, number] | undefined;
    for (const line of smaps.split('\n')) {
      const h = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line);
      if (h) { range = [Number.parseInt(h[1]!, 16) / 4096, Number.parseInt(h[2]!, 16) / 4096]; continue; }
      if (!range || !line.startsWith('Rss:')) continue;
      const [first, end] = range;
      range = undefined;
      if (/^Rss:\s+0 kB/.test(line)) continue;
      const buf = Buffer.alloc((end - first) * 8);
      readSync(fd, buf, 0, buf.length, first * 8);
      for (let i = 0; i < end - first; i++) {
        const hi = buf.readUInt32LE(i * 8 + 4);
        if (hi & 0x80000000) into.add((hi & 0x7fffff) * 2 ** 32 + buf.readUInt32LE(i * 8)); // bit 63 present, bits 0-54 frame
      }
    }
  } finally {
    closeSync(fd);
  }
}

/** Resident memory of a set of processes, each page counted once, MB. */
function distinctMb(pids: number[]): number {
  const set = new Set<number>();
  for (const p of pids) frames(p, set);
  return (set.size * 4096) / 1048576;
}

/** The controller and its descendants, split into QEMU and the rest. */
function tree(root: number): { controller: number[]; qemu: number[] } {
  const all = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map((d) => readStat(Number(d))).filter((p): p is ProcSample => !!p);
  const children = new Map<number, ProcSample[]>();
  for (const p of all) children.set(p.ppid, [...(children.get(p.ppid) ?? []), p]);
  const controller = [root];
  const qemu: number[] = [];
  const walk = (pid: number) => {
    for (const c of children.get(pid) ?? []) {
      if (c.comm.startsWith('qemu-system')) qemu.push(c.pid); else controller.push(c.pid);
      walk(c.pid);
    }
  };
  walk(root);
  return { controller, qemu };
}

const ticks = (pids: number[]) => pids.reduce((a, p) => a + (readStat(p)?.ticks ?? 0), 0);

async function clkTck(): Promise<number> {
  try {
    return Number((await run('getconf', ['CLK_TCK'])).stdout.trim()) || 100;
  } catch {
    return 100;
  }
}

const avg = (xs: number[]) => (xs.length ? xs.reduce((a, x) => a + x, 0) / xs.length : 0);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Per-second samples of one group of processes (a controller, a membership process, a QEMU…). */
class Footprint {
  rss: number[] = [];
  pss: number[] = [];
  distinct: number[] = [];
  private t0 = 0;
  private c0 = 0;
  cpu = 0;
  constructor(readonly label: string, private pids: () => number[], private withDistinct = false) {}
  start(): void { this.t0 = performance.now(); this.c0 = ticks(this.pids()); }
  sample(): void {
    const pids = this.pids();
    const r = pids.map(rollup);
    this.rss.push(r.reduce((a, x) => a + x.rss, 0));
    this.pss.push(r.reduce((a, x) => a + x.pss, 0));
    if (this.withDistinct) this.distinct.push(distinctMb(pids));
  }
  finish(hz: number): void { this.cpu = ((ticks(this.pids()) - this.c0) / hz / ((performance.now() - this.t0) / 1000)) * 100; }
  row(): Array<string | number> {
    return [this.label, avg(this.rss), Math.max(...this.rss), avg(this.pss), this.withDistinct ? avg(this.distinct) : '-', this.withDistinct ? Math.max(...this.distinct) : '-', this.cpu];
  }
}

const HEADER = ['process', 'RSS avg MB', 'RSS max MB', 'PSS avg MB', 'distinct avg MB', 'distinct max MB', 'CPU % of a core'];

async function sampleIdle(groups: Footprint[]): Promise<number> {
  const hz = await clkTck();
  process.stderr.write(`sampling the idle controller(s) for ${SECONDS} s…\n`);
  const t0 = performance.now();
  for (const g of groups) g.start();
  for (let i = 0; i < SECONDS; i++) {
    await sleep(1000);
    for (const g of groups) g.sample();
  }
  for (const g of groups) g.finish(hz);
  return (performance.now() - t0) / 1000;
}

async function latency(sock: string, cliArgs: string[]): Promise<Array<Array<string | number>>> {
  process.stderr.write(`${PINGS} raw pings…\n`);
  for (let i = 0; i < 20; i++) await callControl(sock, 'ping'); // warm-up
  const pings: number[] = [];
  for (let i = 0; i < PINGS; i++) {
    const t = performance.now();
    await callControl(sock, 'ping');
    pings.push(performance.now() - t);
  }
  process.stderr.write(`${CLI_RUNS} CLI runs…\n`);
  const clis: number[] = [];
  for (let i = 0; i < CLI_RUNS; i++) {
    const t = performance.now();
    const r = await run(process.execPath, [CLI, ...cliArgs], { timeout: 30000 });
    clis.push(performance.now() - t);
    if (i === 0) JSON.parse(r.stdout); // it really answered
  }
  const nodeStart: number[] = [];
  for (let i = 0; i < Math.min(CLI_RUNS, 20); i++) {
    const t = performance.now();
    await run(process.execPath, ['-e', '0']);
    nodeStart.push(performance.now() - t);
  }
  const ps = summarize(pings);
  const cs = summarize(clis);
  const ns = summarize(nodeStart);
  return [
    ['what', 'n', 'p50 ms', 'p99 ms', 'max ms'],
    ["callControl(sock, 'ping') (connect, request, reply)", ps.n, ps.p50, ps.p99, ps.max],
    [`understudy ${cliArgs.filter((a) => !a.startsWith('/')).join(' ').replace(' --board', '')} (new CLI process)`, cs.n, cs.p50, cs.p99, cs.max],
    ['of which: node -e 0 (bare Node start, for scale)', ns.n, ns.p50, ns.p99, ns.max],
  ];
}

/** The controller's processes (itself and its non-QEMU descendants) and its QEMU. */
const controllerPids = (root: () => number | undefined) => () => { const r = root(); return r ? tree(r).controller : []; };

async function pair(): Promise<void> {
  const chassis = await Chassis.up({ name: 'bdm', guest: 'primary', timeoutMs: 120000 });
  try {
    const boards = ['sim-a', 'sim-b'] as const;
    const pid: Record<string, number | undefined> = {};
    for (const b of boards) pid[b] = (await chassis.board(b)).controller?.pid;
    const sock = (b: string) => controlSocketPath(loadBoardProfile(chassis.layout.boards[b as 'sim-a'].profile));
    // Wait for the guest to run and the backup to hold its clone: the steady state of a pair.
    process.stderr.write('waiting for the pair to be protected (guest booted, clone on the backup)…\n');
    let primary: string | undefined;
    for (let i = 0; i < 240 && !primary; i++) {
      for (const b of boards) {
        const st = (await callControl(sock(b), 'status').catch(() => undefined)) as { role?: string; replication?: { protected?: boolean } } | undefined;
        if (st?.role === 'PRIMARY' && st.replication?.protected) primary = b;
      }
      if (!primary) await sleep(500);
    }
    if (!primary) throw new Error('the pair did not become protected within 120 s');
    // The clone leaves the primary's controller with garbage and freed buffers for a while, until V8's
    // memory reducer and malloc give them back: idle means after that.
    process.stderr.write(`primary ${primary}, protected; settling ${SETTLE_S} s…\n`);
    await sleep(SETTLE_S * 1000);
    const groups: Footprint[] = [];
    for (const b of boards) {
      const root = () => pid[b];
      const membership = () => controllerPids(root)().slice(1);
      groups.push(
        new Footprint(`${b} controller (understudyd)`, () => controllerPids(root)().slice(0, 1)),
        new Footprint(`${b} membership process`, membership),
        new Footprint(`${b} board total (both processes)`, controllerPids(root), true),
        new Footprint(`${b} QEMU guest`, () => { const r = root(); return r ? tree(r).qemu : []; }),
      );
    }
    const elapsedS = await sampleIdle(groups);
    const lat = await latency(sock(primary), ['status', '--json', '--board', chassis.layout.boards[primary as 'sim-a'].profile]);
    console.log(`\nbench/daemon --mode pair — ${new Date().toISOString()} — ${machine()}`);
    printTable(`idle footprint over ${elapsedS.toFixed(1)} s, simulated pair, guest on ${primary} (primary), clone on the backup ` +
      '(target: board total ≤ 100 MB, ≤ 2 % of a core). RSS sums count shared pages (the Node binary) once per process; ' +
      'PSS splits them among every process on this machine that maps them; distinct counts each resident page of the board once', [
      HEADER, ...groups.map((g) => g.row()),
    ]);
    printTable('control round trip (primary)', lat);
  } finally {
    await chassis.down({ purge: true });
  }
}

async function standalone(): Promise<void> {
  const board = await startStandaloneBoard('daemon');
  try {
    const root = board.daemonPid;
    process.stderr.write(`controller pid ${root} up; settling 5 s…\n`);
    await sleep(5000);
    const groups = [
      new Footprint('controller (understudyd, no partner)', () => tree(root).controller, true),
      new Footprint('QEMU guest', () => tree(root).qemu),
    ];
    const elapsedS = await sampleIdle(groups);
    const lat = await latency(board.socket, ['guest', 'status', '--json', '--board', board.boardFile]);
    console.log(`\nbench/daemon --mode standalone — ${new Date().toISOString()} — ${machine()}`);
    printTable(`idle footprint over ${elapsedS.toFixed(1)} s with the guest running (target: controller ≤ 100 MB, ≤ 2 % of a core)`, [
      HEADER, ...groups.map((g) => g.row()),
    ]);
    printTable('control round trip', lat);
  } finally {
    await board.stop();
  }
}

await (MODE === 'pair' ? pair() : standalone());
