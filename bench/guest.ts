/**
 * bench/guest: the baseline every later overhead is a ratio of.
 *  - boot-to-ready time of the reference guest under QEMU (KVM if it works, else TCG);
 *  - request latency p50/p99 and throughput to the guest, "direct" (this process is the guest's only
 *    peer on its emulated NIC, no controller) versus "through the controller" (a real understudyd
 *    process, clients over UDP to the board's service endpoint), measured in the same run on the
 *    same machine.
 * Usage: node dist/bench/guest.js [--boots N] [--requests N] [--window N] [--seconds S]
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadBoardProfile } from '../src/config/board-profile.js';
import { loadGuestDescriptor } from '../src/config/guest-descriptor.js';
import { silentLogger } from '../src/core/log.js';
import { GuestSupervisor } from '../src/guest/supervisor.js';
import type { GuestOutput } from '../src/guest/io.js';
import { PACKAGE_ROOT } from '../src/cli/locate.js';
import { startDaemonInBackground } from '../src/cli/guest-commands.js';
import { Hlr } from '../src/sim/hlr.js';
import { UdpClient } from '../src/sim/udp-client.js';
import { machine, printTable, summarize, type LatencySummary } from './lib.js';

const { values: args } = parseArgs({
  options: {
    boots: { type: 'string', default: '3' },
    requests: { type: 'string', default: '3000' },
    window: { type: 'string', default: '16' },
    seconds: { type: 'string', default: '5' },
  },
});
const BOOTS = Number(args.boots);
const REQUESTS = Number(args.requests);
const WINDOW = Number(args.window);
const SECONDS = Number(args.seconds);
const SUBS = 50;

/** Something that sends `<id> <body>` and resolves with the reply. */
type Ask = (id: string, body: string) => Promise<string>;

function body(i: number): string {
  return i % 4 === 0 ? 'STATS' : `GET s${i % SUBS}`;
}

async function measure(ask: Ask, label: string): Promise<{ lat: LatencySummary; rps: number }> {
  for (let i = 0; i < SUBS; i++) await ask(`${label}-reg${i}`, `REG s${i}`);
  for (let i = 0; i < 200; i++) await ask(`${label}-warm${i}`, body(i)); // warm-up
  const samples: number[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    const t0 = performance.now();
    await ask(`${label}-l${i}`, body(i));
    samples.push(performance.now() - t0);
  }
  // Throughput: WINDOW requests outstanding for SECONDS (bounded by count too).
  let done = 0;
  let next = 0;
  const end = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: WINDOW }, async () => {
    while (performance.now() < end && next < 5_000_000) {
      const i = next++;
      await ask(`${label}-t${i}`, body(i));
      done++;
    }
  }));
  return { lat: summarize(samples), rps: done / ((performance.now() - t0) / 1000) };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'us-bench-guest-'));
  chmodSync(dir, 0o711); // searchable by the board's QEMU user (qemuUser), on its way to <storageDir>/qemu
  const b = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board', 'sim-a.json'), 'utf8'));
  b.storageDir = join(dir, 'store');
  b.service = { address: '127.0.250.1', port: 5000 };
  b.externalServices = { auth: { address: '127.0.250.100', port: 7000 } };
  // One board on its own: no partner, membership, watchdog device, fencing or console tty to provide.
  for (const k of ['ha', 'partner', 'watchdog', 'fencing', 'console', 'metrics']) delete b[k];
  const boardFile = join(dir, 'board.json');
  writeFileSync(boardFile, JSON.stringify(b));
  const guestFile = join(PACKAGE_ROOT, 'guests', 'dx-legacy.json');
  const board = loadBoardProfile(boardFile);
  const guest = loadGuestDescriptor(guestFile);
  const hlr = new Hlr({ ...b.externalServices.auth });
  await hlr.start();
  let daemonPid: number | undefined;
  try {
    // --- direct: this process is the guest's peer; boots measured here too.
    const boots: number[] = [];
    let direct!: { lat: LatencySummary; rps: number };
    let accel = '?';
    for (let k = 0; k < BOOTS; k++) {
      const sup = new GuestSupervisor(board, guest, silentLogger);
      await sup.start();
      const st = await sup.status();
      boots.push(st.bootToReadyMs!);
      accel = st.accel ?? '?';
      process.stderr.write(`boot ${k + 1}/${BOOTS}: ${st.bootToReadyMs} ms (${accel})\n`);
      if (k === BOOTS - 1) {
        const waiting = new Map<string, (r: string) => void>();
        sup.port.on('output', (o: GuestOutput) => {
          if (o.kind === 'auth-query') {
            const sub = o.payload.toString().split(' ')[1]!.trim();
            sup.port.deliver({ kind: 'auth-reply', payload: Buffer.from(`AUTHR ${sub} OK`) });
            return;
          }
          const text = o.payload.toString('latin1');
          const id = text.split(' ', 1)[0]!;
          waiting.get(id)?.(text);
          waiting.delete(id);
        });
        const ask: Ask = (id, q) => new Promise((resolve, reject) => {
          const timer = setTimeout(() => { waiting.delete(id); reject(new Error(`direct: no reply to ${id}`)); }, 5000);
          waiting.set(id, (r) => { clearTimeout(timer); resolve(r); });
          sup.port.deliver({ kind: 'request', clientPort: 20000, payload: Buffer.from(`${id} ${q}`) });
        });
        process.stderr.write('measuring direct…\n');
        direct = await measure(ask, 'd');
      }
      await sup.stop();
    }
    // --- through the controller: a real understudyd, clients over UDP.
    daemonPid = await startDaemonInBackground(boardFile, guestFile, 120000);
    const client = await new UdpClient(board.service).open();
    process.stderr.write('measuring through the controller…\n');
    const via = await measure((id, q) => client.request(id, q, 5000, 0), 'c');
    client.close();

    const bootS = summarize(boots);
    console.log(`\nbench/guest — ${new Date().toISOString()} — ${machine()} — accel ${accel}`);
    printTable('boot-to-ready (QEMU start → application answers on its NIC)', [
      ['boots', 'p50 ms', 'max ms'],
      [bootS.n, bootS.p50, bootS.max],
    ]);
    printTable(`requests (${REQUESTS} sequential for latency; ${WINDOW} in flight for ${SECONDS} s for throughput)`, [
      ['path', 'p50 ms', 'p99 ms', 'throughput req/s'],
      ['direct (guest NIC, no controller)', direct.lat.p50, direct.lat.p99, Math.round(direct.rps)],
      ['through the controller (UDP endpoint)', via.lat.p50, via.lat.p99, Math.round(via.rps)],
      ['ratio controller / direct', via.lat.p50 / direct.lat.p50, via.lat.p99 / direct.lat.p99, via.rps / direct.rps],
    ]);
    console.log(`\nadded latency of the controller hop: ${(via.lat.p50 - direct.lat.p50).toFixed(3)} ms p50`);
  } finally {
    if (daemonPid) {
      try { process.kill(daemonPid, 'SIGTERM'); } catch { /* gone */ }
      for (let i = 0; i < 200; i++) { try { process.kill(daemonPid, 0); } catch { break; } await new Promise((r) => setTimeout(r, 50)); }
    }
    hlr.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
