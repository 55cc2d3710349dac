/**
 * The quarantine of poison inputs (docs/poison.md): the store's matching rule, its persistence and
 * the merge of the partner's entries (src/store/quarantine.ts); the control socket's commands and the
 * `poison-input` alarm (src/mgmt/quarantine-control.ts); what `understudy quarantine` prints
 * (src/cli/quarantine-commands.ts), also end to end through a real control socket.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { formatQuarantineEntry, formatQuarantineList, registerQuarantineCommands, requestText, REQUEST_COLUMN, type QuarantineJson } from '../../src/cli/quarantine-commands.js';
import { UsError } from '../../src/core/errors.js';
import { serveControl } from '../../src/mgmt/ipc.js';
import { controlSocketPath } from '../../src/mgmt/paths.js';
import { parseQuarantineId, quarantineCommands, raisePoisonAlarm, syncPoisonAlarms } from '../../src/mgmt/quarantine-control.js';
import { AlarmList } from '../../src/store/alarms.js';
import { Store } from '../../src/store/journal.js';
import { poisonReply, Quarantine, quarantineJson, requestIdOf, type QuarantineEntry, type QuarantineFailure } from '../../src/store/quarantine.js';

const A = { address: '192.0.2.10', port: 40001 };
const B = { address: '192.0.2.11', port: 40002 };
const crashes: QuarantineFailure[] = [
  { copy: 'primary', board: 'sim-a', how: 'crash', cause: 'guest exited', at: '2026-12-05T10:00:00.000Z' },
  { copy: 'backup', board: 'sim-b', how: 'crash', cause: 'watchdog', at: '2026-12-05T10:00:00.200Z' },
  { copy: 'restored', board: 'sim-b', how: 'crash', cause: 'guest exited', at: '2026-12-05T10:00:02.000Z' },
];
const buf = (s: string) => Buffer.from(s, 'latin1');
const poison = (seq: number, client: { address: string; port: number } | undefined, text: string, at?: string) =>
  ({ seq, client, payload: buf(text), failures: crashes, confirmation: `the restored copy failed on seq ${seq} replayed alone`, at });

/** Temp dirs and stores of one test, closed and removed after it. */
function scratch() {
  const dirs: string[] = [];
  const stores: Store[] = [];
  return {
    dir(): string { const d = mkdtempSync(join(tmpdir(), 'us-quarantine-')); dirs.push(d); return d; },
    store(dir: string): Store { const s = new Store(dir); stores.push(s); return s; },
    close(s: Store): void { s.close(); stores.splice(stores.indexOf(s), 1); },
    cleanup(): void {
      for (const s of stores) { try { s.close(); } catch { /* closed by the test */ } }
      for (const d of dirs) rmSync(d, { recursive: true, force: true });
    },
  };
}

function codeOf(fn: () => unknown): { code: string; message: string; field?: unknown } {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof UsError, `a UsError, got ${String(e)}`);
    return { code: e.code, message: e.message, field: e.detail?.field };
  }
  assert.fail('expected an error');
}

describe('quarantine store (poison inputs)', () => {
  let t: ReturnType<typeof scratch>;
  beforeEach(() => { t = scratch(); });
  afterEach(() => t.cleanup());

  it('matches a retry from the same client by its id, and the same bytes from any client; nothing else', () => {
    const q = new Quarantine(t.store(t.dir()));
    assert.equal(q.match(A, buf('r17 REG crash1')), undefined, 'an empty quarantine matches nothing');
    const e = q.add(poison(1234, A, 'r17 REG crash1'));
    assert.equal(e.id, 1);
    assert.equal(e.requestId, 'r17');
    assert.equal(e.status, 'active');
    assert.equal(q.activeCount, 1);
    assert.equal(q.match(A, buf('r17 REG crash1'))?.id, 1, 'the same request again');
    assert.equal(q.match(A, buf('r17 GET bob'))?.id, 1, 'same client, same id, other bytes: the guest would answer it from its reply cache');
    assert.equal(q.match(B, buf('r17 REG crash1'))?.id, 1, 'the same bytes from another client');
    assert.equal(q.match(undefined, buf('r17 REG crash1'))?.id, 1, 'the same bytes without a known client');
    assert.equal(q.match(B, buf('r17 REG crash2')), undefined, 'another client, other bytes, same id: its own request');
    assert.equal(q.match(A, buf('r18 REG crash1x')), undefined, 'same client, another id, other bytes');
    assert.equal(q.match({ address: A.address, port: A.port + 1 }, buf('r17 GET bob')), undefined, 'another port is another client');
    assert.equal(q.match(undefined, buf('r17 GET bob')), undefined, 'no client: bytes only');
    assert.equal(poisonReply(e.requestId, e.id).toString(), 'r17 ERR POISON q1');
  });

  it('adding the same input twice returns the same entry; the same bytes from two clients are two entries, both counted', () => {
    const q = new Quarantine(t.store(t.dir()));
    const first = q.add(poison(10, A, 'x1 REG crashy'));
    const again = q.add(poison(11, A, 'x1 REG crashy'));
    assert.equal(again.id, first.id);
    assert.equal(again.seq, 10, 'the existing entry, unchanged');
    assert.equal(q.list().length, 1);
    const other = q.add(poison(12, B, 'x1 REG crashy'));
    assert.notEqual(other.id, first.id);
    assert.equal(q.activeCount, 2, 'two active entries even though their bytes are the same');
    q.release(first.id, 'alice');
    assert.equal(q.activeCount, 1);
    assert.equal(q.match(A, buf('x1 REG crashy'))?.id, other.id, 'the bytes still match the other entry');
  });

  it('a released entry matches nothing and stays as history; a release of it again is refused; it can be quarantined again', () => {
    const q = new Quarantine(t.store(t.dir()));
    const e = q.add(poison(5, A, 'h1 REG hangman'));
    const r = q.release(e.id, 'alice');
    assert.equal(r.status, 'released');
    assert.equal(r.releasedBy, 'alice');
    assert.match(r.releasedAt ?? '', /^\d{4}-\d\d-\d\dT/);
    assert.equal(q.activeCount, 0);
    assert.equal(q.match(A, buf('h1 REG hangman')), undefined);
    assert.equal(q.match(B, buf('h1 REG hangman')), undefined);
    assert.equal(q.list().length, 1, 'kept as history');
    assert.equal(codeOf(() => q.release(e.id, 'bob')).code, 'US_ERR_ROLE');
    assert.equal(codeOf(() => q.release(99, 'bob')).code, 'US_ERR_NOT_FOUND');
    // It poisoned the copies again after the release: the same entry, active again, with its new failures.
    const back = q.add({ ...poison(77, A, 'h1 REG hangman'), failures: [crashes[0]!] });
    assert.equal(back.id, e.id);
    assert.equal(back.status, 'active');
    assert.equal(back.seq, 77);
    assert.equal(back.releasedBy, null);
    assert.equal(back.failures.length, 1);
    assert.equal(q.match(A, buf('h1 REG hangman'))?.id, e.id);
  });

  it('survives reopening the store: the entry, its bytes and its matching', () => {
    const dir = t.dir();
    const s1 = t.store(dir);
    const q1 = new Quarantine(s1);
    const binary = Buffer.concat([buf('b9 REG crash'), Buffer.from([0x00, 0xff, 0x0a])]);
    const e = q1.add({ ...poison(42, A, ''), payload: binary });
    q1.add(poison(43, B, 'c1 REG crash2'));
    q1.release(2, 'carol');
    q1.noteAnswered(q1.match(A, binary)!);
    t.close(s1);
    const q2 = new Quarantine(t.store(dir));
    assert.equal(q2.activeCount, 1);
    const again = q2.get(e.id)!;
    assert.deepEqual(again.payload, binary, 'the bytes, byte for byte');
    assert.deepEqual(again.failures, crashes);
    assert.equal(again.answered, 1);
    assert.equal(q2.match(B, binary)?.id, e.id);
    assert.equal(q2.match(A, buf('b9 GET x'))?.id, e.id, 'its id from its client');
    assert.equal(q2.match(B, buf('c1 REG crash2')), undefined, 'the released one stays released');
    assert.equal(q2.get(2)?.releasedBy, 'carol');
  });

  it('merges the partner\'s entries: adds the new ones, releases the ones it released, nothing twice', () => {
    const mine = new Quarantine(t.store(t.dir()));
    const theirs = new Quarantine(t.store(t.dir()));
    const p = theirs.add(poison(100, A, 'm1 REG crashme', '2026-12-05T10:00:00.000Z'));
    theirs.add(poison(101, B, 'm2 REG crashtoo', '2026-12-05T10:01:00.000Z'));
    theirs.release(2, 'dave', '2026-12-05T10:02:00.000Z');
    assert.equal(mine.merge(theirs.list()), 2);
    assert.equal(mine.merge(theirs.list()), 0, 'the same list again changes nothing');
    const here = mine.list();
    assert.deepEqual(here.map((e) => [e.id, e.key, e.status, e.seq]), theirs.list().map((e) => [e.id, e.key, e.status, e.seq]), 'the same entries under the same keys and numbers');
    assert.equal(mine.match(B, buf('m1 REG crashme'))?.key, p.key);
    assert.equal(mine.match(B, buf('m2 REG crashtoo')), undefined, 'released by the partner: released here');
    assert.equal(here.find((e) => e.status === 'released')?.releasedAt, '2026-12-05T10:02:00.000Z', 'the partner\'s release time');
    theirs.release(p.id, 'erin', '2026-12-05T10:03:00.000Z');
    assert.equal(mine.merge(theirs.list()), 1);
    assert.equal(mine.activeCount, 0);
    assert.equal(mine.list().find((e) => e.key === p.key)?.releasedBy, 'erin');
  });

  it('merge: entries without the partner\'s number (id 0) are numbered here from 1, oldest first', () => {
    const mine = new Quarantine(t.store(t.dir()));
    const theirs = new Quarantine(t.store(t.dir()));
    theirs.add(poison(1, A, 'n1 REG crash-a', '2026-12-05T10:00:00.000Z'));
    theirs.add(poison(2, B, 'n2 REG crash-b', '2026-12-05T10:05:00.000Z'));
    assert.equal(mine.merge(theirs.list().map((e) => ({ ...e, id: 0 }))), 2);
    assert.deepEqual(mine.list().map((e) => [e.id, e.seq]), [[2, 2], [1, 1]]);
  });

  it('merge: an entry whose number is taken here gets the next one', () => {
    const mine = new Quarantine(t.store(t.dir()));
    const theirs = new Quarantine(t.store(t.dir()));
    mine.add(poison(1, A, 'o1 REG crash-own'));
    theirs.add(poison(2, B, 't1 REG crash-theirs'));
    assert.equal(mine.merge(theirs.list()), 1);
    assert.equal(mine.match(A, buf('t1 REG crash-theirs'))?.id, 2);
    assert.equal(mine.activeCount, 2);
  });

  it('merge: a stale active entry from the partner does not undo a release here; one quarantined again after it does', () => {
    const mine = new Quarantine(t.store(t.dir()));
    const theirs = new Quarantine(t.store(t.dir()));
    theirs.add(poison(100, A, 'm1 REG crashme', '2026-12-05T10:00:00.000Z'));
    mine.merge(theirs.list());
    mine.release(1, 'alice', '2026-12-05T11:00:00.000Z');
    assert.equal(mine.merge(theirs.list()), 0, 'the partner has not heard of the release yet');
    assert.equal(mine.activeCount, 0);
    const stale = theirs.list()[0]!;
    assert.equal(mine.merge([{ ...stale, seq: 900, at: '2026-12-05T12:00:00.000Z' }]), 1, 'quarantined again on the partner after the release');
    assert.equal(mine.activeCount, 1);
    assert.equal(mine.get(1)?.seq, 900);
  });

  it('reads the request id as the guest does (PROTOCOL.md §3.1)', () => {
    const cases: Array<[string | Buffer, string]> = [
      ['r1 REG bob', 'r1'], ['r1', 'r1'], ['r1\n', 'r1'], ['r1\r\n', 'r1'], ['r1 REG bob\r\n', 'r1'],
      ['', ''], [' r1 REG bob', ''], ['\n', ''], ['r1\tREG bob', ''], ['r\x01 REG bob', ''], ['r\x7f REG', ''],
      [Buffer.from([0x72, 0xe9, 0x20, 0x41]), ''], ['1234567890abcdef REG x', '1234567890abcdef'], ['1234567890abcdefg REG x', ''],
      ['!~ STATS', '!~'], ['r1\r', ''], ['r1\n\n', ''],
    ];
    for (const [input, id] of cases) assert.equal(requestIdOf(Buffer.isBuffer(input) ? input : buf(input)), id, JSON.stringify(input.toString()));
  });

  it('an entry without a request id matches by its bytes only', () => {
    const q = new Quarantine(t.store(t.dir()));
    q.add(poison(1, A, ' REG crash'));
    assert.equal(q.match(A, buf(' REG other')), undefined);
    assert.equal(q.match(A, buf(' REG crash'))?.id, 1);
  });

  it('as JSON: the bytes as text when printable, always as base64', () => {
    const q = new Quarantine(t.store(t.dir()));
    const j = quarantineJson(q.add(poison(1, A, 'j1 REG crash')));
    assert.equal(j.payloadText, 'j1 REG crash');
    assert.equal(j.payloadBase64, buf('j1 REG crash').toString('base64'));
    assert.equal('payload' in j, false);
    const k = quarantineJson(q.add(poison(2, A, 'j2 REG crash\n')));
    assert.equal(k.payloadText, null);
  });
});

describe('quarantine control commands and the poison-input alarm', () => {
  let t: ReturnType<typeof scratch>;
  let store: Store;
  let q: Quarantine;
  let alarms: AlarmList;
  let released: QuarantineEntry[];
  let cmds: ReturnType<typeof quarantineCommands>;
  beforeEach(() => {
    t = scratch();
    store = t.store(t.dir());
    q = new Quarantine(store);
    alarms = new AlarmList(store, { board: 'sim-a' });
    released = [];
    cmds = quarantineCommands({ board: 'sim-a', quarantine: () => q, store, alarms, onReleased: (e) => released.push(e) });
  });
  afterEach(() => t.cleanup());

  const run = (name: string, args: Record<string, unknown>) => cmds[name]!(args) as Record<string, any>;

  it('reads the id as 7, "7" or "q7"; anything else is US_ERR_CONTROL naming the id', () => {
    assert.equal(parseQuarantineId('x', 7), 7);
    assert.equal(parseQuarantineId('x', '7'), 7);
    assert.equal(parseQuarantineId('x', 'q7'), 7);
    assert.equal(parseQuarantineId('x', 'Q12'), 12);
    for (const bad of [undefined, null, 'x', 'q', 'q-1', '7q', 0, -1, 1.5, 'q1.5', {}, [7], true, Number.NaN, 2 ** 60]) {
      for (const name of ['quarantine.show', 'quarantine.release']) {
        const e = codeOf(() => run(name, { id: bad }));
        assert.equal(e.code, 'US_ERR_CONTROL', `${name} ${JSON.stringify(bad)}`);
        assert.match(e.message, /\bid must be a quarantine number/);
        assert.match(e.message, new RegExp(`^${name.replace('.', '\\.')}:`));
        assert.equal(e.field, 'id');
      }
    }
    const bad = codeOf(() => run('quarantine.list', { active: 'yes' }));
    assert.equal(bad.code, 'US_ERR_CONTROL');
    assert.match(bad.message, /active must be true or false/);
    q.add(poison(1, A, 'b1 REG crash'));
    for (const by of ['', '   ', 'x'.repeat(65), 7, 'tab\there']) {
      const e = codeOf(() => run('quarantine.release', { id: 1, by }));
      assert.equal(e.code, 'US_ERR_CONTROL', JSON.stringify(by));
      assert.equal(e.field, 'by');
    }
    assert.equal(q.activeCount, 1, 'a refused release changes nothing');
  });

  it('lists (all, or the active ones), shows, and answers US_ERR_NOT_FOUND for an unknown entry', () => {
    q.add(poison(1, A, 'l1 REG crash1'));
    q.add(poison(2, B, 'l2 REG hang1'));
    q.release(1, 'alice');
    const all = run('quarantine.list', {});
    assert.equal(all.board, 'sim-a');
    assert.equal(all.active, 1);
    assert.deepEqual(all.entries.map((e: QuarantineJson) => e.id), [2, 1], 'newest first');
    assert.deepEqual(run('quarantine.list', { active: true }).entries.map((e: QuarantineJson) => e.id), [2]);
    const shown = run('quarantine.show', { id: 'q2' });
    assert.equal(shown.entry.payloadText, 'l2 REG hang1');
    assert.equal(shown.entry.requestId, 'l2');
    assert.equal(codeOf(() => run('quarantine.show', { id: 3 })).code, 'US_ERR_NOT_FOUND');
    assert.equal(codeOf(() => run('quarantine.release', { id: 'q3' })).code, 'US_ERR_NOT_FOUND');
  });

  it('on a board without a quarantine: an empty list; show and release are US_ERR_NOT_FOUND', () => {
    const none = quarantineCommands({ board: 'sim-x', quarantine: () => undefined, store });
    assert.deepEqual(none['quarantine.list']!({}), { board: 'sim-x', active: 0, entries: [] });
    for (const name of ['quarantine.show', 'quarantine.release']) {
      const e = codeOf(() => none[name]!({ id: 'q1' }));
      assert.equal(e.code, 'US_ERR_NOT_FOUND', name);
      assert.match(e.message, /q1/);
    }
    assert.equal(codeOf(() => none['quarantine.show']!({ id: 'zz' })).code, 'US_ERR_CONTROL', 'the arguments are checked first');
  });

  it('raises one alarm per quarantined input and clears each at its release: none active once none is in quarantine', () => {
    const guest = alarms.resource('guest');
    const e1 = q.add(poison(1234, A, 'r17 REG crash1'));
    const e2 = q.add(poison(1300, B, 'r90 REG hang2'));
    const c1 = raisePoisonAlarm(alarms, e1);
    assert.equal(c1?.kind, 'raise');
    assert.equal(c1?.alarm.resource, guest);
    assert.equal(c1?.alarm.perceivedSeverity, 'major');
    assert.equal(c1?.alarm.probableCause, 'softwareError');
    assert.equal(c1?.alarm.eventType, 'processingErrorAlarm');
    for (const part of ['q1', '1234', '192.0.2.10:40001', 'r17', 'primary crash, backup crash, restored crash']) assert.ok(c1!.alarm.alarmText.includes(part), `the text names ${part}: ${c1!.alarm.alarmText}`);
    assert.ok(c1!.alarm.alarmText.length <= 255, 'fits usAlarmText');
    assert.equal(raisePoisonAlarm(alarms, e1), undefined, 'raised once');
    assert.equal(raisePoisonAlarm(alarms, e2)?.kind, 'raise', 'a second input is a notification of its own');
    assert.equal(alarms.activeOf('poison-input').length, 2);

    const r1 = run('quarantine.release', { id: 'q1', by: 'alice' });
    assert.equal(r1.entry.status, 'released');
    assert.equal(r1.entry.releasedBy, 'alice');
    assert.equal(r1.active, 1);
    assert.deepEqual(alarms.activeOf('poison-input').map((a) => a.alarmTypeQualifier), ['q2'], 'q2 is still in quarantine');
    assert.deepEqual(released.map((e) => e.id), [1], 'onReleased heard it');
    const err = codeOf(() => run('quarantine.release', { id: 1 }));
    assert.equal(err.code, 'US_ERR_ROLE', 'released twice');
    assert.match(err.message, /already released/);
    assert.equal(released.length, 1, 'a refused release is not reported');

    run('quarantine.release', { id: 2 });
    assert.equal(alarms.activeOf('poison-input').length, 0, 'none active: no input in quarantine');
    assert.equal(q.get(2)?.releasedBy, 'operator', 'the default name');
    const journal = store.events({ kind: 'quarantine' });
    assert.equal(journal.length, 2);
    assert.match(journal[0]!.message, /^q1 released by alice: input seq 1234 from 192\.0\.2\.10:40001, request id r17/);
    assert.equal(journal[0]!.detail?.active, 1);
    assert.match(journal[1]!.message, /^q2 released by operator/);
    assert.match(journal[1]!.message, /0 still in quarantine/);
  });

  it('syncPoisonAlarms: raises what a power cut lost, clears what the partner released', () => {
    const e1 = q.add(poison(1, A, 's1 REG crash'));
    const e2 = q.add(poison(2, B, 's2 REG crash'));
    assert.equal(syncPoisonAlarms(alarms, q).length, 2);
    assert.equal(syncPoisonAlarms(alarms, q).length, 0, 'in line: nothing to do');
    q.release(e1.id, 'the partner');
    const changes = syncPoisonAlarms(alarms, q);
    assert.deepEqual(changes.map((c) => [c.kind, c.alarm.alarmTypeQualifier]), [['clear', 'q1']]);
    assert.ok(alarms.isActive('poison-input', alarms.resource('guest'), `q${e2.id}`));
  });
});

describe('understudy quarantine (CLI)', () => {
  const entry = (over: Partial<QuarantineJson> = {}): QuarantineJson => ({
    id: 7, seq: 1234, clientAddress: '192.0.2.10', clientPort: 40001, requestId: 'r17', at: '2026-12-05T10:00:02.000Z',
    failures: crashes, confirmation: 'the restored copy failed on seq 1234 replayed alone', status: 'active',
    releasedAt: null, releasedBy: null, answered: 3, key: 'k', payloadText: 'r17 REG crash1', payloadBase64: buf('r17 REG crash1').toString('base64'), ...over,
  });

  it('lists in a table: Q, SEQ, CLIENT, REQUEST (cut), FAILED, AT, STATUS, RETRIES', () => {
    const long = `r18 REG crash${'x'.repeat(60)}`;
    const out = formatQuarantineList({ board: 'sim-a', active: 1, entries: [
      entry(),
      entry({ id: 6, seq: 99, clientAddress: null, clientPort: null, requestId: 'r18', payloadText: long, payloadBase64: buf(long).toString('base64'), status: 'released', releasedBy: 'alice', releasedAt: 'x', answered: 0, failures: [crashes[0]!, { ...crashes[1]!, how: 'hang' }] }),
    ] });
    const lines = out.split('\n');
    assert.equal(lines[0], 'board sim-a: 1 input in quarantine');
    assert.match(lines[1]!, /^Q\s+SEQ\s+CLIENT\s+REQUEST\s+FAILED\s+AT\s+STATUS\s+RETRIES$/);
    assert.match(lines[2]!, /^q7\s+1234\s+192\.0\.2\.10:40001\s+r17 REG crash1\s+primary crash, backup crash, restored crash\s+2026-12-05T10:00:02\.000Z\s+active\s+3$/);
    assert.match(lines[3]!, /^q6\s+99\s+-\s+r18 REG crashx+…\s+primary crash, backup hang\s+\S+\s+released\s+0$/);
    assert.equal(/r18 REG crashx+…/.exec(lines[3]!)![0].length, REQUEST_COLUMN, 'the request is cut to the column');
    assert.equal(formatQuarantineList({ board: 'sim-b', active: 0, entries: [] }), 'board sim-b: no input in quarantine');
  });

  it('shows non-printable bytes escaped, and the whole entry', () => {
    const bytes = Buffer.concat([buf('r1 REG crash'), Buffer.from([0x00, 0x5c, 0xff, 0x0d, 0x0a])]);
    assert.equal(requestText({ payloadText: null, payloadBase64: bytes.toString('base64') }), 'r1 REG crash\\x00\\\\\\xff\\r\\n');
    const shown = formatQuarantineEntry(entry({ status: 'released', releasedAt: '2026-12-05T11:00:00.000Z', releasedBy: 'alice' }));
    assert.match(shown, /^q7: released, quarantined 2026-12-05T10:00:02\.000Z$/m);
    assert.match(shown, /request\s+r17 REG crash1 \(14 bytes\)/);
    assert.match(shown, /failed\s+primary on sim-a: crash \(guest exited\) at 2026-12-05T10:00:00\.000Z/);
    assert.match(shown, /^\s+backup on sim-b: crash \(watchdog\)/m);
    assert.match(shown, /3 answered "r17 ERR POISON q7"/);
    assert.match(shown, /released\s+2026-12-05T11:00:00\.000Z by alice/);
    assert.match(formatQuarantineEntry(entry()), /understudy quarantine release q7/);
  });

  it('end to end through a control socket: list, show, release --by, each also with --json', async function () {
    this.timeout(20000);
    const t = scratch();
    const dir = t.dir();
    const store = t.store(dir);
    const q = new Quarantine(store);
    const alarms = new AlarmList(store, { board: 'sim-a' });
    raisePoisonAlarm(alarms, q.add(poison(1234, A, 'r17 REG crash1')));
    const cmds = quarantineCommands({ board: 'sim-a', quarantine: () => q, store, alarms });
    const server = await serveControl(controlSocketPath({ storageDir: dir }), async (command, args) => {
      const run = Object.hasOwn(cmds, command) ? cmds[command] : undefined;
      if (!run) throw new UsError('US_ERR_CONTROL', `unknown command "${command}"`);
      return run(args);
    });
    const boardFile = join(dir, 'board.json');
    writeFileSync(boardFile, JSON.stringify({ storageDir: '.' }));
    const cli = async (...args: string[]): Promise<string> => {
      const p = new Command('understudy').option('--json').exitOverride();
      registerQuarantineCommands(p);
      let out = '';
      let err = '';
      const { write } = process.stdout;
      const errWrite = process.stderr.write;
      const { exit } = process;
      process.stdout.write = ((s: string) => { out += s; return true; }) as typeof process.stdout.write;
      process.stderr.write = ((s: string) => { err += s; return true; }) as typeof process.stderr.write;
      // A failing command exits the process (output.ts): here it fails the test with what it printed.
      process.exit = ((code?: number) => { throw new Error(`understudy ${args.join(' ')} exited ${code}: ${out}${err}`); }) as typeof process.exit;
      try {
        await p.parseAsync(['node', 'understudy', ...args, '--board', boardFile]);
      } finally {
        process.stdout.write = write;
        process.stderr.write = errWrite;
        process.exit = exit;
      }
      return out;
    };
    try {
      assert.match(await cli('quarantine', 'list'), /^q1\s+1234\s+192\.0\.2\.10:40001\s+r17 REG crash1\s+primary crash, backup crash, restored crash/m);
      const listed = JSON.parse(await cli('--json', 'quarantine', 'list', '--active'));
      assert.equal(listed.entries[0].payloadText, 'r17 REG crash1');
      assert.match(await cli('quarantine', 'show', 'q1'), /^q1: ACTIVE/);
      assert.equal(JSON.parse(await cli('--json', 'quarantine', 'show', '1')).entry.seq, 1234);
      assert.equal((await cli('quarantine', 'release', 'q1', '--by', 'alice')).trim(), 'q1 released by alice: a retry of it reaches the guest again; no input in quarantine any more');
      assert.equal(q.match(A, buf('r17 REG crash1')), undefined);
      assert.equal(alarms.activeOf('poison-input').length, 0);
      await assert.rejects(cli('quarantine', 'release', 'q1'), /exited 1: error US_ERR_ROLE: q1 was already released/);
      await assert.rejects(cli('quarantine', 'show', 'seven'), /exited 1: error US_ERR_CONTROL: quarantine\.show: id must be/);
      await assert.rejects(cli('--json', 'quarantine', 'show', 'q9'), /exited 1: \{\s+"error": \{\s+"code": "US_ERR_NOT_FOUND"/);
      assert.match(await cli('quarantine', 'list', '--active'), /^board sim-a: no input in quarantine\n$/);
    } finally {
      server.close();
      t.cleanup();
    }
  });
});

describe('understudy status: the poison line', () => {
  it('says how many inputs are in quarantine and what the last recovery skipped; nothing before any', async () => {
    const { formatReplication } = await import('../../src/cli/replication-commands.js');
    const base = { mode: 'primary', protected: true, lastSeq: 10, ackedSeq: 10, deliveredSeq: 10, lagInputs: 0, divergences: 0, failovers: 1, cloneInProgress: false };
    assert.doesNotMatch(formatReplication('PRIMARY', { ...base, poison: { quarantined: 0, recoveries: 0, lastRecovery: null } } as never), /poison/);
    const text = formatReplication('PRIMARY', { ...base, poison: { quarantined: 1, recoveries: 1, lastRecovery: { at: '2026-12-05T17:00:00.000Z', durationMs: 4066, restores: 2, replayed: 89, poison: [{ seq: 1023, how: 'crash' }] } } } as never);
    assert.match(text, /poison inputs: 1 in quarantine \(`quarantine list`\); recoveries from the checkpoint here: 1 \(last 2026-12-05T17:00:00\.000Z: 4066 ms, 2 restores, 89 inputs replayed, skipped input 1023 \(crash\)\)/);
  });
});
