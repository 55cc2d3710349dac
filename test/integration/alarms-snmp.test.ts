/**
 * Alarm notifications meet a real manager (root): Debian's snmptrapd, started by this test inside a
 * network namespace it creates (a veth pair on 198.51.100.200/30: this side .201, the manager .202),
 * loading docs/mib/UNDERSTUDY-ALARM-MIB.txt. The product's own path sends: the alarm list on a real
 * SQLite store, the SnmpNotifier, net-snmp's snmptrap. Raise and clear arrive and decode by name as
 * an SNMPv2c trap, an SNMPv3 authPriv trap (under the board's engine ID) and an SNMPv3 authPriv
 * inform (acknowledged); an inform with a wrong pass phrase is refused by the manager and counted as
 * failed; an alarm still active after a reopen of the store (a controller restart) is not sent again.
 * Everything started here is stopped in after(), by pid and by the namespace's name, failed or not.
 */
import assert from 'node:assert/strict';
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import type { BoardProfile } from '../../src/config/board-profile.js';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { SnmpNotifier, defaultEngineId, type SnmpManager } from '../../src/mgmt/snmp-notifier.js';
import { AlarmList } from '../../src/store/alarms.js';
import { Store } from '../../src/store/journal.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const quiet = pino({ level: 'silent' });
const MANAGER = '198.51.100.202';
const PORT = 16200;
const AUTH = 'auth-pass-phrase-1';
const PRIV = 'priv-pass-phrase-2';

/** One notification as snmptrapd printed it: varbind name (without the module) -> value. */
type Decoded = Map<string, string>;

function decodedNotifications(log: string): Decoded[] {
  return log.split('\n').filter((l) => l.includes('usAlarm')).map((l) => new Map(l.split('\t').map((vb) => {
    const m = /^(?:UNDERSTUDY-ALARM-MIB::)?([^ ]+) = (.*)$/.exec(vb.trim());
    return m ? [m[1]!, m[2]!] as [string, string] : ['?', vb] as [string, string];
  })));
}

describe('alarm notifications to a real snmptrapd in a namespace (root)', function () {
  this.timeout(60000);
  const ns = `usal${process.pid % 100000}`;
  const vethHost = `usa${process.pid % 100000}h`;
  const vethNs = `usa${process.pid % 100000}n`;
  let dir = '';
  let trapd: ChildProcess | undefined;
  let log = '';
  const stores: Store[] = [];
  const notifiers: SnmpNotifier[] = [];

  before(async function () {
    if (process.getuid?.() !== 0 || !existsSync('/usr/sbin/snmptrapd') || !existsSync('/usr/bin/snmptrap')) this.skip();
    dir = mkdtempSync(join(tmpdir(), 'us-alarms-snmp-'));
    log = join(dir, 'snmptrapd.log');
    const ip = (...a: string[]) => execFileSync('ip', a, { stdio: ['ignore', 'ignore', 'pipe'] });
    ip('netns', 'add', ns);
    ip('link', 'add', vethHost, 'type', 'veth', 'peer', 'name', vethNs);
    ip('link', 'set', vethNs, 'netns', ns);
    ip('addr', 'add', '198.51.100.201/30', 'dev', vethHost);
    ip('link', 'set', vethHost, 'up');
    ip('-n', ns, 'addr', 'add', `${MANAGER}/30`, 'dev', vethNs);
    ip('-n', ns, 'link', 'set', vethNs, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    // The manager's users: the trap user under the board's engine ID, the inform user under its own.
    writeFileSync(join(dir, 'snmptrapd.conf'), [
      'authCommunity log v2c-community',
      `createUser -e 0x${defaultEngineId('sim-a')} traps SHA ${AUTH} AES ${PRIV}`,
      `createUser informs SHA ${AUTH} AES ${PRIV}`,
      'authUser log traps', 'authUser log informs', '',
    ].join('\n'));
    trapd = spawn('ip', ['netns', 'exec', ns, 'snmptrapd', '-f', '-C', '-c', join(dir, 'snmptrapd.conf'), '-Lf', log,
      '-M', join(PACKAGE_ROOT, 'docs/mib'), '-m', 'UNDERSTUDY-ALARM-MIB', `udp:${MANAGER}:${PORT}`],
    { stdio: 'ignore', detached: true, env: { ...process.env, SNMP_PERSISTENT_DIR: join(dir, 'trapd-persist'), MIBS: '' } });
    for (let i = 0; i < 100 && !(existsSync(log) && readFileSync(log, 'utf8').includes('NET-SNMP version')); i++) await sleep(100);
    assert.match(readFileSync(log, 'utf8'), /NET-SNMP version/, 'snmptrapd started');
  });

  after(() => {
    for (const n of notifiers) n.close();
    for (const s of stores) { try { s.close(); } catch { /* closed by the test */ } }
    // ip netns exec runs snmptrapd in its own process (group): stop that group, by its pid.
    if (trapd?.pid && trapd.exitCode === null) { try { process.kill(-trapd.pid, 'SIGKILL'); } catch { /* gone */ } }
    try { execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' }); } catch { /* not made */ }
    try { execFileSync('ip', ['link', 'del', vethHost], { stdio: 'ignore' }); } catch { /* gone with the namespace */ }
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const board = (storageDir: string, managers: SnmpManager[]): BoardProfile =>
    ({ name: 'sim-a', storageDir, sourceFile: join(dir, 'board.json'), snmp: { holdMs: 0, managers } } as unknown as BoardProfile);

  function open(managers: SnmpManager[], storageDir = join(dir, 'store')) {
    execFileSync('mkdir', ['-p', storageDir]);
    const store = new Store(storageDir);
    stores.push(store);
    const alarms = new AlarmList(store, { board: 'sim-a' });
    const notifier = new SnmpNotifier(board(storageDir, managers), alarms, quiet);
    notifiers.push(notifier);
    return { store, alarms, notifier };
  }

  /** Notifications snmptrapd logged for `resource`, once there are `n` of them (bounded wait). */
  async function received(resource: string, n: number): Promise<Decoded[]> {
    let got: Decoded[] = [];
    for (let i = 0; i < 100; i++) {
      got = decodedNotifications(readFileSync(log, 'utf8')).filter((d) => d.get('usAlarmResource') === `STRING: "${resource}"`);
      if (got.length >= n) break;
      await sleep(100);
    }
    return got;
  }

  function assertRaiseThenClear(got: Decoded[], resource: string): void {
    assert.equal(got.length, 2, `raise and clear for ${resource}: ${JSON.stringify(got.map((d) => [...d]))}`);
    const [raise, clear] = got as [Decoded, Decoded];
    assert.match([...raise.values()].join(' '), /OID: UNDERSTUDY-ALARM-MIB::usAlarmRaised/);
    assert.equal(raise.get('usAlarmTypeId'), 'STRING: "partner-link-down"');
    assert.equal(raise.get('usAlarmPerceivedSeverity'), 'INTEGER: major(4)');
    assert.equal(raise.get('usAlarmEventType'), 'INTEGER: communicationsAlarm(2)');
    assert.equal(raise.get('usAlarmProbableCause'), 'STRING: "lossOfSignal"');
    assert.equal(raise.get('usAlarmTypeIndex'), 'INTEGER: 1');
    assert.match(raise.get('usAlarmText') ?? '', /link cut by the test/);
    assert.match([...clear.values()].join(' '), /OID: UNDERSTUDY-ALARM-MIB::usAlarmCleared/);
    assert.equal(clear.get('usAlarmPerceivedSeverity'), 'INTEGER: cleared(1)');
    assert.match(clear.get('usAlarmText') ?? '', /link healed by the test/);
  }

  async function raiseAndClear(alarms: AlarmList, notifier: SnmpNotifier, part: string): Promise<string> {
    const resource = alarms.resource(part);
    alarms.raise('partner-link-down', resource, `${part}: link cut by the test`);
    alarms.clear('partner-link-down', resource, `${part}: link healed by the test`);
    await sleep(20);
    await notifier.flush();
    return resource;
  }

  it('SNMPv2c trap: raise and clear arrive and decode with the MIB', async () => {
    const { alarms, notifier } = open([{ version: 'v2c', address: MANAGER, port: PORT, notify: 'trap', community: 'v2c-community', timeoutMs: 1000, retries: 0 }], join(dir, 'v2c'));
    const resource = await raiseAndClear(alarms, notifier, 'partner-link/v2c');
    assertRaiseThenClear(await received(resource, 2), resource);
    assert.deepEqual(notifier.status().map((s) => [s.sent, s.failed]), [[2, 0]]);
  });

  it('SNMPv3 authPriv trap (the board\'s engine ID) and inform (acknowledged): raise and clear decode', async () => {
    writeFileSync(join(dir, 'auth.pass'), `${AUTH}\n`, { mode: 0o600 });
    writeFileSync(join(dir, 'priv.pass'), `${PRIV}\n`, { mode: 0o600 });
    const v3 = { version: 'v3', address: MANAGER, port: PORT, authProtocol: 'SHA', authPassFile: join(dir, 'auth.pass'), privProtocol: 'AES', privPassFile: join(dir, 'priv.pass'), timeoutMs: 1000, retries: 1 } as const;
    const traps = open([{ ...v3, notify: 'trap', user: 'traps' }], join(dir, 'v3-trap'));
    const r1 = await raiseAndClear(traps.alarms, traps.notifier, 'partner-link/v3-trap');
    assertRaiseThenClear(await received(r1, 2), r1);
    const informs = open([{ ...v3, notify: 'inform', user: 'informs' }], join(dir, 'v3-inform'));
    const r2 = await raiseAndClear(informs.alarms, informs.notifier, 'partner-link/v3-inform');
    assertRaiseThenClear(await received(r2, 2), r2);
    assert.deepEqual(informs.notifier.status().map((s) => [s.sent, s.failed]), [[2, 0]], 'both informs acknowledged');
  });

  it('an inform with a wrong pass phrase is refused by the manager: counted as failed, nothing decoded', async () => {
    writeFileSync(join(dir, 'wrong.pass'), 'not-the-pass-phrase\n', { mode: 0o600 });
    const { alarms, notifier } = open([{ version: 'v3', address: MANAGER, port: PORT, notify: 'inform', user: 'informs', authProtocol: 'SHA',
      authPassFile: join(dir, 'wrong.pass'), privProtocol: 'AES', privPassFile: join(dir, 'wrong.pass'), timeoutMs: 500, retries: 0 }], join(dir, 'v3-wrong'));
    alarms.raise('fencing-failed', alarms.resource('partner/wrong-pass'), 'sent with a wrong pass phrase');
    await sleep(20);
    await notifier.flush();
    const [st] = notifier.status();
    assert.equal(st!.sent, 0);
    assert.equal(st!.failed, 1);
    assert.ok(st!.lastError, 'the error snmptrap printed is kept');
    await sleep(1000); // what the manager accepted would be in its log by now
    assert.equal(decodedNotifications(readFileSync(log, 'utf8')).filter((d) => d.get('usAlarmResource') === `STRING: "${alarms.resource('partner/wrong-pass')}"`).length, 0);
  });

  it('an alarm active before a restart (the store reopened) is active after it and not sent again; its clear is', async () => {
    const manager: SnmpManager = { version: 'v2c', address: MANAGER, port: PORT, notify: 'trap', community: 'v2c-community', timeoutMs: 1000, retries: 0 };
    const storageDir = join(dir, 'restart');
    const first = open([manager], storageDir);
    const resource = first.alarms.resource('partner-link/restart');
    first.alarms.raise('partner-link-down', resource, 'partner-link/restart: link cut by the test');
    await sleep(20);
    await first.notifier.flush();
    assert.equal((await received(resource, 1)).length, 1);
    first.notifier.close();
    first.store.close();

    const second = open([manager], storageDir);
    assert.ok(second.alarms.isActive('partner-link-down', resource), 'still active after the restart');
    second.alarms.raise('partner-link-down', resource, 'partner-link/restart: still cut after the restart');
    second.alarms.clear('partner-link-down', resource, 'partner-link/restart: link healed by the test');
    await sleep(20);
    await second.notifier.flush();
    const got = await received(resource, 2);
    await sleep(500); // a second raise, had it been sent, would be in the log by now
    const all = decodedNotifications(readFileSync(log, 'utf8')).filter((d) => d.get('usAlarmResource') === `STRING: "${resource}"`);
    assert.deepEqual(all.map((d) => d.get('usAlarmPerceivedSeverity')), ['INTEGER: major(4)', 'INTEGER: cleared(1)'], 'one raise (before the restart), one clear (after)');
    assert.equal(got.length, 2);
  });
});
