/**
 * The pair on one board: what the board does in each role, and the composition of the pair's
 * modules (protection, switchover, guest upgrade, the partner's control messages).
 *
 * The HA machine (src/ha/roles.ts) decides the role; ROLE_EFFECTS below says what taking that role
 * means here — serve or not, the replicator's mode, what happens to the guest — and `applyRole`
 * carries it out. This file is the only caller of the replicator's mode changes (becomePrimary,
 * becomeBackup); the replicator follows, it never infers a role.
 *
 * Reading it: "what does a BACKUP do when its partner dies during a guest upgrade?" The HA machine
 * fences the partner and promotes (BACKUP → FENCING → PRIMARY). applyRole first lets the local half
 * of the upgrade end (GuestUpgrade.settled): it ends with the new guest running, or with the old
 * guest's state saved and no guest running. Then the PRIMARY rows pick: a running guest takes over
 * as it is; a saved state is booted and the input log replayed from its replay point; otherwise the
 * checkpoint is restored, or the guest boots afresh.
 */
import type { Role } from '../ha/frame.js';
import type { PartnerFenced, RoleChange } from '../ha/ha-controller.js';
import { UsError } from '../core/errors.js';
import type { CloneCopy, CloneProgress } from '../replication/manager.js';
import { guestHangFastMs } from '../replication/guest-host.js';
import { controlRoutes, dispatchControl, type ControlRoutes } from './control.js';
import { GuestHang } from './guest-hang.js';
import { GuestUpgrade, type GuestUpgradeOptions } from './guest-upgrade.js';
import { requirePrimary, until, type PairParts } from './parts.js';
import { serveAloneGate } from './serve-alone.js';
import { PoisonGuard } from './poison-guard.js';
import { Protection } from './protection.js';
import { Switchover } from './switchover.js';

/** How long a promotion waits for a clone that was arriving to run or fail (its QEMU fails by itself when the stream stops). */
/** After a takeover, AUTH questions still open are asked again on the copy's behalf this often (reaskAuth)… */
const AUTH_REASK_MS = 25;
/** …this many times in all (the first at once): the guest's own retransmission comes after 500 ms. */
const AUTH_REASKS = 8;
const CLONE_ARRIVAL_WAIT_MS = 60000;

/** What happens to the guest when the board takes a role. */
export type GuestAction =
  | 'keep-running'        // the running guest (a clone, or the copy kept through a switchover) serves as it is
  | 'replay-saved-state'  // boot on the state saved for a guest upgrade that did not complete, replay the log from its replay point
  | 'restore-checkpoint'  // both copies lost: the checkpoint, then every input logged since
  | 'boot'                // boot from the guest's own state disk (first primary, or nothing better)
  | 'keep-copy'           // stepped down keeping its guest: it follows the new primary (switchover of a guest upgrade)
  | 'stop'                // without the input stream it would drift: stopped; the primary clones a fresh copy
  | 'leave';              // nothing to do (no guest yet, or it is stopped with the controller)

/** What a board finds when it takes a role (after any local guest upgrade has ended). */
export interface Situation {
  from: Role;
  to: Role;
  guestRunning: boolean;
  /** This board's guest saved its state for a guest upgrade that did not complete. */
  savedState: boolean;
  /** A checkpoint is on disk (this board was a backup that followed the primary). */
  checkpoint: boolean;
  /** This board just stepped down keeping its guest (switchover of a guest upgrade). */
  keptCopy: boolean;
  /**
   * Promoted with a running copy known to differ from the old primary's (a divergence or lost
   * inputs since its clone), and the checkpoint on disk was taken before that, its log whole.
   */
  copyDiverged?: boolean;
}

export interface RoleEffects {
  /** serve: take the service address and open the endpoint; unserve: give them up; leave: as is. */
  serve: 'serve' | 'unserve' | 'leave';
  replicator: 'primary' | 'backup' | 'unchanged';
  guest: GuestAction;
}

export interface EffectRow extends RoleEffects {
  role: Role;
  /** When this row applies (the first matching row of the role wins). */
  when: string;
  applies(s: Situation): boolean;
}

const promoted = (s: Situation) => s.from === 'FENCING' || s.from === 'BACKUP';
const always = () => true;

/** The whole of what a role means on this board, in order of precedence within each role. */
export const ROLE_EFFECTS: readonly EffectRow[] = [
  { role: 'PRIMARY', when: 'promoted; its running copy differs from the old primary\'s, and a checkpoint taken before that is on disk', applies: (s) => promoted(s) && s.guestRunning && s.copyDiverged === true && s.checkpoint,
    serve: 'serve', replicator: 'primary', guest: 'restore-checkpoint' },
  { role: 'PRIMARY', when: 'its guest runs (the clone, or the copy it kept)', applies: (s) => s.guestRunning,
    serve: 'serve', replicator: 'primary', guest: 'keep-running' },
  { role: 'PRIMARY', when: 'promoted; its guest saved its state for a guest upgrade that did not complete', applies: (s) => promoted(s) && s.savedState,
    serve: 'serve', replicator: 'primary', guest: 'replay-saved-state' },
  { role: 'PRIMARY', when: 'promoted; a checkpoint is on disk', applies: (s) => promoted(s) && s.checkpoint,
    serve: 'serve', replicator: 'primary', guest: 'restore-checkpoint' },
  { role: 'PRIMARY', when: 'otherwise (the pair starts, or promoted with neither a clone nor a checkpoint)', applies: always,
    serve: 'serve', replicator: 'primary', guest: 'boot' },
  { role: 'BACKUP', when: 'stepped down keeping its guest (switchover of a guest upgrade)', applies: (s) => s.from === 'PRIMARY' && s.keptCopy,
    serve: 'unserve', replicator: 'unchanged', guest: 'keep-copy' },
  { role: 'BACKUP', when: 'stepped down from PRIMARY', applies: (s) => s.from === 'PRIMARY',
    serve: 'unserve', replicator: 'backup', guest: 'stop' },
  { role: 'BACKUP', when: 'joined the pair, or gave up a fence (a clone makes it a following backup)', applies: always,
    serve: 'leave', replicator: 'unchanged', guest: 'leave' },
  { role: 'FAULT', when: 'its guest failed or could not follow the role', applies: always,
    serve: 'unserve', replicator: 'backup', guest: 'stop' },
  { role: 'STOPPING', when: 'the controller stops (it stops the guest itself)', applies: always,
    serve: 'unserve', replicator: 'backup', guest: 'leave' },
  { role: 'STARTING', when: 'listening for the partner', applies: always, serve: 'leave', replicator: 'unchanged', guest: 'leave' },
  { role: 'WAITING', when: 'no partner heard since boot: neither serving nor fencing', applies: always, serve: 'leave', replicator: 'unchanged', guest: 'leave' },
  { role: 'FENCING', when: 'fencing the partner before promoting', applies: always, serve: 'leave', replicator: 'unchanged', guest: 'leave' },
];

/** The row for a role change. Pure. */
export function effectsFor(s: Situation): EffectRow {
  const row = ROLE_EFFECTS.find((r) => r.role === s.to && r.applies(s));
  if (!row) throw new UsError('US_ERR_INTERNAL', `no role effects for ${s.from} -> ${s.to}`);
  return row;
}

export class PairController {
  readonly protection: Protection;
  readonly switchover: Switchover;
  readonly upgrade: GuestUpgrade;
  readonly guestHang: GuestHang;
  readonly poison: PoisonGuard;
  private readonly routes: ControlRoutes;
  /** Promotions of this board (from BACKUP or FENCING) since the controller started. */
  failovers = 0;
  /** Serialises the work that follows role changes. */
  private roleWork: Promise<void> = Promise.resolve();
  private stopping = false;
  private cloneProgress?: CloneProgress;
  /** The copy the partner is cloning to this board: arriving ('started'), running, or failed. */
  private cloneTarget: 'none' | 'started' | 'running' | 'failed' = 'none';
  /** The failure being reported is that of an arriving clone (failurePolicy gave it up). */
  private arrivalGaveUp = false;
  /** A promotion's guest work (waiting for an arriving clone, restoring a checkpoint) is under way. */
  private promoting = false;
  /** A rebuild of the failed copy from the checkpoint is queued or under way (recoverAsPrimary). */
  private rebuildPending = false;

  constructor(private readonly p: PairParts, upgradeOptions?: GuestUpgradeOptions) {
    const { host, ha, clones } = p;
    this.switchover = new Switchover(p, (keepCopy) => this.stepDown(keepCopy));
    this.upgrade = new GuestUpgrade(p, this.switchover, upgradeOptions);
    this.protection = new Protection(p, () => this.upgrade.busy || this.stopping, () => this.poison?.recovering === true);
    this.guestHang = new GuestHang(p);
    this.poison = new PoisonGuard(p, p.recovery, p.quarantine);
    this.routes = controlRoutes(p, this.protection, this.switchover, this.upgrade, this.guestHang, this.poison);

    // What a board does when its guest fails (QEMU exits, the guest panics, the watchdog fires).
    // In a pair the guest's state lives in the copies and the input stream, never on the state disk
    // (nothing SAVEs it): relaunching from the disk boots an empty or stale state. So:
    // - A PRIMARY that is protected hands over (FAULT; the backup promotes): with its copy running,
    //   that copy serves as it is; while its copy is being replaced by a re-clone, the backup still
    //   holds the old copy's stream (logged, acknowledged) and restores its checkpoint and replays
    //   that log. Relaunching instead served an empty guest, and the next re-clone copied it onto the
    //   backup: every acknowledged request lost (CI, 2026-12-05: ERR FULL answered, then OK REG … 9).
    // - A board that is not PRIMARY never relaunches its copy: a BACKUP asks for a new clone; a board
    //   FENCING its partner (about to promote) restores the checkpoint when it promotes, rather than
    //   waiting for an empty guest to boot (14 s under TCG, seen in the same run).
    // - An unprotected PRIMARY relaunches: no other copy exists, the disk is all there is.
    host.supervisor.failurePolicy = () => {
      // A copy that was still arriving (a clone target) never relaunches from the disk, whatever the
      // role by now: a promotion waits for it (applyRole) and then restores what this board holds.
      if (this.cloneArriving()) { this.arrivalGaveUp = true; return 'give-up'; }
      // A copy restored from the checkpoint fails while the recovery watches it: that is its evidence.
      if (this.poison.recovering) return 'give-up';
      const role = ha.currentRole;
      const partnerIsBackup = ha.membership.partnerView.heartbeat?.role === 'BACKUP';
      if (role === 'PRIMARY') {
        if (host.replicator.protectedNow && partnerIsBackup) return 'give-up';
        // Promoted, no backup yet, the checkpoint and the log since it here: rebuilt from them (a
        // poison input that reached this copy after the promotion is found on the way).
        return this.poison.canRecoverAsPrimary() ? 'give-up' : 'restart';
      }
      return 'give-up';
    };
    // A stopped QEMU on a protected primary: the backup's copy is in sync, so hand over now rather
    // than after the witness's bound (guestHangMs). Otherwise the slower checks decide.
    host.supervisor.onStoppedQemu = (evidence) => {
      if (ha.currentRole !== 'PRIMARY' || !host.replicator.protectedNow || ha.membership.partnerView.heartbeat?.role !== 'BACKUP') return false;
      p.journal.record('guest-hang', `here ${evidence}: the guest is hung; handing over to the backup, whose copy is in sync`, { evidence, confirmed: true, stopped: true });
      return true;
    };
    // On a protected primary the backup's witness may report a hang after guestHangFastMs and after
    // guestHangMs: the PING that confirms each goes out at half of it, so its answer (or its
    // absence) is waiting for the report.
    host.supervisor.pingAheadAtMs = () => {
      if (ha.currentRole !== 'PRIMARY' || !host.replicator.protectedNow) return [];
      const slow = p.board.ha?.guestHangMs ?? 0;
      const fast = guestHangFastMs(p.board);
      return fast ? [fast / 2, slow / 2] : [slow / 2];
    };
    host.supervisor.on('state', (s, cause) => {
      if (s !== 'failed') return;
      if (this.poison.recovering) return; // the recovery watches its restored copy
      this.poison.noteCopyFailed(cause);
      const arriving = this.arrivalGaveUp;
      this.arrivalGaveUp = false;
      if (arriving) this.cloneTarget = 'failed'; // not left 'started' for the next guest this board boots
      if (ha.currentRole === 'PRIMARY' && !arriving && this.poison.canRecoverAsPrimary()) {
        // Also during a promotion that kept this copy: the recovery runs once the promotion is done.
        this.rebuildPending = true;
        this.roleWork = this.roleWork.then(() => this.recoverAsPrimary(cause));
        return;
      }
      // A clone that was still arriving when this board was promoted is not a failure of the
      // primary's guest (FAULT would leave the pair with nobody serving when the partner is gone):
      // the promotion waiting for it (applyRole) goes on to the checkpoint or the disk.
      if (ha.currentRole === 'PRIMARY') { if (!arriving) ha.fire('guest-failed', cause); }
      else if (ha.currentRole === 'BACKUP' && !this.upgrade.replacingClone) this.protection.onCloneLost(cause);
    });
    ha.on('role', (c: RoleChange) => this.onRole(c));
    // A PRIMARY that fenced its backup (silent, or its dying gasp) stops waiting for that backup's
    // acknowledgements at once: the board is down, it cannot promote with a shorter copy, so the
    // replies held for it are released now rather than after the replicator's protection timeout.
    ha.on('partner-fenced', (f: PartnerFenced) => {
      if (f.by === 'PRIMARY' && ha.currentRole === 'PRIMARY' && host.replicator.mode === 'primary') {
        host.replicator.unprotect(`the backup ${f.partner} was fenced (${f.outcome}): serving unprotected until it is back`, { partnerDown: true });
      }
    });
    if (ha.quorum) this.followQuorum(ha.quorum);
    if (clones) {
      clones.on('cloned', () => { this.upgrade.onCloned(); this.poison.sendToPartner(); ha.markServingLostState(undefined); });
      clones.on('guest-descriptor', (g) => this.upgrade.rememberDescriptor(g, 'a clone of the partner\'s guest'));
      clones.on('clone-target', (phase) => {
        this.cloneTarget = phase;
        if (phase === 'running') { this.poison.forgetFailure(); this.upgrade.onCloneTargetRunning(); }
      });
      clones.on('control', (m) => dispatchControl(this.routes, ha.currentRole, m, p.log));
      clones.on('clone-progress', (pr) => { this.cloneProgress = pr; });
    }
  }

  /**
   * ha.manager pacemaker (docs/pacemaker.md, rows 6-7): a PRIMARY whose backup stopped acknowledging
   * releases no reply the backup may lack until corosync has settled the membership
   * (src/pair/serve-alone.ts); if corosync says this side has lost quorum meanwhile, it steps down
   * (`quorum-lost`: FAULT, the withheld replies dropped) and the side with quorum takes over.
   */
  private followQuorum(quorum: NonNullable<PairParts['ha']['quorum']>): void {
    const { ha, host, board } = this.p;
    host.replicator.serveAlone = serveAloneGate({
      quorum: () => quorum.state,
      partner: () => ha.partnerName,
      partnerHung: () => ha.membership.partnerView.heartbeat?.health === 'hung',
      settleMs: board.ha!.quorumSettleMs,
    });
    const stepDownIfLost = () => {
      if (quorum.state?.quorate === false && ha.currentRole === 'PRIMARY' && host.replicator.withholding) {
        ha.fire('quorum-lost', `corosync members ${quorum.state.members.join(' ')}`);
      }
    };
    ha.on('quorum', stepDownIfLost);
    host.replicator.on('withheld', stepDownIfLost);
  }

  start(): void {
    this.protection.start();
  }

  /** A clone target is waiting for (or loading) the partner's stream: its QEMU runs no guest yet. */
  private cloneArriving(): boolean {
    return this.cloneTarget === 'started' && this.p.host.supervisor.currentState === 'starting';
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.protection.stop();
    await this.roleWork;
  }

  /**
   * For the HA layer's watchdog: false only when this board serves and its guest has failed. Not
   * while a promotion is choosing and starting what to serve: the copy that failed then is a clone
   * that was arriving (its source died), and the checkpoint is about to be restored. Counted as a
   * loss of supervision, it reset the only board left (2026-12-05, a 20-fault run).
   */
  healthy(): boolean {
    return this.p.host.supervisor.currentState !== 'failed' || this.p.ha.currentRole !== 'PRIMARY' || this.promoting || this.rebuildPending;
  }

  /**
   * An unprotected PRIMARY whose copy failed and that holds the checkpoint and every input since:
   * it stops serving, rebuilds the copy from them (finding a poison input on the way) and serves
   * again; if that fails, the guest has failed (FAULT).
   */
  private async recoverAsPrimary(cause: string): Promise<void> {
    const { host, ha, journal } = this.p;
    if (ha.currentRole !== 'PRIMARY' || this.stopping) { this.rebuildPending = false; return; }
    this.promoting = true;
    try {
      // A clone of the copy that failed may be under way (to a backup that just joined): it ends
      // before that copy is replaced, or it reads a QEMU that is gone, or copies a hung guest.
      await this.p.clones?.cancelClone(`the copy it was taking failed (${cause}): it is rebuilt from the checkpoint`);
      await host.unserve();
      host.replicator.becomePrimary({ holdDelivery: true });
      await this.poison.recover(`the guest failed on the primary without a backup (${cause})`);
      await this.serve();
    } catch (e) {
      journal.record('recovery', `recovery from the checkpoint failed: ${(e as Error).message}`);
      ha.fire('guest-failed', (e as Error).message);
    } finally {
      this.promoting = false;
      this.rebuildPending = false;
    }
  }

  get cloneInProgress(): boolean {
    return this.p.clones?.cloneInProgress ?? false;
  }

  /** Primary: clone to the partner now (the operator's `understudy clone`). */
  clone(o: { copy?: CloneCopy } = {}): ReturnType<NonNullable<PairParts['clones']>['clone']> {
    return requirePrimary(this.p, 'clone').clone(o);
  }

  /**
   * The clone manager asks before it prepares this board as a clone target: never on a primary;
   * otherwise the replicator becomes a backup awaiting the clone's cut-over.
   */
  admitClone(stage: 'check' | 'become-target'): void {
    if (this.p.ha.currentRole === 'PRIMARY' || this.p.host.replicator.mode === 'primary') {
      throw new UsError('US_ERR_ROLE', stage === 'check' ? 'this board is primary: it takes no clone' : 'this board became primary while preparing the clone target');
    }
    if (stage === 'become-target') this.p.host.replicator.becomeBackup();
  }

  /** Switchover: step down at once (see Switchover.handOver); with keepCopy, follow on the current channel. */
  private stepDown(keepCopy: boolean): boolean {
    const r = this.p.host.replicator;
    r.becomeBackup();
    return keepCopy ? r.followOnCurrentChannel(true) : false;
  }

  private onRole(c: RoleChange): void {
    this.roleWork = this.roleWork.then(() => this.applyRole(c));
  }

  /**
   * Carries out the effects of the role the HA machine gave (in order: serving, replicator, guest).
   * A change overtaken by a later one before its turn came (BACKUP → FENCING → PRIMARY within one
   * fence) is skipped: the later change carries the board to where the machine is now.
   */
  private async applyRole(c: RoleChange): Promise<void> {
    const { host, ha, journal, checkpoints } = this.p;
    const role = c.to;
    if (role !== ha.currentRole) {
      this.p.log.debug({ from: c.from, to: role, now: ha.currentRole }, 'role change overtaken before its effects: skipped');
      return;
    }
    const promotion = role === 'PRIMARY' && (c.from === 'FENCING' || c.from === 'BACKUP');
    if (promotion) this.promoting = true;
    // With cores.followerYield: the serving copy gets its core's full share, any other copy follows
    // and yields it. Not awaited: the change is a chrt process, and a promoted copy gets the core
    // anyway while the old primary's guest, which shared it, is gone.
    void host.supervisor.setFollowing(role !== 'PRIMARY');
    try {
      if (role === 'PRIMARY') {
        if (promotion) this.failovers++;
        // Promoted while replacing its clone (guest upgrade): let that finish first; it holds
        // the inputs it has not replayed yet, and ends with a running guest or a replay point.
        if (this.upgrade.replacingClone) {
          journal.record('guest', 'promoted during a guest upgrade: finishing it before serving');
          await this.upgrade.settled();
        }
        // Promoted while a clone was arriving (its stream may be complete, its QEMU resuming): the
        // copy is this board's state, so wait until it runs or fails. Deciding at once found no
        // running guest and booted the disk over a clone that was running 35 ms later (STATE LOST,
        // seen in a fault run on 2026-12-05).
        if ((c.from === 'FENCING' || c.from === 'BACKUP') && this.cloneArriving() && !this.p.clones?.targetStreamBegun) {
          // Prepared, but its source never began the stream and never will (it failed, or was
          // fenced): waiting would only leave QEMU listening for 60 s while nobody serves.
          journal.record('guest', 'promoted while a clone was being prepared whose stream never began: abandoning it');
          this.cloneTarget = 'failed';
          await host.supervisor.stop();
        }
        if ((c.from === 'FENCING' || c.from === 'BACKUP') && this.cloneArriving()) {
          journal.record('guest', 'promoted while a clone was arriving: waiting for it to run (or fail) before choosing what to serve');
          await until(() => this.cloneTarget !== 'started' || host.supervisor.currentState !== 'starting', CLONE_ARRIVAL_WAIT_MS, 'the arriving clone did not run or fail')
            .catch((e: Error) => journal.record('guest', e.message));
        }
      }
      const rebuild = promotion ? this.divergedRebuild() : false;
      const fx = effectsFor({
        from: c.from, to: role,
        guestRunning: host.guestRunning,
        savedState: this.upgrade.hasSavedState,
        checkpoint: checkpoints?.info !== undefined,
        copyDiverged: rebuild,
        // Consumed by the role change that follows the step-down, whatever the new role.
        keptCopy: c.from === 'PRIMARY' || role === 'FAULT' || role === 'STOPPING' ? this.switchover.takeKeptCopy() : false,
      });
      this.p.log.debug({ from: c.from, to: role, effects: fx.when }, 'role effects');
      if (fx.serve === 'unserve') await host.unserve();
      if (fx.replicator === 'primary') host.replicator.becomePrimary({ holdDelivery: fx.guest === 'restore-checkpoint' });
      // Promoted with the checkpoint and a log that covers the stream: until a backup follows, this
      // board logs its inputs after it, so a copy that fails meanwhile (a poison input that reached
      // it after the promotion) is rebuilt from them. Set before the guest's work: the copy can fail
      // while the promotion is still under way.
      if (promotion && fx.replicator === 'primary' && checkpoints?.info && checkpoints.logCovers(host.replicator.lastSeq)) host.replicator.logWhileUnprotected = true;
      else if (fx.replicator === 'backup') host.replicator.becomeBackup();
      await this.guestAction(fx.guest, role, c);
      if (fx.serve === 'serve') await this.serve();
    } catch (e) {
      journal.record('guest', `role change to ${role} failed: ${(e as Error).message}`);
      this.p.log.error({ err: (e as Error).message, cause: c.cause }, 'guest failed to follow the role');
      ha.fire('guest-failed', (e as Error).message);
    } finally {
      if (promotion) this.promoting = false;
    }
  }

  private async guestAction(action: GuestAction, role: Role, c: RoleChange): Promise<void> {
    const { host, journal, checkpoints } = this.p;
    const { supervisor, replicator } = host;
    const promotion = c.from === 'FENCING' || c.from === 'BACKUP';
    const hadCopy = supervisor.currentState === 'running';
    if (role === 'PRIMARY' && action !== 'keep-running' && supervisor.currentState !== 'stopped') await supervisor.stop();
    switch (action) {
      case 'keep-running':
        journal.record('guest', `the clone takes over at input ${replicator.lastSeq}`);
        break;
      case 'replay-saved-state':
        await this.upgrade.resumeFromSavedState();
        break;
      case 'restore-checkpoint': {
        const why = hadCopy ? 'promoted with a copy that differs from the old primary\'s' : 'promoted without a running clone';
        if (this.p.recovery) await this.poison.recover(why);
        else {
          journal.record('guest', `${why}: restoring the checkpoint and replaying the input log`);
          await checkpoints!.restore();
        }
        break;
      }
      case 'boot':
        if (promotion) {
          // Nothing of the pair's state survived here (no copy, no checkpoint): what the disk holds is all there is.
          journal.record('guest', 'STATE LOST: promoted without a running clone or a checkpoint: booting the guest from its state disk; requests acknowledged since that state was saved are lost');
          // Should another board still serve the pair's state, two PRIMARYs keep that one.
          this.p.ha.markServingLostState('promoted with neither a copy nor a checkpoint: booted the guest from its state disk');
          this.p.log.error({ from: c.from }, 'promoted without a clone or a checkpoint: booting from the state disk (acknowledged state lost)');
        } else journal.record('guest', 'booting the guest: board is primary');
        replicator.discardQueue();
        await supervisor.start();
        break;
      case 'keep-copy':
        journal.record('guest-upgrade', `this board keeps its guest (${supervisor.guest.version}) as the backup copy until the upgrade is committed or rolled back`);
        break;
      case 'stop':
        // Its guest would drift without the input stream: the new primary clones a fresh copy.
        await supervisor.stop();
        journal.record('guest', `guest stopped: board is ${role}; waiting for a clone`);
        break;
      case 'leave':
        break;
    }
    if (role === 'PRIMARY') {
      // The partner kept its copy through the switchover (guest upgrade): it protects this board without a clone.
      const partnerKeepsCopy = this.switchover.takePartnerKeepsCopy();
      if (action === 'keep-running' && partnerKeepsCopy && replicator.protectOnCurrentChannel()) this.upgrade.onProtectedByPreviousCopy();
    }
  }

  /**
   * Promoted: whether the running copy, known to differ from the old primary's, is to be rebuilt
   * from the checkpoint and the input log (a checkpoint taken before the divergence, a log that
   * reaches the end of the stream). Journaled either way: serving a copy that differs answers
   * retried requests differently from the old primary.
   */
  private divergedRebuild(): boolean {
    const { host, journal, checkpoints } = this.p;
    const d = this.protection.takeDiverged();
    if (!d || !host.guestRunning) return false;
    const since = new Date(d.at).toISOString();
    const cp = checkpoints?.info;
    const takenBefore = cp !== undefined && Date.parse(cp.at) < d.at;
    if (cp && takenBefore && checkpoints!.logCovers(host.replicator.lastSeq)) {
      journal.record('guest', `promoted with a copy that differs from the old primary's since ${since} (${d.why}): rebuilding it from the checkpoint at input ${cp.seq} (taken ${cp.at}) and the input log instead of serving it`, { since, seq: cp.seq });
      return true;
    }
    const missing = !cp ? 'no checkpoint' : !takenBefore ? `the checkpoint (${cp.at}) is not older than that` : `the input log does not reach input ${host.replicator.lastSeq}`;
    journal.record('guest', `STATE DIVERGED: promoted with a copy that differs from the old primary's since ${since} (${d.why}); ${missing}: serving it, the only copy left`, { since });
    this.p.log.error({ since, why: d.why }, 'promoted with a diverged copy and nothing to rebuild it from');
    return false;
  }

  private async serve(): Promise<void> {
    const { host, journal, board } = this.p;
    await host.serve();
    journal.record('guest', `serving on ${board.service.address}:${board.service.port}`);
    this.poison.answerPoisonClients();
    this.reaskAuth(0);
  }

  /**
   * A copy blocked on an AUTH answer (one that died with the old primary, or a question it asked a
   * moment ago) would wait for its own retransmission, 500 ms with every client silent: ask the AUTH
   * service on its behalf now, and again every AUTH_REASK_MS while a question stays open, up to
   * AUTH_REASKS times. Once is not enough: until the gratuitous ARP reaches it, the AUTH service
   * sends its answer to the old primary's MAC, where the address is gone (seen in bench/failover-
   * detect: the new primary served in 9-30 ms, its copy then waited ~470 ms for an answer it had
   * been sent). An answer that comes twice is handed over twice; the guest reads the first and
   * discards the other, as it does a late duplicate.
   */
  private reaskAuth(attempt: number): void {
    const { host, ha } = this.p;
    if (this.stopping || ha.currentRole !== 'PRIMARY' || !host.guestRunning) return;
    const open = [...host.supervisor.port.authOutstanding];
    for (const sub of open) host.endpoint.release({ kind: 'auth-query', payload: Buffer.from(`AUTHQ ${sub}`) });
    if (attempt + 1 < AUTH_REASKS) setTimeout(() => this.reaskAuth(attempt + 1), AUTH_REASK_MS).unref();
  }

  /** The replication part of `understudy status`. */
  replicationStatus(): Record<string, unknown> {
    const { host, clones, checkpoints } = this.p;
    const w = this.protection.lossWatch;
    return {
      ...host.replicator.status(),
      cloneInProgress: clones?.cloneInProgress ?? false,
      cloneProgress: clones?.cloneInProgress ? this.cloneProgress : undefined,
      lastClone: clones?.lastClone,
      lastCloneError: clones?.lastCloneError,
      inputLoss: w ? { checks: w.checks, losses: w.losses, last: w.lastLoss ?? null } : null,
      failovers: this.failovers,
      ...this.upgrade.status(),
      checkpoint: checkpoints ? { last: checkpoints.info ?? null, inputsLoggedSince: checkpoints.loggedSince, inputLog: checkpoints.logStatus } : null,
      poison: this.poison.status(),
      guestHang: this.guestHang.status(),
    };
  }
}
