/**
 * The hang rows of bench/failover-detect, on a chassis with the guest replicated (real QEMU) and a
 * client sending requests continuously (RATE a second, each retried every RETRY_MS):
 *
 *  - hang (controller): SIGSTOP of the primary's controller. Its membership process reports it hung
 *    in its heartbeats, the backup fences it and promotes (journal: BACKUP -> FENCING on
 *    partner-hung). The fenced board (a reset) boots, joins as backup and is cloned to by itself.
 *  - kill (controller): SIGKILL of the primary's controller. Its membership process's dying gasp
 *    (health 'gone'), the backup fences at once (BACKUP -> FENCING on partner-gone) and promotes.
 *  - power: the primary's board loses power. No gasp: the backup's verdict, then the power
 *    controller reports the board off, so it is fenced (found off) and taken over without the priority
 *    delay. The board stays off (a power failure): the bench powers it on again, as an operator would.
 *  - partition: both partner links cut for PARTITION_MS, then healed. The primary keeps serving
 *    (no role change), fences its backup (a reset) and releases what it held for it; after the heal
 *    the backup joins and is cloned to. The clients' silence is the one at the cut.
 *  - hang (guest): SIGSTOP of the primary's QEMU. The primary finds its QEMU stopped with requests
 *    to answer (its own check, STOPPED_CHECK_MS) and hands over (PRIMARY -> FAULT on guest-failed;
 *    the backup BACKUP -> PRIMARY on partner-fault); the old primary returns as backup by itself and
 *    is cloned to.
 *  - hang (application): the primary's guest application stops answering (the guest's HANG
 *    management command; QEMU runs on). The backup's witness reports it after guestHangFastMs (and
 *    again while it lasts), the primary confirms (no reply, a PING unanswered while its QEMU had the
 *    CPU; or, from guestHangMs, no PING answer within 100 ms) and hands over as above.
 *
 * For each: fault → first good reply (the end of the clients' silence that begins at the fault),
 * fault → the backup's transition, and fault → protected again (both copies in sync). A round whose
 * journals do not show the expected path, or that lost an acknowledged request, is an error: the
 * bench fails instead of printing a figure from it.
 *
 * Also a loaded soak on the same chassis (load, CPU burners, checkpoints and re-clones) that reads
 * what the hang bounds must stay above: the controllers' alive gaps and main-loop delay, and how
 * far the primary's replies trail the backup's copy's (the witness); and counts false verdicts.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { callControl } from '../src/mgmt/ipc.js';
import { BOARD_NAMES, partnerOf, type BoardName } from '../src/sim/chassis/layout.js';
import type { Chassis } from '../src/sim/chassis/rig.js';
import { startLoad, waitProtected } from '../src/sim/pair.js';
import type { HaStatus } from '../src/ha/ha-controller.js';
import type { WitnessStatus } from '../src/replication/guest-witness.js';
import type { JournalEvent } from '../src/store/journal.js';
import { summarize, type LatencySummary } from './lib.js';

export type HangKind = 'controller' | 'guest' | 'app' | 'kill' | 'power' | 'partition';
export const HANG_KINDS_ALL: readonly HangKind[] = ['controller', 'guest', 'app', 'kill', 'power', 'partition'];
/** How long a partition round keeps both links cut. */
export const PARTITION_MS = 3000;
type Stat = { p50: number; p99: number; max: number; count: number };

export interface HangSample {
  kind: HangKind;
  board: BoardName;
  /** Fault → the first reply after the clients' silence. */
  firstGoodReply: number;
  /** Fault → the backup's first transition (FENCING for a controller, PRIMARY for a guest). */
  verdict: number;
  /** Fault → the backup PRIMARY. */
  primary: number;
  /** The backup's FENCING → PRIMARY (the simulated power controller's fence), controller hangs only. */
  fence: number;
  /** Fault → protected again (primary protected, backup's copy running). */
  protectedAgain: number;
  answered: number;
}

export interface SoakFigures {
  seconds: number;
  burners: number;
  checkpoints: number;
  clones: number;
  answered: number;
  falseVerdicts: string[];
  boards: Partial<Record<BoardName, { aliveGapMs?: { p99: number; max: number; count: number }; mainLoop: { p99: number; max: number }; role: string }>>;
  /** The backup's witness at the end: how much later the primary's replies came than its copy's, and how long its suspicions lasted. */
  witness?: { late: Stat; suspected: Stat; boundMs: number; verdicts: number; reports: number; repeatMs: number };
  /** The primary's fast checks of the witness's early reports: declined (its guest slow, not hung) and the last reason. */
  fastChecks?: { declined: number; slowed: number; lastDeclined: string | null };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** How long after the last clone a round starts (the input-loss watch looks once a second, twice while idle). */
const STEADY_MS = 4000;
/**
 * The clients retry an unanswered request this often (so the first good reply is late by up to this
 * much), as in the integration tests and the demo. Not 5 ms: every retry is a new input to both
 * guests, and 8 clients retrying every 5 ms through a 300 ms silence hand the guests 1600 inputs a
 * second, more than this machine's TCG pair answers: the backlog then delays the first reply after
 * the takeover, and runs into the input losses noted in BENCHMARKS.md.
 */
export const RETRY_MS = 20;
/** Requests a second from the clients. */
export const RATE = 150;
/** The clients' silence that follows a fault may begin this long after it (replies already on their way). */
const SILENCE_STARTS_WITHIN_MS = 50;

export class HangBench {
  constructor(private readonly chassis: Chassis, private readonly spawnBurner: (b: BoardName, ms: number) => ChildProcess) {}

  private sock(b: BoardName): string {
    return this.chassis.layout.boards[b].controlSocket;
  }

  private ctl(b: BoardName, cmd: string, a: Record<string, unknown> = {}, t = 10000): Promise<any> {
    return callControl(this.sock(b), cmd, a, t);
  }

  private async events(b: BoardName, sinceId: number): Promise<JournalEvent[]> {
    return (await this.ctl(b, 'events', { limit: 10000, sinceId })).events as JournalEvent[];
  }

  private async lastId(b: BoardName): Promise<number> {
    return ((await this.ctl(b, 'events', { limit: 1 })).events as JournalEvent[]).at(-1)?.id ?? 0;
  }

  /** A protected pair; a board found off (fenced: the bench is the operator who powers it on) is switched on. */
  async protectedPair(): Promise<{ primary: BoardName; backup: BoardName }> {
    const end = Date.now() + 240000;
    for (;;) {
      for (const b of BOARD_NAMES) if ((await this.chassis.board(b)).power === 'off') await this.chassis.power(b, 'on');
      try {
        const primary = await waitProtected(this.chassis.layout, 20000);
        return { primary, backup: partnerOf(primary) };
      } catch (e) {
        if (Date.now() > end) throw e;
      }
    }
  }

  /**
   * A protected pair whose last clone is at least STEADY_MS old, so the backup's input-loss watch has
   * looked at the new copy while idle (a copy that lost inputs at its cut-over is re-cloned first:
   * see the notes in BENCHMARKS.md; a fault right after such a clone loses acknowledged requests).
   */
  private async steadyPair(): Promise<{ primary: BoardName; backup: BoardName }> {
    for (let i = 0; ; i++) {
      const pair = await this.protectedPair();
      const r = (await this.ctl(pair.primary, 'replication.status')).replication as { cloneInProgress: boolean; lastClone?: { at: string } };
      const age = r.lastClone ? Date.now() - Date.parse(r.lastClone.at) : Infinity;
      if (!r.cloneInProgress && age >= STEADY_MS) return pair;
      if (i > 60) throw new Error(`the pair did not stay without a clone for ${STEADY_MS} ms`);
      await sleep(Math.max(500, STEADY_MS - age));
    }
  }

  /** One fault under load; throws (with the journals) if the takeover did not go the expected way. */
  async round(kind: HangKind, i: number): Promise<HangSample> {
    const { primary, backup } = await this.steadyPair();
    const marks = { [primary]: await this.lastId(primary), [backup]: await this.lastId(backup) } as Record<BoardName, number>;
    const qemuPid = Number(readFileSync(`${this.chassis.layout.boards[primary].storageDir}/qemu.pid`, 'utf8'));
    // The load spans the fault and the takeover, and ends before the re-protection's clone holds
    // inputs: clients retrying every few ms through a 1-2 s hold would flood both guests with retries.
    const load = startLoad(this.chassis.layout, { rate: RATE, durationMs: 4000, tag: `H${kind[0]}${i}x`, retryMs: RETRY_MS, verify: true });
    await sleep(2500);
    const before = Date.now();
    if (kind === 'controller') await this.chassis.fail(primary, 'hang');
    else if (kind === 'kill') await this.chassis.fail(primary, 'kill');
    else if (kind === 'power') await this.chassis.fail(primary, 'power');
    else if (kind === 'partition') await Promise.all([this.chassis.cut('ethernet'), this.chassis.cut('serial')]);
    else if (kind === 'app') await callControl(this.chassis.layout.boards[primary].controlSocket, 'guest.manage', { command: 'HANG' }, 5000);
    else process.kill(qemuPid, 'SIGSTOP');
    const tFault = kind === 'guest' || kind === 'app' || kind === 'partition' ? (before + Date.now()) / 2 : before;
    if (kind === 'partition') {
      await sleep(PARTITION_MS);
      await Promise.all([this.chassis.heal('ethernet'), this.chassis.heal('serial')]);
    }
    const res = await load.result;
    const what = `hang (${kind}) ${i} of ${primary}`;
    if (res.verify!.missing.length) throw new Error(`${what}: ${res.verify!.missing.length} acknowledged registrations lost`);
    if (res.verify!.retriedDifferent.length) throw new Error(`${what}: retried ids answered differently: ${res.verify!.retriedDifferent[0]}`);
    // The silence the fault caused: of the gaps that begin by SILENCE_STARTS_WITHIN_MS after it and
    // end after it, the one that ends last (a short gap of normal traffic may straddle the fault).
    const silence = res.gaps.filter(([from, to]) => to > tFault && from <= tFault + SILENCE_STARTS_WITHIN_MS).sort((a, b) => b[1] - a[1])[0];
    if (!silence) throw new Error(`${what}: no silence of the clients after the fault (gaps: ${JSON.stringify(res.gaps.slice(0, 5))})`);

    const jb = await this.events(backup, marks[backup]);
    const jp = kind === 'guest' || kind === 'app' ? await this.events(primary, marks[primary]) : [];
    const show = () => `\n${backup}: ${jb.map((e) => `${e.at} ${e.kind}: ${e.message}`).join('\n  ')}\n${primary}: ${jp.map((e) => `${e.at} ${e.kind}: ${e.message}`).join('\n  ')}`;
    const t = (e: JournalEvent | undefined) => (e ? Date.parse(e.at) - tFault : NaN);
    const tr = jb.filter((e) => e.kind === 'role.transition').map((e) => `${e.detail!.from}->${e.detail!.to}:${e.detail!.event}`);
    let verdict: JournalEvent | undefined;
    if (kind === 'controller' || kind === 'kill' || kind === 'power') {
      const event = kind === 'controller' ? 'partner-hung' : kind === 'kill' ? 'partner-gone' : 'partner-dead';
      if (kind === 'power' && !jb.some((e) => e.kind === 'role' && /is powered off .*not a partition/.test(e.message))) throw new Error(`${what}: the power controller's answer was not used${show()}`);
      if (tr.join(' ') !== `BACKUP->FENCING:${event} FENCING->PRIMARY:fence-ok`) throw new Error(`${what}: the backup did not take over on ${event}: ${tr.join(' ')}${show()}`);
      verdict = jb.find((e) => e.kind === 'role.transition');
    } else if (kind === 'partition') {
      const pj = await this.events(primary, marks[primary]);
      jp.push(...pj);
      const ptr = pj.filter((e) => e.kind === 'role.transition');
      const fence = pj.find((e) => e.kind === 'fence' && e.detail?.outcome === 'reset');
      if (ptr.length || !fence || tr.some((t) => t.endsWith('->PRIMARY') || t.includes('FENCING'))) {
        throw new Error(`${what}: not the priority-fencing path (the primary serves on and resets its backup): primary ${ptr.map((e) => e.message).join(' ')}, backup ${tr.join(' ')}${show()}`);
      }
      verdict = fence;
    } else {
      const ptr = jp.filter((e) => e.kind === 'role.transition').map((e) => `${e.detail!.from}->${e.detail!.to}:${e.detail!.event}`);
      // guest: the primary's own check found its QEMU stopped; app: the backup's witness, then the primary's confirmation.
      const found = kind === 'guest'
        // (its own stopped-QEMU check, or the witness's fast report reaching it first: both read the state)
        ? jp.some((e) => e.kind === 'guest-hang' && /(^|; )here its QEMU process \d+ is stopped .*: the guest is hung/.test(e.message))
        : jp.some((e) => e.kind === 'guest-hang' && /^the backup's copy answered \d+ requests .*answered nothing .*the guest is hung/.test(e.message));
      if (tr[0] !== 'BACKUP->PRIMARY:partner-fault' || ptr[0] !== 'PRIMARY->FAULT:guest-failed' || !found) {
        throw new Error(`${what}: not the ${kind === 'guest' ? 'stopped-QEMU' : 'witness\'s'} path: backup ${tr.join(' ')}, primary ${ptr.join(' ')}${show()}`);
      }
      verdict = jb.find((e) => e.kind === 'role.transition');
    }
    const promoted = jb.find((e) => e.kind === 'role.transition' && e.detail!.to === 'PRIMARY');
    const after = await this.protectedPair();
    if (kind === 'partition' && after.primary !== primary) throw new Error(`${what}: the primary changed (${after.primary})${show()}`);
    return {
      kind, board: primary, firstGoodReply: silence[1] - tFault, verdict: t(verdict), primary: kind === 'partition' ? NaN : t(promoted),
      protectedAgain: Date.now() - tFault - (kind === 'partition' ? PARTITION_MS : 0), answered: res.acked,
      fence: kind === 'controller' || kind === 'kill' || kind === 'power' ? t(promoted) - t(verdict) : NaN,
    };
  }

  /** A line on stderr: the witness and the controllers' alive gaps so far (a soak that fails still says what it saw). */
  private async progress(backup: BoardName): Promise<void> {
    const w = (await this.ctl(backup, 'replication.status').catch(() => undefined))?.replication?.witness;
    const gaps = await Promise.all(BOARD_NAMES.map(async (b) => ((await this.ctl(b, 'role').catch(() => undefined)) as HaStatus | undefined)?.controller?.aliveGapMs));
    process.stderr.write(`  soak: witness late ${JSON.stringify(w?.primaryLateMs ?? null)} suspected ${JSON.stringify(w?.suspectedMs ?? null)}; alive gaps ${JSON.stringify(gaps)}\n`);
  }

  /**
   * Load, CPU burners, a checkpoint every 15 s and a re-clone every 30 s for `seconds`: what a busy
   * pair's controllers and guests show; any hang verdict, report at guestHangMs or role change is a false one (reports at the fast bound
   * that the primary declines are counted, not false: a slow guest causes them by design).
   */
  async soak(seconds: number, burnersPerBoard: number): Promise<SoakFigures> {
    const { primary, backup } = await this.protectedPair();
    const marks = { [primary]: await this.lastId(primary), [backup]: await this.lastId(backup) } as Record<BoardName, number>;
    const burners: ChildProcess[] = [];
    for (const b of BOARD_NAMES) for (let k = 0; k < burnersPerBoard; k++) burners.push(this.spawnBurner(b, (seconds + 60) * 1000));
    const figures: SoakFigures = { seconds, burners: burners.length, checkpoints: 0, clones: 0, answered: 0, falseVerdicts: [], boards: {} };
    // Clients retry every 100 ms here: every retry is a new input to both guests, and with the
    // burners slowing the guests a 20 ms retry floods them faster than they answer.
    // A short tag: the load's verification ids (tag, 'v', subscriber) must fit the guest's 16-byte ids.
    const load = startLoad(this.chassis.layout, { rate: 200, durationMs: seconds * 1000, tag: `S${Date.now() % 1000}x`, retryMs: 100, verify: true },
      (pr) => process.stderr.write(`  soak: ${pr.acked} answered, ${pr.inFlight} in flight, ${pr.retries} retries, longest gap ${pr.longestGapMs} ms\n`));
    load.result.catch(() => undefined); // awaited below; a step that throws first must not leave it unhandled
    try {
      const end = Date.now() + seconds * 1000;
      for (let k = 1; Date.now() < end - 5000; k++) {
        await sleep(Math.min(15000, end - Date.now() - 5000));
        if (Date.now() >= end - 5000) break;
        if (k % 2 === 0) { await this.ctl(primary, 'clone', {}, 120000); figures.clones++; } else { await this.ctl(backup, 'checkpoint', {}, 120000); figures.checkpoints++; }
        await this.progress(backup);
      }
      const res = await load.result;
      figures.answered = res.acked;
      if (res.verify!.missing.length) figures.falseVerdicts.push(`${res.verify!.missing.length} acknowledged registrations lost`);
    } finally {
      for (const c of burners) if (c.pid && c.exitCode === null && c.signalCode === null) process.kill(c.pid, 'SIGKILL');
    }
    for (const b of BOARD_NAMES) {
      const r = (await this.ctl(b, 'role')) as HaStatus;
      figures.boards[b] = { aliveGapMs: r.controller?.aliveGapMs, mainLoop: r.loopDelayMs.main, role: r.role };
      for (const e of await this.events(b, marks[b])) {
        if (e.kind === 'guest-hang' || e.kind === 'controller' || e.kind === 'role.transition' || e.kind === 'fence') figures.falseVerdicts.push(`${b} ${e.at} ${e.kind}: ${e.message}`);
      }
    }
    const w = (await this.ctl(backup, 'replication.status')).replication.witness as WitnessStatus | undefined;
    if (w) figures.witness = { late: w.primaryLateMs, suspected: w.suspectedMs, boundMs: w.boundMs, verdicts: w.verdicts, reports: w.reports, repeatMs: w.repeatMs };
    const gh = (await this.ctl(primary, 'replication.status')).replication.guestHang as { fastDeclined: number; fastDeclinedSlowed: number; lastDeclined: string | null } | undefined;
    if (gh) figures.fastChecks = { declined: gh.fastDeclined, slowed: gh.fastDeclinedSlowed, lastDeclined: gh.lastDeclined };
    return figures;
  }
}

export function hangRows(samples: HangSample[], targetP99Ms: Partial<Record<HangKind, number>>): Array<Array<string | number>> {
  const fmt = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : '-');
  const rows: Array<Array<string | number>> = [['measure (ms)', 'n', 'p50', 'p99', 'max', 'target']];
  const name: Record<HangKind, string> = { controller: 'hang (controller)', guest: 'hang (guest: QEMU stopped)', app: 'hang (guest application)', kill: 'kill (controller)', power: 'power loss', partition: 'partition' };
  for (const kind of HANG_KINDS_ALL) {
    const s = samples.filter((x) => x.kind === kind);
    if (!s.length) continue;
    const p = (f: (x: HangSample) => number): LatencySummary => summarize(s.map(f));
    const first = p((x) => x.firstGoodReply);
    const row = (what: string, v: LatencySummary, target = '') => [what, v.n, fmt(v.p50), fmt(v.p99), fmt(v.max), target];
    const target = targetP99Ms[kind];
    rows.push(row(`${name[kind]}: fault → first good reply`, first, target === undefined ? '' : `≤ ${target} p99: ${first.p99 <= target ? 'met' : 'NOT met'}`));
    if (kind === 'controller' || kind === 'kill' || kind === 'power') {
      rows.push(row(`  fault → backup FENCING (${kind === 'controller' ? 'hang verdict' : kind === 'kill' ? 'dying gasp' : 'verdict, then the power controller says off'})`, p((x) => x.verdict)));
      rows.push(row('  of which FENCING → PRIMARY (the simulated fence, a reset)', p((x) => x.fence)));
      rows.push(row('  fault → backup PRIMARY', p((x) => x.primary)));
    } else if (kind === 'guest') {
      rows.push(row('  fault → backup PRIMARY (the primary finds QEMU stopped, FAULT)', p((x) => x.verdict)));
    } else if (kind === 'app') {
      rows.push(row('  fault → backup PRIMARY (witness guestHangFastMs, primary confirms, FAULT)', p((x) => x.verdict)));
    } else {
      rows.push(row('  cut → the primary\'s fence of its backup done (0 failovers)', p((x) => x.verdict)));
    }
    if (kind !== 'partition') rows.push(row(`  backup PRIMARY → first good reply (the service address taken, the new primary's reply, the clients' next retry within ${RETRY_MS} ms)`, p((x) => x.firstGoodReply - x.primary)));
    rows.push(row(`${name[kind]}: ${kind === 'partition' ? 'heal' : 'fault'} → protected again`, p((x) => x.protectedAgain), kind === 'power' ? 'board powered on by the bench' : 'automatic'));
  }
  return rows;
}
