/**
 * bench/replication, in one run on the simulated chassis with real QEMU:
 *  (what replication costs in latency and throughput is bench/replication-cost: one request mix in
 *  every phase, alternated, with the machine ceiling. This script's former table compared two
 *  workloads: its default mix filled the guest's subscriber table during the replicated phase.)
 *  - clone duration and guest pause (QEMU's downtime) for the 128 MB guest;
 *  - failover: kill -9 of the primary controller → first good reply from the new primary, p50/p99
 *    over N kills, with a load running (clients retry every 5 ms), and acknowledged requests lost.
 *  - checkpoint: the clone's pause, and recovery time from the checkpoint plus --logged inputs
 *    (both guests lost: the backup's QEMU killed and the primary powered off).
 * Usage: node dist/bench/replication.js [--kills N] [--logged N]
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { callControl } from '../src/mgmt/ipc.js';
import { Chassis } from '../src/sim/chassis/rig.js';
import { partnerOf, type BoardName } from '../src/sim/chassis/layout.js';
import { gapAround, startLoad, waitProtected } from '../src/sim/pair.js';
import { machine, printTable, summarize } from './lib.js';

const { values: args } = parseArgs({ options: { kills: { type: 'string', default: '5' }, logged: { type: 'string', default: '10000' } } });
const LOGGED = Number(args.logged);
const KILLS = Number(args.kills);

async function main(): Promise<void> {
  const chassis = await Chassis.up({ name: 'bench', runDir: '/tmp/us-bench-repl', guest: 'primary' });
  try {
    let primary: BoardName = await waitProtected(chassis.layout, 240000);
    const st = (await callControl(chassis.layout.boards[primary].controlSocket, 'replication.status')) as any;
    const clone = st.replication.lastClone;

    const takeovers: number[] = [];
    let lost = 0;
    let answered = 0;
    for (let k = 0; k < KILLS; k++) {
      process.stderr.write(`failover ${k + 1}/${KILLS} (primary ${primary})…\n`);
      const load = startLoad(chassis.layout, { rate: 200, durationMs: 6000, tag: `K${k}x`, retryMs: 5, verify: true, regEvery: 10 });
      await new Promise((r) => setTimeout(r, 2500));
      const at = Date.now();
      await chassis.fail(primary, 'kill');
      const res = await load.result;
      const gap = gapAround(res.gaps, at);
      takeovers.push(gap ? gap.afterFaultMs : 0);
      lost += res.verify!.missing.length;
      answered += res.acked;
      await chassis.power(primary, 'on');
      primary = await waitProtected(chassis.layout, 240000);
    }

    process.stderr.write(`checkpoint, then ${LOGGED} logged inputs, then both guests lost…\n`);
    const backup = partnerOf(primary);
    const ctlB = (cmd: string, a: Record<string, unknown> = {}, t = 30000) => callControl(chassis.layout.boards[backup].controlSocket, cmd, a, t) as Promise<any>;
    const cp = (await ctlB('checkpoint', {}, 180000)).checkpoint as { pauseMs: number | null; durationMs: number };
    let loggedSince = 0;
    for (let k = 0; loggedSince < LOGGED && k < 40; k++) {
      await startLoad(chassis.layout, { rate: 0, durationMs: 3000, tag: `L${k}x`, retryMs: 200, window: 16, regEvery: 10 }).result;
      loggedSince = (await ctlB('replication.status')).replication.checkpoint.inputsLoggedSince as number;
    }
    process.kill(Number(readFileSync(`${chassis.layout.boards[backup].storageDir}/qemu.pid`, 'utf8')), 'SIGKILL');
    await chassis.fail(primary, 'power');
    let recovery: { replayed: number; durationMs: number } | undefined;
    const recoveryEnd = Date.now() + 600000;
    for (let i = 0; i < 6000 && !recovery && Date.now() < recoveryEnd; i++) {
      if (i % 50 === 49) {
        const r = (await ctlB('replication.status').catch(() => ({}))).replication as { deliveredSeq?: number; lastSeq?: number; authHolds?: number } | undefined;
        process.stderr.write(`  replaying: delivered ${r?.deliveredSeq ?? '?'} of ${r?.lastSeq ?? '?'}, AUTH answers held ${r?.authHolds ?? '?'}\n`);
      }
      const ev = ((await ctlB('events', { kind: 'checkpoint', limit: 5 }).catch(() => ({ events: [] }))).events ?? []) as Array<{ message: string; detail?: { replayed?: number; durationMs?: number } }>;
      const r = ev.find((e) => /has processed the \d+ replayed inputs/.test(e.message));
      if (r?.detail?.durationMs !== undefined) recovery = { replayed: r.detail.replayed ?? 0, durationMs: r.detail.durationMs };
      else await new Promise((res) => setTimeout(res, 200));
    }
    await chassis.power(primary, 'on');

    const to = summarize(takeovers);
    console.log(`\nbench/replication — ${new Date().toISOString()} — ${machine()}`);
    printTable('clone of the 128 MB guest (target: pause ≤ 20 ms)', [
      ['clone ms', 'guest pause ms', 'inputs held ms', 'MB sent'],
      [clone?.durationMs ?? 'n/a', clone?.downtimeMs ?? 'n/a', clone?.holdMs ?? 'n/a', clone?.transferredMb ?? 'n/a'],
    ]);
    printTable(`failover: kill -9 of the primary controller → first good reply (${KILLS} kills; target ≤ 50 ms p99)`, [
      ['kills', 'p50 ms', 'p99 ms', 'max ms', 'answered', 'acknowledged lost'],
      [to.n, to.p50, to.p99, to.max, answered, lost],
    ]);
    printTable('checkpoint (on the backup) and recovery after a double failure', [
      ['checkpoint ms', 'clone pause ms', 'inputs logged since', 'replayed', 'restore + replay ms'],
      [cp.durationMs, cp.pauseMs ?? 'n/a', loggedSince, recovery?.replayed ?? 'n/a', recovery?.durationMs ?? 'not recovered'],
    ]);
  } finally {
    await chassis.down({ purge: true });
  }
}

await main();
