/**
 * The role state machine of one board in the pair: one table of states, events and transitions.
 * Pure: it decides, it does nothing (src/ha/ha-controller.ts carries out the actions and journals
 * every transition with its cause).
 *
 *   STARTING  listening for the partner after boot (startupWaitMs)
 *   WAITING   no partner heard since boot: neither serving nor fencing (ha.startup wait-for-partner,
 *             a partner heard only with a bad MAC, or a fence before serving alone that failed)
 *   BACKUP    partner is primary; ready to take over
 *   FENCING   partner silent on every link (or hung): fencing it before promoting (never promote without)
 *   PRIMARY   serving
 *   FAULT     this board cannot serve (its guest failed); the partner takes over
 *   STOPPING  orderly shutdown
 *
 * Besides the next role, a rule may order a fence (`fence`): how long to wait before it, and whether
 * the partner is to be left off whatever `fencing.action` says. Every transition to FENCING orders
 * one; a PRIMARY orders one without changing its role (it fences a silent backup and serves on).
 */
import type { Role } from './frame.js';

export type RoleEvent =
  | 'partner-primary'   // a heartbeat says the partner is PRIMARY
  | 'partner-backup'    // … BACKUP
  | 'partner-starting'  // … STARTING, WAITING or FENCING: it is deciding too
  | 'partner-fault'     // … FAULT: it gave up serving
  | 'partner-hung'      // a heartbeat says the partner's controller is hung (health 'hung'): it serves nobody well
  | 'partner-gone'      // the partner's dying gasp: its controller exited (health 'gone'); it falls silent next
  | 'partner-dead'      // every link silent for the deadtime
  | 'partner-misconfigured' // only frames with a bad MAC heard since this board started: alive, another key
  | 'startup-timeout'   // no partner heard during startupWaitMs
  | 'start-alone'       // operator: serve without the partner (`understudy start-alone`), after fencing it
  | 'fence-ok'
  | 'fence-failed'
  | 'switchover'        // operator: hand the primary role to the partner
  | 'takeover'          // operator or partner: take the primary role (partner alive and agreeing)
  | 'guest-failed'
  | 'quorum-lost'       // ha.manager pacemaker: this PRIMARY withholds its replies (its backup out of reach) and corosync says its side lost quorum
  | 'stop';

/** What a board does when it has not heard its partner since it started (`ha.startup`). */
export type StartupPolicy = 'wait-for-partner' | 'fence-then-serve';

export interface RoleContext {
  /**
   * This board is preferred over its partner (lower priority number, then lower name). Before any
   * heartbeat, only the names are known on both sides: the lower name.
   */
  preferred: boolean;
  /** This board just handed the primary role over (switchover): it must not take it back on a tie. */
  yielding?: boolean;
  /** The power-off of the partner has been sent: the fence is no longer abandoned, whatever arrives. */
  fenceSent?: boolean;
  /** The partner's role in the last heartbeat heard from it since this board started; absent: never heard. */
  partnerLast?: Role;
  /** The partner's last heartbeat says its controller is hung. */
  partnerHung?: boolean;
  /**
   * This board (a backup) holds the partner's guest state: a copy in sync (a clone cut over and
   * running), or a checkpoint whose input log reaches the last input of the stream. Absent: not known
   * (taken as held). Without it, a hung partner is not fenced, and a silent PRIMARY only after
   * `no-state-delay` (or at once if the fencing device reports it off).
   */
  holdsState?: boolean;
  /** Its last heartbeat was a dying gasp (health 'gone'): its silence is not a partition. */
  partnerGone?: boolean;
  /** Since this board started, only heartbeats with a bad MAC came from the partner (and lately). */
  partnerMisconfigured?: boolean;
  /** `ha.startup`; default wait-for-partner. */
  startup?: StartupPolicy;
  /**
   * ha.manager pacemaker: corosync says this board's side of the cluster has no quorum. A board
   * without quorum never takes over (the side with quorum decides, and its Pacemaker stops this
   * side's instances); unknown quorum is not "lost".
   */
  quorumLost?: boolean;
  /** ha.manager pacemaker: a partner's silence is arbitrated by corosync (FenceWait `quorum`). */
  quorumArbitrated?: boolean;
}

/**
 * How long to wait before fencing:
 *   now             at once
 *   confirm         ha.primaryConfirmMs more, called off if the partner is heard again meanwhile: a
 *                   PRIMARY confirms the verdict on its backup (a lone serial link falls silent past
 *                   the deadtime now and then), well within the backup's priority-delay
 *   fence-delay     ha.fenceDelayMs: both boards may be fencing each other and this one is the less
 *                   preferred (the preferred one goes `now`, and its fence lands first)
 *   priority-delay  ha.priorityFencingDelayMs: the silent partner was PRIMARY; if it is alive it
 *                   fences this board at once, so this board lives to fence only if it is not
 *   no-state-delay  ha.noStateFenceDelayMs: the silent partner was PRIMARY and this board holds none
 *                   of its state (its clone not cut over, no checkpoint whose log reaches the
 *                   stream): a fence would trade a primary that may be alive (cut off, starved, a
 *                   busy membership process) for an old checkpoint or an empty guest. It waits until
 *                   the partner must have been heard again or reset by its own watchdog
 *   quorum          ha.manager pacemaker: a silence without evidence of death (no dying gasp, no
 *                   STOPPING) is a partition as far as this board knows, and corosync arbitrates it:
 *                   fenced once corosync shows this side quorate without the partner; called off if
 *                   this side loses quorum, or if the partner is still a member after
 *                   ha.quorumSettleMs (the cluster still sees it: alive); at once if the fencing device
 *                   reports it powered off. A fast takeover by priority could leave the service on
 *                   the side without quorum, which Pacemaker then stops (docs/pacemaker.md, row 6)
 */
export type FenceWait = 'now' | 'confirm' | 'fence-delay' | 'priority-delay' | 'no-state-delay' | 'quorum';

export interface FenceOrder {
  wait: FenceWait;
  /** Power the partner off and leave it off, whatever `fencing.action` says. */
  keepOff?: boolean;
}

export interface Transition {
  to: Role;
  cause: string;
  /** Fence the partner (always set on a transition to FENCING). */
  fence?: FenceOrder;
}

type Rule = Transition | ((c: RoleContext) => Transition | undefined);

/** The wait before fencing a partner that fell silent, by its last role. */
function silentPartnerFence(c: RoleContext): FenceOrder {
  if (c.partnerGone) return { wait: 'now' }; // it said its controller exited
  if (c.quorumArbitrated && c.partnerLast !== 'STOPPING') return { wait: 'quorum' };
  if (c.partnerLast === 'PRIMARY') return { wait: c.holdsState === false ? 'no-state-delay' : 'priority-delay' };
  if (c.partnerLast === 'STOPPING') return { wait: 'now' }; // it stopped serving and never fences
  return { wait: c.preferred ? 'now' : 'fence-delay' };
}

const partnerDeadFencing = (c: RoleContext): Transition => ({
  to: 'FENCING',
  cause: c.partnerGone ? 'partner silent on every link after its dying gasp (its controller exited)'
    : c.quorumArbitrated && c.partnerLast !== 'STOPPING'
    ? 'partner silent on every link: corosync arbitrates (fencing it once this side is quorate without it, or at once if the fencing device reports it off)'
    : c.partnerLast === 'PRIMARY' && c.holdsState === false
    ? 'partner (primary) silent on every link, and this board holds none of its state (no copy in sync, no checkpoint whose log reaches the stream): fencing it only after the no-state fencing delay (alive, it is heard again; hung, its watchdog resets it) or once the fencing device reports it off'
    : c.partnerLast === 'PRIMARY'
    ? 'partner (primary) silent on every link: fencing it after the priority fencing delay (alive, it fences this board first)'
    : 'partner silent on every link',
  fence: silentPartnerFence(c),
});

/** STARTING and WAITING hear their partner: the same decisions. */
const hearing: Partial<Record<RoleEvent, Rule>> = {
  'partner-primary': { to: 'BACKUP', cause: 'partner is primary: joining as backup' },
  'partner-backup': { to: 'PRIMARY', cause: 'partner is backup with no primary: taking the primary role' },
  'partner-starting': (c) => (c.preferred
    ? { to: 'PRIMARY', cause: 'both boards starting: this one is preferred' }
    : { to: 'BACKUP', cause: 'both boards starting: the partner is preferred' }),
  'partner-fault': { to: 'FENCING', cause: 'partner is in FAULT: fencing it before serving', fence: { wait: 'now' } },
  'start-alone': { to: 'FENCING', cause: 'start-alone requested by the operator: fencing the partner before serving alone', fence: { wait: 'now' } },
  stop: { to: 'STOPPING', cause: 'stop requested' },
};

/** ha.startup fence-then-serve: fence the partner nobody heard (left off: a reset partner that cannot hear this board would fence it in turn), then serve. */
const fenceUnseen = (c: RoleContext, retry: boolean): Transition | undefined => {
  if (c.partnerMisconfigured) return retry ? undefined : { to: 'WAITING', cause: 'partner heard only with a bad MAC (another key?): alive and misconfigured; not fencing it, not serving' };
  if (c.startup === 'fence-then-serve') {
    return { to: 'FENCING', cause: 'no partner heard since start: fencing it (left off) before serving alone (ha.startup fence-then-serve)', fence: { wait: c.preferred ? 'now' : 'fence-delay', keepOff: true } };
  }
  return retry ? undefined : { to: 'WAITING', cause: 'no partner heard since start: waiting for it, neither fencing a board it cannot see nor serving (ha.startup wait-for-partner; `understudy start-alone` to serve alone)' };
};

/** The whole machine. A missing entry means the event changes nothing in that state. */
export const ROLE_TABLE: Record<Role, Partial<Record<RoleEvent, Rule>>> = {
  STARTING: {
    ...hearing,
    'startup-timeout': (c) => fenceUnseen(c, false),
    'partner-misconfigured': { to: 'WAITING', cause: 'partner heard only with a bad MAC (another key?): alive and misconfigured; not fencing it, not serving' },
    'partner-dead': (c) => (c.quorumLost ? undefined : partnerDeadFencing(c)),
  },
  WAITING: {
    ...hearing,
    'startup-timeout': (c) => fenceUnseen(c, true), // fence-then-serve retrying a fence that failed
  },
  BACKUP: {
    'partner-dead': (c) => (c.quorumLost ? undefined : partnerDeadFencing(c)),
    // A hung controller is alive and may answer again a moment later (a starved CPU: both boards of
    // a loaded chassis were reported hung for 1 s on 2026-12-06). Fencing it is right only for a
    // backup that can serve the same state; one without a copy in sync (it joined a moment ago, its
    // clone not yet cut over) would serve an old checkpoint or an empty guest. It waits: a controller
    // that stays hung starves its watchdog, the board resets, and its silence is a death.
    'partner-hung': (c) => (c.holdsState === false || c.quorumLost ? undefined : { to: 'FENCING', cause: 'partner reports its controller hung: fencing it at once', fence: { wait: 'now' } }),
    'partner-gone': (c) => (c.quorumLost ? undefined : { to: 'FENCING', cause: 'partner reports its controller exited (its dying gasp): fencing it at once', fence: { wait: 'now' } }),
    'partner-fault': (c) => (c.quorumLost ? undefined : { to: 'PRIMARY', cause: 'partner reports FAULT: taking over' }),
    'partner-backup': (c) => (c.preferred && !c.yielding ? { to: 'PRIMARY', cause: 'both boards backup: this one is preferred' } : undefined),
    takeover: { to: 'PRIMARY', cause: 'takeover requested' },
    'guest-failed': { to: 'FAULT', cause: 'local guest failed' },
    stop: { to: 'STOPPING', cause: 'stop requested' },
  },
  FENCING: {
    'fence-ok': { to: 'PRIMARY', cause: 'partner fenced: promoting' },
    'fence-failed': (c) => (c.partnerLast === undefined
      ? { to: 'WAITING', cause: 'FENCING FAILED: not serving alone while the partner may be serving' }
      : { to: 'BACKUP', cause: 'FENCING FAILED: not promoting while the partner may still be serving' }),
    'partner-primary': (c) => (c.fenceSent || c.partnerHung ? undefined : { to: 'BACKUP', cause: 'partner is back and primary: fencing abandoned' }),
    'partner-backup': (c) => (c.preferred || c.fenceSent ? undefined : { to: 'BACKUP', cause: 'partner is back: fencing abandoned' }),
    stop: { to: 'STOPPING', cause: 'stop requested' },
  },
  PRIMARY: {
    // Priority fencing: the board that serves keeps serving and fences the silent backup at once (once
    // the silence has lasted primaryConfirmMs more: well before the backup's priority delay is over); a
    // partner that stopped in order (its last word STOPPING) is not fenced; of two primaries (a
    // moment after a heal) the less preferred waits, as two backups do.
    'partner-dead': (c) => (c.partnerLast === 'STOPPING' ? undefined
      : c.quorumArbitrated && !c.partnerGone
      ? { to: 'PRIMARY', cause: 'partner silent on every link: corosync arbitrates (fencing it once this side is quorate without it; replies withheld meanwhile)', fence: { wait: 'quorum' } }
      : { to: 'PRIMARY', cause: 'partner silent on every link: fencing it, serving on unprotected', fence: { wait: c.partnerGone ? 'now' : c.partnerLast !== 'PRIMARY' ? 'confirm' : c.preferred ? 'now' : 'fence-delay' } }),
    'partner-gone': { to: 'PRIMARY', cause: 'partner (backup) reports its controller exited (its dying gasp): fencing it, serving on unprotected', fence: { wait: 'now' } },
    'partner-primary': (c) => (c.preferred ? undefined : { to: 'BACKUP', cause: 'two primaries seen: the partner is preferred, stepping down' }),
    switchover: { to: 'BACKUP', cause: 'switchover requested: handing over to the partner' },
    'guest-failed': { to: 'FAULT', cause: 'local guest failed' },
    // Its backup holds every input whose reply was released; the side with quorum promotes it (the
    // pair's own takeover on this FAULT, or Pacemaker's once this board's instance is stopped).
    'quorum-lost': { to: 'FAULT', cause: 'no quorum while its replies are withheld (the backup out of reach): stepping down without releasing them; the side with quorum takes over with every acknowledged input' },
    stop: { to: 'STOPPING', cause: 'stop requested' },
  },
  FAULT: {
    'partner-primary': { to: 'BACKUP', cause: 'partner serves: ready for a fresh clone' },
    // Handed over, and the partner died before (or after) taking over: staying FAULT would leave
    // nobody serving. Fence it and serve what this board has (its checkpoint, or its disk: STATE LOST).
    'partner-dead': (c) => (c.quorumLost ? undefined : partnerDeadFencing(c)),
    'partner-hung': (c) => (c.quorumLost ? undefined : { to: 'FENCING', cause: 'partner reports its controller hung: fencing it at once', fence: { wait: 'now' } }),
    'partner-gone': (c) => (c.quorumLost ? undefined : { to: 'FENCING', cause: 'partner reports its controller exited (its dying gasp): fencing it at once', fence: { wait: 'now' } }),
    stop: { to: 'STOPPING', cause: 'stop requested' },
  },
  STOPPING: {},
};

/** The rule's answer: a change of role, or an order to fence in the same role; undefined: nothing to do. */
export function nextRole(state: Role, event: RoleEvent, ctx: RoleContext): Transition | undefined {
  const rule = ROLE_TABLE[state][event];
  if (!rule) return undefined;
  const t = typeof rule === 'function' ? rule(ctx) : rule;
  return t && (t.to !== state || t.fence) ? t : undefined;
}

/** Deterministic preference between two boards: lower priority number, then lower name. */
export function isPreferred(self: { name: string; priority: number }, partner: { name: string; priority: number }): boolean {
  return self.priority !== partner.priority ? self.priority < partner.priority : self.name < partner.name;
}
