/**
 * IPMI fencing against a real BMC implementation: ipmitool (-I lanplus) to ipmi_sim (Debian's
 * openipmi), as root, on loopback only.
 *
 * The device: IpmitoolFencing against an ipmi_sim on 127.0.<n>.50 whose chassis-control script
 * drives a power controller in front of a stand-in board (a real `sleep` process: powered off, it is
 * gone): status, off, on and reset do what they say and the process really dies; a wrong password, an
 * unknown user, a BMC that is not there and one that answers too slowly (a UDP relay that delays every
 * datagram) are errors that name the partner and the BMC, and the board is left running.
 *
 * The chassis (`chassis up --fencing ipmi`): the HA layer fences through the partner's ipmi_sim —
 * the power controller sees the BMC's STATUS, OFF, ON, never the simulated fencing's RESET — and
 * promotes only after that fence; with a wrong password or a stopped BMC it does not promote, says
 * why, and the pair recovers once the BMC works again.
 *
 * Every process the test starts is ended by pid in after/afterEach; every chassis is torn down.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../src/core/log.js';
import type { Role } from '../../src/ha/frame.js';
import type { HaStatus } from '../../src/ha/ha-controller.js';
import { IpmitoolFencing } from '../../src/hw/fencing/fencing.js';
import { callControl } from '../../src/mgmt/ipc.js';
import { BMC_CIPHER_SUITE, BMC_USER, bmcFiles, writeBmcConfig, type BmcFiles } from '../../src/sim/chassis/bmc.js';
import type { PowerState } from '../../src/sim/chassis/board.js';
import { chassisDown } from '../../src/sim/chassis/launcher.js';
import type { BoardName } from '../../src/sim/chassis/layout.js';
import { PowerController, type PowerTarget } from '../../src/sim/chassis/power-controller.js';
import { Chassis } from '../../src/sim/chassis/rig.js';
import type { JournalEvent } from '../../src/store/journal.js';
import { eventually } from '../support/eventually.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = createLogger('test', { level: 'silent' });
const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

/** A stand-in board: powered on, it is a running `sleep`; powered off, that process is gone. */
class ProcessBoard implements PowerTarget {
  proc?: ChildProcess;
  power: PowerState = 'off';
  readonly pids: number[] = [];

  async powerOn(): Promise<void> {
    if (this.power === 'on') return;
    this.proc = spawn('sleep', ['600'], { stdio: 'ignore' });
    await new Promise<void>((resolve, reject) => { this.proc!.once('spawn', () => resolve()); this.proc!.once('error', reject); });
    this.pids.push(this.proc.pid!);
    this.power = 'on';
  }

  async powerOff(): Promise<void> {
    if (this.power === 'off') return;
    const p = this.proc!;
    const gone = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGKILL');
    await gone;
    this.power = 'off';
  }

  async reset(_cause: unknown, killed?: () => void): Promise<boolean> {
    if (this.power === 'off') return false;
    await this.powerOff();
    killed?.();
    await this.powerOn();
    return true;
  }
}

/** A UDP relay in front of a BMC that holds every datagram, both ways, for `delayMs`: a slow BMC. */
class SlowRelay {
  private readonly front: Socket = createSocket('udp4');
  private readonly back: Socket = createSocket('udp4');
  private client?: RemoteInfo;
  private readonly timers = new Set<NodeJS.Timeout>();
  relayed = 0;

  /** Runs `send` after the delay, unless the relay is closed by then. */
  private later(send: () => void): void {
    const t = setTimeout(() => { this.timers.delete(t); send(); }, this.delayMs);
    this.timers.add(t);
  }

  constructor(private readonly delayMs: number, private readonly bmc: { address: string; port: number }) {}

  async listen(address: string, port: number): Promise<void> {
    this.front.on('message', (m, from) => {
      this.client = from;
      this.later(() => { this.relayed++; this.back.send(m, this.bmc.port, this.bmc.address); });
    });
    this.back.on('message', (m) => {
      const to = this.client;
      if (to) this.later(() => this.front.send(m, to.port, to.address));
    });
    await new Promise<void>((r) => this.back.bind(0, '127.0.0.1', () => r()));
    await new Promise<void>((r) => this.front.bind(port, address, () => r()));
  }

  close(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.front.close();
    this.back.close();
  }
}

describe('IPMI fencing against ipmi_sim (root)', function () {
  this.timeout(120000);

  before(function () {
    if (process.getuid?.() !== 0) this.skip();
  });

  describe('the ipmitool fencing device', () => {
    const net = 60 + (process.pid % 150);
    const bmcAddress = `127.0.${net}.50`;
    const dir = mkdtempSync(join(tmpdir(), 'us-ipmi-'));
    const board = new ProcessBoard();
    const controller = new PowerController({ 'sim-a': new ProcessBoard(), 'sim-b': board }, log);
    let bmc: ChildProcess | undefined;
    let files: BmcFiles;
    const device = (o: Partial<ConstructorParameters<typeof IpmitoolFencing>[0]> = {}) =>
      new IpmitoolFencing({ host: bmcAddress, port: 623, user: BMC_USER, passwordFile: files.partnerPasswordFile, cipherSuite: BMC_CIPHER_SUITE, ...o });

    before(async function () {
      if (process.getuid?.() !== 0) this.skip();
      await controller.listen(join(dir, 'power.sock'));
      await board.powerOn();
      mkdirSync(join(dir, 'bmc'));
      files = {
        board: 'sim-b', dir: join(dir, 'bmc'), lanConf: join(dir, 'bmc', 'lan.conf'), emu: join(dir, 'bmc', 'bmc.emu'), control: join(dir, 'bmc', 'chassis-control'),
        stateDir: join(dir, 'bmc', 'state'), log: join(dir, 'bmc', 'ipmi_sim.log'), partnerPasswordFile: join(dir, 'fence.pass'), netns: '', address: bmcAddress, port: 623,
      };
      const argv = writeBmcConfig(files, join(dir, 'power.sock'));
      const logFd = openSync(files.log, 'a', 0o600);
      bmc = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', logFd, logFd] });
      closeSync(logFd);
      await new Promise<void>((resolve, reject) => { bmc!.once('spawn', () => resolve()); bmc!.once('error', reject); });
      await eventually('ipmi_sim answers', async () => (await device().powerState('sim-b', 2000)) === 'on', 15000, 200)
        .catch((e: Error) => { throw new Error(`${e.message}\n${readFileSync(files.log, 'utf8')}`); });
    });

    after(async () => {
      if (bmc?.pid && bmc.exitCode === null) {
        bmc.kill('SIGKILL');
        await new Promise((r) => bmc!.once('exit', r));
      }
      controller.close();
      await board.powerOff();
      rmSync(dir, { recursive: true, force: true });
    });

    it('status, off, on and reset through the BMC really power the board: off, its process is gone; on or reset, a new one runs', async () => {
      const d = device();
      assert.equal(await d.powerState('sim-b'), 'on');
      const first = board.proc!.pid!;
      assert.deepEqual(await d.reset('sim-b'), { outcome: 'reset' });
      assert.ok(!alive(first), 'the reset killed the board');
      assert.equal(board.power, 'on', 'and powered it on again');
      assert.notEqual(board.proc!.pid, first);
      const second = board.proc!.pid!;
      await d.powerOff('sim-b');
      assert.ok(!alive(second), 'powered off: its process is gone when ipmitool returns');
      assert.equal(await d.powerState('sim-b'), 'off');
      assert.deepEqual(await d.reset('sim-b'), { outcome: 'was-off' }, 'a board found off is left off');
      assert.equal(board.power, 'off');
      const requests = controller.status().recent.map((r) => r.request).filter((r) => r !== 'STATUS sim-b');
      assert.deepEqual(requests.slice(-3), ['OFF sim-b', 'ON sim-b', 'OFF sim-b'], 'the BMC\'s chassis control reached the power controller: off and on (the reset), then off');
      assert.ok(!requests.includes('RESET sim-b'), 'a fence is off, then on (confirmed off), never a blind reset');
      await board.powerOn();
    });

    it('a wrong password or an unknown user: refused credentials, naming the partner and the BMC; the board runs on', async () => {
      const wrong = join(dir, 'wrong.pass');
      writeFileSync(wrong, 'not-the-password\n', { mode: 0o600 });
      const pid = board.proc!.pid!;
      await assert.rejects(device({ passwordFile: wrong }).powerOff('sim-b'), (e: { code: string; message: string }) => {
        assert.equal(e.code, 'US_ERR_FENCING');
        assert.match(e.message, new RegExp(`ipmitool power off of sim-b \\(BMC ${bmcAddress.replace(/\./g, '\\.')}\\) failed: the BMC refused the credentials \\(wrong password`));
        return true;
      });
      await assert.rejects(device({ user: 'intruder' }).reset('sim-b'), (e: { code: string; message: string }) => e.code === 'US_ERR_FENCING' && /refused the credentials \(unknown user/.test(e.message));
      assert.ok(alive(pid) && board.power === 'on', 'nothing was powered off');
    });

    it('a BMC that is not there: no answer, naming the address; a missing password file names the field', async () => {
      const absent = `127.0.${net}.51`;
      await assert.rejects(device({ host: absent }).powerState('sim-b', 3000), (e: { code: string; message: string }) => {
        assert.equal(e.code, 'US_ERR_FENCING');
        assert.ok(e.message.includes(`BMC ${absent}`), e.message);
        assert.match(e.message, /no answer from the BMC|did not answer within 3000 ms/);
        return true;
      });
      await assert.rejects(device({ passwordFile: join(dir, 'nope.pass') }).powerOff('sim-b'), (e: { code: string; message: string }) => e.code === 'US_ERR_FENCING' && /fencing\.passwordFile .*nope\.pass: ENOENT/.test(e.message));
      assert.equal(board.power, 'on');
    });

    it('a slow BMC: an answer later than the call\'s timeout is a failed fence (ipmitool killed); the same BMC a little slower than usual still fences', async () => {
      const slowAddress = `127.0.${net}.52`;
      const slow = new SlowRelay(1500, { address: bmcAddress, port: 623 });
      const lagging = new SlowRelay(50, { address: bmcAddress, port: 623 });
      await slow.listen(slowAddress, 623);
      await lagging.listen(`127.0.${net}.53`, 623);
      try {
        const pid = board.proc!.pid!;
        await assert.rejects(device({ host: slowAddress }).powerOff('sim-b', 1000), (e: { code: string; message: string }) => {
          assert.equal(e.code, 'US_ERR_FENCING');
          assert.match(e.message, new RegExp(`sim-b \\(BMC ${slowAddress.replace(/\./g, '\\.')}\\) failed: the BMC did not answer within 1000 ms`));
          return true;
        });
        assert.ok(alive(pid) && board.power === 'on', 'the board was not powered off');
        // The relay works: with a small delay the same path fences.
        assert.equal(await device({ host: `127.0.${net}.53` }).powerState('sim-b', 10000), 'on');
        assert.ok(lagging.relayed >= 2, `answered through the relay (${lagging.relayed} datagrams)`);
      } finally {
        slow.close();
        lagging.close();
      }
    });
  });

  describe('the simulated chassis with --fencing ipmi', () => {
    const name = `ip${process.pid % 1000}`;
    const runBase = `/tmp/us-ipmi-${process.pid}`;
    let runDir = '';
    let run = 0;
    let chassis: Chassis | undefined;
    const stopped: number[] = [];
    const BOARDS: BoardName[] = ['sim-a', 'sim-b'];

    const sock = (b: BoardName) => chassis!.layout.boards[b].controlSocket;
    const role = (b: BoardName) => callControl(sock(b), 'role', {}, 3000) as Promise<HaStatus>;
    const roleOf = async (b: BoardName): Promise<Role | 'unavailable'> => role(b).then((r) => r.role, () => 'unavailable' as const);
    const events = async (b: BoardName, sinceId = 0, kind?: string): Promise<JournalEvent[]> =>
      ((await callControl(sock(b), 'events', { limit: 10000, sinceId, ...(kind ? { kind } : {}) }, 3000)) as { events: JournalEvent[] }).events;
    const lastEventId = async (b: BoardName) => ((await callControl(sock(b), 'events', { limit: 1 }, 3000)) as { events: JournalEvent[] }).events.at(-1)?.id ?? 0;
    const settledPair = () => eventually('one PRIMARY and one BACKUP', async () => {
      const [a, b] = await Promise.all(BOARDS.map(roleOf));
      if (a === 'PRIMARY' && b === 'BACKUP') return { primary: 'sim-a' as BoardName, backup: 'sim-b' as BoardName };
      if (a === 'BACKUP' && b === 'PRIMARY') return { primary: 'sim-b' as BoardName, backup: 'sim-a' as BoardName };
      return undefined;
    }, 30000);
    const bmcPid = async (b: BoardName) => (await chassis!.status()).bmcs.find((x) => x.board === b)!.pid;

    beforeEach(async () => {
      runDir = `${runBase}-${++run}`;
      chassis = await Chassis.up({ name, runDir, guest: 'none', baud: 115200, fencing: 'ipmi' });
    });

    afterEach(async function () {
      for (const pid of stopped.splice(0)) if (alive(pid)) process.kill(pid, 'SIGCONT');
      const failed = this.currentTest?.state === 'failed';
      if (failed) console.log(`    (kept ${runDir} for its logs: chassisd.log, sim-*/board.log, sim-*/bmc/ipmi_sim.log)`);
      const st = chassis ? await chassis.status().catch(() => undefined) : undefined;
      await chassisDown({ name, runDir, purge: !failed });
      for (const b of st?.bmcs ?? []) assert.ok(!alive(b.pid), `the BMC of ${b.board} (pid ${b.pid}) is gone after chassis down`);
      chassis = undefined;
    });

    it('each board\'s BMC answers in its partner\'s namespace; the primary killed, the backup fences it through IPMI (status, off, on), then promotes; the board boots again and rejoins', async () => {
      const st = await chassis!.status();
      assert.equal(st.chassis.fencing, 'ipmi');
      assert.deepEqual(st.bmcs.map((b) => [b.board, b.netns, b.alive]), [['sim-a', chassis!.layout.boards['sim-b'].netns, true], ['sim-b', chassis!.layout.boards['sim-a'].netns, true]]);
      const { primary, backup } = await settledPair();
      const since = await lastEventId(backup);
      const requestsBefore = st.powerController.requests;
      const before = await chassis!.board(primary);
      await chassis!.fail(primary, 'kill');
      await eventually(`${backup} PRIMARY`, async () => (await roleOf(backup)) === 'PRIMARY', 20000, 50);
      const journal = await events(backup, since);
      const fence = journal.find((e) => e.kind === 'fence' && e.detail?.outcome !== undefined);
      assert.ok(fence, journal.map((e) => e.message).join('\n'));
      assert.equal(fence.detail!.method, 'ipmitool');
      assert.equal(fence.detail!.outcome, 'reset');
      assert.equal(fence.detail!.partner, primary);
      const promoted = journal.find((e) => e.kind === 'role.transition' && e.detail!.to === 'PRIMARY')!;
      assert.ok(fence.id < promoted.id, 'fenced before promoted');
      const pc = (await chassis!.status()).powerController;
      const seen = pc.recent.slice(-(pc.requests - requestsBefore)).map((r) => `${r.request} → ${r.reply}`);
      const off = seen.indexOf(`OFF ${primary} → OK OFF ${primary}`);
      const on = seen.indexOf(`ON ${primary} → OK ON ${primary}`);
      assert.ok(off >= 0 && on > off, `the BMC powered it off, then on: ${seen.join('; ')}`);
      assert.ok(seen.slice(0, off).includes(`STATUS ${primary} → OK ON ${primary}`), `its power asked first: ${seen.join('; ')}`);
      assert.ok(!seen.some((r) => r.startsWith('RESET')), 'not the simulated fencing\'s RESET');
      await eventually(`${primary} booted again`, async () => (await chassis!.board(primary)).boots > before.boots, 15000);
      assert.deepEqual(await settledPair(), { primary: backup, backup: primary });
    });

    it('a wrong password for the BMC: the backup does not promote, journals why (naming the BMC), and promotes once the password is right', async () => {
      const { primary, backup } = await settledPair();
      const pass = bmcFiles(chassis!.layout, primary).partnerPasswordFile;
      const right = readFileSync(pass, 'utf8');
      writeFileSync(pass, 'wrong-password\n', { mode: 0o600 });
      const since = await lastEventId(backup);
      await chassis!.fail(primary, 'kill');
      const failed = await eventually('FENCING FAILED journaled', async () => (await events(backup, since, 'fence')).find((e) => /FENCING FAILED/.test(e.message)), 15000, 50);
      assert.match(failed.message, /refused the credentials \(wrong password/);
      assert.match(failed.message, /BMC 127\.0\.50\./);
      const s = await role(backup);
      assert.notEqual(s.role, 'PRIMARY', 'no promotion without a confirmed fence');
      assert.ok(s.alarms.some((a) => /^fencing failed/.test(a)), s.alarms.join('; '));
      assert.ok(!(await events(backup, since, 'role.transition')).some((e) => e.detail!.to === 'PRIMARY'));
      writeFileSync(pass, right, { mode: 0o600 });
      await eventually(`${backup} PRIMARY once the BMC accepts it`, async () => (await roleOf(backup)) === 'PRIMARY', 20000, 50);
      const ok = (await events(backup, since, 'fence')).find((e) => e.detail?.outcome !== undefined);
      assert.ok(ok && ok.detail!.method === 'ipmitool', 'promoted after an IPMI fence');
    });

    it('a BMC that does not answer (ipmi_sim stopped): no promotion while it is silent, the error says so; once it answers the pair recovers', async () => {
      const { primary, backup } = await settledPair();
      const pid = await bmcPid(primary);
      process.kill(pid, 'SIGSTOP');
      stopped.push(pid);
      const since = await lastEventId(backup);
      await chassis!.fail(primary, 'kill');
      const failed = await eventually('FENCING FAILED journaled', async () => (await events(backup, since, 'fence')).find((e) => /FENCING FAILED/.test(e.message)), 30000, 100);
      assert.match(failed.message, /did not answer within \d+ ms|no answer from the BMC/);
      assert.notEqual(await roleOf(backup), 'PRIMARY');
      assert.ok(!(await events(backup, since, 'role.transition')).some((e) => e.detail!.to === 'PRIMARY'), 'never PRIMARY while the BMC is silent');
      process.kill(pid, 'SIGCONT');
      stopped.splice(stopped.indexOf(pid), 1);
      await settledPair();
    });
  });
});
