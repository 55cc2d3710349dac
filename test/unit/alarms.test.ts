/**
 * The alarm list (src/store/alarms.ts) on a real SQLite store: raised once, cleared, a severity
 * change, kept across a restart (still active, not raised twice), the history bound, RFC 3877's
 * numbers, the ietf-alarms JSON; a random sequence of raises and clears against a model (fast-check).
 * The SNMP notifier's command lines and secrets with a fake snmptrap (the real one meets snmptrapd in
 * test/integration/alarms-snmp.test.ts); the limit checks' hysteresis; the profile's new sections.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { pino } from 'pino';
import { loadBoardProfile, type BoardProfile } from '../../src/config/board-profile.js';
import { limitVerdicts } from '../../src/mgmt/alarm-feeds.js';
import { NOTIFICATION_OID, SnmpNotifier, VARBIND_OID, defaultEngineId, managerConfig, notificationArgs, type RunSnmptrap } from '../../src/mgmt/snmp-notifier.js';
import { ALARM_TYPES, AlarmList, EVENT_TYPE_NUMBER, SEVERITY_NUMBER, alarmTypeIndex, toIetfAlarms, type AlarmChange, type AlarmTypeId } from '../../src/store/alarms.js';
import { Store } from '../../src/store/journal.js';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';

const quiet = pino({ level: 'silent' });

describe('alarm list (X.733, ietf-alarms, persisted)', () => {
  let dir: string;
  let stores: Store[] = [];
  let clock = 0;
  const now = () => new Date(Date.UTC(2026, 11, 5) + clock++ * 1000);
  const open = (o: { keepCleared?: number } = {}) => {
    const store = new Store(dir);
    stores.push(store);
    const list = new AlarmList(store, { board: 'sim-a', now, ...o });
    const changes: AlarmChange[] = [];
    list.on('change', (c) => changes.push(c));
    return { store, list, changes };
  };
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-alarms-')); clock = 0; });
  afterEach(() => {
    for (const s of stores) { try { s.close(); } catch { /* closed by the test */ } }
    stores = [];
    rmSync(dir, { recursive: true, force: true });
  });

  it('raises once, changes severity, clears once, and raises again on the same entry', () => {
    const { list, changes } = open();
    const link = list.resource('partner-link/ethernet');
    assert.equal(link, '/board/sim-a/partner-link/ethernet');
    assert.equal(list.raise('partner-link-down', link, 'ethernet down')?.kind, 'raise');
    assert.equal(list.raise('partner-link-down', link, 'ethernet down again'), undefined, 'an active alarm is not raised twice');
    assert.equal(changes.length, 1);
    assert.equal(list.list()[0]!.alarmText, 'ethernet down', 'the text of the first raise stays');
    assert.equal(list.raise('partner-link-down', link, 'worse', { severity: 'critical' })?.kind, 'severity');
    assert.equal(list.clear('partner-link-down', link, 'ethernet up')?.kind, 'clear');
    assert.equal(list.clear('partner-link-down', link, 'ethernet up twice'), undefined, 'a cleared alarm is not cleared twice');
    assert.equal(list.clear('fencing-failed', list.resource('partner')), undefined, 'clearing what was never raised changes nothing');
    assert.deepEqual(changes.map((c) => c.kind), ['raise', 'severity', 'clear']);
    const a = list.list()[0]!;
    assert.equal(a.isCleared, true);
    assert.equal(a.perceivedSeverity, 'critical', 'RFC 8632 keeps the last raised severity after the clear');
    assert.deepEqual(a.statusChanges.map((c) => c.perceivedSeverity), ['major', 'critical', 'cleared']);
    assert.equal(a.eventType, 'communicationsAlarm');
    assert.equal(a.probableCause, 'lossOfSignal');
    const created = a.timeCreated;
    assert.equal(list.raise('partner-link-down', link, 'down once more')?.kind, 'raise');
    const again = list.list()[0]!;
    assert.equal(again.timeCreated, created, 'the same entry: time-created stays');
    assert.ok(again.lastRaised > created);
    assert.equal(again.perceivedSeverity, 'major');
  });

  it('per resource and qualifier: two links are two alarms', () => {
    const { list } = open();
    list.raise('partner-link-down', list.resource('partner-link/serial'), 'serial down');
    list.raise('partner-link-down', list.resource('partner-link/ethernet'), 'ethernet down');
    list.raise('replica-repaired', list.resource('pair/backup-copy'), 'diverged', { qualifier: 'divergence' });
    list.raise('replica-repaired', list.resource('pair/backup-copy'), 'lost inputs', { qualifier: 'input-loss' });
    assert.equal(list.list({ activeOnly: true }).length, 4);
    assert.deepEqual(list.activeBySeverity(), { critical: 0, major: 2, minor: 2, warning: 0, indeterminate: 0 });
    list.clear('partner-link-down', list.resource('partner-link/serial'));
    assert.deepEqual(list.activeOf('partner-link-down').map((a) => a.resource), ['/board/sim-a/partner-link/ethernet']);
  });

  it('an alarm active before a controller restart is active after it, and is not raised (nor notified) twice', () => {
    const first = open();
    const link = first.list.resource('partner-link/ethernet');
    first.list.raise('partner-link-down', link, 'ethernet down before the restart');
    first.list.raise('fencing-failed', first.list.resource('partner'), 'no answer');
    first.list.clear('fencing-failed', first.list.resource('partner'), 'fenced');
    first.store.close();

    const second = open();
    const active = second.list.list({ activeOnly: true });
    assert.deepEqual(active.map((a) => [a.alarmTypeId, a.alarmText]), [['partner-link-down', 'ethernet down before the restart']]);
    assert.equal(second.list.raise('partner-link-down', link, 'ethernet still down after the restart'), undefined);
    assert.equal(second.changes.length, 0, 'no notification for an alarm that was already active');
    const cleared = second.list.list().find((a) => a.alarmTypeId === 'fencing-failed')!;
    assert.equal(cleared.isCleared, true, 'the history survives too');
    assert.equal(second.list.clear('partner-link-down', link, 'ethernet up')?.kind, 'clear');
    assert.deepEqual(second.list.list()[0]!.statusChanges.map((c) => c.perceivedSeverity), ['major', 'cleared']);
  });

  it('keeps at most keepCleared cleared alarms (oldest forgotten), never an active one', () => {
    const { list, store } = open({ keepCleared: 2 });
    for (const l of ['a', 'b', 'c', 'd']) {
      list.raise('partner-link-down', list.resource(`partner-link/${l}`), `${l} down`);
      list.clear('partner-link-down', list.resource(`partner-link/${l}`));
    }
    list.raise('pair-unprotected', list.resource('pair'), 'alone');
    assert.deepEqual(list.list().map((a) => a.resource).sort(), ['/board/sim-a/pair', '/board/sim-a/partner-link/c', '/board/sim-a/partner-link/d']);
    assert.equal((store.db.prepare('SELECT COUNT(*) AS n FROM alarms').get() as { n: number }).n, 3, 'the store forgets them too');
  });

  it('refuses an unknown alarm type and a severity that is not an active one', () => {
    const { list } = open();
    assert.throws(() => list.raise('no-such-alarm' as AlarmTypeId, '/x', 't'), /unknown alarm type "no-such-alarm"/);
    assert.throws(() => list.raise('pair-unprotected', '/x', 't', { severity: 'cleared' as 'major' }), /severity "cleared"/);
  });

  it('numbers severities and event types as RFC 3877 does; the MIB lists every alarm type index', () => {
    assert.deepEqual(SEVERITY_NUMBER, { cleared: 1, indeterminate: 2, critical: 3, major: 4, minor: 5, warning: 6 });
    assert.equal(EVENT_TYPE_NUMBER.communicationsAlarm, 2);
    assert.equal(EVENT_TYPE_NUMBER.timeDomainViolation, 11);
    assert.equal(alarmTypeIndex('partner-link-down'), 1, 'append-only: the first type keeps index 1');
    const mib = readFileSync(join(PACKAGE_ROOT, 'docs/mib/UNDERSTUDY-ALARM-MIB.txt'), 'utf8');
    for (const [name, n] of Object.entries(SEVERITY_NUMBER)) assert.match(mib, new RegExp(`\\b${name}\\(${n}\\)`), `MIB severity ${name}`);
    for (const [name, n] of Object.entries(EVENT_TYPE_NUMBER)) assert.match(mib, new RegExp(`\\b${name}\\(${n}\\)`), `MIB event type ${name}`);
    const doc = readFileSync(join(PACKAGE_ROOT, 'docs/alarms.md'), 'utf8');
    for (const [id, t] of Object.entries(ALARM_TYPES)) {
      assert.match(doc, new RegExp(`\\| ${alarmTypeIndex(id as AlarmTypeId)} \\| \`${id}\` \\| ${t.severity} \\|`), `docs/alarms.md row of ${id}`);
    }
  });

  it('prints the list in the ietf-alarms shape', () => {
    const { list } = open();
    list.raise('console-lockout', list.resource('console'), 'locked');
    list.clear('console-lockout', list.resource('console'), 'unlocked');
    const j = toIetfAlarms(list.list()) as any;
    const a = j['ietf-alarms:alarms']['alarm-list'].alarm[0];
    assert.equal(j['ietf-alarms:alarms']['alarm-list']['number-of-alarms'], 1);
    assert.deepEqual(Object.keys(a).slice(0, 10), ['resource', 'alarm-type-id', 'alarm-type-qualifier', 'time-created', 'is-cleared', 'last-raised', 'last-changed', 'perceived-severity', 'alarm-text', 'status-change']);
    assert.equal(a['alarm-type-id'], 'understudy-alarms:console-lockout');
    assert.equal(a['is-cleared'], true);
    assert.equal(a['alarm-text'], 'unlocked');
    assert.deepEqual(a['status-change'].map((c: any) => c['perceived-severity']), ['warning', 'cleared']);
    assert.equal(a['ietf-alarms-x733:event-type'], 'securityServiceOrMechanismViolation');
  });

  it('any sequence of raises and clears: one change per transition, the same state after a restart', () => {
    const ids: AlarmTypeId[] = ['partner-link-down', 'pair-unprotected'];
    const op = fc.record({ raise: fc.boolean(), id: fc.constantFrom(...ids), res: fc.constantFrom('x', 'y'), sev: fc.constantFrom(undefined, 'critical' as const, 'minor' as const) });
    fc.assert(fc.property(fc.array(op, { maxLength: 30 }), (ops) => {
      rmSync(dir, { recursive: true, force: true });
      dir = mkdtempSync(join(tmpdir(), 'us-alarms-'));
      const { list, changes, store } = open();
      const model = new Map<string, string | null>(); // key -> active severity, or null when cleared
      let expected = 0;
      for (const o of ops) {
        const k = `${o.id}|${o.res}`;
        const cur = model.get(k) ?? null;
        if (o.raise) {
          const sev = o.sev ?? ALARM_TYPES[o.id].severity;
          if (cur !== sev) { expected++; model.set(k, sev); }
          list.raise(o.id, o.res, 'r', { severity: o.sev });
        } else {
          if (cur !== null) { expected++; model.set(k, null); }
          list.clear(o.id, o.res);
        }
      }
      assert.equal(changes.length, expected);
      const state = (l: AlarmList) => l.list().map((a) => `${a.alarmTypeId}|${a.resource}|${a.isCleared ? 'cleared' : a.perceivedSeverity}`).sort();
      const before = state(list);
      assert.deepEqual(before, [...model.entries()].map(([k, v]) => `${k}|${v ?? 'cleared'}`).sort());
      store.close();
      assert.deepEqual(state(open().list), before);
    }), { numRuns: 40 });
  });
});

describe('SNMP notifier (fake snmptrap)', () => {
  let dir: string;
  let store: Store;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-snmp-')); store = new Store(dir); });
  afterEach(() => { store.close(); rmSync(dir, { recursive: true, force: true }); });

  const board = (snmp: unknown): BoardProfile => ({ name: 'sim-a', storageDir: dir, sourceFile: join(dir, 'b.json'), snmp } as unknown as BoardProfile);

  it('sends each change to each manager, in order, after the hold; secrets only in a 0600 snmp.conf', async () => {
    const pass = join(dir, 'auth.pass');
    const priv = join(dir, 'priv.pass');
    writeFileSync(pass, 'auth-secret-1\n', { mode: 0o600 });
    writeFileSync(priv, 'priv-secret-2\n', { mode: 0o600 });
    const calls: Array<{ args: string[]; env: NodeJS.ProcessEnv }> = [];
    // The manager of the informs does not acknowledge the clear.
    const run: RunSnmptrap = async (args, env) => {
      calls.push({ args, env });
      const lost = args.includes('-Ci') && args.includes(NOTIFICATION_OID.cleared);
      return { code: lost ? 1 : 0, stderr: lost ? 'snmpinform: Timeout\n' : '' };
    };
    const list = new AlarmList(store, { board: 'sim-a' });
    const n = new SnmpNotifier(board({
      holdMs: 0,
      managers: [
        { version: 'v2c', address: '198.51.100.2', port: 162, notify: 'trap', community: 'c0mmunity', timeoutMs: 1000, retries: 2 },
        { version: 'v3', address: '198.51.100.3', port: 1162, notify: 'inform', user: 'nms', authProtocol: 'SHA', authPassFile: pass, privProtocol: 'AES', privPassFile: priv, timeoutMs: 500, retries: 1 },
      ],
    }), list, quiet, run);
    list.raise('partner-link-down', list.resource('partner-link/ethernet'), 'ethernet down');
    list.clear('partner-link-down', list.resource('partner-link/ethernet'), 'ethernet up');
    await new Promise((r) => setTimeout(r, 20));
    await n.flush();
    assert.equal(calls.length, 4);
    const v2 = calls.filter((c) => c.args.includes('udp:198.51.100.2:162'));
    const v3 = calls.filter((c) => c.args.includes('udp:198.51.100.3:1162'));
    assert.deepEqual(v2.map((c) => c.args[c.args.indexOf('udp:198.51.100.2:162') + 2]), [NOTIFICATION_OID.raised, NOTIFICATION_OID.cleared], 'raise, then clear');
    assert.ok(!v2[0]!.args.includes('-Ci'), 'a trap');
    assert.ok(v3[0]!.args.includes('-Ci') && v3[0]!.args.includes('-r'), 'an inform, with retries');
    for (const c of calls) {
      const line = c.args.join(' ');
      for (const secret of ['c0mmunity', 'auth-secret-1', 'priv-secret-2']) assert.ok(!line.includes(secret), `${secret} not on the command line`);
    }
    const conf2 = join(v2[0]!.env.SNMPCONFPATH!, 'snmp.conf');
    const conf3 = join(v3[0]!.env.SNMPCONFPATH!, 'snmp.conf');
    assert.match(readFileSync(conf2, 'utf8'), /defCommunity c0mmunity/);
    assert.match(readFileSync(conf3, 'utf8'), /defSecurityLevel authPriv[\s\S]*defAuthPassphrase auth-secret-1[\s\S]*defPrivPassphrase priv-secret-2/);
    assert.equal(statSync(conf3).mode & 0o777, 0o600);
    const st = n.status();
    assert.deepEqual(st.map((s) => [s.sent, s.failed]), [[2, 0], [1, 1]]);
    assert.equal(st[1]!.lastError, 'snmpinform: Timeout');
    n.close();
  });

  it('a v3 trap carries this board\'s engine ID; the varbinds carry the X.733 fields', () => {
    const list = new AlarmList(store, { board: 'sim-a' });
    const c = list.raise('fencing-failed', list.resource('partner'), 'no answer from the power controller')!;
    const args = notificationArgs(c, c.alarm.lastChanged);
    const value = (oid: string) => args[args.indexOf(oid) + 2];
    assert.equal(value(VARBIND_OID.perceivedSeverity), String(SEVERITY_NUMBER.critical));
    assert.equal(value(VARBIND_OID.eventType), String(EVENT_TYPE_NUMBER.equipmentAlarm));
    assert.equal(value(VARBIND_OID.probableCause), 'protectionMechanismFailure');
    assert.equal(value(VARBIND_OID.resource), '/board/sim-a/partner');
    const cleared = list.clear('fencing-failed', list.resource('partner'))!;
    const cargs = notificationArgs(cleared, cleared.alarm.lastChanged);
    assert.equal(cargs[1], NOTIFICATION_OID.cleared);
    assert.equal(cargs[cargs.indexOf(VARBIND_OID.perceivedSeverity) + 2], '1');
    assert.equal(defaultEngineId('sim-a'), `80007ed904${Buffer.from('sim-a').toString('hex')}`);
    const pass = join(dir, 'p.pass');
    writeFileSync(pass, 'pass-phrase-1\n');
    const v3 = { version: 'v3', address: '198.51.100.3', port: 162, user: 'nms', authProtocol: 'SHA', authPassFile: pass, privProtocol: 'AES', privPassFile: pass, timeoutMs: 1000, retries: 0 } as const;
    const trap = managerConfig({ ...v3, notify: 'trap' }, 'abcdef0123', 0).options;
    assert.deepEqual(trap.slice(trap.indexOf('-e'), trap.indexOf('-e') + 2), ['-e', '0xabcdef0123']);
    assert.ok(!managerConfig({ ...v3, notify: 'inform' }, 'abcdef0123', 0).options.includes('-e'), 'an inform discovers the manager\'s engine ID');
  });

  it('a pass phrase file that is missing or too short is a configuration error naming the field', () => {
    const list = new AlarmList(store, { board: 'sim-a' });
    const short = join(dir, 'short.pass');
    writeFileSync(short, 'abc\n');
    const v3 = (authPassFile: string) => board({ holdMs: 0, managers: [{ version: 'v3', address: '198.51.100.3', port: 162, notify: 'trap', user: 'nms', authProtocol: 'SHA', authPassFile, privProtocol: 'AES', privPassFile: authPassFile, timeoutMs: 1000, retries: 0 }] });
    assert.throws(() => new SnmpNotifier(v3(join(dir, 'none.pass')), list, quiet), (e: Error & { code: string }) => e.code === 'US_ERR_CONFIG' && /snmp\.managers\[0\]\.authPassFile: cannot read/.test(e.message));
    assert.throws(() => new SnmpNotifier(v3(short), list, quiet), /snmp\.managers\[0\]\.authPassFile: .* 8 to 255 characters/);
  });
});

describe('alarm limits and profile sections', () => {
  const limits = { unprotectedAfterS: 10, diskFreeMinPercent: 10, controllerRssMaxMb: 400, clockStepMaxMs: 2000, checkEveryS: 5 };
  it('disk and memory limits with hysteresis; a clock step in either direction', () => {
    const off = { disk: false, memory: false };
    assert.equal(limitVerdicts(limits, { diskFreePercent: 11, rssMb: 100, clockStepMs: 0 }, off).disk, undefined);
    assert.match(limitVerdicts(limits, { diskFreePercent: 9.5, rssMb: 100, clockStepMs: 0 }, off).disk!, /9\.5 % free/);
    assert.ok(limitVerdicts(limits, { diskFreePercent: 11, rssMb: 100, clockStepMs: 0 }, { disk: true, memory: false }).disk, 'stays raised until 2 points above');
    assert.equal(limitVerdicts(limits, { diskFreePercent: 12.5, rssMb: 100, clockStepMs: 0 }, { disk: true, memory: false }).disk, undefined);
    assert.ok(limitVerdicts(limits, { diskFreePercent: 50, rssMb: 401, clockStepMs: 0 }, off).memory);
    assert.ok(limitVerdicts(limits, { diskFreePercent: 50, rssMb: 380, clockStepMs: 0 }, { disk: false, memory: true }).memory, 'stays raised above 90 %');
    assert.equal(limitVerdicts(limits, { diskFreePercent: 50, rssMb: 350, clockStepMs: 0 }, { disk: false, memory: true }).memory, undefined);
    assert.match(limitVerdicts(limits, { diskFreePercent: 50, rssMb: 1, clockStepMs: -5000 }, off).clockStep!, /stepped back 5000 ms/);
    assert.equal(limitVerdicts(limits, { diskFreePercent: 50, rssMb: 1, clockStepMs: 1500 }, off).clockStep, undefined);
  });

  it('the profile: alarms defaults; snmp managers with defaults; bad values name their field', () => {
    const dir = mkdtempSync(join(tmpdir(), 'us-snmp-cfg-'));
    try {
      const base = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board/sim-a.json'), 'utf8')) as Record<string, any>;
      base.storageDir = dir;
      const write = (x: unknown) => { const f = join(dir, 'b.json'); writeFileSync(f, JSON.stringify(x)); return f; };
      const p = loadBoardProfile(write({ ...base, alarms: undefined, snmp: { managers: [{ version: 'v2c', address: '198.51.100.2' }, { version: 'v3', address: '198.51.100.3', user: 'nms', authPassFile: 'a.pass', privPassFile: 'p.pass' }] } }));
      assert.deepEqual(p.alarms, limits);
      assert.deepEqual(p.snmp!.managers[0], { version: 'v2c', address: '198.51.100.2', port: 162, notify: 'trap', community: 'public', timeoutMs: 1000, retries: 2 });
      const m3 = p.snmp!.managers[1]!;
      assert.ok(m3.version === 'v3' && m3.authPassFile === join(dir, 'a.pass') && m3.authProtocol === 'SHA' && m3.privProtocol === 'AES', 'pass files resolved against the profile folder');
      assert.equal(p.snmp!.holdMs, 250);
      const bad = (snmp: unknown, field: RegExp) => assert.throws(() => loadBoardProfile(write({ ...base, snmp })), (e: Error & { code: string }) => e.code === 'US_ERR_CONFIG' && field.test(e.message));
      bad({ engineId: 'xyz', managers: [{ version: 'v2c', address: '198.51.100.2' }] }, /snmp\.engineId/);
      bad({ managers: [{ version: 'v3', address: '198.51.100.2', user: 'nms', privPassFile: 'p' }] }, /snmp\.managers\[0\]\.authPassFile/);
      bad({ managers: [{ version: 'v2c', address: '198.51.100.2', notify: 'email' }] }, /snmp\.managers\[0\]\.notify/);
      bad({ managers: [] }, /snmp\.managers/);
      assert.throws(() => loadBoardProfile(write({ ...base, alarms: { diskFreeMinPercent: 0 } })), /alarms\.diskFreeMinPercent/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
