/**
 * The migration helper (clone and checkpoint both use it) against a fake hypervisor on the fake QMP
 * server: the commands and parameters QEMU is given, the progress reported, the figures returned,
 * and the recovery of a source a failed migration left stopped.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeHypervisor } from '../../src/hw/hypervisor/fake.js';
import { migrate, migrateToFile, recoverFromMigration, type MigrationProgress } from '../../src/hw/hypervisor/migration.js';

describe('migrate() and recoverFromMigration()', () => {
  let dir: string;
  let hv: FakeHypervisor;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-migrate-'));
    hv = await FakeHypervisor.start(join(dir, 'qmp.sock'));
  });
  afterEach(async () => {
    if (hv.alive) await hv.exit();
    rmSync(dir, { recursive: true, force: true });
  });

  const MiB = 1048576;

  it('sets the capabilities and parameters, migrates to the URI, reports progress and QEMU\'s figures (KVM: a live copy)', async () => {
    hv.kvmEnabled = true;
    hv.script = { totalBytes: 64 * MiB, polls: 4, downtimeMs: 9 };
    const progress: MigrationProgress[] = [];
    let commandsAtStart: string[] = [];
    const r = await migrate(hv, {
      uri: 'unix:/run/relay.sock', pollMs: 5, errorPrefix: 'migration',
      onStart: () => { commandsAtStart = [...hv.commands]; },
      onProgress: (p) => progress.push(p),
    });
    assert.deepEqual(r, { downtimeMs: 9, live: true, snapshot: false, transferredBytes: 64 * MiB });
    assert.deepEqual(progress.map((p) => [p.transferredBytes / MiB, p.totalBytes / MiB]), [[16, 64], [32, 64], [48, 64], [64, 64]]);
    assert.deepEqual(commandsAtStart, ['migrate-set-capabilities', 'query-kvm', 'migrate-set-capabilities', 'migrate-set-parameters'], 'onStart comes once QEMU is set up, before the migration starts');
    assert.deepEqual(hv.commands, ['migrate-set-capabilities', 'query-kvm', 'migrate-set-capabilities', 'migrate-set-parameters', 'migrate', 'query-migrate', 'query-migrate', 'query-migrate', 'query-migrate']);
    assert.equal(hv.runStateAtMigrate, 'running', 'under KVM the guest runs during the copy');
    const args = (c: string) => hv.server.received.find((x) => x.execute === c)?.arguments;
    const caps = hv.server.received.filter((x) => x.execute === 'migrate-set-capabilities').map((x) => x.arguments);
    assert.deepEqual(caps, [{ capabilities: [{ capability: 'background-snapshot', state: false }] }, { capabilities: [{ capability: 'events', state: true }] }], 'a plain copy turns a snapshot left set by an earlier copy off');
    assert.deepEqual(args('migrate-set-parameters'), { 'downtime-limit': 20, 'max-bandwidth': 4 * 1024 ** 3 });
    assert.deepEqual(args('migrate'), { uri: 'unix:/run/relay.sock', blk: true });
    assert.equal(await hv.status(), 'postmigrate', 'the source is left stopped for the caller to resume');
  });

  it('under TCG the guest is stopped before the copy starts (a live TCG copy loses writes); the pause is measured from the stop', async () => {
    hv.kvmEnabled = false;
    hv.script = { totalBytes: 64 * MiB, polls: 3, downtimeMs: 9 };
    const r = await migrate(hv, { uri: 'exec:cat > /dev/null', pollMs: 20, errorPrefix: 'checkpoint migration' });
    assert.deepEqual(hv.commands.slice(0, 6), ['migrate-set-capabilities', 'query-kvm', 'migrate-set-capabilities', 'migrate-set-parameters', 'stop', 'migrate']);
    assert.equal(hv.runStateAtMigrate, 'paused', 'stopped before migrate');
    assert.equal(r.live, false);
    // Three polls 20 ms apart after the stop: QEMU's 9 ms (the last pass only) is not the guest's pause.
    assert.ok(r.downtimeMs !== null && r.downtimeMs >= 35, `pause measured from the stop: ${r.downtimeMs} ms`);
    assert.equal(await hv.status(), 'postmigrate');
  });

  it('a snapshot copy: the guest is never stopped, onResumed comes with the pause from QEMU\'s STOP and RESUME events, the source runs on after it', async () => {
    hv.kvmEnabled = false;
    hv.script = { totalBytes: 64 * MiB, polls: 4 };
    const resumed: Array<{ pauseMs: number; polls: number }> = [];
    const r = await migrate(hv, { uri: 'unix:/run/relay.sock', pollMs: 5, errorPrefix: 'migration', snapshot: { onResumed: (pauseMs) => resumed.push({ pauseMs, polls: hv.migration.polls }) } });
    assert.deepEqual(r, { downtimeMs: 0, live: true, snapshot: true, transferredBytes: 64 * MiB });
    assert.equal(resumed.length, 1, 'called once');
    assert.ok(resumed[0]!.polls < 4, 'called while the copy ran, not at its end');
    assert.equal(hv.runStateAtMigrate, 'running', 'no stop before the copy');
    assert.ok(!hv.commands.includes('stop') && !hv.commands.includes('query-kvm'));
    assert.deepEqual(hv.server.received.find((x) => x.execute === 'migrate-set-capabilities')?.arguments, { capabilities: [{ capability: 'background-snapshot', state: true }] });
    assert.deepEqual(hv.server.received.find((x) => x.execute === 'migrate')?.arguments, { uri: 'unix:/run/relay.sock', blk: false }, 'no block migration: it takes QEMU\'s big lock, which a device writing guest RAM may hold while it waits for the copy (deadlock)');
    assert.equal(await hv.status(), 'running', 'the source ran on: nothing to resume');
  });

  it('beforeMigrate runs once QEMU is set up and before a plain copy stops the guest (a clone\'s PING needs it running)', async () => {
    hv.kvmEnabled = false;
    hv.script = { totalBytes: 64 * MiB, polls: 2 };
    let seen: { commands: string[]; state: string } | undefined;
    await migrate(hv, { uri: 'unix:/run/relay.sock', pollMs: 5, errorPrefix: 'migration', beforeMigrate: async () => { seen = { commands: [...hv.commands], state: await hv.status() }; } });
    assert.deepEqual(seen?.commands, ['migrate-set-capabilities', 'query-kvm', 'migrate-set-capabilities', 'migrate-set-parameters']);
    assert.equal(seen?.state, 'running');
  });

  it('a snapshot copy under way is never cancelled by the recovery (QEMU 7.2 would leave the guest hung): it is waited out; a plain one is cancelled', async () => {
    hv.script = { totalBytes: 64 * MiB, polls: 5 };
    await hv.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'background-snapshot', state: true }] });
    await hv.qmp.execute('migrate', { uri: 'unix:/run/relay.sock' });
    await recoverFromMigration(hv, { cancelActive: true });
    assert.ok(!hv.commands.includes('migrate_cancel'), `no cancel: ${hv.commands.join(', ')}`);
    assert.equal(hv.migration.status, 'completed', 'left to complete');
    assert.equal(await hv.status(), 'running');
  });

  it('a snapshot copy that does not end within snapshotWaitMs is cancelled after all', async () => {
    hv.script = { totalBytes: 64 * MiB, polls: 1_000_000 };
    await hv.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'background-snapshot', state: true }] });
    await hv.qmp.execute('migrate', { uri: 'unix:/run/relay.sock' });
    await recoverFromMigration(hv, { cancelActive: true, snapshotWaitMs: 200 });
    assert.ok(hv.commands.includes('migrate_cancel'));
    assert.equal(hv.migration.status, 'cancelled');
  });

  it('a snapshot copy reports QEMU\'s setup (from the migrate command to its STOP event) with the pause', async () => {
    hv.script = { totalBytes: 64 * MiB, polls: 40, setupMs: 60 };
    let got: { pauseMs: number; setupMs: number | null } | undefined;
    await migrate(hv, { uri: 'unix:/run/relay.sock', pollMs: 5, errorPrefix: 'migration', snapshot: { onResumed: (pauseMs, setupMs) => { got = { pauseMs, setupMs }; } } });
    assert.equal(got?.pauseMs, 2, 'from the events\' own timestamps');
    assert.ok(got.setupMs !== null && got.setupMs >= 55, `setup measured from the migrate command: ${got.setupMs} ms`);
  });

  it('a snapshot copy QEMU refuses falls back to the plain copy (stopped under TCG); onResumed never comes', async () => {
    hv.kvmEnabled = false;
    hv.script = { totalBytes: 64 * MiB, polls: 3, noSnapshot: true };
    let called = 0;
    const r = await migrate(hv, { uri: 'unix:/run/relay.sock', pollMs: 5, errorPrefix: 'migration', snapshot: { onResumed: () => { called++; } } });
    assert.equal(r.snapshot, false);
    assert.equal(r.live, false);
    assert.equal(hv.runStateAtMigrate, 'paused');
    assert.equal(called, 0);
    assert.equal(await hv.status(), 'postmigrate');
  });

  it('an explicit live option overrides the accelerator\'s choice (query-kvm not asked)', async () => {
    const r = await migrate(hv, { uri: 'exec:cat > /dev/null', pollMs: 5, errorPrefix: 'migration', live: true });
    assert.equal(r.live, true);
    assert.ok(!hv.commands.includes('query-kvm') && !hv.commands.includes('stop'));
  });

  it('a failed migration rejects with the caller\'s prefix; the recovery cancels and resumes the stopped source', async () => {
    hv.script = { failAtPoll: 2, errorDesc: 'Unable to write to socket: Broken pipe', stateAfterFailure: 'postmigrate' };
    await assert.rejects(migrate(hv, { uri: 'unix:/run/checkpoint-out.sock', pollMs: 5, errorPrefix: 'checkpoint migration' }), (e: { code: string; message: string }) => {
      assert.equal(e.code, 'US_ERR_HYPERVISOR');
      assert.equal(e.message, 'checkpoint migration failed: Unable to write to socket: Broken pipe');
      return true;
    });
    const before = hv.commands.length;
    await recoverFromMigration(hv, { cancelActive: true });
    assert.deepEqual(hv.commands.slice(before), ['query-migrate', 'migrate_cancel', 'query-status', 'cont'], 'a plain copy\'s failure: asked whether a snapshot copy runs, then cancelled');
    assert.equal(await hv.status(), 'running');
  });

  it('without cancelActive the recovery only resumes a stopped source; a running one is left alone', async () => {
    hv.runState = 'paused';
    await recoverFromMigration(hv, { cancelActive: false });
    assert.deepEqual(hv.commands, ['query-status', 'cont']);
    await recoverFromMigration(hv, { cancelActive: false });
    assert.deepEqual(hv.commands, ['query-status', 'cont', 'query-status'], 'running: no cont');
  });

  it('cancelActive stops a migration still running (a failure around it, not in it)', async () => {
    hv.script = { polls: 1000 };
    await hv.qmp.execute('migrate', { uri: 'unix:/run/relay.sock' });
    await recoverFromMigration(hv, { cancelActive: true });
    assert.equal(hv.migration.status, 'cancelled');
    assert.equal(await hv.status(), 'running');
  });

  it('a cancelled migration is reported as such; an exited hypervisor is not recovered and nothing throws', async () => {
    hv.script = { polls: 1000 };
    const run = migrate(hv, { uri: 'unix:/run/relay.sock', pollMs: 5, errorPrefix: 'migration' });
    await new Promise((r) => setTimeout(r, 20));
    await hv.qmp.execute('migrate_cancel');
    await assert.rejects(run, { code: 'US_ERR_HYPERVISOR', message: 'migration cancelled: ' });
    await hv.exit();
    await recoverFromMigration(hv, { cancelActive: true });
  });

  /** The fake QEMU's `migrate` also writes `stream` to the unix socket its URI names, as QEMU does. */
  const streamOnMigrate = (stream: Buffer) => {
    const orig = hv.server.handlers.get('migrate')!;
    hv.server.handlers.set('migrate', (args) => {
      const r = orig(args);
      const path = String(args?.uri).replace(/^unix:/, '');
      const c = connect(path, () => c.end(stream));
      c.on('error', () => undefined);
      return r;
    });
  };

  it('migrateToFile: no shell; QEMU streams to a socket this process listens on and the file holds every byte', async () => {
    const stream = randomBytes(3 * 1048576 + 17);
    streamOnMigrate(stream);
    hv.kvmEnabled = true; // a live copy: the pause is QEMU's figure
    hv.script = { polls: 3, downtimeMs: 7 };
    const file = join(dir, 'checkpoint.img.tmp');
    const sock = join(dir, 'checkpoint-out.sock');
    const r = await migrateToFile(hv, file, sock, { pollMs: 5, errorPrefix: 'checkpoint migration' });
    assert.equal(r.downtimeMs, 7);
    assert.equal(hv.migration.uri, `unix:${sock}`, 'QEMU is given a unix: URI, never exec:');
    assert.ok(readFileSync(file).equals(stream), 'the file is the stream, byte for byte');
    assert.equal(existsSync(sock), false, 'the socket is removed');
  });

  it('migrateToFile refuses to overwrite an existing file and rejects a failed migration, leaving no socket', async () => {
    const file = join(dir, 'exists.img');
    writeFileSync(file, 'old');
    streamOnMigrate(Buffer.from('new stream'));
    const sock = join(dir, 'out.sock');
    await assert.rejects(migrateToFile(hv, file, sock, { pollMs: 5, errorPrefix: 'checkpoint migration' }), /EEXIST/);
    assert.equal(readFileSync(file, 'utf8'), 'old');
    assert.equal(existsSync(sock), false);
    await recoverFromMigration(hv, { cancelActive: true });
    hv.script = { failAtPoll: 1, errorDesc: 'Broken pipe' };
    await assert.rejects(migrateToFile(hv, join(dir, 'f2'), sock, { pollMs: 5, errorPrefix: 'checkpoint migration' }), /checkpoint migration failed: Broken pipe/);
    assert.equal(existsSync(sock), false);
  });

});
