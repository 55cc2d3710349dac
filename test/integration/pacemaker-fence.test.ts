/**
 * Pacemaker fences a board of the simulated chassis through the fence agent fence_understudy_chassis
 * (issue 18), as root with the real Debian corosync, pacemaker, pcs and fence-agents library: three
 * boards (`chassis up --boards 3 --manager pacemaker --stonith`), the checkout's agent bound over the
 * installed one in every board's namespaces, one stonith device on the chassis' power controller
 * configured by `chassis up --stonith` (as `pcs stonith create` would; pcs reads it back), fencing enabled. `stonith_admin --reboot sim-c` on sim-a power-cycles
 * sim-c through the power controller (OFF, then ON) and sim-c rejoins; with the power controller
 * broken the same request fails, Pacemaker says so, and sim-c is untouched.
 *
 * One chassis for the whole file, its own name and run directory (test/integration/pacemaker.test.ts
 * uses pm18). The waits are bounds on convergence, never assertions on speed.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { BoardView } from '../../src/sim/chassis/chassisd.js';
import { FENCE_AGENT, FENCE_DEVICE_ID, INSTALLED_FENCE_AGENT } from '../../src/sim/chassis/pacemaker.js';
import { Chassis } from '../../src/sim/chassis/rig.js';
import { eventually } from '../support/eventually.js';
import { ClusterTools, pacemakerChassisForTheFile } from '../support/pacemaker.js';

const NAME = 'pmfence';
const RUN_DIR = '/tmp/us-pmfence';
const BOARDS = ['sim-a', 'sim-b', 'sim-c'] as const;
const DEVICE = FENCE_DEVICE_ID;

const tools = new ClusterTools(NAME, RUN_DIR);
const crm = (board: string, argv: string[], timeoutMs?: number) => tools.crm(board, argv, timeoutMs);
const online = (board: string) => tools.online(board);

/** Pacemaker's fencing history for a node (asked on sim-a), newest first: action, status and who carried it out. */
async function fenceHistory(board: string): Promise<Array<{ action: string; target: string; status: string; delegate?: string; completed: string; raw: string }>> {
  // --verbose: every recorded operation, not only the last successful one.
  const r = await crm('sim-a', ['stonith_admin', '--history', board, '--verbose', '--output-as=xml']);
  assert.equal(r.code, 0, `stonith_admin --history: ${r.out}`);
  return [...r.out.matchAll(/<fence_event [^>]*>/g)].map((m) => {
    const attr = (n: string) => new RegExp(`\\b${n}="([^"]*)"`).exec(m[0])?.[1];
    return { action: attr('action') ?? '', target: attr('target') ?? '', status: attr('status') ?? '', delegate: attr('delegate'), completed: attr('completed') ?? '', raw: m[0] };
  }).sort((x, y) => when(y) - when(x));
}

/** When a fence event completed (a pending one, with no completion time, counts as the newest). */
function when(e: { completed: string }): number {
  const t = Date.parse(e.completed);
  return Number.isNaN(t) ? Number.MAX_SAFE_INTEGER : t;
}

describe('Pacemaker fences a board of the simulated chassis through fence_understudy_chassis (3 boards; real corosync, pacemaker, fence agent)', function () {
  this.timeout(120000);
  let chassis: Chassis | undefined;
  const socket = join(RUN_DIR, 'power.sock');

  const boardsNow = async (): Promise<Record<string, BoardView>> => Object.fromEntries((await chassis!.status()).boards.map((b) => [b.board, b]));

  // Up with the fence device, then the power controller broken: the pair's own HA must not reset a
  // board under a test; the tests that fence fix it first.
  pacemakerChassisForTheFile(NAME, RUN_DIR, (c) => { chassis = c; }, () => chassis, { stonith: true });

  it('every board\'s cluster runs the checkout\'s agent (bound over the installed one) and Pacemaker reads its metadata', async () => {
    const want = createHash('sha256').update(readFileSync(FENCE_AGENT)).digest('hex');
    for (const b of BOARDS) {
      const mounted = await crm(b, ['findmnt', '-n', '-o', 'TARGET', INSTALLED_FENCE_AGENT]);
      assert.equal(mounted.code, 0, `${b}: ${INSTALLED_FENCE_AGENT} is a bind mount in the board's namespace (installed by image-build/setup.sh?): ${mounted.out}`);
      const sum = await crm(b, ['sha256sum', INSTALLED_FENCE_AGENT]);
      assert.equal(sum.out.split(/\s+/)[0], want, `${b} sees the checkout's agent`);
    }
    const meta = await crm('sim-b', ['stonith_admin', '--metadata', '--agent', 'fence_understudy_chassis']);
    assert.equal(meta.code, 0, meta.out);
    assert.match(meta.out, /<resource-agent name="fence_understudy_chassis"/);
    assert.match(meta.out, /<parameter name="socket"/);
    const installed = await crm('sim-c', ['stonith_admin', '--list-installed']);
    assert.match(installed.out, /^\s*fence_understudy_chassis$/m);
  });

  it('chassis up --stonith configured the device on the power controller and stonith-enabled=true: pcs shows it, it starts, and Pacemaker finds it can fence every board', async function () {
    this.timeout(180000);
    const shown = await crm('sim-a', ['pcs', 'stonith', 'config', DEVICE], 120000);
    assert.equal(shown.code, 0, `pcs stonith config: ${shown.out}`);
    assert.match(shown.out, /fence_understudy_chassis/);
    assert.match(shown.out, new RegExp(`socket=${socket.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}`), shown.out);
    assert.match(shown.out, /pcmk_host_list="?sim-a sim-b sim-c/, shown.out);
    const started = await eventually(`${DEVICE} started`, async () => {
      const r = await crm('sim-b', ['crm_mon', '-1', '--output-as=xml']);
      const m = new RegExp(`<resource id="${DEVICE}" resource_agent="stonith:fence_understudy_chassis" role="Started" active="true"[^>]*>\\s*<node name="([^"]+)"`).exec(r.out);
      return m ? { node: m[1]!, failures: /<failure /.test(r.out) } : undefined;
    }, 120000, 1000);
    assert.ok((BOARDS as readonly string[]).includes(started.node));
    assert.equal(started.failures, false, 'its start and monitor did not fail');
    for (const b of BOARDS) {
      const can = await eventually(`Pacemaker lists ${DEVICE} as able to fence ${b}`, async () => {
        const r = await crm('sim-c', ['stonith_admin', '--list', b]);
        return r.code === 0 && r.out.includes(DEVICE) ? r.out : undefined;
      }, 30000, 1000);
      assert.match(can, new RegExp(DEVICE));
    }
    const property = await crm('sim-c', ['crm_attribute', '--type', 'crm_config', '--name', 'stonith-enabled', '--query', '--quiet']);
    assert.equal(property.out.trim(), 'true');
  });

  it('stonith_admin --reboot sim-c on sim-a: the power controller powers sim-c off and on, only sim-c; Pacemaker records the fence done; sim-c\'s new daemons rejoin', async function () {
    this.timeout(300000);
    await chassis!.powerController('fix');
    const before = await boardsNow();
    const unshareBefore = chassis!.recorded()!.boards['sim-c']?.pacemaker?.pid;
    assert.ok(unshareBefore, 'sim-c\'s daemons are recorded');
    const requestsBefore = (await chassis!.status()).powerController.requests;
    const r = await crm('sim-a', ['stonith_admin', '--reboot', 'sim-c', '--timeout', '120'], 180000);
    assert.equal(r.code, 0, `stonith_admin --reboot sim-c: ${r.out}`);
    const st = await chassis!.status();
    const after = Object.fromEntries(st.boards.map((b) => [b.board, b]));
    // The fence went through the power controller: an OFF answered once sim-c was down, then an ON.
    const seen = st.powerController.recent.map((x) => `${x.request} → ${x.reply}`);
    const off = seen.indexOf('OFF sim-c → OK OFF sim-c');
    assert.ok(off >= 0, `the power controller powered sim-c off: ${seen.join('; ')}`);
    assert.ok(seen.indexOf('ON sim-c → OK ON sim-c', off) > off, `then on again: ${seen.join('; ')}`);
    assert.ok(st.powerController.requests > requestsBefore);
    assert.ok(after['sim-c']!.boots > before['sim-c']!.boots, 'sim-c booted again');
    assert.ok(after['sim-c']!.resets.count > before['sim-c']!.resets.count);
    assert.equal(after['sim-c']!.resets.last?.cause, 'fence');
    assert.equal(after['sim-c']!.power, 'on');
    for (const b of ['sim-a', 'sim-b']) assert.equal(after[b]!.boots, before[b]!.boots, `${b} was not touched`);
    const unshareAfter = await eventually('sim-c\'s new daemons recorded', () => {
      const pid = chassis!.recorded()!.boards['sim-c']?.pacemaker?.pid;
      return pid && pid !== unshareBefore ? pid : undefined;
    }, 10000, 100);
    assert.notEqual(unshareAfter, unshareBefore, 'new corosync and pacemaker at the new boot');
    // Pacemaker's own record: the reboot of sim-c done, by another node than sim-c.
    const history = await fenceHistory('sim-c');
    const done = history.find((h) => h.action === 'reboot' && h.target === 'sim-c');
    assert.ok(done, `a reboot of sim-c in the history: ${history.map((h) => h.raw).join(' ')}`);
    assert.equal(done.status, 'success', done.raw);
    assert.notEqual(done.delegate, 'sim-c', 'a board does not fence itself');
    const back = await eventually('sim-c online again on sim-a\'s crm_mon', async () => {
      const o = await online('sim-a');
      return o.length === 3 ? o : undefined;
    }, 150000, 1000);
    assert.deepEqual(back, BOARDS);
    // sim-c's own view follows the DC's join a moment later (its CIB copy shows itself pending until then).
    let last = '';
    const human = await eventually('sim-a, sim-b and sim-c online on sim-c\'s own crm_mon', async () => {
      last = (await crm('sim-c', ['crm_mon', '-1'])).out;
      return /Online: \[ sim-a sim-b sim-c \]/.test(last) ? last : undefined;
    }, 60000, 1000).catch((e: Error) => { throw new Error(`${e.message}; its last view: ${last}`); });
    assert.doesNotMatch(human, /UNCLEAN/, human);
    // sim-c's new Pacemaker stays up: it did not take the record of its own fence for a fence it survived.
    const log = readFileSync(join(RUN_DIR, 'sim-c', 'pacemaker', 'namespace.log'), 'utf8');
    assert.match(log, /corosync starts in \d+ s \(a blade's boot time/, 'the rebooted board waited before it rejoined');
    const pcmkLog = readFileSync(join(RUN_DIR, 'sim-c', 'pacemaker', 'log-pacemaker', 'pacemaker.log'), 'utf8');
    assert.doesNotMatch(pcmkLog, /We were allegedly just fenced/);
  });

  it('with the power controller broken, stonith_admin --reboot sim-c fails, Pacemaker records the fence failed and sim-c is untouched; fixed, the controller fences again', async function () {
    this.timeout(240000);
    await chassis!.powerController('break');
    const before = await boardsNow();
    const r = await crm('sim-a', ['stonith_admin', '--reboot', 'sim-c', '--timeout', '60'], 120000);
    assert.notEqual(r.code, 0, `stonith_admin reports the failure: ${r.out}`);
    const st = await chassis!.status();
    const seen = st.powerController.recent.map((x) => `${x.request} → ${x.reply}`);
    assert.ok(seen.includes('OFF sim-c → ERR BROKEN'), `the agent asked and was refused: ${seen.join('; ')}`);
    const after = Object.fromEntries(st.boards.map((b) => [b.board, b]));
    for (const b of BOARDS) assert.equal(after[b]!.boots, before[b]!.boots, `${b} was not touched`);
    assert.equal(after['sim-c']!.power, 'on');
    const history = await fenceHistory('sim-c');
    assert.equal(history[0]?.status, 'failed', `the newest fence of sim-c failed: ${history.map((h) => h.raw).join(' ')}`);
    assert.equal(history[0]?.action, 'reboot');
    const human = await crm('sim-b', ['crm_mon', '-1']);
    assert.match(human.out, /Failed Fencing Actions:\s*\n\s*\* reboot of sim-c [^\n]*failed/, human.out);
    assert.deepEqual(await online('sim-b'), BOARDS, 'sim-c stays in the cluster');
    await chassis!.powerController('fix');
    // Fixed, the device fences again (an off-and-on by hand, through the agent on sim-b's node).
    const fixedBefore = (await boardsNow())['sim-c']!.boots;
    const again = await crm('sim-b', ['stonith_admin', '--reboot', 'sim-c', '--timeout', '120'], 180000);
    assert.equal(again.code, 0, again.out);
    assert.ok((await boardsNow())['sim-c']!.boots > fixedBefore);
    assert.equal((await fenceHistory('sim-c'))[0]?.status, 'success');
    assert.deepEqual(await eventually('sim-c back once more', async () => {
      const o = await online('sim-a');
      return o.length === 3 ? o : undefined;
    }, 150000, 1000), BOARDS);
  });
});
