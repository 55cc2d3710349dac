/**
 * A replicated pair on the simulated chassis for integration tests: start it protected, drive load
 * through a fault and check that nothing acknowledged was lost, read the guests' state. Shared by
 * the integration tests of replication, replication faults, checkpoints, guest and rolling upgrades.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { cpSync, existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { callControl } from '../../src/mgmt/ipc.js';
import { Chassis } from '../../src/sim/chassis/rig.js';
import { PACKAGE_ROOT, SERVICE_CLIENT_ADDRESS, SERVICE_PORT, SERVICE_VIP, partnerOf, type BoardName, type ChassisBoard } from '../../src/sim/chassis/layout.js';
import { startLoad, waitProtected } from '../../src/sim/pair.js';
import type { LoadResult } from '../../src/sim/load.js';

export class PairUnderTest {
  chassis!: Chassis;
  primary!: BoardName;
  private tagN = 0;

  /**
   * `guestFile`: another guest descriptor for both boards (default guests/dx-legacy.json);
   * `boards`, `manager`: spares beside the pair, and Pacemaker on every board (docs/pacemaker.md).
   */
  constructor(readonly name: string, private readonly opts: { guestFile?: string; boards?: number; manager?: 'understudy' | 'pacemaker' } = {}) {}

  async up(): Promise<void> {
    this.chassis = await Chassis.up({ name: this.name, runDir: `/tmp/us-${this.name}`, guest: 'primary', guestFile: this.opts.guestFile, boards: this.opts.boards, manager: this.opts.manager });
    this.primary = await waitProtected(this.chassis.layout, 240000);
  }

  async down(): Promise<void> {
    // US_TEST_KEEP_LOGS=<dir>: keep the boards' journals and logs for a post-mortem.
    const keep = process.env.US_TEST_KEEP_LOGS;
    if (keep && this.chassis) {
      try {
        cpSync(this.chassis.layout.runDir, join(keep, this.name), { recursive: true, filter: (f) => /(\.(log|db|db-wal|json)|\/store)$/.test(f) || !/\./.test(f.split('/').pop()!) && !/watchdog|tty|console-/.test(f) });
      } catch (e) {
        console.error(`      could not keep the logs: ${(e as Error).message}`);
      }
    }
    await this.chassis?.down({ purge: true });
  }

  ctl(b: ChassisBoard, cmd: string, args: Record<string, unknown> = {}): Promise<any> {
    return callControl(this.chassis.layout.boards[b].controlSocket, cmd, args, 30000);
  }

  /**
   * Sends requests from the service network (as a client would, retrying every 200 ms up to `tries`
   * times) and returns the replies, in order. `ids`: the request ids to use (default: fresh ones).
   */
  async ask(requests: string[], tries = 100, ids?: string[]): Promise<string[]> {
    const script = `import { UdpClient } from ${JSON.stringify(join(PACKAGE_ROOT, 'dist', 'src', 'sim', 'udp-client.js'))};
const c = await new UdpClient({ address: ${JSON.stringify(SERVICE_VIP)}, port: ${SERVICE_PORT} }, ${JSON.stringify(SERVICE_CLIENT_ADDRESS)}).open();
const out = [];
const ids = ${JSON.stringify(ids ?? null)};
for (const [i, r] of ${JSON.stringify(requests)}.entries()) out.push(await c.request(ids ? ids[i] : 'u' + process.pid + 'x' + i, r, 200, ${tries}));
c.close();
console.log(JSON.stringify(out));`;
    const { stdout } = await promisify(execFile)('ip', ['netns', 'exec', this.chassis.layout.serviceNetns, process.execPath, '--input-type=module', '-e', script], { timeout: Math.max(120000, requests.length * tries * 250) });
    return JSON.parse(stdout.trim().split('\n').pop()!) as string[];
  }

  /** The service's STATS counters (subscribers, calls set up), asked as a client would. */
  async stats(): Promise<{ subs: number; total: number; reply: string }> {
    const [reply] = await this.ask(['STATS']);
    const m = / OK STATS subs=(\d+) active=\d+ total=(\d+) /.exec(reply!);
    assert.ok(m, `STATS answered: ${reply}`);
    return { subs: Number(m[1]), total: Number(m[2]), reply: reply! };
  }

  /**
   * Runs load for `ms`, applies `fault` after `faultAfter` ms, and checks nothing acknowledged was
   * lost: every acknowledged registration known, retried ids answered identically, no call id
   * acknowledged twice, and the service's counters never behind where they were plus what this
   * load was told (a copy restarted from an older state would have fewer subscribers and calls). The mix is sparse in
   * registrations (one in ten steps): the guest never forgets a subscriber and holds 4096, and a
   * chassis shared by a whole suite of loads must never reach that (a load that does measures
   * ERR FULL, not the service, and fails here).
   */
  async loadThrough(ms: number, faultAfter: number, fault: () => Promise<unknown>, tag = `T${this.tagN++}x`, regEvery = 10): Promise<{ res: LoadResult; faultAt: number }> {
    const before = await this.stats();
    assert.ok(before.subs + Math.ceil((ms / 1000) * 150 / regEvery) + 10 < 4096, `the guest is too full for this load (${before.reply}): the suite registers too much`);
    const load = startLoad(this.chassis.layout, { rate: 150, durationMs: ms, tag, retryMs: 20, verify: true, regEvery });
    await new Promise((r) => setTimeout(r, faultAfter));
    const faultAt = Date.now();
    try {
      await fault();
    } catch (e) {
      // The load runs on to its end (it must not outlive the test); say what each board did.
      await load.result.catch(() => undefined);
      throw new Error(`${(e as Error).message}\n${await this.postMortem(faultAt)}`);
    }
    let res: LoadResult;
    try {
      res = await load.result;
    } catch (e) {
      // CI prints only the test output: say what each board did around the fault.
      throw new Error(`${(e as Error).message}\n${await this.postMortem(faultAt)}`);
    }
    assert.ok(res.acked > 100, `load ran (${res.acked} answered)`);
    assert.equal(res.limitReplies, 0, `the guest answered ERR FULL ${res.limitReplies} times: a limit was reached`);
    const lost = [
      ...(res.verify!.missing.length ? [`acknowledged registrations missing on the new primary: ${res.verify!.missing.slice(0, 5).join(', ')}`] : []),
      ...(res.verify!.retriedDifferent.length ? [`retried ids answered differently: ${res.verify!.retriedDifferent.slice(0, 3).join('; ')}`] : []),
      ...(res.verify!.callIdsReused.length ? [`call ids acknowledged twice: ${res.verify!.callIdsReused.slice(0, 3).join('; ')}`] : []),
    ];
    // CI prints only the test output: a loss comes with what each board did around the fault.
    if (lost.length) assert.fail(`${lost.join('\n')}\n${await this.postMortem(faultAt)}`);
    assert.ok(res.verify!.retriedIdentical > 0);
    assert.ok(res.registered > 0 && res.calls > 0, `the mix ran (${res.registered} registered, ${res.calls} calls)`);
    const after = await this.stats();
    // Subscribers never go away (a REG of a known one is answered OK too: only the count cannot fall); every call set up adds one to total.
    assert.ok(after.subs >= before.subs && after.total >= before.total + res.calls,
      `the service is behind what it acknowledged: before ${before.reply}, after ${after.reply}, this load set up ${res.calls} calls`);
    return { res, faultAt };
  }

  /** Each board's journal since shortly before `since` (role, replication, HA events), for a failure message. */
  async postMortem(since: number): Promise<string> {
    const out: string[] = [];
    for (const b of Object.keys(this.chassis.layout.boards) as BoardName[]) {
      try {
        // Read from the board's database: a board powered off has no control socket.
        const db = new Database(join(this.chassis.layout.boards[b].storageDir, 'understudy.db'), { readonly: true });
        // Link flaps (one pair of lines per 20 ms silence) would push everything else out: counted.
        const events = db.prepare("SELECT at, kind, message FROM events WHERE kind != 'link' ORDER BY id DESC LIMIT 150").all() as Array<{ at: string; kind: string; message: string }>;
        const since30 = new Date(since - 30000).toISOString();
        const linkDowns = (db.prepare("SELECT COUNT(*) AS n FROM events WHERE kind = 'link' AND message LIKE '%DOWN%' AND at >= ?").get(since30) as { n: number }).n;
        db.close();
        const recent = events.filter((e) => Date.parse(e.at) >= since - 30000).sort((x, y) => x.at.localeCompare(y.at));
        out.push(`--- ${b} (fault at ${new Date(since).toISOString()}; ${linkDowns} link-down events since 30 s before it, not listed):`, ...recent.map((e) => `  ${e.at} ${e.kind}: ${e.message}`));
      } catch (e) {
        out.push(`--- ${b}: no journal (${(e as Error).message})`);
      }
    }
    for (const b of Object.keys(this.chassis.layout.boards) as BoardName[]) {
      const st = await callControl(this.chassis.layout.boards[b].controlSocket, 'status', {}, 3000).catch(() => undefined) as any;
      if (st) out.push(`--- ${b} now: ${st.role}, guest ${st.guest?.state}, ${JSON.stringify({ delivery: st.replication?.delivery, protected: st.replication?.protected, lastSeq: st.replication?.lastSeq, deliveredSeq: st.replication?.deliveredSeq, drops: st.replication?.drops })}`);
    }
    return out.join('\n');
  }

  /**
   * Kernel oopses and crashes in the guests' console logs (every copy a board ran), but for the
   * panics a test caused on purpose with an NMI (guest.inject nmi).
   */
  guestCrashes(): string[] {
    const found: string[] = [];
    let logs = 0;
    for (const b of Object.values(this.chassis.layout.boards)) {
      const log = join(b.storageDir, 'qemu', 'console.log');
      if (!existsSync(log)) continue;
      logs++;
      for (const line of readFileSync(log, 'latin1').split('\n')) {
        if (/Kernel panic - not syncing: NMI: Not continuing/.test(line)) continue;
        if (/\bBUG:|Oops:|general protection fault|Kernel panic|DX-FATAL/.test(line)) found.push(`${b.name}: ${line.trim()}`);
      }
    }
    // A guest ran on this pair: no console log at all means the check looked in the wrong place.
    if (logs === 0) found.push('no guest console log found (<storageDir>/qemu/console.log on either board)');
    return found;
  }

  /**
   * Waits (up to 30 s) until both copies report the same STATE (they are equal once the backup has
   * processed everything it was given); otherwise returns both STATE lines and replication views.
   */
  async settledStates(): Promise<{ same: true } | { same: false; primary: string; backup: string; replication: unknown[] }> {
    const backup = partnerOf(this.primary);
    // A copy being re-cloned has no running guest for a moment: that is not settled yet, not a failure.
    const state = async (b: BoardName) => ((await this.ctl(b, 'guest.manage', { command: 'STATE' }).catch((e: Error) => ({ reply: `no STATE from ${b}: ${e.message}` }))) as { reply: string }).reply;
    let a = '';
    let c = '';
    for (let i = 0; i < 300; i++) {
      [a, c] = [await state(this.primary), await state(backup)];
      if (a === c && a.startsWith('OK STATE')) return { same: true };
      await new Promise((r) => setTimeout(r, 100));
    }
    const view = async (b: BoardName) => {
      const g = ((await this.ctl(b, 'status')) as { guest?: { requestsProcessed?: number; appSeqExpected?: number; nic?: unknown } }).guest;
      return { board: b, requestsProcessed: g?.requestsProcessed, appSeqExpected: g?.appSeqExpected, nic: g?.nic, replication: (await this.ctl(b, 'replication.status')).replication };
    };
    const replication = [await view(this.primary), await view(backup)];
    return { same: false, primary: a, backup: c, replication };
  }
}
