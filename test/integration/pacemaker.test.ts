/**
 * Pacemaker on the simulated chassis (issue 18, first increment), as root with the real Debian
 * corosync and pacemaker: three boards (`chassis up --boards 3 --manager pacemaker`), each running
 * its own daemons in private mount, pid, uts and ipc namespaces inside the board's network
 * namespace, form one cluster; Pacemaker's tools run on a board through `chassis crm`; a board
 * powered off takes its daemons with it and leaves the cluster, and rejoins when powered on; the
 * resource agent ocf:understudy:guest passes ocf-tester on a board against its real controller and
 * a real QEMU guest; `down` leaves no process and no namespace.
 *
 * One chassis for the whole file. The waits are bounds on convergence (corosync's token, Pacemaker's
 * election), never assertions on how fast it converges.
 */
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { CLI_ENTRY, PACKAGE_ROOT, RUN_MARKER } from '../../src/sim/chassis/layout.js';
import { namespaceInit } from '../../src/sim/chassis/pacemaker.js';
import { configureGuestClone } from '../../src/sim/chassis/launcher.js';
import { Chassis } from '../../src/sim/chassis/rig.js';
import { eventually } from '../support/eventually.js';
import { ClusterTools, pacemakerChassisForTheFile } from '../support/pacemaker.js';

const run = promisify(execFile);
const NAME = 'pm18';
const RUN_DIR = '/tmp/us-pm18';
const BOARDS = ['sim-a', 'sim-b', 'sim-c'] as const;

const tools = new ClusterTools(NAME, RUN_DIR);
const crm = (board: string, argv: string[], timeoutMs?: number) => tools.crm(board, argv, timeoutMs);
const online = (board: string) => tools.online(board);

function processesWithMarker(runDir: string): number[] {
  return readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/environ`, 'latin1').split('\0').includes(`${RUN_MARKER}=${runDir}`);
    } catch {
      return false;
    }
  });
}

function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** A process's mount namespace, topmost mount per mount point: its filesystem type, device and root within it. */
function mountsOf(pid: number | 'self'): Map<string, { type: string; dev: string; root: string }> {
  const m = new Map<string, { type: string; dev: string; root: string }>();
  for (const line of readFileSync(`/proc/${pid}/mountinfo`, 'utf8').split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (sep > 4) m.set(f[4]!, { type: f[sep + 1]!, dev: f[2]!, root: f[3]! });
  }
  return m;
}

function namespacesList(): string[] {
  const out = execFileSync('ip', ['-j', 'netns', 'list'], { encoding: 'utf8' });
  return out.trim() ? (JSON.parse(out) as Array<{ name: string }>).map((n) => n.name) : [];
}

describe('Pacemaker on the simulated chassis (3 boards, --manager pacemaker; real corosync, pacemaker, QEMU)', function () {
  this.timeout(120000);
  let chassis: Chassis | undefined;
  /** Every namespace pid 1 and unshare seen, to check that none survives `down`. */
  const seen = new Set<number>();
  const hostCibExisted = existsSync('/var/lib/pacemaker/cib/cib.xml');

  function managerOf(board: string): { unshare: number; init: number } {
    const rec = chassis!.recorded()!.boards[board as 'sim-a']?.pacemaker;
    assert.ok(rec, `${board}'s corosync and pacemaker are recorded in state.json`);
    const init = namespaceInit(rec.pid);
    assert.ok(init, `${board}'s namespace has its pid 1`);
    seen.add(rec.pid).add(init);
    return { unshare: rec.pid, init };
  }

  pacemakerChassisForTheFile(NAME, RUN_DIR, (c) => { chassis = c; }, () => chassis);

  it('forms one cluster of three: crm_mon on every board shows sim-a, sim-b and sim-c online', async () => {
    const st = await chassis!.status();
    assert.deepEqual(st.boards.map((b) => b.board), BOARDS);
    assert.equal(st.chassis.manager, 'pacemaker');
    // chassis up returned once sim-a's crm_mon showed all three; every board agrees (a board reset
    // since by its watchdog would take a moment to come back: a bound, not an assertion on speed).
    for (const b of BOARDS) {
      assert.deepEqual(await eventually(`crm_mon on ${b} shows three online`, async () => {
        const o = await online(b);
        return o.length === 3 ? o : undefined;
      }, 90000, 500), BOARDS);
    }
    // The cluster's traffic does not disturb the pair's own heartbeats on the same backplane.
    for (const b of ['sim-a', 'sim-b']) {
      const links = await eventually(`${b} sees both partner links up`, async () => {
        const v = await chassis!.board(b);
        const l = v.linkStatus.ok ? (v.linkStatus.result as { links: Array<{ name: string; up: boolean }> }).links : [];
        return l.length === 2 && l.every((x) => x.up) ? l : undefined;
      }, 30000, 500);
      assert.deepEqual(links.map((l) => l.name).sort(), ['ethernet', 'serial']);
    }
    const human = await crm('sim-c', ['crm_mon', '-1']);
    assert.equal(human.code, 0, human.out);
    assert.match(human.out, /Online: \[ sim-a sim-b sim-c \]/);
    assert.match(human.out, /3 nodes configured/);
  });

  it('each board\'s daemons are isolated: their own mount, pid, uts and ipc namespaces in the board\'s network namespace, with private /run, /dev/shm and Pacemaker/corosync state', async () => {
    const self = (ns: string) => readlinkSync(`/proc/self/ns/${ns}`);
    const inits = BOARDS.map((b) => ({ b, ...managerOf(b) }));
    const ownMounts = mountsOf('self');
    const privateDevs: string[] = [];
    for (const kind of ['mnt', 'pid', 'uts', 'ipc', 'net']) {
      const ids = inits.map(({ init }) => readlinkSync(`/proc/${init}/ns/${kind}`));
      assert.equal(new Set(ids).size, 3, `three different ${kind} namespaces`);
      assert.ok(!ids.includes(self(kind)), `none is the test's own ${kind} namespace`);
    }
    for (const { b, init } of inits) {
      const controller = (await chassis!.board(b)).controller!.pid;
      assert.equal(readlinkSync(`/proc/${init}/ns/net`), readlinkSync(`/proc/${controller}/ns/net`), `${b}'s daemons share the board's network namespace with its controller`);
      const mounts = mountsOf(init);
      for (const m of ['/run', '/dev/shm']) {
        assert.equal(mounts.get(m)?.type, 'tmpfs', `${b}: ${m} is a tmpfs`);
        assert.notEqual(mounts.get(m)!.dev, ownMounts.get(m)?.dev, `${b}: ${m} is not the machine's`);
        privateDevs.push(mounts.get(m)!.dev);
      }
      for (const [m, folder] of [['/var/lib/pacemaker', 'lib-pacemaker'], ['/var/lib/corosync', 'lib-corosync'], ['/var/log/pacemaker', 'log-pacemaker'], ['/var/log/cluster', 'log-cluster'], ['/etc/corosync', 'etc-corosync']]) {
        assert.ok(mounts.get(m!)?.root.endsWith(`/${b}/pacemaker/${folder}`), `${b}: ${m} is its own ${folder} (${JSON.stringify(mounts.get(m!))})`);
      }
      const host = await crm(b, ['hostname']);
      assert.equal(host.out.trim(), b, `${b}'s host name`);
      const pid1 = await crm(b, ['cat', '/proc/1/cmdline']);
      assert.match(pid1.out, /init\.sh/, `${b}: pid 1 of its pid namespace is the chassis' init script`);
      const meta = await crm(b, ['crm_resource', '--show-metadata', 'ocf:understudy:guest']);
      assert.match(meta.out, /<resource-agent name="guest"/, `${b}: Pacemaker finds ocf:understudy:guest, the package's agent`);
      // Pacemaker wrote its CIB through the bind mount, into the board's folder.
      assert.ok(existsSync(join(RUN_DIR, b, 'pacemaker', 'lib-pacemaker', 'cib', 'cib.xml')), `${b}'s CIB is in its own folder`);
    }
    assert.equal(new Set(privateDevs).size, 6, 'every board has its own /run and /dev/shm');
    assert.equal(existsSync('/var/lib/pacemaker/cib/cib.xml'), hostCibExisted, 'the machine\'s own /var/lib/pacemaker is untouched');
  });

  it('a board powered off takes its daemons with it and leaves the cluster; powered on, it rejoins', async function () {
    this.timeout(180000);
    const before = managerOf('sim-c');
    await chassis!.power('sim-c', 'off');
    assert.ok(!alive(before.unshare) && !alive(before.init), 'sim-c\'s unshare and namespace pid 1 are gone once the board is off');
    const left = await eventually('sim-a sees sim-c leave', async () => {
      const o = await online('sim-a');
      return o.length === 2 ? o : undefined;
    }, 60000, 500);
    assert.deepEqual(left, ['sim-a', 'sim-b']);
    const failed = await crm('sim-c', ['crm_mon', '-1']);
    assert.notEqual(failed.code, 0, 'no Pacemaker to ask on a board that is off');
    assert.match(failed.out, /US_ERR_NOT_RUNNING/);
    await chassis!.power('sim-c', 'on');
    // The unshare is recorded as it is spawned; its child, the namespace's pid 1, follows.
    const after = await eventually('sim-c\'s new namespace has its pid 1', () => {
      try { return managerOf('sim-c'); } catch { return undefined; }
    }, 10000, 100);
    assert.notEqual(after.unshare, before.unshare, 'new daemons at the new boot');
    const back = await eventually('all three online again', async () => {
      const o = await online('sim-a');
      return o.length === 3 ? o : undefined;
    }, 120000, 500);
    assert.deepEqual(back, BOARDS);
  });

  it('the agent\'s monitor on the pair\'s boards, not promoted by Pacemaker: 0 on both, the PRIMARY with the serving score, each score in the cluster', async () => {
    const agent = join(PACKAGE_ROOT, 'board', 'ocf', 'guest');
    const codes: Record<string, number> = {};
    for (const b of ['sim-a', 'sim-b'] as const) {
      const env = ['env', 'OCF_ROOT=/usr/lib/ocf', 'OCF_RESOURCE_INSTANCE=usguest', `OCF_RESKEY_board=${chassis!.layout.boards[b].profile}`,
        `OCF_RESKEY_cli=${join(PACKAGE_ROOT, 'bin', 'understudy')}`];
      codes[b] = (await crm(b, [...env, agent, 'monitor'])).code;
    }
    const roles = await Promise.all(['sim-a', 'sim-b'].map(async (b) => {
      const r = (await chassis!.board(b)).role;
      return r.ok ? String((r.result as { role: string }).role) : 'unavailable';
    }));
    // Not promoted by Pacemaker (this instance, usguest, is the test's own): the PRIMARY answers 0
    // with the serving score, so that a cluster promotes it (an unpromoted instance answering 8 is a
    // failure to Pacemaker); 8 once promoted is the clone test's and the unit test's.
    const want = (role: string) => (role === 'PRIMARY' || role === 'BACKUP' ? 0 : -1);
    assert.deepEqual(codes, { 'sim-a': want(roles[0]!), 'sim-b': want(roles[1]!) }, `roles ${roles.join(', ')}`);
    assert.deepEqual([...roles].sort(), ['BACKUP', 'PRIMARY']);
    // The scores are node attributes in the live cluster, read on the third board.
    for (const [i, b] of ['sim-a', 'sim-b'].entries()) {
      const score = await eventually(`${b}'s promotion score`, async () => {
        const r = await crm('sim-c', ['crm_attribute', '--node', b, '--name', 'master-usguest', '--lifetime', 'reboot', '--query', '--quiet']);
        return r.code === 0 && r.out.trim() ? r.out.trim() : undefined;
      }, 20000, 500);
      // No guest on this chassis: the backup holds no clone, so it scores as unsynced.
      assert.equal(score, roles[i] === 'PRIMARY' ? '1000' : '1', `${b} (${roles[i]})`);
    }
  });

  it('ocf:understudy:guest passes ocf-tester on sim-c, against a real controller and the reference guest under QEMU (start, monitor, promote, demote, notify, reload, stop)', async function () {
    this.timeout(600000);
    // A profile of its own for the agent's instance, beside sim-c's (which the chassis runs): its
    // own store and control socket, no watchdog, console or metrics to share with the chassis' one.
    const profile = JSON.parse(readFileSync(chassis!.layout.boards['sim-c'].profile, 'utf8')) as Record<string, any>;
    const storageDir = join(RUN_DIR, 'sim-c', 'ocf-store');
    delete profile.watchdog; delete profile.console; delete profile.metrics;
    profile.storageDir = storageDir;
    profile.service = { address: '127.0.10.30', port: 5000 };
    const file = join(RUN_DIR, 'sim-c', 'ocf-profile.json');
    writeFileSync(file, `${JSON.stringify(profile, null, 2)}\n`, { mode: 0o600 });
    const agent = join(PACKAGE_ROOT, 'board', 'ocf', 'guest');
    const r = await crm('sim-c', ['ocf-tester', '-n', 'usguest',
      '-o', `board=${file}`, '-o', `guest=${join(PACKAGE_ROOT, 'guests', 'dx-legacy.json')}`,
      '-o', `cli=${join(PACKAGE_ROOT, 'bin', 'understudy')}`, '-o', `daemon=${join(PACKAGE_ROOT, 'bin', 'understudyd')}`, agent], 580000);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /passed all tests/, r.out);
    // Nothing of the agent's instance is left running: its controller does not answer.
    const st = await run(process.execPath, [CLI_ENTRY, 'status', '--json', '--board', file]).then(() => 'answers', () => 'silent');
    assert.equal(st, 'silent');
    rmSync(storageDir, { recursive: true, force: true });
  });

  it('Pacemaker runs ocf:understudy:guest as a promotable clone of two instances: promoted where the pair\'s PRIMARY is, unpromoted on the BACKUP; the spare\'s idle controller is no instance; no failed action', async function () {
    this.timeout(180000);
    // Each node's own profile through a rule on #uname (the same parameter, a different file per
    // blade); no fence device yet (decision table, docs/pacemaker.md): fencing off for this test.
    await configureGuestClone(chassis!.layout);
    const roles = await Promise.all(['sim-a', 'sim-b'].map(async (b) => {
      const r = (await chassis!.board(b)).role;
      return r.ok ? String((r.result as { role: string }).role) : 'unavailable';
    }));
    const primary = roles[0] === 'PRIMARY' ? 'sim-a' : 'sim-b';
    const placed = await eventually('Pacemaker shows one promoted and one unpromoted instance', async () => {
      const pl = await tools.placement('sim-a');
      return pl && pl.promoted.length === 1 && pl.unpromoted.length === 1 ? pl : undefined;
    }, 120000, 1000);
    assert.deepEqual(placed.promoted, [primary], `promoted where the pair's PRIMARY is (roles ${roles.join(', ')})`);
    assert.deepEqual(placed.unpromoted, ['sim-a', 'sim-b'].filter((b) => b !== primary));
    assert.equal(placed.failures, false, 'no failed action');
    const human = await crm('sim-b', ['crm_mon', '-1']);
    // Grouped ("Promoted: [ sim-a ]"), or one line per instance while an operation is under way on
    // it ("guest (ocf:understudy:guest): Promoted sim-a (Monitoring)": CI, 2026-12-06).
    assert.match(human.out, new RegExp(`(?:Promoted|Masters): \\[ ${primary} \\]|\\(ocf:understudy:guest\\):\\s+(?:Promoted|Master) ${primary}\\b`), human.out);
  });

  it('after chassisd crashed, down still ends every board\'s daemons (by the recorded unshare) and removes every namespace', async function () {
    this.timeout(60000);
    for (const b of BOARDS) managerOf(b);
    // The orderly path (a board's daemons killed with the board) is the power-off test's; here the
    // harder one: chassisd is gone and only state.json says what to end.
    const chassisd = chassis!.recorded()!.chassisd!.pid;
    process.kill(chassisd, 'SIGKILL');
    await eventually('chassisd gone', () => !alive(chassisd), 10000);
    for (const b of BOARDS) assert.ok(alive(managerOf(b).init), `${b}'s daemons outlive chassisd (as the boards do) until down`);
    const r = await chassis!.down();
    assert.equal(r.wasRunning, false);
    assert.deepEqual(r.cleanup?.survivors ?? [], []);
    for (const b of BOARDS) assert.ok(r.cleanup!.killed.some((k) => k.startsWith(`${b} corosync and pacemaker`)), `${b}'s daemons ended by down: ${r.cleanup!.killed.join('; ')}`);
    chassis = undefined;
    for (const p of seen) assert.ok(!alive(p), `pid ${p} (an unshare or a namespace's pid 1) is gone`);
    assert.deepEqual(processesWithMarker(RUN_DIR), []);
    for (const ns of namespacesList()) assert.ok(!ns.startsWith(`${NAME}-`), `namespace ${ns} is gone`);
  });
});
