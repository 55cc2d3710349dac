/**
 * The fence agent board/fence/fence_understudy_chassis (Python, on Debian's fence-agents library as
 * installed by image-build/setup.sh), run as Pacemaker runs it, against the chassis' real power
 * controller (PowerController, the same server chassisd runs) on a socket in a temporary folder,
 * with stand-in boards behind it: status answers 0 for a board that is on and 2 for one that is off
 * (fence-agents' convention); off sends `OFF sim-b` and confirms it off; reboot is OFF then ON (or
 * one RESET with --method cycle); list and list-status name every board; a power controller that
 * refuses (`ERR BROKEN`), a missing socket, an unknown board and a power controller that never
 * answers each end the agent with exit status 1 and a message that says which; the metadata is XML
 * and documents the socket option. The agent in a real cluster: test/integration/pacemaker-fence.test.ts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../src/core/log.js';
import type { PowerState } from '../../src/sim/chassis/board.js';
import type { ChassisBoard } from '../../src/sim/chassis/layout.js';
import { FENCE_AGENT } from '../../src/sim/chassis/pacemaker.js';
import { PowerController, type PowerTarget } from '../../src/sim/chassis/power-controller.js';

const log = createLogger('test', { level: 'silent' });

interface AgentRun { code: number; out: string; err: string }

/** Runs the agent with `args` on its command line, or with Pacemaker's key=value lines on stdin. */
function agent(args: string[], stdin?: string): Promise<AgentRun> {
  return new Promise((resolve) => {
    const p = execFile(FENCE_AGENT, args, { timeout: 30000 }, (e, out, err) => {
      resolve({ code: e ? (typeof (e as { code?: unknown }).code === 'number' ? (e as { code: number }).code : -1) : 0, out, err });
    });
    p.stdin!.end(stdin ?? '');
  });
}

function xmllint(xml: string): Promise<{ code: number; err: string }> {
  return new Promise((resolve) => {
    const p = execFile('xmllint', ['--noout', '-'], { timeout: 10000 }, (e, _out, err) => resolve({ code: e ? 1 : 0, err }));
    p.stdin!.end(xml);
  });
}

/** A stand-in board behind the power controller: its power, and what was done to it. */
class StandInBoard implements PowerTarget {
  readonly done: string[] = [];
  /** When set, OFF never completes (a board whose processes never go). */
  stuck = false;
  constructor(public power: PowerState) {}
  async powerOn(): Promise<void> {
    this.done.push('on');
    this.power = 'on';
  }
  async powerOff(): Promise<void> {
    this.done.push('off');
    if (this.stuck) await new Promise(() => undefined);
    this.power = 'off';
  }
  async reset(_cause: unknown, killed?: () => void): Promise<boolean> {
    if (this.power === 'off') return false;
    this.done.push('reset');
    killed?.();
    return true;
  }
}

describe('fence agent fence_understudy_chassis (board/fence), against the chassis\' power controller', function () {
  this.timeout(60000);
  let dir: string;
  let socket: string;
  let boards: Record<'sim-a' | 'sim-b' | 'sim-c', StandInBoard>;
  let controller: PowerController;
  /** The request lines the power controller received, in order. */
  const requests = () => controller.status().recent.map((r) => r.request);
  const opts = (...more: string[]) => [`--socket=${socket}`, ...more];

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-fence-agent-'));
    socket = join(dir, 'power.sock');
    boards = { 'sim-a': new StandInBoard('on'), 'sim-b': new StandInBoard('on'), 'sim-c': new StandInBoard('off') };
    controller = new PowerController(boards as unknown as Record<ChassisBoard, PowerTarget>, log);
    await controller.listen(socket);
  });
  afterEach(() => {
    controller.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('metadata: XML Pacemaker can read, with the socket option (required, its default), the plug, the method and every action', async () => {
    const r = await agent(['-o', 'metadata']);
    assert.equal(r.code, 0, r.err);
    const lint = await xmllint(r.out);
    assert.equal(lint.code, 0, lint.err);
    assert.match(r.out, /<resource-agent name="fence_understudy_chassis"/);
    assert.match(r.out, /<parameter name="socket" unique="0" required="1">\s*<getopt mixed="--socket=\[path\]" \/>\s*<content type="string" default="\/run\/understudy\/chassis-us\/power.sock"/);
    assert.match(r.out, /<parameter name="plug" unique="0" required="1"/);
    assert.match(r.out, /<parameter name="method"[^>]*>[\s\S]*?<option value="cycle" \/>/);
    for (const a of ['on', 'off', 'reboot', 'status', 'list', 'monitor', 'metadata', 'validate-all']) assert.match(r.out, new RegExp(`<action name="${a}"`));
    assert.deepEqual(requests(), [], 'metadata does not touch the device');
  });

  it('status: exit 0 and "Status: ON" for a board that is on, exit 2 and "Status: OFF" for one that is off; a short name is accepted', async () => {
    const on = await agent(opts('-o', 'status', '-n', 'sim-a'));
    assert.equal(on.code, 0, on.err);
    assert.match(on.out, /^Status: ON$/m);
    const off = await agent(opts('-o', 'status', '-n', 'c'));
    assert.equal(off.code, 2, off.err);
    assert.match(off.out, /^Status: OFF$/m);
    assert.deepEqual(requests(), ['STATUS sim-a', 'STATUS c']);
    assert.deepEqual([boards['sim-a'].done, boards['sim-c'].done], [[], []], 'status changes nothing');
  });

  it('off: sends OFF sim-b and confirms it off (exit 0); a board already off is left alone; the same through Pacemaker\'s stdin', async () => {
    const r = await agent(opts('-o', 'off', '-n', 'sim-b'));
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /Success: Powered OFF/);
    assert.deepEqual(requests(), ['STATUS sim-b', 'OFF sim-b', 'STATUS sim-b']);
    assert.equal(boards['sim-b'].power, 'off');
    const again = await agent(opts('-o', 'off', '-n', 'sim-b'));
    assert.equal(again.code, 0, again.err);
    assert.match(again.out, /Success: Already OFF/);
    assert.deepEqual(boards['sim-b'].done, ['off'], 'one OFF only');
    // As pacemaker-fenced runs it: no arguments, one key=value per line (port = the mapped host).
    boards['sim-a'].power = 'on';
    const fenced = await agent([], `action=off\nport=sim-a\nsocket=${socket}\nnodename=sim-a\n`);
    assert.equal(fenced.code, 0, fenced.err);
    assert.deepEqual(boards['sim-a'].done, ['off']);
    assert.equal(requests().at(-2), 'OFF sim-a');
  });

  it('reboot: OFF then ON, confirmed by STATUS each time (exit 0); with --method cycle one RESET', async () => {
    const r = await agent(opts('-o', 'reboot', '-n', 'sim-b'));
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /Success: Rebooted/);
    assert.deepEqual(requests(), ['STATUS sim-b', 'OFF sim-b', 'STATUS sim-b', 'ON sim-b', 'STATUS sim-b']);
    assert.deepEqual(boards['sim-b'].done, ['off', 'on']);
    assert.equal(boards['sim-b'].power, 'on');
    const cycle = await agent([], `action=reboot\nplug=sim-a\nmethod=cycle\nsocket=${socket}\n`);
    assert.equal(cycle.code, 0, cycle.err);
    assert.match(cycle.out, /Success: Rebooted/);
    assert.deepEqual(boards['sim-a'].done, ['reset']);
    assert.equal(requests().at(-1), 'RESET sim-a');
  });

  it('list and list-status: every board the power controller has, from its STATUS; monitor answers 0', async () => {
    const list = await agent(opts('-o', 'list'));
    assert.equal(list.code, 0, list.err);
    assert.deepEqual(list.out.trim().split('\n'), ['sim-a,', 'sim-b,', 'sim-c,']);
    const status = await agent(opts('-o', 'list-status'));
    assert.equal(status.code, 0, status.err);
    assert.deepEqual(status.out.trim().split('\n'), ['sim-a,,on', 'sim-b,,on', 'sim-c,,off']);
    const monitor = await agent(opts('-o', 'monitor'));
    assert.equal(monitor.code, 0, monitor.err);
    assert.deepEqual(requests(), ['STATUS', 'STATUS', 'STATUS']);
  });

  it('ERR BROKEN: off and reboot fail (exit 1) naming the refused request and the reply; the board is not touched', async () => {
    controller.break();
    for (const action of ['off', 'reboot']) {
      const r = await agent(opts('-o', action, '-n', 'sim-b'));
      assert.equal(r.code, 1, `${action}: ${r.out}${r.err}`);
      assert.match(r.err, new RegExp(`refused OFF sim-b: ERR BROKEN`));
      assert.doesNotMatch(r.out, /Success/);
    }
    const cycle = await agent(opts('-o', 'reboot', '-n', 'sim-b', '--method', 'cycle'));
    assert.equal(cycle.code, 1);
    assert.match(cycle.err, /refused RESET sim-b: ERR BROKEN/);
    assert.deepEqual(boards['sim-b'].done, []);
    assert.equal(boards['sim-b'].power, 'on');
    const monitor = await agent(opts('-o', 'monitor'));
    assert.equal(monitor.code, 0, 'the device still answers');
    assert.match(monitor.err, /is broken: OFF and RESET will be refused/);
  });

  it('a missing socket: every action that needs the device fails (exit 1) naming the path', async () => {
    const gone = join(dir, 'no-chassis', 'power.sock');
    for (const args of [['-o', 'off', '-n', 'sim-b'], ['-o', 'status', '-n', 'sim-b'], ['-o', 'monitor']]) {
      const r = await agent([`--socket=${gone}`, ...args]);
      assert.equal(r.code, 1, `${args.join(' ')}: ${r.out}`);
      assert.match(r.err, new RegExp(`power controller socket ${gone.replace(/[.]/g, '\\.')} does not exist`));
    }
  });

  it('an unknown board fails (exit 1) with the power controller\'s answer; a fence without a board, or with a name that is not one word, is refused before the device is asked', async () => {
    const r = await agent(opts('-o', 'off', '-n', 'sim-z'));
    assert.equal(r.code, 1);
    assert.match(r.err, /refused STATUS sim-z: ERR unknown board "sim-z"/);
    const none = await agent(opts('-o', 'off'));
    assert.equal(none.code, 1);
    assert.match(none.err, /You have to enter plug number or machine identification/);
    // A plug that would smuggle a second request line in never reaches the device.
    const smuggled = await agent(opts('-o', 'status', '-n', 'sim-c\nOFF sim-a'));
    assert.equal(smuggled.code, 1);
    assert.match(smuggled.err, /--plug 'sim-c\\nOFF sim-a' is not a board name/);
    assert.deepEqual(requests(), ['STATUS sim-z']);
    assert.deepEqual(boards['sim-a'].done, []);
  });

  it('a power controller that never answers an OFF: exit 1 after --power-timeout, naming the request', async () => {
    boards['sim-b'].stuck = true;
    // Without its own bound the agent would still be waiting when execFile ends it (code -1).
    const r = await agent(opts('-o', 'off', '-n', 'sim-b', '--power-timeout', '1'));
    assert.equal(r.code, 1, r.err);
    assert.match(r.err, /no answer to OFF sim-b from .* within 1 s \(--power-timeout\)/);
  });
});
