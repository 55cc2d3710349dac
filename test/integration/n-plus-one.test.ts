/**
 * N+1 re-protection by hand, without a cluster manager (issue 18, deliverable 3; the operator's
 * path that Pacemaker's agent automates): three boards, the pair sim-a/sim-b serving the reference
 * guest under QEMU, sim-c a spare. The backup's board loses power; the primary serves alone; the
 * spare is started as its backup (`guest start` with the chassis' with-sim-a.json profile) and the
 * primary adopts it (`understudy partner adopt sim-c`); it is cloned to and protects the pair. Then
 * the primary's board loses power: the spare takes over, nothing acknowledged lost throughout.
 *
 * One chassis for the file. Waits are bounds on convergence, never assertions on speed.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CLI_ENTRY, PACKAGE_ROOT, RUN_MARKER, plinkAddress } from '../../src/sim/chassis/layout.js';
import { pairingProfileFile } from '../../src/sim/chassis/profiles.js';
import { gapAround, waitProtectedAny } from '../../src/sim/pair.js';
import { eventually } from '../support/eventually.js';
import { PairUnderTest } from '../support/pair.js';

const run = promisify(execFile);
const NAME = 'np1';
const GUEST = join(PACKAGE_ROOT, 'guests', 'dx-legacy.json');

describe('N+1 by hand: a spare becomes the surviving primary\'s backup (3 boards, real QEMU; no cluster manager)', function () {
  this.timeout(300000);
  const p = new PairUnderTest(NAME, { boards: 3 });
  /** Controllers this file started on the spare (not the board's own): ended by pid at the end. */
  const started: number[] = [];

  /** The CLI as an operator runs it, on `board`'s network namespace; JSON out, or the error JSON and the exit code. */
  async function cli(board: 'sim-a' | 'sim-b' | 'sim-c', args: string[], timeoutMs = 120000): Promise<{ code: number; json: any; out: string }> {
    const L = p.chassis.layout;
    try {
      const r = await run('ip', ['netns', 'exec', L.boards[board].netns, process.execPath, CLI_ENTRY, ...args, '--json'],
        { timeout: timeoutMs, env: { ...process.env, [RUN_MARKER]: L.runDir } });
      return { code: 0, json: JSON.parse(r.stdout), out: r.stdout };
    } catch (e) {
      const x = e as { code?: number; stdout?: string; stderr?: string };
      let json: any;
      try { json = JSON.parse(x.stdout ?? ''); } catch { json = undefined; }
      return { code: typeof x.code === 'number' ? x.code : -1, json, out: `${x.stdout ?? ''}${x.stderr ?? ''}` };
    }
  }

  before(async function () {
    this.timeout(420000);
    await p.up();
  });

  after(async function () {
    this.timeout(120000);
    for (const pid of started) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    await p.down();
  });

  it('a primary refuses to adopt another partner while its own is heard; the refusal names the partner and changes nothing', async () => {
    const L = p.chassis.layout;
    const { primary, backup } = await waitProtectedAny(L, 240000);
    assert.deepEqual([primary, backup], ['sim-a', 'sim-b']);
    const r = await cli('sim-a', ['partner', 'adopt', 'sim-c', '--address', plinkAddress('sim-c'), '--board', L.boards['sim-a'].profile]);
    assert.notEqual(r.code, 0, r.out);
    assert.equal(r.json?.error?.code, 'US_ERR_ROLE', r.out);
    assert.match(r.json.error.message, /partner sim-b is heard \(BACKUP\)/);
    const bad = await cli('sim-a', ['partner', 'adopt', 'sim-c', '--address', 'not-an-address', '--board', L.boards['sim-a'].profile]);
    assert.match(bad.json?.error?.message ?? bad.out, /address: expected the partner's IPv4 address/);
    assert.equal((await waitProtectedAny(L, 10000)).backup, 'sim-b', 'still protected by sim-b');
  });

  it('the backup\'s board loses power; the spare is started as the primary\'s backup and adopted: cloned to, protected, nothing acknowledged lost', async function () {
    this.timeout(600000);
    const L = p.chassis.layout;
    let adopted: any;
    await p.loadThrough(40000, 3000, async () => {
      await p.chassis.fail('sim-b', 'power');
      await eventually('sim-a serving alone', async () => {
        const st = await p.ctl('sim-a', 'status');
        return st.role === 'PRIMARY' && st.replication?.protected === false ? st : undefined;
      }, 60000, 200);
      // The spare's idle controller makes way for one with the pairing profile and the guest.
      const stop = await cli('sim-c', ['guest', 'stop', '--board', L.boards['sim-c'].profile]);
      assert.equal(stop.code, 0, stop.out);
      const start = await cli('sim-c', ['guest', 'start', '--board', pairingProfileFile(L, 'sim-c', 'sim-a'), '--guest', GUEST]);
      assert.equal(start.code, 0, start.out);
      started.push(start.json.pid as number);
      const a = await cli('sim-a', ['partner', 'adopt', 'sim-c', '--address', plinkAddress('sim-c'), '--board', L.boards['sim-a'].profile]);
      assert.equal(a.code, 0, a.out);
      adopted = a.json;
      const pair = await waitProtectedAny(L, 240000);
      assert.deepEqual(pair, { primary: 'sim-a', backup: 'sim-c' });
    });
    assert.deepEqual(adopted, { board: 'sim-a', partner: 'sim-c', address: '198.51.100.3', previous: 'sim-b', linksClosed: ['serial'] });
    const role = await p.ctl('sim-a', 'role');
    assert.equal(role.partner.heartbeat.sender, 'sim-c');
    assert.deepEqual(role.links.map((l: { name: string }) => l.name), ['ethernet'], 'the serial link to sim-b is closed');
    const ev = await p.ctl('sim-a', 'events', { kind: 'partner', limit: 50 });
    assert.ok(ev.events.some((e: { message: string }) => /partner is now sim-c \(198\.51\.100\.3\), replacing sim-b/.test(e.message)), 'journaled');
    const c = await p.ctl('sim-c', 'status');
    assert.equal(c.role, 'BACKUP');
    assert.equal(c.partner.heartbeat.sender, 'sim-a');
  });

  it('the primary\'s board loses power: the spare, now the backup, takes over; nothing acknowledged lost', async function () {
    this.timeout(600000);
    const L = p.chassis.layout;
    const { res, faultAt } = await p.loadThrough(30000, 3000, () => p.chassis.fail('sim-a', 'power'));
    const gap = gapAround(res.gaps, faultAt);
    console.log(`      fault → first good reply: ${gap ? `${gap.afterFaultMs} ms` : 'no gap seen'}; ${res.acked} answered`);
    const st = await p.ctl('sim-c', 'status');
    assert.equal(st.role, 'PRIMARY');
    const pidFile = join(L.boards['sim-c'].storageDir, 'understudyd.pid');
    assert.ok(existsSync(pidFile) && started.includes(Number.parseInt(readFileSync(pidFile, 'utf8'), 10)), 'the spare\'s controller is the one started with the pairing profile');
  });
});
