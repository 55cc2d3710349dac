/**
 * The main job: the whole story live on the simulated chassis. Two boards come up, the primary boots
 * the legacy guest and clones it to the backup, clients load the service address, the primary
 * board is killed, the backup takes over, and every acknowledged request is checked on the new
 * primary: messages lost = 0. The killed board is powered back on and re-protected.
 */
import { Chassis } from '../sim/chassis/rig.js';
import { join } from 'node:path';
import { PACKAGE_ROOT, partnerOf, type BoardName } from '../sim/chassis/layout.js';
import { gapAround, pairView, startLoad, waitProtected, type BoardView } from '../sim/pair.js';
import { guestUpgradeWithProgress } from './guest-commands.js';

export interface PairDemoOptions {
  name: string;
  runDir?: string;
  how: 'kill' | 'power' | 'hang';
  rate: number;
  seconds: number;
  keep?: boolean;
  json?: boolean;
  /** Afterwards, upgrade the guest application to this descriptor under the same load. */
  upgradeGuest?: string | true;
}

function line(v: Record<BoardName, BoardView | undefined>): string {
  return (['sim-a', 'sim-b'] as const).map((b) => {
    const x = v[b];
    if (!x) return `${b}: off/not answering`;
    const r = x.replication;
    const seq = r ? (r.mode === 'primary' ? `seq ${r.lastSeq}, backup acked ${r.protected ? r.ackedSeq : '-'}` : `seq ${r.lastSeq}, delivered ${r.deliveredSeq}`) : '';
    return `${b}: ${x.role.padEnd(8)} guest ${x.guest?.state ?? 'none'}${seq ? `, ${seq}` : ''}${r && !r.protected && r.mode === 'primary' ? ' UNPROTECTED' : ''}`;
  }).join(' | ');
}

export async function runPairDemo(o: PairDemoOptions): Promise<Record<string, unknown>> {
  const say = (s: string) => { if (!o.json) process.stdout.write(`${s}\n`); };
  const t0 = Date.now();
  const ts = () => `[${((Date.now() - t0) / 1000).toFixed(1).padStart(5)} s]`;
  say(`${ts()} chassis "${o.name}": two boards in network namespaces, Ethernet (veth) + serial (paced pty) partner links, watchdogs, power controller`);
  const chassis = await Chassis.up({ name: o.name, runDir: o.runDir, guest: 'primary' });
  const L = chassis.layout;
  let result: Record<string, unknown> = {};
  try {
    say(`${ts()} boards up; the primary boots the legacy guest (QEMU, pinned) and clones it to the backup…`);
    let last = '';
    const primary = await waitProtected(L, 180000, (v) => { const s = line(v); if (s !== last) { say(`${ts()} ${s}`); last = s; } });
    const backup = partnerOf(primary);
    const v0 = await pairView(L);
    const clone = v0[primary]?.replication?.lastClone;
    say(`${ts()} PROTECTED: ${primary} primary, ${backup} runs the clone${clone ? ` (clone ${clone.durationMs} ms, guest paused ${clone.downtimeMs ?? '?'} ms)` : ''}`);

    const faultAfter = Math.max(2000, Math.floor((o.seconds * 1000) / 3));
    say(`${ts()} load: ${o.rate} requests/s to 192.0.2.10:5000 from the service network for ${o.seconds} s; ${o.how === 'power' ? 'power-off' : o.how === 'hang' ? 'hang' : 'kill -9'} of ${primary} after ${faultAfter / 1000} s`);
    // One registration in four steps (the others a call set up and ended): the guest holds 4096
    // subscribers and never forgets one, and the demo must show the service, not ERR FULL.
    const load = startLoad(L, { rate: o.rate, durationMs: o.seconds * 1000, tag: 'D', retryMs: 20, verify: true, regEvery: 4 }, (p) => {
      void pairView(L).then((v) => say(`${ts()} clients: ${p.acked} answered, ${p.retries} retries, longest wait ${p.longestGapMs} ms | ${line(v)}`));
    });
    await new Promise((r) => setTimeout(r, faultAfter));
    const faultAt = Date.now();
    await chassis.fail(primary, o.how);
    say(`${ts()} >>> ${primary} ${o.how === 'kill' ? 'controller killed (SIGKILL)' : o.how === 'power' ? 'powered off' : 'controller hung (SIGSTOP)'} <<<`);
    const res = await load.result;
    const gap = gapAround(res.gaps, faultAt);
    const events = (await chassis.status()).boards;
    const v1 = await pairView(L);
    say(`${ts()} load finished: ${res.acked} requests answered (${res.throughput.toFixed(0)}/s), p50 ${res.latency.p50.toFixed(2)} ms, p99 ${res.latency.p99.toFixed(2)} ms`);
    say(`${ts()} takeover: first good reply from ${backup} ${gap ? `${gap.afterFaultMs} ms after the fault` : 'without any gap'}; ${v1[backup]?.role === 'PRIMARY' ? `${backup} is PRIMARY` : `${backup} is ${v1[backup]?.role}`}`);
    const ver = res.verify!;
    const lost = ver.missing.length + ver.callIdsReused.length;
    say(`${ts()} check on the new primary: ${ver.checked} acknowledged registrations, ${ver.missing.length} missing; ${res.calls} calls, ${ver.callIdsReused.length} call ids acknowledged twice; ${ver.retriedIdentical} retried ids answered identically, ${ver.retriedDifferent.length} differently`);
    if (res.limitReplies) say(`${ts()} WARNING: the guest answered ERR FULL ${res.limitReplies} times (its 4096-subscriber limit): lower --rate or --seconds`);
    say(`${ts()} MESSAGES LOST: ${lost}`);
    if ((await chassis.board(primary)).power === 'off') {
      say(`${ts()} ${primary} has no power (a fence leaves such a board off): powering it back on; it joins as backup and gets a fresh clone (re-protection)…`);
      await chassis.power(primary, 'on');
    } else {
      say(`${ts()} ${primary} was reset by the fence: it boots again by itself, joins as backup and gets a fresh clone (re-protection)…`);
    }
    last = '';
    const again = await waitProtected(L, 180000, (v) => { const s = line(v); if (s !== last) { say(`${ts()} ${s}`); last = s; } }).catch(() => undefined);
    say(`${ts()} ${again ? `re-protected: ${again} primary, ${partnerOf(again)} backup` : 're-protection did not complete in time'}`);
    let upgrade: Record<string, unknown> | undefined;
    if (o.upgradeGuest && again) {
      const target = o.upgradeGuest === true ? join(PACKAGE_ROOT, 'guests', 'dx-legacy-v2.json') : o.upgradeGuest;
      say(`${ts()} guest upgrade: the pair's guest application is upgraded to ${target} while clients keep sending…`);
      const load2 = startLoad(L, { rate: o.rate, durationMs: 25000, tag: 'G', retryMs: 20, verify: true, regEvery: 4 });
      await new Promise((r) => setTimeout(r, 2000));
      const sock = L.boards[again].controlSocket;
      const u0 = Date.now();
      const rep = await guestUpgradeWithProgress(sock, { guestFile: target }, (line) => say(`${ts()} ${line}`)) as { from: string; to: string; replayed: number };
      const u1 = Date.now();
      const r2 = await load2.result;
      const longest = r2.gaps.filter(([a, b]) => b >= u0 && a <= u1).reduce((m, [a, b]) => Math.max(m, b - a), 0);
      const lost2 = r2.verify!.missing.length;
      say(`${ts()} guest upgraded from ${rep.from} to ${rep.to} in ${((u1 - u0) / 1000).toFixed(1)} s (${rep.replayed} inputs replayed to the new version); longest wait for a reply ${longest} ms; ${r2.verify!.stats}`);
      say(`${ts()} MESSAGES LOST DURING THE UPGRADE: ${lost2}`);
      upgrade = { from: rep.from, to: rep.to, durationMs: u1 - u0, replayed: rep.replayed, longestGapMs: longest, answered: r2.acked, lost: lost2 };
    }
    result = {
      upgrade,
      primaryBefore: primary, faultHow: o.how, faultAt, takeoverMs: gap?.afterFaultMs ?? 0, answered: res.acked, lost,
      retriedIdentical: ver.retriedIdentical, retriedDifferent: ver.retriedDifferent.length, latency: res.latency, throughput: res.throughput,
      reprotected: again ?? null, boards: events.map((b) => ({ board: b.board, power: b.power })),
    };
    return result;
  } finally {
    if (o.keep) say(`${ts()} left running: \`understudy chassis status --name ${o.name}\`, \`understudy chassis down --name ${o.name}\``);
    else {
      await chassis.down({ purge: true }).catch(() => undefined);
      say(`${ts()} chassis down.`);
    }
  }
}
