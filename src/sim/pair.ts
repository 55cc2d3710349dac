/**
 * Driving a replicated pair on the simulated chassis from outside, as the main job, the tests and
 * the benchmarks do: wait for protection, run the load generator in the service network, find the
 * primary, read both boards' replication status. Uses only the chassis launcher and the boards'
 * control sockets.
 */
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { callControl } from '../mgmt/ipc.js';
import { BOARD_NAMES, CLI_ENTRY, SERVICE_CLIENT_ADDRESS, SERVICE_PORT, SERVICE_VIP, guestOnBoard, type BoardName, type ChassisBoard, type ChassisLayout } from './chassis/layout.js';
import type { LoadProgress, LoadResult } from './load.js';

export interface BoardView {
  board: BoardName;
  role: string;
  replication: { mode: string; protected: boolean; lastSeq: number; ackedSeq: number; deliveredSeq: number; lagInputs: number | null; divergences: number; unprotectedReason?: string; lastCloneError?: string; lastClone?: { durationMs: number; downtimeMs: number | null; holdMs: number } } | null;
  guest: { state: string } | null;
}

export async function boardView(layout: ChassisLayout, board: BoardName): Promise<BoardView | undefined> {
  try {
    const s = (await callControl(layout.boards[board].controlSocket, 'status', {}, 3000)) as Record<string, any>;
    return { board, role: s.role, replication: s.replication, guest: s.guest };
  } catch {
    return undefined;
  }
}

export async function pairView(layout: ChassisLayout): Promise<Record<BoardName, BoardView | undefined>> {
  const [a, b] = await Promise.all([boardView(layout, 'sim-a'), boardView(layout, 'sim-b')]);
  return { 'sim-a': a, 'sim-b': b };
}

/**
 * On a chassis of any size (N+1: a spare may be the backup): until one board is PRIMARY protected
 * and another BACKUP with its guest running, whose partner it is; returns both (bounded). `guest`:
 * which guest of the shelf (`chassis up --guests`), its controllers' sockets (default 1).
 */
export async function waitProtectedAny(layout: ChassisLayout, timeoutMs: number, guest = 1): Promise<{ primary: ChassisBoard; backup: ChassisBoard }> {
  const end = Date.now() + timeoutMs;
  let seen: string[] = [];
  for (let i = 0; i < 100000 && Date.now() < end; i++) {
    const views = await Promise.all(layout.boardNames.map(async (b) => {
      try {
        return { board: b, s: (await callControl(guestOnBoard(layout, b, guest).controlSocket, 'status', {}, 3000)) as Record<string, any> };
      } catch {
        return { board: b, s: undefined };
      }
    }));
    seen = views.map((v) => `${v.board}: ${v.s ? `${v.s.role}, guest ${v.s.guest?.state ?? 'none'}${v.s.replication?.protected ? ' protected' : ''}, partner ${v.s.partner?.heartbeat?.sender ?? '-'}` : 'no answer'}`);
    const primary = views.find((v) => v.s?.role === 'PRIMARY' && v.s.replication?.protected);
    const partner = primary?.s?.partner?.heartbeat?.sender as string | undefined;
    const backup = views.find((v) => v.board === partner && v.s?.role === 'BACKUP' && v.s.guest?.state === 'running');
    if (primary && backup) return { primary: primary.board, backup: backup.board };
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error(`no protected pair${guest > 1 ? ` of guest ${guest}` : ''} within ${timeoutMs} ms: ${seen.join('; ')}`);
}

/** Waits (bounded) until one board is primary with its backup's clone in sync; returns the primary. */
/** Until `primary` reports itself unprotected (its backup gone), up to 30 s. */
export async function waitUnprotected(layout: ChassisLayout, primary: BoardName): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const r = (await callControl(layout.boards[primary].controlSocket, 'replication.status')) as { replication: { protected: boolean } };
    if (!r.replication.protected) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new Error(`${primary} still protected 30 s after its backup was powered off`);
}

export async function waitProtected(layout: ChassisLayout, timeoutMs: number, onTick?: (v: Record<BoardName, BoardView | undefined>) => void): Promise<BoardName> {
  const end = Date.now() + timeoutMs;
  let v: Record<BoardName, BoardView | undefined> | undefined;
  for (let i = 0; i < 100000 && Date.now() < end; i++) {
    v = await pairView(layout);
    onTick?.(v);
    for (const b of BOARD_NAMES) {
      const other = b === 'sim-a' ? 'sim-b' : 'sim-a';
      if (v[b]?.role === 'PRIMARY' && v[b]?.replication?.protected && v[other]?.role === 'BACKUP' && v[other]?.guest?.state === 'running') return b;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  const seen = Object.values(v ?? {}).map((b) => b && `${b.board}: ${b.role}, guest ${b.guest?.state ?? 'none'}, ${b.replication?.mode ?? '-'}${b.replication?.protected ? ' protected' : ''}${b.replication?.unprotectedReason ? ` (${b.replication.unprotectedReason})` : ''}${b.replication?.lastCloneError ? `, last clone error: ${b.replication.lastCloneError}` : ''}`);
  throw new Error(`the pair was not protected within ${timeoutMs} ms; last seen: ${seen.filter(Boolean).join('; ') || 'no board answered'}${await whyNotProtected(layout, v)}`);
}

/** For the error above: the chassis's view of each board (power, resets, controller exits) and the answering boards' last role events. */
async function whyNotProtected(layout: ChassisLayout, v: Record<BoardName, BoardView | undefined> | undefined): Promise<string> {
  const parts: string[] = [];
  try {
    const st = (await callControl(layout.controlSocket, 'status', {}, 3000)) as {
      boards?: Array<{ board: string; power?: string; boots?: number; resets?: { count: number; last: { cause: string; at: string } | null }; lastExit?: unknown; controller?: { state?: string } | null }>;
      powerController?: { recent?: unknown[] };
    };
    for (const b of st.boards ?? []) {
      parts.push(`chassis: ${b.board} power ${b.power}, ${b.boots} boots, controller ${b.controller?.state ?? 'none'}, ${b.resets?.count ?? 0} resets${b.resets?.last ? ` (last: ${b.resets.last.cause} at ${b.resets.last.at})` : ''}${b.lastExit ? `, last exit ${JSON.stringify(b.lastExit)}` : ''}`);
    }
    if (st.powerController?.recent?.length) parts.push(`power controller: ${JSON.stringify(st.powerController.recent.slice(-4))}`);
  } catch (e) {
    parts.push(`chassis status: ${(e as Error).message}`);
  }
  for (const b of BOARD_NAMES) {
    if (!v?.[b]) continue;
    try {
      const ev = ((await callControl(layout.boards[b].controlSocket, 'events', { limit: 8 }, 3000)) as { events: Array<{ at: string; kind: string; message: string }> }).events;
      parts.push(`${b} journal: ${ev.filter((e) => /role|partner|fenc|guest|clone/.test(e.kind)).map((e) => `${e.at} ${e.kind}: ${e.message}`).join(' | ')}`);
    } catch {
      // the board stopped answering meanwhile
    }
  }
  return parts.length ? `\n  ${parts.join('\n  ')}` : '';
}

export interface LoadRun {
  progress: LoadProgress[];
  result: Promise<LoadResult>;
  pid: number;
}

/** Runs `understudy load` inside the service network against the service address (`address`: another guest's, default guest 1's). */
export function startLoad(layout: ChassisLayout, o: { rate: number; durationMs: number; tag: string; retryMs?: number; giveUpMs?: number; window?: number; verify?: boolean; regEvery?: number; mix?: string; pool?: string; address?: string }, onProgress?: (p: LoadProgress) => void): LoadRun {
  const args = ['netns', 'exec', layout.serviceNetns, process.execPath, CLI_ENTRY, 'load', '--target', `${o.address ?? SERVICE_VIP}:${SERVICE_PORT}`,
    '--bind', SERVICE_CLIENT_ADDRESS, '--rate', String(o.rate), '--duration', String(o.durationMs), '--tag', o.tag,
    '--retry', String(o.retryMs ?? 20), ...(o.giveUpMs ? ['--give-up', String(o.giveUpMs)] : []), '--window', String(o.window ?? 8), ...(o.regEvery ? ['--reg-every', String(o.regEvery)] : []),
    ...(o.mix ? ['--mix', o.mix] : []), ...(o.pool ? ['--pool', o.pool] : []), ...(o.verify ? ['--verify'] : [])];
  const child = spawn('ip', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const progress: LoadProgress[] = [];
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const result = new Promise<LoadResult>((resolve, reject) => {
    let final: LoadResult | undefined;
    let error: string | undefined;
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const m = JSON.parse(line) as { progress?: LoadProgress; result?: LoadResult; error?: { message: string } };
        if (m.progress) { progress.push(m.progress); onProgress?.(m.progress); }
        if (m.result) final = m.result;
        if (m.error) error = m.error.message;
      } catch {
        // not ours
      }
    });
    child.on('exit', (code) => (final ? resolve(final) : reject(new Error(`load generator exited (${code}): ${error ?? stderr.trim()}`))));
  });
  return { progress, result, pid: child.pid! };
}

/** The reply gap that contains instant t (a fault): how long clients waited across it. */
export function gapAround(gaps: Array<[number, number]>, t: number): { from: number; to: number; afterFaultMs: number } | undefined {
  const g = gaps.find(([a, b]) => a <= t + 5 && b >= t);
  return g ? { from: g[0], to: g[1], afterFaultMs: g[1] - t } : undefined;
}
