/**
 * `understudy guest …`: start a board's controller with its guest, show status, attach to the guest
 * console, send management commands, stop.
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync, existsSync, lstatSync, readFileSync, readSync } from 'node:fs';
import { connect } from 'node:net';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { loadBoardProfile, type BoardProfile } from '../config/board-profile.js';
import { loadGuestDescriptor } from '../config/guest-descriptor.js';
import { UsError } from '../core/errors.js';
import type { GuestStatus } from '../guest/supervisor.js';
import { readFrom } from '../hw/hypervisor/qemu-user.js';
import { MAGIC as PACKAGE_MAGIC } from '../upgrade/package-format.js';
import { callControl } from '../mgmt/ipc.js';
import { DAEMON_ENV, DAEMON_NODE_FLAGS } from '../core/footprint.js';
import { CONFIG_ERROR_ROLE, type ConfigErrorState } from '../mgmt/not-serving.js';
import { controlSocketPath } from '../mgmt/paths.js';
import { DAEMON_ENTRY, controlSocketOf, defaultBoardFile, defaultGuestFile } from './locate.js';
import { action, print, table, type OutputOptions } from './output.js';
import { formatStatus, type DaemonStatus } from './status-format.js';

type Opts = OutputOptions & { board?: string; guest?: string };


function boardOf(o: Opts): BoardProfile {
  return loadBoardProfile(defaultBoardFile(o.board));
}

/**
 * Starts understudyd in the background and waits for its READY/FAILED/CONFIG-ERROR line. On
 * CONFIG-ERROR the controller stays up (console and control socket only): the error thrown says so
 * and carries its pid in `detail`.
 */
export async function startDaemonInBackground(boardFile: string, guestFile: string, timeoutMs: number, o: { startEmpty?: boolean } = {}): Promise<number> {
  const board = loadBoardProfile(boardFile);
  loadGuestDescriptor(guestFile);
  const { mkdirSync } = await import('node:fs');
  (await import('../core/dirs.js')).makeParentDirs(board.storageDir);
  mkdirSync(board.storageDir, { recursive: true, mode: 0o700 });
  const errFd = openSync(join(board.storageDir, 'understudyd.stderr'), 'a', 0o600);
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, DAEMON_ENTRY, '--board', board.sourceFile, '--guest', guestFile, ...(o.startEmpty ? ['--start-empty'] : [])], {
    detached: true,
    stdio: ['ignore', 'pipe', errFd],
    env: { ...process.env, ...DAEMON_ENV, UNDERSTUDY_NOTIFY: 'stdout', UNDERSTUDY_LOG: process.env.UNDERSTUDY_LOG ?? 'info' },
  });
  closeSync(errFd);
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    const timer = setTimeout(() => reject(new UsError('US_ERR_TIMEOUT', `controller did not report ready within ${timeoutMs} ms`)), timeoutMs);
    // Only the controller's notice counts: any other line (none is expected) is skipped, never parsed.
    rl.on('line', (l) => { if (/^(READY|FAILED|CONFIG-ERROR) /.test(l)) { clearTimeout(timer); rl.close(); resolve(l); } });
    child.once('exit', (code) => { clearTimeout(timer); reject(new UsError('US_ERR_HYPERVISOR', `controller exited (${code}) before it was ready; see ${join(board.storageDir, 'understudyd.log')}`)); });
  });
  child.stdout!.destroy();
  child.unref();
  if (line.startsWith('READY')) return child.pid!;
  if (line.startsWith('CONFIG-ERROR ')) {
    const c = JSON.parse(line.slice('CONFIG-ERROR '.length)) as ConfigErrorState;
    throw new UsError(c.code, `${c.message}; the controller stays up without serving (pid ${child.pid}, role ${CONFIG_ERROR_ROLE}) for its console and status: ${c.remedy}`,
      { pid: child.pid, role: CONFIG_ERROR_ROLE });
  }
  const err = JSON.parse(line.slice('FAILED '.length)) as { code: UsError['code']; message: string };
  throw new UsError(err.code, err.message);
}

/**
 * A controller already up on this board but not serving (CONFIG-ERROR) is asked to retry its start-up
 * (the operator has fixed the file); returns its pid, or undefined when none is in that state.
 */
async function retryNotServing(sock: string, timeoutMs: number, startEmpty: boolean): Promise<number | undefined> {
  const up = (await callControl(sock, 'ping', {}, 3000).catch(() => undefined)) as { pid: number; role: string } | undefined;
  if (up?.role !== CONFIG_ERROR_ROLE) return undefined;
  await callControl(sock, 'start.retry', { startEmpty }, timeoutMs);
  return up.pid;
}

/**
 * Runs `guest.upgrade` on a controller and reports each new step it shows in its status
 * (`guest upgrade: <step>: <detail>`) while the request is under way. Used by the CLI and the demo.
 */
export async function guestUpgradeWithProgress(sock: string, args: Record<string, unknown>, onLine: (line: string) => void): Promise<Record<string, any>> {
  let last = '';
  const poll = setInterval(() => {
    callControl(sock, 'replication.status', {}, 2000).then((r) => {
      const u = (r as { replication?: { guestUpgrade?: { step: string; detail?: string } | null } }).replication?.guestUpgrade;
      const line = u ? `guest upgrade: ${u.step}: ${u.detail ?? ''}` : '';
      if (line && line !== last) { last = line; onLine(line); }
    }, () => undefined);
  }, 250);
  try {
    return (await callControl(sock, 'guest.upgrade', args, 900000)) as Record<string, any>;
  } finally {
    clearInterval(poll);
  }
}

/** A signed package (.usp) rather than a descriptor: its first bytes are the package magic. */
function isPackageFile(file: string): boolean {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const head = Buffer.alloc(PACKAGE_MAGIC.length);
    return readSync(fd, head, 0, head.length, 0) === head.length && head.equals(PACKAGE_MAGIC);
  } catch {
    return false; // the descriptor loader names the file
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

export function registerGuestCommands(program: Command): void {
  const guest = program.command('guest').description('host the legacy guest on this board');

  guest.command('start')
    .description('start the board controller and boot the guest, pinned to the guest core')
    .option('--board <file>', 'board profile (default: $UNDERSTUDY_BOARD, /etc/understudy/board.json, board/standalone.json)')
    .option('--guest <file>', 'guest descriptor (default: $UNDERSTUDY_GUEST, /etc/understudy/guest.json, guests/dx-legacy.json)')
    .option('--foreground', 'run the controller in this process until interrupted')
    .option('--start-empty', 'after the guest refused its saved state (US_ERR_GUEST_STATE): set the state disk aside (kept as <disk>.aside-<time>) and boot with an empty state')
    .action(action(async (o: Opts & { foreground?: boolean; startEmpty?: boolean }) => {
      const boardFile = defaultBoardFile(o.board);
      const guestFile = defaultGuestFile(o.guest);
      const startEmpty = o.startEmpty === true;
      if (o.foreground) {
        const { runDaemon } = await import('../mgmt/run-daemon.js');
        await runDaemon(boardFile, guestFile, undefined, { startEmpty });
        return;
      }
      const g = loadGuestDescriptor(guestFile);
      const sock = controlSocketPath(loadBoardProfile(boardFile));
      const pid = (await retryNotServing(sock, g.bootTimeoutMs + 30000, startEmpty)) ?? await startDaemonInBackground(boardFile, guestFile, g.bootTimeoutMs + 30000, { startEmpty });
      const st = (await callControl(sock, 'status')) as DaemonStatus;
      print(o, { started: true, pid, status: st }, () => `controller started (pid ${pid})\n${formatStatus(st)}`);
    }));

  guest.command('status')
    .description('show the guest, its pinning and the controller')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts) => (await callControl(controlSocketPath(boardOf(o)), 'status')) as DaemonStatus, (st) => formatStatus(st)));

  guest.command('stop')
    .description('stop the guest and the board controller')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts) => {
      const board = boardOf(o);
      const pidFile = join(board.storageDir, 'understudyd.pid');
      const pid = existsSync(pidFile) ? Number.parseInt(readFileSync(pidFile, 'utf8'), 10) : undefined;
      await callControl(controlSocketPath(board), 'guest.stop');
      for (let i = 0; i < 200 && pid && existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 50));
      return { stopped: true, board: board.name };
    }, (r) => `board ${r.board}: guest and controller stopped`));

  guest.command('upgrade')
    .description('upgrade the guest application of the pair while it serves (on the primary): the backup replaces its clone by the new version (save, boot on the saved state, replay), the pair switches over, the new version is cloned over the previous copy (the commit)')
    .option('--to <descriptor|package>', 'the new version: a guest descriptor (the same path on both boards), or a signed package (.usp) holding guests/<name>.json and its images, which is unpacked on both boards')
    .option('--hold', 'stop after the switchover: the other board keeps the previous version as the backup copy until --commit or --rollback')
    .option('--commit', 'commit a held upgrade: the new version is cloned over the previous copy')
    .option('--rollback', 'roll a held upgrade back (on the primary): switch over to the previous copy, which is then cloned back')
    .option('--board <file>', 'board profile')
    .action(action(async (o: OutputOptions & { board?: string; to?: string; hold?: boolean; commit?: boolean; rollback?: boolean }) => {
      if ([o.to !== undefined, o.commit === true, o.rollback === true].filter(Boolean).length !== 1) {
        throw new UsError('US_ERR_CONTROL', 'guest upgrade: give exactly one of --to <descriptor|package>, --commit, --rollback');
      }
      // A signed package (its magic bytes) is unpacked by the controllers; a descriptor is checked here, before anything starts.
      const pkg = o.to !== undefined && isPackageFile(o.to) ? resolve(o.to) : undefined;
      const target = o.to === undefined || pkg ? undefined : loadGuestDescriptor(o.to);
      const sock = await controlSocketOf(o.board);
      return guestUpgradeWithProgress(sock, { guestFile: target?.sourceFile, package: pkg, hold: o.hold === true, commit: o.commit === true, rollback: o.rollback === true },
        (line) => { if (!o.json) process.stderr.write(`${line}\n`); });
    }, (r, o) => (o.commit ? `upgrade committed: ${JSON.stringify(r.committed ?? r.commit)}`
      : o.rollback ? `rolled back from ${r.rolledBackFrom}: the partner's previous copy serves; it is cloned back to this board`
        : r.awaitingCommit ? `guest switched over from ${r.from} to ${r.to} (${r.replayed} inputs replayed); this board keeps ${r.from} as the backup copy: --commit or --rollback`
          : `guest upgraded from ${r.from} to ${r.to} in ${Math.round(r.durationMs / 1000)} s (${r.replayed} inputs replayed to the new version); the pair is protected`)));

  guest.command('manage <command...>')
    .description('send a management command to the guest application: PING, STATE, SAVE, HANG (fault injection)')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts, words: string[]) => (await callControl(controlSocketPath(boardOf(o)), 'guest.manage', { command: words.join(' ') })) as { reply: string },
      (r) => r.reply));

  guest.command('console')
    .description('attach to the guest serial console (Ctrl-] to detach), or print its log with --tail')
    .option('--board <file>', 'board profile')
    .option('--tail <lines>', 'print the last lines of the console log instead of attaching', (v) => Number.parseInt(v, 10))
    .action(action(async (o: Opts & { tail?: number }) => {
      const board = boardOf(o);
      const log = join(board.storageDir, 'qemu', 'console.log');
      const sock = join(board.storageDir, 'qemu', 'console.sock');
      if (o.tail !== undefined || o.json || !process.stdin.isTTY) {
        const n = o.tail ?? 20;
        // QEMU's user writes that folder: read the log's last MiB without following a symlink or waiting on a FIFO.
        const size = existsSync(log) ? lstatSync(log).size : 0;
        const lines = readFrom(log, Math.max(0, size - 1048576)).split(/\r?\n/).filter(Boolean).slice(-n);
        print(o, { board: board.name, log, socket: sock, lines }, () => lines.join('\n'));
        return;
      }
      await attachConsole(sock);
    }));
}

/** Interactive attach, like conserver: raw terminal, Ctrl-] detaches. */
async function attachConsole(socketPath: string): Promise<void> {
  const sock = connect(socketPath);
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', () => resolve());
    sock.once('error', (e) => reject(new UsError('US_ERR_NOT_RUNNING', `guest console ${socketPath}: ${e.message}`)));
  });
  await attachTerminal(sock, 'the guest console');
}

/** Pipes this terminal to a stream in raw mode until Ctrl-] (or the stream closes). */
export async function attachTerminal(sock: NodeJS.ReadWriteStream & { destroy(): void; once(ev: 'close', fn: () => void): unknown }, what: string): Promise<void> {
  process.stderr.write(`[attached to ${what}; Ctrl-] to detach]\r\n`);
  process.stdin.setRawMode(true);
  process.stdin.resume();
  sock.pipe(process.stdout);
  await new Promise<void>((resolve) => {
    process.stdin.on('data', (d: Buffer) => {
      const esc = d.indexOf(0x1d);
      if (esc >= 0) {
        if (esc > 0) sock.write(d.subarray(0, esc));
        resolve();
        return;
      }
      sock.write(d);
    });
    sock.once('close', () => resolve());
  });
  process.stdin.setRawMode(false);
  process.stdin.pause();
  sock.destroy();
  process.stderr.write('\r\n[detached]\r\n');
}
