/** Shared helpers of the benchmark scripts: percentiles, a text table, machine description. */
import { execFileSync } from 'node:child_process';
import { cpus, totalmem } from 'node:os';
import { readFileSync } from 'node:fs';
import { PACKAGE_ROOT } from '../src/sim/chassis/layout.js';
export { percentile, summarize, type LatencySummary } from '../src/sim/stats.js';

/** A markdown table under a title, as text. */
export function table(title: string, rows: Array<Array<string | number>>): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? (Number.isInteger(c) ? String(c) : c.toFixed(3)) : c)));
  const w = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const lines = [`\n${title}`];
  cells.forEach((r, k) => {
    lines.push(`| ${r.map((c, i) => c.padEnd(w[i]!)).join(' | ')} |`);
    if (k === 0) lines.push(`|${w.map((x) => '-'.repeat(x + 2)).join('|')}|`);
  });
  return lines.join('\n');
}

export function printTable(title: string, rows: Array<Array<string | number>>): void {
  console.log(table(title, rows));
}

/** On SIGINT or SIGTERM (the first one only): runs `cleanup`, then exits 130. */
export function cleanUpOnSignal(cleanup: () => Promise<unknown>): void {
  let interrupted = false;
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      if (interrupted) return;
      interrupted = true;
      console.error(`\n${sig}: cleaning up`);
      void cleanup().then(() => process.exit(130));
    });
  }
}

export function machine(): string {
  let model = cpus()[0]?.model ?? 'unknown CPU';
  try {
    model = /model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? model;
  } catch {
    // keep os.cpus()
  }
  return `${model}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
}

/** The checkout's commit, and whether the code a figure depends on (`paths`) has uncommitted changes. */
export function commitOf(paths: string[] = ['src', 'bench']): string {
  try {
    const git = (...a: string[]) => execFileSync('git', ['-C', PACKAGE_ROOT, ...a], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    return `commit ${git('rev-parse', '--short', 'HEAD')}${git('status', '--porcelain', '--', ...paths) ? ' + uncommitted changes' : ''}`;
  } catch {
    return 'not a git checkout';
  }
}
