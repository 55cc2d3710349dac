/**
 * The daemon's `status` as text: shared by `guest status`, `status` and the demo. A module of its
 * own so `understudy status` does not load the guest commands (and their config validation).
 */
import type { GuestStatus } from '../guest/supervisor.js';
import { table } from './output.js';

export interface DaemonStatus {
  board: string;
  pid: number;
  uptimeS: number;
  role: string;
  service: { address: string; port: number };
  guest: GuestStatus | null;
  endpoint: Record<string, number>;
  rssMb: number;
  /** The controller's event-loop delay: the last full window and the worst since start (older controllers: absent). */
  eventLoopDelay?: { windowS: number; lastWindow: { p50Ms: number; p99Ms: number; maxMs: number } | null; maxMsSinceStart: number };
  /** Set while the controller is up without serving (role CONFIG-ERROR). */
  configError?: { code: string; message: string; at: string; remedy: string } | null;
}

/** The configuration error a controller is up with, as lines of text (none while it serves). */
export function formatConfigError(c: DaemonStatus['configError']): string[] {
  return c ? [`NOT SERVING since ${c.at}: configuration error ${c.code}: ${c.message}`, c.remedy] : [];
}

function loopDelay(d: DaemonStatus['eventLoopDelay']): string {
  if (!d) return '';
  const w = d.lastWindow;
  return `, event loop late ${w ? `p99 ${w.p99Ms} ms, max ${w.maxMs} ms over the last ${d.windowS} s` : 'n/a (first window not over)'}, max ${d.maxMsSinceStart} ms since start`;
}

export function formatStatus(s: DaemonStatus): string {
  const head = `board ${s.board} (${s.role}): controller pid ${s.pid}, up ${s.uptimeS} s, RSS ${s.rssMb} MB, service ${s.service.address}:${s.service.port}${loopDelay(s.eventLoopDelay)}`;
  const g = s.guest;
  if (s.configError) return [head, ...formatConfigError(s.configError)].join('\n');
  if (!g) return `${head}\nno guest on this board`;
  const lines = [
    head,
    `guest ${g.guest.name} ${g.guest.version} (app ${g.appVersion ?? '?'}): ${g.state}, ${g.guest.memoryMb} MB, NIC ${g.guest.nic}`,
    `hypervisor: QEMU pid ${g.qemuPid ?? '-'}${g.qemuUser ? ` as ${g.qemuUser.name} (uid ${g.qemuUser.uid})` : ''}, accel ${g.accel ?? '?'} (${g.accelReason ?? ''}), boot-to-ready ${g.bootToReadyMs ?? '-'} ms`,
    `traffic: ${s.endpoint.requests ?? 0} requests, ${s.endpoint.replies ?? 0} replies, ${s.endpoint.clients ?? 0} clients; guest processed ${g.requestsProcessed ?? '-'}`,
    `dropped at the endpoint: ${s.endpoint.oversized ?? 0} oversized, ${s.endpoint.noId ?? 0} without an id, ${s.endpoint.rateLimited ?? 0} over a source's rate, ${s.endpoint.clientsRefused ?? 0} new clients refused (every identity held); AUTH answers dropped: ${s.endpoint.authIgnored ?? 0} from elsewhere, ${s.endpoint.authOversized ?? 0} oversized, ${s.endpoint.authUnasked ?? 0} to no open question`,
    `restarts: ${g.restarts.length}${g.restarts.length ? ` (last: ${g.restarts[g.restarts.length - 1]!.cause})` : ''}`,
  ];
  if (g.stateLoad) {
    const l = g.stateLoad;
    const refused = l.expected && l.outcome !== 'loaded';
    lines.push(`saved state: ${l.outcome}${l.reason ? ` (${l.reason})` : ''}${l.expected ? ', expected' : ''}${refused ? ' — ALARM: REFUSED, not serving (understudy guest start --start-empty)' : ''}`);
  }
  if (g.pinning) {
    const p = g.pinning;
    lines.push(`pinning: guest core ${p.guestCore}, housekeeping ${p.housekeeping.join(',')}, controller on CPUs ${p.controller}`);
    lines.push(table([
      ['TID', 'THREAD', 'CPUS', 'POLICY', 'RTPRIO'],
      ...p.threads.map((t) => [t.tid === g.vcpuTid ? `${t.tid}*` : t.tid, t.name, t.cpus, t.policy, t.rtPriority]),
    ]).split('\n').map((l) => `  ${l}`).join('\n'));
    lines.push('  (* = the vCPU thread)');
  }
  return lines.join('\n');
}
