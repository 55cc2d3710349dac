/**
 * SNMP notifications of the alarm list (src/store/alarms.ts) to the managers of the board profile's
 * `snmp` section: every raise, severity change and clear becomes a usAlarmRaised or usAlarmCleared
 * notification (docs/mib/UNDERSTUDY-ALARM-MIB.txt), a trap or an inform, SNMPv2c or SNMPv3 authPriv.
 * net-snmp's own `snmptrap` (Debian package snmp) encodes and sends them: nothing here speaks BER.
 * Secrets (community, pass phrases) go to snmptrap in a snmp.conf of mode 0600 under
 * <storageDir>/snmp/, never on its command line (which every user can read in /proc).
 *
 * Owns the queue per manager and its counters; never changes an alarm. Notifications leave `holdMs`
 * after the change, one snmptrap at a time per manager, so a takeover never shares its moment with
 * the start of a process; a manager that does not answer delays only its own queue (bounded: the
 * oldest are dropped and counted).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import type { BoardProfile } from '../config/board-profile.js';
import { UsError } from '../core/errors.js';
import type { Logger } from '../core/log.js';
import { EVENT_TYPE_NUMBER, SEVERITY_NUMBER, alarmTypeIndex, type AlarmChange, type AlarmList } from '../store/alarms.js';

/** The MIB's root: enterprises.32473 (RFC 5612's documentation number, until a PEN is registered) .17 */
export const ALARM_MIB_OID = '1.3.6.1.4.1.32473.17';
export const NOTIFICATION_OID = { raised: `${ALARM_MIB_OID}.0.1`, cleared: `${ALARM_MIB_OID}.0.2` } as const;
/** usAlarmObjects: the varbinds, in the order the notifications carry them. */
export const VARBIND_OID = {
  resource: `${ALARM_MIB_OID}.1.1`,
  typeId: `${ALARM_MIB_OID}.1.2`,
  typeQualifier: `${ALARM_MIB_OID}.1.3`,
  perceivedSeverity: `${ALARM_MIB_OID}.1.4`,
  eventType: `${ALARM_MIB_OID}.1.5`,
  probableCause: `${ALARM_MIB_OID}.1.6`,
  specificProblem: `${ALARM_MIB_OID}.1.7`,
  text: `${ALARM_MIB_OID}.1.8`,
  time: `${ALARM_MIB_OID}.1.9`,
  typeIndex: `${ALARM_MIB_OID}.1.10`,
} as const;

/** Notifications waiting per manager beyond which the oldest are dropped. */
const MAX_QUEUED = 256;

export type SnmpManager = NonNullable<BoardProfile['snmp']>['managers'][number];

export interface ManagerCounters {
  manager: string;
  version: string;
  notify: string;
  sent: number;
  failed: number;
  dropped: number;
  queued: number;
  lastError: string | null;
  lastSent: string | null;
}

/** The default engine ID: 80007ed9 (enterprise 32473, RFC 3411 format bit) 04 (text) + the board name. */
export function defaultEngineId(board: string): string {
  return `80007ed904${Buffer.from(board.slice(0, 27), 'utf8').toString('hex')}`;
}

/** snmptrap's arguments after the options: the manager, uptime (now), the notification and its varbinds. */
export function notificationArgs(c: AlarmChange, at: string): string[] {
  const a = c.alarm;
  const cleared = c.kind === 'clear';
  const vb = (oid: string, type: 's' | 'i', v: string | number) => [oid, type, String(v)];
  return [
    '', cleared ? NOTIFICATION_OID.cleared : NOTIFICATION_OID.raised,
    ...vb(VARBIND_OID.resource, 's', a.resource),
    ...vb(VARBIND_OID.typeId, 's', a.alarmTypeId),
    ...vb(VARBIND_OID.typeQualifier, 's', a.alarmTypeQualifier),
    ...vb(VARBIND_OID.perceivedSeverity, 'i', SEVERITY_NUMBER[cleared ? 'cleared' : a.perceivedSeverity]),
    ...vb(VARBIND_OID.eventType, 'i', EVENT_TYPE_NUMBER[a.eventType]),
    ...vb(VARBIND_OID.probableCause, 's', a.probableCause),
    ...vb(VARBIND_OID.specificProblem, 's', a.specificProblem),
    ...vb(VARBIND_OID.text, 's', a.alarmText.slice(0, 255)),
    ...vb(VARBIND_OID.time, 's', at),
    ...vb(VARBIND_OID.typeIndex, 'i', alarmTypeIndex(a.alarmTypeId)),
  ];
}

/** A pass phrase file: one line, 8-255 characters (USM's minimum), no spaces at its ends. */
export function readPassFile(file: string, field: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsError('US_ERR_CONFIG', `${field}: cannot read ${file}: ${(e as Error).message}`);
  }
  const pass = text.replace(/\r?\n$/, '');
  if (pass.length < 8 || pass.length > 255 || /[\r\n]/.test(pass) || pass.trim() !== pass) {
    throw new UsError('US_ERR_CONFIG', `${field}: ${file} must hold one line of 8 to 255 characters (the pass phrase), no spaces at its ends`);
  }
  return pass;
}

/** snmp.conf for one manager (its secrets) and the options that are not secret. */
export function managerConfig(m: SnmpManager, engineId: string, i: number): { conf: string; options: string[] } {
  const common = [...(m.notify === 'inform' ? ['-Ci', '-t', String(m.timeoutMs / 1000), '-r', String(m.retries)] : [])];
  if (m.version === 'v2c') {
    return { conf: `defVersion 2c\ndefCommunity ${m.community}\n`, options: common };
  }
  const auth = readPassFile(m.authPassFile, `snmp.managers[${i}].authPassFile`);
  const priv = readPassFile(m.privPassFile, `snmp.managers[${i}].privPassFile`);
  return {
    conf: ['defVersion 3', `defSecurityName ${m.user}`, 'defSecurityLevel authPriv', `defAuthType ${m.authProtocol}`,
      `defPrivType ${m.privProtocol}`, `defAuthPassphrase ${auth}`, `defPrivPassphrase ${priv}`, ''].join('\n'),
    // A trap is sent with this board's engine ID (the manager knows the user under it); an inform
    // discovers the manager's.
    options: [...common, ...(m.notify === 'trap' ? ['-e', `0x${engineId.replace(/^0x/, '')}`] : [])],
  };
}

/** How one snmptrap is run: a seam, so the unit tests see the arguments without a process. */
export type RunSnmptrap = (args: string[], env: NodeJS.ProcessEnv, timeoutMs: number) => Promise<{ code: number | null; stderr: string }>;

const runSnmptrap: RunSnmptrap = (args, env, timeoutMs) => new Promise((resolve) => {
  const child = spawn('snmptrap', args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { if (stderr.length < 4096) stderr += d.toString(); });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  child.on('error', (e) => { clearTimeout(timer); resolve({ code: null, stderr: e.message }); });
  child.on('close', (code) => { clearTimeout(timer); resolve({ code, stderr }); });
});

interface Target { m: SnmpManager; dir: string; options: string[]; queue: Array<{ change: AlarmChange; at: string }>; draining?: Promise<void>; counters: ManagerCounters }

export class SnmpNotifier {
  private readonly targets: Target[];
  private readonly holdMs: number;
  private timer?: NodeJS.Timeout;
  private closed = false;
  private readonly onChange = (c: AlarmChange) => this.enqueue(c);

  /** Throws US_ERR_CONFIG naming the field when a pass phrase file is missing or malformed. */
  constructor(private readonly board: BoardProfile, private readonly alarms: AlarmList, private readonly log: Logger, private readonly run: RunSnmptrap = runSnmptrap) {
    const snmp = board.snmp;
    if (!snmp) throw new UsError('US_ERR_CONFIG', `board profile ${board.sourceFile}: no snmp section`);
    this.holdMs = snmp.holdMs;
    const engineId = snmp.engineId ?? defaultEngineId(board.name);
    const root = join(board.storageDir, 'snmp');
    mkdirSync(root, { recursive: true, mode: 0o700 });
    chmodSync(root, 0o700);
    this.targets = snmp.managers.map((m, i) => {
      const { conf, options } = managerConfig(m, engineId, i);
      const dir = join(root, String(i));
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeFileSync(join(dir, 'snmp.conf'), conf, { mode: 0o600 });
      chmodSync(join(dir, 'snmp.conf'), 0o600);
      return { m, dir, options, queue: [],
        counters: { manager: `${m.address}:${m.port}`, version: m.version, notify: m.notify, sent: 0, failed: 0, dropped: 0, queued: 0, lastError: null, lastSent: null } };
    });
    alarms.on('change', this.onChange);
  }

  status(): ManagerCounters[] {
    return this.targets.map((t) => ({ ...t.counters, queued: t.queue.length }));
  }

  /** Resolves once every queued notification has been tried (tests, orderly stop). */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    await Promise.all(this.targets.map((t) => this.drain(t)));
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.alarms.off('change', this.onChange);
  }

  private enqueue(change: AlarmChange): void {
    if (this.closed) return;
    const at = change.alarm.lastChanged;
    for (const t of this.targets) {
      t.queue.push({ change, at });
      if (t.queue.length > MAX_QUEUED) {
        t.queue.shift();
        t.counters.dropped++;
      }
    }
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      for (const t of this.targets) void this.drain(t);
    }, this.holdMs);
  }

  /** Sends what is queued for `t`, one snmptrap at a time; a call while it runs joins it. */
  private drain(t: Target): Promise<void> {
    t.draining ??= this.send(t).finally(() => { t.draining = undefined; });
    return t.draining;
  }

  private async send(t: Target): Promise<void> {
    while (t.queue.length && !this.closed) {
      const { change, at } = t.queue.shift()!;
      const args = [...t.options, `udp:${t.m.address}:${t.m.port}`, ...notificationArgs(change, at)];
      const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', SNMPCONFPATH: t.dir, SNMP_PERSISTENT_DIR: join(t.dir, 'persist'), MIBS: '' };
      const limit = t.m.notify === 'inform' ? t.m.timeoutMs * (t.m.retries + 1) + 5000 : 10000;
      const r = await this.run(args, env, limit);
      const what = `${change.kind} ${change.alarm.alarmTypeId} ${change.alarm.resource}`;
      if (r.code === 0) {
        t.counters.sent++;
        t.counters.lastSent = new Date().toISOString();
      } else {
        t.counters.failed++;
        t.counters.lastError = (r.stderr.trim().split('\n').pop() || `snmptrap exited ${r.code}`).slice(0, 300);
        this.log.warn({ manager: t.counters.manager, alarm: what, err: t.counters.lastError }, `SNMP ${t.m.notify} to ${t.counters.manager} failed`);
      }
    }
  }
}
