/**
 * The simulated chassis with N boards (`chassis up --boards N`), without building one: the default
 * two-board layout is today's (sim-a, sim-b, no backplane), a larger one names sim-c… in order with
 * their own namespaces and addresses inside the documentation ranges, a spare's generated profile
 * is valid and has no partner, HA, fencing or service address of the pair, and board names are
 * parsed against the chassis' own boards.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { UsError } from '../../src/core/errors.js';
import { chassisUp } from '../../src/sim/chassis/launcher.js';
import { boardProfileSchema } from '../../src/config/board-profile.js';
import {
  MAX_BOARDS, PACKAGE_ROOT, PLINK_PORT, SERVICE_VIP, boardNames, chassisLayout, guestCount, guestOnBoard, guestPair, guestPlinkPort, guestServiceAddress,
  parseBoardName, partnerOf, plinkAddress, serviceBoardAddress, type ChassisBoard,
} from '../../src/sim/chassis/layout.js';
import { chassisProfile, pairingProfile, pairingProfileFile, templateFile, writeGuestProfiles } from '../../src/sim/chassis/profiles.js';

const DOC_RANGES = [/^192\.0\.2\.\d+$/, /^198\.51\.100\.\d+$/, /^203\.0\.113\.\d+$/, /^127\.\d+\.\d+\.\d+$/];

describe('simulated chassis: N boards (--boards N)', () => {
  it('two boards by default: sim-a and sim-b, namespaces <name>-a/-b, no backplane', () => {
    const L = chassisLayout('t', '/tmp/us-t');
    assert.deepEqual(L.boardNames, ['sim-a', 'sim-b']);
    assert.deepEqual(Object.keys(L.boards), ['sim-a', 'sim-b']);
    assert.equal(L.backplaneNetns, undefined);
    assert.equal(L.boards['sim-b'].netns, 't-b');
    assert.equal(plinkAddress('sim-a'), '198.51.100.1');
    assert.equal(serviceBoardAddress('sim-b'), '192.0.2.2');
  });

  it('four boards: sim-a…sim-d in order, each its own namespace and directory, a backplane namespace, addresses in the documentation ranges only', () => {
    const L = chassisLayout('t', '/tmp/us-t', 4);
    assert.deepEqual(L.boardNames, ['sim-a', 'sim-b', 'sim-c', 'sim-d']);
    assert.equal(L.backplaneNetns, 't-p');
    const namespaces = L.boardNames.map((b) => L.boards[b].netns);
    assert.deepEqual(namespaces, ['t-a', 't-b', 't-c', 't-d']);
    assert.ok(!namespaces.includes(L.serviceNetns) && !namespaces.includes(L.backplaneNetns!), 'no board namespace collides with the service network or the backplane');
    assert.equal(L.boards['sim-d'].dir, '/tmp/us-t/sim-d');
    const addresses = L.boardNames.flatMap((b) => [plinkAddress(b), serviceBoardAddress(b)]);
    assert.equal(new Set(addresses).size, addresses.length, 'every address is used once');
    for (const a of addresses) assert.ok(DOC_RANGES.some((r) => r.test(a)), `${a} is in a documentation range`);
    assert.ok(!addresses.includes(SERVICE_VIP), 'no board owns the service address');
    assert.equal(plinkAddress('sim-d'), '198.51.100.4');
  });

  it('the board count is bounded: 2 to 8 (the namespaces\' letters)', () => {
    assert.equal(boardNames(MAX_BOARDS).at(-1), 'sim-h');
    for (const bad of [1, 9, 2.5, Number.NaN]) assert.throws(() => boardNames(bad), /--boards: an integer from 2 to 8/);
  });

  it('a spare\'s profile is valid, standalone (no partner, HA or fencing) and off the service address; the pair\'s profiles still partner each other', () => {
    const L = chassisLayout('t', '/tmp/us-t', 3);
    const spare = chassisProfile(JSON.parse(readFileSync(templateFile('sim-c'), 'utf8')), 'sim-c', L, 115200);
    const check = boardProfileSchema.safeParse(spare);
    assert.ok(check.success, JSON.stringify(!check.success && check.error.issues[0]));
    assert.equal(spare.name, 'sim-c');
    assert.equal(spare.partner, undefined);
    assert.equal(spare.ha, undefined);
    assert.equal(spare.fencing, undefined);
    assert.equal(spare.storageDir, L.boards['sim-c'].storageDir);
    assert.equal(spare.watchdog.device, L.boards['sim-c'].watchdogFifo);
    assert.equal(spare.service.address, '127.0.10.3');
    assert.equal(spare.service.interface, undefined, 'a spare never holds the service address on the service network');
    const a = chassisProfile(JSON.parse(readFileSync(templateFile('sim-a'), 'utf8')), 'sim-a', L, 115200);
    assert.equal(a.partner.ethernet.partnerAddress, '198.51.100.2');
    assert.equal(a.service.address, SERVICE_VIP);
  });

  it('pairing profiles (N+1): the spare paired with either pair board, a pair board with the spare; valid, Ethernet only, the service address, the board\'s own store and devices', () => {
    const L = chassisLayout('t', '/tmp/us-t', 3);
    const template = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board', 'sim-b.json'), 'utf8'));
    for (const [board, partner] of [['sim-c', 'sim-a'], ['sim-c', 'sim-b'], ['sim-a', 'sim-c']] as const) {
      const p = pairingProfile(template, board, partner, L);
      const check = boardProfileSchema.safeParse(p);
      assert.ok(check.success, JSON.stringify(!check.success && check.error.issues[0]));
      assert.equal(p.name, board);
      assert.deepEqual(p.partner, { name: partner, ethernet: { interface: 'plink', localAddress: plinkAddress(board), partnerAddress: plinkAddress(partner), port: PLINK_PORT } });
      assert.equal(p.storageDir, L.boards[board].storageDir);
      assert.equal(p.watchdog.device, L.boards[board].watchdogFifo);
      assert.equal(p.service.address, SERVICE_VIP);
      assert.equal(p.fencing.controlSocket, L.powerSocket);
      assert.equal(p.ha.keyFile, L.keyFile);
      assert.equal(pairingProfileFile(L, board, partner), `/tmp/us-t/${board}/with-${partner}.json`);
    }
    assert.throws(() => pairingProfile(template, 'sim-c', 'sim-c', L), /cannot be its own partner/);
  });

  it('board names are parsed against the chassis\' boards; the pair\'s message is unchanged; a spare has no partner', () => {
    assert.equal(parseBoardName('b'), 'sim-b');
    assert.throws(() => parseBoardName('sim-c'), /^.*unknown board "sim-c" \(boards: sim-a, sim-b; a and b also accepted\)$/);
    const three = boardNames(3);
    assert.equal(parseBoardName('c', three), 'sim-c');
    assert.equal(parseBoardName('SIM-C', three), 'sim-c');
    assert.throws(() => parseBoardName('d', three), /boards: sim-a, sim-b, sim-c; a, b, c also accepted/);
    assert.equal(partnerOf('sim-a'), 'sim-b');
    assert.throws(() => partnerOf('sim-c'), /spare/);
  });
});

describe('simulated chassis: several guests on one shelf (--guests G)', () => {
  const dirs: string[] = [];
  after(() => { for (const d of dirs) rmSync(d, { recursive: true, force: true }); });

  it('guest k > 1 has its own natural pair (the (k+1)-th board first, sim-b its backup), service address, partner-link ports and files; the count is bounded by the boards', () => {
    const L = chassisLayout('t', '/tmp/us-t', 4);
    assert.deepEqual(guestPair(L, 1), ['sim-a', 'sim-b']);
    assert.deepEqual(guestPair(L, 2), ['sim-c', 'sim-b']);
    assert.deepEqual(guestPair(L, 3), ['sim-d', 'sim-b']);
    assert.throws(() => guestPair(L, 4), /guest 4 needs 5 boards/);
    assert.equal(guestServiceAddress(1), SERVICE_VIP);
    assert.equal(guestServiceAddress(2), '192.0.2.11');
    assert.deepEqual([1, 2, 3].map(guestPlinkPort), [PLINK_PORT, PLINK_PORT + 100, PLINK_PORT + 200]);
    // Guest 1's files are the board's own; guest 2's sit in their own folder.
    assert.equal(guestOnBoard(L, 'sim-c', 1).controlSocket, L.boards['sim-c'].controlSocket);
    const g = guestOnBoard(L, 'sim-c', 2);
    assert.equal(g.dir, '/tmp/us-t/sim-c/guest2');
    assert.equal(g.controlSocket, '/tmp/us-t/sim-c/guest2/store/understudyd.sock');
    assert.equal(g.watchdogFifo, '/tmp/us-t/sim-c/guest2/watchdog');
    assert.equal(guestCount(3, 4), 3);
    assert.throws(() => guestCount(3, 3), /--guests: an integer from 1 to 2 on a chassis of 3 boards/);
    assert.throws(() => guestCount(0, 3), /--guests/);
  });

  it('guest 2\'s profiles on every board are valid: its natural pair partners each other on the backplane (Ethernet only) on its own ports and address, the third board is a spare, pairing profiles for every other pairing; nothing shared with guest 1\'s controller on the same board', () => {
    const run = mkdtempSync(join(tmpdir(), 'us-guests-'));
    dirs.push(run);
    const L = chassisLayout('t', run, 3);
    for (const b of L.boardNames) mkdirSync(L.boards[b].dir, { recursive: true });
    const files = writeGuestProfiles(L, 2, 'pacemaker');
    const read = (f: string) => JSON.parse(readFileSync(f, 'utf8'));
    const c = read(files['sim-c'].profile);
    const b = read(files['sim-b'].profile);
    const a = read(files['sim-a'].profile);
    for (const p of [a, b, c]) {
      const check = boardProfileSchema.safeParse(p);
      assert.ok(check.success, JSON.stringify(!check.success && check.error.issues[0]));
      assert.equal(p.console, undefined, 'the board\'s console is guest 1\'s');
    }
    assert.deepEqual(c.partner, { name: 'sim-b', ethernet: { interface: 'plink', localAddress: plinkAddress('sim-c'), partnerAddress: plinkAddress('sim-b'), port: PLINK_PORT + 100 } });
    assert.equal(b.partner.name, 'sim-c');
    assert.equal(b.partner.ethernet.port, PLINK_PORT + 100);
    assert.equal(b.partner.serial, undefined, 'no serial link: the pty pair joins sim-a and sim-b for guest 1');
    assert.ok(c.ha.priority < b.ha.priority, 'sim-c is preferred: it serves first');
    assert.equal(c.ha.manager, 'pacemaker');
    assert.equal(c.service.address, '192.0.2.11');
    assert.equal(b.service.address, '192.0.2.11');
    assert.equal(a.ha, undefined, 'sim-a is a spare for guest 2');
    assert.equal(a.partner, undefined);
    assert.equal(a.service.address, '127.0.11.1');
    const guest1 = chassisProfile(JSON.parse(readFileSync(templateFile('sim-b'), 'utf8')), 'sim-b', L, 115200);
    assert.notEqual(b.storageDir, guest1.storageDir);
    assert.equal(b.storageDir, guestOnBoard(L, 'sim-b', 2).storageDir);
    assert.equal(b.watchdog.device, files['sim-b'].watchdogFifo);
    assert.notEqual(b.watchdog.device, guest1.watchdog.device);
    assert.notEqual(b.metrics.port, guest1.metrics.port);
    // Pairing profiles: every pairing but the natural one.
    const dir = (x: ChassisBoard) => guestOnBoard(L, x, 2).dir;
    assert.deepEqual(readdirSync(dir('sim-a')).filter((f) => f.startsWith('with-')).sort(), ['with-sim-b.json', 'with-sim-c.json']);
    assert.deepEqual(readdirSync(dir('sim-b')).filter((f) => f.startsWith('with-')), ['with-sim-a.json']);
    assert.deepEqual(readdirSync(dir('sim-c')).filter((f) => f.startsWith('with-')), ['with-sim-a.json']);
    const ab = read(join(dir('sim-a'), 'with-sim-b.json'));
    assert.ok(boardProfileSchema.safeParse(ab).success);
    assert.equal(ab.partner.ethernet.port, PLINK_PORT + 100);
    assert.equal(ab.service.address, '192.0.2.11');
    assert.equal(ab.storageDir, guestOnBoard(L, 'sim-a', 2).storageDir);
  });

  it('chassis up refuses --guests above the boards\' bound or without Pacemaker and a guest, before it builds anything', async () => {
    const runDir = '/tmp/us-guests-refused-never-built';
    await assert.rejects(chassisUp({ name: 'gx', runDir, boards: 3, guests: 2, guest: 'primary' }), (e: UsError) => e.code === 'US_ERR_CONFIG' && /needs --manager pacemaker and --guest primary/.test(e.message));
    await assert.rejects(chassisUp({ name: 'gx', runDir, boards: 3, guests: 2, manager: 'pacemaker' }), (e: UsError) => e.code === 'US_ERR_CONFIG' && /needs --manager pacemaker and --guest primary/.test(e.message));
    await assert.rejects(chassisUp({ name: 'gx', runDir, boards: 2, guests: 2, manager: 'pacemaker', guest: 'primary' }), (e: UsError) => e.code === 'US_ERR_CONFIG' && /from 1 to 1 on a chassis of 2 boards/.test(e.message));
    assert.equal(existsSync(runDir), false, 'nothing built');
  });
});
