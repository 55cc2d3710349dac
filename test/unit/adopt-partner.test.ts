/**
 * N+1 re-protection, the membership's part (issue 18): a surviving primary whose partner is gone
 * takes a spare as its new partner. On in-memory links addressed like a shelf's backplane (a frame
 * reaches only the address it was sent to, and a link hears only its partner's address) and real
 * stores: refused while the partner is heard; the serial link (point to point with the old partner)
 * closed; the new partner heard although its boot generation is below the old partner's; the old
 * partner, back, not heard; what is known of each partner's boots kept apart on disk.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { adoptPartnerInProfile, type BoardProfile } from '../../src/config/board-profile.js';
import { BootGenerations, loadPartnerGenerations, partnerGenerationsKey } from '../../src/ha/generations.js';
import { Membership, type LocalState } from '../../src/ha/membership.js';
import type { PartnerLink } from '../../src/hw/links/links.js';
import { Store } from '../../src/store/journal.js';
import { memLinkPair } from '../support/mem-link.js';

const KEY = Buffer.alloc(32, 9);
const quiet = pino({ level: 'silent' });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const TIMERS = { key: KEY, intervalMs: 5, linkTimeoutMs: 30, deadtimeMs: 60 };

async function until(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(2);
  assert.ok(cond(), 'condition not reached');
}

/** A backplane: frames go to the address they are sent to; a link hears only its partner's address. */
class Backplane {
  readonly ports = new Map<string, ShelfLink>();
  link(address: string, partnerAddress: string): ShelfLink {
    const l = new ShelfLink(this, address, partnerAddress);
    this.ports.set(address, l);
    return l;
  }
}

class ShelfLink extends EventEmitter implements PartnerLink {
  readonly name = 'ethernet' as const;
  readonly counters = { txFrames: 0, txDropped: 0, rxFrames: 0, errors: 0, foreign: 0 };
  constructor(private readonly bus: Backplane, readonly address: string, public partnerAddress: string) { super(); }
  async open(): Promise<void> {}
  async close(): Promise<void> { this.bus.ports.delete(this.address); }
  send(frame: Buffer): boolean {
    this.counters.txFrames++;
    const to = this.bus.ports.get(this.partnerAddress);
    if (to) setImmediate(() => to.deliver(this.address, frame));
    return true;
  }
  deliver(from: string, frame: Buffer): void {
    if (from !== this.partnerAddress) { this.counters.foreign++; return; }
    this.counters.rxFrames++;
    this.emit('frame', frame);
  }
  retarget(partnerAddress: string): void { this.partnerAddress = partnerAddress; }
}

describe('N+1: a primary adopts a new partner (membership, generations, profile)', function () {
  this.timeout(20000);
  let dirs: string[] = [];
  let running: Membership[] = [];
  let stores: Store[] = [];
  const openStore = () => { const d = mkdtempSync(join(tmpdir(), 'us-adopt-')); dirs.push(d); const s = new Store(d); stores.push(s); return s; };
  afterEach(async () => {
    for (const m of running) await m.stop();
    for (const s of stores) s.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    running = []; stores = []; dirs = [];
  });

  function member(self: string, store: Store, links: PartnerLink[], role: LocalState['role'], priority: number) {
    const gens = new BootGenerations(store, quiet);
    const m = new Membership({ ...TIMERS, self, priority, generation: gens.own, known: gens.partner, links, local: () => ({ role, guest: 'running', watchdog: 'none', cpuLoad: null, health: 'ok' }) });
    gens.attach(m);
    running.push(m);
    const alive: string[] = [];
    m.on('partner-alive', (hb) => alive.push(hb.sender));
    let dead = 0;
    m.on('partner-dead', () => dead++);
    return { m, gens, alive, dead: () => dead };
  }

  it('refused while the partner is heard; once it is gone, the serial link closes, the spare is heard and the old partner is not', async () => {
    const bus = new Backplane();
    const [serialA, serialB] = memLinkPair('serial');
    const storeA = openStore();
    const storeB = openStore();
    const storeC = openStore();
    // sim-b has booted many times: its generation is above anything sim-c will have.
    for (let i = 0; i < 5; i++) storeB.nextGeneration();
    const a = member('sim-a', storeA, [bus.link('198.51.100.1', '198.51.100.2'), serialA], 'PRIMARY', 10);
    const b = member('sim-b', storeB, [bus.link('198.51.100.2', '198.51.100.1'), serialB], 'BACKUP', 20);
    await a.m.start();
    await b.m.start();
    await until(() => a.alive.includes('sim-b'));
    assert.ok(a.gens.partner.highest >= 6, `sim-a learnt sim-b's generation (${a.gens.partner.highest})`);

    await assert.rejects(a.m.adoptPartner('198.51.100.3', a.gens.usePartner('sim-c')), /sim-b is heard/);
    a.gens.usePartner('sim-b'); // (back to the right key for what follows: the HA controller refuses before this)
    assert.deepEqual(a.m.links.map((l) => l.name), ['ethernet', 'serial'], 'a refused adoption changes nothing');

    // sim-b dies; a spare sim-c is started as sim-a's backup.
    await b.m.stop();
    running.splice(running.indexOf(b.m), 1);
    await until(() => a.dead() === 1);
    const c = member('sim-c', storeC, [bus.link('198.51.100.3', '198.51.100.1')], 'BACKUP', 20);
    await c.m.start();
    await sleep(100);
    assert.deepEqual(a.alive, ['sim-b'], 'sim-c is not heard before it is adopted (its frames come from another address)');

    const sideKey = partnerGenerationsKey('sim-c');
    assert.equal(sideKey, 'ha.partner-generations/sim-c');
    const closed = await a.m.adoptPartner('198.51.100.3', a.gens.usePartner('sim-c'));
    assert.deepEqual(closed, ['serial'], 'the serial link does not reach sim-c: closed');
    assert.deepEqual(a.m.links.map((l) => l.name), ['ethernet']);
    await until(() => a.alive.includes('sim-c'));
    assert.equal(a.m.partnerView.heartbeat?.sender, 'sim-c');
    assert.ok(a.m.partnerView.heartbeat!.generation < 6, 'heard although its generation is below the old partner\'s highest');
    await until(() => c.alive.includes('sim-a'));

    // What sim-a knows of each partner's boots is kept apart.
    assert.ok(loadPartnerGenerations(storeA).highest >= 6, 'sim-b\'s record kept under the original key');
    assert.equal(loadPartnerGenerations(storeA, sideKey).highest, a.m.partnerView.heartbeat!.generation, 'sim-c\'s under its own');

    // sim-b boots again, still addressed to sim-a: its frames are not heard (foreign), sim-c stays the partner.
    const b2 = member('sim-b', storeB, [bus.link('198.51.100.2', '198.51.100.1')], 'STARTING', 20);
    await b2.m.start();
    await sleep(150);
    assert.equal(a.alive.filter((n) => n === 'sim-b').length, 1, 'the old partner is not heard again');
    assert.equal(a.m.partnerView.heartbeat?.sender, 'sim-c');
    assert.equal(a.m.partnerView.state, 'alive');
    assert.equal(b2.alive.length, 0, 'and it hears nobody: sim-a sends to sim-c only');

    // Refused again while sim-c is heard.
    await assert.rejects(a.m.adoptPartner('198.51.100.2', { highest: 0, fenced: 0, v2: 0, v3: 0 }), /sim-c is heard/);
  });

  it('the profile: the partner\'s name and Ethernet address change, the serial link goes; a profile without partner.ethernet is refused', () => {
    const board = {
      name: 'sim-a', sourceFile: '/x/sim-a.json',
      partner: { serial: { device: '/dev/ttyS1', baud: 115200 }, ethernet: { interface: 'plink', localAddress: '198.51.100.1', partnerAddress: '198.51.100.2', port: 5405 } },
    } as unknown as BoardProfile;
    const eth = board.partner!.ethernet!;
    adoptPartnerInProfile(board, 'sim-c', '198.51.100.3');
    assert.equal(board.partner!.name, 'sim-c');
    assert.equal(board.partner!.serial, undefined);
    assert.equal(board.partner!.ethernet!.partnerAddress, '198.51.100.3');
    assert.equal(eth.partnerAddress, '198.51.100.3', 'changed in place: whoever holds the link\'s settings (the upgrade channel) follows');
    assert.equal(board.partner!.ethernet!.localAddress, '198.51.100.1');
    const serialOnly = { name: 'x', sourceFile: '/x/x.json', partner: { serial: { device: '/dev/ttyS1', baud: 115200 } } } as unknown as BoardProfile;
    assert.throws(() => adoptPartnerInProfile(serialOnly, 'y', '198.51.100.3'), /\/x\/x\.json: partner\.ethernet is needed/);
  });
});
