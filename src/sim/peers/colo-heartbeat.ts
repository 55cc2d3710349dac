/**
 * The heartbeat COLO lacks (QEMU leaves it to the user: docs/COLO-FT.txt, "TODO: Develop the
 * heartbeat part"), as a process on the secondary's board: every `intervalMs` it asks the primary
 * QEMU `query-status` on its heartbeat monitor; silent for `deadtimeMs`, or its monitor gone, the
 * primary is lost, and it fails over to the secondary as COLO-FT.txt's "Secondary Failover" says
 * (`x-colo-lost-heartbeat`, then the secondary's redirectors and their chardevs removed), then
 * moves the service address to this board (ip, gratuitous ARP). Prints one JSON line per event.
 * The monitor is a unix socket here (QmpClient speaks unix sockets); on two real blades the same
 * question would cross the partner link (QMP on TCP).
 * Usage: node colo-heartbeat.js <primary hb.sock> <secondary hb.sock> <old netns> <new netns> <intervalMs> <deadtimeMs>
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { QmpClient } from '../../hw/qmp/client.js';
import { SERVICE_INTERFACE, SERVICE_PREFIX, SERVICE_VIP } from '../chassis/layout.js';

const run = promisify(execFile);
const say = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify({ at: Date.now(), ...o })}\n`);

async function failover(secondary: QmpClient, oldNs: string, newNs: string, why: string, silentMs: number): Promise<void> {
  const t0 = Date.now();
  say({ event: 'lost', why, silentMs });
  await secondary.execute('x-colo-lost-heartbeat', undefined, 10000);
  const errors: string[] = [];
  for (const [cmd, id] of [['object-del', 'f2'], ['object-del', 'f1'], ['chardev-remove', 'red1'], ['chardev-remove', 'red0']] as const) {
    await secondary.execute(cmd, { id }, 10000).catch((e: Error) => errors.push(`${cmd} ${id}: ${e.message}`));
  }
  // The old board may be without power: its address goes with it; otherwise take it away.
  await run('ip', ['-n', oldNs, 'addr', 'del', `${SERVICE_VIP}/${SERVICE_PREFIX}`, 'dev', SERVICE_INTERFACE], { timeout: 2000 }).catch(() => undefined);
  await run('ip', ['-n', newNs, 'addr', 'replace', `${SERVICE_VIP}/${SERVICE_PREFIX}`, 'dev', SERVICE_INTERFACE]);
  // Unsolicited ARP: nothing to wait for (arping would sit out its one-second interval).
  spawn('ip', ['netns', 'exec', newNs, 'arping', '-q', '-U', '-c', '1', '-I', SERVICE_INTERFACE, SERVICE_VIP], { stdio: 'ignore' }).on('error', () => undefined);
  say({ event: 'failover', tookMs: Date.now() - t0, errors });
}

/** A monitor may reset a connection while its VM finishes an incoming migration: try again for up to 10 s. */
async function connectRetrying(path: string): Promise<QmpClient> {
  const end = Date.now() + 10000;
  for (;;) {
    const q = new QmpClient();
    try {
      await q.connect(path);
      return q;
    } catch (e) {
      q.close();
      if (Date.now() > end) throw new Error(`QMP ${path}: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

async function main(): Promise<void> {
  const [primaryHb, secondaryHb, oldNs, newNs, interval, deadtime] = process.argv.slice(2);
  const intervalMs = Number(interval);
  const deadtimeMs = Number(deadtime);
  if (!primaryHb || !secondaryHb || !oldNs || !newNs || !(intervalMs > 0) || !(deadtimeMs > intervalMs)) throw new Error('usage: colo-heartbeat <primary hb.sock> <secondary hb.sock> <old netns> <new netns> <intervalMs> <deadtimeMs>');
  const secondary = await connectRetrying(secondaryHb);
  const primary = await connectRetrying(primaryHb);
  let lastAnswer = Date.now();
  let closed = false;
  primary.on('close', () => { closed = true; });
  say({ event: 'watching', intervalMs, deadtimeMs });
  let outstanding = false;
  let longest = 0;
  for (;;) {
    const silent = Date.now() - lastAnswer;
    // The longest silence of a healthy primary so far (a checkpoint holds its main loop): what the deadtime must exceed.
    if (silent > longest && silent > 2 * intervalMs) {
      longest = silent;
      if (silent <= deadtimeMs) say({ event: 'silence', ms: silent });
    }
    if (closed || silent > deadtimeMs) {
      await failover(secondary, oldNs, newNs, closed ? 'primary monitor closed' : 'primary silent', silent);
      primary.close();
      secondary.close();
      return;
    }
    if (!outstanding) {
      outstanding = true;
      primary.execute('query-status', undefined, 60000).then(() => { lastAnswer = Date.now(); }, () => undefined).finally(() => { outstanding = false; });
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

main().catch((e: Error) => {
  say({ event: 'error', message: e.message });
  process.exitCode = 1;
});
