/**
 * The main job (README's first command): boots the reference guest on the simulated board sim-a,
 * pinned to its core, behind its controller, with the stand-in AUTH service, and shows it answering
 * every protocol command through the board's service endpoint. Cleans up what it started.
 */
import { loadBoardProfile } from '../config/board-profile.js';
import { loadGuestDescriptor } from '../config/guest-descriptor.js';
import { callControl } from '../mgmt/ipc.js';
import { controlSocketPath } from '../mgmt/paths.js';
import { Hlr } from '../sim/hlr.js';
import { UdpClient } from '../sim/udp-client.js';
import { startDaemonInBackground } from './guest-commands.js';
import { formatStatus, type DaemonStatus } from './status-format.js';
import { table } from './output.js';

export interface DemoOptions {
  board: string;
  guest: string;
  keep?: boolean;
  json?: boolean;
}

export async function runDemo(o: DemoOptions): Promise<Record<string, unknown>> {
  const board = loadBoardProfile(o.board);
  const guest = loadGuestDescriptor(o.guest);
  const say = (s: string) => { if (!o.json) process.stdout.write(`${s}\n`); };
  const hlr = new Hlr({ ...board.externalServices.auth, deny: /^blocked/ });
  await hlr.start();
  say(`AUTH service (stand-in HLR) on ${board.externalServices.auth.address}:${board.externalServices.auth.port}, denying /^blocked/`);
  let pid: number | undefined;
  const client = new UdpClient(board.service);
  try {
    say(`starting the controller of board ${board.name} with guest ${guest.name} ${guest.version} (booting under QEMU)…`);
    pid = await startDaemonInBackground(board.sourceFile, guest.sourceFile, guest.bootTimeoutMs + 30000);
    const before = (await callControl(controlSocketPath(board), 'status')) as DaemonStatus;
    say(formatStatus(before));
    await client.open();
    const script: Array<[string, string]> = [
      ['r1', 'REG alice'], ['r2', 'REG bob'], ['r3', 'REG blocked1'], ['c1', 'CALL alice bob'],
      ['g1', 'GET alice'], ['s1', 'STATS'], ['c1', 'CALL alice bob'], ['e1', 'END 1'], ['g2', 'GET bob'],
      ['x1', 'CALL alice nobody'], ['z1', 'FROB'], ['s2', 'STATS'],
    ];
    const rows: Array<[string, string, string]> = [];
    say(`\nrequests to the service endpoint ${board.service.address}:${board.service.port} (c1 is sent twice: the retry gets the cached reply):`);
    for (const [id, body] of script) {
      const t0 = performance.now();
      const reply = await client.request(id, body, 3000, 2);
      rows.push([`${id} ${body}`, reply, `${(performance.now() - t0).toFixed(2)} ms`]);
    }
    say(table([['REQUEST', 'REPLY', 'LATENCY'], ...rows]));
    const after = (await callControl(controlSocketPath(board), 'status')) as DaemonStatus;
    const result = { board: board.name, controllerPid: pid, status: after, exchanges: rows.map(([q, r, l]) => ({ request: q, reply: r, latency: l })), authQueries: hlr.queries };
    if (o.keep) say(`\nleft running: \`understudy guest status\`, \`understudy guest console\`, \`understudy guest stop\` (board ${board.name})`);
    return result;
  } finally {
    client.close();
    if (!o.keep) {
      if (pid) {
        await callControl(controlSocketPath(board), 'guest.stop').catch(() => undefined);
        for (let i = 0; i < 200; i++) {
          try { process.kill(pid, 0); } catch { break; }
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      say('\nguest and controller stopped.');
    }
    hlr.close();
  }
}
