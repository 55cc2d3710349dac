/**
 * What the pair layer uses of the layers below, as narrow structural types: the real parts (the HA
 * controller, the guest host, the replicator, the clone manager, the checkpointer) satisfy them, and
 * so do the small fakes of the unit tests (test/unit/pair-*.test.ts). Owns no behaviour.
 */
import type { BoardProfile } from '../config/board-profile.js';
import { UsError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import type { GuestDescriptor } from '../config/guest-descriptor.js';
import type { GuestState, GuestStatus, GuestSupervisor } from '../guest/supervisor.js';
import type { Heartbeat } from '../ha/frame.js';
import type { HaController, PartnerFenced, RoleChange } from '../ha/ha-controller.js';
import type { PartnerView } from '../ha/membership.js';
import type { QuorumState } from '../ha/quorum.js';
import type { Checkpointer } from '../replication/checkpoint.js';
import type { GuestHost } from '../replication/guest-host.js';
import type { CloneProgress, CloneReport, ReplicationManager } from '../replication/manager.js';
import type { WitnessVerdict } from '../replication/guest-witness.js';
import type { ControlMessage } from '../replication/messages.js';
import type { PoisonRecovery } from '../replication/poison.js';
import type { InputDrops, Replicator } from '../replication/replicator.js';
import type { Quarantine } from '../store/quarantine.js';

/** The event journal (src/store/journal.ts): every decision of the pair is recorded with its cause. */
export interface Journal {
  record(kind: string, message: string, detail?: Record<string, unknown>): void;
  setMeta(key: string, value: string): void;
  getMeta(key: string): string | undefined;
}

/** The role machine (src/ha): the pair follows its 'role' events and feeds it a few of its own. */
export type HaPart = Pick<HaController, 'currentRole' | 'fire' | 'yieldPrimary' | 'takeOver' | 'markServingLostState' | 'quorum' | 'partnerName'> & {
  on(ev: 'role', fn: (c: RoleChange) => void): unknown;
  on(ev: 'partner-fenced', fn: (f: PartnerFenced) => void): unknown;
  on(ev: 'quorum', fn: (q: QuorumState | undefined) => void): unknown;
  readonly membership: { readonly partnerView: { state: PartnerView['state']; heartbeat?: Pick<Heartbeat, 'role' | 'sender'> & Partial<Pick<Heartbeat, 'guest' | 'health'>> } };
};

export type SupervisorPart = Pick<GuestSupervisor,
  'currentState' | 'guest' | 'start' | 'stop' | 'useDescriptor' | 'inputsInGuest' | 'appSeqExpected' | 'rebaseAppSeq' | 'failurePolicy' | 'onStoppedQemu' | 'pingAheadAtMs' | 'declareHung' | 'hangEvidence' | 'fastHangEvidence' | 'setFollowing'> & {
  status(): Promise<Pick<GuestStatus, 'appVersion'>>;
  on(ev: 'state', fn: (s: GuestState, cause: string) => void): unknown;
  readonly port: Pick<GuestSupervisor['port'], 'authOutstanding' | 'management' | 'delivered' | 'processedCount'>;
};

export type ReplicatorPart = Pick<Replicator,
  | 'mode' | 'becomePrimary' | 'becomeBackup' | 'protectedNow' | 'followsAnotherVersion' | 'followOnCurrentChannel' | 'protectOnCurrentChannel'
  | 'hold' | 'release' | 'heldCount' | 'lastSeq' | 'ackedSeq' | 'deliveredSeq' | 'status' | 'unprotect' | 'sendControl'
  | 'replay' | 'discardQueue' | 'pauseDelivery' | 'resumeDelivery' | 'restartDelivery' | 'screen' | 'frontier' | 'logWhileUnprotected'
  | 'serveAlone' | 'withholding'> & {
  on(ev: 'divergence', fn: (key: string) => void): unknown;
  on(ev: 'unprotected', fn: (reason: string) => void): unknown;
  on(ev: 'withheld', fn: (reason: string, waiting: string) => void): unknown;
  on(ev: 'primary-guest-silent', fn: (v: WitnessVerdict) => void): unknown;
  on(ev: 'dropping', fn: (d: InputDrops) => void): unknown;
  once(ev: 'unprotected', fn: (reason: string) => void): unknown;
  off(ev: 'unprotected', fn: (reason: string) => void): unknown;
};

/** The guest hosted on this board: serving (service address + endpoint) apart from running the guest. */
export type HostPart = Pick<GuestHost, 'serve' | 'unserve' | 'guestRunning' | 'isServing'> & {
  readonly supervisor: SupervisorPart;
  readonly replicator: ReplicatorPart;
  readonly endpoint: Pick<GuestHost['endpoint'], 'release'>;
};

/** Cloning to and from the partner (src/replication/manager.ts). */
export type ClonePart = Pick<ReplicationManager, 'clone' | 'cancelClone' | 'cloneInProgress' | 'lastClone' | 'lastCloneError' | 'targetStreamBegun'> & {
  on(ev: 'clone-progress', fn: (p: CloneProgress) => void): unknown;
  on(ev: 'cloned', fn: (r: CloneReport) => void): unknown;
  on(ev: 'clone-target', fn: (phase: 'started' | 'running' | 'failed', detail?: string) => void): unknown;
  on(ev: 'control', fn: (m: ControlMessage) => void): unknown;
  on(ev: 'guest-descriptor', fn: (g: GuestDescriptor) => void): unknown;
};

/** Checkpoints and the input log, on the backup (src/replication/checkpoint.ts). */
export type CheckpointPart = Pick<Checkpointer, 'info' | 'loggedSince' | 'restore' | 'inputsLogged' | 'take' | 'idle' | 'nthLastRequest' | 'suspended' | 'refusal' | 'logStatus' | 'logCovers' | 'fromEarlierStart'>;

/**
 * Everything a pair is made of on one board that hosts a guest. A board whose partner has no Ethernet
 * link does not replicate: no clones, no checkpoints (it still takes the roles and serves).
 */
export interface PairParts {
  board: BoardProfile;
  ha: HaPart;
  host: HostPart;
  clones?: ClonePart;
  checkpoints?: CheckpointPart;
  /** The guarded restore that finds poison inputs (src/replication/poison.ts), where there are checkpoints. */
  recovery?: Pick<PoisonRecovery, 'recover'>;
  /** The pair's quarantine of poison inputs (src/store/quarantine.ts). */
  quarantine?: Quarantine;
  journal: Journal;
  log: Logger;
}

/** The clone manager, for a command that only a replicating primary can run. */
export function requirePrimary(p: PairParts, what: string): ClonePart {
  if (!p.clones) throw new UsError('US_ERR_ROLE', `${what}: board ${p.board.name} does not replicate (no partner or no guest)`);
  if (p.ha.currentRole !== 'PRIMARY') throw new UsError('US_ERR_ROLE', `${what}: board ${p.board.name} is ${p.ha.currentRole}; run it on the primary`);
  return p.clones;
}

/** Polls `cond` every 200 ms; throws US_ERR_TIMEOUT naming `what` after `ms`. */
export async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new UsError('US_ERR_TIMEOUT', `${what} within ${Math.round(ms / 1000)} s`);
    await new Promise((res) => setTimeout(res, 200));
  }
}
