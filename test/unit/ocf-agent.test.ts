/**
 * The OCF resource agent board/ocf/guest without a cluster or a controller (resource-agents'
 * ocf-shellfuncs and xmllint, as installed by image-build/setup.sh): its meta-data is valid against
 * ra-api-1.dtd and documents every parameter the agent reads; validate-all answers 6
 * (ERR_CONFIGURED) or 5 (ERR_INSTALLED) for what is wrong; with no controller running, monitor and a
 * probe answer 7 (NOT_RUNNING), stop succeeds, promote and demote answer 7; an unknown action 3;
 * against a stand-in controller on the control socket (the real CLI asking it), monitor maps each
 * role to its OCF code, 9 only for a failure where the instance was promoted; N+1 (pair_profile):
 * a spare's idle controller is no instance until started, post notifications pair it with the
 * promoted node and make the promoted one adopt it (Pacemaker's tools and understudyd stand-ins).
 * The agent against a real controller, a guest and a cluster: test/integration/pacemaker.test.ts.
 */
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveControl, type ControlServer } from '../../src/mgmt/ipc.js';
import { UsError } from '../../src/core/errors.js';
import { controlSocketPath } from '../../src/mgmt/paths.js';
import { PACKAGE_ROOT } from '../../src/sim/chassis/layout.js';

const AGENT = join(PACKAGE_ROOT, 'board', 'ocf', 'guest');
const CLI = join(PACKAGE_ROOT, 'bin', 'understudy');

function agent(action: string, env: Record<string, string> = {}): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve) => {
    execFile(AGENT, [action], { env: { PATH: process.env.PATH, OCF_ROOT: '/usr/lib/ocf', HA_RSCTMP: env.HA_RSCTMP ?? tmpdir(), ...env }, timeout: 30000 }, (e, out, err) => {
      resolve({ code: e ? (typeof (e as { code?: unknown }).code === 'number' ? (e as { code: number }).code : -1) : 0, out, err });
    });
  });
}

async function eventuallyTrue(cond: () => boolean, ms = 10000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  assert.ok(cond(), 'condition not reached');
}

function xmllint(xml: string): Promise<{ code: number; err: string }> {
  return new Promise((resolve) => {
    const p = execFile('xmllint', ['--noout', '--valid', '-'], { cwd: '/usr/share/resource-agents', timeout: 10000 }, (e, _out, err) => resolve({ code: e ? 1 : 0, err }));
    p.stdin!.end(xml);
  });
}

describe('OCF agent ocf:understudy:guest (board/ocf/guest), without a cluster', () => {
  let dir: string;
  let profile: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'us-ocf-'));
    profile = join(dir, 'board.json');
    // A board nobody runs: its control socket does not exist.
    const p = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board', 'standalone.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(profile, JSON.stringify({ ...p, storageDir: join(dir, 'store') }, null, 2));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const env = () => ({ HA_RSCTMP: dir, OCF_RESOURCE_INSTANCE: 'guest-test', OCF_RESKEY_board: profile, OCF_RESKEY_cli: CLI, OCF_RESKEY_daemon: join(PACKAGE_ROOT, 'bin', 'understudyd') });

  it('meta-data: exit 0, valid against ra-api-1.dtd, every parameter the agent reads documented with its default', async () => {
    const r = await agent('meta-data');
    assert.equal(r.code, 0, r.err);
    const lint = await xmllint(r.out);
    assert.equal(lint.code, 0, lint.err);
    const documented = [...r.out.matchAll(/<parameter name="([^"]+)"/g)].map((m) => m[1]).sort();
    const read = [...new Set([...readFileSync(AGENT, 'utf8').matchAll(/OCF_RESKEY_([a-z_]+)\b/g)].map((m) => m[1]!.replace(/_default$/, '')))].sort();
    assert.deepEqual(documented, read);
    for (const a of ['start', 'stop', 'monitor', 'promote', 'demote', 'notify', 'validate-all', 'meta-data', 'reload']) assert.match(r.out, new RegExp(`<action name="${a}"`));
    assert.match(r.out, /<action name="monitor"[^>]*role="Promoted"/);
    assert.match(r.out, /<action name="monitor"[^>]*role="Unpromoted"/);
  });

  it('validate-all: 0 for a good configuration; 6 for a missing or unreadable profile or descriptor or a bad score; 5 for a missing command', async () => {
    assert.equal((await agent('validate-all', env())).code, 0);
    assert.equal((await agent('validate-all', { ...env(), OCF_RESKEY_board: '' })).code, 6);
    assert.equal((await agent('validate-all', { ...env(), OCF_RESKEY_board: join(dir, 'none.json') })).code, 6);
    assert.equal((await agent('validate-all', { ...env(), OCF_RESKEY_guest: join(dir, 'none.json') })).code, 6);
    assert.equal((await agent('validate-all', { ...env(), OCF_RESKEY_synced_score: 'high' })).code, 6);
    assert.equal((await agent('validate-all', { ...env(), OCF_RESKEY_cli: join(dir, 'no-understudy') })).code, 5);
    assert.equal((await agent('validate-all', { ...env(), OCF_RESKEY_daemon: join(dir, 'no-understudyd') })).code, 5, 'a board without a partner needs understudyd');
  });

  it('no controller: monitor 7, a probe 7 even with the command missing, stop 0, promote and demote 7, notify and reload 0, an unknown action 3', async () => {
    assert.equal((await agent('monitor', env())).code, 7);
    assert.equal((await agent('monitor', { ...env(), OCF_RESKEY_CRM_meta_interval: '0', OCF_RESKEY_cli: join(dir, 'no-understudy') })).code, 7);
    assert.equal((await agent('stop', env())).code, 0);
    assert.equal((await agent('stop', { ...env(), OCF_RESKEY_cli: join(dir, 'no-understudy') })).code, 0, 'stop succeeds where nothing can run');
    assert.equal((await agent('promote', env())).code, 7);
    assert.equal((await agent('demote', env())).code, 7);
    assert.equal((await agent('notify', env())).code, 0);
    assert.equal((await agent('reload-agent', env())).code, 0);
    assert.equal((await agent('reload', env())).code, 0);
    assert.equal((await agent('migrate_to', env())).code, 3);
  });

  it('monitor against a controller (a stand-in on the control socket, the real CLI asking it): each role to its OCF code; FAULT is 9 only where this instance was promoted', async () => {
    let status: Record<string, unknown> = {};
    const sock = controlSocketPath({ storageDir: join(dir, 'store') });
    mkdirSync(join(dir, 'store'), { recursive: true, mode: 0o700 });
    const server: ControlServer = await serveControl(sock, async (cmd) => {
      if (cmd !== 'status') throw new Error(`unexpected ${cmd}`);
      return { board: 'standalone', pid: process.pid, ...status };
    });
    try {
      const code = async (s: Record<string, unknown>) => { status = s; return (await agent('monitor', env())).code; };
      const promoted = join(dir, 'understudy-guest-guest-test.promoted');
      assert.equal(await code({ role: 'BACKUP', serving: false, replication: { protected: true } }), 0);
      assert.equal(await code({ role: 'WAITING', serving: false, replication: null }), 0);
      assert.equal(await code({ role: 'STANDALONE', serving: false }), 0, 'a board without a partner, not serving: started, not promoted');
      assert.equal(await code({ role: 'CONFIG-ERROR', serving: false }), 6);
      assert.equal(await code({ role: 'FAULT', serving: false }), 1, 'a failure where it was never promoted');
      assert.ok(!existsSync(promoted));
      // PRIMARY by the pair's own takeover, not promoted by Pacemaker: running (0), not 8 (an
      // unpromoted instance answering 8 is a failure to Pacemaker, recovered by a demote).
      assert.equal(await code({ role: 'PRIMARY', serving: true }), 0);
      assert.ok(!existsSync(promoted));
      assert.equal((await agent('promote', env())).code, 0, 'promote confirms a board already PRIMARY');
      assert.ok(existsSync(promoted), 'the agent remembers it was promoted here');
      assert.equal(await code({ role: 'PRIMARY', serving: true }), 8);
      assert.equal(await code({ role: 'FAULT', serving: false }), 9, 'failed while promoted');
      assert.equal(await code({ role: 'STANDALONE', serving: true }), 8);
    } finally {
      server.close();
    }
  });

  it('demote of a PRIMARY whose backup holds no clone in sync yet waits for it, then switches over (0); another refusal, or the wait past the operation\'s timeout, fails (1)', async () => {
    // A board of a pair: its profile has an ha section (all the agent looks for).
    const board = JSON.parse(readFileSync(profile, 'utf8')) as Record<string, unknown>;
    writeFileSync(profile, JSON.stringify({ ...board, ha: { keyFile: '/k' } }, null, 2));
    let role = 'PRIMARY';
    let refuse: Array<[string, string]> = [];
    let switchovers = 0;
    const sock = controlSocketPath({ storageDir: join(dir, 'store') });
    mkdirSync(join(dir, 'store'), { recursive: true, mode: 0o700 });
    const server: ControlServer = await serveControl(sock, async (cmd) => {
      if (cmd === 'status') return { board: 'standalone', pid: process.pid, role, serving: role === 'PRIMARY', replication: { protected: role === 'BACKUP' } };
      if (cmd === 'switchover') {
        switchovers++;
        const r = refuse.shift();
        if (r) throw new UsError(r[0] as 'US_ERR_ROLE', r[1]);
        role = 'BACKUP';
        return { board: 'standalone', handedOverAt: Date.now() };
      }
      throw new Error(`unexpected ${cmd}`);
    });
    const promoted = join(dir, 'understudy-guest-guest-test.promoted');
    const notInSync: [string, string] = ['US_ERR_ROLE', 'switchover: the backup holds no clone in sync (see understudy status); refusing to hand over'];
    try {
      writeFileSync(promoted, '');
      refuse = [notInSync, ['US_ERR_ROLE', 'switchover: a clone is in progress; try again when it is done']];
      assert.equal((await agent('demote', { ...env(), OCF_RESKEY_CRM_meta_timeout: '120000' })).code, 0);
      assert.equal(switchovers, 3, 'asked again until the backup was in sync');
      assert.equal(role, 'BACKUP');
      assert.ok(!existsSync(promoted));

      role = 'PRIMARY'; switchovers = 0;
      writeFileSync(promoted, '');
      refuse = [['US_ERR_LINK', 'switchover: the backup stopped acknowledging (unprotected); not handed over']];
      const link = await agent('demote', { ...env(), OCF_RESKEY_CRM_meta_timeout: '120000' });
      assert.equal(link.code, 1, 'another refusal fails at once');
      assert.equal(switchovers, 1);

      switchovers = 0;
      refuse = Array.from({ length: 50 }, () => notInSync);
      // 16 s for the operation: 1 s to wait, then the refusal stands.
      const late = await agent('demote', { ...env(), OCF_RESKEY_CRM_meta_timeout: '16000' });
      assert.equal(late.code, 1);
      assert.ok(switchovers >= 1 && switchovers <= 3, `a bounded wait (${switchovers} asks)`);
      assert.equal(role, 'PRIMARY', 'still serving: nothing handed over');
    } finally {
      server.close();
    }
  });

  describe('N+1: pair_profile set (stand-ins for Pacemaker\'s tools, understudyd and the controllers)', () => {
    /** crm_attribute and crm_node that log their arguments; a query answers the spare's address. understudyd logs its arguments. */
    function fakeTools(): { path: string; log: string; daemon: string } {
      const bin = join(dir, 'bin');
      mkdirSync(bin);
      const log = join(dir, 'tools.log');
      const script = (name: string, body: string) => { writeFileSync(join(bin, name), `#!/bin/sh\necho "${name} $*" >> ${log}\n${body}\n`); chmodSync(join(bin, name), 0o755); };
      script('crm_attribute', 'case " $* " in *" --query "*) echo 198.51.100.3 ;; esac');
      script('crm_node', 'echo sim-c');
      script('understudyd', 'exit 0');
      return { path: `${bin}:${process.env.PATH}`, log, daemon: join(bin, 'understudyd') };
    }

    /** A stand-in controller on `profile`'s control socket; `guest.stop` ends its (stand-in) process and closes the socket. */
    async function standIn(storageDir: string, status: () => Record<string, unknown>, calls: Array<[string, unknown]>) {
      mkdirSync(storageDir, { recursive: true, mode: 0o700 });
      const proc = spawn('sleep', ['600'], { stdio: 'ignore' });
      let server: ControlServer | undefined;
      server = await serveControl(controlSocketPath({ storageDir }), async (cmd, args) => {
        calls.push([cmd, args]);
        if (cmd === 'status') return { board: 'x', pid: proc.pid, ...status() };
        if (cmd === 'guest.stop') { setTimeout(() => { proc.kill('SIGKILL'); server?.close(); server = undefined; }, 50); return { stopping: true }; }
        if (cmd === 'partner.adopt') return { board: 'sim-a', partner: args.name, address: args.address, previous: 'sim-b', linksClosed: [] };
        throw new Error(`unexpected ${cmd}`);
      });
      return { close: () => { server?.close(); if (proc.exitCode === null) proc.kill('SIGKILL'); } };
    }

    /** The promoted node sim-a: a stand-in controller answering `status`, the agent's environment, the adoptions it was asked for. */
    async function promotedNode(tools: { path: string }, status: () => Record<string, unknown>) {
      const calls: Array<[string, unknown]> = [];
      const c = await standIn(join(dir, 'store'), status, calls);
      const e = { ...env(), PATH: tools.path, OCF_RESKEY_pair_profile: join(dir, 'with-%s.json'), OCF_RESKEY_CRM_meta_on_node: 'sim-a' };
      return { c, e, adopts: () => calls.filter(([cmd]) => cmd === 'partner.adopt').map(([, a]) => a) };
    }

    const post = (over: Record<string, string>) => ({
      OCF_RESKEY_CRM_meta_notify_type: 'post', OCF_RESKEY_CRM_meta_notify_operation: 'start',
      OCF_RESKEY_CRM_meta_notify_promoted_uname: 'sim-a', OCF_RESKEY_CRM_meta_notify_active_uname: 'sim-a',
      OCF_RESKEY_CRM_meta_notify_start_uname: 'sim-c', OCF_RESKEY_CRM_meta_notify_stop_uname: 'sim-b', ...over,
    });

    it('the spare: its idle controller is no instance (7) until started (0, its address published, never a promotion score); a post notification restarts it paired with the promoted node', async () => {
      const tools = fakeTools();
      const pairing = join(dir, 'with-sim-a.json');
      const board = JSON.parse(readFileSync(profile, 'utf8')) as Record<string, unknown>;
      writeFileSync(pairing, JSON.stringify({ ...board, name: 'sim-c', partner: { name: 'sim-a', ethernet: { localAddress: '198.51.100.3', partnerAddress: '198.51.100.1', port: 5405 } }, ha: { keyFile: '/k' } }, null, 2));
      const calls: Array<[string, unknown]> = [];
      const c = await standIn(join(dir, 'store'), () => ({ role: 'STANDALONE', serving: false }), calls);
      const e = { ...env(), PATH: tools.path, OCF_RESKEY_daemon: tools.daemon, OCF_RESKEY_pair_profile: join(dir, 'with-%s.json'), OCF_RESKEY_CRM_meta_on_node: 'sim-c', OCF_RESKEY_guest: join(PACKAGE_ROOT, 'guests', 'dx-legacy.json') };
      try {
        assert.equal((await agent('monitor', e)).code, 7, 'the idle controller is not an instance');
        assert.equal((await agent('start', e)).code, 0);
        assert.match(readFileSync(tools.log, 'utf8'), /crm_attribute --node sim-c --name understudy-address --lifetime forever --update 198\.51\.100\.3/);
        assert.equal((await agent('monitor', e)).code, 0, 'started here: an instance, not paired yet');
        assert.doesNotMatch(readFileSync(tools.log, 'utf8'), /crm_attribute --promotion -v/, 'never a promotion score: it holds no copy');
        // A pre notification changes nothing; the post one pairs it with the promoted node.
        assert.equal((await agent('notify', { ...e, ...post({ OCF_RESKEY_CRM_meta_notify_type: 'pre' }) })).code, 0);
        assert.ok(!calls.some(([cmd]) => cmd === 'guest.stop'));
        assert.equal((await agent('notify', { ...e, ...post({}) })).code, 0);
        assert.ok(calls.some(([cmd]) => cmd === 'guest.stop'), 'the idle controller stopped');
        await eventuallyTrue(() => existsSync(tools.log) && /understudyd --board \S+with-sim-a\.json --guest \S+dx-legacy\.json/.test(readFileSync(tools.log, 'utf8')));
        assert.equal(readFileSync(join(dir, 'understudy-guest-guest-test.profile'), 'utf8').trim(), pairing, 'the agent remembers the pairing profile');
      } finally {
        c.close();
      }
    });

    it('the spare restarted by a recovery (stopped and started in one transition) is paired by the post notification; while its paired controller comes up, monitor says started (0), not stopped; once that controller is gone, 7', async () => {
      const tools = fakeTools();
      // A controller that takes a while to answer (a stand-in that never does, alive for 3 s).
      const slow = join(dir, 'bin', 'understudyd-slow');
      writeFileSync(slow, `#!/bin/sh\necho "understudyd-slow $*" >> ${tools.log}\nexec sleep 3\n`);
      chmodSync(slow, 0o755);
      const pairing = join(dir, 'with-sim-a.json');
      const board = JSON.parse(readFileSync(profile, 'utf8')) as Record<string, unknown>;
      writeFileSync(pairing, JSON.stringify({ ...board, name: 'sim-c', partner: { name: 'sim-a', ethernet: { localAddress: '198.51.100.3', partnerAddress: '198.51.100.1', port: 5405 } }, ha: { keyFile: '/k' } }, null, 2));
      const calls: Array<[string, unknown]> = [];
      const c = await standIn(join(dir, 'store'), () => ({ role: 'STANDALONE', serving: false }), calls);
      const e = { ...env(), PATH: tools.path, OCF_RESKEY_daemon: slow, OCF_RESKEY_pair_profile: join(dir, 'with-%s.json'), OCF_RESKEY_CRM_meta_on_node: 'sim-c' };
      try {
        assert.equal((await agent('start', e)).code, 0);
        // Pacemaker's recovery of sim-c's instance: stop and start there, sim-a promoted throughout.
        const recovery = post({ OCF_RESKEY_CRM_meta_notify_active_uname: 'sim-a sim-c', OCF_RESKEY_CRM_meta_notify_stop_uname: 'sim-c', OCF_RESKEY_CRM_meta_notify_start_uname: 'sim-c' });
        assert.equal((await agent('notify', { ...e, ...recovery })).code, 0);
        assert.ok(calls.some(([cmd]) => cmd === 'guest.stop'), 'the idle controller stopped: a member despite the stop');
        await eventuallyTrue(() => /understudyd-slow --board \S+with-sim-a\.json/.test(readFileSync(tools.log, 'utf8')));
        assert.equal((await agent('monitor', e)).code, 0, 'its paired controller is coming up: started, not stopped');
        await new Promise((r) => setTimeout(r, 3500));
        assert.equal((await agent('monitor', e)).code, 7, 'that controller gone without answering: stopped');
      } finally {
        c.close();
      }
    });

    it('a spare started here and still idle while another node is promoted pairs itself at its recurring monitor (a missed pairing); not at a probe, nor when nothing is promoted elsewhere', async () => {
      const tools = fakeTools();
      const locate = join(dir, 'locate.out');
      writeFileSync(locate, '');
      writeFileSync(join(dir, 'bin', 'crm_resource'), `#!/bin/sh\necho "crm_resource $*" >> ${tools.log}\ncat ${locate}\n`);
      chmodSync(join(dir, 'bin', 'crm_resource'), 0o755);
      const pairing = join(dir, 'with-sim-a.json');
      const board = JSON.parse(readFileSync(profile, 'utf8')) as Record<string, unknown>;
      writeFileSync(pairing, JSON.stringify({ ...board, name: 'sim-c', partner: { name: 'sim-a', ethernet: { localAddress: '198.51.100.3', partnerAddress: '198.51.100.1', port: 5405 } }, ha: { keyFile: '/k' } }, null, 2));
      const calls: Array<[string, unknown]> = [];
      const c = await standIn(join(dir, 'store'), () => ({ role: 'STANDALONE', serving: false }), calls);
      const e = { ...env(), PATH: tools.path, OCF_RESKEY_daemon: tools.daemon, OCF_RESKEY_pair_profile: join(dir, 'with-%s.json'), OCF_RESKEY_CRM_meta_on_node: 'sim-c' };
      const recurring = { ...e, OCF_RESKEY_CRM_meta_interval: '11000' };
      try {
        assert.equal((await agent('start', e)).code, 0);
        // Nothing promoted elsewhere: stays idle.
        writeFileSync(locate, 'resource guest is running on: sim-c\n');
        assert.equal((await agent('monitor', recurring)).code, 0);
        assert.ok(!calls.some(([cmd]) => cmd === 'guest.stop'));
        writeFileSync(locate, 'resource guest is running on: sim-a Promoted\nresource guest is running on: sim-c\n');
        // A probe (no interval) only reports.
        assert.equal((await agent('monitor', e)).code, 0);
        assert.ok(!calls.some(([cmd]) => cmd === 'guest.stop'), 'a probe changes nothing');
        assert.equal((await agent('monitor', recurring)).code, 0);
        assert.ok(calls.some(([cmd]) => cmd === 'guest.stop'), 'the idle controller stopped');
        await eventuallyTrue(() => /understudyd --board \S+with-sim-a\.json/.test(readFileSync(tools.log, 'utf8')));
      } finally {
        c.close();
      }
    });

    it('the promoted node: a PRIMARY whose partner is gone adopts the started node at its published address; not while its partner is heard, nor when not PRIMARY', async () => {
      const tools = fakeTools();
      let status: Record<string, unknown> = { role: 'PRIMARY', serving: true, partner: { state: 'alive', heartbeat: { sender: 'sim-b' } } };
      const { c, e, adopts } = await promotedNode(tools, () => status);
      try {
        assert.equal((await agent('notify', { ...e, ...post({}) })).code, 0);
        assert.deepEqual(adopts(), [], 'the partner is heard: nothing adopted');
        status = { role: 'BACKUP', serving: false, partner: { state: 'dead' } };
        assert.equal((await agent('notify', { ...e, ...post({}) })).code, 0);
        assert.deepEqual(adopts(), [], 'not PRIMARY (yet): left to the promote notification');
        status = { role: 'PRIMARY', serving: true, partner: { state: 'dead', heartbeat: { sender: 'sim-b' } } };
        assert.equal((await agent('notify', { ...e, ...post({}) })).code, 0);
        assert.deepEqual(adopts(), [{ name: 'sim-c', address: '198.51.100.3' }]);
        assert.match(readFileSync(tools.log, 'utf8'), /crm_attribute --node sim-c --name understudy-address --lifetime forever --query --quiet/);
        // Promoted in this transition (the old primary demoted and stopped): the same.
        assert.equal((await agent('notify', { ...e, ...post({ OCF_RESKEY_CRM_meta_notify_operation: 'promote', OCF_RESKEY_CRM_meta_notify_promoted_uname: 'sim-b', OCF_RESKEY_CRM_meta_notify_demote_uname: 'sim-b', OCF_RESKEY_CRM_meta_notify_promote_uname: 'sim-a', OCF_RESKEY_CRM_meta_notify_active_uname: 'sim-a sim-b sim-c', OCF_RESKEY_CRM_meta_notify_start_uname: '' }) })).code, 0);
        assert.deepEqual(adopts().length, 2);
        // Without pair_profile the agent pairs nothing.
        const { OCF_RESKEY_pair_profile: _, ...plain } = e;
        assert.equal((await agent('notify', { ...plain, ...post({}) })).code, 0);
        assert.equal(adopts().length, 2);
      } finally {
        c.close();
      }
    });

    it('the promoted node\'s monitor adopts a started instance its notification could not (the old partner was still heard then); never while a partner is heard, nor where it was not promoted', async () => {
      const tools = fakeTools();
      // crm_resource --locate as Pacemaker prints it: this node promoted, sim-c started.
      writeFileSync(join(dir, 'bin', 'crm_resource'), `#!/bin/sh\necho "crm_resource $*" >> ${tools.log}\necho 'resource guest is running on: sim-a Promoted'\necho 'resource guest is running on: sim-c'\n`);
      chmodSync(join(dir, 'bin', 'crm_resource'), 0o755);
      let status: Record<string, unknown> = { role: 'PRIMARY', serving: true, partner: { state: 'alive', heartbeat: { sender: 'sim-b' } } };
      const { c, e, adopts } = await promotedNode(tools, () => status);
      try {
        status = { role: 'PRIMARY', serving: true, partner: { state: 'dead', heartbeat: { sender: 'sim-b' } } };
        assert.equal((await agent('monitor', e)).code, 0, 'PRIMARY by its own takeover, not promoted here');
        assert.deepEqual(adopts(), [], 'not promoted here: no adoption from monitor');
        status = { role: 'PRIMARY', serving: true, partner: { state: 'alive', heartbeat: { sender: 'sim-b' } } };
        assert.equal((await agent('promote', e)).code, 0);
        assert.equal((await agent('monitor', e)).code, 8);
        assert.deepEqual(adopts(), [], 'its partner is heard: nothing adopted');
        status = { role: 'PRIMARY', serving: true, partner: { state: 'dead', heartbeat: { sender: 'sim-b' } } };
        assert.equal((await agent('monitor', e)).code, 8);
        assert.deepEqual(adopts(), [{ name: 'sim-c', address: '198.51.100.3' }], 'the other started instance, at its published address');
        assert.match(readFileSync(tools.log, 'utf8'), /crm_resource --resource guest-test --locate/);
      } finally {
        c.close();
      }
    });
  });
});
