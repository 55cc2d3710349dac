/**
 * The role state machine of one board in the pair: one table of states, events and transitions.
 * Pure: it decides, it does nothing (src/ha/ha-controller.ts carries out the actions and journals
 * every transition with its cause).
 *
 *   STARTING  listening for the partner after boot (startupWaitMs)
 *   BACKUP    partner is primary; ready to take over
 *   FENCING   partner silent on every link, or its controller hung: powering it off before promoting (never promote without)
 *   PRIMARY   serving
 *   FAULT     this board cannot serve (its guest failed); the partner takes over
 *   STOPPING  orderly shutdown
 */
import type { Role } from './frame.js';

export type RoleEvent =
  | 'partner-primary'   // a heartbeat says the partner is PRIMARY
  | 'partner-backup'    // … BACKUP
  | 'partner-starting'  // … STARTING (or FENCING: it is deciding too)
  | 'partner-fault'     // … FAULT: it gave up serving
  | 'partner-dead'      // every link silent for the deadtime
  | 'partner-hung'      // the partner's heartbeats say its controller is hung (its membership process still runs)
  | 'startup-timeout'   // no partner heard during startupWaitMs
  | 'fence-ok'
  | 'fence-failed'
  | 'switchover'        // operator: hand the primary role to the partner
  | 'takeover'          // operator or partner: take the primary role (partner alive and agreeing)
  | 'guest-failed'
  | 'stop';

export interface RoleContext {
  /** This board is preferred over its partner (lower priority number, then lower name). */
  preferred: boolean;
  /** This board just handed the primary role over (switchover): it must not take it back on a tie. */
  yielding?: boolean;
  /** The power-off of the partner has been sent: the fence is no longer abandoned, whatever arrives. */
  fenceSent?: boolean;
}

export interface Transition {
  to: Role;
  cause: string;
}

type Rule = Transition | ((c: RoleContext) => Transition | undefined);

/** The whole machine. A missing entry means the event changes nothing in that state. */
export const ROLE_TABLE: Record<Role, Partial<Record<RoleEvent, Rule>>> = {
  STARTING: {
    'partner-primary': { to: 'BACKUP', cause: 'partner is primary: joining as backup' },
    'partner-backup': { to: 'PRIMARY', cause: 'partner is backup with no primary: taking the primary role' },
    'partner-starting': (c) => (c.preferred
      ? { to: 'PRIMARY', cause: 'both boards starting: this one is preferred' }
      : { to: 'BACKUP', cause: 'both boards starting: the partner is preferred' }),
    'partner-fault': { to: 'FENCING', cause: 'partner is in FAULT: fencing it before serving' },
    'startup-timeout': { to: 'FENCING', cause: 'no partner heard since start: fencing it before serving alone' },
    'partner-dead': { to: 'FENCING', cause: 'partner silent on every link' },
    stop: { to: 'STOPPING', cause: 'stop requested' },
  },
  BACKUP: {
    'partner-dead': { to: 'FENCING', cause: 'partner silent on every link' },
    'partner-hung': { to: 'FENCING', cause: 'partner reports its controller hung: fencing it before taking over' },
    'partner-fault': { to: 'PRIMARY', cause: 'partner reports FAULT: taking over' },
    'partner-backup': (c) => (c.preferred && !c.yielding ? { to: 'PRIMARY', cause: 'both boards backup: this one is preferred' } : undefined),
    takeover: { to: 'PRIMARY', cause: 'takeover requested' },
    'guest-failed': { to: 'FAULT', cause: 'local guest failed' },
    stop: { to: 'STOPPING', cause: 'stop requested' },
  },
  FENCING: {
    'fence-ok': { to: 'PRIMARY', cause: 'partner fenced (powered off): promoting' },
    'fence-failed': { to: 'BACKUP', cause: 'FENCING FAILED: not promoting while the partner may still be serving' },
    'partner-primary': (c) => (c.fenceSent ? undefined : { to: 'BACKUP', cause: 'partner is back and primary: fencing abandoned' }),
    'partner-backup': (c) => (c.preferred || c.fenceSent ? undefined : { to: 'BACKUP', cause: 'partner is back: fencing abandoned' }),
    stop: { to: 'STOPPING', cause: 'stop requested' },
  },
  PRIMARY: {
    'partner-primary': (c) => (c.preferred ? undefined : { to: 'BACKUP', cause: 'two primaries seen: the partner is preferred, stepping down' }),
    switchover: { to: 'BACKUP', cause: 'switchover requested: handing over to the partner' },
    'guest-failed': { to: 'FAULT', cause: 'local guest failed' },
    stop: { to: 'STOPPING', cause: 'stop requested' },
  },
  FAULT: {
    'partner-primary': { to: 'BACKUP', cause: 'partner serves: ready for a fresh clone' },
    stop: { to: 'STOPPING', cause: 'stop requested' },
  },
  STOPPING: {},
};

export function nextRole(state: Role, event: RoleEvent, ctx: RoleContext): Transition | undefined {
  const rule = ROLE_TABLE[state][event];
  if (!rule) return undefined;
  const t = typeof rule === 'function' ? rule(ctx) : rule;
  return t && t.to !== state ? t : undefined;
}

/** Deterministic preference between two boards: lower priority number, then lower name. */
export function isPreferred(self: { name: string; priority: number }, partner: { name: string; priority: number }): boolean {
  return self.priority !== partner.priority ? self.priority < partner.priority : self.name < partner.name;
}
