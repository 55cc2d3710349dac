/**
 * One standalone board for a benchmark: a copy of board/sim-a.json without partner, HA, watchdog,
 * fencing or console, its storage in a temporary directory, a stand-in AUTH service, and its
 * controller started in the background with the reference guest (real QEMU). `stop()` ends the
 * controller (and its QEMU, found by the board's storage dir in its command line), the AUTH service
 * and the directory. Used by bench/daemon (--mode standalone) and bench/status.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBoardProfile } from '../src/config/board-profile.js';
import { PACKAGE_ROOT } from '../src/cli/locate.js';
import { startDaemonInBackground } from '../src/cli/guest-commands.js';
import { controlSocketPath } from '../src/mgmt/paths.js';
import { Hlr } from '../src/sim/hlr.js';

export interface StandaloneBoard {
  boardFile: string;
  socket: string;
  daemonPid: number;
  stop(): Promise<void>;
}

/** `address`: the service's loopback address (its AUTH service gets the same /24's .100). */
export async function startStandaloneBoard(name: string, address = '127.0.251.1'): Promise<StandaloneBoard> {
  const dir = mkdtempSync(join(tmpdir(), `us-bench-${name}-`));
  chmodSync(dir, 0o711); // searchable by the board's QEMU user (qemuUser), on its way to <storageDir>/qemu
  const b = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board', 'sim-a.json'), 'utf8'));
  for (const k of ['ha', 'partner', 'watchdog', 'fencing', 'console']) delete b[k];
  b.storageDir = join(dir, 'store');
  b.service = { address, port: 5000 };
  b.externalServices = { auth: { address: address.replace(/\.\d+$/, '.100'), port: 7000 } };
  const boardFile = join(dir, 'board.json');
  writeFileSync(boardFile, JSON.stringify(b));
  const board = loadBoardProfile(boardFile);
  const hlr = new Hlr({ ...b.externalServices.auth });
  await hlr.start();
  let daemonPid: number | undefined;
  const stop = async () => {
    if (daemonPid) {
      const qemuPidFile = join(board.storageDir, 'qemu.pid');
      const qemu = existsSync(qemuPidFile) ? Number.parseInt(readFileSync(qemuPidFile, 'utf8'), 10) : undefined;
      try { process.kill(daemonPid, 'SIGTERM'); } catch { /* gone */ }
      for (let i = 0; i < 200; i++) { try { process.kill(daemonPid, 0); } catch { break; } await new Promise((r) => setTimeout(r, 50)); }
      try { process.kill(daemonPid, 'SIGKILL'); } catch { /* gone */ }
      if (qemu && existsSync(`/proc/${qemu}`) && readFileSync(`/proc/${qemu}/cmdline`, 'utf8').includes(board.storageDir)) process.kill(qemu, 'SIGKILL');
    }
    hlr.close();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    daemonPid = await startDaemonInBackground(boardFile, join(PACKAGE_ROOT, 'guests', 'dx-legacy.json'), 120000);
  } catch (e) {
    await stop();
    throw e;
  }
  return { boardFile, socket: controlSocketPath(board), daemonPid, stop };
}
