/**
 * The OCF resource agent board/ocf/guest without a cluster or a controller (resource-agents'
 * ocf-shellfuncs and xmllint, as installed by image-build/setup.sh): its meta-data is valid against
 * ra-api-1.dtd and documents every parameter the agent reads; validate-all answers 6
 * (ERR_CONFIGURED) or 5 (ERR_INSTALLED) for what is wrong; with no controller running, monitor and a
 * probe answer 7 (NOT_RUNNING), stop succeeds, promote and demote answer 7; an unknown action 3;
 * against a stand-in controller on the control socket (the real CLI asking it), monitor maps each
 * role to its OCF code, 9 only for a failure where the instance was promoted.
 * The agent against a real controller, a guest and a cluster: test/integration/pacemaker.test.ts.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveControl, type ControlServer } from '../../src/mgmt/ipc.js';
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
});
