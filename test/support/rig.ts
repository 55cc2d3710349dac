/**
 * Test rig for integration tests: a board profile of its own per test (temporary storage, its own
 * loopback address), the stand-in AUTH service, and a real controller started exactly as
 * `understudy guest start` does. Cleans up only what it started, by pid.
 */
import { execFile } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { startDaemonInBackground } from '../../src/cli/guest-commands.js';
import { Hlr } from '../../src/sim/hlr.js';
import { UdpClient } from '../../src/sim/udp-client.js';

const run = promisify(execFile);

/** `dir`, made mode 0711: searchable by QEMU's user (board profile qemuUser), not listable. */
export function searchable(dir: string): string {
  chmodSync(dir, 0o711);
  return dir;
}
let nextNet = 0;

export interface RigOptions {
  /** Changes to the sim-a profile. */
  board?: (b: Record<string, any>) => void;
  /** Changes to the dx-legacy descriptor. */
  guest?: (g: Record<string, any>) => void;
  withHlr?: boolean;
}

export class Rig {
  /** Mode 0711 (mkdtemp makes 0700): the board's QEMU user must pass through it to <storageDir>/qemu. */
  readonly dir = searchable(mkdtempSync(join(tmpdir(), 'us-rig-')));
  readonly boardFile = join(this.dir, 'board.json');
  readonly guestFile = join(this.dir, 'guest.json');
  readonly board: Record<string, any>;
  guest: Record<string, any>;
  hlr?: Hlr;
  daemonPid?: number;
  client?: UdpClient;

  constructor(o: RigOptions = {}) {
    // Each rig gets its own 127.0.<n>.0/24 so parallel or leftover runs never collide.
    const net = 30 + ((process.pid + nextNet++) % 200);
    this.board = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board', 'sim-a.json'), 'utf8'));
    this.board.storageDir = join(this.dir, 'store');
    // A board on its own: no partner, no HA, no board watchdog or fencing.
    for (const k of ['ha', 'partner', 'watchdog', 'fencing', 'console', 'metrics']) delete this.board[k];
    this.board.service = { address: `127.0.${net}.1`, port: 5000 };
    this.board.externalServices = { auth: { address: `127.0.${net}.100`, port: 7000 } };
    o.board?.(this.board);
    writeFileSync(this.boardFile, JSON.stringify(this.board, null, 2));
    this.guest = this.useGuest('dx-legacy.json', o.guest);
  }

  /**
   * Makes a shipped descriptor (guests/<file>) the one the next startDaemon() boots, with its image
   * paths made absolute and `change` applied. The board, its storage and the state disk stay.
   */
  useGuest(file: string, change?: (g: Record<string, any>) => void): Record<string, any> {
    const g = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'guests', file), 'utf8')) as Record<string, any>;
    for (const k of ['kernel', 'initrd'] as const) g.image[k] = join(PACKAGE_ROOT, 'guests', g.image[k]);
    change?.(g);
    writeFileSync(this.guestFile, JSON.stringify(g, null, 2));
    this.guest = g;
    return g;
  }

  /** Stops the controller this rig started (SIGTERM, then SIGKILL), keeping the board's storage. */
  async stopDaemon(): Promise<void> {
    const pid = this.daemonPid;
    this.daemonPid = undefined;
    if (!pid || !alive(pid)) return;
    process.kill(pid, 'SIGTERM');
    await waitGone(pid, 10000);
    if (alive(pid)) process.kill(pid, 'SIGKILL');
    await waitGone(pid, 5000);
  }

  get store(): string {
    return this.board.storageDir as string;
  }

  async startHlr(deny = /^blocked/): Promise<Hlr> {
    this.hlr = new Hlr({ ...this.board.externalServices.auth, deny });
    await this.hlr.start();
    return this.hlr;
  }

  /** The AUTH stand-in, the controller and a client of the service address: a board serving its guest. */
  async startServing(): Promise<UdpClient> {
    await this.startHlr();
    await this.startDaemon();
    this.client = await new UdpClient(this.board.service as { address: string; port: number }).open();
    return this.client;
  }

  /** What this board's journal holds of `kind`, oldest first (read from its SQLite file; the controller may be down). */
  journal(kind: string): string[] {
    const db = new Database(join(this.store, 'understudy.db'), { readonly: true });
    try {
      return (db.prepare('SELECT message FROM events WHERE kind = ? ORDER BY id').all(kind) as Array<{ message: string }>).map((r) => r.message);
    } finally {
      db.close();
    }
  }

  async startDaemon(): Promise<number> {
    this.daemonPid = await startDaemonInBackground(this.boardFile, this.guestFile, 120000);
    return this.daemonPid;
  }

  /** Runs the CLI as a user would, returning exit code, stdout and stderr. */
  async cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const r = await run(process.execPath, [join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js'), ...args], { timeout: 180000 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const x = e as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof x.code === 'number' ? x.code : -1, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
    }
  }

  async cliJson<T = any>(...args: string[]): Promise<T> {
    const r = await this.cli(...args, '--json');
    if (r.code !== 0) throw new Error(`understudy ${args.join(' ')} failed (${r.code}): ${r.stdout}${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  qemuPid(): number | undefined {
    const f = join(this.store, 'qemu.pid');
    return existsSync(f) ? Number.parseInt(readFileSync(f, 'utf8'), 10) : undefined;
  }

  async cleanup(): Promise<void> {
    const qemu = this.qemuPid();
    this.client?.close();
    await this.stopDaemon();
    // Only a QEMU this rig's controller started (its command line names our storage dir).
    if (qemu && alive(qemu) && readFileSync(`/proc/${qemu}/cmdline`, 'utf8').includes(this.store)) process.kill(qemu, 'SIGKILL');
    this.hlr?.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return existsSync(`/proc/${pid}`) && !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

/** Waits (bounded) until a pid is gone; returns whether it is. */
export async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !alive(pid);
}

/** Polls `check` until it returns a value, bounded by count and time. */
export async function eventually<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs: number, everyMs = 200): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (let i = 0; i < 100000 && Date.now() < end; i++) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`condition not met within ${timeoutMs} ms${last ? `: ${String(last)}` : ''}`);
}
