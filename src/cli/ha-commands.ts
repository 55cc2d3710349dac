/**
 * `understudy role`, `understudy link status`, `understudy events`: the pair as this board sees it;
 * `understudy ha keygen`: the pair's heartbeat key file.
 * `understudy start-alone`: the operator's word that a board waiting for its partner may serve alone.
 */
import type { Command } from 'commander';
import { UsError } from '../core/errors.js';
import type { HaStatus } from '../ha/ha-controller.js';
import type { LinkState, PartnerView } from '../ha/membership.js';
import type { JournalEvent } from '../store/journal.js';
import { writeKeyFile } from '../core/key-file.js';
import { callControl } from '../mgmt/ipc.js';
import { formatConfigError, type DaemonStatus } from './status-format.js';
import { controlSocketOf, defaultBoardFile } from './locate.js';
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

export function formatRole(s: HaStatus | { board: string; role: string; configError?: DaemonStatus['configError'] }): string {
  if ('configError' in s && s.configError) return [`board ${s.board}: ${s.role}`, ...formatConfigError(s.configError)].join('\n');
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

/** The key file named by the board profile (--board, or the default one), for `ha keygen` without --file. */
async function profileKeyFile(board?: string): Promise<string> {
  const { loadBoardProfile } = await import('../config/board-profile.js');
  const p = loadBoardProfile(defaultBoardFile(board));
  if (!p.ha) throw new UsError('US_ERR_CONFIG', `board profile ${p.sourceFile} has no ha section (no key file): give --file`);
  return p.ha.keyFile;
}

export function registerHaCommands(program: Command): void {
  program.command('ha')
    .description('the pair\'s heartbeat key')
    .command('keygen')
    .description('write a new heartbeat key file: 32 random bytes as 64 hexadecimal digits, owner root, mode 0600, written atomically (the same file goes on both boards)')
    .option('--file <file>', 'key file to write (default: ha.keyFile of the board profile)')
    .option('--board <file>', 'board profile whose ha.keyFile is written when --file is not given')
    .option('--force', 'replace an existing key file (the partner must then get the new one too)')
    .action(action(async (o: Opts & { file?: string; force?: boolean }) => {
      const file = o.file ?? await profileKeyFile(o.board);
      writeKeyFile(file, { force: o.force === true });
      return { file, bytes: 32, format: 'hex', mode: '0600' };
    }, (r) => `heartbeat key written to ${r.file} (32 bytes, hex, mode 0600); copy the same file to the partner board, then restart both controllers`));


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

  program.command('start-alone')
    .description('a board that has not heard its partner since it started: fence the partner, then serve alone (refused while the partner is heard)')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts) => (await callControl(await controlSocketOf(o.board), 'start-alone', {}, 45000)) as { board: string; role: string; cause: string; partner: string },
      (r) => `board ${r.board}: ${r.role} — ${r.cause} (${r.partner} fenced; it joins as backup when it is heard again)`));

  program.command('partner')
    .description('the pair\'s partner board')
    .command('adopt')
    .argument('<board>', 'the new partner\'s name (its profile\'s name; the power controller\'s and Pacemaker\'s node name)')
    .description('N+1 re-protection, on a primary serving alone: take another board (a spare started as this board\'s backup) as the partner; heartbeats, fencing and clones go to it (refused while the partner is heard)')
    .requiredOption('--address <ipv4>', 'the new partner\'s address on the partner Ethernet link')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts & { address: string }, name: string) =>
      (await callControl(await controlSocketOf(o.board), 'partner.adopt', { name, address: o.address }, 10000)) as { board: string; partner: string; address: string; previous: string; linksClosed: string[] },
    (r) => `board ${r.board}: partner is now ${r.partner} (${r.address}), replacing ${r.previous}${r.linksClosed.length ? `; ${r.linksClosed.join(', ')} link closed` : ''}; it is cloned to once it is heard`));

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
