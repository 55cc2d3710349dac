/**
 * `understudy status`, `understudy clone`, `understudy switchover`: the replicated pair from this
 * board's point of view. Long work (a clone) shows progress: a bar on a terminal, lines otherwise.
 */
import { Option, type Command } from 'commander';
import type { CloneProgress, CloneReport } from '../replication/manager.js';
import type { LegacyChannelsStatus } from '../replication/legacy-channel.js';
import type { RejectionStatus } from '../replication/rejections.js';
import type { ReplicationStatus } from '../replication/replicator.js';
import { callControl } from '../mgmt/ipc.js';
import { controlSocketOf } from './locate.js';
import { formatStatus, type DaemonStatus } from './status-format.js';
import { action, type OutputOptions } from './output.js';

type Opts = OutputOptions & { board?: string };
type ReplStatus = ReplicationStatus & {
  cloneInProgress: boolean;
  cloneProgress?: CloneProgress;
  lastClone?: CloneReport & { at: string };
  lastCloneError?: string;
  failovers: number;
  inputLoss?: { checks: number; losses: number; last: { missing: number; at: string } | null } | null;
  channelRejections?: Record<string, Record<string, number>>;
  channelRejectionsTotal?: number;
  lastChannelRejection?: { purpose: string; reason: string; remote: string; detail: string; at: string } | null;
  legacyChannels?: LegacyChannelsStatus;
};

/** The previous firmware's partner channels: the alarm while in use, the connections they carried. */
function legacyLines(l: LegacyChannelsStatus | undefined): string[] {
  if (!l || (!l.inUse && !l.total)) return [];
  const by = Object.entries(l.connections).map(([p, n]) => `${p} ${n}`).join(', ');
  if (l.inUse) return [`  ALARM: ${l.alarm} (since ${l.since}; connections without TLS: ${l.total}${by ? `: ${by}` : ''})`];
  return [`  partner channels: TLS only; ${l.total} connections of the previous firmware since the controller started (${by})`];
}

/** Per-hop timing since the controller started, p50/p99 ms from an input's receipt; the hops that saw inputs only. */
function hopLine(h: ReplicationStatus['hops']): string {
  if (!h) return '';
  const seen = Object.entries(h).filter(([, s]) => s.n > 0).map(([k, s]) => `${k} ${s.p50Ms}/${s.p99Ms}`);
  return seen.length ? `  time from receipt, p50/p99 ms (since start): ${seen.join(', ')}` : '';
}

export function formatReplication(role: string, r: ReplStatus | null): string {
  if (!r) return 'replication: no guest on this board';
  const lines: string[] = [];
  if (r.mode === 'primary') {
    lines.push(`replication: PRIMARY, ${r.protected ? 'PROTECTED' : `UNPROTECTED${r.unprotectedReason ? ` (${r.unprotectedReason})` : ''}`}`);
    lines.push(`  inputs: ${r.lastSeq} sequenced, ${r.deliveredSeq} delivered here, backup acknowledged ${r.protected ? r.ackedSeq : '-'} (lag ${r.lagInputs ?? '-'})`);
    lines.push(`  replies held for acknowledgement: ${r.heldReplies}; inputs queued: ${r.heldInputs}${r.holding ? ' (clone cut-over)' : ''}`);
  } else if (r.mode === 'backup') {
    lines.push(`replication: BACKUP, ${r.protected ? 'following the primary' : 'no input stream (waiting for a clone)'}`);
    lines.push(`  inputs: ${r.lastSeq} received, ${r.deliveredSeq} delivered to the clone (lag ${r.lagInputs ?? '-'}); AUTH answers held until asked: ${r.authHolds}`);
    lines.push(`  divergence watch: ${r.digestsCompared} replies compared, ${r.divergences} divergences`);
  } else {
    lines.push(`replication: standalone (${role}), ${r.lastSeq} inputs`);
  }
  if (r.cloneInProgress) lines.push(`  clone in progress: ${r.cloneProgress?.phase ?? '?'} ${r.cloneProgress?.percent ?? ''}${r.cloneProgress?.percent !== undefined ? '%' : ''}`);
  if (r.lastClone) {
    const c = r.lastClone;
    const kind = c.snapshot ? `snapshot copy, ${c.afterCut ?? 0} inputs served during it` : c.live ? 'live copy' : 'stopped copy';
    lines.push(`  last clone: ${c.at}, ${c.durationMs} ms (${kind}), guest paused ${c.downtimeMs ?? '?'} ms, inputs held ${c.holdMs} ms${c.holdParts ? ` (drain ${c.holdParts.drainMs}, PING ${c.holdParts.pingMs}, copy start ${c.holdParts.migrationStartMs}${c.holdParts.qemuSetupMs !== undefined ? `, of which QEMU's setup ${c.holdParts.qemuSetupMs}` : ''})` : ''}, cut-over at input ${c.cutSeq}`);
  }
  if (r.lastCloneError) lines.push(`  last clone error: ${r.lastCloneError}`);
  const cp = (r as ReplStatus & { checkpoint?: { last: { seq: number; at: string; pauseMs: number | null } | null; inputsLoggedSince: number; inputLog?: { limit: number; forced: number } } | null }).checkpoint;
  lines.push(`  divergences: ${r.divergences}; failovers taken by this board: ${r.failovers}`);
  if (r.drops) lines.push(`  input bounds: ${r.drops.queueFull} requests dropped with the queue full, ${r.drops.heldFull} during a cut-over; ${r.pendingReplies} requests waiting for a reply, ${r.drops.pendingPruned} forgotten unanswered`);
  if (r.inputLoss) lines.push(`  input-loss watch: ${r.inputLoss.checks} looks, ${r.inputLoss.losses} losses${r.inputLoss.last ? ` (last: ${r.inputLoss.last.missing} inputs at ${r.inputLoss.last.at}, repaired by a re-clone)` : ''}`);
  if (r.channelRejectionsTotal) {
    const by = Object.entries(r.channelRejections ?? {}).map(([p, rs]) => `${p}: ${Object.entries(rs).map(([k, n]) => `${k}=${n}`).join(' ')}`).join('; ');
    const l = r.lastChannelRejection;
    lines.push(`  partner channel connections rejected: ${r.channelRejectionsTotal} (${by})${l ? `; last ${l.at}: ${l.purpose} ${l.reason} ${l.remote} (${l.detail})` : ''}`);
  }
  lines.push(...legacyLines(r.legacyChannels));
  const hops = hopLine(r.hops);
  if (hops) lines.push(hops);
  const poison = (r as ReplStatus & { poison?: { quarantined: number; recoveries: number; lastRecovery: { at: string; durationMs: number; restores: number; replayed: number; poison: Array<{ seq: number; how: string }>; notReproduced?: unknown } | null } }).poison;
  if (poison && (poison.quarantined || poison.recoveries)) {
    const l = poison.lastRecovery;
    lines.push(`  poison inputs: ${poison.quarantined} in quarantine (\`quarantine list\`); recoveries from the checkpoint here: ${poison.recoveries}${l ? ` (last ${l.at}: ${l.durationMs} ms, ${l.restores} restores, ${l.replayed} inputs replayed, ${l.poison.length ? `skipped ${l.poison.map((x) => `input ${x.seq} (${x.how})`).join(', ')}` : l.notReproduced ? 'the failure did not repeat: nothing skipped' : 'nothing skipped'})` : ''}`);
  }
  if (cp) lines.push(`  last checkpoint: ${cp.last ? `input ${cp.last.seq} at ${cp.last.at} (clone paused ${cp.last.pauseMs ?? '?'} ms)` : 'none'}; inputs logged since: ${cp.inputsLoggedSince}${cp.inputLog ? ` (a checkpoint is forced at ${cp.inputLog.limit}; forced so far: ${cp.inputLog.forced})` : ''}`);
  return lines.join('\n');
}

/** Messages refused from the partner (src/replication/rejections.ts), one line; nothing while there were none. */
export function formatPartnerMessages(p: RejectionStatus | undefined): string {
  if (!p?.total) return '';
  const by = Object.entries(p.byChannel).map(([ch, rs]) => `${ch} ${Object.entries(rs ?? {}).map(([r, n]) => `${r} ${n}`).join(', ')}`).join('; ');
  return `\npartner messages refused: ${p.total} (${by})${p.last ? `; last ${p.last.at}: ${p.last.channel} ${p.last.reason}: ${p.last.detail}` : ''}`;
}

export type BoardStatus = DaemonStatus & { replication: ReplStatus | null; serving: boolean; partnerMessages?: RejectionStatus };

/** `understudy status`: what the board's controller reports (also run by fast-status.ts). */
export async function boardStatus(o: { board?: string }): Promise<BoardStatus> {
  return (await callControl(await controlSocketOf(o.board), 'status')) as BoardStatus;
}

export function formatBoardStatus(s: BoardStatus): string {
  return `${formatStatus(s)}\n${formatReplication(s.role, s.replication)}${formatPartnerMessages(s.partnerMessages)}`;
}

export function registerReplicationCommands(program: Command): void {
  program.command('status')
    .description('this board: role, guest, replication (input sequence numbers, lag, clone, divergences)')
    .option('--board <file>', 'board profile')
    .action(action((o: Opts) => boardStatus(o), formatBoardStatus));

  program.command('clone')
    .description('clone the running guest to the partner board now (on the primary)')
    .option('--board <file>', 'board profile')
    .addOption(new Option('--copy <kind>', 'snapshot: the guest serves through the copy; plain: inputs wait for all of it (default: the board profile\'s partner.snapshotClones)').choices(['snapshot', 'plain']))
    .action(action(async (o: Opts & { copy?: string }) => {
      const sock = await controlSocketOf(o.board);
      const tty = process.stderr.isTTY === true && !o.json;
      const cliProgress = tty ? (await import('cli-progress')).default : undefined;
      const bar = cliProgress ? new cliProgress.SingleBar({ format: 'clone [{bar}] {percentage}% {phase}', hideCursor: true }, cliProgress.Presets.shades_classic) : undefined;
      let last = '';
      const poll = setInterval(() => {
        callControl(sock, 'replication.status', {}, 2000).then((r) => {
          const p = (r as { replication: ReplStatus }).replication?.cloneProgress;
          if (!p) return;
          if (bar) { if (!bar.isActive) bar.start(100, 0, { phase: p.phase }); bar.update(p.percent ?? 0, { phase: p.phase }); }
          else if (!o.json) { const line = `clone: ${p.phase}${p.percent !== undefined ? ` ${p.percent}%` : ''}`; if (line !== last) process.stderr.write(`${line}\n`); last = line; }
        }, () => undefined);
      }, 200);
      try {
        const r = (await callControl(sock, 'clone', o.copy ? { copy: o.copy } : {}, 180000)) as { board: string; clone: CloneReport };
        bar?.update(100, { phase: 'done' });
        return r;
      } finally {
        clearInterval(poll);
        bar?.stop();
      }
    }, (r) => `cloned to the partner in ${r.clone.durationMs} ms (${r.clone.snapshot ? `snapshot copy: ${r.clone.afterCut} inputs served during it` : 'plain copy'}): guest paused ${r.clone.downtimeMs ?? '?'} ms, inputs held ${r.clone.holdMs} ms, ${r.clone.transferredMb} MB, cut-over at input ${r.clone.cutSeq}`));

  program.command('checkpoint')
    .description('freeze a copy of the clone with the input it holds, and truncate the input log (on the backup)')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts) => {
      if (!o.json) process.stderr.write('checkpoint: draining the clone and freezing a copy…\n');
      return (await callControl(await controlSocketOf(o.board), 'checkpoint', {}, 180000)) as { board: string; checkpoint: { seq: number; bytes: number; pauseMs: number | null; durationMs: number } };
    }, (r) => `checkpoint of board ${r.board} at input ${r.checkpoint.seq}: ${Math.round(r.checkpoint.bytes / 1048576)} MB in ${r.checkpoint.durationMs} ms, clone paused ${r.checkpoint.pauseMs ?? '?'} ms`));

  program.command('switchover')
    .description('hand the primary role to the backup without a failure (on the primary)')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts) => (await callControl(await controlSocketOf(o.board), 'switchover', {}, 30000)) as { board: string; handedOverAt: number },
      (r) => `board ${r.board} handed the primary role to its partner at input ${r.handedOverAt}`));
}
