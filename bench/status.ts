/**
 * bench/status: how long `understudy status --json` takes, as an operator or a polling script runs it
 * (a new CLI process each time, against a running controller with its guest). Target: p50 under
 * 150 ms on a machine where a bare Node start (`node -e 0`) is ~75 ms.
 *
 * The runs are interleaved round by round (this build's CLI, then `node -e 0`, then, with --compare,
 * another build's CLI against the same controller), so a load that comes and goes on a shared
 * machine hits each the same way. Every CLI run must print a status (it is parsed).
 *
 * Usage: node dist/bench/status.js [--runs N] [--compare <package root of another build>]
 *   e.g. --compare /work/main (its dist/ must be built): before/after in one run.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { PACKAGE_ROOT } from '../src/cli/locate.js';
import { machine, printTable, summarize } from './lib.js';
import { startStandaloneBoard } from './standalone-board.js';

const run = promisify(execFile);
const { values: args } = parseArgs({ options: { runs: { type: 'string', default: '60' }, compare: { type: 'string' } } });
const RUNS = Number(args.runs);
if (!(RUNS >= 5)) throw new Error('--runs: at least 5');

const board = await startStandaloneBoard('status', '127.0.252.1');
try {
  const cli = (root: string) => [join(root, 'bin', 'understudy'), 'status', '--json', '--board', board.boardFile];
  const kinds: Array<{ label: string; argv: string[]; check: boolean }> = [
    { label: `understudy status --json (this build, ${PACKAGE_ROOT})`, argv: cli(PACKAGE_ROOT), check: true },
    { label: 'node -e 0 (bare Node start, for scale)', argv: ['-e', '0'], check: false },
  ];
  if (args.compare) kinds.push({ label: `understudy status --json (${args.compare})`, argv: cli(args.compare), check: true });
  const times = kinds.map(() => [] as number[]);
  process.stderr.write(`controller pid ${board.daemonPid} up; ${RUNS} rounds of ${kinds.length} runs…\n`);
  for (const k of kinds) await run(process.execPath, k.argv); // warm the page cache
  for (let i = 0; i < RUNS; i++) {
    for (const [j, k] of kinds.entries()) {
      const t = performance.now();
      const r = await run(process.execPath, k.argv, { timeout: 30000 });
      times[j]!.push(performance.now() - t);
      if (k.check) {
        const st = JSON.parse(r.stdout) as { role?: string };
        if (!st.role) throw new Error(`${k.label}: no role in its output`);
      }
    }
  }
  const rows = kinds.map((k, j) => { const s = summarize(times[j]!); return [k.label, s.n, s.p50, s.p99, s.max]; });
  console.log(`\nbench/status — ${new Date().toISOString()} — ${machine()}`);
  printTable('a new CLI process per run, against one standalone controller with its guest (target: status p50 < 150 ms)', [
    ['what', 'n', 'p50 ms', 'p99 ms', 'max ms'], ...rows,
  ]);
} finally {
  await board.stop();
}
