/**
 * bench/clone-stall (issue 15, item 4): what clients see while the primary's guest is cloned to its
 * backup, in one run on the simulated chassis with real QEMU. Three arms, the same load in each
 * (open loop, --rate requests/s, a registration every 10th step, every request retried every 20 ms,
 * verified), alternated round by round in a rotating order on the one chassis:
 *   - none:     the load alone (the baseline, measured in the same run);
 *   - snapshot: a re-clone 2 s into the load, as a snapshot copy (the guest serves through it);
 *   - plain:    the same re-clone as a plain copy (inputs held for all of it; under TCG the guest
 *               stopped for it): the behaviour before snapshot clones.
 * For each: latency p50/p99/max and the longest silence between two replies over the whole load,
 * and for the clones what the primary reports (inputs held, guest paused, copy length, inputs the
 * guest served during the copy). Ratios are each round's arm against that round's baseline. The
 * run fails rather than print a figure if any round lost an acknowledged request, got an `ERR FULL`
 * (the guest's limit) or any other error reply, a clone failed, or the snapshot arm fell back to a
 * plain copy; and before it starts if its registrations would not fit the guest's table budget.
 * Usage: node dist/bench/clone-stall.js [--rounds N] [--rate R] [--seconds S]
 */
import { parseArgs } from 'node:util';
import { callControl } from '../src/mgmt/ipc.js';
import { Chassis } from '../src/sim/chassis/rig.js';
import { startLoad, waitProtected } from '../src/sim/pair.js';
import type { LoadResult } from '../src/sim/load.js';
import type { CloneReport } from '../src/replication/manager.js';
import { GUEST_SUBSCRIBERS } from './cost-lib.js';
import { cleanUpOnSignal, commitOf, machine, percentile, printTable } from './lib.js';

const { values: args } = parseArgs({ options: {
  rounds: { type: 'string', default: '3' }, rate: { type: 'string', default: '200' }, seconds: { type: 'string', default: '12' },
} });
const ROUNDS = Number(args.rounds);
const RATE = Number(args.rate);
const LOAD_MS = Number(args.seconds) * 1000;
const CLONE_AT_MS = 2000;
type Arm = 'none' | 'snapshot' | 'plain';
const ARMS: Arm[] = ['none', 'snapshot', 'plain'];

interface Sample { arm: Arm; round: number; res: LoadResult; clone?: CloneReport }

function fail(why: string): never {
  throw new Error(`bench/clone-stall: ${why}: no figures printed from this run`);
}

async function main(): Promise<void> {
  if (!(ROUNDS >= 1) || !(RATE > 0) || !(LOAD_MS >= 8000)) fail('--rounds ≥ 1, --rate > 0 and --seconds ≥ 8 are needed');
  // Every arm registers new subscribers (one step in ten): the whole run must stay well inside the
  // guest's table (three quarters of it), or later arms would measure ERR FULL instead of the same work.
  const budget = (GUEST_SUBSCRIBERS * 3) / 4;
  const registrations = Math.ceil(ROUNDS * ARMS.length * RATE * (LOAD_MS / 1000) / 10);
  if (registrations > budget) fail(`${registrations} registrations planned, over the budget of ${budget} (of the guest's ${GUEST_SUBSCRIBERS}): fewer --rounds, a lower --rate or fewer --seconds`);
  const chassis = await Chassis.up({ name: `cs${process.pid % 100}`, runDir: `/tmp/us-bench-clone-${process.pid}`, guest: 'primary' });
  cleanUpOnSignal(() => chassis.down({ purge: true }));
  const samples: Sample[] = [];
  try {
    let primary = await waitProtected(chassis.layout, 240000);
    for (let round = 0; round < ROUNDS; round++) {
      // A rotating order: each arm runs first, second and third equally often.
      const order = ARMS.map((_, i) => ARMS[(i + round) % ARMS.length]!);
      for (const arm of order) {
        primary = await waitProtected(chassis.layout, 240000);
        process.stderr.write(`round ${round + 1}/${ROUNDS}: ${arm}…\n`);
        const load = startLoad(chassis.layout, { rate: RATE, durationMs: LOAD_MS, tag: `C${round}${arm[0]}x`, retryMs: 20, verify: true, regEvery: 10 });
        let clone: CloneReport | undefined;
        if (arm !== 'none') {
          await new Promise((r) => setTimeout(r, CLONE_AT_MS));
          const r = await callControl(chassis.layout.boards[primary].controlSocket, 'clone', { copy: arm }, 180000).catch((e: Error) => fail(`the ${arm} clone failed: ${e.message}`));
          clone = (r as { clone: CloneReport }).clone;
          if (arm === 'snapshot' && !clone.snapshot) fail(`the snapshot clone fell back to a plain copy (${JSON.stringify(clone)})`);
          if (arm === 'plain' && clone.snapshot) fail('the plain clone was a snapshot copy');
        }
        const res = await load.result;
        if (res.verify?.missing.length) fail(`${arm}, round ${round + 1}: ${res.verify.missing.length} acknowledged requests lost`);
        if (res.limitReplies) fail(`${arm}, round ${round + 1}: ${res.limitReplies} ERR FULL replies (the guest's limit was reached: the arms would not run the same work)`);
        if (res.verify?.retriedDifferent.length) fail(`${arm}, round ${round + 1}: retried requests answered differently: ${res.verify.retriedDifferent.slice(0, 3).join('; ')}`);
        if (res.verify?.callIdsReused.length) fail(`${arm}, round ${round + 1}: ${res.verify.callIdsReused.length} call ids acknowledged twice`);
        if (res.errorReplies) fail(`${arm}, round ${round + 1}: ${res.errorReplies} error replies (${res.errorSamples.slice(0, 3).join('; ')}): an error path, not the same work`);
        samples.push({ arm, round, res, clone });
      }
    }
  } finally {
    await chassis.down({ purge: true });
  }

  const fmt = (x: number) => (Number.isNaN(x) ? 'n/a' : Math.abs(x) >= 10 ? String(Math.round(x)) : x.toFixed(1));
  const spread = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length === 1 ? fmt(s[0]!) : `${fmt(percentile(s, 50))} (${fmt(s[0]!)}–${fmt(s[s.length - 1]!)})`;
  };
  const of = (arm: Arm) => samples.filter((s) => s.arm === arm);
  // Each round's arm against that round's baseline (the same rotation, minutes apart), then the spread.
  const p99Ratios = (arm: Arm) => of(arm).map((x) => x.res.latency.p99 / samples.find((b) => b.arm === 'none' && b.round === x.round)!.res.latency.p99);
  console.log(`\nbench/clone-stall — ${new Date().toISOString()} — ${machine()} — ${commitOf()}`);
  console.log(`${ROUNDS} rounds, ${RATE} requests/s for ${LOAD_MS / 1000} s per arm, clone ${CLONE_AT_MS / 1000} s in; median over rounds (min–max)`);
  printTable('what clients see (ms, over the whole load)', [
    ['arm', 'p50', 'p99', 'max', 'longest silence', 'p99 / the round\'s baseline p99', 'answered/s'],
    ...ARMS.map((arm) => {
      const s = of(arm);
      return [arm, spread(s.map((x) => x.res.latency.p50)), spread(s.map((x) => x.res.latency.p99)), spread(s.map((x) => x.res.latency.max)),
        spread(s.map((x) => x.res.longestGapMs)), spread(p99Ratios(arm)), spread(s.map((x) => Math.round(x.res.throughput)))];
    }),
  ]);
  printTable('the clones, as the primary reports them', [
    ['arm', 'inputs held ms', 'of which drain', 'PING', 'copy start', 'of which QEMU setup', 'guest paused ms', 'copy ms', 'inputs served during the copy', 'MB'],
    ...(['snapshot', 'plain'] as const).map((arm) => {
      const c = of(arm).map((x) => x.clone!);
      return [arm, spread(c.map((x) => x.holdMs)), spread(c.map((x) => x.holdParts.drainMs)), spread(c.map((x) => x.holdParts.pingMs)), spread(c.map((x) => x.holdParts.migrationStartMs)), spread(c.map((x) => x.holdParts.qemuSetupMs ?? NaN)), spread(c.map((x) => x.downtimeMs ?? NaN)), spread(c.map((x) => x.durationMs)), spread(c.map((x) => x.afterCut)), spread(c.map((x) => x.transferredMb))];
    }),
  ]);
}

await main();
