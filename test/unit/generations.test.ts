/**
 * Replay- and restart-proof heartbeats (issue 13, deliverable 5), on in-memory links and real stores:
 * the boot generation on disk before use; captured frames replayed into a restarting board believed
 * in nothing; an older partner boot rejected after a restart (the partner's generations persisted);
 * the pair forming within a few intervals at a cold start and after a partner reboot; a counter
 * started at 2^32 − 100 crossing 2^32 with no verdict; a generation that went back recovered on its
 * own and never silently; version-1 and version-2 frames (the previous firmwares) during a rolling
 * upgrade, and no downgrade from version 3 (this firmware).
 */
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { pino } from 'pino';
import { FRAME_VERSION, decodeHeartbeat, encodeHeartbeat, type Heartbeat } from '../../src/ha/frame.js';
import { decodeAnyHeartbeat, decodeHeartbeatV1, encodeHeartbeatV1 } from '../../src/ha/frame-v1.js';
import { BootGenerations, loadPartnerGenerations, partnerGenerationsKey, savePartnerGenerations } from '../../src/ha/generations.js';
import { Membership, type IgnoredReason, type LocalState, type MembershipOptions } from '../../src/ha/membership.js';
import { Store } from '../../src/store/journal.js';
import { MemLink, memLinkPair } from '../support/mem-link.js';

const KEY = Buffer.alloc(32, 7);
const quiet = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const local = (role: LocalState['role']): (() => LocalState) => () => ({ role, guest: 'none', watchdog: 'none', cpuLoad: null, health: 'ok' });
const TIMERS = { key: KEY, intervalMs: 5, linkTimeoutMs: 30, deadtimeMs: 60 };
const hb = (over: Partial<Heartbeat> = {}): Heartbeat => ({
  sender: 'sim-a', generation: 3, echo: 0, seq: 10, role: 'PRIMARY', guest: 'running', watchdog: 'kicking', cpuLoad: 12, priority: 10, health: 'ok', ...over,
});

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(2);
  assert.ok(cond(), 'condition not reached');
}

/** What a Membership reported about its partner and its generations. */
function watch(m: Membership) {
  const seen = { alive: [] as Heartbeat[], update: [] as Heartbeat[], dead: 0, behind: [] as number[], ignored: [] as Array<[number, IgnoredReason]> };
  m.on('partner-alive', (h) => seen.alive.push(h));
  m.on('partner-update', (h) => seen.update.push(h));
  m.on('partner-dead', () => seen.dead++);
  m.on('generation-behind', (e) => seen.behind.push(e));
  m.on('partner-ignored', (h, r) => seen.ignored.push([h.generation, r]));
  return seen;
}

describe('boot generations and bound heartbeats', function () {
  this.timeout(20000);
  let dirs: string[] = [];
  let running: Membership[] = [];
  let stores: Store[] = [];
  const tmp = () => { const d = mkdtempSync(join(tmpdir(), 'us-gen-')); dirs.push(d); return d; };
  const openStore = (dir: string) => { const s = new Store(dir); stores.push(s); return s; };
  afterEach(async () => {
    for (const m of running) await m.stop();
    for (const s of stores) { try { s.close(); } catch { /* closed by the test */ } }
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    running = []; stores = []; dirs = [];
  });

  /** A board as the HA controller makes it: its generations from its store, the membership on links. */
  function board(name: 'sim-a' | 'sim-b', store: Store, links: MemLink[], over: Partial<MembershipOptions> = {}) {
    const gens = new BootGenerations(store, quiet);
    const m = new Membership({
      ...TIMERS, self: name, priority: name === 'sim-a' ? 10 : 20, generation: gens.own, known: gens.partner, links, local: local(name === 'sim-a' ? 'PRIMARY' : 'BACKUP'), ...over,
    });
    gens.attach(m);
    running.push(m);
    return { m, gens, seen: watch(m) };
  }

  describe('the store', () => {
    it('the boot generation is written durably (synchronous=FULL for it alone) and survives a crash without close', () => {
      const dir = tmp();
      const s = new Store(dir);
      assert.equal(s.nextGeneration(), 1);
      assert.equal(s.nextGeneration(), 2);
      assert.equal(s.nextGeneration(7), 7, 'at least the generation asked for');
      assert.equal(s.db.pragma('synchronous', { simple: true }), 1, 'the journal\'s own writes stay at NORMAL');
      s.record('role', 'an ordinary event');
      // A crash: the files as they are on disk now, the database never closed (no checkpoint).
      const copy = tmp();
      for (const f of ['understudy.db', 'understudy.db-wal']) if (existsSync(join(dir, f))) copyFileSync(join(dir, f), join(copy, f));
      const reopened = new Store(copy);
      assert.equal(reopened.nextGeneration(), 8);
      reopened.close();
      s.close();
    });

    it('the partner\'s generations persist across a reopen', () => {
      const dir = tmp();
      const s = openStore(dir);
      const g = new BootGenerations(s, quiet);
      assert.deepEqual(g.partner, { highest: 0, fenced: 0, v2: 0, v3: 0 });
      const m = new Membership({ ...TIMERS, self: 'sim-b', priority: 20, generation: g.own, links: [], local: local('BACKUP') });
      g.attach(m);
      m.emit('generations', { highest: 9, fenced: 4, v2: 9, v3: 8 });
      s.close();
      assert.deepEqual(loadPartnerGenerations(openStore(dir)), { highest: 9, fenced: 4, v2: 9, v3: 8 });
    });

    it('each partner\'s generations are its own: a spare run with one pairing profile, then another, does not judge its new partner by the old one\'s; the single record of old is read for the profile\'s partner only when it names no other', () => {
      const dir = tmp();
      const s = openStore(dir);
      // Run 1: paired with sim-a (its pairing profile), which reached generation 9.
      const first = new BootGenerations(s, quiet, 'sim-a');
      const m = new Membership({ ...TIMERS, self: 'sim-c', priority: 20, generation: first.own, links: [], local: local('BACKUP') });
      first.attach(m);
      m.emit('generations', { highest: 9, fenced: 4, v2: 9, v3: 9 });
      assert.deepEqual(JSON.parse(s.getMeta(partnerGenerationsKey('sim-a'))!), { highest: 9, fenced: 4, v2: 9, v3: 9, partner: 'sim-a' });
      assert.equal(JSON.parse(s.getMeta('ha.partner-generations')!).partner, 'sim-a', 'the single record an earlier firmware reads names its partner');
      // Run 2: paired with sim-b, whose boots are at 3: nothing known of it.
      assert.deepEqual(new BootGenerations(s, quiet, 'sim-b').partner, { highest: 0, fenced: 0, v2: 0, v3: 0 });
      // Run 3: with sim-a again: what it learnt of sim-a.
      assert.deepEqual(new BootGenerations(s, quiet, 'sim-a').partner, { highest: 9, fenced: 4, v2: 9, v3: 9 });
      // A store of the earlier firmware (one record, no name): the profile's partner's, as before.
      const old = openStore(tmp());
      old.setMetaDurably('ha.partner-generations', JSON.stringify({ highest: 6, fenced: 2, v2: 6, v3: 6 }));
      assert.deepEqual(new BootGenerations(old, quiet, 'sim-a').partner, { highest: 6, fenced: 2, v2: 6, v3: 6 });
      // An adopted partner never takes the record of old.
      assert.deepEqual(new BootGenerations(old, quiet, 'sim-a').usePartner('sim-d'), { highest: 0, fenced: 0, v2: 0, v3: 0 });
      s.close();
      old.close();
    });

    it('a record of the firmware deployed before (no v3 field) reads as none heard in version 3, and is written back with it', () => {
      const dir = tmp();
      const s = openStore(dir);
      // What fdc23d0:src/ha/generations.ts writes.
      s.setMetaDurably('ha.partner-generations', JSON.stringify({ highest: 6, fenced: 2, v2: 6 }));
      assert.deepEqual(loadPartnerGenerations(s), { highest: 6, fenced: 2, v2: 6, v3: 0 });
      savePartnerGenerations(s, { highest: 7, fenced: 2, v2: 7, v3: 7 });
      assert.deepEqual(JSON.parse(s.getMeta('ha.partner-generations')!), { highest: 7, fenced: 2, v2: 7, v3: 7 });
      s.setMetaDurably('ha.partner-generations', JSON.stringify({ highest: 6, fenced: 2, v2: 6, v3: -1 }));
      assert.equal(loadPartnerGenerations(s).v3, 0, 'a bad value reads as none');
    });
  });

  it('captured frames replayed into a restarting board (same store, a newer generation) prove nothing: no partner event, all unbound', async () => {
    const dirB = tmp();
    const [ea, eb] = memLinkPair('ethernet');
    const a = board('sim-a', openStore(tmp()), [ea]);
    const storeB = openStore(dirB);
    const b = board('sim-b', storeB, [eb]);
    ea.record = true;
    await a.m.start(); await b.m.start();
    await until(() => b.m.partnerView.state === 'alive' && a.m.partnerView.state === 'alive');
    await sleep(100); // frames of every kind: before and after the pair bound
    await a.m.stop(); await b.m.stop();
    storeB.close();
    const captured = ea.sentFrames.splice(0);
    assert.ok(captured.length >= 15, `${captured.length} frames captured`);
    assert.ok(captured.some((f) => (decodeHeartbeat(f, KEY) as Heartbeat).echo === b.gens.own), 'frames bound to the earlier boot are among them');

    // sim-b restarts: same storage, the next generation. The real sim-a stays silent; only the capture arrives.
    const [, eb2] = memLinkPair('ethernet');
    const b2 = board('sim-b', openStore(dirB), [eb2]);
    assert.equal(b2.gens.own, b.gens.own + 1);
    assert.equal(b2.gens.partner.highest, a.gens.own, 'the partner\'s generation was persisted');
    await b2.m.start();
    for (const f of captured) eb2.inject(f);
    await sleep(50);
    assert.deepEqual([b2.seen.alive.length, b2.seen.update.length, b2.seen.dead], [0, 0, 0], 'no partner event from a replay');
    assert.equal(b2.m.partnerView.state, 'unknown');
    const l = b2.m.links[0]!;
    assert.equal(l.rejected.unbound, captured.length, JSON.stringify(l.rejected));
    assert.equal(l.up, false, 'a replay does not even bring the link up');
  });

  it('an older boot of the partner is rejected after a restart: the highest generation heard is persisted', async () => {
    const dirB = tmp();
    const storeA = openStore(tmp());
    const [ea, eb] = memLinkPair('ethernet');
    // sim-a's boot 1, heard by sim-b; its frames are recorded.
    const a1 = board('sim-a', storeA, [ea]);
    ea.record = true;
    const storeB = openStore(dirB);
    const b = board('sim-b', storeB, [eb]);
    await a1.m.start(); await b.m.start();
    await until(() => b.m.partnerView.state === 'alive');
    await a1.m.stop();
    const boot1 = ea.sentFrames.splice(0);
    // sim-a's boot 2 is heard too.
    const a2 = board('sim-a', storeA, [ea]);
    await a2.m.start();
    await until(() => b.m.partnerView.heartbeat?.generation === a2.gens.own);
    await a2.m.stop(); await b.m.stop();
    storeB.close();

    const [, eb2] = memLinkPair('ethernet');
    const b2 = board('sim-b', openStore(dirB), [eb2]);
    assert.equal(b2.gens.partner.highest, a2.gens.own);
    await b2.m.start();
    // Even bound to the new boot (a forger without the key cannot, but a replay of frames of boot 1
    // re-signed is the worst case): boot 1 is older than the highest heard.
    eb2.inject(encodeHeartbeat(hb({ sender: 'sim-a', generation: a1.gens.own, echo: b2.gens.own, seq: 999999, role: 'FAULT' }), KEY));
    for (const f of boot1) eb2.inject(f);
    await sleep(30);
    assert.equal(b2.m.links[0]!.rejected['old-generation'], boot1.length + 1);
    assert.equal(b2.seen.alive.length, 0);
  });

  it('the pair forms within a few intervals at a cold start (stale persisted knowledge), and again after a partner reboot', async () => {
    const [ea, eb] = memLinkPair('ethernet');
    const [sa, sb] = memLinkPair('serial');
    const storeA = openStore(tmp());
    const storeB = openStore(tmp());
    // Earlier boots: each store holds an older generation of the other.
    storeA.nextGeneration(); storeB.nextGeneration(); storeB.nextGeneration();
    const a = board('sim-a', storeA, [ea, sa]);
    const b = board('sim-b', storeB, [eb, sb]);
    const t0 = performance.now();
    await Promise.all([a.m.start(), b.m.start()]);
    await until(() => a.m.partnerView.state === 'alive' && b.m.partnerView.state === 'alive');
    const formed = performance.now() - t0;
    assert.ok(formed < 100, `formed in ${formed.toFixed(1)} ms (interval 5 ms)`);
    assert.ok(a.m.links.every((l) => l.up) && b.m.links.every((l) => l.up));
    // sim-a reboots: a new generation; sim-b hears the new boot at once (sim-a persisted sim-b's generation).
    await a.m.stop();
    await until(() => b.seen.dead === 1);
    const a2 = board('sim-a', storeA, [ea, sa]);
    const t1 = performance.now();
    await a2.m.start();
    await until(() => b.m.partnerView.state === 'alive' && a2.m.partnerView.state === 'alive');
    const rejoined = performance.now() - t1;
    assert.ok(rejoined < 100, `rejoined in ${rejoined.toFixed(1)} ms`);
    assert.equal(b.m.partnerView.heartbeat?.generation, a.gens.own + 1);
  });

  it('a sequence counter started at 2^32 − 100 crosses 2^32 with no verdict and no stale frame', async () => {
    const [ea, eb] = memLinkPair('ethernet');
    const [sa, sb] = memLinkPair('serial');
    const start = 2 ** 32 - 100;
    const a = board('sim-a', openStore(tmp()), [ea, sa], { initialSeq: start });
    const b = board('sim-b', openStore(tmp()), [eb, sb], { initialSeq: start });
    await a.m.start(); await b.m.start();
    await until(() => a.m.links.every((l) => (l.lastSeq ?? 0) > 2 ** 32 + 50) && b.m.links.every((l) => (l.lastSeq ?? 0) > 2 ** 32 + 50), 10000);
    for (const x of [a, b]) {
      assert.equal(x.seen.dead, 0, 'no verdict');
      assert.equal(x.seen.alive.length, 1, 'alive once');
      for (const l of x.m.links) assert.equal(l.rejected.stale, 0, `${l.name}: ${JSON.stringify(l.rejected)}`);
    }
  });

  it('a board whose generation went back (store lost) is told by its partner\'s echo, takes a newer one durably, and the pair forms', async () => {
    const [ea, eb] = memLinkPair('ethernet');
    const storeA = openStore(tmp());
    const storeB = openStore(tmp());
    for (let i = 0; i < 5; i++) storeA.nextGeneration(); // sim-a is at its 6th boot when the pair forms
    const a1 = board('sim-a', storeA, [ea]);
    const b = board('sim-b', storeB, [eb]);
    await a1.m.start(); await b.m.start();
    await until(() => b.m.partnerView.state === 'alive');
    await a1.m.stop();
    await until(() => b.seen.dead === 1);
    // sim-a comes back with a new, empty store: generation 1, below what sim-b has heard (6).
    const storeA2 = openStore(tmp());
    const a2 = board('sim-a', storeA2, [ea]);
    assert.equal(a2.gens.own, 1);
    await a2.m.start();
    await until(() => b.m.partnerView.state === 'alive' && a2.m.partnerView.state === 'alive');
    assert.deepEqual(a2.seen.behind, [6], 'told once that it is behind');
    assert.equal(a2.gens.own, 7, 'a generation above the one its partner had heard');
    assert.equal(new BootGenerations(storeA2, quiet).own, 8, 'taken durably: the next boot is newer still');
    assert.equal(b.m.partnerView.heartbeat?.generation, 7);
    assert.ok(a2.gens.alarms.some((x) => /boot generation went back/.test(x)), a2.gens.alarms.join('; '));
  });

  it('after a fence, the partner\'s old boot never comes back; a partner still at the fenced generation is asked for a newer one', async () => {
    const [ea, eb] = memLinkPair('ethernet');
    const storeA = openStore(tmp());
    const a = board('sim-a', storeA, [ea]);
    const b = board('sim-b', openStore(tmp()), [eb]);
    await a.m.start(); await b.m.start();
    await until(() => b.m.partnerView.state === 'alive');
    // sim-b fences sim-a, but sim-a's controller runs on (a fence reported done that was not, or a
    // generation rolled back to the fenced one): sim-b's echo now asks for fenced + 1.
    const fencedAt = a.gens.own;
    b.m.forgetPartner();
    assert.equal(b.gens.partner.fenced, fencedAt);
    await until(() => b.m.partnerView.state === 'alive', 3000);
    assert.deepEqual(a.seen.behind, [fencedAt + 1], 'sim-a was told it is behind');
    assert.equal(a.gens.own, fencedAt + 2);
    assert.ok(b.m.partnerView.heartbeat!.generation > b.gens.partner.fenced, 'heard again only as a newer boot');
  });

  it('a partner heard but ignored past the in-flight grace is reported, once, never silently', async () => {
    const [, eb] = memLinkPair('ethernet');
    const storeB = openStore(tmp());
    const b = board('sim-b', storeB, [eb]);
    await b.m.start();
    const v1 = (over: Partial<Heartbeat>) => encodeHeartbeatV1(hb({ sender: 'sim-a', generation: 4, ...over }), KEY);
    eb.inject(v1({ seq: 1 }));
    assert.equal(b.m.partnerView.state, 'alive');
    b.m.forgetPartner(); // fenced at 4
    for (let i = 0; i < 3; i++) eb.inject(v1({ seq: 2 + i })); // in flight: not reported
    await sleep(1100);
    // A version-1 partner (no echo: it cannot learn that it is behind) still at generation 4.
    for (let i = 0; i < 3; i++) eb.inject(v1({ seq: 10 + i }));
    assert.deepEqual(b.seen.ignored, [[4, 'fenced']]);
    assert.ok(b.gens.alarms.some((x) => /partner heard but ignored \(fenced, generation 4\)/.test(x)), b.gens.alarms.join('; '));
    const journal = storeB.events({ kind: 'partner' }).map((e) => e.message);
    assert.ok(journal.some((m) => /IGNORED: generation 4 is at or below the one it was fenced at \(4\)/.test(m)), journal.join('\n'));
    eb.inject(v1({ generation: 5, seq: 1 })); // its next boot is heard, and the alarm ends
    assert.equal(b.m.partnerView.state, 'alive');
    assert.deepEqual(b.gens.alarms, []);
  });

  describe('rolling upgrade: version-1 frames of the previous firmware', () => {
    it('version-1 frames are byte for byte those of the previous firmware (519281f:src/ha/frame.ts), both ways', () => {
      // Encoded by the previous firmware's own encodeHeartbeat (compiled from commit 519281f), key 32 × 0x07.
      const old = Buffer.from('01010103010c0a0573696d2d6100000007ffffffff340a7988a766d788d19f95644330f06d', 'hex');
      const h = hb({ sender: 'sim-a', generation: 7, seq: 2 ** 32 - 1, role: 'BACKUP', echo: 0, health: 'ok' });
      assert.deepEqual(encodeHeartbeatV1(h, KEY), old);
      assert.deepEqual(decodeHeartbeatV1(old, KEY), h);
      assert.equal(decodeHeartbeatV1(old, Buffer.alloc(32, 8)), 'mac');
      assert.equal(encodeHeartbeatV1({ ...h, seq: 2 ** 32 + 5 }, KEY).readUInt32BE(12 + 5), 5, 'the low 32 bits of a 64-bit sequence number');
    });

    it('a partner heard only in version 1 is believed (a newer boot than any heard in version 2) and answered in version 1', async () => {
      const [, eb] = memLinkPair('ethernet');
      eb.record = true;
      const b = board('sim-b', openStore(tmp()), [eb]);
      await b.m.start();
      eb.inject(encodeHeartbeatV1(hb({ sender: 'sim-a', generation: 3, seq: 1, role: 'PRIMARY' }), KEY));
      eb.inject(encodeHeartbeatV1(hb({ sender: 'sim-a', generation: 3, seq: 2, role: 'PRIMARY' }), KEY));
      assert.equal(b.m.partnerView.state, 'alive');
      assert.equal(b.m.partnerView.heartbeat?.role, 'PRIMARY');
      await sleep(20);
      const last = eb.sentFrames.at(-1)!;
      const decoded = decodeHeartbeatV1(last, KEY);
      assert.ok(typeof decoded !== 'string', `the answer is a version-1 frame (${String(decoded)})`);
      assert.equal(decoded.sender, 'sim-b');
      assert.equal(b.m.generations.sendVersion, 1);

      // The partner is upgraded: it reboots speaking version 3; from then on, version 1 of it or older is refused.
      eb.sentFrames.length = 0;
      eb.inject(encodeHeartbeat(hb({ sender: 'sim-a', generation: 4, echo: b.gens.own, seq: 0, role: 'BACKUP' }), KEY));
      assert.equal(b.m.partnerView.heartbeat?.generation, 4);
      await sleep(20);
      assert.ok(typeof decodeHeartbeat(eb.sentFrames.at(-1)!, KEY) !== 'string');
      assert.equal(eb.sentFrames.at(-1)![0], FRAME_VERSION, 'version 3 again');
      eb.inject(encodeHeartbeatV1(hb({ sender: 'sim-a', generation: 4, seq: 100, role: 'FAULT' }), KEY)); // a downgrade attempt
      eb.inject(encodeHeartbeatV1(hb({ sender: 'sim-a', generation: 3, seq: 100, role: 'FAULT' }), KEY)); // a replay of the old firmware
      const r = b.m.links[0]!.rejected;
      assert.equal(r.version, 1);
      assert.equal(r['old-generation'], 1);
      assert.equal(b.m.partnerView.heartbeat?.role, 'BACKUP');
      assert.equal(b.gens.partner.v2, 4);
      assert.equal(b.gens.partner.v3, 4);
    });

    it('two boards of this firmware never settle on version 1: hearing version 3 once brings both back', async () => {
      const [ea, eb] = memLinkPair('ethernet');
      const b = board('sim-b', openStore(tmp()), [eb]);
      await b.m.start();
      // sim-b first hears the previous firmware of sim-a (generation 1), then sim-a is upgraded (generation 2).
      eb.inject(encodeHeartbeatV1(hb({ sender: 'sim-a', generation: 1, seq: 1 }), KEY));
      assert.equal(b.m.generations.sendVersion, 1);
      const a = board('sim-a', openStore(tmp()), [ea], { generation: 2 });
      await a.m.start();
      await until(() => a.m.partnerView.state === 'alive' && b.m.partnerView.heartbeat?.generation === 2);
      await sleep(100);
      assert.equal(b.m.generations.sendVersion, 3);
      assert.equal(a.m.generations.sendVersion, 3);
      assert.equal(b.m.partnerView.state, 'alive');
    });
  });

  describe('rolling upgrade: version-2 frames of the firmware deployed before TLS partner channels', () => {
    /** Frames exactly as the deployed firmware (fdc23d0) sends them: this layout with the version byte 2. */
    const v2 = (over: Partial<Heartbeat>, key = KEY) => encodeHeartbeat(hb({ sender: 'sim-a', ...over }), key, 2);
    const sentVersion = (l: MemLink) => l.sentFrames.at(-1)![0];
    /** sim-b started on a link that records what it sends, and the versions its membership switched to. */
    async function recordedBoard() {
      const [, eb] = memLinkPair('ethernet');
      eb.record = true;
      const b = board('sim-b', openStore(tmp()), [eb]);
      const versions: number[] = [];
      b.m.on('send-version', (v) => versions.push(v));
      await b.m.start();
      return { eb, b, versions };
    }

    it('version-2 frames are byte for byte those of the deployed firmware; version 3 differs only in its version byte', () => {
      // Encoded by the deployed firmware's own encodeHeartbeat (compiled from commit fdc23d0), key 32 × 0x07;
      // its decodeHeartbeat returns 'version' for the version-3 frame below (its partner is not heard).
      const old = Buffer.from('02010103010c0a010573696d2d610000000700000009000001000000000325eb2c68bc9c57707db136dcdfbd1e1a', 'hex');
      const v3 = Buffer.from('03010103010c0a010573696d2d6100000007000000090000010000000003b28a0118bd5f8ba5047127aec2651089', 'hex');
      const h = hb({ sender: 'sim-a', generation: 7, echo: 9, seq: 2 ** 40 + 3, role: 'BACKUP', health: 'hung' });
      assert.deepEqual(encodeHeartbeat(h, KEY, 2), old);
      assert.deepEqual(encodeHeartbeat(h, KEY), v3);
      assert.deepEqual(decodeAnyHeartbeat(old, KEY), { hb: h, version: 2 });
      assert.deepEqual(decodeAnyHeartbeat(v3, KEY), { hb: h, version: 3 });
      assert.equal(decodeHeartbeat(old, Buffer.alloc(32, 8)), 'mac');
      const relabelled = Buffer.from(old);
      relabelled[0] = 3; // the version byte is under the MAC (and the CRC): a version-2 frame cannot be passed off as 3
      relabelled.writeUInt32BE(crc32(relabelled.subarray(0, relabelled.length - 4)), relabelled.length - 4);
      assert.equal(decodeHeartbeat(relabelled, KEY), 'mac');
    });

    it('a partner heard only in version 2 is answered in version 2; once heard in version 3, version 2 of that boot or older is refused', async () => {
      const { eb, b, versions } = await recordedBoard();
      assert.equal(sentVersion(eb), 3, 'this firmware starts in version 3');
      eb.inject(v2({ generation: 3, echo: b.gens.own, seq: 1, role: 'PRIMARY' }));
      eb.inject(v2({ generation: 3, echo: b.gens.own, seq: 2, role: 'PRIMARY' }));
      assert.equal(b.m.partnerView.state, 'alive');
      assert.equal(b.m.partnerView.heartbeat?.role, 'PRIMARY');
      assert.equal(b.m.generations.sendVersion, 2);
      assert.equal(sentVersion(eb), 2, 'answered in version 2, the only one the deployed firmware decodes');
      await sleep(20);
      assert.equal(sentVersion(eb), 2, 'and kept so');
      assert.deepEqual(versions, [2]);
      assert.deepEqual({ v2: b.gens.partner.v2, v3: b.gens.partner.v3 }, { v2: 3, v3: 0 });

      // The partner is upgraded: it reboots into this firmware (version 3).
      eb.inject(encodeHeartbeat(hb({ sender: 'sim-a', generation: 4, echo: b.gens.own, seq: 0, role: 'BACKUP' }), KEY));
      assert.equal(b.m.generations.sendVersion, 3);
      assert.equal(sentVersion(eb), 3);
      assert.deepEqual(versions, [2, 3]);
      assert.deepEqual({ v2: b.gens.partner.v2, v3: b.gens.partner.v3 }, { v2: 4, v3: 4 });
      // No downgrade: version 2 (or 1) of that boot or an older one is refused, and the version sent stays 3.
      eb.inject(v2({ generation: 4, echo: b.gens.own, seq: 100, role: 'FAULT' }));
      eb.inject(encodeHeartbeatV1(hb({ sender: 'sim-a', generation: 4, seq: 101, role: 'FAULT' }), KEY));
      eb.inject(v2({ generation: 3, echo: b.gens.own, seq: 100, role: 'FAULT' })); // the old boot: below the highest heard
      const r = b.m.links[0]!.rejected;
      assert.equal(r.version, 2);
      assert.equal(r['old-generation'], 1);
      assert.equal(b.m.partnerView.heartbeat?.role, 'BACKUP');
      assert.equal(b.m.generations.sendVersion, 3);
      assert.deepEqual(versions, [2, 3]);
      // A rollback (the partner's next boot runs the deployed firmware again) is heard: a newer boot.
      eb.inject(v2({ generation: 5, echo: b.gens.own, seq: 0, role: 'BACKUP' }));
      assert.equal(b.m.partnerView.heartbeat?.generation, 5);
      assert.equal(b.m.generations.sendVersion, 2);
    });

    it('the refusal of version 2 survives a restart (v3 persisted)', async () => {
      const dir = tmp();
      const s1 = openStore(dir);
      const [, eb1] = memLinkPair('ethernet');
      const b1 = board('sim-b', s1, [eb1]);
      await b1.m.start();
      eb1.inject(encodeHeartbeat(hb({ sender: 'sim-a', generation: 6, echo: b1.gens.own, seq: 0 }), KEY));
      assert.equal(b1.gens.partner.v3, 6);
      await b1.m.stop();
      running = running.filter((m) => m !== b1.m);
      s1.close();
      const [, eb2] = memLinkPair('ethernet');
      const b2 = board('sim-b', openStore(dir), [eb2]);
      await b2.m.start();
      assert.equal(b2.gens.partner.v3, 6);
      eb2.inject(v2({ generation: 6, echo: b2.gens.own, seq: 1000 }));
      assert.equal(b2.m.links[0]!.rejected.version, 1);
      assert.equal(b2.m.partnerView.state, 'unknown');
      assert.equal(b2.m.generations.sendVersion, 3);
    });

    it('a version-2 frame without the pair key changes nothing', async () => {
      const { eb, b, versions } = await recordedBoard();
      eb.inject(v2({ generation: 3, echo: b.gens.own, seq: 1 }, Buffer.alloc(32, 8)));
      await sleep(20);
      assert.equal(b.m.links[0]!.rejected.mac, 1);
      assert.equal(b.m.partnerView.state, 'unknown');
      assert.equal(b.m.generations.sendVersion, 3);
      assert.equal(sentVersion(eb), 3);
      assert.deepEqual(versions, []);
      assert.deepEqual(b.gens.partner, { highest: 0, fenced: 0, v2: 0, v3: 0 });
    });

    it('two boards of this firmware settle on version 3 and never send anything else', async () => {
      const [ea, eb] = memLinkPair('ethernet');
      ea.record = true;
      eb.record = true;
      const a = board('sim-a', openStore(tmp()), [ea]);
      const b = board('sim-b', openStore(tmp()), [eb]);
      const versions: number[] = [];
      a.m.on('send-version', (v) => versions.push(v));
      b.m.on('send-version', (v) => versions.push(v));
      await a.m.start();
      await b.m.start();
      await until(() => a.m.partnerView.state === 'alive' && b.m.partnerView.state === 'alive');
      await sleep(50);
      assert.deepEqual(versions, []);
      assert.ok(ea.sentFrames.length > 5 && eb.sentFrames.length > 5);
      assert.ok([...ea.sentFrames, ...eb.sentFrames].every((f) => f[0] === FRAME_VERSION), 'every frame sent is version 3');
      assert.deepEqual({ v2: a.gens.partner.v2, v3: a.gens.partner.v3 }, { v2: b.gens.own, v3: b.gens.own });
    });
  });
});
