/**
 * Fakes of what the pair layer uses (src/pair/parts.ts), for unit tests of src/pair/ without QEMU,
 * namespaces or a partner: an HA machine the test drives by hand, a guest supervisor whose guest
 * "runs" when started, a replicator that records its calls, a clone manager and a checkpointer.
 * Each records what was asked of it in `calls`, in order, across all the fakes (one shared log).
 */
import type { QuorumSource } from '../../src/ha/quorum.js';
import { EventEmitter } from 'node:events';
import { resolve } from 'node:path';
import { loadBoardProfile } from '../../src/config/board-profile.js';
import { loadGuestDescriptor, type GuestDescriptor } from '../../src/config/guest-descriptor.js';
import { createLogger } from '../../src/core/log.js';
import type { GuestHealth, Role } from '../../src/ha/frame.js';
import type { RoleChange } from '../../src/ha/ha-controller.js';
import type { GuestState } from '../../src/guest/supervisor.js';
import type { SequencedInput, ControlMessage } from '../../src/replication/messages.js';
import type { Replicator, ReplicationStatus } from '../../src/replication/replicator.js';
import { ProcessedFrontier } from '../../src/replication/frontier.js';
import type { PairParts } from '../../src/pair/parts.js';
import type { CheckpointInfo } from '../../src/replication/checkpoint.js';

export const repoFile = (f: string) => resolve(import.meta.dirname, '../../..', f);

export class FakeHa extends EventEmitter {
  currentRole: Role = 'STARTING';
  membership = { partnerView: { state: 'alive' as 'unknown' | 'alive' | 'dead', heartbeat: { role: 'BACKUP', sender: 'sim-b', guest: 'running' } as { role: Role; sender: string; guest?: GuestHealth } | undefined } };
  fired: string[] = [];
  /** ha.manager pacemaker in a test: a stand-in quorum source (src/ha/quorum.ts QuorumSource). */
  quorum?: QuorumSource;
  partnerName = 'sim-b';
  constructor(private readonly calls: string[]) { super(); }
  /** The HA machine moves this board to `to` (what HaController.transition emits). */
  become(to: Role, cause = 'test'): void {
    const c: RoleChange = { from: this.currentRole, to, cause, at: new Date().toISOString() };
    this.currentRole = to;
    this.calls.push(`ha:${c.from}->${to}`);
    this.emit('role', c);
  }
  /** What markServingLostState was told, in order (undefined: a copy again). */
  lostState: Array<string | undefined> = [];
  markServingLostState(why: string | undefined): void { this.lostState.push(why); }
  fire(ev: string, cause?: string): boolean {
    this.fired.push(cause ? `${ev} (${cause})` : ev);
    return true;
  }
  yieldPrimary(): boolean {
    if (this.currentRole !== 'PRIMARY') return false;
    this.calls.push('ha:yieldPrimary');
    this.become('BACKUP', 'switchover');
    return true;
  }
  takeOver(): boolean {
    this.calls.push('ha:takeOver');
    return true;
  }
}

export class FakeSupervisor extends EventEmitter {
  currentState: GuestState = 'stopped';
  guest: GuestDescriptor;
  appSeqExpected: number | undefined = undefined;
  failurePolicy: (cause: string) => 'restart' | 'give-up' = () => 'restart';
  onStoppedQemu?: (evidence: string) => boolean;
  pingAheadAtMs: () => number[] = () => [];
  /** Descriptor versions that fail to start (a broken guest). */
  failingVersions = new Set<string>();
  /** What the guest answers to management commands (SAVE STOP …); a function may wait. */
  replies: Record<string, string | (() => Promise<string>)> = {};
  /** Requests the guest "holds" after a start (its saved state): appSeqExpected after start. */
  seqAfterStart?: number;
  port = {
    authOutstanding: new Set<string>(),
    delivered: 0,
    management: async (cmd: string): Promise<string> => {
      this.calls.push(`guest:${cmd}`);
      const r = this.replies[cmd];
      return typeof r === 'function' ? r() : (r ?? 'OK');
    },
    processedCount: async (): Promise<number | undefined> => this.processed ?? this.appSeqExpected,
  };
  constructor(private readonly calls: string[], guest = loadGuestDescriptor(repoFile('guests/dx-legacy.json'))) {
    super();
    this.guest = guest;
  }
  async start(): Promise<void> {
    this.calls.push(`guest:start ${this.guest.version}`);
    if (this.failingVersions.has(this.guest.version)) throw new Error(`${this.guest.version} crashed at boot`);
    this.currentState = 'running';
    if (this.seqAfterStart !== undefined) this.appSeqExpected = this.seqAfterStart;
  }
  async stop(): Promise<void> {
    this.calls.push('guest:stop');
    this.currentState = 'stopped';
  }
  useDescriptor(g: GuestDescriptor): void {
    this.calls.push(`guest:use ${g.version}`);
    this.guest = g;
  }
  async status(): Promise<{ appVersion?: string }> {
    return { appVersion: this.currentState === 'running' ? this.guest.version : undefined };
  }
  async inputsInGuest(): Promise<number | undefined> {
    return this.appSeqExpected;
  }
  /** What the guest reports having processed (PING seq=); undefined: the count the controller expects. */
  processed?: number;
  rebaseAppSeq(processed: number): void {
    this.calls.push(`guest:rebase ${processed}`);
    this.appSeqExpected = processed;
  }
  /** What hangEvidence() answers: this board's own evidence of a hung guest, if any. */
  evidence: string | undefined = undefined;
  async hangEvidence(minSilentMs: number): Promise<string | undefined> {
    this.calls.push(`guest:hang-evidence ${minSilentMs}`);
    return this.evidence;
  }
  /** Every setFollowing() call, in order (kept apart from `calls`, which tests compare whole). */
  followingSet: boolean[] = [];
  async setFollowing(following: boolean): Promise<void> {
    this.followingSet.push(following);
  }
  /** What fastHangEvidence() answers (the fast check of a witness's early report). */
  fastEvidence: { evidence?: string; declined?: string; slowed?: boolean } = { declined: 'it answered a PING' };
  async fastHangEvidence(confirmMs: number): Promise<{ evidence?: string; declined?: string; slowed?: boolean }> {
    this.calls.push(`guest:fast-hang-evidence ${confirmMs}`);
    return this.fastEvidence;
  }
  /** As the real supervisor: through the failure policy (give up: failed; otherwise a restart). */
  declareHung(cause: string): boolean {
    if (this.currentState !== 'running') return false;
    const how = this.failurePolicy(cause);
    this.calls.push(`guest:hung ${how}`);
    if (how === 'give-up') this.fail(cause);
    return true;
  }
  /** The guest dies (QEMU gone for good): what the supervisor emits. */
  fail(cause: string): void {
    this.currentState = 'failed';
    this.emit('state', 'failed', cause);
  }
}

export class FakeReplicator extends EventEmitter {
  mode: 'standalone' | 'primary' | 'backup' = 'standalone';
  protectedNow = false;
  followsAnotherVersion = false;
  lastSeq = 0;
  ackedSeq = 0;
  deliveredSeq = 0;
  heldCount = 0;
  heldReplies = 0;
  /** Whether the partner channel is open (followOnCurrentChannel / protectOnCurrentChannel need it). */
  channelOpen = true;
  sent: ControlMessage[] = [];
  readonly frontier = new ProcessedFrontier();
  serveAlone?: (waitedMs: number) => string | undefined;
  withholding = false;
  logWhileUnprotected = false;
  screen?: Replicator['screen'];
  constructor(private readonly calls: string[]) { super(); }
  becomePrimary(opts: { holdDelivery?: boolean } = {}): void { this.calls.push(opts.holdDelivery ? 'replicator:primary(held)' : 'replicator:primary'); this.mode = 'primary'; this.protectedNow = false; }
  becomeBackup(): void { this.calls.push('replicator:backup'); this.mode = 'backup'; this.protectedNow = false; }
  followOnCurrentChannel(versionChange: boolean): boolean {
    this.calls.push(`replicator:follow-current versionChange=${versionChange}`);
    if (this.mode !== 'backup' || !this.channelOpen) return false;
    this.protectedNow = true;
    this.followsAnotherVersion = versionChange;
    return true;
  }
  protectOnCurrentChannel(): boolean {
    this.calls.push('replicator:protect-current');
    if (this.mode !== 'primary' || !this.channelOpen) return false;
    this.protectedNow = true;
    return true;
  }
  hold(): void { this.calls.push('replicator:hold'); }
  release(): void { this.calls.push('replicator:release'); }
  unprotect(reason: string): void {
    this.calls.push(`replicator:unprotect ${reason}`);
    if (!this.protectedNow) return;
    this.protectedNow = false;
    this.emit('unprotected', reason);
  }
  sendControl(m: ControlMessage): void { this.calls.push(`send:${m.type}`); this.sent.push(m); }
  replay(fromSeq: number, inputs: SequencedInput[]): void { this.calls.push(`replicator:replay from ${fromSeq}: ${inputs.map((s) => s.seq).join(',')}`); }
  discardQueue(): void { this.calls.push('replicator:discard-queue'); }
  pauseDelivery(): number { this.calls.push('replicator:pause'); return 0; }
  resumeDelivery(): void { this.calls.push('replicator:resume'); }
  restartDelivery(fromSeq: number, logged: SequencedInput[]): number {
    this.calls.push(`replicator:restart-delivery from ${fromSeq}`);
    this.deliveredSeq = this.lastSeq;
    return logged.length;
  }
  status(): ReplicationStatus {
    return {
      mode: this.mode, protected: this.protectedNow, lastSeq: this.lastSeq, ackedSeq: this.ackedSeq, deliveredSeq: this.deliveredSeq, lagInputs: null,
      heldReplies: this.heldReplies, heldInputs: this.heldCount, holding: false, divergences: 0, digestsCompared: 0, versionDifferences: 0, withheld: null, authHolds: 0, answersAhead: 0, answersRehanded: 0, clients: 0,
      delivery: { paused: false, awaitingRoom: false, authOpen: [], queued: 0, head: null },
      pendingReplies: 0, drops: { queueFull: 0, heldFull: 0, pendingPruned: 0, quarantined: 0 },
    };
  }
}

export class FakeClones extends EventEmitter {
  cloneInProgress = false;
  clones = 0;
  lastClone = undefined;
  lastCloneError = undefined;
  /** As a clone target: the partner's migration stream has begun. */
  targetStreamBegun = true;
  /** The clone in progress ends when the test resolves it. */
  private finish?: () => void;
  constructor(private readonly calls: string[]) { super(); }
  clone(): Promise<never> {
    this.calls.push('clones:clone');
    this.clones++;
    this.cloneInProgress = true;
    return new Promise((res) => { this.finish = () => { this.cloneInProgress = false; this.emit('cloned', {}); res({} as never); }; });
  }
  endClone(): void { this.finish?.(); }
  /** Cancels the clone in progress: it ends without 'cloned'. */
  async cancelClone(why: string): Promise<void> {
    if (!this.cloneInProgress) return;
    this.calls.push(`clones:cancel (${why})`);
    this.finish = undefined;
    this.cloneInProgress = false;
  }
}

export class FakeCheckpoints {
  info: CheckpointInfo | undefined = undefined;
  loggedSince = 0;
  suspended = false;
  refusal: () => string | undefined = () => undefined;
  logStatus = { sinceCheckpoint: 0, limit: 200000, forced: 0, groupCommits: 0, logged: 0 };
  log: SequencedInput[] = [];
  constructor(private readonly calls: string[]) {}
  async restore(): Promise<{ seq: number; replayed: number }> { this.calls.push('checkpoint:restore'); return { seq: 0, replayed: 0 }; }
  inputsLogged(from: number, to: number): SequencedInput[] { return this.log.filter((s) => s.seq >= from && s.seq <= to); }
  nthLastRequest(upTo: number, n: number): number | undefined {
    const reqs = this.log.filter((s) => s.seq <= upTo && s.input.kind === 'request');
    return reqs[reqs.length - n]?.seq;
  }
  async take(): Promise<never> { this.calls.push('checkpoint:take'); return {} as never; }
  async idle(): Promise<void> {}
  /** Whether the log covers the stream (set by a test). */
  covers = false;
  logCovers(): boolean { return this.covers; }
  fromEarlierStart = false;
}

export class FakeJournal {
  lines: string[] = [];
  meta = new Map<string, string>();
  record(kind: string, message: string): void { this.lines.push(`${kind}: ${message}`); }
  setMeta(k: string, v: string): void { this.meta.set(k, v); }
  getMeta(k: string): string | undefined { return this.meta.get(k); }
  has(re: RegExp): boolean { return this.lines.some((l) => re.test(l)); }
}

/** A whole fake pair board: every part, one shared call log. */
export function fakePair(): {
  calls: string[]; ha: FakeHa; supervisor: FakeSupervisor; replicator: FakeReplicator; clones: FakeClones; checkpoints: FakeCheckpoints;
  journal: FakeJournal; host: { serving: boolean }; parts: PairParts;
} {
  const calls: string[] = [];
  const ha = new FakeHa(calls);
  const supervisor = new FakeSupervisor(calls);
  const replicator = new FakeReplicator(calls);
  const clones = new FakeClones(calls);
  const checkpoints = new FakeCheckpoints(calls);
  const journal = new FakeJournal();
  const host = {
    serving: false,
    supervisor, replicator,
    get guestRunning() { return supervisor.currentState === 'running'; },
    get isServing() { return this.serving; },
    async serve() { calls.push('host:serve'); this.serving = true; },
    async unserve() { calls.push('host:unserve'); this.serving = false; },
    endpoint: { release: (o: { payload: Buffer }) => { calls.push(`endpoint:${o.payload.toString()}`); } },
  };
  const board = loadBoardProfile(repoFile('board/sim-a.json'));
  const parts: PairParts = { board, ha, host, clones, checkpoints, journal, log: createLogger('test', { level: 'silent' }) };
  return { calls, ha, supervisor, replicator, clones, checkpoints, journal, host, parts };
}

/** Lets queued promise work (the controller's role work) run. */
export async function settle(rounds = 20): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}
