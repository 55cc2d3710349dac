/**
 * bench/upgrade-guest, in one run on the simulated chassis with real QEMU: a steady load (200
 * requests/s, clients retry every 20 ms) before and during `guest upgrade` v1 → v2. Prints the total
 * upgrade time, the longest gap between replies a client saw during it, client latency p50/p99
 * before versus during (and their ratio), and acknowledged requests lost.
 * Usage: node dist/bench/upgrade-guest.js [--seconds S]   (S: the load before the upgrade)
 */
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { callControl } from '../src/mgmt/ipc.js';
import { Chassis } from '../src/sim/chassis/rig.js';
import { PACKAGE_ROOT } from '../src/sim/chassis/layout.js';
import { startLoad, waitProtected } from '../src/sim/pair.js';
import { machine, printTable } from './lib.js';

const { values: args } = parseArgs({ options: { seconds: { type: 'string', default: '10' } } });
const SECONDS = Number(args.seconds);

async function main(): Promise<void> {
  const chassis = await Chassis.up({ name: 'benchug', runDir: '/tmp/us-bench-ug', guest: 'primary' });
  try {
    const primary = await waitProtected(chassis.layout, 240000);
    process.stderr.write(`load before the upgrade (${SECONDS} s)…\n`);
    const before = await startLoad(chassis.layout, { rate: 200, durationMs: SECONDS * 1000, tag: 'Bx', retryMs: 20, verify: true }).result;
    process.stderr.write('upgrading v1 → v2 under the same load…\n');
    const during = startLoad(chassis.layout, { rate: 200, durationMs: 120000, tag: 'Dx', retryMs: 20, verify: true });
    await new Promise((r) => setTimeout(r, 2000));
    const t0 = Date.now();
    const report = (await callControl(chassis.layout.boards[primary].controlSocket, 'guest.upgrade',
      { guestFile: join(PACKAGE_ROOT, 'guests', 'dx-legacy-v2.json') }, 900000)) as { durationMs: number; replayed: number };
    const t1 = Date.now();
    const res = await during.result;
    // Gaps that overlap the upgrade window.
    const inWindow = res.gaps.filter(([a, b]) => b >= t0 && a <= t1);
    const longest = inWindow.reduce((m, [a, b]) => Math.max(m, b - a), 0);
    console.log(`\nbench/upgrade-guest — ${new Date().toISOString()} — ${machine()}`);
    printTable('guest upgrade v1 → v2 under load (200 req/s, retry 20 ms)', [
      ['upgrade s', 'inputs replayed', 'longest reply gap ms', 'gaps > 50 ms', 'acknowledged lost'],
      [(t1 - t0) / 1000, report.replayed, longest, inWindow.length, before.verify!.missing.length + res.verify!.missing.length],
    ]);
    printTable('client latency (the "during" run spans the upgrade and 2 s before it)', [
      ['load', 'p50 ms', 'p99 ms', 'max ms', 'answered'],
      ['before', before.latency.p50, before.latency.p99, before.latency.max, before.acked],
      ['during', res.latency.p50, res.latency.p99, res.latency.max, res.acked],
      ['ratio during / before', res.latency.p50 / before.latency.p50, res.latency.p99 / before.latency.p99, res.latency.max / before.latency.max, ''],
    ]);
  } finally {
    await chassis.down({ purge: true });
  }
}

await main();
