/**
 * bench/daemon: the controller's footprint and the CLI's responsiveness on a board with its guest.
 *  - RSS and CPU of the idle controller over --seconds (default 60) with its guest running: VmRSS
 *    from /proc/<pid>/status summed over the controller and its non-QEMU descendants, and
 *    utime+stime deltas from /proc/<pid>/stat; QEMU (the guest) reported on its own line.
 *    Targets: ≤ 100 MB RSS and ≤ 2 % of a core for the controller.
 *  - Round-trip latency p50/p99 of `understudy guest status --json` (a new CLI process each time,
 *    as an operator or a script runs it) and of a raw control request (callControl 'ping').
 * The board is a copy of sim-a without ha/partner/watchdog/fencing/console (one board on its own).
 * Usage: node dist/bench/daemon.js [--seconds S] [--cli N] [--pings N]
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { loadBoardProfile } from '../src/config/board-profile.js';
import { PACKAGE_ROOT } from '../src/cli/locate.js';
import { startDaemonInBackground } from '../src/cli/guest-commands.js';
import { controlSocketPath } from '../src/mgmt/daemon.js';
import { callControl } from '../src/mgmt/ipc.js';
import { Hlr } from '../src/sim/hlr.js';
import { machine, printTable, summarize } from './lib.js';

const run = promisify(execFile);
const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '60' },
    cli: { type: 'string', default: '50' },
    pings: { type: 'string', default: '500' },
  },
});
const SECONDS = Number(args.seconds);
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
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = s.lastIndexOf(')');
    const comm = s.slice(s.indexOf('(') + 1, close);
    const f = s.slice(close + 2).split(' '); // f[0] = state (field 3)
    return { pid, comm, ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) }; // utime = field 14, stime = 15
  } catch {
    return undefined;
  }
}

function rssKb(pid: number): number {
  try {
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
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
const rss = (pids: number[]) => pids.reduce((a, p) => a + rssKb(p), 0) / 1024;

async function clkTck(): Promise<number> {
  try {
    return Number((await run('getconf', ['CLK_TCK'])).stdout.trim()) || 100;
  } catch {
    return 100;
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'us-bench-daemon-'));
  const b = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board', 'sim-a.json'), 'utf8'));
  for (const k of ['ha', 'partner', 'watchdog', 'fencing', 'console']) delete b[k];
  b.storageDir = join(dir, 'store');
  b.service = { address: '127.0.251.1', port: 5000 };
  b.externalServices = { auth: { address: '127.0.251.100', port: 7000 } };
  const boardFile = join(dir, 'board.json');
  writeFileSync(boardFile, JSON.stringify(b));
  const guestFile = join(PACKAGE_ROOT, 'guests', 'dx-legacy.json');
  const board = loadBoardProfile(boardFile);
  const sock = controlSocketPath(board);
  const hlr = new Hlr({ ...b.externalServices.auth });
  await hlr.start();
  let daemonPid: number | undefined;
  try {
    daemonPid = await startDaemonInBackground(boardFile, guestFile, 120000);
    const hz = await clkTck();
    process.stderr.write(`controller pid ${daemonPid} up; settling 5 s…\n`);
    await new Promise((r) => setTimeout(r, 5000));

    // --- idle footprint
    process.stderr.write(`sampling the idle controller for ${SECONDS} s…\n`);
    const rssCtl: number[] = [];
    const rssQemu: number[] = [];
    let procs = tree(daemonPid);
    const t0 = performance.now();
    const c0 = ticks(procs.controller);
    const q0 = ticks(procs.qemu);
    for (let i = 0; i < SECONDS; i++) {
      await new Promise((r) => setTimeout(r, 1000));
      procs = tree(daemonPid);
      rssCtl.push(rss(procs.controller));
      rssQemu.push(rss(procs.qemu));
    }
    const elapsedS = (performance.now() - t0) / 1000;
    const cpuCtl = ((ticks(procs.controller) - c0) / hz / elapsedS) * 100;
    const cpuQemu = ((ticks(procs.qemu) - q0) / hz / elapsedS) * 100;
    const st = summarize(rssCtl);
    const sq = summarize(rssQemu);

    // --- latency
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
      const r = await run(process.execPath, [CLI, 'guest', 'status', '--json', '--board', boardFile], { timeout: 30000 });
      clis.push(performance.now() - t);
      if (i === 0) JSON.parse(r.stdout); // it really answered
    }
    const nodeStart: number[] = [];
    for (let i = 0; i < Math.min(CLI_RUNS, 20); i++) {
      const t = performance.now();
      await run(process.execPath, ['-e', '0']);
      nodeStart.push(performance.now() - t);
    }

    const avg = (xs: number[]) => xs.reduce((a, x) => a + x, 0) / xs.length;
    console.log(`\nbench/daemon — ${new Date().toISOString()} — ${machine()}`);
    printTable(`idle footprint over ${elapsedS.toFixed(1)} s with the guest running (target: controller ≤ 100 MB RSS, ≤ 2 % of a core)`, [
      ['process', 'RSS avg MB', 'RSS max MB', 'CPU % of a core'],
      [`controller (${procs.controller.length} process${procs.controller.length > 1 ? 'es' : ''})`, avg(rssCtl), st.max, cpuCtl],
      [`QEMU guest (${procs.qemu.length})`, avg(rssQemu), sq.max, cpuQemu],
    ]);
    const ps = summarize(pings);
    const cs = summarize(clis);
    const ns = summarize(nodeStart);
    printTable('control round trip', [
      ['what', 'n', 'p50 ms', 'p99 ms', 'max ms'],
      ["callControl(sock, 'ping') (connect, request, reply)", ps.n, ps.p50, ps.p99, ps.max],
      ['understudy guest status --json (new CLI process)', cs.n, cs.p50, cs.p99, cs.max],
      ['of which: node -e 0 (bare Node start, for scale)', ns.n, ns.p50, ns.p99, ns.max],
    ]);
  } finally {
    if (daemonPid) {
      const qemuPidFile = join(board.storageDir, 'qemu.pid');
      const qemu = existsSync(qemuPidFile) ? Number.parseInt(readFileSync(qemuPidFile, 'utf8'), 10) : undefined;
      try { process.kill(daemonPid, 'SIGTERM'); } catch { /* gone */ }
      for (let i = 0; i < 200; i++) { try { process.kill(daemonPid, 0); } catch { break; } await new Promise((r) => setTimeout(r, 50)); }
      try { process.kill(daemonPid, 'SIGKILL'); } catch { /* gone */ }
      if (qemu && existsSync(`/proc/${qemu}`) && readFileSync(`/proc/${qemu}/cmdline`, 'utf8').includes(board.storageDir)) process.kill(qemu, 'SIGKILL');
    }
    hlr.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
