/**
 * `understudy role`, `understudy link status`, `understudy events`: the pair as this board sees it.
 */
import type { Command } from 'commander';
import { UsError } from '../core/errors.js';
import type { HaStatus } from '../ha/ha-controller.js';
import type { LinkState, PartnerView } from '../ha/membership.js';
import type { JournalEvent } from '../store/journal.js';
import { callControl } from '../mgmt/ipc.js';
import { controlSocketOf } from './locate.js';
import { action, table, type OutputOptions } from './output.js';

type Opts = OutputOptions & { board?: string };

export function formatLinks(links: LinkState[], partner: PartnerView, alarms: string[]): string {
  const rows = links.map((l) => {
    const rej = Object.entries(l.rejected).filter(([, n]) => n > 0).map(([k, n]) => `${k}=${n}`).join(' ') || '-';
    return [l.name, l.up ? 'up' : 'DOWN', l.lastHeardMsAgo ?? '-', l.counters.txFrames, l.counters.rxFrames, rej, l.since];
  });
  const p = partner.heartbeat;
  return [
    table([['LINK', 'STATE', 'HEARD MS AGO', 'TX', 'RX', 'REJECTED', 'SINCE'], ...rows]),
    `partner: ${partner.state}${p ? ` — ${p.sender} ${p.role}, generation ${p.generation}, guest ${p.guest}, watchdog ${p.watchdog}` : ''}`,
    alarms.length ? `ALARMS: ${alarms.join('; ')}` : 'no alarms',
  ].join('\n');
}

export function formatRole(s: HaStatus | { board: string; role: string }): string {
  if (!('generation' in s)) return `board ${s.board}: ${s.role} (no partner configured)`;
  const t = s.lastTransition;
  return [
    `board ${s.board}: ${s.role} since ${s.since} (generation ${s.generation}${s.preferred === null ? '' : s.preferred ? ', preferred' : ''})`,
    t ? `last transition: ${t.from} -> ${t.to}: ${t.cause}` : 'no transition yet',
    `partner: ${s.partner.state}${s.partner.heartbeat ? ` (${s.partner.heartbeat.sender} ${s.partner.heartbeat.role})` : ''}`,
    `fencing: ${s.fencing.method}, ${s.fencing.attempts} attempts, ${s.fencing.failures} failures${s.fencing.lastError ? ` (last: ${s.fencing.lastError})` : ''}`,
    `watchdog: ${s.watchdog ? `${s.watchdog.device}, ${s.watchdog.kicking ? 'kicking' : 'NOT KICKING'}, ${s.watchdog.kicks} kicks` : 'none'}`,
    `membership process ${s.membershipProcess.tid ?? '?'}${s.membershipProcess.rtPriority ? ` (SCHED_FIFO ${s.membershipProcess.rtPriority})` : ''}${s.membershipProcess.rtError ? ` (no real-time priority: ${s.membershipProcess.rtError})` : ''}`,
    `event loop delay: membership p99 ${s.loopDelayMs.membership.p99} ms (max ${s.loopDelayMs.membership.max}), main p99 ${s.loopDelayMs.main.p99} ms (max ${s.loopDelayMs.main.max})`,
    ...(s.controller ? [`controller: ${s.controller.health === 'hung' ? `HUNG (${s.controller.reason})` : 'answering'}; alive gap p99 ${s.controller.aliveGapMs.p99} ms (max ${s.controller.aliveGapMs.max}); `
      + `reported hung at once when stopped, or after ${s.controller.hangAfterMs} ms of silence`] : []),
    s.alarms.length ? `ALARMS: ${s.alarms.join('; ')}` : 'no alarms',
  ].join('\n');
}

export function registerHaCommands(program: Command): void {
  program.command('role')
    .description("this board's role in the pair, the partner, fencing and watchdog")
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts) => (await callControl(await controlSocketOf(o.board), 'role')) as HaStatus, (s) => formatRole(s)));

  program.command('link')
    .description('partner links')
    .command('status')
    .description('state of each partner link (serial, Ethernet), counters, rejected frames, alarms')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts) => (await callControl(await controlSocketOf(o.board), 'link.status')) as { links: LinkState[]; partner: PartnerView; alarms: string[] },
      (s) => formatLinks(s.links, s.partner, s.alarms)));

  program.command('events')
    .description('the event journal: role transitions, link changes, fencing, guest events')
    .option('--board <file>', 'board profile')
    .option('-n, --limit <n>', 'how many of the newest events', '50')
    .option('--kind <kind>', 'only this kind (role, link, partner, fence, watchdog, guest)')
    .action(action(async (o: Opts & { limit: string; kind?: string }) => {
      const limit = Number.parseInt(o.limit, 10);
      if (!Number.isInteger(limit) || limit < 1) throw new UsError('US_ERR_CONFIG', `--limit: expected a positive integer, got "${o.limit}"`);
      return (await callControl(await controlSocketOf(o.board), 'events', { limit, ...(o.kind ? { kind: o.kind } : {}) })) as { events: JournalEvent[] };
    }, (r) => table([['ID', 'AT', 'KIND', 'EVENT'], ...r.events.map((e) => [e.id, e.at, e.kind, e.message])])));
}
