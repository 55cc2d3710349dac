/**
 * What a periodic timer costs an idle Node process on this machine: the same idle process (one 1 s
 * keep-alive timer, as a controller has) without and with a timer every N ms whose callback does
 * the quick checks' work on an idle guest (one comparison, then return). Each arm is a child process
 * measuring its own CPU (process.cpuUsage) over the same wall time; arms alternated, rounds shown
 * min–max. Why: the guest supervisor's quick checks (src/guest/supervisor.ts) ran on a 10 ms
 * interval; they now arm only when work reaches an idle guest.
 *
 *   node dist/bench/idle-timer.js [--seconds 15] [--rounds 3] [--periods 10,20]
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { machine, printTable } from './lib.js';

const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1]! : def;
};

/** Child: idle for `seconds`, with a timer every `periodMs` (0: none); prints its CPU as % of a core. */
function child(periodMs: number, seconds: number): void {
  let work: number | undefined;
  const silentWithWorkMs = () => (work === undefined ? 0 : performance.now() - work);
  setInterval(() => undefined, 1000);
  if (periodMs > 0) setInterval(() => { if (silentWithWorkMs() <= 0) return; work = undefined; }, periodMs);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  setTimeout(() => {
    const c = process.cpuUsage(c0);
    process.stdout.write(String(((c.user + c.system) / 1000 / (performance.now() - t0)) * 100));
    process.exit(0);
  }, seconds * 1000);
}

if (process.argv[2] === '--child') {
  child(Number(process.argv[3]), Number(process.argv[4]));
} else {
  const seconds = Number(arg('seconds', '15'));
  const rounds = Number(arg('rounds', '3'));
  const periods = arg('periods', '10,20').split(',').map(Number);
  const arms = [0, ...periods];
  const self = fileURLToPath(import.meta.url);
  const got = new Map<number, number[]>(arms.map((a) => [a, []]));
  console.log(`bench/idle-timer ${new Date().toISOString()} — ${machine()}; ${rounds} rounds of ${seconds} s per arm, alternated`);
  for (let r = 0; r < rounds; r++) {
    for (const a of r % 2 ? [...arms].reverse() : arms) {
      const pct = Number(execFileSync(process.execPath, [self, '--child', String(a), String(seconds)], { encoding: 'utf8' }));
      if (!Number.isFinite(pct)) throw new Error(`arm ${a}: no figure`);
      got.get(a)!.push(pct);
      process.stderr.write(`  round ${r + 1}: ${a ? `every ${a} ms` : 'no timer'}: ${pct.toFixed(3)} % of a core\n`);
    }
  }
  const fmt = (xs: number[]) => `${Math.min(...xs).toFixed(3)}–${Math.max(...xs).toFixed(3)}`;
  const base = got.get(0)!;
  printTable('an idle Node process, % of a core (min–max over rounds)', [
    ['arm', 'CPU', 'added over no timer'],
    ...arms.map((a) => [a ? `a timer every ${a} ms` : 'no timer', fmt(got.get(a)!), a ? fmt(got.get(a)!.map((x, i) => x - base[i]!)) : '-']),
  ]);
}
