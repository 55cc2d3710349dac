/**
 * The HA layer on the simulated chassis, as root, boards without a guest (membership and roles
 * only): deterministic roles at a cold start; kill -9 and SIGSTOP (a hang verdict) of the primary's controller (the
 * fenced board is reset and returns as backup by itself); one link cut (no failover, an alarm);
 * both links cut on a healthy pair (the primary keeps serving, the backup is reset, the pair is
 * whole again after heal); a cold start with both links cut (nobody fences, nobody serves, until
 * `understudy start-alone`); boards with different keys (alarms, no fence, no service); the
 * escalation of resets (the board is left off); fencing that fails (no promotion, retried every
 * second); forged, replayed and corrupted heartbeats (rejected and counted); real heartbeats captured
 * and replayed into a board while it restarts (bound to its previous boot: they change no role).
 * Every outcome is read
 * from the controllers' control sockets (`role`, `link.status`, `events`), from `chassis status`
 * and from the CLI, as an operator would see it.
 *
 * Each test gets a fresh chassis (so one fault never leaks into the next) and tears it down in
 * afterEach, failed or not; a failed test's run directory is kept for its logs. Waits are bounded by
 * count and time with generous limits; nothing asserts a wall-clock performance figure (that is
 * bench/failover-detect's job).
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { FRAME_VERSION, encodeHeartbeat, type Heartbeat, type Role } from '../../src/ha/frame.js';
import type { HaStatus } from '../../src/ha/ha-controller.js';
import type { LinkState, PartnerView } from '../../src/ha/membership.js';
import { callControl } from '../../src/mgmt/ipc.js';
import { chassisDown } from '../../src/sim/chassis/launcher.js';
import { CLI_ENTRY, PLINK_ADDRESS, PLINK_PORT, type BoardName } from '../../src/sim/chassis/layout.js';
import { Chassis } from '../../src/sim/chassis/rig.js';
import type { JournalEvent } from '../../src/store/journal.js';
import { eventually } from '../support/eventually.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BOARDS: BoardName[] = ['sim-a', 'sim-b'];
const other = (b: BoardName): BoardName => (b === 'sim-a' ? 'sim-b' : 'sim-a');

type LinkStatus = { board: string; links: LinkState[]; partner: PartnerView; alarms: string[] };

/** Sends UDP datagrams (hex) from `fromAddress` inside a namespace; a bounded child that exits by itself. */
const UDP_SENDER = `
const [from, to, port, gap, ...frames] = process.argv.slice(1);
const s = require('node:dgram').createSocket('udp4');
const bail = setTimeout(() => process.exit(3), 10000);
s.bind(0, from, async () => {
  for (const f of frames) {
    await new Promise((r) => s.send(Buffer.from(f, 'hex'), Number(port), to, r));
    await new Promise((r) => setTimeout(r, Number(gap)));
  }
  clearTimeout(bail);
  s.close();
});`;

describe('HA: membership, roles, fencing and the watchdog on the simulated chassis (root)', function () {
  this.timeout(90000);
  const name = `ha${process.pid % 1000}`;
  const runBase = `/tmp/us-ha-${process.pid}`;
  let runDir = '';
  let run = 0;
  let chassis: Chassis | undefined;
  const children: ChildProcess[] = [];

  const sock = (b: BoardName) => chassis!.layout.boards[b].controlSocket;
  const role = (b: BoardName) => callControl(sock(b), 'role', {}, 3000) as Promise<HaStatus>;
  const linkStatus = (b: BoardName) => callControl(sock(b), 'link.status', {}, 3000) as Promise<LinkStatus>;
  const events = async (b: BoardName, sinceId = 0, kind?: string): Promise<JournalEvent[]> =>
    ((await callControl(sock(b), 'events', { limit: 10000, sinceId, ...(kind ? { kind } : {}) }, 3000)) as { events: JournalEvent[] }).events;
  const lastEventId = async (b: BoardName): Promise<number> =>
    ((await callControl(sock(b), 'events', { limit: 1 }, 3000)) as { events: JournalEvent[] }).events.at(-1)?.id ?? 0;
  const roleOf = async (b: BoardName): Promise<Role | 'unavailable'> => {
    try {
      return (await role(b)).role;
    } catch {
      return 'unavailable';
    }
  };

  /** Both controllers answer and have settled on one PRIMARY and one BACKUP. */
  async function settledPair(timeoutMs = 20000): Promise<{ primary: BoardName; backup: BoardName }> {
    return eventually('one PRIMARY and one BACKUP', async () => {
      const [a, b] = await Promise.all(BOARDS.map(roleOf));
      if (a === 'PRIMARY' && b === 'BACKUP') return { primary: 'sim-a' as BoardName, backup: 'sim-b' as BoardName };
      if (a === 'BACKUP' && b === 'PRIMARY') return { primary: 'sim-b' as BoardName, backup: 'sim-a' as BoardName };
      return undefined;
    }, timeoutMs, 100);
  }

  /** Samples both boards' roles for `ms`: they must stay exactly `expected` the whole time. */
  async function rolesHold(expected: Record<BoardName, Role>, ms: number, everyMs = 200): Promise<number> {
    const end = Date.now() + ms;
    let samples = 0;
    for (let i = 0; i < Math.ceil(ms / everyMs) + 5 && Date.now() < end; i++) {
      const seen = { 'sim-a': await roleOf('sim-a'), 'sim-b': await roleOf('sim-b') };
      assert.deepEqual(seen, expected, `roles changed after ${samples} samples`);
      samples++;
      await sleep(everyMs);
    }
    assert.ok(samples >= 3, `only ${samples} role samples in ${ms} ms`);
    return samples;
  }

  /** Role transitions and fences journaled by either board since the marks. */
  async function failoverEvents(since: Record<BoardName, number>): Promise<JournalEvent[]> {
    const out: JournalEvent[] = [];
    for (const b of BOARDS) {
      for (const e of await events(b, since[b])) if (e.kind === 'role.transition' || e.kind === 'fence') out.push(e);
    }
    return out;
  }

  async function marks(): Promise<Record<BoardName, number>> {
    return { 'sim-a': await lastEventId('sim-a'), 'sim-b': await lastEventId('sim-b') };
  }

  const link = (s: LinkStatus, n: 'ethernet' | 'serial') => s.links.find((l) => l.name === n)!;

  /** The operator's CLI against a board (`--board <its profile> --json`): exit code and the JSON it printed. */
  async function cli(b: BoardName, ...args: string[]): Promise<{ code: number; out: any }> {
    const r = await promisify(execFile)(process.execPath, [CLI_ENTRY, ...args, '--board', chassis!.layout.boards[b].profile, '--json'], { timeout: 60000 })
      .then((x) => ({ code: 0, stdout: x.stdout }), (e: { code?: number; stdout?: string }) => ({ code: e.code ?? -1, stdout: e.stdout ?? '' }));
    return { code: r.code, out: JSON.parse(r.stdout) };
  }

  /** Fences journaled by `b` since `since` (done, not failed). */
  const fencesBy = async (b: BoardName, since: number) => (await events(b, since, 'fence')).filter((e) => e.detail?.outcome !== undefined);

  /** Sends frames to `to`'s partner-link port from its partner's address, inside the partner's namespace. */
  async function sendFrames(to: BoardName, frames: Buffer[], gapMs = 3): Promise<void> {
    const from = other(to);
    const child = chassis!.spawnIn(from, process.execPath, ['-e', UDP_SENDER, PLINK_ADDRESS[from], PLINK_ADDRESS[to], String(PLINK_PORT), String(gapMs),
      ...frames.map((f) => f.toString('hex'))], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
    const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
    assert.equal(code, 0, `frame sender exited ${code}: ${stderr}`);
  }

  before(function () {
    if (process.getuid?.() !== 0) this.skip();
  });

  beforeEach(async () => {
    runDir = `${runBase}-${++run}`;
    chassis = await Chassis.up({ name, runDir, guest: 'none', baud: 115200 });
  });

  afterEach(async function () {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null && c.pid) process.kill(c.pid, 'SIGKILL');
    const failed = this.currentTest?.state === 'failed';
    if (failed) console.log(`    (kept ${runDir} for its logs: chassisd.log, sim-a/board.log, sim-b/board.log)`);
    await chassisDown({ name, runDir, purge: !failed });
    chassis = undefined;
  });

  it('both boards starting together: exactly one PRIMARY and one BACKUP, sim-a (preferred) primary, twice', async () => {
    for (let round = 1; round <= 2; round++) {
      const pair = await settledPair();
      assert.deepEqual(pair, { primary: 'sim-a', backup: 'sim-b' }, `round ${round}`);
      const [a, b] = await Promise.all([role('sim-a'), role('sim-b')]);
      assert.equal(a.preferred, true);
      assert.equal(b.preferred, false);
      assert.equal(a.partner.heartbeat?.role, 'BACKUP');
      assert.equal(b.partner.heartbeat?.role, 'PRIMARY');
      for (const s of [a, b]) {
        assert.equal(s.lastTransition?.from, 'STARTING', `${s.board} went straight from STARTING: ${JSON.stringify(s.lastTransition)}`);
        assert.equal(s.fencing.attempts, 0, `${s.board} fenced nobody`);
      }
      // Nobody fenced or powered anything off: both boards are on and were never reset.
      const st = await chassis!.status();
      for (const board of st.boards) {
        assert.equal(board.power, 'on');
        assert.equal(board.resets.count, round === 1 ? 0 : 1, `${board.board} resets`);
        assert.equal(board.role.ok, true);
      }
      if (round === 1) assert.equal(st.powerController.requests, 0, 'nobody asked the power controller for anything');
      if (round === 2) break;
      // Cold start again, both at once: the same answer (a new generation on each board).
      await chassis!.powerController('break'); // neither may fence the other while they go down
      await Promise.all(BOARDS.map((x) => chassis!.power(x, 'off')));
      await chassis!.powerController('fix');
      await Promise.all(BOARDS.map((x) => chassis!.power(x, 'on')));
      await eventually('both answer after the cold start', async () => (await chassis!.status()).boards.every((x) => x.answers), 20000, 100);
      // A board's control socket answers before its HA controller exists (role STARTING, no generation yet).
      const gens = await eventually('both HA controllers report their generation', async () => {
        const g = await Promise.all(BOARDS.map(async (x) => (await role(x)).generation));
        return g.every((x) => x !== undefined) ? g : undefined;
      }, 20000, 100);
      assert.deepEqual(gens, [2, 2], 'a new boot generation on each board');
    }
  });

  it('kill -9 of the primary\'s controller: its membership process\'s dying gasp, and the backup fences it (a reset) at once, not after the priority delay, then promotes; the board comes back as BACKUP by itself and never preempts', async () => {
    const { primary, backup } = await settledPair();
    assert.equal(primary, 'sim-a');
    const since = await marks();
    const before = await chassis!.board(primary);
    const killed = (await chassis!.fail(primary, 'kill')) as { pid: number | null };
    assert.ok(killed.pid, 'a controller pid was killed');

    await eventually(`${backup} PRIMARY`, async () => (await roleOf(backup)) === 'PRIMARY', 15000, 50);
    const journal = await events(backup, since[backup]);
    const show = journal.map((e) => `${e.at} ${e.message}`).join('\n');
    const transitions = journal.filter((e) => e.kind === 'role.transition').map((e) => `${e.detail!.from}->${e.detail!.to}:${e.detail!.event}`);
    // Straight through on the gasp (health 'gone'): no priority delay, since a dead controller is not a partition.
    assert.deepEqual(transitions, ['BACKUP->FENCING:partner-gone', 'FENCING->PRIMARY:fence-ok'], show);
    const fencing = journal.findIndex((e) => e.kind === 'role.transition' && e.detail!.to === 'FENCING');
    const fence = journal.findIndex((e) => e.kind === 'fence');
    const promoted = journal.findIndex((e) => e.kind === 'role.transition' && e.detail!.to === 'PRIMARY');
    assert.ok(fencing >= 0 && fencing < fence && fence < promoted, `order: FENCING ${fencing} < fence ${fence} < PRIMARY ${promoted}`);
    assert.match(journal[fencing]!.message, /dying gasp/);
    assert.equal(journal[fence]!.detail!.partner, primary, 'the fence names the partner');
    assert.equal(journal[fence]!.detail!.outcome, 'reset');
    assert.equal(journal[fence]!.detail!.waitedMs, 0, 'no priority fencing delay: the primary said its controller is gone');
    assert.match(journal[fence]!.message, new RegExp(`partner ${primary} fenced: reset`));
    assert.ok(!journal.some((e) => /fencing .* in \d+ ms unless it is heard again/.test(e.message)), `no fence waited for:\n${show}`);

    const b = await role(backup);
    assert.equal(b.fencing.attempts, 1);
    assert.equal(b.fencing.failures, 0);
    assert.equal(b.partner.state === 'alive', false, 'the fenced partner is not alive');
    const st = await chassis!.board(primary);
    assert.equal(st.resets.count, before.resets.count + 1, 'reset once');
    assert.equal(st.resets.last?.cause, 'power-controller');
    assert.equal(st.lastExit?.signal, 'SIGKILL');
    assert.equal(st.lastExit?.pid, killed.pid);

    // Nobody touches anything: the reset board boots, joins as BACKUP and leaves the primary alone.
    const mark = (await events(backup, 0)).at(-1)!.id;
    await eventually(`${primary} BACKUP again by itself`, async () => (await roleOf(primary)) === 'BACKUP', 30000, 100);
    const back = await role(primary);
    assert.equal(back.lastTransition?.from, 'STARTING');
    assert.equal(back.lastTransition?.cause, 'partner is primary: joining as backup');
    assert.ok(back.generation >= 2, `a new boot generation (${back.generation})`);
    await rolesHold({ [primary]: 'BACKUP', [backup]: 'PRIMARY' } as Record<BoardName, Role>, 3000);
    const returned = await events(primary, since[primary]);
    assert.ok(!returned.some((e) => e.kind === 'role.transition' && e.detail!.to === 'PRIMARY' && e.id > since[primary]),
      `the returning board never took the primary role:\n${returned.map((e) => e.message).join('\n')}`);
    assert.deepEqual((await events(backup, mark)).filter((e) => e.kind === 'role.transition'), [], 'the primary never stepped down');
    assert.equal((await chassis!.status()).powerController.recent.filter((r) => /^(ON|OFF)/.test(r.request)).length, 0, 'no operator power request');
  });

  it('SIGSTOP of the primary\'s controller: its own heartbeats report it hung, the backup fences it and promotes, before any watchdog reset', async () => {
    const { primary, backup } = await settledPair();
    const before = await chassis!.board(primary);
    assert.equal(before.watchdog.armed, true, 'the controller armed its watchdog');
    const since = await marks();
    const hung = (await chassis!.fail(primary, 'hang')) as { pid: number };
    assert.ok(hung.pid, 'a controller was stopped');
    // By the time chassis status answers, the board may be fenced already.
    assert.match((await chassis!.board(primary)).controller?.state ?? 'exited', /^(hung|exited)$/);

    await eventually(`${backup} PRIMARY`, async () => (await roleOf(backup)) === 'PRIMARY', 30000, 20);
    const journal = await events(backup, since[backup]);
    const transitions = journal.filter((e) => e.kind === 'role.transition');
    assert.deepEqual(transitions.map((e) => `${e.detail!.from}->${e.detail!.to}`), ['BACKUP->FENCING', 'FENCING->PRIMARY'], journal.map((e) => e.message).join('\n'));
    // The takeover came from the hang verdict in the partner's heartbeats, not from its silence
    // after a watchdog reset: the partner was never declared dead, and its watchdog never fired.
    assert.equal(transitions[0]!.detail!.event, 'partner-hung', transitions[0]!.message);
    assert.match(transitions[0]!.message, /partner reports its controller hung/);
    const dead = journal.find((e) => e.kind === 'partner' && /declared dead/.test(e.message));
    assert.ok(!dead || dead.id > transitions[0]!.id, 'not declared dead before FENCING (only once the fence had silenced it)');
    const fence = journal.find((e) => e.kind === 'fence');
    assert.equal(fence?.detail?.partner, primary);
    assert.match(fence!.message, /fenced: reset \(power-cycled\)/, 'the default fence action: a reset');
    assert.equal((await role(backup)).fencing.failures, 0);

    const st = await chassis!.board(primary);
    assert.equal(st.watchdog.fired, before.watchdog.fired, 'the watchdog did not fire: the fence came first');
    assert.notEqual(st.resets.last?.cause, 'watchdog');
    assert.equal(st.resets.last?.cause, 'power-controller', 'reset by the fence: the power controller\'s RESET, as for kill -9');
    // The power controller answers RESET at the power cut, before the board's processes are reaped
    // and its new controller runs: the chassis' record of the controller follows a moment later.
    await eventually('the hung controller gone from the board', async () => ((await chassis!.board(primary)).controller?.pid !== hung.pid ? true : undefined), 30000, 50);
    const chassisLog = readFileSync(`${runDir}/chassisd.log`, 'utf8');
    assert.ok(!chassisLog.includes(`watchdog reset ${primary}`), 'chassisd.log has no watchdog reset');
    // The hung board's membership process (not hung) said why, in the board's log: the /proc state.
    const boardLog = readFileSync(chassis!.layout.boards[primary].log, 'utf8');
    assert.match(boardLog, /controller hung: reported in the heartbeats/);
    assert.match(boardLog, /controller process stopped \(state T\)/);
  });

  for (const cut of ['ethernet', 'serial'] as const) {
    it(`${cut} cut alone: no failover, the link is reported down with an alarm, and up again after heal`, async () => {
      const { primary, backup } = await settledPair();
      const expected = { [primary]: 'PRIMARY', [backup]: 'BACKUP' } as Record<BoardName, Role>;
      const since = await marks();
      await chassis!.cut(cut);
      for (const b of BOARDS) {
        const s = await eventually(`${b} sees ${cut} down`, async () => {
          const l = await linkStatus(b);
          return !link(l, cut).up ? l : undefined;
        }, 10000, 100);
        assert.ok(s.alarms.includes(`partner link ${cut} down`), `${b} alarms: ${s.alarms.join('; ')}`);
        assert.equal(s.partner.state, 'alive', `${b} still hears its partner on the other link`);
      }
      await rolesHold(expected, 3000);
      for (const b of BOARDS) {
        const s = await linkStatus(b);
        assert.equal(link(s, cut).up, false, `${b}: ${cut} still down while cut`);
        assert.ok(s.alarms.includes(`partner link ${cut} down`));
        const journal = await events(b, since[b], 'link');
        assert.ok(journal.some((e) => e.detail!.link === cut && e.detail!.up === false && /DOWN/.test(e.message)), `${b} journals the ${cut} link down`);
      }
      const st = await chassis!.status();
      assert.equal(st.links[cut].state, 'cut');
      for (const board of st.boards) {
        assert.equal(board.power, 'on');
        assert.equal(board.resets.count, 0);
      }

      await chassis!.heal(cut);
      for (const b of BOARDS) {
        await eventually(`${b} sees ${cut} up again`, async () => {
          const l = await linkStatus(b);
          return link(l, cut).up && !l.alarms.includes(`partner link ${cut} down`);
        }, 10000, 100);
        const journal = await events(b, since[b], 'link');
        assert.ok(journal.some((e) => e.detail!.link === cut && e.detail!.up === true), `${b} journals the ${cut} link up`);
      }
      assert.deepEqual(await failoverEvents(since), [], 'no role transition and no fence on either board');
      assert.deepEqual({ 'sim-a': await roleOf('sim-a'), 'sim-b': await roleOf('sim-b') }, expected);
    });
  }

  it('both links cut for 3 s on a healthy pair: the primary keeps serving and is never fenced, the backup is reset (or waits), and after heal the pair is whole again with no operator action', async () => {
    const { primary, backup } = await settledPair();
    const since = await marks();
    const st0 = await chassis!.status();
    const resets0 = Object.fromEntries(st0.boards.map((b) => [b.board, b.resets.count])) as Record<BoardName, number>;
    await chassis!.cut('ethernet');
    await chassis!.cut('serial');
    // Throughout the cut: the primary is PRIMARY at every sample; the backup never is.
    const seenBackup = new Set<string>();
    const end = Date.now() + 3000;
    let samples = 0;
    for (let i = 0; i < 100 && Date.now() < end; i++) {
      assert.equal(await roleOf(primary), 'PRIMARY', `${primary} serves throughout the cut (sample ${samples})`);
      const r = await roleOf(backup);
      assert.notEqual(r, 'PRIMARY', `${backup} never serves`);
      seenBackup.add(r);
      samples++;
      await sleep(100);
    }
    assert.ok(samples >= 10, `${samples} samples`);
    await chassis!.heal('ethernet');
    await chassis!.heal('serial');
    const pair = await settledPair(30000);
    assert.deepEqual(pair, { primary, backup }, 'the same primary, the backup rejoined by itself');

    // The primary: no role change, never fenced, never reset; it fenced its backup at most once (a reset).
    const pj = await events(primary, since[primary]);
    assert.deepEqual(pj.filter((e) => e.kind === 'role.transition').map((e) => e.message), [], 'the primary never changed role');
    const pf = await fencesBy(primary, since[primary]);
    assert.ok(pf.length <= 1, pf.map((e) => e.message).join('\n'));
    for (const f of pf) assert.deepEqual([f.detail!.partner, f.detail!.outcome], [backup, 'reset']);
    // The backup's journal survives its reset (its store is on its disk).
    const bj = await events(backup, since[backup]);
    assert.deepEqual(bj.filter((e) => e.kind === 'fence'), [], 'the backup fenced nobody');
    assert.ok(!bj.some((e) => e.kind === 'role.transition' && e.detail!.to === 'PRIMARY'), 'the backup never promoted');
    const st1 = await chassis!.status();
    const resets = (b: BoardName) => st1.boards.find((x) => x.board === b)!.resets.count - resets0[b];
    assert.equal(resets(primary), 0, 'the primary was never reset');
    assert.equal(resets(backup), pf.length, 'the backup was reset once per fence of the primary');
    for (const board of st1.boards) assert.equal(board.power, 'on');
    assert.equal(st1.powerController.recent.filter((r) => /^(ON|OFF)/.test(r.request)).length, 0, 'no operator power request, no power-off');
    console.log(`      backup during the cut: ${[...seenBackup].join(', ')}; fences by the primary: ${pf.length}`);
  });

  it('both links cut before the boards start: nobody fences, nobody serves (wait-for-partner); `understudy start-alone` on one makes it serve; after heal the other joins as BACKUP', async () => {
    await settledPair();
    await chassis!.coldStart(() => undefined, async () => {
      await chassis!.cut('ethernet');
      await chassis!.cut('serial');
    });
    const requests0 = (await chassis!.status()).powerController.requests;
    const waiting = { 'sim-a': 'WAITING', 'sim-b': 'WAITING' } as Record<BoardName, Role>;
    await eventually('both boards WAITING', async () => (await roleOf('sim-a')) === 'WAITING' && (await roleOf('sim-b')) === 'WAITING', 20000, 200);
    await rolesHold(waiting, 3000);
    for (const b of BOARDS) {
      const r = await role(b);
      assert.ok(r.alarms.some((a) => /^no partner heard since start: not serving/.test(a)), `${b}: ${r.alarms.join('; ')}`);
      assert.match(r.lastTransition!.cause, /no partner heard since start: waiting for it/);
      assert.equal(r.fencing.attempts, 0);
    }
    const st = await chassis!.status();
    assert.deepEqual(st.boards.map((b) => b.power), ['on', 'on'], 'never both off: nobody is off');
    assert.equal(st.powerController.requests, requests0, 'nobody asked the power controller for anything');

    // The operator: sim-a serves alone (it fences sim-b first: a reset, and sim-b waits again).
    const mark = await marks();
    const ok = await cli('sim-a', 'start-alone');
    assert.equal(ok.code, 0, JSON.stringify(ok.out));
    assert.deepEqual({ board: ok.out.board, role: ok.out.role, partner: ok.out.partner }, { board: 'sim-a', role: 'PRIMARY', partner: 'sim-b' });
    const journal = await events('sim-a', mark['sim-a']);
    assert.ok(journal.some((e) => e.kind === 'role' && /^start-alone requested by the operator: fencing sim-b/.test(e.message)), 'journaled');
    assert.deepEqual(journal.filter((e) => e.kind === 'role.transition').map((e) => `${e.detail!.from}->${e.detail!.to}`), ['WAITING->FENCING', 'FENCING->PRIMARY']);
    assert.equal((await fencesBy('sim-a', mark['sim-a']))[0]?.detail?.outcome, 'reset');
    const again = await cli('sim-a', 'start-alone');
    assert.equal(again.code, 1);
    assert.equal(again.out.error.code, 'US_ERR_ROLE');
    assert.match(again.out.error.message, /^start-alone refused: board sim-a is PRIMARY/);
    await eventually('sim-b back and WAITING (the links are still cut)', async () => (await roleOf('sim-b')) === 'WAITING', 30000, 200);
    assert.equal(await roleOf('sim-a'), 'PRIMARY');

    await chassis!.heal('ethernet');
    await chassis!.heal('serial');
    assert.deepEqual(await settledPair(30000), { primary: 'sim-a', backup: 'sim-b' });
    assert.equal((await role('sim-b')).lastTransition?.cause, 'partner is primary: joining as backup');
    const refused = await cli('sim-b', 'start-alone');
    assert.equal(refused.out.error.code, 'US_ERR_ROLE');
    assert.deepEqual((await chassis!.status()).boards.map((b) => b.power), ['on', 'on']);
  });

  it('boards holding different keys: both alive, neither fenced, an alarm on both, nobody serves; start-alone is refused', async () => {
    await settledPair();
    const otherKey = `${chassis!.layout.runDir}/ha-other.key`;
    writeFileSync(otherKey, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
    await chassis!.coldStart((b, profile) => { if (b === 'sim-b') profile.ha.keyFile = otherKey; });
    const requests0 = (await chassis!.status()).powerController.requests;
    await eventually('both boards WAITING with the alarm', async () => {
      for (const b of BOARDS) {
        const r = await role(b);
        if (r.role !== 'WAITING' || !r.alarms.some((a) => /^partner misconfigured: heard only with a bad MAC/.test(a))) return false;
      }
      return true;
    }, 20000, 200);
    await rolesHold({ 'sim-a': 'WAITING', 'sim-b': 'WAITING' } as Record<BoardName, Role>, 6000);
    for (const b of BOARDS) {
      const l = await linkStatus(b);
      assert.ok(l.alarms.some((a) => /^partner misconfigured: heard only with a bad MAC on (ethernet, serial|serial, ethernet|ethernet|serial) \(another key\?\): not fencing it, not serving$/.test(a)), `${b} link status: ${l.alarms.join('; ')}`);
      assert.ok(link(l, 'ethernet').rejected.mac > 100, `${b} counts the bad MACs`);
      assert.equal(l.partner.state, 'unknown', 'no authentic frame');
      const j = await events(b, 0);
      assert.ok(j.some((e) => e.kind === 'partner' && /^partner heard only with a bad MAC .*alive and misconfigured/.test(e.message)), `${b} journals it`);
      assert.ok(!j.some((e) => e.kind === 'fence'), `${b} fenced nobody`);
      const refused = await cli(b, 'start-alone');
      assert.equal(refused.code, 1);
      assert.equal(refused.out.error.code, 'US_ERR_ROLE');
      assert.match(refused.out.error.message, /bad MAC/);
    }
    const st = await chassis!.status();
    assert.deepEqual(st.boards.map((b) => b.power), ['on', 'on']);
    assert.equal(st.powerController.requests, requests0, 'nobody asked the power controller for anything');
  });

  it('escalation: a board reset maxResets times within the window is powered off at its next fence and left off, with an alarm; powered on by the operator, it rejoins', async () => {
    await settledPair();
    await chassis!.coldStart((_, profile) => { profile.fencing.escalation = { maxResets: 1, windowS: 600 }; });
    const { primary, backup } = await settledPair();
    assert.deepEqual({ primary, backup }, { primary: 'sim-a', backup: 'sim-b' });
    // 1. sim-a's controller dies: sim-b resets it (its first reset of sim-a) and promotes; sim-a returns as BACKUP.
    const m1 = await marks();
    await chassis!.fail('sim-a', 'kill');
    assert.deepEqual(await settledPair(40000), { primary: 'sim-b', backup: 'sim-a' });
    assert.deepEqual((await fencesBy('sim-b', m1['sim-b'])).map((e) => e.detail!.outcome), ['reset']);
    // 2. sim-a's controller dies again (now the backup): sim-b has reset it once within the window: off, for good.
    const m2 = await marks();
    await chassis!.fail('sim-a', 'kill');
    const f = await eventually('sim-b fences sim-a again', async () => (await fencesBy('sim-b', m2['sim-b']))[0], 10000, 100);
    assert.deepEqual({ action: f.detail!.action, outcome: f.detail!.outcome, escalated: f.detail!.escalated }, { action: 'off', outcome: 'off', escalated: true });
    assert.match(f.message, /ESCALATION: reset 1 times within 600 s/);
    await sleep(3000);
    const a = await chassis!.board('sim-a');
    assert.equal(a.power, 'off', 'left off');
    assert.equal(a.resets.last?.cause, 'fence');
    const r = await role('sim-b');
    assert.equal(r.role, 'PRIMARY', 'the primary serves on');
    assert.ok(r.alarms.some((x) => /^partner sim-a left powered off since .*: reset 1 times within 600 s, then powered off \(fencing\.escalation\)/.test(x)), r.alarms.join('; '));
    // The operator powers it on once fixed: it rejoins and the alarm clears.
    await chassis!.power('sim-a', 'on');
    assert.deepEqual(await settledPair(30000), { primary: 'sim-b', backup: 'sim-a' });
    assert.ok(!(await role('sim-b')).alarms.some((x) => /left powered off/.test(x)));
  });

  it('fencing fails (power controller broken, primary killed): the backup does not promote, says so, retries every second, and promotes once fixed', async () => {
    const { primary, backup } = await settledPair();
    const since = await marks();
    await chassis!.powerController('break');
    // The killed board's watchdog resets it one watchdog timeout after its last kick, and it would
    // rejoin: the fix below comes soon after the first failure, and the retry a second later fences it.
    await chassis!.fail(primary, 'kill');
    const failed = await eventually('FENCING FAILED journaled', async () => {
      const f = await events(backup, since[backup], 'fence');
      return f.find((e) => /FENCING FAILED/.test(e.message));
    }, 10000, 20);
    assert.equal(failed.detail?.partner, primary);
    assert.match(failed.message, /BROKEN/);
    const s = await role(backup);
    assert.notEqual(s.role, 'PRIMARY', 'no promotion without a fence');
    assert.ok(s.alarms.some((a) => /^fencing failed/.test(a)), `alarms: ${s.alarms.join('; ')}`);
    assert.ok(s.fencing.failures >= 1);
    const transitions = (await events(backup, since[backup], 'role.transition'));
    assert.ok(transitions.some((e) => e.detail!.from === 'FENCING' && e.detail!.to === 'BACKUP' && /^FENCING -> BACKUP: FENCING FAILED/.test(e.message)),
      transitions.map((e) => e.message).join('\n'));
    assert.ok(!transitions.some((e) => e.detail!.to === 'PRIMARY'));
    // Two attempts fail at once: on the dying gasp, and on the silence that follows it (no priority
    // delay after a gasp). Fix only after both, so the success can only come from the retry timer.
    await eventually('the fence after the silence failed too', async () => (await events(backup, since[backup], 'fence')).filter((e) => /FENCING FAILED/.test(e.message)).length >= 2, 10000, 20);

    await chassis!.powerController('fix');
    await eventually(`${backup} PRIMARY once fencing works`, async () => (await roleOf(backup)) === 'PRIMARY', 10000, 50);
    const fences = await events(backup, since[backup], 'fence');
    const ok = fences.find((e) => e.detail?.outcome === 'reset');
    assert.ok(ok, fences.map((e) => e.message).join('\n'));
    assert.equal(ok.detail?.partner, primary);
    const lastFailure = fences.filter((e) => /FENCING FAILED/.test(e.message)).at(-1)!;
    const gap = Date.parse(ok.at) - Date.parse(lastFailure.at);
    assert.ok(gap >= 900, `the successful fence is a retry about a second after the last failure (${gap} ms)`);
    // Reset, it comes back by itself and joins the new primary.
    assert.deepEqual(await settledPair(30000), { primary: backup, backup: primary });
  });

  it('fencing fails for a board that lost power: the power controller reports it off (no priority delay), but it never promotes while fencing is broken (retried every second), and promotes once fixed', async () => {
    const { primary, backup } = await settledPair();
    const since = await marks();
    await chassis!.powerController('break');
    await chassis!.fail(primary, 'power'); // a power failure is not a fence: it bypasses the broken controller
    await eventually('three failed fences', async () => (await role(backup)).fencing.failures >= 3, 15000, 100);
    // Sampled throughout: never PRIMARY.
    for (let i = 0; i < 10; i++) {
      const r = await role(backup);
      assert.notEqual(r.role, 'PRIMARY');
      assert.ok(r.alarms.some((a) => /^fencing failed/.test(a)), `alarms: ${r.alarms.join('; ')}`);
      assert.ok(r.alarms.includes('partner lost'));
      await sleep(100);
    }
    const failures = (await events(backup, since[backup], 'fence')).filter((e) => /FENCING FAILED/.test(e.message));
    assert.ok(failures.length >= 3);
    // Not a partition: the power controller (STATUS still answers while broken) says the board is
    // off, so the first fence went out without the priority fencing delay.
    const roleEvents = await events(backup, since[backup], 'role');
    assert.ok(roleEvents.some((e) => new RegExp(`${primary} is powered off \\(simulated, asked in \\d+ ms\\): not a partition, fencing it now`).test(e.message)),
      roleEvents.map((e) => e.message).join('\n'));
    // The last ones are retries by the timer (the first may follow a verdict): about a second apart.
    for (let i = failures.length - 2; i < failures.length; i++) {
      const gap = Date.parse(failures[i]!.at) - Date.parse(failures[i - 1]!.at);
      assert.ok(gap >= 900 && gap < 5000, `retries about a second apart (${gap} ms)`);
    }
    await chassis!.powerController('fix');
    await eventually(`${backup} PRIMARY once fencing works`, async () => (await roleOf(backup)) === 'PRIMARY', 10000, 50);
    const r = await role(backup);
    assert.ok(!r.alarms.some((a) => /^fencing failed/.test(a)), `no fencing alarm once promoted: ${r.alarms.join('; ')}`);
  });

  it('forged, replayed, corrupted and downgraded heartbeats on the Ethernet partner link: rejected and counted, no crash, roles unchanged', async () => {
    const { primary, backup } = await settledPair();
    const expected = { [primary]: 'PRIMARY', [backup]: 'BACKUP' } as Record<BoardName, Role>;
    const target = backup; // a forged "partner FAULT" accepted by the backup would make it take over
    const since = await marks();
    const key = Buffer.from(readFileSync(chassis!.layout.keyFile, 'utf8').trim(), 'hex');
    const pidBefore = (await chassis!.board(target)).controller!.pid;
    const before = await role(target);
    const eth0 = link(await linkStatus(target), 'ethernet');
    const partnerHb = before.partner.heartbeat!;
    assert.equal(partnerHb.sender, primary);
    const hb = (over: Partial<Heartbeat>): Heartbeat => ({ ...partnerHb, ...over });
    const N = 20;
    assert.equal(before.partnerGenerations?.sendVersion, FRAME_VERSION, 'two boards of this firmware speak heartbeat version 3');
    // Frames of this firmware: version 3 (encodeHeartbeat's default), unless a test says otherwise.

    // Forged: the right shape, a wrong key; claims the primary gave up (FAULT) with a fresh sequence.
    const wrongKey = randomBytes(32);
    const forged = Array.from({ length: N }, (_, i) => encodeHeartbeat(hb({ role: 'FAULT', seq: eth0.lastSeq! + 100000 + i }), wrongKey));
    // Replayed: a copy of the last frame it accepted, and frames under the right key with old sequence numbers.
    const replayed = [
      ...Array.from({ length: N / 2 }, () => encodeHeartbeat(hb({ seq: eth0.lastSeq! }), key)),
      ...Array.from({ length: N / 2 }, (_, i) => encodeHeartbeat(hb({ role: 'FAULT', seq: Math.max(0, eth0.lastSeq! - 1000 + i) }), key)),
    ];
    // Corrupted: authentic frames with one byte flipped (a bit error on the line).
    // (Not byte 8, the name length: a flip there makes the frame's length wrong, i.e. malformed.)
    const corrupted = Array.from({ length: N }, (_, i) => {
      const f = Buffer.from(encodeHeartbeat(hb({ role: 'FAULT', seq: eth0.lastSeq! + 200000 + i }), key));
      f[(i < 8 ? i : i + 1) % f.length] ^= 0x20;
      return f;
    });
    // An older boot generation under the right key (generation 0 is older than any), and junk.
    const oldGeneration = encodeHeartbeat(hb({ generation: partnerHb.generation - 1, seq: 0xfffffff0 }), key);
    const junk = [Buffer.from('hello'), Buffer.alloc(40, 0xff)];
    // A downgrade under the right key: version 2 (the firmware before TLS partner channels) of the
    // partner's boot already heard in version 3. Believed, it would turn the old channels on.
    const downgraded = encodeHeartbeat(hb({ role: 'FAULT', seq: eth0.lastSeq! + 300000 }), key, 2);

    await sendFrames(target, forged);
    await sendFrames(target, replayed);
    await sendFrames(target, corrupted);
    await sendFrames(target, [oldGeneration, ...junk]);
    await sendFrames(target, [downgraded]);

    const eth = await eventually('every injected frame counted', async () => {
      const l = link(await linkStatus(target), 'ethernet');
      const seen = l.rejected.mac - eth0.rejected.mac + l.rejected.stale - eth0.rejected.stale + l.rejected.crc - eth0.rejected.crc;
      return seen >= 3 * N ? l : undefined;
    }, 10000, 100);
    assert.equal(eth.rejected.mac - eth0.rejected.mac, N, 'forged frames rejected.mac');
    assert.equal(eth.rejected.stale - eth0.rejected.stale, N, 'replayed frames rejected.stale');
    // Most flips break the CRC; one in the CRC field itself does too. Each is counted as crc.
    assert.equal(eth.rejected.crc - eth0.rejected.crc, N, 'corrupted frames rejected.crc');
    assert.equal(eth.rejected.malformed - eth0.rejected.malformed, junk.length, 'junk rejected.malformed');
    assert.equal(eth.rejected['old-generation'] - eth0.rejected['old-generation'], 1, 'an older generation rejected');
    const downgrades = await eventually('the downgrade counted', async () => {
      const l = link(await linkStatus(target), 'ethernet');
      return l.rejected.version > eth0.rejected.version ? l.rejected.version - eth0.rejected.version : undefined;
    }, 10000, 100);
    assert.equal(downgrades, 1, 'the version-2 frame rejected.version');
    assert.equal(eth.up, true, 'the link stays up: the partner\'s real heartbeats still arrive');
    assert.ok(eth.lastSeq! >= eth0.lastSeq!, 'the real sequence goes on');

    // No crash, nothing believed: same controller and membership process, same roles, no event.
    await rolesHold(expected, 2000);
    const after = await role(target);
    assert.equal(after.membershipProcess.tid, before.membershipProcess.tid, 'membership process not restarted');
    assert.equal(after.generation, before.generation);
    assert.equal(after.partnerGenerations?.sendVersion, FRAME_VERSION, 'still version 3: no downgrade');
    assert.equal(after.partner.state, 'alive');
    assert.equal(after.partner.heartbeat?.role, 'PRIMARY');
    assert.equal((await chassis!.board(target)).controller!.pid, pidBefore, 'controller not restarted');
    assert.deepEqual(await failoverEvents(since), []);
    // The serial link's counters are untouched by frames sent over Ethernet.
    const serial = link(await linkStatus(target), 'serial');
    assert.equal(serial.rejected.mac + serial.rejected.crc, 0);
  });
  it('real heartbeats captured, then replayed into a board while it restarts (power-cycled): bound to its previous boot, they change no role', async () => {
    const { primary, backup } = await settledPair();
    assert.equal(primary, 'sim-a', 'the preferred board: a replayed "partner is BACKUP" or "STARTING" would make it take the primary role');
    const key = Buffer.from(readFileSync(chassis!.layout.keyFile, 'utf8').trim(), 'hex');
    // The capture: the backup's heartbeats exactly as the primary accepted them (every field, so
    // re-encoded under the pair's key they are the bytes that were on the wire).
    const seen = new Map<number, Heartbeat>();
    for (let i = 0; i < 200 && seen.size < 20; i++) {
      const h = (await role(primary)).partner.heartbeat;
      if (h) seen.set(h.seq, h);
      await sleep(10);
    }
    const capture = [...seen.values()].sort((x, y) => x.seq - y.seq);
    assert.ok(capture.length >= 10, `${capture.length} heartbeats captured`);
    const generationBefore = (await role(primary)).generation;
    for (const h of capture) {
      assert.equal(h.role, 'BACKUP');
      assert.equal(h.echo, generationBefore, 'each was bound to the primary\'s boot of the time');
    }
    const frames = capture.map((h) => encodeHeartbeat(h, key));

    // The primary is power-cycled: the backup fences it and promotes.
    await chassis!.power(primary, 'off');
    await eventually(`${backup} PRIMARY`, async () => (await roleOf(backup)) === 'PRIMARY', 15000, 50);
    const mark = await lastEventId(backup);
    // From power-on until well after it has joined, the capture is replayed into the restarting board,
    // from its partner's address, every few milliseconds.
    let replaying = true;
    const replay = (async () => {
      let rounds = 0;
      while (replaying) { await sendFrames(primary, frames, 1); rounds++; }
      return rounds;
    })();
    try {
      await chassis!.power(primary, 'on');
      await eventually(`${primary} BACKUP`, async () => (await roleOf(primary)) === 'BACKUP', 20000, 50);
      await rolesHold({ [primary]: 'BACKUP', [backup]: 'PRIMARY' } as Record<BoardName, Role>, 2000);
    } finally {
      replaying = false;
    }
    assert.ok((await replay) >= 3, 'the capture was replayed again and again');

    const restarted = await role(primary);
    assert.ok(restarted.generation > generationBefore, `a new boot generation (${restarted.generation})`);
    const journal = await events(primary);
    const boot = journal.filter((e) => e.kind === 'role' && /starting \(generation/.test(e.message)).at(-1)!;
    const transitions = journal.filter((e) => e.id > boot.id && e.kind === 'role.transition').map((e) => e.message);
    assert.deepEqual(transitions, ['STARTING -> BACKUP: partner is primary: joining as backup'], 'the restarted board only joined the real primary');
    assert.deepEqual((await events(backup, mark)).filter((e) => e.kind === 'role.transition' || e.kind === 'fence'), [], 'the primary never stepped down');
    const eth = link(await linkStatus(primary), 'ethernet');
    assert.ok(eth.rejected.unbound >= frames.length, `the replayed frames were heard and refused as unbound: ${JSON.stringify(eth.rejected)}`);
    assert.equal(restarted.partner.heartbeat?.role, 'PRIMARY');
  });
});

