/**
 * Live migration of the running guest out of its hypervisor, to wherever a URI points: a clone to
 * the partner (`unix:` relay) or a checkpoint to a file (`exec:cat > …`). One typed helper over
 * QMP (migrate-set-capabilities, migrate-set-parameters, migrate, query-migrate, migrate_cancel,
 * cont), written against the Hypervisor seam. Knows nothing of what the copy is for: callers
 * resume the source, record and report.
 */
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
  /** Where the stream goes: `unix:<path>`, `exec:<command>`, … */
  uri: string;
  /** Period of the query-migrate polls, ms. */
  pollMs: number;
  /** Start of the error when QEMU reports the migration failed or cancelled: `<errorPrefix> failed: <QEMU's error-desc>`. */
  errorPrefix: string;
  /** Called once the capabilities and parameters are set, just before the migration starts. */
  onStart?: () => void;
  /** Called at every poll that reports RAM figures. */
  onProgress?: (p: MigrationProgress) => void;
}

export interface MigrationProgress {
  transferredBytes: number;
  totalBytes: number;
}

export interface MigrationResult {
  /** How long the guest was paused, QEMU's own measure (query-migrate `downtime`), ms; null if it gave none. */
  downtimeMs: number | null;
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
  await hv.qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'events', state: true }] });
  await hv.qmp.execute('migrate-set-parameters', { 'downtime-limit': DOWNTIME_LIMIT_MS, 'max-bandwidth': MAX_BANDWIDTH_BYTES_PER_S });
  o.onStart?.();
  await hv.qmp.execute('migrate', { uri: o.uri, blk: true });
  for (;;) {
    const info = await hv.qmp.execute<Record<string, any>>('query-migrate');
    const ram = info.ram as { transferred?: number; total?: number } | undefined;
    if (ram?.total) o.onProgress?.({ transferredBytes: ram.transferred ?? 0, totalBytes: ram.total });
    if (info.status === 'completed') {
      return { downtimeMs: typeof info.downtime === 'number' ? info.downtime : null, transferredBytes: ram?.transferred ?? 0 };
    }
    if (info.status === 'failed' || info.status === 'cancelled') throw new UsError('US_ERR_HYPERVISOR', `${o.errorPrefix} ${info.status}: ${info['error-desc'] ?? ''}`);
    await sleep(o.pollMs);
  }
}

/**
 * After a failed migration, or a failure around one: with `cancelActive`, cancels a migration QEMU
 * may still be running; then resumes a source left stopped (`postmigrate` or `paused`), so the
 * guest serves on. Does nothing once the hypervisor has exited; never throws.
 */
export async function recoverFromMigration(hv: Hypervisor, o: { cancelActive: boolean }): Promise<void> {
  if (!hv.alive) return;
  if (o.cancelActive) await hv.qmp.execute('migrate_cancel').catch(() => undefined);
  const state = await hv.status().catch(() => '');
  if (state === 'postmigrate' || state === 'paused') await hv.qmp.execute('cont').catch(() => undefined);
}
