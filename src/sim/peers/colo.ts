/**
 * QEMU COLO (COarse-grained LOck-stepping, QEMU 7.2: `x-colo`) on the chassis's network, following
 * QEMU's docs/COLO-FT.txt: the primary VM (PVM) serves; every packet it receives is mirrored
 * (filter-mirror) to the secondary VM (SVM) over the partner link; both VMs' output goes to the
 * primary's colo-compare, which releases a packet when the two copies' packets match and starts a
 * checkpoint (the PVM's dirty memory and device state copied into the SVM) when they differ, or
 * every `x-checkpoint-delay` ms otherwise. COLO has no heartbeat of its own: colo-heartbeat.ts is
 * ours; on a lost heartbeat the SVM is told `x-colo-lost-heartbeat` and becomes the primary.
 *
 * Everything COLO adds is added over QMP to a VM started plainly (guest-vm.ts), so the first
 * protection and a re-protection after a failover (the survivor, which keeps its filter-rewriter,
 * becomes the primary of a new SVM on the other board) are the same code.
 *
 * The state disk: not replicated (no replication/quorum drivers). The reference guest writes its
 * disk only on the management command SAVE (a dynamic upgrade), never while it serves, and reads it
 * only at boot, which an SVM never does (it receives the PVM's memory). So both copies of the disk
 * stay identical to the blank image they start from; the bench checks that they still are.
 * Owns its VMs (through ProcessGroups) and their files under `dir`.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Accel } from '../../hw/hypervisor/kvm-probe.js';
import { PACKAGE_ROOT, PLINK_ADDRESS, partnerOf, type BoardName } from '../chassis/layout.js';
import { GuestVm } from './guest-vm.js';
import type { PeerNet } from './net.js';
import type { ProcessGroups } from './procs.js';

/** Ports on the partner link: the mirror to the SVM, the SVM's output to colo-compare, migration. */
const MIRROR_PORT = 9003;
const COMPARE_PORT = 9004;
const MIGRATION_PORT = 9998;
/** QEMU's default x-checkpoint-delay, ms (migration.c: DEFAULT_MIGRATE_X_CHECKPOINT_DELAY). */
export const DEFAULT_CHECKPOINT_DELAY_MS = 20000;

export interface HeartbeatEvent { at: number; event: string; why?: string; message?: string; errors?: string[]; tookMs?: number; silentMs?: number }
const HEARTBEAT_ENTRY = join(PACKAGE_ROOT, 'dist', 'src', 'sim', 'peers', 'colo-heartbeat.js');

export class ColoPair {
  readonly vms: Partial<Record<BoardName, GuestVm>> = {};
  /** Boards whose VM was an SVM once: it carries the filter-rewriter `rew0`. */
  private readonly rewriter = new Set<BoardName>();
  primary?: BoardName;

  constructor(readonly net: PeerNet, private readonly procs: ProcessGroups, readonly dir: string, private readonly accel: Accel, readonly checkpointDelayMs: number, private readonly blankDisk: string) {}

  key(b: BoardName): string {
    return `colo-${b}`;
  }

  boardDir(b: BoardName): string {
    const d = join(this.dir, b);
    mkdirSync(d, { recursive: true, mode: 0o700 });
    return d;
  }

  /** The board's copy of the state disk: the blank image (see the top comment). */
  disk(b: BoardName): string {
    return join(this.boardDir(b), 'state.raw');
  }

  /** The primary's COLO chardevs and objects on its command line (COLO-FT.txt's step 1). */
  primaryArgs(primary: BoardName): string[] {
    const here = PLINK_ADDRESS[primary];
    const pd = this.boardDir(primary);
    return [
      '-chardev', `socket,id=mirror0,host=${here},port=${MIRROR_PORT},server=on,wait=off`,
      '-chardev', `socket,id=compare1,host=${here},port=${COMPARE_PORT},server=on,wait=off`,
      '-chardev', `socket,id=compare0,path=${join(pd, 'compare0.sock')},server=on,wait=off`,
      '-chardev', `socket,id=compare0-0,path=${join(pd, 'compare0.sock')}`,
      '-chardev', `socket,id=compare_out,path=${join(pd, 'compare_out.sock')},server=on,wait=off`,
      '-chardev', `socket,id=compare_out0,path=${join(pd, 'compare_out.sock')}`,
      '-object', 'filter-mirror,id=m0,netdev=hn0,queue=tx,outdev=mirror0',
      '-object', 'filter-redirector,netdev=hn0,id=redire0,queue=rx,indev=compare_out',
      '-object', 'filter-redirector,netdev=hn0,id=redire1,queue=rx,outdev=compare0',
      '-object', 'iothread,id=iothread1',
      '-object', 'colo-compare,id=comp0,primary_in=compare0-0,secondary_in=compare1,outdev=compare_out0,iothread=iothread1',
    ];
  }

  /** The primary's COLO objects added at boot (`atBoot`) rather than over QMP by protect(). */
  private readonly objectsAtBoot = new Set<BoardName>();

  /** Boots the first primary (it serves unprotected until protect()); `coloObjects`: with COLO's objects on its command line. */
  async bootPrimary(b: BoardName, coloObjects = false): Promise<GuestVm> {
    copyFileSync(this.blankDisk, this.disk(b));
    if (coloObjects) this.objectsAtBoot.add(b);
    const vm = await GuestVm.start(this.procs, { key: this.key(b), netns: this.net.boards[b], dir: this.boardDir(b), accel: this.accel, stateDisk: this.disk(b), extra: [...this.heartbeatMonitor(b), ...(coloObjects ? this.primaryArgs(b) : [])] });
    this.vms[b] = vm;
    this.primary = b;
    await vm.waitReady();
    return vm;
  }

  private hbRuns = 0;
  /** The log of the running heartbeat (one JSON line per event). */
  hbLog = '';

  /** Our heartbeat (colo-heartbeat.ts) on the secondary's board, watching `primary`; resolves once it watches. */
  async startHeartbeat(primary: BoardName, timers: { intervalMs: number; deadtimeMs: number }): Promise<void> {
    const secondary = partnerOf(primary);
    this.hbLog = join(this.dir, `heartbeat-${++this.hbRuns}.log`);
    await this.procs.spawnIn('heartbeat', this.net.boards[secondary], process.execPath, [HEARTBEAT_ENTRY, this.heartbeatSocket(primary), this.heartbeatSocket(secondary),
      this.net.boards[primary], this.net.boards[secondary], String(timers.intervalMs), String(timers.deadtimeMs)], this.hbLog);
    await this.waitHeartbeatEvent('watching', 10000);
  }

  heartbeatEvents(): HeartbeatEvent[] {
    if (!this.hbLog || !existsSync(this.hbLog)) return [];
    return readFileSync(this.hbLog, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as HeartbeatEvent);
  }

  async waitHeartbeatEvent(event: string, timeoutMs: number): Promise<HeartbeatEvent> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const ev = this.heartbeatEvents();
      const e = ev.find((x) => x.event === event);
      if (e) return e;
      const err = ev.find((x) => x.event === 'error');
      if (err) throw new Error(`COLO heartbeat: ${err.message}`);
      if (Date.now() > end) throw new Error(`COLO heartbeat: no "${event}" within ${timeoutMs} ms (${this.hbLog})`);
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** A second QMP monitor for the heartbeat (one client per monitor). */
  heartbeatMonitor(b: BoardName): string[] {
    return ['-qmp', `unix:${this.heartbeatSocket(b)},server=on,wait=off`];
  }

  heartbeatSocket(b: BoardName): string {
    return join(this.boardDir(b), 'hb.sock');
  }

  /**
   * Makes `primary`'s running VM the PVM of a new SVM on the other board: the primary's chardevs
   * and filters, the SVM started waiting for the migration stream, x-colo on, migrate; resolves
   * once the primary reports COLO.
   */
  async protect(primary: BoardName): Promise<void> {
    const secondary = partnerOf(primary);
    const pvm = this.vms[primary]!;
    const q = (cmd: string, args?: Record<string, unknown>) => pvm.qmp.execute(cmd, args, 30000);
    const here = PLINK_ADDRESS[primary];
    const unix = (id: string, path: string, server: boolean) => q('chardev-add', { id, backend: { type: 'socket', data: { addr: { type: 'unix', data: { path } }, server, ...(server ? { wait: false } : {}) } } });
    const tcp = (id: string, port: number) => q('chardev-add', { id, backend: { type: 'socket', data: { addr: { type: 'inet', data: { host: here, port: String(port) } }, server: true, wait: false } } });
    if (this.objectsAtBoot.has(primary)) this.objectsAtBoot.delete(primary);
    else await this.addPrimaryObjects(primary, unix, tcp, q);

    copyFileSync(this.blankDisk, this.disk(secondary));
    const svm = await GuestVm.start(this.procs, {
      key: this.key(secondary), netns: this.net.boards[secondary], dir: this.boardDir(secondary), accel: this.accel, stateDisk: this.disk(secondary),
      incoming: `tcp:${PLINK_ADDRESS[secondary]}:${MIGRATION_PORT}`,
      extra: [
        ...this.heartbeatMonitor(secondary),
        '-chardev', `socket,id=red0,host=${here},port=${MIRROR_PORT},reconnect=1`,
        '-chardev', `socket,id=red1,host=${here},port=${COMPARE_PORT},reconnect=1`,
        '-object', 'filter-redirector,id=f1,netdev=hn0,queue=tx,indev=red0',
        '-object', 'filter-redirector,id=f2,netdev=hn0,queue=rx,outdev=red1',
        '-object', 'filter-rewriter,id=rew0,netdev=hn0,queue=all',
      ],
    });
    this.vms[secondary] = svm;
    this.rewriter.add(secondary);
    await svm.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-colo', state: true }] });
    await q('migrate-set-parameters', { 'x-checkpoint-delay': this.checkpointDelayMs });
    await q('migrate-set-capabilities', { capabilities: [{ capability: 'x-colo', state: true }] });
    await q('migrate', { uri: `tcp:${PLINK_ADDRESS[secondary]}:${MIGRATION_PORT}` });
    await this.waitColo(primary);
  }

  /**
   * The primary goes on alone (COLO-FT.txt, "Primary Failover"): the SVM killed (its board off, say),
   * the primary's COLO objects and chardevs removed, `x-colo-lost-heartbeat` on the primary.
   */
  async dropSecondary(primary: BoardName): Promise<void> {
    await this.procs.kill(this.key(partnerOf(primary)));
    delete this.vms[partnerOf(primary)];
    const q = (cmd: string, args?: Record<string, unknown>) => this.vms[primary]!.qmp.execute(cmd, args, 30000);
    await q('x-colo-lost-heartbeat');
    for (const id of ['comp0', 'iothread1', 'm0', 'redire0', 'redire1']) await q('object-del', { id });
    for (const id of ['compare0-0', 'compare0', 'compare_out0', 'compare_out', 'mirror0', 'compare1']) await q('chardev-remove', { id });
    await this.waitMode(primary, 'none');
  }

  private async addPrimaryObjects(primary: BoardName, unix: (id: string, path: string, server: boolean) => Promise<unknown>, tcp: (id: string, port: number) => Promise<unknown>, q: (cmd: string, args?: Record<string, unknown>) => Promise<unknown>): Promise<void> {
    const pd = this.boardDir(primary);
    await unix('compare0', join(pd, 'compare0.sock'), true);
    await unix('compare0-0', join(pd, 'compare0.sock'), false);
    await unix('compare_out', join(pd, 'compare_out.sock'), true);
    await unix('compare_out0', join(pd, 'compare_out.sock'), false);
    await tcp('mirror0', MIRROR_PORT);
    await tcp('compare1', COMPARE_PORT);
    const before = this.rewriter.has(primary) ? { insert: 'before', position: 'id=rew0' } : {};
    await q('object-add', { 'qom-type': 'filter-mirror', id: 'm0', netdev: 'hn0', queue: 'tx', outdev: 'mirror0', ...before });
    await q('object-add', { 'qom-type': 'filter-redirector', id: 'redire0', netdev: 'hn0', queue: 'rx', indev: 'compare_out', ...before });
    await q('object-add', { 'qom-type': 'filter-redirector', id: 'redire1', netdev: 'hn0', queue: 'rx', outdev: 'compare0', ...before });
    await q('object-add', { 'qom-type': 'iothread', id: 'iothread1' });
    await q('object-add', { 'qom-type': 'colo-compare', id: 'comp0', primary_in: 'compare0-0', secondary_in: 'compare1', outdev: 'compare_out0', iothread: 'iothread1' });

  }

  /** Waits (bounded) until `query-colo-status` on `b` says `mode`. */
  async waitMode(b: BoardName, mode: string, timeoutMs = 30000): Promise<void> {
    const end = Date.now() + timeoutMs;
    let last = { mode: '?', reason: '?' };
    while (Date.now() < end) {
      last = await this.coloStatus(b);
      if (last.mode === mode) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`${b}: COLO mode ${last.mode} (reason ${last.reason}), not ${mode}, after ${timeoutMs} ms`);
  }

  /** Waits (bounded) until the primary's migration is in state `colo`; throws with QEMU's own words otherwise. */
  async waitColo(primary: BoardName, timeoutMs = 120000): Promise<void> {
    const end = Date.now() + timeoutMs;
    let last: Record<string, unknown> = {};
    while (Date.now() < end) {
      last = (await this.vms[primary]!.qmp.execute('query-migrate')) as Record<string, unknown>;
      if (last.status === 'colo') return;
      if (last.status === 'failed' || last.status === 'cancelled') break;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`COLO did not start: query-migrate on the primary says ${JSON.stringify(last)}`);
  }

  /** The primary's and secondary's view: `query-colo-status`. */
  async coloStatus(b: BoardName): Promise<{ mode: string; reason: string }> {
    return (await this.vms[b]!.qmp.execute('query-colo-status')) as { mode: string; reason: string };
  }
}
