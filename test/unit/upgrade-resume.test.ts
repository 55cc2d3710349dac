/**
 * A rolling upgrade resumed after the orchestrating controller restarted (src/upgrade/rolling.ts).
 * `resumePoint` on every state the two boards can be in; then whole resumed runs on this board's real
 * slots, boot environment and installer, with the partner a fake that answers the upgrade channel's
 * requests from a small model of a board: the partner took over while its trial ran (it is committed,
 * no switchover, this board installs and reboots into its trial), and the partner took over before
 * it was upgraded (it hands the primary role back, then the run goes on from its installed trial).
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBoardProfile } from '../../src/config/board-profile.js';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { UsError } from '../../src/core/errors.js';
import { upgradeSetupFor, type UpgradeSetup } from '../../src/upgrade/board-setup.js';
import { readBootState, simulateBoot } from '../../src/upgrade/bootflow.js';
import { buildPackage } from '../../src/upgrade/builder.js';
import { installPackage } from '../../src/upgrade/installer.js';
import { generateKeys, loadPrivateKey, loadTrustedKeys } from '../../src/upgrade/keys.js';
import type { PeerClient, PeerRequest } from '../../src/upgrade/peer.js';
import { RollingUpgrade, resumePoint, type BoardUpgradeView, type RollingRecord } from '../../src/upgrade/rolling.js';
import { writeImage } from '../../src/upgrade/testing.js';

const view = (o: Partial<BoardUpgradeView>): BoardUpgradeView => ({
  board: 'sim-b', role: 'BACKUP', running: 'A', good: 'A', trial: null, version: '1.0.0', guest: 'running', protected: false, rollingRunning: false, backlog: 0, ...o,
});

describe('rolling upgrade: where a resumed run goes on', () => {
  const me = view({ board: 'sim-a', role: 'PRIMARY', protected: true });
  const meBackup = view({ board: 'sim-a', role: 'BACKUP' });
  it('from the partner\'s slots and role', () => {
    const cases: Array<[string, BoardUpgradeView, BoardUpgradeView, string]> = [
      ['partner untouched, backup', me, view({}), 'push'],
      ['partner installed, not rebooted', me, view({ trial: 'B' }), 'partner-reboot'],
      ['partner runs its trial as backup', me, view({ running: 'B', trial: 'B', version: '1.1.0' }), 'partner-healthy'],
      ['partner runs its trial and took over', meBackup, view({ role: 'PRIMARY', running: 'B', trial: 'B', version: '1.1.0', protected: true }), 'partner-healthy'],
      ['partner committed, backup', me, view({ running: 'B', good: 'B', version: '1.1.0' }), 'switchover'],
      ['partner committed and serves', meBackup, view({ role: 'PRIMARY', running: 'B', good: 'B', version: '1.1.0' }), 'protected'],
      ['partner took over before it was upgraded', meBackup, view({ role: 'PRIMARY' }), 'hand-back'],
      ['partner took over with a trial installed', meBackup, view({ role: 'PRIMARY', trial: 'B' }), 'hand-back'],
      ['both committed', view({ board: 'sim-a', running: 'B', good: 'B', version: '1.1.0' }), view({ role: 'PRIMARY', running: 'B', good: 'B', version: '1.1.0' }), 'done'],
      ['partner fell back to its good slot with the trial still armed (not booted)', me, view({ running: 'A', trial: 'B', version: '1.0.0' }), 'partner-reboot'],
    ];
    for (const [what, m, p, at] of cases) assert.equal(resumePoint('1.1.0', m, p), at, what);
  });
});

/** The partner as the upgrade channel shows it: a model of its slots and role, and what it was asked. */
class FakePartner {
  state: BoardUpgradeView;
  asked: string[] = [];
  constructor(initial: Partial<BoardUpgradeView>, private readonly self: { role: string }) {
    this.state = view(initial);
  }

  readonly client = {
    call: async <T>(req: PeerRequest): Promise<T> => {
      if (req.op !== 'journal') this.asked.push(req.op);
      const s = this.state;
      switch (req.op) {
        case 'status': return { ...s } as T;
        case 'journal': return {} as T;
        case 'reboot': // boots its trial; joins as backup; the primary (this board) re-clones to it
          Object.assign(s, { running: s.trial, version: '1.1.0', role: 'BACKUP', guest: 'running' });
          return { rebooting: true } as T;
        case 'commit':
          if (s.trial !== s.running) throw new UsError('US_ERR_UPGRADE_STATE', 'no trial runs');
          Object.assign(s, { good: s.running, trial: null });
          return { slot: s.good, committed: true } as T;
        case 'rollback':
          s.trial = null;
          return { abandoned: 'B' } as T;
        case 'switchover':
          if (s.role !== 'PRIMARY') throw new UsError('US_ERR_ROLE', 'not primary');
          s.role = 'BACKUP';
          s.protected = false;
          this.self.role = 'PRIMARY';
          return { switchedOver: true } as T;
        default:
          throw new UsError('US_ERR_CONTROL', `the fake partner does not expect "${req.op}"`);
      }
    },
    put: async () => { throw new UsError('US_ERR_CONTROL', 'the fake partner does not expect a push'); },
  };
}

describe('rolling upgrade: a run resumed after the orchestrator\'s controller restarted', function () {
  this.timeout(60000);
  let dir: string;
  let setup: UpgradeSetup;
  let pkg: string;
  let recordFile: string;

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-resume-'));
    const b = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board', 'sim-a.json'), 'utf8'));
    b.storageDir = join(dir, 'store');
    writeFileSync(join(dir, 'board.json'), JSON.stringify(b));
    setup = upgradeSetupFor(loadBoardProfile(join(dir, 'board.json')));
    const keys = generateKeys(join(dir, 'release'));
    mkdirSync(setup.keysDir, { recursive: true, mode: 0o700 });
    copyFileSync(keys.publicKeyFile, join(setup.keysDir, 'release.pem'));
    const build = async (version: string) => {
      writeImage(join(dir, `img-${version}`), { 'firmware.json': JSON.stringify({ version }) });
      return (await buildPackage({ fromDir: join(dir, `img-${version}`), privateKey: loadPrivateKey(keys.privateKeyFile), family: 'understudy-sim', version, out: join(dir, `${version}.usp`) })).out;
    };
    // This board runs a committed 1.0.0 from slot A.
    await installPackage({ packagePath: await build('1.0.0'), family: setup.family, store: setup.store, env: setup.env, trustedKeys: loadTrustedKeys(setup.keysDir), bootAttempts: 3, reserveBytes: 0 });
    await simulateBoot(setup.env, setup.store);
    pkg = await build('1.1.0');
    recordFile = join(dir, 'store', 'rolling-upgrade.json');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** The run's record as the controller left it when it restarted during `step`. */
  const interruptedAt = (step: RollingRecord['step']) => {
    const rec: RollingRecord = {
      id: 'r1', package: pkg, version: '1.1.0', from: '1.0.0', orchestrator: 'sim-a', partner: 'sim-b', state: 'running', step,
      steps: [{ n: 1, at: new Date().toISOString(), step: 'verify', message: 'verified' }], options: { timeoutMs: 20000, stableMs: 0 }, startedAt: new Date().toISOString(),
    };
    mkdirSync(join(dir, 'store'), { recursive: true });
    writeFileSync(recordFile, JSON.stringify(rec));
  };

  /** A controller starting on this board: its RollingUpgrade resumes; resolves when the run rebooted this board or ended. */
  const resumeOn = async (self: { role: string }, partner: FakePartner) => {
    const events = { switchovers: 0, reboots: 0, journal: [] as string[] };
    let rebooted!: () => void;
    const done = new Promise<void>((r) => { rebooted = r; });
    const rolling = new RollingUpgrade({
      board: 'sim-a', partner: 'sim-b', setup, peer: partner.client as unknown as PeerClient,
      pairView: () => ({ role: self.role, guest: 'running', protected: self.role === 'PRIMARY', backlog: 0 }),
      journal: (m) => events.journal.push(m),
      switchover: async () => { events.switchovers++; self.role = 'BACKUP'; Object.assign(partner.state, { role: 'PRIMARY', protected: true }); },
      rebootSelf: async () => { events.reboots++; rebooted(); },
    }, recordFile);
    rolling.resume();
    await Promise.race([done, (async () => { while (rolling.current?.state === 'running') await new Promise((r) => setTimeout(r, 100)); })()]);
    return { rolling, events };
  };

  it('the partner took over while its trial ran: it is committed where it serves, no switchover, this board installs and reboots into its trial', async () => {
    interruptedAt('partner-healthy');
    const self = { role: 'BACKUP' };
    const partner = new FakePartner({ role: 'PRIMARY', protected: true, running: 'B', trial: 'B', version: '1.1.0' }, self);
    const { rolling, events } = await resumeOn(self, partner);
    const rec = rolling.current!;
    assert.equal(rec.state, 'running', JSON.stringify(rec.failed));
    assert.deepEqual(partner.asked.filter((o) => o !== 'status'), ['commit'], 'only the commit was asked of the partner');
    assert.equal(partner.state.good, 'B');
    assert.equal(events.switchovers, 0, 'no switchover: the partner serves already');
    assert.equal(events.reboots, 1);
    assert.deepEqual(rec.self, { slot: 'B' });
    assert.equal((await readBootState(setup.env)).trial, 'B', 'this board\'s own trial is armed');
    assert.ok(rec.steps.some((s) => /restarted during step partner-healthy/.test(s.message)));
    assert.ok(rec.steps.some((s) => s.step === 'protected' && /serves already/.test(s.message)));
    assert.deepEqual(JSON.parse(readFileSync(recordFile, 'utf8')).self, { slot: 'B' }, 'the record on disk says where the run goes on after the reboot');
  });

  it('the partner took over before it was upgraded: it hands the primary role back, then its installed trial is booted, committed, and the run goes on', async () => {
    interruptedAt('partner-install');
    const self = { role: 'BACKUP' };
    const partner = new FakePartner({ role: 'PRIMARY', protected: true, trial: 'B' }, self);
    const { rolling, events } = await resumeOn(self, partner);
    const rec = rolling.current!;
    assert.equal(rec.state, 'running', JSON.stringify(rec.failed));
    assert.deepEqual(partner.asked.filter((o) => o !== 'status'), ['switchover', 'reboot', 'commit'], 'hand back, boot the installed trial, commit it; no second push');
    assert.equal(events.switchovers, 1, 'then the planned switchover to the upgraded partner');
    assert.deepEqual([partner.state.role, partner.state.good, partner.state.version], ['PRIMARY', 'B', '1.1.0']);
    assert.equal(events.reboots, 1);
    assert.ok(rec.steps.some((s) => /resuming at hand-back/.test(s.message)));
    assert.ok(rec.steps.some((s) => /going on at partner-reboot/.test(s.message)));
  });

  it('start waits for a clone under way rather than refusing "not protected"; without one it refuses at once', async () => {
    const partner = new FakePartner({ role: 'BACKUP', guest: 'running', trial: 'B' }, { role: 'BACKUP' });
    let cloning = true;
    const rolling = new RollingUpgrade({
      board: 'sim-a', partner: 'sim-b', setup, peer: partner.client as unknown as PeerClient,
      pairView: () => ({ role: 'PRIMARY', guest: 'running', protected: !cloning, backlog: 0, cloning }),
      journal: () => undefined,
      switchover: async () => undefined,
      rebootSelf: async () => undefined,
    }, recordFile);
    const t0 = Date.now();
    setTimeout(() => { cloning = false; }, 400);
    // Past the protection check once the clone ended: refused further on (the partner has a trial armed), not for protection.
    await assert.rejects(rolling.start(pkg, { timeoutMs: 20000, stableMs: 0 }), (e: UsError) => e.code === 'US_ERR_UPGRADE_STATE' && /trial of slot B armed/.test(e.message));
    assert.ok(Date.now() - t0 >= 350, 'it waited for the clone');
    // Not protected and no clone under way: refused at once.
    const idle = new RollingUpgrade({
      board: 'sim-a', partner: 'sim-b', setup, peer: partner.client as unknown as PeerClient,
      pairView: () => ({ role: 'PRIMARY', guest: 'running', protected: false, backlog: 0, cloning: false }),
      journal: () => undefined, switchover: async () => undefined, rebootSelf: async () => undefined,
    }, recordFile);
    await assert.rejects(idle.start(pkg, { timeoutMs: 20000, stableMs: 0 }), /the pair is not protected/);
  });

  it('start waits while the backup\'s guest reads "starting" (a clone just landed) rather than refusing; a partner that is not backup is refused at once', async () => {
    const partner = new FakePartner({ role: 'BACKUP', guest: 'starting', trial: 'B' }, { role: 'BACKUP' });
    const hooks = {
      board: 'sim-a', partner: 'sim-b', setup, peer: partner.client as unknown as PeerClient,
      pairView: () => ({ role: 'PRIMARY', guest: 'running', protected: true, backlog: 0, cloning: false }),
      journal: () => undefined, switchover: async () => undefined, rebootSelf: async () => undefined,
    };
    const t0 = Date.now();
    setTimeout(() => { partner.state.guest = 'running'; }, 400);
    // Past the partner's role check once its guest runs: refused further on (its trial is armed), not "not protected".
    await assert.rejects(new RollingUpgrade(hooks, recordFile).start(pkg, { timeoutMs: 20000, stableMs: 0 }), (e: UsError) => e.code === 'US_ERR_UPGRADE_STATE' && /trial of slot B armed/.test(e.message));
    assert.ok(Date.now() - t0 >= 350, 'it waited for the partner\'s guest');
    partner.state = view({ role: 'WAITING', guest: 'starting' });
    const t1 = Date.now();
    await assert.rejects(new RollingUpgrade(hooks, recordFile).start(pkg, { timeoutMs: 20000, stableMs: 0 }), (e: UsError) => e.code === 'US_ERR_ROLE' && /sim-b is WAITING/.test(e.message));
    assert.ok(Date.now() - t1 < 5000, 'no wait for a partner that is not a backup');
  });

  it('the package is gone: the resumed run fails naming it, and abandons the partner\'s installed trial', async () => {
    interruptedAt('partner-reboot');
    rmSync(pkg);
    const self = { role: 'PRIMARY' };
    const partner = new FakePartner({ trial: 'B' }, self);
    const { rolling } = await resumeOn(self, partner);
    const rec = rolling.current!;
    assert.equal(rec.state, 'failed');
    assert.equal(rec.failed?.code, 'US_ERR_NOT_FOUND');
    assert.match(rec.failed!.message, /no longer on sim-a/);
    assert.deepEqual(partner.asked.filter((o) => o !== 'status'), ['rollback']);
    assert.equal(partner.state.trial, null, 'the partner\'s trial is abandoned');
  });
});
