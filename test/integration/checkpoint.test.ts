/**
 * Checkpoints and the double failure, on the simulated chassis with real QEMU: a checkpoint taken on
 * the backup, more inputs logged after it, then both guests lost at once (the backup's QEMU killed
 * and the primary board powered off): the surviving controller restores the checkpoint, replays the
 * log and serves, with every acknowledged registration back.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { callControl } from '../../src/mgmt/ipc.js';
import { Chassis } from '../../src/sim/chassis/rig.js';
import { CLI_ENTRY, SERVICE_CLIENT_ADDRESS, SERVICE_PORT, SERVICE_VIP, partnerOf } from '../../src/sim/chassis/layout.js';
import { startLoad } from '../../src/sim/pair.js';
import { PairUnderTest } from '../support/pair.js';

const run = promisify(execFile);
const NAME = `cp${process.pid % 1000}`;

describe('checkpoints and a double failure (real QEMU)', function () {
  this.timeout(600000);
  const p = new PairUnderTest(NAME);
  let chassis: Chassis;
  before(async () => {
    await p.up();
    chassis = p.chassis;
  });
  after(() => p.down());

  async function check(tag: string, count: number): Promise<string[]> {
    const { stdout } = await run('ip', ['netns', 'exec', chassis.layout.serviceNetns, process.execPath, CLI_ENTRY, 'load',
      '--target', `${SERVICE_VIP}:${SERVICE_PORT}`, '--bind', SERVICE_CLIENT_ADDRESS, '--tag', `${tag}q`, '--retry', '50', '--check', `${tag}:${count}`],
    { timeout: 300000 }).catch((e: { stdout?: string }) => ({ stdout: e.stdout ?? '' }));
    const line = stdout.trim().split('\n').pop() ?? '';
    return (JSON.parse(line) as { check: { missing: string[] } }).check.missing;
  }

  it('restores the checkpoint and replays the log when both guests are lost', async () => {
    const primary = p.primary;
    const backup = partnerOf(primary);
    // A mix sparse in registrations (the guest holds 4096 subscribers and never forgets one): no
    // load here may reach that limit (ERR FULL would replace the service's work with an error path).
    const stats0 = await p.stats();
    const a = await startLoad(chassis.layout, { rate: 150, durationMs: 4000, tag: 'CA', retryMs: 20, regEvery: 10 }).result;
    const cp = (await callControl(chassis.layout.boards[backup].controlSocket, 'checkpoint', {}, 180000)) as { checkpoint: { seq: number; pauseMs: number | null } };
    assert.ok(cp.checkpoint.seq > 0, 'checkpoint holds inputs');
    const b = await startLoad(chassis.layout, { rate: 150, durationMs: 4000, tag: 'CB', retryMs: 20, regEvery: 10 }).result;
    // Then as fast as the pair takes them: more logged inputs than the guest's socket can buffer, so
    // the replay must be paced to the guest (handed over at once, most of them were dropped).
    // The pair's rate depends on the machine (AUTH round trips under TCG): bursts of 10 s, at most 6, until the log holds enough.
    const bursts: Array<{ tag: string; registered: number; calls: number; limitReplies: number }> = [];
    let logged = 0;
    for (let i = 0; i < 6 && logged <= 10000; i++) {
      const c = await startLoad(chassis.layout, { rate: 0, durationMs: 10000, tag: `CC${i}x`, retryMs: 200, window: 16, regEvery: 10 }).result;
      bursts.push({ tag: `CC${i}x`, registered: c.registered, calls: c.calls, limitReplies: c.limitReplies });
      const st = (await callControl(chassis.layout.boards[backup].controlSocket, 'replication.status')) as any;
      logged = st.replication.checkpoint.inputsLoggedSince as number;
    }
    assert.ok(logged > 10000, `more inputs logged after the checkpoint than the guest buffers (${logged} after ${bursts.length} bursts)`);
    // Both guests lost at once.
    const qemu = Number(readFileSync(`${chassis.layout.boards[backup].storageDir}/qemu.pid`, 'utf8'));
    process.kill(qemu, 'SIGKILL');
    await chassis.fail(primary, 'power');
    // The survivor restores and serves.
    const end = Date.now() + 180000;
    let role = '';
    for (let i = 0; i < 1000 && Date.now() < end; i++) {
      const s = (await callControl(chassis.layout.boards[backup].controlSocket, 'status').catch(() => undefined)) as any;
      role = s?.role ?? '';
      if (role === 'PRIMARY' && s?.guest?.state === 'running' && s?.serving) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal(role, 'PRIMARY');
    const journal = ((await callControl(chassis.layout.boards[backup].controlSocket, 'events', { kind: 'checkpoint', limit: 10 })) as any).events as Array<{ message: string }>;
    assert.ok(journal.some((e) => /restored the checkpoint at input \d+ and replayed \d+ logged inputs/.test(e.message)), journal.map((e) => e.message).join('\n'));
    // The restored guest processes exactly what it was handed (its count equals the controller's).
    let recovered: { message: string } | undefined;
    for (let i = 0; i < 600 && !recovered && Date.now() < end + 120000; i++) {
      const ev = ((await callControl(chassis.layout.boards[backup].controlSocket, 'events', { kind: 'checkpoint', limit: 10 })) as any).events as Array<{ message: string }>;
      recovered = ev.find((e) => /the restored guest has processed the \d+ replayed inputs/.test(e.message));
      if (!recovered) await new Promise((r) => setTimeout(r, 500));
    }
    assert.ok(recovered, 'the restored guest caught up with every replayed input');
    assert.deepEqual(await check('CA', a.registered), [], 'registrations before the checkpoint');
    assert.deepEqual(await check('CB', b.registered), [], 'registrations logged after the checkpoint');
    for (const c of bursts) assert.deepEqual(await check(c.tag, c.registered), [], `registrations of burst ${c.tag} logged after the checkpoint`);
    assert.deepEqual([a, b, ...bursts].map((l) => l.limitReplies), [a, b, ...bursts].map(() => 0), 'no load reached a guest limit (ERR FULL)');
    // Every call set up before the double failure is in the restored state (total counts them).
    const calls = [a, b, ...bursts].reduce((n, l) => n + l.calls, 0);
    const stats1 = await p.stats();
    assert.ok(stats1.total >= stats0.total + calls, `calls lost in the restore: before ${stats0.reply}, after ${stats1.reply}, ${calls} calls acknowledged`);
  });
});
