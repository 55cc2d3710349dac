/**
 * The rolling upgrade of a 2N pair, run by the controller of the primary board it is invoked on:
 *
 *    1 verify     the package, locally, exactly as the installer does (signature, family, versions)
 *    2 push       its bytes to the backup over the upgrade channel (peer.ts)
 *    3 partner-install   the backup installs it into its inactive slot and arms a trial
 *    4 partner-reboot    the backup reboots into the trial
 *    5 partner-healthy   until the backup runs the new version, holds a fresh clone and the pair is
 *                        protected, stable for a while (bounded; else abandon: rollback + reboot)
 *    6 partner-commit    the backup commits its trial (mark-good)
 *    7 switchover        planned hand-over: the former backup serves, this board becomes backup
 *    8 protected         until the new primary has re-cloned to this board
 *    9 install    this board installs the package into its own inactive slot
 *   10 reboot     this board reboots into its trial; the run's record survives in the storage dir
 *   11 healthy    (after the reboot, resumed by the new controller) as 5, for this board
 *   12 commit     this board commits its trial
 *
 * Every step is journaled on both boards (kind "upgrade") and kept in <storageDir>/rolling-upgrade.json,
 * which `upgrade.rolling.status` returns. A controller that restarts in the middle of a run resumes
 * it from that record: where it goes on is read from both boards' state (`resumePoint`), not from the
 * step recorded, since the restart itself moves the pair (this board's guest died with its
 * controller, so the partner took over). Also the partner's side of the upgrade channel (PeerHandler).
 * Owns the sequence and its record; not the role machine, replication or the installer, which it
 * reaches through `PairHooks`.
 */
import { randomUUID } from 'node:crypto';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { UsError, asUsError } from '../core/errors.js';
import { writeFileDurable } from '../hw/bootenv/durable.js';
import type { UpgradeSetup } from './board-setup.js';
import { abandonTrial, markGood, readBootState } from './bootflow.js';
import { installPackage, verifyPackage, type InstallResult } from './installer.js';
import { loadTrustedKeys } from './keys.js';
import type { PeerClient, PeerHandler, PeerRequest } from './peer.js';
import type { SlotName } from './slots.js';

export type RollingStep =
  | 'verify' | 'push' | 'partner-install' | 'partner-reboot' | 'partner-healthy' | 'partner-commit'
  | 'switchover' | 'protected' | 'install' | 'reboot' | 'healthy' | 'commit' | 'abandon' | 'done';

/** What one board says about itself for the rolling upgrade (the `status` request). */
/** How long a rolling upgrade waits for a clone under way before it starts (refused after that). */
const CLONE_WAIT_MS = 180000;

export interface BoardUpgradeView {
  board: string;
  role: string;
  /** The slot booted (kernel command line), else the good slot. */
  running: SlotName | null;
  good: SlotName | null;
  trial: SlotName | null;
  /** Version of the running slot. */
  version: string | null;
  /** The guest's supervisor state, or null without a guest. */
  guest: string | null;
  /** This board is primary and its backup holds a clone in sync (no clone in progress). */
  protected: boolean;
  /** A rolling upgrade run by this board and not finished. */
  rollingRunning: boolean;
  /** Inputs this board holds (logged and acknowledged) but has not delivered to its guest yet. */
  backlog: number;
}

/** What the rolling upgrade needs from its controller. */
export interface PairHooks {
  board: string;
  /** The partner's name as its heartbeats give it. */
  readonly partner: string;
  setup: UpgradeSetup;
  peer: PeerClient;
  /** Role, guest state and protection of this board. */
  /** `cloning`: this board (primary) is cloning its guest to the partner right now. */
  pairView(): { role: string; guest: string | null; protected: boolean; backlog: number; cloning?: boolean };
  /** Records in this board's event journal. */
  journal(message: string, detail?: Record<string, unknown>): void;
  /** The planned hand-over (this board must be primary). */
  switchover(): Promise<unknown>;
  /** Reboots this board (a real blade: the profile's reboot command; a simulated one: a power cycle). */
  rebootSelf(): Promise<void>;
}

export interface RollingOptions {
  /** Bound on each wait for a board to come back healthy and protected (and on the switchover's re-protection). */
  timeoutMs: number;
  /** How long a board must stay healthy and protected before its trial is committed. */
  stableMs: number;
}

export const DEFAULT_ROLLING: RollingOptions = { timeoutMs: 300000, stableMs: 5000 };

/** How far the partner's half got: what a failure has to undo there. */
type Stage = 'none' | 'installed' | 'rebooted' | 'committed';

const describe = (v: BoardUpgradeView) => `${v.board} ${v.role} running ${v.version ?? '?'} (slot ${v.running ?? '?'}${v.trial ? `, trial ${v.trial} armed` : ''}${v.guest ? `, guest ${v.guest}` : ''})`;

export interface RollingRecord {
  id: string;
  package: string;
  version: string;
  /** The version the pair ran before. */
  from: string | null;
  /** The board that runs the upgrade (it was primary at the start). */
  orchestrator: string;
  partner: string;
  state: 'running' | 'done' | 'failed';
  step: RollingStep;
  steps: Array<{ n: number; at: string; step: RollingStep; message: string }>;
  failed?: { step: RollingStep; code: string; message: string };
  /** Where each board stands at the end (failed runs): the versions running, good, trial. */
  outcome?: string;
  options: RollingOptions;
  startedAt: string;
  endedAt?: string;
  /** Set before this board reboots into its trial: the resumed run checks and commits it. */
  self?: { slot: SlotName; rebootRetried?: boolean };
}

/**
 * Where a run interrupted by a controller restart goes on, read from both boards now:
 *  - hand-back: the partner took over before it was upgraded; it hands the primary role back first
 *  - push / partner-reboot / partner-healthy: the partner's half, from where its slots say it is
 *  - switchover / protected: the partner runs the new version, committed; it is to serve, or serves
 *  - done: both boards run the new version, committed
 */
export type ResumeAt = 'hand-back' | 'push' | 'partner-reboot' | 'partner-healthy' | 'switchover' | 'protected' | 'done';

/** The new version runs on a board from the slot it booted, and whether that slot is committed. */
function runsNew(v: BoardUpgradeView, version: string): 'no' | 'trial' | 'committed' {
  if (!v.running || v.version !== version) return 'no';
  if (v.trial === v.running) return 'trial';
  return v.good === v.running && !v.trial ? 'committed' : 'no';
}

/**
 * Pure: where a run to `version` that this board orchestrates goes on after its controller restarted
 * (before it had rebooted itself into its own trial: that is `RollingRecord.self`). A trial armed on
 * the partner and not running is this run's (a run does not start while either board has one).
 */
export function resumePoint(version: string, me: BoardUpgradeView, partner: BoardUpgradeView): ResumeAt {
  const p = runsNew(partner, version);
  if (p === 'committed') return runsNew(me, version) === 'committed' ? 'done' : partner.role === 'PRIMARY' ? 'protected' : 'switchover';
  if (p === 'trial') return 'partner-healthy';
  if (partner.role === 'PRIMARY') return 'hand-back';
  return partner.trial && partner.running !== partner.trial ? 'partner-reboot' : 'push';
}

const POLL_MS = 1000;
/** Most inputs a backup may hold undelivered when the switchover starts. */
const SWITCHOVER_BACKLOG = 16;

export class RollingUpgrade {
  private rec?: RollingRecord;
  /** Journal lines the partner missed (it was rebooting): sent with the next one. */
  private forPartner: string[] = [];

  constructor(private readonly h: PairHooks, private readonly recordFile = join(h.setup.incomingDir, '..', 'rolling-upgrade.json')) {
    try {
      this.rec = JSON.parse(readFileSync(recordFile, 'utf8')) as RollingRecord;
    } catch {
      this.rec = undefined;
    }
  }

  /** The last run (running or finished), for `upgrade.rolling.status`. */
  get current(): RollingRecord | undefined {
    return this.rec;
  }

  get running(): boolean {
    return this.rec?.state === 'running';
  }

  /** This board's view for the partner and for the health checks. */
  async view(): Promise<BoardUpgradeView> {
    const { store, env } = this.h.setup;
    const st = await readBootState(env);
    const running = store.bootedSlot() ?? st.good ?? null;
    const pv = this.h.pairView();
    return {
      board: this.h.board,
      role: pv.role,
      running,
      good: st.good ?? null,
      trial: st.trial ?? null,
      version: running ? store.readRecord(running).record?.version ?? null : null,
      guest: pv.guest,
      protected: pv.protected,
      rollingRunning: this.running,
      backlog: pv.backlog,
    };
  }

  /**
   * Checks the preconditions and the package, then runs the upgrade in the background. Throws (and
   * changes nothing) when the pair is not protected, an upgrade is in progress on either board, or
   * the package would not install here.
   */
  async start(packagePath: string, o: RollingOptions): Promise<RollingRecord> {
    if (this.running) throw new UsError('US_ERR_UPGRADE_BUSY', `a rolling upgrade (${this.rec!.id}, to ${this.rec!.version}) is in progress at step ${this.rec!.step}`);
    const file = resolve(packagePath);
    let me = await this.view();
    // A clone under way (a re-clone after a divergence or a lost input) ends within seconds: wait for
    // it rather than refuse the operator (a test's run was refused right after such a re-clone).
    for (const end = Date.now() + CLONE_WAIT_MS; me.role === 'PRIMARY' && !me.protected && this.h.pairView().cloning === true && Date.now() < end;) {
      await new Promise((r) => setTimeout(r, 200));
      me = await this.view();
    }
    if (this.running) throw new UsError('US_ERR_UPGRADE_BUSY', `a rolling upgrade (${this.rec!.id}, to ${this.rec!.version}) is in progress at step ${this.rec!.step}`);
    if (me.role !== 'PRIMARY') throw new UsError('US_ERR_ROLE', `rolling upgrade: board ${this.h.board} is ${me.role}; run it on the primary (${this.h.partner})`);
    if (!me.protected) throw new UsError('US_ERR_ROLE', 'rolling upgrade: the pair is not protected (the backup holds no clone in sync); refusing to start');
    if (me.trial) throw new UsError('US_ERR_UPGRADE_STATE', `rolling upgrade: this board has a trial of slot ${me.trial} armed; commit or roll it back first`);
    /** The partner's view over the upgrade channel; a partner that does not answer refuses the start. */
    const partnerView = () => this.h.peer.call<BoardUpgradeView>({ op: 'status' }, 5000).catch((e: Error) => {
      throw new UsError('US_ERR_LINK', `rolling upgrade: the partner ${this.h.partner} does not answer on the upgrade channel: ${e.message}`);
    });
    let partner = await partnerView();
    // The backup's guest reads 'starting' for a moment after a clone lands (its supervisor sees the
    // incoming state complete after the primary does): wait for it rather than refuse (CI saw a run
    // refused in that window, right after the pair was seen protected).
    for (const end = Date.now() + CLONE_WAIT_MS; partner.role === 'BACKUP' && partner.guest === 'starting' && !partner.rollingRunning && Date.now() < end;) {
      await new Promise((r) => setTimeout(r, 200));
      partner = await partnerView();
      me = await this.view();
    }
    if (this.running) throw new UsError('US_ERR_UPGRADE_BUSY', `a rolling upgrade (${this.rec!.id}, to ${this.rec!.version}) is in progress at step ${this.rec!.step}`);
    if (me.role !== 'PRIMARY' || !me.protected) throw new UsError('US_ERR_ROLE', `rolling upgrade: board ${this.h.board} is ${me.role}${me.protected ? '' : ', not protected'} after waiting for the partner's guest to start; refusing to start`);
    if (partner.rollingRunning) throw new UsError('US_ERR_UPGRADE_BUSY', `rolling upgrade: the partner ${partner.board} runs one already`);
    if (partner.role !== 'BACKUP' || partner.guest !== 'running') throw new UsError('US_ERR_ROLE', `rolling upgrade: the partner ${partner.board} is ${partner.role} with its guest ${partner.guest ?? 'absent'}; the pair is not protected`);
    if (partner.trial) throw new UsError('US_ERR_UPGRADE_STATE', `rolling upgrade: the partner ${partner.board} has a trial of slot ${partner.trial} armed; commit or roll it back first`);
    const { setup } = this.h;
    // The installer's own checks, reading no payload byte. The slots lock keeps out a concurrent install.
    const release = setup.store.lock('start a rolling upgrade');
    let check;
    try {
      check = await verifyPackage({ packagePath: file, family: setup.family, store: setup.store, env: setup.env, trustedKeys: loadTrustedKeys(setup.keysDir) });
    } finally {
      release();
    }
    const version = check.head.manifest.version;
    // The boards may run different versions (an earlier run stopped after the backup's commit): each
    // board's installer applies the version rules to its own running version.
    this.rec = {
      id: randomUUID().slice(0, 8), package: file, version, from: me.version, orchestrator: this.h.board, partner: this.h.partner,
      state: 'running', step: 'verify', steps: [], options: o, startedAt: new Date().toISOString(),
    };
    this.forPartner = [];
    const from = partner.version === me.version ? me.version ?? 'none' : `${this.h.board} ${me.version ?? 'none'}, ${partner.board} ${partner.version ?? 'none'}`;
    await this.step('verify', `package ${file} verified: ${version} for ${setup.family} (key ${check.head.keyId}), from ${from}; upgrading ${this.h.partner} (backup) first`);
    void this.runPartnerFirst(this.rec);
    return this.rec;
  }

  /**
   * After a controller restart: a run that rebooted this board into its trial checks it and commits
   * it; a run interrupted anywhere else goes on from where both boards stand (`resumePoint`).
   */
  resume(): void {
    const rec = this.rec;
    if (!rec || rec.state !== 'running') return;
    this.forPartner = [];
    if (rec.self) {
      void this.runSelfAfterReboot(rec, rec.self.slot);
      return;
    }
    void this.resumeOrchestration(rec);
  }

  private async resumeOrchestration(rec: RollingRecord): Promise<void> {
    const interrupted = rec.step;
    let trialInstalled = false;
    try {
      await this.step(interrupted, `the controller of ${this.h.board} restarted during step ${interrupted}; resuming the run once both boards answer`);
      let { me, partner } = await this.bothViews(rec);
      let at = resumePoint(rec.version, me, partner);
      // A trial installed on the partner and not booted yet is abandoned if the run fails before it reboots.
      trialInstalled = !!partner.trial && partner.running !== partner.trial;
      if (!existsSync(rec.package)) throw new UsError('US_ERR_NOT_FOUND', `the package ${rec.package} is no longer on ${this.h.board}: the run cannot go on`);
      await this.step(interrupted, `resuming at ${at}: ${describe(me)}; ${describe(partner)}`);
      if (at === 'hand-back') {
        await this.handBack(rec);
        ({ me, partner } = await this.bothViews(rec));
        at = resumePoint(rec.version, me, partner);
        if (at === 'hand-back') throw new UsError('US_ERR_ROLE', `${partner.board} is still primary after handing over: ${describe(me)}; ${describe(partner)}`);
        await this.step(interrupted, `going on at ${at}`);
      }
      if (at === 'done') {
        await this.finish(rec, 'done', 'commit');
        return;
      }
      trialInstalled = false; // from here runPartnerFirst undoes what it must itself
      await this.runPartnerFirst(rec, at, partner.trial ?? partner.running ?? undefined);
    } catch (e) {
      if (trialInstalled) await this.abandonPartner(rec, false);
      await this.finish(rec, 'failed', rec.step, e);
    }
  }

  /** Both boards' views once the partner answers on the upgrade channel (at most timeoutMs). */
  private async bothViews(rec: RollingRecord): Promise<{ me: BoardUpgradeView; partner: BoardUpgradeView }> {
    const end = Date.now() + rec.options.timeoutMs;
    let last = 'no answer yet';
    while (Date.now() < end) {
      try {
        const [me, partner] = await Promise.all([this.view(), this.h.peer.call<BoardUpgradeView>({ op: 'status' }, 3000)]);
        // A role in flux (promotion, fencing, a board starting) says nothing about where the run stands.
        const settled = (r: string) => r === 'PRIMARY' || r === 'BACKUP';
        if (settled(me.role) && settled(partner.role) && me.role !== partner.role) return { me, partner };
        last = `${describe(me)}; ${describe(partner)}`;
      } catch (e) {
        last = `${this.h.partner} not answering: ${(e as Error).message}`;
      }
      await sleep(POLL_MS);
    }
    throw new UsError('US_ERR_TIMEOUT', `the pair did not settle into a primary and a backup within ${rec.options.timeoutMs / 1000} s (last: ${last})`);
  }

  /** The partner took over before it was upgraded: once the pair is protected, it hands the primary role back to this board. */
  private async handBack(rec: RollingRecord): Promise<void> {
    await this.step('switchover', `${this.h.partner} took over before it was upgraded; once this board follows it, it hands the primary role back`);
    await this.waitPair(rec, (me, partner) => partner.role === 'PRIMARY' && partner.protected && me.role === 'BACKUP' && me.guest === 'running', `${this.h.partner} protected by this board`);
    await this.h.peer.call({ op: 'switchover' }, 120000);
    await this.waitPair(rec, (me, partner) => me.role === 'PRIMARY' && me.protected && partner.role === 'BACKUP' && partner.guest === 'running', `${this.h.board} primary and protected again`);
  }

  // ----------------------------------------------------------------- the sequence
  /**
   * The run from step 2 on, or from where a resumed run goes on (`from`; `trialSlot`: the partner's
   * trial slot when it is past its install).
   */
  private async runPartnerFirst(rec: RollingRecord, from: Exclude<ResumeAt, 'hand-back' | 'done'> = 'push', trialSlot?: SlotName): Promise<void> {
    const { peer } = this.h;
    const partner = this.h.partner;
    const order: ResumeAt[] = ['push', 'partner-reboot', 'partner-healthy', 'switchover', 'protected'];
    const from_ = order.indexOf(from);
    let stage: Stage = from_ <= 0 ? 'none' : from_ === 1 ? 'installed' : from_ === 2 ? 'rebooted' : 'committed';
    let slot = trialSlot;
    try {
      if (from_ <= 0) {
        await this.step('push', `pushing the package to ${partner}`);
        const put = await peer.put(rec.package);
        await this.step('partner-install', `${partner} received it (${put.bytes} bytes); installing into its inactive slot`);
        const inst = await peer.call<InstallResult>({ op: 'install', file: put.file }, 600000);
        stage = 'installed';
        slot = inst.slot;
        await this.step('partner-reboot', `${partner} installed ${inst.version} into slot ${inst.slot} with a trial armed; rebooting it into the trial`);
      } else if (from_ === 1) {
        await this.step('partner-reboot', `${partner} has ${rec.version} in slot ${slot ?? '?'} with a trial armed; rebooting it into the trial`);
      }
      if (!slot && from_ <= 2) throw new UsError('US_ERR_UPGRADE_STATE', `${partner}'s trial slot is unknown`);
      if (from_ <= 1) {
        await peer.call({ op: 'reboot' }, 10000);
        stage = 'rebooted';
      }
      if (from_ <= 2) {
        await this.step('partner-healthy', `waiting (at most ${rec.options.timeoutMs / 1000} s) for ${partner} to run ${rec.version} from slot ${slot}, re-cloned and protected`);
        await this.waitHealthy(rec, 'partner', slot!);
        await this.step('partner-commit', `${partner} runs ${rec.version} and the pair is protected; committing its trial`);
        await peer.call({ op: 'commit' }, 10000);
        stage = 'committed';
      }
      // The partner may serve already: it took over while its trial ran (this board's controller restarted).
      const partnerServes = from_ === 4 || (await peer.call<BoardUpgradeView>({ op: 'status' }, 5000)).role === 'PRIMARY';
      if (partnerServes) {
        await this.step('protected', `${partner} runs ${rec.version}, committed, and serves already; waiting for it to protect the pair (re-clone to ${this.h.board})`);
      } else {
        await this.step('switchover', `${partner} committed ${rec.version}; switching over to it once its guest has caught up with the input stream`);
        await this.waitCaughtUp(rec);
        await this.h.switchover();
        await this.step('protected', `${partner} is taking over; waiting for it to protect the pair again (re-clone to ${this.h.board})`);
      }
      await this.waitSwitchedOver(rec);
      await this.step('install', `${partner} serves and the pair is protected; installing ${rec.version} on ${this.h.board}`);
      const own = await this.installHere(rec);
      rec.self = { slot: own.slot };
      await this.step('reboot', `${this.h.board} installed ${own.version} into slot ${own.slot} with a trial armed; rebooting into it`);
      await this.h.rebootSelf();
      // A real blade's reboot command returns while the system goes down; the run resumes after it.
    } catch (e) {
      const failedAt = rec.step;
      if (stage === 'installed' || stage === 'rebooted') await this.abandonPartner(rec, stage === 'rebooted');
      let note: string | undefined;
      if (rec.self) {
        // Installed here but the reboot failed: the trial must not be booted by some later reboot.
        note = await this.abandonOwnTrial().then(() => `${this.h.board}'s own trial abandoned`, (e2: Error) => `abandoning ${this.h.board}'s own trial failed: ${e2.message}`);
        rec.self = undefined;
      }
      await this.finish(rec, 'failed', failedAt, e, note);
    }
  }

  private async runSelfAfterReboot(rec: RollingRecord, slot: SlotName): Promise<void> {
    try {
      const me = await this.view();
      if (me.trial === slot && me.running !== slot && !rec.self?.rebootRetried) {
        // The controller restarted after the install but before the board went down: reboot now, once.
        rec.self = { slot, rebootRetried: true };
        await this.step('reboot', `the controller of ${this.h.board} restarted before the board rebooted into its trial of slot ${slot}; rebooting now`);
        await this.h.rebootSelf();
        return;
      }
      await this.step('healthy', `${this.h.board} is back; waiting (at most ${rec.options.timeoutMs / 1000} s) for it to run ${rec.version} from slot ${slot}, re-cloned and protected`);
      await this.waitHealthy(rec, 'self', slot);
      await this.step('commit', `${this.h.board} runs ${rec.version} and the pair is protected; committing its trial`);
      const release = this.h.setup.store.lock('commit');
      try {
        await markGood(this.h.setup.env, this.h.setup.store);
      } finally {
        release();
      }
      await this.finish(rec, 'done', 'commit');
    } catch (e) {
      const failedAt = rec.step;
      try {
        await this.abandonOwnTrial();
        await this.finish(rec, 'failed', failedAt, e, `${this.h.board} abandons its trial and reboots into the good slot`);
        await this.h.rebootSelf();
      } catch (e2) {
        await this.finish(rec, 'failed', failedAt, e, `abandoning the trial failed: ${(e2 as Error).message}`);
      }
    }
  }

  private async abandonOwnTrial(): Promise<void> {
    const release = this.h.setup.store.lock('roll back');
    try {
      if ((await readBootState(this.h.setup.env)).trial) await abandonTrial(this.h.setup.env);
    } finally {
      release();
    }
  }

  private async installHere(rec: RollingRecord): Promise<InstallResult> {
    const s = this.h.setup;
    return installPackage({ packagePath: rec.package, family: s.family, store: s.store, env: s.env, trustedKeys: loadTrustedKeys(s.keysDir), bootAttempts: s.bootAttempts, reserveBytes: s.reserveBytes });
  }

  /**
   * The upgraded board (self or partner) runs the new slot and version with a running guest and the
   * pair is protected, for stableMs: as the backup with a clone in sync (the planned order), or as
   * the primary protected by the other board (it took over meanwhile, e.g. when this board's
   * controller restarted).
   */
  private async waitHealthy(rec: RollingRecord, who: 'self' | 'partner', slot: SlotName): Promise<void> {
    const end = Date.now() + rec.options.timeoutMs;
    let since: number | undefined;
    let last = 'no answer yet';
    while (Date.now() < end) {
      try {
        const [me, partner] = await Promise.all([this.view(), this.h.peer.call<BoardUpgradeView>({ op: 'status' }, 3000)]);
        const [b, other] = who === 'self' ? [me, partner] : [partner, me];
        if (b.running && b.running !== slot && b.trial !== slot) {
          throw new UsError('US_ERR_UPGRADE_STATE', `${b.board} booted slot ${b.running} (${b.version ?? '?'}), not the trial of slot ${slot}: its bootloader fell back`);
        }
        const problem = b.running !== slot ? `${b.board} runs slot ${b.running ?? '?'}`
          : b.version !== rec.version ? `${b.board} runs ${b.version ?? '?'}`
          : b.role !== 'BACKUP' && b.role !== 'PRIMARY' ? `${b.board} is ${b.role}`
          : b.guest !== 'running' ? `${b.board}'s guest is ${b.guest ?? 'absent'}`
          : b.role === 'BACKUP' && (other.role !== 'PRIMARY' || !other.protected) ? `${other.board} (${other.role}) is not protected`
          : b.role === 'PRIMARY' && (!b.protected || other.role !== 'BACKUP' || other.guest !== 'running') ? `${b.board} serves, not protected by ${other.board} (${other.role}, guest ${other.guest ?? 'absent'})`
          : undefined;
        if (problem) { last = problem; since = undefined; } else since ??= Date.now();
        if (since !== undefined && Date.now() - since >= rec.options.stableMs) return;
      } catch (e) {
        if ((e as UsError).code === 'US_ERR_UPGRADE_STATE') throw e;
        last = `${this.h.partner} not answering: ${(e as Error).message}`;
        since = undefined;
      }
      await sleep(POLL_MS);
    }
    throw new UsError('US_ERR_TIMEOUT', `${who === 'self' ? this.h.board : this.h.partner} did not come back healthy and protected within ${rec.options.timeoutMs / 1000} s (last: ${last})`);
  }

  /**
   * A backup acknowledges inputs when it has logged them, and delivers them to its clone in order,
   * an AUTH answer only once the clone has asked for it (which can hold delivery back for a while).
   * A planned hand-over waits until the backlog is small, so the new primary does not start with a
   * burst of queued inputs.
   */
  private async waitCaughtUp(rec: RollingRecord): Promise<void> {
    const end = Date.now() + rec.options.timeoutMs;
    let last = 'no answer yet';
    while (Date.now() < end) {
      try {
        const p = await this.h.peer.call<BoardUpgradeView>({ op: 'status' }, 3000);
        if (p.role === 'BACKUP' && p.backlog <= SWITCHOVER_BACKLOG && (await this.view()).protected) return;
        last = `${p.board} ${p.role}, ${p.backlog} inputs not yet delivered to its guest`;
      } catch (e) {
        last = (e as Error).message;
      }
      await sleep(50);
    }
    throw new UsError('US_ERR_TIMEOUT', `the backup did not catch up with the input stream within ${rec.options.timeoutMs / 1000} s (last: ${last}); not switching over`);
  }

  /** After the switchover: the partner is primary and protected, this board a backup with a running clone. */
  private async waitSwitchedOver(rec: RollingRecord): Promise<void> {
    await this.waitPair(rec, (me, partner) => partner.role === 'PRIMARY' && partner.protected && me.role === 'BACKUP' && me.guest === 'running',
      'the pair was not protected again after the switchover');
  }

  /** Until `ok` holds for both boards' views (at most timeoutMs). */
  private async waitPair(rec: RollingRecord, ok: (me: BoardUpgradeView, partner: BoardUpgradeView) => boolean, what: string): Promise<void> {
    const end = Date.now() + rec.options.timeoutMs;
    let last = 'no answer yet';
    while (Date.now() < end) {
      try {
        const [me, partner] = await Promise.all([this.view(), this.h.peer.call<BoardUpgradeView>({ op: 'status' }, 3000)]);
        if (ok(me, partner)) return;
        last = `${describe(me)}${me.protected ? ' protected' : ''}; ${describe(partner)}${partner.protected ? ' protected' : ''}`;
      } catch (e) {
        last = (e as Error).message;
      }
      await sleep(POLL_MS);
    }
    throw new UsError('US_ERR_TIMEOUT', `${what}: not within ${rec.options.timeoutMs / 1000} s (last: ${last})`);
  }

  /** The partner's trial failed or was never tried: disarm it and, if it runs it, reboot it into the good slot; wait until protected again. */
  private async abandonPartner(rec: RollingRecord, rebooted: boolean): Promise<void> {
    const partner = this.h.partner;
    try {
      await this.step('abandon', `abandoning the trial on ${partner}${rebooted ? ' and rebooting it into its good slot' : ''}`);
      await this.h.peer.call({ op: 'rollback', reboot: rebooted }, 10000);
      if (!rebooted) return;
      const end = Date.now() + rec.options.timeoutMs;
      while (Date.now() < end) {
        const [me, p] = await Promise.all([this.view(), this.h.peer.call<BoardUpgradeView>({ op: 'status' }, 3000).catch(() => undefined)]);
        if (p && !p.trial && p.running === p.good && p.role === 'BACKUP' && p.guest === 'running' && me.protected) {
          await this.step('abandon', `${partner} is back on its good slot ${p.good} (${p.version ?? '?'}) and the pair is protected`);
          return;
        }
        await sleep(POLL_MS);
      }
      await this.step('abandon', `${partner} did not come back protected on its good slot within ${rec.options.timeoutMs / 1000} s`);
    } catch (e) {
      await this.step('abandon', `could not abandon the trial on ${partner}: ${(e as Error).message}; its bootloader returns to the good slot once its boot attempts run out`).catch(() => undefined);
    }
  }

  // ----------------------------------------------------------------- record and journal
  private persist(rec: RollingRecord): void {
    writeFileDurable(this.recordFile, `${JSON.stringify(rec, null, 2)}\n`, 0o600);
  }

  private async step(step: RollingStep, message: string): Promise<void> {
    const rec = this.rec!;
    rec.step = step;
    const n = rec.steps.length + 1;
    rec.steps.push({ n, at: new Date().toISOString(), step, message });
    this.persist(rec);
    await this.journalBoth(`rolling upgrade ${rec.id} to ${rec.version} [${step}]: ${message}`, { id: rec.id, step });
  }

  private async journalBoth(line: string, detail: Record<string, unknown>): Promise<void> {
    this.h.journal(line, detail);
    this.forPartner.push(`(from ${this.h.board}) ${line}`);
    try {
      while (this.forPartner.length) {
        await this.h.peer.call({ op: 'journal', message: this.forPartner[0]! }, 2000);
        this.forPartner.shift();
      }
    } catch {
      // The partner is rebooting: it gets these lines with the next step.
    }
  }

  private async finish(rec: RollingRecord, state: 'done' | 'failed', at: RollingStep, err?: unknown, note?: string): Promise<void> {
    rec.state = state;
    rec.endedAt = new Date().toISOString();
    if (state === 'done') {
      rec.step = 'done';
      await this.step('done', `both boards run ${rec.version}, committed; ${this.h.partner} is primary, ${this.h.board} backup`);
      return;
    }
    const u = asUsError(err);
    rec.failed = { step: at, code: u.code, message: u.message };
    const [me, partner] = await Promise.all([this.view().catch(() => undefined), this.h.peer.call<BoardUpgradeView>({ op: 'status' }, 3000).catch(() => undefined)]);
    const where = (v?: BoardUpgradeView) => (v ? `${v.board} ${v.role} running ${v.version ?? '?'} (slot ${v.running ?? '?'}${v.trial ? `, trial ${v.trial} armed` : ''})` : 'partner not answering');
    rec.outcome = `${where(me)}; ${where(partner)}`;
    await this.step(at, `FAILED at step ${at}: ${u.code}: ${u.message}${note ? `; ${note}` : ''}. Now: ${rec.outcome}`);
  }

  // ----------------------------------------------------------------- the partner's side
  /** Answers the orchestrating partner's requests on the upgrade channel. */
  readonly handler: PeerHandler = async (req: PeerRequest) => {
    const s = this.h.setup;
    switch (req.op) {
      case 'status':
        return this.view();
      case 'journal':
        this.h.journal(String(req.message).slice(0, 2000));
        return {};
      case 'install': {
        // Only a package the partner pushed here.
        const file = realpathSync(String(req.file));
        if (dirname(file) !== realpathSync(s.incomingDir)) throw new UsError('US_ERR_CONTROL', `install: ${req.file} is not a package the partner pushed`);
        if (this.running) throw new UsError('US_ERR_UPGRADE_BUSY', 'this board runs a rolling upgrade itself');
        const r = await installPackage({ packagePath: file, family: s.family, store: s.store, env: s.env, trustedKeys: loadTrustedKeys(s.keysDir), bootAttempts: s.bootAttempts, reserveBytes: s.reserveBytes });
        this.h.journal(`rolling upgrade: installed ${r.version} into slot ${r.slot} for the partner, trial armed (${r.bootAttempts} attempts)`, { slot: r.slot, version: r.version });
        return r;
      }
      case 'reboot':
        this.rebootSoon('rolling upgrade: the partner reboots this board into its trial');
        return { rebooting: true };
      case 'switchover': {
        // A resumed run whose orchestrator lost the primary role (its controller restarted) takes it back.
        const pv = this.h.pairView();
        if (pv.role !== 'PRIMARY' || !pv.protected) throw new UsError('US_ERR_ROLE', `switchover: ${this.h.board} is ${pv.role}${pv.protected ? '' : ', not protected'}`);
        this.h.journal('rolling upgrade: the partner resumes its run and asks for the primary role back: switching over');
        await this.h.switchover();
        return { switchedOver: true };
      }
      case 'commit': {
        const release = s.store.lock('commit');
        try {
          const r = await markGood(s.env, s.store);
          this.h.journal(`rolling upgrade: slot ${r.slot} (${r.version ?? '?'}) committed at the partner's request`, { ...r });
          return r;
        } finally {
          release();
        }
      }
      case 'rollback': {
        const release = s.store.lock('roll back');
        let r;
        try {
          r = (await readBootState(s.env)).trial ? await abandonTrial(s.env) : { abandoned: null, nextBoot: (await readBootState(s.env)).good };
        } finally {
          release();
        }
        this.h.journal(`rolling upgrade: the partner abandons this board's trial${req.reboot ? '; rebooting into the good slot' : ''}`, { ...r });
        if (req.reboot) this.rebootSoon('rolling upgrade: rebooting into the good slot');
        return r;
      }
      default:
        throw new UsError('US_ERR_CONTROL', `unknown upgrade request "${(req as { op?: string }).op}"`);
    }
  };

  /** Reboots after the answer went out. */
  private rebootSoon(why: string): void {
    this.h.journal(why);
    setTimeout(() => {
      this.h.rebootSelf().catch((e: Error) => this.h.journal(`reboot failed: ${e.message}`));
    }, 300);
  }
}
