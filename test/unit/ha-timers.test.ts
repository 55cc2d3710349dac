/**
 * The HA controller's timers and decisions on a fake clock: the startup wait and what follows it
 * under each start-up policy, the operator's start-alone, the fence delays (the symmetric one, the
 * priority fencing delay, none for a hung partner), a primary fencing its silent backup, the fence
 * retry, the escalation of resets (counted in the store, across a restart), the health tick and the
 * yield after a switchover, each at the millisecond it is due, without sleeping. The membership
 * process is not started (its start() is replaced): partner news is fed to it by hand, as its
 * process would send it, and fencing goes to a stand-in power controller on a unix socket.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBoardProfile } from '../../src/config/board-profile.js';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { FakeClock } from '../../src/core/clock.js';
import { createLogger } from '../../src/core/log.js';
import type { Heartbeat } from '../../src/ha/frame.js';
import { EventEmitter } from 'node:events';
import { HaController, LINK_ALARM_HOLD_MS, type RoleChange } from '../../src/ha/ha-controller.js';
import { AlarmList } from '../../src/store/alarms.js';
import type { QuorumSource, QuorumState, QuorumStatus } from '../../src/ha/quorum.js';
import type { MembershipSnapshot } from '../../src/ha/membership-process.js';
import { Store } from '../../src/store/journal.js';

const log = createLogger('test', { level: 'silent' });

interface BoardOptions {
  name?: 'sim-a' | 'sim-b';
  priority?: number;
  /** true: the stand-in power controller; false: no fencing (every fence fails). */
  fencing: boolean;
  startup?: 'wait-for-partner' | 'fence-then-serve';
  escalation?: { maxResets: number; windowS: number };
  /** ha.manager pacemaker, with this stand-in for corosync's quorum. */
  quorum?: StandInQuorum;
  /** The board's standard alarm list (docs/alarms.md). */
  alarms?: AlarmList;
  /** ha.manager pacemaker: the stand-in for the cluster's fence confirmation. */
  confirmFence?: (partner: string) => Promise<string>;
}

/** corosync's quorum as the test sets it (src/ha/quorum.ts QuorumSource). */
class StandInQuorum extends EventEmitter implements QuorumSource {
  state: QuorumState | undefined;
  start(): void {}
  stop(): void {}
  status(): QuorumStatus { return { command: ['stand-in'], running: true, state: this.state ?? null, lastError: null, starts: 1 }; }
  set(quorate: boolean, members: string[]): void {
    const before = this.state;
    this.state = { quorate, members, ring: `1.${members.length}${quorate ? 'q' : 'n'}`, at: 0 };
    this.emit('change', this.state, before);
  }
}

describe('HA controller timers on a fake clock', () => {
  let dir: string;
  let store: Store;
  let clock: FakeClock;
  /** Wall-clock ms as the escalation's durable count sees it; moved by hand. */
  let wall: number;
  let controllers: HaController[];
  let power: Server | undefined;
  /** Requests the stand-in power controller received, with the fake time they arrived at. */
  let powerRequests: Array<{ line: string; at: number }>;
  /** STATUS <board> requests (the partner's power), and what the stand-in answers to them. */
  let statusRequests: Array<{ line: string; at: number }>;
  let partnerPower: 'ON' | 'OFF' | 'silent';

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'us-ha-'));
    store = new Store(dir);
    clock = new FakeClock();
    wall = 1_800_000_000_000;
    controllers = [];
    powerRequests = [];
    statusRequests = [];
    partnerPower = 'ON';
  });
  afterEach(async () => {
    for (const c of controllers) await c.stop();
    await new Promise<void>((r) => (power ? power.close(() => r()) : r()));
    power = undefined;
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  async function standInPowerController(): Promise<string> {
    const socket = join(dir, 'power.sock');
    if (power) return socket;
    power = createServer((s) => {
      s.setEncoding('utf8');
      s.on('data', (line: string) => {
        const l = line.trim();
        if (l.startsWith('STATUS ')) {
          statusRequests.push({ line: l, at: clock.now() });
          if (partnerPower !== 'silent') s.end(`OK ${partnerPower} ${l.split(' ')[1]}\n`);
          return;
        }
        powerRequests.push({ line: l, at: clock.now() });
        s.end(`OK ${l}\n`);
      });
    });
    await new Promise<void>((r) => power!.listen(socket, () => r()));
    return socket;
  }

  /** A board's profile in the temp dir (from board/<name>.json); a controller on the shared store. */
  async function controller(o: BoardOptions): Promise<{ ha: HaController; roles: RoleChange[] }> {
    const name = o.name ?? 'sim-a';
    const profile = JSON.parse(readFileSync(join(PACKAGE_ROOT, `board/${name}.json`), 'utf8')) as Record<string, any>;
    const keyFile = join(dir, 'ha.key');
    writeFileSync(keyFile, 'ab'.repeat(32));
    chmodSync(keyFile, 0o600);
    profile.storageDir = dir;
    profile.ha = { ...profile.ha, keyFile, startupWaitMs: 5000, fenceDelayMs: 200, priorityFencingDelayMs: 300,
      ...(o.priority !== undefined ? { priority: o.priority } : {}), ...(o.startup ? { startup: o.startup } : {}), ...(o.quorum ? { manager: 'pacemaker' } : {}) };
    if (o.fencing) {
      profile.fencing = { method: 'simulated', controlSocket: await standInPowerController(), ...(o.escalation ? { escalation: o.escalation } : {}) };
    } else {
      delete profile.fencing; // no fencing: every fence fails
    }
    const file = join(dir, `${name}.json`);
    writeFileSync(file, JSON.stringify(profile));
    const c = new HaController(loadBoardProfile(file), store, log, { clock, wallNow: () => wall, ...(o.quorum ? { quorum: o.quorum } : {}), ...(o.alarms ? { alarms: o.alarms } : {}), ...(o.confirmFence ? { confirmFence: o.confirmFence } : {}) });
    c.membership.start = async () => undefined; // no membership process: partner news comes from the test
    c.membership.snapshot = async (): Promise<MembershipSnapshot> => ({
      links: [], partner: c.membership.partnerView, loopDelayMs: { p50: 0, p99: 0, max: 0 }, watchdog: null, thread: { tid: null, rtPriority: 0 }, sent: 0,
    });
    const roles: RoleChange[] = [];
    c.on('role', (r) => roles.push(r));
    controllers.push(c);
    return { ha: c, roles };
  }

  let seq = 0;
  /** The partner's heartbeat as the membership process reports it. */
  const hb = (over: Partial<Heartbeat> = {}): Heartbeat => ({
    sender: 'sim-b', generation: 1, echo: 0, seq: ++seq, role: 'BACKUP', guest: 'none', watchdog: 'kicking', cpuLoad: null, priority: 20, health: 'ok', ...over,
  });
  /** Feeds the controller what its membership process would post. */
  const news = (ha: HaController, m: { t: 'partner-alive' | 'partner-update'; hb: Heartbeat } | { t: 'partner-dead'; silentMs: number } | { t: 'bad-mac'; links: string[]; frames: number }) =>
    (ha.membership as unknown as { onMessage(m: unknown): void }).onMessage(m);
  const hear = (ha: HaController, over: Partial<Heartbeat> = {}) => news(ha, { t: ha.membership.partnerView.state === 'alive' ? 'partner-update' : 'partner-alive', hb: hb(over) });
  const silence = (ha: HaController) => news(ha, { t: 'partner-dead', silentMs: 26 });

  /** Waits (real time) for I/O the fake clock does not drive: the power controller's answer. */
  const until = async (cond: () => boolean, what: string) => {
    for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
    assert.ok(cond(), what);
  };
  const path = (roles: RoleChange[]) => roles.map((r) => r.to);
  const fences = () => store.events({ kind: 'fence', limit: 1000 });

  it('wait-for-partner (the default): a board that hears nobody waits from exactly startupWaitMs on, never fences nor serves, and joins when its partner appears', async () => {
    const { ha, roles } = await controller({ fencing: true });
    assert.equal(ha.board.ha!.startup, 'wait-for-partner');
    await ha.start();
    await clock.advanceAsync(4999);
    assert.equal(ha.currentRole, 'STARTING');
    await clock.advanceAsync(1);
    assert.deepEqual(path(roles), ['WAITING']);
    assert.match(roles[0]!.cause, /no partner heard since start: waiting for it/);
    await clock.advanceAsync(600000);
    assert.deepEqual(path(roles), ['WAITING'], 'ten minutes on: still waiting');
    assert.deepEqual(powerRequests, [], 'nobody was fenced');
    assert.ok((await ha.status()).alarms.some((a) => /^no partner heard since start: not serving/.test(a)));
    hear(ha, { role: 'PRIMARY' });
    assert.deepEqual(path(roles), ['WAITING', 'BACKUP'], 'the partner serves: this board joins it as backup');
  });

  it(`a partner link's alarm is raised once the link has been down ${LINK_ALARM_HOLD_MS} ms, never for a shorter flap (journaled at once all the same); up again clears it`, async () => {
    const list = new AlarmList(store, { board: 'sim-a' });
    const changes: string[] = [];
    list.on('change', (c: { kind: string }) => changes.push(c.kind));
    const { ha } = await controller({ fencing: true, alarms: list });
    await ha.start();
    hear(ha, { role: 'PRIMARY' });
    const link = (up: boolean, cause: string) => news(ha, { t: 'link', link: 'serial', up, cause } as never);
    const alarmed = () => list.activeOf('partner-link-down').map((a) => a.alarmText);
    const linkJournal = () => store.events({ kind: 'link', limit: 100 }).map((e) => e.message);
    // A flap: down, up 30 ms later. Journaled both ways, no alarm then or later.
    link(false, 'silent for 20.7 ms (link timeout 20 ms)');
    await clock.advanceAsync(30);
    link(true, 'heartbeat received');
    await clock.advanceAsync(LINK_ALARM_HOLD_MS * 3);
    assert.deepEqual(alarmed(), [], 'no alarm for a flap');
    assert.deepEqual(changes, [], 'nothing raised nor cleared (no notification)');
    assert.deepEqual(linkJournal(), ['serial link DOWN: silent for 20.7 ms (link timeout 20 ms)', 'serial link up: heartbeat received']);
    // Down for good: the alarm only once the hold has passed, with the cause of that down.
    link(false, 'silent for 21.0 ms (link timeout 20 ms)');
    await clock.advanceAsync(LINK_ALARM_HOLD_MS - 1);
    assert.deepEqual(alarmed(), [], 'not before the hold');
    await clock.advanceAsync(1);
    assert.deepEqual(alarmed(), ['partner link serial down: silent for 21.0 ms (link timeout 20 ms)']);
    link(true, 'heartbeat received');
    assert.deepEqual(alarmed(), [], 'up clears it at once');
    assert.deepEqual(changes, ['raise', 'clear']);
  });

  it('fence-then-serve: the board preferred by name fences at startupWaitMs, the other fenceDelayMs later; each powers its partner off (never a reset) and serves', async () => {
    for (const [name, waited] of [['sim-a', 0], ['sim-b', 200]] as const) {
      powerRequests = [];
      const t0 = clock.now();
      const { ha, roles } = await controller({ name, fencing: true, startup: 'fence-then-serve' });
      await ha.start();
      await clock.advanceAsync(5000 + waited - 1);
      assert.deepEqual(powerRequests, [], `${name}: not before ${waited} ms`);
      await clock.advanceAsync(1);
      await until(() => ha.currentRole === 'PRIMARY', `${name}: promoted once the power controller confirmed`);
      const partner = name === 'sim-a' ? 'sim-b' : 'sim-a';
      assert.deepEqual(powerRequests, [{ line: `OFF ${partner}`, at: t0 + 5000 + waited }]);
      assert.deepEqual(path(roles), ['FENCING', 'PRIMARY']);
      assert.match(roles[0]!.cause, /fence-then-serve/);
      await ha.stop();
    }
  });

  it('fence-then-serve with a fence that fails: back to WAITING (not serving), retried every second', async () => {
    const { ha, roles } = await controller({ fencing: false, startup: 'fence-then-serve' });
    await ha.start();
    await clock.advanceAsync(5000);
    assert.deepEqual(path(roles), ['FENCING', 'WAITING'], 'no fencing configured: the fence fails and the board does not serve');
    assert.match(roles[1]!.cause, /^FENCING FAILED: not serving alone/);
    await clock.advanceAsync(999);
    assert.equal(roles.length, 2);
    await clock.advanceAsync(1);
    assert.deepEqual(path(roles), ['FENCING', 'WAITING', 'FENCING', 'WAITING'], 'the retry, FENCE_RETRY_MS after the failure');
    assert.match(roles[2]!.cause, /retrying the fence/);
  });

  it('start-alone: refused while the partner is heard, even only with a bad MAC; otherwise fences at once (a reset) and serves; refused once the board has a role', async () => {
    const { ha, roles } = await controller({ fencing: true });
    await ha.start();
    await clock.advanceAsync(5000);
    assert.equal(ha.currentRole, 'WAITING');
    // Frames under another key: the partner is alive and misconfigured.
    news(ha, { t: 'bad-mac', links: ['ethernet', 'serial'], frames: 400 });
    await assert.rejects(ha.startAlone(), (e: { code: string; message: string }) => {
      assert.equal(e.code, 'US_ERR_ROLE');
      assert.match(e.message, /^start-alone refused: partner sim-b is heard with a bad MAC on ethernet, serial/);
      return true;
    });
    const alarms = (await ha.status()).alarms;
    assert.ok(alarms.some((a) => /^partner misconfigured: heard only with a bad MAC on ethernet, serial/.test(a)), alarms.join('; '));
    assert.ok(store.events({ kind: 'partner' }).some((e) => /heard only with a bad MAC .*not fencing it, not serving/.test(e.message)));
    assert.ok(store.events({ kind: 'role' }).some((e) => /^start-alone refused/.test(e.message)), 'the refusal is journaled');
    // The bad frames stop (that board was powered off): the operator's word goes.
    await clock.advanceAsync(3001);
    const r = await ha.startAlone();
    assert.deepEqual({ role: r.role, partner: r.partner }, { role: 'PRIMARY', partner: 'sim-b' });
    assert.deepEqual(powerRequests.map((p) => p.line), ['RESET sim-b'], 'the configured action: a reset');
    assert.deepEqual(path(roles), ['WAITING', 'FENCING', 'PRIMARY']);
    assert.match(roles[1]!.cause, /^start-alone requested by the operator/);
    assert.ok(store.events({ kind: 'role' }).some((e) => /^start-alone requested by the operator: fencing sim-b/.test(e.message)));
    await assert.rejects(ha.startAlone(), /start-alone refused: board sim-a is PRIMARY/);
  });

  it('start-alone is refused while the partner is heard', async () => {
    const { ha } = await controller({ fencing: true });
    await ha.start();
    hear(ha, { role: 'STOPPING' }); // heard, and no decision to take on it
    assert.equal(ha.currentRole, 'STARTING');
    await assert.rejects(ha.startAlone(), /^UsError: start-alone refused: partner sim-b is heard \(STOPPING\)/);
    assert.deepEqual(powerRequests, []);
  });

  it('priority fencing: a BACKUP fences a silent PRIMARY exactly priorityFencingDelayMs after the verdict (it stays BACKUP meanwhile), gives up if it hears it again, and waits afresh after a new verdict', async () => {
    const { ha, roles } = await controller({ fencing: true });
    await ha.start();
    hear(ha, { role: 'PRIMARY' });
    assert.equal(ha.currentRole, 'BACKUP');
    // A short cut: heard again within the delay, the fence is called off, nobody fenced, no role change.
    silence(ha);
    assert.equal(ha.currentRole, 'BACKUP', 'waiting, not fencing yet');
    await clock.advanceAsync(250);
    hear(ha, { role: 'PRIMARY' });
    assert.ok(store.events({ kind: 'role' }).some((e) => /^BACKUP: fence of sim-b called off: sim-b heard again/.test(e.message)));
    // A second verdict 40 ms later: a fresh wait from this verdict, not the rest of the first one.
    await clock.advanceAsync(40);
    const t0 = clock.now();
    silence(ha);
    await clock.advanceAsync(299);
    assert.deepEqual(powerRequests, [], 'nothing before a full delay after the latest verdict');
    assert.equal(ha.currentRole, 'BACKUP');
    await clock.advanceAsync(1);
    assert.equal(ha.currentRole, 'FENCING', 'FENCING once the fence goes out');
    await until(() => ha.currentRole === 'PRIMARY', 'promoted once fenced');
    assert.deepEqual(powerRequests, [{ line: 'RESET sim-b', at: t0 + 300 }]);
    assert.deepEqual(path(roles), ['BACKUP', 'FENCING', 'PRIMARY']);
    assert.match(roles[1]!.cause, /priority fencing delay.*\(silent for 300 ms more\)$/);
    const f = fences().at(-1)!;
    assert.equal(f.detail!.outcome, 'reset');
    assert.equal(f.detail!.waitedMs, 300);
    assert.match(f.message, /^partner sim-b fenced: reset \(power-cycled\) by simulated in [\d.]+ ms; it boots again and rejoins as backup$/);
  });

  it('ha.manager pacemaker: a BACKUP fences its silent PRIMARY only once corosync shows this side quorate without it, whenever that is (not at the priority delay); without quorum it calls the fence off and takes over only once quorum is back', async () => {
    const q = new StandInQuorum();
    q.set(true, ['sim-a', 'sim-b', 'sim-c']);
    const { ha, roles } = await controller({ fencing: true, quorum: q });
    await ha.start();
    hear(ha, { role: 'PRIMARY' });
    silence(ha);
    await clock.advanceAsync(8000);
    assert.deepEqual(powerRequests, [], 'no fence at the priority delay, nor while corosync still counts the partner');
    assert.equal(ha.currentRole, 'BACKUP');
    // corosync: this side lost quorum (the board is the one cut off). The fence is called off; no takeover.
    q.set(false, ['sim-a']);
    assert.ok(store.events({ kind: 'role' }).some((e) => /fence of sim-b called off: this side has no quorum/.test(e.message)));
    news(ha, { t: 'partner-update', hb: hb({ role: 'FAULT' }) }); // not heard, but even a FAULT would not be taken over
    await clock.advanceAsync(20000);
    assert.deepEqual(powerRequests, []);
    assert.equal(ha.currentRole, 'BACKUP');
    assert.equal((await ha.status()).alarms.some((a) => /no quorum \(corosync\)/.test(a)), true);
    // Quorum back, and the partner gone from the membership: corosync has decided; fence and promote.
    silence(ha);
    const t0 = clock.now();
    q.set(true, ['sim-a', 'sim-c']);
    await until(() => ha.currentRole === 'PRIMARY', 'promoted once corosync shows the partner gone from a quorate side');
    assert.deepEqual(powerRequests, [{ line: 'RESET sim-b', at: t0 }]);
    assert.deepEqual(path(roles), ['BACKUP', 'FENCING', 'PRIMARY']);
    assert.match(roles[1]!.cause, /corosync arbitrates.*corosync shows this side quorate without sim-b/);
    assert.ok(store.events({ kind: 'quorum' }).some((e) => /^corosync: NO QUORUM, members sim-a/.test(e.message)));
  });

  it('ha.manager pacemaker: a partner silent to this board but still a corosync member after quorumSettleMs is not fenced (alive, cut off from this board only); one the device reports off is fenced at once', async () => {
    const q = new StandInQuorum();
    q.set(true, ['sim-a', 'sim-b', 'sim-c']);
    const { ha } = await controller({ fencing: true, quorum: q });
    await ha.start();
    hear(ha, { role: 'PRIMARY' });
    silence(ha);
    await clock.advanceAsync(16000);
    assert.ok(store.events({ kind: 'role' }).some((e) => /fence of sim-b called off: corosync still counts it a member after 16000 ms/.test(e.message)));
    await clock.advanceAsync(60000);
    assert.deepEqual(powerRequests, []);
    assert.equal(ha.currentRole, 'BACKUP');
    // A board that lost power: its device says off, no need to wait for corosync.
    hear(ha, { role: 'PRIMARY' });
    partnerPower = 'OFF';
    const t0 = clock.now();
    silence(ha);
    await until(() => ha.currentRole === 'PRIMARY', 'promoted at once');
    assert.deepEqual(powerRequests, [{ line: 'RESET sim-b', at: t0 }]);
  });

  it('ha.manager pacemaker: a PRIMARY fences its silent BACKUP only once corosync shows it gone (serving on meanwhile); quorum-lost takes it to FAULT; a dying gasp is fenced at once', async () => {
    const q = new StandInQuorum();
    q.set(true, ['sim-a', 'sim-b', 'sim-c']);
    const { ha, roles } = await controller({ fencing: true, quorum: q, priority: 10 });
    await ha.start();
    hear(ha, { role: 'STARTING', priority: 20 });
    assert.equal(ha.currentRole, 'PRIMARY');
    hear(ha, { role: 'BACKUP' });
    silence(ha);
    await clock.advanceAsync(5000);
    assert.deepEqual(powerRequests, [], 'not at primaryConfirmMs: corosync arbitrates');
    const t0 = clock.now();
    q.set(true, ['sim-a', 'sim-c']);
    await until(() => powerRequests.length === 1, 'fenced once corosync shows it gone');
    assert.deepEqual(powerRequests, [{ line: 'RESET sim-b', at: t0 }]);
    assert.equal(ha.currentRole, 'PRIMARY');
    // The fenced partner (forgotten by the membership until heard) is not fenced again at a later change of the membership.
    q.set(true, ['sim-a', 'sim-c', 'sim-d']);
    await clock.advanceAsync(20000);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(powerRequests.length, 1, 'fenced once');
    // A dying gasp needs no arbitration.
    hear(ha, { role: 'BACKUP' });
    hear(ha, { role: 'BACKUP', health: 'gone' });
    await until(() => powerRequests.length === 2, 'a dying gasp: fenced at once');
    // quorum-lost (fired by the pair layer while it withholds replies): FAULT.
    q.set(false, ['sim-a']);
    assert.equal(ha.fire('quorum-lost', 'test'), true);
    assert.equal(ha.currentRole, 'FAULT');
    assert.match(roles.at(-1)!.cause, /no quorum while its replies are withheld/);
  });

  it('ha.manager pacemaker: every fence this board carries out is confirmed to the cluster (so Pacemaker does not fence the node again), journaled; a failed confirmation is journaled and changes nothing; without Pacemaker nothing is confirmed', async () => {
    const q = new StandInQuorum();
    q.set(true, ['sim-a', 'sim-b', 'sim-c']);
    const confirmed: string[] = [];
    let refuse = false;
    const { ha } = await controller({ fencing: true, quorum: q, priority: 10, confirmFence: async (partner) => {
      confirmed.push(partner);
      if (refuse) throw new Error('stonith_admin --confirm sim-b: Could not confirm sim-b');
      return '';
    } });
    await ha.start();
    hear(ha, { role: 'STARTING', priority: 20 });
    assert.equal(ha.currentRole, 'PRIMARY');
    hear(ha, { role: 'BACKUP' });
    hear(ha, { role: 'BACKUP', health: 'gone' });
    await until(() => powerRequests.length === 1, 'a dying gasp: fenced at once');
    await until(() => confirmed.length === 1, 'the fence confirmed to the cluster');
    assert.deepEqual(confirmed, ['sim-b']);
    await until(() => store.events({ kind: 'fence', limit: 10 }).some((e) => /told the cluster that sim-b was fenced/.test(e.message)), 'journaled');
    assert.equal(ha.currentRole, 'PRIMARY');
    refuse = true;
    hear(ha, { role: 'BACKUP' });
    hear(ha, { role: 'BACKUP', health: 'gone' });
    await until(() => powerRequests.length === 2 && confirmed.length === 2, 'the second fence, its confirmation refused');
    await until(() => store.events({ kind: 'fence', limit: 10 }).some((e) => /could not tell the cluster that sim-b was fenced: .*Could not confirm/.test(e.message)), 'the refusal journaled');
    assert.equal(ha.currentRole, 'PRIMARY', 'a refused confirmation changes nothing here');
  });

  it('without Pacemaker no fence is confirmed to a cluster', async () => {
    const confirmed: string[] = [];
    const { ha } = await controller({ fencing: true, priority: 10, confirmFence: async (partner) => { confirmed.push(partner); return ''; } });
    await ha.start();
    hear(ha, { role: 'STARTING', priority: 20 });
    hear(ha, { role: 'BACKUP' });
    hear(ha, { role: 'BACKUP', health: 'gone' });
    await until(() => powerRequests.length === 1, 'fenced');
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(confirmed, []);
  });

  it('partner adopt of the partner it has already (an agent asking again) answers without a refusal, heard or not; another board while the partner is heard is refused', async () => {
    const { ha } = await controller({ fencing: true, priority: 10 });
    await ha.start();
    hear(ha, { role: 'STARTING', priority: 20 });
    assert.equal(ha.currentRole, 'PRIMARY');
    const addr = ha.board.partner!.ethernet!.partnerAddress;
    assert.deepEqual(await ha.adoptPartner('sim-b', addr), { board: 'sim-a', partner: 'sim-b', address: addr, previous: 'sim-b', linksClosed: [] });
    await assert.rejects(ha.adoptPartner('sim-c', '198.51.100.3'), /partner sim-b is heard/);
    assert.equal(store.events({ kind: 'partner' }).filter((e) => /refused/.test(e.message)).length, 1, 'only the other board\'s adoption was refused');
  });

  it('a silent PRIMARY that the fencing device reports powered off is fenced at once (no priority delay); one reported on, or a device that does not answer, waits the delay', async () => {
    const { ha, roles } = await controller({ fencing: true });
    await ha.start();
    for (const power of ['ON', 'silent'] as const) {
      partnerPower = power;
      hear(ha, { role: 'PRIMARY' });
      silence(ha);
      await until(() => statusRequests.length > 0, 'the device was asked');
      statusRequests = [];
      await clock.advanceAsync(299);
      assert.deepEqual(powerRequests, [], `${power}: nothing before the priority delay`);
      hear(ha, { role: 'PRIMARY' }); // back: the pending fence is called off
      assert.equal(ha.currentRole, 'BACKUP');
    }
    partnerPower = 'OFF';
    const t0 = clock.now();
    silence(ha);
    await until(() => ha.currentRole === 'PRIMARY', 'promoted without waiting the delay');
    assert.deepEqual(powerRequests, [{ line: 'RESET sim-b', at: t0 }], 'fenced (found off) at once');
    assert.deepEqual(path(roles), ['BACKUP', 'FENCING', 'PRIMARY']);
    assert.match(roles[1]!.cause, /the fencing device reports it powered off/);
    assert.ok(store.events({ kind: 'role' }).some((e) => /sim-b is powered off \(simulated, asked in \d+ ms\): not a partition, fencing it now/.test(e.message)));
  });

  it('a BACKUP holding none of the PRIMARY\'s state fences it only after noStateFenceDelayMs of silence, not the priority delay (called off if it is heard again); at once if the device reports it off', async () => {
    const { ha, roles } = await controller({ fencing: true });
    let held = false;
    await ha.start({ holdsState: () => held });
    hear(ha, { role: 'PRIMARY' });
    assert.equal(ha.currentRole, 'BACKUP');
    // A primary alive but unheard for a while (cut off, starved, a busy membership process): the device says on.
    silence(ha);
    await until(() => statusRequests.length > 0, 'the device was asked');
    await clock.advanceAsync(9999);
    assert.deepEqual(powerRequests, [], 'not after the priority delay (300 ms), nor before the no-state delay');
    assert.equal(ha.currentRole, 'BACKUP');
    assert.ok(store.events({ kind: 'role' }).some((e) => /^BACKUP: partner \(primary\) silent on every link, and this board holds none of its state .*fencing sim-b in 10000 ms unless it is heard again$/.test(e.message)));
    hear(ha, { role: 'PRIMARY' });
    await clock.advanceAsync(20000);
    assert.deepEqual(powerRequests, [], 'heard again: called off');
    // The same board holding the state (its clone cut over): the priority delay.
    held = true;
    silence(ha);
    await clock.advanceAsync(299);
    hear(ha, { role: 'PRIMARY' });
    assert.ok(store.events({ kind: 'role' }).some((e) => /^BACKUP: partner \(primary\) silent on every link: fencing it after the priority fencing delay .*fencing sim-b in 300 ms/.test(e.message)));
    // Without the state again, and the device reports the partner off: no partition, fenced at once.
    held = false;
    partnerPower = 'OFF';
    const t0 = clock.now();
    silence(ha);
    await until(() => ha.currentRole === 'PRIMARY', 'promoted without waiting');
    assert.deepEqual(powerRequests, [{ line: 'RESET sim-b', at: t0 }]);
    assert.deepEqual(path(roles), ['BACKUP', 'FENCING', 'PRIMARY']);
  });

  it('a BACKUP holding none of the PRIMARY\'s state, the partner silent and the device not answering, fences it once noStateFenceDelayMs has passed (a real death, taken over late)', async () => {
    const { ha, roles } = await controller({ fencing: true });
    await ha.start({ holdsState: () => false });
    hear(ha, { role: 'PRIMARY' });
    partnerPower = 'silent';
    const t0 = clock.now();
    silence(ha);
    await clock.advanceAsync(9999);
    assert.deepEqual(powerRequests, []);
    await clock.advanceAsync(1);
    assert.equal(ha.currentRole, 'FENCING');
    await until(() => ha.currentRole === 'PRIMARY', 'promoted once fenced');
    assert.deepEqual(powerRequests, [{ line: 'RESET sim-b', at: t0 + 10000 }]);
    assert.deepEqual(path(roles), ['BACKUP', 'FENCING', 'PRIMARY']);
    assert.match(roles[1]!.cause, /no-state fencing delay.*\(silent for 10000 ms more\)$/);
  });

  it('a PRIMARY fences its silent BACKUP once the silence has lasted primaryConfirmMs more (a reset) and serves on; a partner heard again, or one that left in order (STOPPING), is not fenced', async () => {
    const { ha, roles } = await controller({ fencing: true });
    await ha.start();
    hear(ha, { role: 'STARTING' });
    assert.equal(ha.currentRole, 'PRIMARY', 'both starting: sim-a is preferred');
    hear(ha, { role: 'BACKUP' });
    // A glitch: heard again within the confirmation (primaryConfirmMs): nobody fenced.
    silence(ha);
    await clock.advanceAsync(70);
    hear(ha, { role: 'BACKUP' });
    await clock.advanceAsync(1000);
    assert.deepEqual(powerRequests, []);
    assert.ok(store.events({ kind: 'role' }).some((e) => /^PRIMARY: fence of sim-b called off: sim-b heard again/.test(e.message)));
    const t0 = clock.now();
    silence(ha);
    await clock.advanceAsync(74);
    assert.deepEqual(powerRequests, []);
    await clock.advanceAsync(1);
    await until(() => powerRequests.length === 1 && fences().length === 1, 'the backup fenced');
    assert.deepEqual(powerRequests, [{ line: 'RESET sim-b', at: t0 + 75 }], 'at once once the silence is confirmed (primaryConfirmMs)');
    assert.deepEqual(path(roles), ['PRIMARY'], 'never stopped serving');
    assert.ok(store.events({ kind: 'role' }).some((e) => /^PRIMARY: partner silent on every link: fencing it, serving on unprotected: fencing sim-b in 75 ms unless it is heard again/.test(e.message)));
    assert.equal(ha.membership.partnerView.state, 'unknown', 'the fenced partner is forgotten until it boots again');
    // Frames of the fenced boot still on their way (a serial line's buffer) make it heard once
    // more; their end is a second silence: that boot is down already, so it is not fenced again.
    hear(ha, { role: 'BACKUP' });
    silence(ha);
    await clock.advanceAsync(2000);
    assert.equal(powerRequests.length, 1, 'the fenced boot is not fenced again');
    assert.ok(store.events({ kind: 'partner' }).some((e) => /^partner sim-b silent for [\d.]+ ms: the end of frames from its boot 1, fenced already/.test(e.message)));
    assert.equal(ha.membership.partnerView.state, 'unknown');
    // It boots again and rejoins; later it reboots in order (a rolling upgrade): not fenced.
    news(ha, { t: 'partner-alive', hb: hb({ generation: 2, role: 'STARTING' }) });
    hear(ha, { generation: 2, role: 'BACKUP' });
    hear(ha, { generation: 2, role: 'STOPPING' });
    silence(ha);
    await clock.advanceAsync(2000);
    assert.equal(powerRequests.length, 1, 'a partner that left in order is not fenced');
    assert.deepEqual(path(roles), ['PRIMARY']);
  });

  it('a partner whose heartbeats say its controller is hung is fenced at once, without the priority delay', async () => {
    const { ha, roles } = await controller({ fencing: true });
    await ha.start();
    hear(ha, { role: 'PRIMARY' });
    const t0 = clock.now();
    hear(ha, { role: 'PRIMARY', health: 'hung' });
    assert.equal(ha.currentRole, 'FENCING');
    hear(ha, { role: 'PRIMARY', health: 'hung' }); // its membership process still heartbeats: no reason to call the fence off
    await until(() => ha.currentRole === 'PRIMARY', 'promoted');
    assert.deepEqual(powerRequests, [{ line: 'RESET sim-b', at: t0 }]);
    assert.deepEqual(path(roles), ['BACKUP', 'FENCING', 'PRIMARY']);
    assert.match(roles[1]!.cause, /hung/);
  });

  it('a dying gasp (health gone: the partner\'s controller exited): a BACKUP fences its primary at once, not after the priority delay; a PRIMARY fences its backup at once too, and says the fence was done', async () => {
    const { ha, roles } = await controller({ fencing: true });
    await ha.start();
    hear(ha, { role: 'PRIMARY' });
    silence(ha); // a verdict just before the gasp arrived: its priority-delay fence is replaced by one now
    const t0 = clock.now();
    hear(ha, { role: 'PRIMARY', health: 'gone' });
    assert.equal(ha.currentRole, 'FENCING');
    await until(() => ha.currentRole === 'PRIMARY', 'promoted');
    await clock.advanceAsync(1000);
    assert.deepEqual(powerRequests, [{ line: 'RESET sim-b', at: t0 }], 'one fence, at once: the pending priority-delay fence was called off');
    assert.deepEqual(path(roles), ['BACKUP', 'FENCING', 'PRIMARY']);
    assert.match(roles[1]!.cause, /dying gasp/);
    // Now PRIMARY: its backup boots, joins, and its controller dies.
    const fenced: unknown[] = [];
    ha.on('partner-fenced', (f) => fenced.push(f));
    news(ha, { t: 'partner-alive', hb: hb({ generation: 2, role: 'BACKUP' }) });
    const t1 = clock.now();
    hear(ha, { generation: 2, role: 'BACKUP', health: 'gone' });
    await until(() => fenced.length === 1, 'the backup fenced');
    assert.deepEqual(powerRequests.at(-1), { line: 'RESET sim-b', at: t1 }, 'no primaryConfirmMs wait: the backup said it is gone');
    assert.deepEqual(fenced, [{ partner: 'sim-b', outcome: 'reset', by: 'PRIMARY' }]);
    assert.equal(ha.currentRole, 'PRIMARY');
  });

  it('escalation: after maxResets resets within windowS the next fence powers the partner off and leaves it off, with an alarm; the count survives a restart, and ages out', async () => {
    const escalation = { maxResets: 2, windowS: 60 };
    let { ha } = await controller({ fencing: true, escalation });
    await ha.start();
    hear(ha, { role: 'STARTING' });
    assert.equal(ha.currentRole, 'PRIMARY');
    let generation = 1;
    /** The partner boots (a new generation), joins, and falls silent: this primary fences it. */
    const cycle = async (c: HaController) => {
      const n = fences().length;
      news(c, { t: 'partner-alive', hb: hb({ generation: ++generation, role: 'BACKUP' }) });
      silence(c);
      await clock.advanceAsync(75);
      await until(() => fences().length === n + 1, 'fenced');
      wall += 10000;
      return fences().at(-1)!;
    };
    assert.equal((await cycle(ha)).detail!.outcome, 'reset');
    assert.equal((await cycle(ha)).detail!.outcome, 'reset');
    const third = await cycle(ha);
    assert.deepEqual({ action: third.detail!.action, outcome: third.detail!.outcome, escalated: third.detail!.escalated }, { action: 'off', outcome: 'off', escalated: true });
    assert.match(third.message, /ESCALATION: reset 2 times within 60 s/);
    assert.deepEqual(powerRequests.map((p) => p.line), ['RESET sim-b', 'RESET sim-b', 'OFF sim-b']);
    const alarm = (await ha.status()).alarms.find((a) => /^partner sim-b left powered off since/.test(a));
    assert.ok(alarm, 'an alarm');
    // The controller restarts: the alarm and the count are still there (the store).
    await ha.stop();
    ({ ha } = await controller({ fencing: true, escalation }));
    assert.ok((await ha.status()).alarms.some((a) => /^partner sim-b left powered off since/.test(a)), 'the alarm after a restart');
    await ha.start();
    hear(ha, { generation: ++generation, role: 'STARTING' }); // an operator powered it on
    assert.equal(ha.currentRole, 'PRIMARY');
    assert.ok(!(await ha.status()).alarms.some((a) => /left powered off/.test(a)), 'heard again: the alarm clears');
    assert.equal((await cycle(ha)).detail!.outcome, 'off', 'still two resets within the window: off again');
    wall += 60000;
    assert.equal((await cycle(ha)).detail!.outcome, 'reset', 'the resets aged out of the window');
  });

  it('after a switchover the board does not take the primary role back on a tie for yieldMs', async () => {
    const { ha, roles } = await controller({ fencing: true });
    await ha.start();
    hear(ha, { role: 'STARTING' });
    assert.equal(ha.currentRole, 'PRIMARY', 'both starting: sim-a is preferred');
    assert.equal(ha.yieldPrimary(5000), true);
    await clock.advanceAsync(4999);
    hear(ha, { role: 'BACKUP' }); // both boards backup: a tie
    assert.equal(ha.currentRole, 'BACKUP', 'still yielding');
    await clock.advanceAsync(1);
    hear(ha, { role: 'BACKUP' });
    assert.equal(ha.currentRole, 'PRIMARY', 'preferred again once the yield is over');
    assert.deepEqual(path(roles), ['PRIMARY', 'BACKUP', 'PRIMARY']);
  });

  it('the health tick polls every 100 ms: a lost guest supervision stops the watchdog kicks at the next tick', async () => {
    const { ha } = await controller({ fencing: false });
    const stops: Array<{ reason: string; at: number }> = [];
    ha.membership.stopKicking = (reason) => { stops.push({ reason, at: clock.now() }); };
    let healthy = true;
    await ha.start({ healthy: () => healthy });
    await clock.advanceAsync(250);
    healthy = false;
    await clock.advanceAsync(49);
    assert.deepEqual(stops, []);
    await clock.advanceAsync(1);
    assert.deepEqual(stops, [{ reason: 'guest supervision lost', at: 1300 }]);
  });

  it('a heartbeat saying the partner\'s controller is hung: the backup fences it at once (no fence delay even when not preferred), and retries a failed fence while it stays hung', async () => {
    for (const fencing of [true, false]) {
      const { ha, roles } = await controller({ priority: 200, fencing });
      await ha.start();
      const primary = { sender: 'sim-b', role: 'PRIMARY', priority: 10, generation: 1, seq: 1, health: 'ok' } as Heartbeat;
      ha.membership.emit('partner-alive', primary);
      assert.equal(ha.currentRole, 'BACKUP');
      const hung = { ...primary, seq: 2, health: 'hung' } as Heartbeat;
      Object.assign(ha.membership, { partner: hung, partnerState: 'alive' }); // what MembershipProcess mirrors from its process
      ha.membership.emit('partner-update', hung);
      assert.equal(roles[1]?.to, 'FENCING');
      assert.match(roles[1]!.cause, /controller hung/);
      if (fencing) {
        await until(() => ha.currentRole === 'PRIMARY', 'promoted once the power controller confirmed');
        assert.deepEqual(powerRequests, [{ line: 'RESET sim-b', at: 1000 }], 'no fence delay');
      } else {
        await until(() => roles.length === 3, 'the fence failed');
        assert.deepEqual(path(roles), ['BACKUP', 'FENCING', 'BACKUP'], 'no fencing configured: the fence fails and the board does not promote');
        await clock.advanceAsync(1000);
        assert.deepEqual(path(roles), ['BACKUP', 'FENCING', 'BACKUP', 'FENCING', 'BACKUP'], 'retried while the partner still reports its controller hung');
        assert.match(roles[3]!.cause, /controller hung.*retrying the fence/);
      }
      await ha.stop();
      await new Promise<void>((r) => (power ? power.close(() => r()) : r()));
      power = undefined;
      powerRequests = [];
    }
  });
});
