/**
 * Cloning and the replication channel between the two controllers, over the Ethernet partner link:
 *
 *   primary                                    backup
 *   ── clone-prepare ─────────────────────────▶ stops any old copy, starts QEMU -incoming
 *   ◀───────────────────────────── clone-ready
 *   holds new inputs; a PING answered by its guest proves every input delivered is in guest memory
 *   QEMU migrate ─▶ unix relay ═══ authenticated TCP ═══▶ relay ─▶ QEMU -incoming
 *   source resumes (cont): the clone's cut-over point is the last input delivered
 *   ── clone-done {cutSeq, client map} ───────▶ follows from cutSeq, resumes the clone
 *   releases held inputs to both: INPUT ─────▶ … ◀── ACK; DIGEST ──▶ divergence watch
 *
 * The clone runs at raised priority (QEMU's threads reniced for its duration). The guest's pause
 * is QEMU's own measure (query-migrate "downtime").
 */
import { EventEmitter } from 'node:events';
import { execFile } from 'node:child_process';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BoardProfile } from '../config/board-profile.js';
import { loadPartnerGuestDescriptor, partnerNameOf, type GuestDescriptor } from '../config/guest-descriptor.js';
import { UsError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { listThreads } from '../hw/affinity.js';
import { migrate, recoverFromMigration } from '../hw/hypervisor/migration.js';
import type { GuestSupervisor } from '../guest/supervisor.js';
import type { Store } from '../store/journal.js';
import { T_CONTROL, decodeControl, encodeControl, type ControlMessage } from './messages.js';
import type { RejectionReason } from './rejections.js';
import type { Replicator } from './replicator.js';
import { MessageChannel, connectAuthenticated, listenAuthenticated, type AuthServer } from './secure-channel.js';

const run = promisify(execFile);

export interface CloneProgress {
  phase: 'prepare' | 'drain' | 'migrate' | 'cut-over' | 'done';
  transferredMb?: number;
  totalMb?: number;
  percent?: number;
}

/** The unix socket a clone's QEMU migrates into; `partnerGone`: why the partner's end went, if it did (the rest was drained). */
type MigrationRelay = Server & { partnerGone?: string };

/** A snapshot copy (the guest serves through it, src/hw/hypervisor/migration.ts) or a plain one (inputs held for all of it). */
export type CloneCopy = 'snapshot' | 'plain';

export interface CloneReport {
  durationMs: number;
  downtimeMs: number | null;
  /** Whether the guest ran during the copy (a snapshot copy, or a live one under KVM) or was stopped for all of it. */
  live: boolean;
  /** A snapshot copy: the guest as at the cut, and it served through the copy (migration.ts). */
  snapshot: boolean;
  /** Inputs the guest was given during the copy, handed to the new backup after the cut-over. */
  afterCut: number;
  holdMs: number;
  /**
   * Where the hold went: the inputs still queued here reaching the guest, the PING that proves them
   * in its memory, then QEMU's start of the copy until it resumed the guest (a snapshot copy: its
   * setup, which scales with guest RAM, 90-180 ms for 128 MB here) or until the copy's end (plain).
   */
  holdParts: { drainMs: number; pingMs: number; migrationStartMs: number; qemuSetupMs?: number };
  cutSeq: number;
  transferredMb: number;
}

export declare interface ReplicationManager {
  on(ev: 'clone-progress', fn: (p: CloneProgress) => void): this;
  on(ev: 'cloned', fn: (r: CloneReport) => void): this;
  on(ev: 'clone-target', fn: (phase: 'started' | 'running' | 'failed', detail?: string) => void): this;
  on(ev: 'control', fn: (m: ControlMessage, channel: MessageChannel) => void): this;
  on(ev: 'guest-descriptor', fn: (g: GuestDescriptor) => void): this;
}

export class ReplicationManager extends EventEmitter {
  private inputServer?: AuthServer;
  private migrationServer?: AuthServer;
  private backupChannel?: MessageChannel;
  /**
   * This board as a clone target: whether the partner's migration stream has begun. A promotion
   * waits for a clone whose stream is arriving (it runs, or fails when the stream breaks), but a
   * stream that never began never will: its source is gone (src/pair/controller.ts).
   */
  targetStreamBegun = false;
  /** Clones are snapshot copies where QEMU can take one (board profile partner.snapshotClones). */
  snapshotClones = true;
  private cloning?: Promise<CloneReport>;
  /** Ends the clone under way at its next step (cancelClone). */
  private abortClone?: (e: Error) => void;
  lastClone?: CloneReport & { at: string };
  lastCloneError?: string;
  readonly inputPort: number;
  readonly migrationPort: number;

  /**
   * Asked before this board is prepared as a clone target ('check') and once its old copy is stopped
   * ('become-target'): throws to refuse (a primary takes no clone); at 'become-target' the pair puts
   * the replicator in backup mode (src/pair/controller.ts admitClone). Until set, every clone is admitted.
   */
  admitClone: (stage: 'check' | 'become-target') => void = () => undefined;

  constructor(
    private readonly board: BoardProfile,
    private readonly key: Buffer,
    private readonly supervisor: GuestSupervisor,
    private readonly replicator: Replicator,
    private readonly store: Store,
    private readonly log: Logger,
  ) {
    super();
    const eth = board.partner!.ethernet!;
    this.inputPort = eth.port + 1;
    this.migrationPort = eth.port + 2;
  }

  get cloneInProgress(): boolean {
    return this.cloning !== undefined;
  }

  /** Both boards listen: whichever is backup receives the input stream and clones. */
  async listen(): Promise<void> {
    const eth = this.board.partner!.ethernet!;
    const rejected = (e: Error) => {
      this.store.record('replication', `rejected a partner connection: ${e.message}`);
      this.log.warn({ err: e.message }, 'rejected a partner connection');
    };
    for (let attempt = 0; ; attempt++) {
      try {
        this.inputServer = await listenAuthenticated(eth.localAddress, this.inputPort, this.key, 'inputs', (s) => this.onInputChannel(s), rejected);
        this.migrationServer = await listenAuthenticated(eth.localAddress, this.migrationPort, this.key, 'migration', (s) => this.onMigrationStream(s), rejected);
        return;
      } catch (e) {
        // The partner-link address may not be up yet.
        await this.inputServer?.close();
        this.inputServer = undefined;
        if (attempt >= 30) throw e;
        await sleep(1000);
      }
    }
  }

  async close(): Promise<void> {
    await this.inputServer?.close();
    await this.migrationServer?.close();
    this.backupChannel?.close();
  }

  // ------------------------------------------------------------------ primary side
  /**
   * Clones the running guest to the partner and starts protecting it. One at a time (a call during a
   * clone gets that clone). `copy`: a snapshot copy (the guest serves through it) or a plain one
   * (inputs held for all of it); default from partner.snapshotClones.
   */
  clone(o: { copy?: CloneCopy } = {}): Promise<CloneReport> {
    this.cloning ??= this.doClone(o.copy ?? (this.snapshotClones ? 'snapshot' : 'plain')).finally(() => { this.cloning = undefined; });
    return this.cloning;
  }

  /**
   * Ends the clone under way, if any, and resolves once it has ended (failed, its hold released, its
   * migration cancelled). For a source copy about to be replaced (a poison recovery restoring the
   * checkpoint under it): a clone left running then read a QEMU that was gone (CI, 2026-12-06:
   * ENOENT /proc/<pid>/task) or would copy a hung guest to the backup.
   */
  async cancelClone(why: string): Promise<void> {
    const c = this.cloning;
    if (!c) return;
    this.store.record('clone', `cancelling the clone under way: ${why}`);
    this.abortClone?.(new UsError('US_ERR_NOT_RUNNING', `clone cancelled: ${why}`));
    await c.catch(() => undefined);
  }

  private progress(p: CloneProgress): void {
    this.emit('clone-progress', p);
  }

  private async doClone(copy: CloneCopy): Promise<CloneReport> {
    const t0 = performance.now();
    const qemu = this.supervisor.hypervisor;
    if (!qemu || this.supervisor.currentState !== 'running') throw new UsError('US_ERR_NOT_RUNNING', 'no running guest to clone');
    // Every wait below also ends when the clone is cancelled (cancelClone); a step left behind by the
    // race ends on its own (its failure is not reported twice).
    let cancelled: Error | undefined;
    const aborted = new Promise<never>((_, reject) => { this.abortClone = (e) => { cancelled ??= e; reject(e); }; });
    aborted.catch(() => undefined);
    const step = <T>(p: Promise<T>): Promise<T> => {
      p.catch(() => undefined);
      return cancelled ? Promise.reject(cancelled) : Promise.race([p, aborted]);
    };
    const eth = this.board.partner!.ethernet!;
    this.progress({ phase: 'prepare' });
    this.store.record('clone', `cloning the guest to the partner (${eth.partnerAddress})`);
    const sock = await connectAuthenticated(eth.partnerAddress, this.inputPort, this.key, 'inputs');
    const channel = new MessageChannel(sock);
    const ctl = this.controlOn(channel);
    let holdStart = 0;
    let relay: MigrationRelay | undefined;
    const relayPath = this.supervisor.paths.cloneOut;
    const reniced: number[] = [];
    try {
      // The descriptor is named as the target finds it: a guest package's by its id, unpacked on each board.
      channel.send(T_CONTROL, encodeControl({
        type: 'clone-prepare', memoryMb: this.supervisor.guest.memoryMb, guestFile: partnerNameOf(this.supervisor.guest, this.board.storageDir),
        ...(this.replicator.servingUnprotected ? { servedUnprotected: this.replicator.lastSeq } : {}),
      }));
      const ready = await step(ctl.next(60000));
      if (ready.type !== 'clone-ready') throw new UsError('US_ERR_LINK', `partner cannot take a clone: ${ready.type === 'clone-failed' ? ready.reason : ready.type}`);

      // Cut-over: from here new inputs wait. Every input delivered before is in the guest's memory
      // once a PING sent after them is answered (frames travel the private wire in order), so the
      // copy holds exactly the inputs up to cutSeq if it is taken before the guest is given more.
      // A snapshot copy (migration.ts) is the guest as at its start: the inputs are released as soon
      // as QEMU resumes the guest after that instant (a pause of well under a millisecond), the guest
      // serves through the copy, and what it is given meanwhile is kept (Replicator.startBacklog) and
      // handed to the new backup after the cut-over. Where QEMU cannot take a snapshot copy, inputs
      // stay held for the whole copy, and under TCG the guest is stopped for it too (a live TCG copy
      // loses writes: see migration.ts).
      // Set up before the inputs are held: the relay the stream goes through, QEMU's threads reniced.
      relay = await this.migrationRelay(relayPath, eth.partnerAddress);
      const vcpu = await qemu.vcpuThreadId();
      for (const tid of listThreads(qemu.pid)) {
        if (tid === vcpu) continue;
        await run('renice', ['-n', '-5', '-p', String(tid)]).then(() => reniced.push(tid), () => undefined);
      }
      // The cut, once QEMU is set up for the copy (migrate's beforeMigrate): the inputs wait from here
      // until the snapshot's instant (or the end of a plain copy).
      let cut: { seq: number; guestSeq: number; authOpen: string[]; authAnswered?: string; authAnswer?: string } | undefined;
      let holdParts = { drainMs: 0, pingMs: 0 };
      const takeCut = async (): Promise<void> => {
        this.progress({ phase: 'drain' });
        // Inputs still queued for the guest (a restored copy working through its log, a guest
        // blocked on an AUTH question) are handed over before the hold, while new ones still flow:
        // held for them, every client waited 763–1158 ms at the re-protection after a recovery
        // (poison.test, 2026-12-07). Bounded: past 5 s the hold starts anyway and waits as before.
        for (let i = 0; this.replicator.queuedLocally > 0 && i < 500; i++) await step(sleep(10));
        this.replicator.hold();
        holdStart = performance.now();
        // Inputs sequenced but still queued here (a replay waiting on AUTH) must reach the guest first.
        for (let i = 0; this.replicator.queuedLocally > 0; i++) {
          if (i > 500) throw new UsError('US_ERR_TIMEOUT', `${this.replicator.queuedLocally} inputs still queued for the guest after 5 s`);
          await step(sleep(10));
        }
        const drained = performance.now();
        await step(this.supervisor.inputsInGuest(10000));
        holdParts = { drainMs: Math.round(drained - holdStart), pingMs: Math.round(performance.now() - drained) };
        // What the copy holds, read at the cut: the inputs, the guest's count of them, its open AUTH
        // questions, and the one it was handed the answer to but may not have read yet.
        const authAnswered = this.supervisor.port.authAnswered;
        cut = {
          seq: this.replicator.deliveredSeq, guestSeq: this.supervisor.appSeqExpected ?? 0, authOpen: [...this.supervisor.port.authOutstanding], authAnswered,
          authAnswer: authAnswered ? this.replicator.answerHandedFor(authAnswered)?.toString('base64') : undefined,
        };
        this.replicator.startBacklog(cut.seq);
      };
      let releasedAt = 0;
      let qemuSetupMs: number | null = null;
      const { downtimeMs, live, snapshot, transferredBytes } = await step(migrate(qemu, {
        uri: `unix:${relayPath}`, pollMs: 20, errorPrefix: 'migration',
        snapshot: copy === 'snapshot' ? { onResumed: (_pause, setup) => { releasedAt = performance.now(); qemuSetupMs = setup; this.replicator.release(); } } : undefined,
        beforeMigrate: takeCut,
        onStart: () => this.progress({ phase: 'migrate', percent: 0 }),
        onProgress: (p) => this.progress({ phase: 'migrate', transferredMb: Math.round(p.transferredBytes / 1048576), totalMb: Math.round(p.totalBytes / 1048576),
          percent: Math.min(99, Math.round((p.transferredBytes / p.totalBytes) * 100)) }),
      }));
      // A stopped or live copy leaves the source paused ("postmigrate"): it continues as the primary.
      // A snapshot copy's source ran all along.
      if (!snapshot) await step(qemu.qmp.execute('cont'));
      if (!cut) throw new UsError('US_ERR_INTERNAL', 'the copy completed without a cut');
      const { seq: cutSeq, guestSeq, authOpen, authAnswered, authAnswer } = cut;
      const backlog = this.replicator.backlogState;
      if (backlog?.full) throw new UsError('US_ERR_LINK', `more inputs came during the copy than are kept for the new backup (${backlog.inputs}): the clone is made again`);
      // The partner may have gone during the copy (the relay then drained QEMU's stream; a board that
      // loses power closes no connection): no cut-over.
      if (relay?.partnerGone) throw new UsError('US_ERR_LINK', `the partner's end of the migration stream went during the copy (${relay.partnerGone}): it holds no clone`);
      if (!channel.open) throw new UsError('US_ERR_LINK', 'the partner closed the replication channel during the copy');
      this.progress({ phase: 'cut-over', percent: 100 });
      channel.send(T_CONTROL, encodeControl({ type: 'clone-done', cutSeq, guestSeq, clients: this.replicator.clients.export(), downtimeMs, authOpen, authAnswered, authAnswer }));
      this.replicator.resetDigests();
      this.replicator.protect(channel, cutSeq);
      // From now on the backup may ask things of us on this channel (re-clone after a divergence).
      channel.on('message', (type, body) => {
        if (type !== T_CONTROL) return;
        const m = this.decodeOrRefuse(channel, body);
        if (m) this.emit('control', m, channel);
      });
      const holdMs = (releasedAt || performance.now()) - holdStart;
      this.replicator.release();
      holdStart = 0;
      const report: CloneReport = {
        durationMs: Math.round(performance.now() - t0), downtimeMs, live, snapshot, holdMs: Math.round(holdMs),
        holdParts: { ...holdParts, migrationStartMs: Math.max(0, Math.round(holdMs) - holdParts.drainMs - holdParts.pingMs), ...(qemuSetupMs !== null ? { qemuSetupMs } : {}) }, cutSeq,
        afterCut: (backlog?.inputs ?? 0), transferredMb: Math.round(transferredBytes / 1048576),
      };
      this.lastClone = { ...report, at: new Date().toISOString() };
      this.lastCloneError = undefined;
      this.store.record('clone', `clone complete in ${report.durationMs} ms: guest paused ${downtimeMs ?? '?'} ms (${snapshot ? `snapshot copy: the guest served ${report.afterCut} inputs during it` : live ? 'live copy' : 'stopped copy: TCG'}), inputs held ${report.holdMs} ms, cut-over at input ${cutSeq}`, { ...report });
      this.progress({ phase: 'done', percent: 100 });
      this.emit('cloned', report);
      return report;
    } catch (e) {
      this.replicator.dropBacklog();
      this.lastCloneError = (e as Error).message;
      this.store.record('clone', `clone FAILED: ${(e as Error).message}`);
      this.log.error({ err: (e as Error).message }, 'clone failed');
      // Cancelled: the copy's QEMU is being replaced (nothing to resume, no snapshot to wait out).
      // Otherwise a plain copy is cancelled and its source resumed; a snapshot copy is left to
      // complete into the relay (recoverFromMigration: cancelling one hangs the guest).
      if (!cancelled) await recoverFromMigration(qemu, { cancelActive: true });
      channel.close();
      throw e;
    } finally {
      this.abortClone = undefined;
      if (holdStart) this.replicator.release();
      ctl.dispose();
      for (const tid of reniced) await run('renice', ['-n', '0', '-p', String(tid)]).catch(() => undefined);
      relay?.close();
      rmSync(relayPath, { force: true });
    }
  }

  /**
   * A unix socket QEMU migrates into, piped to the partner's migration port after authentication.
   * When the partner's end goes (it died, the link broke) the rest of QEMU's stream is read and
   * dropped here until QEMU closes it: the migration then ends as QEMU's own success, never as a
   * write error (a snapshot copy that fails leaves the guest hung: recoverFromMigration). The relay
   * records why in `partnerGone` once something QEMU sent is lost (bytes still buffered for the
   * partner, or any that come after), and the clone fails on it rather than cut over. The partner's
   * QEMU closes its end as soon as it has read the stream's last section, which may reach this
   * process before QEMU's own end of the stream does: that close loses nothing (bench/clone-stall,
   * 2026-12-06: a complete plain copy was failed so).
   */
  private async migrationRelay(path: string, partner: string): Promise<MigrationRelay> {
    rmSync(path, { force: true });
    const server: MigrationRelay = createServer((local) => {
      local.pause();
      let draining = false;
      const lost = (why: string) => {
        if (server.partnerGone) return;
        server.partnerGone = why;
        this.log.warn({ why }, 'migration relay: the partner\'s end is gone; the rest of the stream is dropped until QEMU ends it');
        this.store.record('clone', `the partner's end of the migration stream is gone (${why}): the rest of QEMU's stream is read and dropped until the copy ends`, { why });
      };
      const drain = (why: string, bytesLost: boolean) => {
        if (local.destroyed || draining) return;
        draining = true;
        if (bytesLost) lost(why);
        local.removeAllListeners('data');
        local.on('data', () => lost(why));
        local.resume();
      };
      local.on('error', () => local.destroy());
      connectAuthenticated(partner, this.migrationPort, this.key, 'migration').then((remote) => {
        local.pipe(remote);
        remote.pipe(local);
        remote.resume();
        local.resume();
        local.on('close', () => remote.destroy());
        const gone = (why: string) => {
          const buffered = remote.writableLength > 0;
          local.unpipe(remote);
          remote.unpipe(local);
          remote.destroy();
          drain(why, buffered);
        };
        remote.on('close', () => gone('closed'));
        remote.on('error', (e: Error) => gone(e.message));
      }, (e: Error) => {
        this.log.error({ err: e.message }, 'migration relay could not reach the partner');
        drain(e.message, true);
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => resolve());
    });
    this.supervisor.giveToQemu(path); // QEMU, as its own user, connects to it
    return server;
  }

  /** Control messages on a channel, awaited one at a time. */
  private controlOn(channel: MessageChannel): { next(timeoutMs: number): Promise<ControlMessage>; dispose(): void } {
    const queue: ControlMessage[] = [];
    let waiter: ((m: ControlMessage | Error) => void) | undefined;
    const onMsg = (type: number, body: Buffer) => {
      if (type !== T_CONTROL) return;
      const m = this.decodeOrRefuse(channel, body);
      if (!m) return;
      if (waiter) { const w = waiter; waiter = undefined; w(m); } else queue.push(m);
    };
    const onClose = () => { if (waiter) { const w = waiter; waiter = undefined; w(new UsError('US_ERR_LINK', 'partner closed the replication channel')); } };
    channel.on('message', onMsg);
    channel.on('close', onClose);
    return {
      next: (timeoutMs) => {
        const m = queue.shift();
        if (m) return Promise.resolve(m);
        return new Promise((resolve, reject) => {
          const timer = setTimeout(() => { waiter = undefined; reject(new UsError('US_ERR_TIMEOUT', `partner did not answer within ${timeoutMs} ms`)); }, timeoutMs);
          waiter = (x) => { clearTimeout(timer); if (x instanceof Error) reject(x); else resolve(x); };
        });
      },
      dispose: () => { channel.off('message', onMsg); channel.off('close', onClose); },
    };
  }

  // ------------------------------------------------------------------ backup side
  private onInputChannel(sock: Socket): void {
    const channel = new MessageChannel(sock);
    channel.on('message', (type, body) => {
      if (type !== T_CONTROL) return;
      const m = this.decodeOrRefuse(channel, body);
      if (!m) return;
      if (m.type === 'clone-prepare') {
        this.noteServedUnprotected(m.servedUnprotected);
        void this.prepareCloneTarget(channel, m.guestFile);
      } else if (m.type === 'clone-done') {
        // Only the channel this board answered clone-ready on may cut a clone over.
        if (channel !== this.backupChannel) { this.refuseControl(channel, 'unexpected', 'clone-done on a channel that prepared no clone'); return; }
        this.finishCloneTarget(channel, m);
      } else this.emit('control', m, channel);
    });
  }

  /** A control message, validated (decodeControl); a bad one is counted, journaled and its channel closed. */
  private decodeOrRefuse(channel: MessageChannel, body: Buffer): ControlMessage | undefined {
    if (!channel.open) return undefined; // refused already: what was buffered behind it is not read
    try {
      return decodeControl(body);
    } catch (e) {
      this.refuseControl(channel, 'malformed', (e as Error).message);
      return undefined;
    }
  }

  private refuseControl(channel: MessageChannel, reason: RejectionReason, detail: string): void {
    this.replicator.rejections.reject('control', reason, detail);
    channel.close();
  }

  /**
   * The partner begins a clone having served up to `served` unprotected: inputs past this board's
   * last one were answered without reaching it, so its checkpoint and log rebuild an older state.
   * Seen in CI (2026-12-06): both boards starved for a second, the primary served unprotected and
   * re-cloned, then was reported hung; the backup fenced it and served its checkpoint and log,
   * and the registrations acknowledged meanwhile were lost.
   */
  private noteServedUnprotected(served: number | undefined): void {
    const mine = this.replicator.lastSeq;
    if (served === undefined || served <= mine || this.replicator.stateGap) return;
    const gap = `the partner served through input ${served} unprotected; this board's log ends at input ${mine}`;
    this.replicator.stateGap = gap;
    this.store.record('clone', `${gap}: this board holds none of the partner's state until the new clone is cut over`, { served, logged: mine });
  }

  private async prepareCloneTarget(channel: MessageChannel, guestFile?: string): Promise<void> {
    try {
      this.targetStreamBegun = false;
      this.emit('clone-target', 'started');
      this.store.record('clone', 'partner is cloning its guest to this board: starting the clone target');
      // A clone runs what its source runs (the same kernel and initrd, or the migration fails). The
      // partner names the descriptor: checked before this board's copy is stopped.
      const descriptor = guestFile && guestFile !== this.supervisor.guest.sourceFile && guestFile !== partnerNameOf(this.supervisor.guest, this.board.storageDir)
        ? loadPartnerGuestDescriptor(guestFile, this.supervisor.guest.sourceFile, 'clone-prepare guestFile', this.board.storageDir) : undefined;
      // Inputs of a stream already followed keep being logged and acknowledged, but none reaches a
      // guest until the new clone is cut over (the new QEMU would read them in before its memory arrives).
      this.admitClone('check');
      this.replicator.pauseDelivery();
      await this.supervisor.stop();
      this.admitClone('become-target');
      if (descriptor) {
        this.supervisor.useDescriptor(descriptor);
        this.emit('guest-descriptor', this.supervisor.guest);
      }
      await this.supervisor.startClone(`unix:${this.supervisor.paths.cloneIn}`);
      // The channel of the stream followed so far stays open (inputs keep being logged and
      // acknowledged on it) until the new clone's cut-over replaces it.
      this.backupChannel = channel;
      channel.send(T_CONTROL, encodeControl({ type: 'clone-ready' }));
    } catch (e) {
      this.emit('clone-target', 'failed', (e as Error).message);
      channel.send(T_CONTROL, encodeControl({ type: 'clone-failed', reason: (e as Error).message }));
    }
  }

  private finishCloneTarget(channel: MessageChannel, m: Extract<ControlMessage, { type: 'clone-done' }>): void {
    // Synchronously, before the inputs that follow on this channel are read.
    this.replicator.clients.import(m.clients);
    this.replicator.resetDigests();
    this.supervisor.expectAppSeq(m.guestSeq, m.authOpen ?? [], m.authAnswered);
    this.log.info({ cutSeq: m.cutSeq, guestSeq: m.guestSeq, authOpen: m.authOpen ?? [], authAnswered: m.authAnswered ?? null, answerKept: m.authAnswer !== undefined }, 'clone cut over: the count and AUTH questions the copy holds');
    this.replicator.follow(channel, m.cutSeq, m.authOpen ?? [], m.authAnswered, m.authAnswer !== undefined ? Buffer.from(m.authAnswer, 'base64') : undefined);
    // Inputs that follow are logged and acknowledged at once but reach the clone only once it runs,
    // so no frame meets a QEMU that is still loading its incoming state.
    this.replicator.pauseDelivery();
    this.supervisor.finishClone().then(() => {
      this.replicator.resumeDelivery();
      this.store.record('clone', `clone running on this board from input ${m.cutSeq} (guest paused ${m.downtimeMs ?? '?'} ms at the source)`);
      this.emit('clone-target', 'running');
    }, (e: Error) => {
      this.store.record('clone', `clone target failed to resume: ${e.message}`);
      this.emit('clone-target', 'failed', e.message);
      this.replicator.sendControl({ type: 'reclone', reason: `clone target failed: ${e.message}` });
    });
  }

  private onMigrationStream(remote: Socket): void {
    this.targetStreamBegun = true;
    const local = connect(this.supervisor.paths.cloneIn);
    local.on('connect', () => {
      remote.pipe(local);
      local.pipe(remote);
      remote.resume();
    });
    const end = () => { local.destroy(); remote.destroy(); };
    local.on('error', (e) => { this.log.error({ err: e.message }, 'clone target is not listening'); end(); });
    remote.on('error', end);
    local.on('close', end);
    remote.on('close', end);
  }
}
