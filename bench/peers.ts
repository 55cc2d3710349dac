/**
 * bench/peers: Understudy and the alternatives a user would otherwise deploy — keepalived (VRRP,
 * warm standby) and QEMU COLO (lock-stepped primary and secondary VMs) — on the simulated chassis's
 * network, with the same reference guest, the same client load and the same faults, in one run.
 * One table (peers-lib.ts says what each column measures); BENCHMARKS.md records it.
 *
 * Usage: node dist/bench/peers.js [--faults N] [--seconds S] [--rounds R] [--footprint-seconds S] [--setups understudy,keepalived,colo]
 *                                  [--colo-delays 20000,200]  (x-checkpoint-delay of each COLO row, ms)
 * Needs root (namespaces). Cleans up every namespace and process it started, on error and on ^C.
 * A set-up that meets the error path fails the bench (exit code 1, no table); a set-up that cannot
 * run here at all (COLO on a QEMU without it) is shown as not runnable, with QEMU's own error.
 */
import { parseArgs } from 'node:util';
import { coloRow } from './peers-colo.js';
import { keepalivedRow } from './peers-keepalived.js';
import { peersTable, teardowns, type PeerRow } from './peers-lib.js';
import { understudyRow } from './peers-understudy.js';
import { cleanUpOnSignal, commitOf, machine, printTable } from './lib.js';

const { values: args } = parseArgs({
  options: {
    faults: { type: 'string', default: '5' },
    seconds: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '2' },
    'footprint-seconds': { type: 'string', default: '10' },
    setups: { type: 'string', default: 'understudy,keepalived,colo' },
    'colo-delays': { type: 'string', default: '20000,200' },
  },
});
const num = (name: string, v: string | undefined, min: number) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) { console.error(`--${name}: an integer ≥ ${min}, got "${v}"`); process.exit(2); }
  return n;
};
const opts = {
  faults: num('faults', args.faults, 1), seconds: num('seconds', args.seconds, 1), rounds: num('rounds', args.rounds, 1),
  footprintSeconds: num('footprint-seconds', args['footprint-seconds'], 1), say: (s: string) => process.stderr.write(`${s}\n`),
};
const setups = args.setups!.split(',').map((s) => s.trim()).filter(Boolean);
for (const s of setups) if (!['understudy', 'keepalived', 'colo'].includes(s)) { console.error(`--setups: unknown set-up "${s}"`); process.exit(2); }
const tag = process.pid % 1000;
const coloDelays = args['colo-delays']!.split(',').map((d) => num('colo-delays', d, 1));


async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces)');
  const started = new Date().toISOString();
  const rows: PeerRow[] = [];
  for (const s of setups) {
    if (s === 'understudy') rows.push(await understudyRow({ ...opts, name: `pu${tag}`, runDir: `/tmp/us-peers-u-${process.pid}` }));
    if (s === 'keepalived') rows.push(await keepalivedRow({ ...opts, name: `pk${tag}`, runDir: `/tmp/us-peers-k-${process.pid}` }));
    if (s === 'colo') {
      for (const [i, delay] of coloDelays.entries()) rows.push(await coloRow({ ...opts, name: `pc${tag}${i}`, runDir: `/tmp/us-peers-c${i}-${process.pid}`, checkpointDelayMs: delay }));
    }
  }
  console.log(`\nbench/peers — ${started} — ${commitOf()}\n${machine()}`);
  console.log(`${opts.faults} faults of each kind per set-up; load phases ${opts.seconds} s × ${opts.rounds} rounds (P protected, U backup powered off, alternated); footprint over ${opts.footprintSeconds} s idle`);
  printTable('Understudy, keepalived and QEMU COLO: same guest, same client, same faults', peersTable(rows));
  for (const r of rows) for (const n of r.notes) console.log(`- ${n}`);
  for (const r of rows) if (!r.runnable) console.log(`- ${r.setup} not runnable: ${r.reason}`);
}

cleanUpOnSignal(() => Promise.allSettled([...teardowns].map((t) => t())));

try {
  await main();
} catch (e) {
  console.error(`peers: ${(e as Error).stack ?? (e as Error).message}`);
  process.exitCode = 1;
}
