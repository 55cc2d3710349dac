/**
 * Alarms of a real pair reach a real NMS (root): the simulated chassis (boards without a guest), both
 * profiles with an `snmp` section naming a Debian snmptrapd that this test starts in the chassis'
 * service network namespace (192.0.2.100, the documentation range the chassis made), decoding with
 * docs/mib/UNDERSTUDY-ALARM-MIB.txt. An Ethernet partner link cut on the chassis raises
 * partner-link-down on both boards and each board's raise arrives; `understudy alarms --json` shows it
 * in the ietf-alarms shape; the backup's controller killed (kill -9) while the link is still cut is
 * reset and restarts with the alarm still active (same time-created) and not raised again at the
 * manager; the heal clears it on both boards and each clear arrives.
 * snmptrapd is ended by its pid; the chassis is torn down in after(), failed or not.
 */
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Role } from '../../src/ha/frame.js';
import type { HaStatus } from '../../src/ha/ha-controller.js';
import { callControl } from '../../src/mgmt/ipc.js';
import { chassisDown } from '../../src/sim/chassis/launcher.js';
import { CLI_ENTRY, PACKAGE_ROOT, SERVICE_CLIENT_ADDRESS, type BoardName } from '../../src/sim/chassis/layout.js';
import { Chassis } from '../../src/sim/chassis/rig.js';
import { eventually } from '../support/rig.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BOARDS: BoardName[] = ['sim-a', 'sim-b'];
const TRAP_PORT = 16162;

/** Polls a condition (test/support/rig.ts's eventually takes values, not booleans). */
const until = (check: () => Promise<boolean>, timeoutMs: number) => eventually(async () => (await check()) || undefined, timeoutMs, 100);

describe('alarms of the simulated chassis at a real snmptrapd (root)', function () {
  this.timeout(180000);
  const name = `al${process.pid % 10000}`;
  const runDir = `/tmp/us-alarms-${process.pid}`;
  let chassis: Chassis | undefined;
  let trapd: ChildProcess | undefined;
  const trapLog = `${runDir}-snmptrapd.log`;

  const sock = (b: BoardName) => chassis!.layout.boards[b].controlSocket;
  const roleOf = async (b: BoardName): Promise<Role | 'unavailable'> => {
    try { return ((await callControl(sock(b), 'role', {}, 3000)) as HaStatus).role; } catch { return 'unavailable'; }
  };
  async function cliAlarms(b: BoardName): Promise<any> {
    const r = await promisify(execFile)(process.execPath, [CLI_ENTRY, 'alarms', '--board', chassis!.layout.boards[b].profile, '--json'], { timeout: 60000 });
    return JSON.parse(r.stdout);
  }
  const ethernetAlarm = async (b: BoardName) => ((await cliAlarms(b))['ietf-alarms:alarms']['alarm-list'].alarm as any[])
    .find((a) => a.resource === `/board/${b}/partner-link/ethernet`);
  /** The notifications for `resource` snmptrapd decoded so far: their severities, in order. */
  const atManager = (resource: string): string[] => (existsSync(trapLog) ? readFileSync(trapLog, 'utf8') : '').split('\n')
    .filter((l) => l.includes(`usAlarmResource = STRING: "${resource}"`))
    .map((l) => /usAlarmPerceivedSeverity = INTEGER: (\w+\(\d\))/.exec(l)?.[1] ?? `undecoded: ${l}`);

  before(async function () {
    if (process.getuid?.() !== 0 || !existsSync('/usr/sbin/snmptrapd') || !existsSync('/usr/bin/snmptrap')) this.skip();
    chassis = await Chassis.up({ name, runDir, guest: 'none', baud: 115200 });
    writeFileSync(`${runDir}-snmptrapd.conf`, 'authCommunity log chassis-nms\n');
    trapd = spawn('ip', ['netns', 'exec', chassis.layout.serviceNetns, 'snmptrapd', '-f', '-C', '-c', `${runDir}-snmptrapd.conf`, '-Lf', trapLog,
      '-M', join(PACKAGE_ROOT, 'docs/mib'), '-m', 'UNDERSTUDY-ALARM-MIB', `udp:${SERVICE_CLIENT_ADDRESS}:${TRAP_PORT}`],
    { stdio: 'ignore', detached: true, env: { ...process.env, SNMP_PERSISTENT_DIR: `${runDir}-snmptrapd`, MIBS: '' } });
    await until(async () => existsSync(trapLog) && readFileSync(trapLog, 'utf8').includes('NET-SNMP version'), 10000);
    await chassis.coldStart((_b, profile) => {
      profile.snmp = { holdMs: 100, managers: [{ version: 'v2c', address: SERVICE_CLIENT_ADDRESS, port: TRAP_PORT, community: 'chassis-nms' }] };
    });
    await until(async () => {
      const r = await Promise.all(BOARDS.map(roleOf));
      return r.includes('PRIMARY') && r.includes('BACKUP');
    }, 30000);
  });

  after(async function () {
    if (trapd?.pid && trapd.exitCode === null) { try { process.kill(-trapd.pid, 'SIGKILL'); } catch { /* gone */ } }
    const failed = this.test?.parent?.tests.some((t) => t.state === 'failed') ?? false;
    if (failed) console.log(`    (kept ${runDir} and ${trapLog} for their logs)`);
    await chassisDown({ name, runDir, purge: !failed });
    chassis = undefined;
    if (!failed) for (const f of [trapLog, `${runDir}-snmptrapd.conf`, `${runDir}-snmptrapd`]) rmSync(f, { recursive: true, force: true });
  });

  it('an Ethernet cut raises partner-link-down on both boards at the manager, once across a controller restart; the heal clears it', async () => {
    await chassis!.cut('ethernet');
    for (const b of BOARDS) {
      const res = `/board/${b}/partner-link/ethernet`;
      await until(async () => atManager(res).length >= 1, 20000);
      assert.deepEqual(atManager(res), ['major(4)'], `${b}: one raise, decoded with the MIB`);
      const a = await ethernetAlarm(b);
      assert.equal(a['is-cleared'], false);
      assert.equal(a['perceived-severity'], 'major');
      assert.equal(a['alarm-type-id'], 'understudy-alarms:partner-link-down');
    }

    // The backup's controller dies and is reset by its partner; it restarts with the link still cut.
    const backup = (await roleOf('sim-a')) === 'BACKUP' ? 'sim-a' : 'sim-b';
    const before = await ethernetAlarm(backup);
    const killed = (await chassis!.fail(backup, 'kill')) as { pid: number | null };
    assert.ok(killed.pid, 'a controller was killed');
    await until(async () => (await roleOf(backup)) === 'BACKUP', 60000);
    assert.equal((await ethernetAlarm(backup))?.['is-cleared'], false, 'active at once after the restart (kept in the store)');
    // The restarted controller looks at its links once ha.startupWaitMs after it started (a link never
    // heard since gets its alarm then): past that, and past holdMs, a second raise would be at the manager.
    const profile = JSON.parse(readFileSync(chassis!.layout.boards[backup].profile, 'utf8')) as { ha: { startupWaitMs?: number } };
    await sleep((profile.ha.startupWaitMs ?? 5000) + 2000);
    const after = await ethernetAlarm(backup);
    assert.equal(after['is-cleared'], false, 'still active after the restart');
    assert.equal(after['time-created'], before['time-created'], 'the same alarm');
    assert.equal(after['last-raised'], before['last-raised'], 'not raised again');
    assert.deepEqual(atManager(`/board/${backup}/partner-link/ethernet`), ['major(4)'], 'not raised twice at the manager');

    await chassis!.heal('ethernet');
    for (const b of BOARDS) {
      const res = `/board/${b}/partner-link/ethernet`;
      await until(async () => atManager(res).length >= 2, 20000);
      assert.deepEqual(atManager(res), ['major(4)', 'cleared(1)'], `${b}: raise, then clear`);
      assert.equal((await ethernetAlarm(b))['is-cleared'], true);
    }
  });
});
