/**
 * `understudy alarms [--active] [--types]`: the board's alarm list, active and recent (cleared), as
 * the controller keeps it (src/store/alarms.ts); --json prints it in the ietf-alarms (RFC 8632) shape.
 * --types lists every alarm the product can raise, without asking the controller.
 */
import type { Command } from 'commander';
import { callControl } from '../mgmt/ipc.js';
import { ALARM_TYPES } from '../store/alarms.js';
import { controlSocketOf } from './locate.js';
import { action, table, type OutputOptions } from './output.js';

type Opts = OutputOptions & { board?: string; active?: boolean; types?: boolean };

interface IetfAlarm {
  resource: string; 'alarm-type-id': string; 'alarm-type-qualifier': string; 'time-created': string; 'is-cleared': boolean;
  'last-raised': string; 'last-changed': string; 'perceived-severity': string; 'alarm-text': string;
  'status-change': Array<{ time: string; 'perceived-severity': string; 'alarm-text': string }>;
}

interface AlarmsAnswer {
  board: string;
  'ietf-alarms:alarms': { 'alarm-list': { 'number-of-alarms': number; alarm: IetfAlarm[] } };
  summary: { active: number; bySeverity: Record<string, number>; notifications: Array<{ manager: string; version: string; notify: string; sent: number; failed: number; dropped: number; lastError: string | null }> } | null;
}

export function formatAlarms(r: AlarmsAnswer): string {
  const list = r['ietf-alarms:alarms']['alarm-list'].alarm;
  const active = list.filter((a) => !a['is-cleared']);
  const recent = list.filter((a) => a['is-cleared']);
  const row = (a: IetfAlarm) => [a['is-cleared'] ? 'cleared' : a['perceived-severity'].toUpperCase(), a['alarm-type-id'].replace(/^understudy-alarms:/, '') + (a['alarm-type-qualifier'] ? `/${a['alarm-type-qualifier']}` : ''),
    a.resource, a['is-cleared'] ? a['last-changed'] : a['last-raised'], a['alarm-text']];
  const head = ['SEVERITY', 'ALARM', 'RESOURCE', 'SINCE', 'TEXT'];
  const lines = [`board ${r.board}: ${active.length ? `${active.length} active alarm${active.length === 1 ? '' : 's'}` : 'no active alarms'}`];
  if (active.length) lines.push(table([head, ...active.map(row)]));
  if (recent.length) lines.push('recent (cleared):', table([head, ...recent.slice(0, 20).map(row)]));
  for (const n of r.summary?.notifications ?? []) {
    lines.push(`SNMP ${n.version} ${n.notify}s to ${n.manager}: ${n.sent} sent, ${n.failed} failed, ${n.dropped} dropped${n.lastError ? ` (last error: ${n.lastError})` : ''}`);
  }
  return lines.join('\n');
}

export function registerAlarmsCommands(program: Command): void {
  program.command('alarms')
    .description('the board\'s alarms (X.733), active and recently cleared; --json in the ietf-alarms shape; --types: every alarm the product raises')
    .option('--board <file>', 'board profile')
    .option('--active', 'only the active alarms')
    .option('--types', 'list the alarm types (severity, event type, probable cause, when raised and cleared) instead')
    .action(action(async (o: Opts) => {
      if (o.types) return { types: ALARM_TYPES };
      return (await callControl(await controlSocketOf(o.board), 'alarms', { active: o.active === true })) as AlarmsAnswer;
    }, (r) => ('types' in r
      ? table([['ALARM', 'SEVERITY', 'EVENT TYPE', 'PROBABLE CAUSE', 'RAISED WHEN'], ...Object.entries(r.types).map(([id, t]) => [id, t.severity, t.eventType, t.probableCause, t.raisedWhen])])
      : formatAlarms(r))));
}
