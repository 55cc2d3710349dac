/**
 * Migration of the running guest out of its hypervisor, to wherever a URI points: a clone to the
 * partner (`unix:` relay) or a checkpoint to a file (migrateToFile: QEMU writes to a unix socket
 * this process listens on and Node writes the file; a restore reads one back by handing the file to
 * a new QEMU as a descriptor when it starts, `-incoming fd:3`: QemuOptions.incomingFile). No shell:
 * QEMU 7.2's `exec:` URIs run `/bin/sh -c`, it has no `file:` URI, and an outgoing `fd:` needs a
 * descriptor passed over QMP with SCM_RIGHTS, which Node cannot do. One
 * typed helper over QMP (query-kvm, stop, migrate-set-capabilities, migrate-set-parameters,
 * migrate, query-migrate, migrate_cancel, cont), written against the Hypervisor seam. Knows nothing
 * of what the copy is for: callers resume the source, record and report.
 *
 * Live (the guest runs while its RAM goes over) only under KVM. Under TCG the guest is stopped
 * before the copy starts: QEMU's TCG dirty tracking loses guest writes during a live migration.
 * Collecting the dirty bitmap clears the migration bits without resetting the not-dirty flags of
 * the TCG TLB (the word-aligned fast path of cpu_physical_memory_sync_dirty_bitmap), so a write
 * through a TLB entry filled while its page was dirty is never tracked again and the copy keeps the
 * page's older contents. Fixed upstream in March 2024 (QEMU commit 03bfc2188f, "physmem: Fix
 * migration dirty bitmap coherency with TCG memory access", 9.0), with other lost-tracking races
 * reported in the same thread; Debian 12's QEMU 7.2 has the flaw. Seen here as clones whose kernel
 * died minutes later (list corruption in the scheduler, a preempt count one hardirq short: a
 * per-CPU page sent before the interrupt entry that changed it). KVM's dirty log is not affected.
 */
import { createWriteStream, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { UsError } from '../../core/errors.js';
import type { Hypervisor } from './types.js';

/**
 * The guest may pause for at most this long while the last dirty pages go over, ms (QEMU's
 * `downtime-limit`); the bandwidth is not throttled below what a blade's memory bus does.
 */
const DOWNTIME_LIMIT_MS = 20;
const MAX_BANDWIDTH_BYTES_PER_S = 4 * 1024 ** 3;

export interface MigrationOptions {
  /** Where the stream goes: `unix:<path>` (never `exec:`: that runs a shell). */
  uri: string;
  /** Period of the query-migrate polls, ms. */
  pollMs: number;
  /** Start of the error when QEMU reports the migration failed or cancelled: `<errorPrefix> failed: <QEMU's error-desc>`. */
  errorPrefix: string;
  /** Called once the capabilities and parameters are set, just before the migration starts. */
  onStart?: () => void;
  /**
   * Awaited after onStart, before a plain copy's stop and QEMU's migrate: the caller's last
   * step before the copy's cut (a clone holds and drains its inputs here, so they wait only for the
   * migration's start, not for the QMP round trips that set it up).
   */
  beforeMigrate?: () => Promise<void>;
  /** Called at every poll that reports RAM figures. */
  onProgress?: (p: MigrationProgress) => void;
  /** Live or stopped copy; default: live under KVM only (see liveCopySafe). Ignored for a snapshot copy. */
  live?: boolean;
  /**
   * A snapshot copy (QEMU's `background-snapshot`, QEMU 6.0+, a kernel with userfaultfd
   * write-protect): the stream holds the guest as it was at the copy's start, and the guest runs
   * through the copy. QEMU pauses it for an instant at the start (it saves the devices and
   * write-protects RAM), resumes it, and from then on copies each page before the guest's first
   * write to it. RAM goes through userfaultfd, not the dirty bitmap that loses TCG's writes (above),
   * so it is exact under TCG too. Block devices are NOT copied (no `blk`): block migration takes
   * QEMU's big lock to read the disk, and a device that writes guest RAM under that lock (the NIC
   * receiving a frame) waits for the copy of that page, which never comes while the lock is held:
   * QEMU 7.2 hung so on the chassis under load, QMP unanswered. The caller sees to the disk (the
   * reference guest writes it only on the controller's SAVE). `onResumed`: called once the guest
   * runs again after that instant, with the pause (ms, from QEMU's STOP and RESUME events) and QEMU's
   * setup before it (ms, from the `migrate` command to STOP: mostly QEMU reading a byte of every
   * guest page under its big lock, docs/replication.md); anything the guest is given before it may
   * or may not be in the copy. If QEMU refuses the capability the
   * copy is a stopped or live one as without this option (`MigrationResult.snapshot` false) and
   * `onResumed` is never called.
   */
  snapshot?: { onResumed(pauseMs: number, setupMs: number | null): void };
}

export interface MigrationProgress {
  transferredBytes: number;
  totalBytes: number;
}

export interface MigrationResult {
  /**
   * How long the guest was paused, ms: a live copy, QEMU's own measure (query-migrate `downtime`,
   * null if it gave none); a stopped copy, from the `stop` to the completion (the caller's `cont`
   * follows at once).
   */
  downtimeMs: number | null;
  /** Whether the guest ran during the copy. */
  live: boolean;
  /** Whether it was a snapshot copy (the stream holds the guest as at the copy's start; the source runs on). */
  snapshot: boolean;
  /** RAM sent, bytes. */
  transferredBytes: number;
}

/**
 * Migrates the running guest to `uri` and resolves once QEMU reports it completed. The source is
 * then stopped (`postmigrate`): the caller resumes it with `cont` when it continues, after reading
 * whatever must match the stopped copy. Rejects with US_ERR_HYPERVISOR when QEMU reports the
 * migration failed or cancelled (and with the QMP error when a command fails); the caller then
 * calls recoverFromMigration().
 */
export async function migrate(hv: Hypervisor, o: MigrationOptions): Promise<MigrationResult> {
  // A capability QEMU keeps between migrations: set either way (a checkpoint after a clone is a plain
  // copy). Refused by a QEMU or kernel without it: a plain copy then.
  const snapshot = await hv.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'background-snapshot', state: !!o.snapshot }] })
    .then(() => !!o.snapshot, () => false);
  const live = snapshot || (o.live ?? liveCopySafe(await hv.qmp.execute<{ enabled?: boolean }>('query-kvm').then((k) => k.enabled === true, () => false)));
  await hv.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  await hv.qmp.execute('migrate-set-parameters', { 'downtime-limit': DOWNTIME_LIMIT_MS, 'max-bandwidth': MAX_BANDWIDTH_BYTES_PER_S });
  o.onStart?.();
  await o.beforeMigrate?.();
  let stoppedAt = 0;
  if (!live) {
    await hv.qmp.execute('stop');
    stoppedAt = performance.now();
  }
  // The snapshot's instant: QEMU's STOP then RESUME once the migration began (QEMU's timestamps).
  let pausedAt: number | undefined;
  let pauseMs: number | null = null;
  let issuedAt = 0;
  const off = snapshot ? hv.onEvent((e) => {
    const t = e.timestamp ? e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000 : Date.now();
    if (e.event === 'STOP' && pausedAt === undefined) pausedAt = t;
    else if (e.event === 'RESUME' && pausedAt !== undefined && pauseMs === null) {
      pauseMs = Math.round((t - pausedAt) * 100) / 100;
      o.snapshot!.onResumed(pauseMs, issuedAt ? Math.max(0, Math.round(pausedAt - issuedAt)) : null);
    }
  }) : undefined;
  try {
    issuedAt = Date.now(); // QEMU's event timestamps are the host's wall clock
    await hv.qmp.execute('migrate', { uri: o.uri, blk: !snapshot });
    for (;;) {
      const info = await hv.qmp.execute<Record<string, any>>('query-migrate');
      const ram = info.ram as { transferred?: number; total?: number } | undefined;
      if (ram?.total) o.onProgress?.({ transferredBytes: ram.transferred ?? 0, totalBytes: ram.total });
      if (info.status === 'completed') {
        const downtimeMs = snapshot ? pauseMs : live ? (typeof info.downtime === 'number' ? info.downtime : null) : Math.round(performance.now() - stoppedAt);
        return { downtimeMs, live, snapshot, transferredBytes: ram?.transferred ?? 0 };
      }
      if (info.status === 'failed' || info.status === 'cancelled') throw new UsError('US_ERR_HYPERVISOR', `${o.errorPrefix} ${info.status}: ${info['error-desc'] ?? ''}`);
      await sleep(o.pollMs);
    }
  } finally {
    off?.();
  }
}

/**
 * Whether the guest may run while its RAM is copied by a plain (not snapshot) copy: only under KVM
 * (`kvm`: QMP query-kvm says it is enabled). Under TCG a live copy loses writes (see the top of this
 * file), so the guest is stopped for the whole copy. That costs clients nothing more: a plain clone
 * holds inputs for the whole copy anyway and a checkpoint pauses delivery to the backup's copy; only
 * the guest's own clock sees the longer pause.
 */
export function liveCopySafe(kvm: boolean): boolean {
  return kvm;
}

/**
 * After a failed migration, or a failure around one: with `cancelActive`, cancels a migration QEMU
 * may still be running; then resumes a source left stopped (`postmigrate` or `paused`), so the
 * guest serves on. Does nothing once the hypervisor has exited; never throws.
 */
export async function recoverFromMigration(hv: Hypervisor, o: { cancelActive: boolean; snapshotWaitMs?: number }): Promise<void> {
  if (!hv.alive) return;
  if (o.cancelActive) {
    // A snapshot copy is never cancelled: QEMU 7.2 leaves the guest's RAM write-protected after a
    // snapshot migration that fails or is cancelled, and the vCPU then waits forever in the kernel
    // (handle_userfault) at its next write to a page not yet copied: seen here, a hung guest. It is
    // left to complete (the clone's relay drains it when the partner is gone), waited for up to
    // snapshotWaitMs (default 120 s; then cancelled after all).
    const snapshot = await snapshotMigrationActive(hv);
    let running = snapshot;
    const end = performance.now() + (o.snapshotWaitMs ?? 120_000);
    while (running && hv.alive && performance.now() < end) {
      await sleep(50);
      running = await snapshotMigrationActive(hv);
    }
    if ((!snapshot || running) && hv.alive) await hv.qmp.execute('migrate_cancel').catch(() => undefined);
  }
  const state = await hv.status().catch(() => '');
  if (state === 'postmigrate' || state === 'paused') await hv.qmp.execute('cont').catch(() => undefined);
}

/** A snapshot copy is under way (QEMU's background-snapshot capability on, a migration set up or active). */
async function snapshotMigrationActive(hv: Hypervisor): Promise<boolean> {
  const info = await hv.qmp.execute<{ status?: string }>('query-migrate').catch(() => ({} as { status?: string }));
  if (info.status !== 'setup' && info.status !== 'active') return false;
  const caps = await hv.qmp.execute<Array<{ capability: string; state: boolean }>>('query-migrate-capabilities').catch(() => []);
  return caps.some((c) => c.capability === 'background-snapshot' && c.state);
}

/**
 * Migrates the running guest into `file` (created, mode 0600; it must not exist) with no shell:
 * QEMU connects to a unix socket at `socketPath` that this process listens on, and the stream is
 * written to the file from here. Resolves once QEMU reports completion AND the whole stream is on
 * disk (not yet fsynced: the caller does that before it renames). On failure the file is left for
 * the caller to remove. `onListening`: called with the socket once it listens, before QEMU is told to
 * connect (the caller gives it to the user QEMU runs as).
 */
export async function migrateToFile(hv: Hypervisor, file: string, socketPath: string, o: Omit<MigrationOptions, 'uri'> & { onListening?: (socketPath: string) => void }): Promise<MigrationResult> {
  rmSync(socketPath, { force: true });
  const server = createServer();
  let writing: Promise<void> | undefined;
  let conn: Socket | undefined;
  server.on('connection', (sock) => {
    if (writing) { sock.destroy(); return; } // one stream only: whoever comes second gets nothing
    conn = sock;
    writing = pipeline(sock, createWriteStream(file, { flags: 'wx', mode: 0o600 }));
    writing.catch(() => undefined); // awaited below; a failure here must not go unhandled meanwhile
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => { server.off('error', reject); resolve(); });
  });
  try {
    o.onListening?.(socketPath);
    const r = await migrate(hv, { ...o, uri: `unix:${socketPath}` });
    if (!writing) throw new UsError('US_ERR_HYPERVISOR', `${o.errorPrefix}: QEMU reported completion but never connected to ${socketPath}`);
    await writing; // QEMU closes its end after the last byte
    return r;
  } catch (e) {
    conn?.destroy();
    await writing?.catch(() => undefined);
    throw e;
  } finally {
    server.close();
    rmSync(socketPath, { force: true });
  }
}
