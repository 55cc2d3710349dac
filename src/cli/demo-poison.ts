/**
 * `npm start -- --poison` (`understudy demo --poison`): a poison input live on the simulated chassis.
 * The pair runs the guest's poison build (guests/dx-legacy-poison.json); under load, one client sends
 * a request that crashes the guest. Both copies crash; the board that holds the checkpoint restores
 * it, confirms the input by where the replay fails, skips it and serves again; its client is answered
 * ERR POISON, the input is listed in quarantine, and every acknowledged request is checked on the
 * pair that serves: MESSAGES LOST: 0. Cleans up what it started (unless --keep).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { callControl } from '../mgmt/ipc.js';
import { Chassis } from '../sim/chassis/rig.js';
import { PACKAGE_ROOT, SERVICE_CLIENT_ADDRESS, SERVICE_PORT, SERVICE_VIP, partnerOf, type BoardName } from '../sim/chassis/layout.js';
import { pairView, startLoad, waitProtected, type BoardView } from '../sim/pair.js';
import type { ChassisLayout } from '../sim/chassis/layout.js';

export interface PoisonDemoOptions {
  name: string;
  runDir?: string;
  rate: number;
  seconds: number;
  keep?: boolean;
  json?: boolean;
  /** The poison subscriber name (crash* crashes the guest, hang* hangs it). */
  poison?: string;
}

/** One request from the service network, as a client would send it (retrying every 200 ms, up to 60 s). */
export async function askFromServiceNet(L: ChassisLayout, id: string, body: string, tries = 300): Promise<string> {
  return (await askFromServiceNetTimed(L, id, body, tries)).answer;
}

/**
 * askFromServiceNet, with when the request was first sent (ms since the epoch, this machine's clock):
 * the client is a Node process started in the service network, whose start (0.1-1.5 s on a loaded
 * machine) comes before it.
 */
export async function askFromServiceNetTimed(L: ChassisLayout, id: string, body: string, tries = 300): Promise<{ answer: string; sentAt: number }> {
  const script = `import { UdpClient } from ${JSON.stringify(join(PACKAGE_ROOT, 'dist', 'src', 'sim', 'udp-client.js'))};
const c = await new UdpClient({ address: ${JSON.stringify(SERVICE_VIP)}, port: ${SERVICE_PORT} }, ${JSON.stringify(SERVICE_CLIENT_ADDRESS)}).open();
const sentAt = Date.now();
const answer = await c.request(${JSON.stringify(id)}, ${JSON.stringify(body)}, 200, ${tries});
console.log(JSON.stringify({ answer, sentAt }));
c.close();`;
  const { stdout } = await promisify(execFile)('ip', ['netns', 'exec', L.serviceNetns, process.execPath, '--input-type=module', '-e', script], { timeout: tries * 250 + 30000 });
  return JSON.parse(stdout.trim().split('\n').pop()!) as { answer: string; sentAt: number };
}

function line(v: Record<BoardName, BoardView | undefined>): string {
  return (['sim-a', 'sim-b'] as const).map((b) => {
    const x = v[b];
    if (!x) return `${b}: off/not answering`;
    return `${b}: ${x.role.padEnd(8)} guest ${x.guest?.state ?? 'none'}`;
  }).join(' | ');
}

interface Journal { events: Array<{ at: string; kind: string; message: string }> }

export async function runPoisonDemo(o: PoisonDemoOptions): Promise<Record<string, unknown>> {
  const say = (s: string) => { if (!o.json) process.stdout.write(`${s}\n`); };
  const t0 = Date.now();
  const ts = () => `[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)} s]`;
  const poison = o.poison ?? 'crashDemo';
  say(`${ts()} chassis "${o.name}" with the guest's poison build (guests/dx-legacy-poison.json: a REG of crash* crashes the guest, hang* hangs it)`);
  const chassis = await Chassis.up({ name: o.name, runDir: o.runDir, guest: 'primary', guestFile: join(PACKAGE_ROOT, 'guests', 'dx-legacy-poison.json') });
  const L = chassis.layout;
  try {
    let last = '';
    const primary = await waitProtected(L, 240000, (v) => { const s = line(v); if (s !== last) { say(`${ts()} ${s}`); last = s; } });
    const backup = partnerOf(primary);
    say(`${ts()} PROTECTED: ${primary} primary, ${backup} runs the clone and keeps the checkpoint and the input log`);
    const faultAfter = Math.max(3000, Math.floor((o.seconds * 1000) / 3));
    say(`${ts()} load: ${o.rate} requests/s for ${o.seconds} s; after ${faultAfter / 1000} s one client sends "p1 REG ${poison}"`);
    const load = startLoad(L, { rate: o.rate, durationMs: o.seconds * 1000, tag: 'P', retryMs: 20, verify: true, regEvery: 4 }, (p) => {
      void pairView(L).then((v) => say(`${ts()} clients: ${p.acked} answered, ${p.retries} retries | ${line(v)}`));
    });
    await new Promise((r) => setTimeout(r, faultAfter));
    const sentAt = Date.now();
    say(`${ts()} >>> poison request "p1 REG ${poison}" sent <<<`);
    const answer = await askFromServiceNet(L, 'p1', `REG ${poison}`);
    const answeredMs = Date.now() - sentAt;
    say(`${ts()} the poison request's client got "${answer}" ${answeredMs} ms after sending it`);
    const retry = await askFromServiceNet(L, 'p1', `REG ${poison}`, 20);
    say(`${ts()} its retry (same id) got "${retry}"${retry === answer ? ' (the same: answered from the quarantine, never given to a guest)' : ''}`);
    const res = await load.result;
    // The outage: the longest wait for a reply that began after the poison was sent.
    const gap = res.gaps.filter(([a]) => a >= sentAt - 50).map(([from, to]) => ({ from, to })).sort((x, y) => (y.to - y.from) - (x.to - x.from))[0];
    const v = await pairView(L);
    const serving = (Object.keys(v) as BoardName[]).find((b) => v[b]?.role === 'PRIMARY') ?? primary;
    const journal = (await callControl(L.boards[serving].controlSocket, 'events', { limit: 200 })) as Journal;
    const story = journal.events.filter((x) => Date.parse(x.at) >= sentAt - 500 && /^(recovery|quarantine|role\.transition)$/.test(x.kind)).sort((a, b) => a.at.localeCompare(b.at));
    for (const e of story) {
      say(`${ts()}   ${serving} ${e.at.slice(11, 23)} ${e.kind}: ${e.message}`);
    }
    const q = (await callControl(L.boards[serving].controlSocket, 'quarantine.list', {})) as { entries: Array<{ id: number; seq: number; payloadText: string | null; failures: Array<{ copy: string; how: string }> }> };
    for (const e of q.entries) say(`${ts()} quarantine: q${e.id} input ${e.seq} "${e.payloadText ?? '(binary)'}" failed ${e.failures.map((f) => `${f.copy} ${f.how}`).join(', ')}`);
    say(`${ts()} load finished: ${res.acked} requests answered, p50 ${res.latency.p50.toFixed(2)} ms, p99 ${res.latency.p99.toFixed(2)} ms; the other clients' longest wait for a reply ${gap ? `${gap.to - gap.from} ms (${gap.to - sentAt} ms after the poison was sent)` : 'none'}`);
    const ver = res.verify!;
    const lost = ver.missing.length + ver.callIdsReused.length;
    say(`${ts()} check on ${serving}: ${ver.checked} acknowledged registrations, ${ver.missing.length} missing; ${res.calls} calls, ${ver.callIdsReused.length} call ids acknowledged twice; ${ver.retriedIdentical} retried ids answered identically, ${ver.retriedDifferent.length} differently`);
    say(`${ts()} MESSAGES LOST: ${lost}`);
    last = '';
    const again = await waitProtected(L, 240000, (vv) => { const s = line(vv); if (s !== last) { say(`${ts()} ${s}`); last = s; } }).catch(() => undefined);
    say(`${ts()} ${again ? `re-protected: ${again} primary, ${partnerOf(again)} backup` : 're-protection did not complete in time'}`);
    return {
      poison: `p1 REG ${poison}`, answer, retry, answeredMs, quarantine: q.entries, serving, lost, answered: res.acked,
      retriedDifferent: ver.retriedDifferent.length, longestGapMs: gap ? gap.to - gap.from : 0, reprotected: again ?? null,
    };
  } finally {
    if (o.keep) say(`${ts()} left running: \`understudy chassis status --name ${o.name}\`, \`understudy chassis down --name ${o.name}\``);
    else {
      await chassis.down({ purge: true }).catch(() => undefined);
      say(`${ts()} chassis down.`);
    }
  }
}
