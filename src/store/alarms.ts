/**
 * The board's alarm list: every condition the product knows (ALARM_TYPES), each with its ITU X.733
 * fields (perceived severity as RFC 3877 numbers them, event type, probable cause, specific problem,
 * resource), raised once, cleared when the condition ends, and kept in the board's SQLite store so an
 * alarm active before a controller restart is still active after it and is not raised (nor notified)
 * twice. The shape follows RFC 8632 (ietf-alarms): one entry per (resource, alarm type, qualifier),
 * its status changes, cleared entries kept as history.
 *
 * Owns the list and its persistence only. The layers above feed it (src/mgmt/alarm-feeds.ts wires
 * the HA, replication, guest and console events into it) and read it (`understudy alarms`, metrics,
 * SNMP notifications through the 'change' event). It decides nothing and sends nothing.
 *
 * Writes run with the store's synchronous=NORMAL: a controller crash loses nothing (WAL), a power cut
 * may lose the last change, never corrupt the list. No fsync in the path of a takeover.
 */
import { EventEmitter } from 'node:events';
import { UsError } from '../core/errors.js';
import type { Store } from './journal.js';

/** X.733 perceived severity; the numbers are RFC 3877's ItuPerceivedSeverity. */
export const SEVERITY_NUMBER = { cleared: 1, indeterminate: 2, critical: 3, major: 4, minor: 5, warning: 6 } as const;
export type PerceivedSeverity = keyof typeof SEVERITY_NUMBER;
export type ActiveSeverity = Exclude<PerceivedSeverity, 'cleared'>;

/** X.733 event types; the numbers are RFC 3877's IANAItuEventType. */
export const EVENT_TYPE_NUMBER = {
  other: 1, communicationsAlarm: 2, qualityOfServiceAlarm: 3, processingErrorAlarm: 4, equipmentAlarm: 5,
  environmentalAlarm: 6, integrityViolation: 7, operationalViolation: 8, physicalViolation: 9,
  securityServiceOrMechanismViolation: 10, timeDomainViolation: 11,
} as const;
export type EventType = keyof typeof EVENT_TYPE_NUMBER;

export interface AlarmType {
  /** Default perceived severity when raised. */
  severity: ActiveSeverity;
  eventType: EventType;
  /** X.733 probable cause (its ASN.1 name). */
  probableCause: string;
  /** X.733 specific problem: what this product means by it. */
  specificProblem: string;
  /** For docs/alarms.md and `understudy alarms --types`. */
  raisedWhen: string;
  clearedWhen: string;
}

/**
 * Every alarm the product raises. The key is the alarm-type-id (RFC 8632) and, with its index in this
 * table + 1, the usAlarmTypeIndex of docs/mib/UNDERSTUDY-ALARM-MIB.txt: append, never reorder.
 */
export const ALARM_TYPES = {
  'partner-link-down': {
    severity: 'major', eventType: 'communicationsAlarm', probableCause: 'lossOfSignal',
    specificProblem: 'a partner link (serial or Ethernet) carries no authentic heartbeat',
    raisedWhen: 'the link is silent for ha.linkTimeoutMs', clearedWhen: 'an authentic heartbeat arrives on it again',
  },
  'pair-unprotected': {
    severity: 'critical', eventType: 'qualityOfServiceAlarm', probableCause: 'lossOfRedundancy',
    specificProblem: 'the primary serves without a backup copy of the guest that follows its inputs',
    raisedWhen: 'the board is PRIMARY and its backup has not followed (no clone, or no acknowledgements) for alarms.unprotectedAfterS',
    clearedWhen: 'a backup follows again (clone done and acknowledging), or the board is no longer primary',
  },
  'fencing-failed': {
    severity: 'critical', eventType: 'equipmentAlarm', probableCause: 'protectionMechanismFailure',
    specificProblem: 'the partner could not be fenced: no promotion until a fence is confirmed',
    raisedWhen: 'a fence of the partner fails', clearedWhen: 'a fence succeeds, or the partner is heard again',
  },
  'partner-left-off': {
    severity: 'major', eventType: 'equipmentAlarm', probableCause: 'lossOfRedundancy',
    specificProblem: 'the partner was reset too often (fencing.escalation) and is left powered off',
    raisedWhen: 'a fence escalates to power off', clearedWhen: 'the partner is heard again (an operator powered it on)',
  },
  'watchdog-reset': {
    severity: 'critical', eventType: 'processingErrorAlarm', probableCause: 'watchdogTimerExpired',
    specificProblem: 'the hardware watchdog is no longer kicked: the board is reset by it',
    raisedWhen: 'the membership process stops kicking the watchdog (controller or guest supervision lost)',
    clearedWhen: 'the controller runs again after the reset and its membership process kicks the watchdog',
  },
  'guest-restarted': {
    severity: 'major', eventType: 'processingErrorAlarm', probableCause: 'applicationSubsystemFailure',
    specificProblem: 'the guest died or hung and is restarted (critical: given up after too many restarts)',
    raisedWhen: 'the guest supervisor restarts the guest (watchdog, crash, QEMU exit), or gives it up (critical)',
    clearedWhen: 'the guest runs again',
  },
  'replica-repaired': {
    severity: 'minor', eventType: 'processingErrorAlarm', probableCause: 'corruptData',
    specificProblem: 'the backup\'s copy diverged from the primary\'s or lost inputs: it is being re-cloned',
    raisedWhen: 'a divergence of the backup\'s replies, or an input loss, is detected',
    clearedWhen: 'the next clone to the backup completes',
  },
  'upgrade-trial-failed': {
    severity: 'major', eventType: 'processingErrorAlarm', probableCause: 'softwareDownloadFailure',
    specificProblem: 'a firmware trial slot did not commit: the board booted its previous slot again',
    raisedWhen: 'the controller starts after the bootloader rolled a trial back', clearedWhen: 'a later firmware trial is committed (upgrade mark-good)',
  },
  'clock-jump': {
    severity: 'warning', eventType: 'timeDomainViolation', probableCause: 'timingProblem',
    specificProblem: 'the wall clock stepped against the monotonic clock (journal and alarm times jump)',
    raisedWhen: 'the wall clock moves more than alarms.clockStepMaxMs away from the monotonic clock between two checks',
    clearedWhen: 'an hour passes without another step',
  },
  'disk-space-low': {
    severity: 'major', eventType: 'environmentalAlarm', probableCause: 'storageCapacityProblem',
    specificProblem: 'the storage directory\'s file system is nearly full (store, checkpoints, input log)',
    raisedWhen: 'free space under storageDir falls below alarms.diskFreeMinPercent', clearedWhen: 'it is above that again by 2 points',
  },
  'memory-high': {
    severity: 'major', eventType: 'processingErrorAlarm', probableCause: 'outOfMemory',
    specificProblem: 'the controller process uses more memory than alarms.controllerRssMaxMb',
    raisedWhen: 'the controller\'s resident memory exceeds alarms.controllerRssMaxMb', clearedWhen: 'it is below 90 % of that again',
  },
  'console-lockout': {
    severity: 'warning', eventType: 'securityServiceOrMechanismViolation', probableCause: 'unauthorizedAccessAttempt',
    specificProblem: 'the serial console is locked after repeated failed logins',
    raisedWhen: 'the console locks after repeated failed logins', clearedWhen: 'the lockout ends, or a login succeeds',
  },
  'poison-input': {
    severity: 'major', eventType: 'processingErrorAlarm', probableCause: 'softwareError',
    specificProblem: 'a client request crashed or hung both copies of the guest and was quarantined',
    raisedWhen: 'an input is quarantined (one alarm per input, qualifier q<N>; docs/poison.md)',
    clearedWhen: 'its input is released from quarantine: none is active once no input is in quarantine any more',
  },
} as const satisfies Record<string, AlarmType>;
export type AlarmTypeId = keyof typeof ALARM_TYPES;

/** usAlarmTypeIndex in the MIB: the alarm type's place in ALARM_TYPES, from 1. */
export function alarmTypeIndex(id: AlarmTypeId): number {
  return Object.keys(ALARM_TYPES).indexOf(id) + 1;
}

export interface AlarmStatusChange {
  time: string;
  perceivedSeverity: PerceivedSeverity;
  alarmText: string;
}

/** One entry of the list: RFC 8632's alarm, with the X.733 fields of ietf-alarms-x733. */
export interface Alarm {
  resource: string;
  alarmTypeId: AlarmTypeId;
  alarmTypeQualifier: string;
  timeCreated: string;
  isCleared: boolean;
  lastRaised: string;
  lastChanged: string;
  /** The severity it was last raised with (RFC 8632 keeps it after the clear too). */
  perceivedSeverity: ActiveSeverity;
  alarmText: string;
  eventType: EventType;
  probableCause: string;
  specificProblem: string;
  /** Oldest first, at most AlarmListOptions.maxStatusChanges. */
  statusChanges: AlarmStatusChange[];
}

/** What the list emits on every change that an operator's NMS must hear of. */
export interface AlarmChange {
  /** raise: newly active (or active again); severity: active with another severity; clear: no longer active. */
  kind: 'raise' | 'severity' | 'clear';
  alarm: Alarm;
}

export interface AlarmListOptions {
  /** The board's name: resources are /board/<name>/… (default resource prefix). */
  board: string;
  /** Wall clock. Default: new Date(). */
  now?: () => Date;
  /** Cleared alarms kept as history beyond the active ones (oldest dropped). Default 200. */
  keepCleared?: number;
  /** Status changes kept per alarm (oldest dropped). Default 32. */
  maxStatusChanges?: number;
}

export declare interface AlarmList {
  on(ev: 'change', fn: (c: AlarmChange) => void): this;
}

interface Row {
  resource: string; type_id: string; qualifier: string; time_created: string; is_cleared: number;
  last_raised: string; last_changed: string; severity: string; text: string; changes: string;
}

export class AlarmList extends EventEmitter {
  private readonly now: () => Date;
  private readonly keepCleared: number;
  private readonly maxStatusChanges: number;
  /** Every alarm, active and cleared, by key (the store's rows, read once at start). */
  private readonly alarms = new Map<string, Alarm>();

  constructor(private readonly store: Store, readonly o: AlarmListOptions) {
    super();
    this.now = o.now ?? (() => new Date());
    this.keepCleared = o.keepCleared ?? 200;
    this.maxStatusChanges = o.maxStatusChanges ?? 32;
    store.db.exec(`
      CREATE TABLE IF NOT EXISTS alarms (
        resource TEXT NOT NULL, type_id TEXT NOT NULL, qualifier TEXT NOT NULL,
        time_created TEXT NOT NULL, is_cleared INTEGER NOT NULL, last_raised TEXT NOT NULL, last_changed TEXT NOT NULL,
        severity TEXT NOT NULL, text TEXT NOT NULL, changes TEXT NOT NULL,
        PRIMARY KEY (resource, type_id, qualifier)
      );
    `);
    for (const r of store.db.prepare('SELECT * FROM alarms').all() as Row[]) {
      if (!Object.hasOwn(ALARM_TYPES, r.type_id)) continue; // a type a later firmware added, after a rollback
      const t = ALARM_TYPES[r.type_id as AlarmTypeId];
      this.alarms.set(key(r.resource, r.type_id, r.qualifier), {
        resource: r.resource, alarmTypeId: r.type_id as AlarmTypeId, alarmTypeQualifier: r.qualifier,
        timeCreated: r.time_created, isCleared: r.is_cleared === 1, lastRaised: r.last_raised, lastChanged: r.last_changed,
        perceivedSeverity: r.severity as ActiveSeverity, alarmText: r.text,
        eventType: t.eventType, probableCause: t.probableCause, specificProblem: t.specificProblem,
        statusChanges: JSON.parse(r.changes) as AlarmStatusChange[],
      });
    }
  }

  /** The board's resource path for a part of it: /board/<name>[/<part>]. */
  resource(part?: string): string {
    return `/board/${this.o.board}${part ? `/${part}` : ''}`;
  }

  /**
   * Raises an alarm (the condition holds). An alarm already active with the same severity is left as
   * it is (its text too): raised once. Returns the change, or undefined when there was none.
   */
  raise(typeId: AlarmTypeId, resource: string, text: string, o: { severity?: ActiveSeverity; qualifier?: string } = {}): AlarmChange | undefined {
    const t = typeOf(typeId);
    const severity = o.severity ?? t.severity;
    if (!Object.hasOwn(SEVERITY_NUMBER, severity) || severity === ('cleared' as string)) {
      throw new UsError('US_ERR_INTERNAL', `alarm ${typeId}: severity "${severity}" is not an active X.733 severity`);
    }
    const k = key(resource, typeId, o.qualifier ?? '');
    const at = this.now().toISOString();
    const old = this.alarms.get(k);
    if (old && !old.isCleared && old.perceivedSeverity === severity) return undefined;
    const kind: AlarmChange['kind'] = old && !old.isCleared ? 'severity' : 'raise';
    const alarm: Alarm = {
      resource, alarmTypeId: typeId, alarmTypeQualifier: o.qualifier ?? '',
      timeCreated: old?.timeCreated ?? at, isCleared: false, lastRaised: at, lastChanged: at,
      perceivedSeverity: severity, alarmText: text,
      eventType: t.eventType, probableCause: t.probableCause, specificProblem: t.specificProblem,
      statusChanges: this.withChange(old, { time: at, perceivedSeverity: severity, alarmText: text }),
    };
    return this.put(k, alarm, kind);
  }

  /** Clears an alarm (the condition ended). Nothing happens if it is not active. */
  clear(typeId: AlarmTypeId, resource: string, text?: string, o: { qualifier?: string } = {}): AlarmChange | undefined {
    typeOf(typeId);
    const k = key(resource, typeId, o.qualifier ?? '');
    const old = this.alarms.get(k);
    if (!old || old.isCleared) return undefined;
    const at = this.now().toISOString();
    const alarmText = text ?? old.alarmText;
    const alarm: Alarm = {
      ...old, isCleared: true, lastChanged: at, alarmText,
      statusChanges: this.withChange(old, { time: at, perceivedSeverity: 'cleared', alarmText }),
    };
    return this.put(k, alarm, 'clear');
  }

  /** Raises or clears by a condition: `text` set raises, undefined clears. */
  set(typeId: AlarmTypeId, resource: string, text: string | undefined, o: { severity?: ActiveSeverity; qualifier?: string; clearText?: string } = {}): AlarmChange | undefined {
    return text === undefined ? this.clear(typeId, resource, o.clearText, o) : this.raise(typeId, resource, text, o);
  }

  isActive(typeId: AlarmTypeId, resource: string, qualifier = ''): boolean {
    const a = this.alarms.get(key(resource, typeId, qualifier));
    return !!a && !a.isCleared;
  }

  /** Active alarms of a type (every resource). */
  activeOf(typeId: AlarmTypeId): Alarm[] {
    return this.list().filter((a) => a.alarmTypeId === typeId && !a.isCleared);
  }

  /** Active and recent (cleared) alarms, most recently changed first. */
  list(o: { activeOnly?: boolean } = {}): Alarm[] {
    const all = [...this.alarms.values()].filter((a) => !o.activeOnly || !a.isCleared);
    return all.sort((a, b) => (a.lastChanged < b.lastChanged ? 1 : a.lastChanged > b.lastChanged ? -1 : 0)).map(copy);
  }

  /** Active alarms by perceived severity (every severity present, 0 when none). */
  activeBySeverity(): Record<ActiveSeverity, number> {
    const n: Record<ActiveSeverity, number> = { critical: 0, major: 0, minor: 0, warning: 0, indeterminate: 0 };
    for (const a of this.alarms.values()) if (!a.isCleared) n[a.perceivedSeverity]++;
    return n;
  }

  private withChange(old: Alarm | undefined, c: AlarmStatusChange): AlarmStatusChange[] {
    return [...(old?.statusChanges ?? []), c].slice(-this.maxStatusChanges);
  }

  private put(k: string, a: Alarm, kind: AlarmChange['kind']): AlarmChange {
    this.store.db.prepare(`INSERT INTO alarms (resource, type_id, qualifier, time_created, is_cleared, last_raised, last_changed, severity, text, changes)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT(resource, type_id, qualifier) DO UPDATE SET time_created = excluded.time_created, is_cleared = excluded.is_cleared,
        last_raised = excluded.last_raised, last_changed = excluded.last_changed, severity = excluded.severity, text = excluded.text, changes = excluded.changes`)
      .run(a.resource, a.alarmTypeId, a.alarmTypeQualifier, a.timeCreated, a.isCleared ? 1 : 0, a.lastRaised, a.lastChanged, a.perceivedSeverity, a.alarmText, JSON.stringify(a.statusChanges));
    this.alarms.set(k, a);
    if (a.isCleared) this.dropOldCleared();
    const change: AlarmChange = { kind, alarm: copy(a) };
    this.emit('change', change);
    return change;
  }

  /** History beyond keepCleared cleared alarms is forgotten, oldest first. */
  private dropOldCleared(): void {
    const cleared = [...this.alarms.entries()].filter(([, a]) => a.isCleared).sort(([, a], [, b]) => (a.lastChanged < b.lastChanged ? -1 : 1));
    const del = this.store.db.prepare('DELETE FROM alarms WHERE resource = ? AND type_id = ? AND qualifier = ?');
    for (const [k, a] of cleared.slice(0, Math.max(0, cleared.length - this.keepCleared))) {
      del.run(a.resource, a.alarmTypeId, a.alarmTypeQualifier);
      this.alarms.delete(k);
    }
  }
}

function typeOf(id: string): AlarmType {
  if (!Object.hasOwn(ALARM_TYPES, id)) throw new UsError('US_ERR_INTERNAL', `unknown alarm type "${id}" (not in ALARM_TYPES)`);
  return ALARM_TYPES[id as AlarmTypeId];
}

function key(resource: string, typeId: string, qualifier: string): string {
  return JSON.stringify([resource, typeId, qualifier]);
}

function copy(a: Alarm): Alarm {
  return { ...a, statusChanges: a.statusChanges.map((c) => ({ ...c })) };
}

/**
 * The list in RFC 8632's JSON encoding (RFC 7951): ietf-alarms:alarms/alarm-list, with the X.733
 * fields of ietf-alarms-x733 (RFC 8632 appendix) on each alarm.
 */
export function toIetfAlarms(alarms: Alarm[], lastChanged?: string): Record<string, unknown> {
  return {
    'ietf-alarms:alarms': {
      'alarm-list': {
        'number-of-alarms': alarms.length,
        'last-changed': lastChanged ?? alarms.reduce((m, a) => (a.lastChanged > m ? a.lastChanged : m), '1970-01-01T00:00:00.000Z'),
        alarm: alarms.map((a) => ({
          resource: a.resource,
          'alarm-type-id': `understudy-alarms:${a.alarmTypeId}`,
          'alarm-type-qualifier': a.alarmTypeQualifier,
          'time-created': a.timeCreated,
          'is-cleared': a.isCleared,
          'last-raised': a.lastRaised,
          'last-changed': a.lastChanged,
          'perceived-severity': a.perceivedSeverity,
          'alarm-text': a.alarmText,
          'status-change': a.statusChanges.map((c) => ({ time: c.time, 'perceived-severity': c.perceivedSeverity, 'alarm-text': c.alarmText })),
          'ietf-alarms-x733:event-type': a.eventType,
          'ietf-alarms-x733:probable-cause-string': a.probableCause,
          'ietf-alarms-x733:specific-problem': a.specificProblem,
        })),
      },
    },
  };
}
