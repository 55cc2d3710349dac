/**
 * A fake hypervisor for unit tests (a public test double, like the fake QMP server it runs on):
 * a real QmpClient talking to a FakeQmpServer whose handlers keep a run state and script a
 * migration, so code written against the Hypervisor seam runs the same path it runs on QEMU.
 * Never used by the product itself.
 */
import { QmpClient, type QmpEvent } from '../qmp/client.js';
import { FakeQmpServer } from '../qmp/fake-server.js';
import type { Hypervisor } from './types.js';

/** How the next `migrate` goes, as seen through query-migrate. */
export interface FakeMigrationScript {
  /** Guest RAM to copy, bytes. Default 64 MiB. */
  totalBytes?: number;
  /** query-migrate answers until the copy completes (each one reports a share of totalBytes). Default 4. */
  polls?: number;
  /** The guest's pause, reported as `downtime` once completed, ms. Default 12. */
  downtimeMs?: number;
  /** Fail instead: this query-migrate answer (1-based) says "failed" with `errorDesc`. */
  failAtPoll?: number;
  /** Refuse the `background-snapshot` capability (a QEMU or kernel without it). */
  noSnapshot?: boolean;
  /** A snapshot copy: ms from `migrate` to its STOP event (QEMU's setup; default at once, timestamps fixed). */
  setupMs?: number;
  errorDesc?: string;
  /** Run state left behind by a failure (QEMU leaves a source stopped for the last pass paused). Default 'paused'. */
  stateAfterFailure?: string;
}

export class FakeHypervisor implements Hypervisor {
  readonly qmp = new QmpClient({ commandTimeoutMs: 2000 });
  /** How the next `migrate` goes. */
  script: FakeMigrationScript = {};
  /** The last `migrate`: the URI it was given, its status, the query-migrate answers so far. */
  migration: { uri?: string; status?: string; polls: number } = { polls: 0 };
  /** Run state answered by query-status; `cont` and `stop` change it like QEMU does. */
  runState = 'running';
  /** What query-kvm answers: whether KVM runs the guest (false: TCG, as on the test machines). */
  kvmEnabled = false;
  /** The run state when `migrate` was given (a TCG copy stops the guest first). */
  runStateAtMigrate?: string;
  vcpuTid = 4242;
  /** The `background-snapshot` capability as last set. */
  snapshotCapability = false;
  private exited = false;

  private constructor(readonly server: FakeQmpServer, readonly pid: number) {
    const h = server.handlers;
    h.set('query-status', () => ({ status: this.runState, running: this.runState === 'running' }));
    h.set('query-cpus-fast', () => [{ 'cpu-index': 0, 'thread-id': this.vcpuTid }]);
    h.set('cont', () => { this.runState = 'running'; return {}; });
    h.set('stop', () => { this.runState = 'paused'; return {}; });
    h.set('query-kvm', () => ({ enabled: this.kvmEnabled, present: this.kvmEnabled }));
    h.set('migrate-set-capabilities', (args) => {
      for (const c of (args?.capabilities ?? []) as Array<{ capability: string; state: boolean }>) {
        if (c.capability !== 'background-snapshot') continue;
        if (this.script.noSnapshot && c.state) return { error: { class: 'GenericError', desc: 'Background-snapshot is not supported by host kernel' } };
        this.snapshotCapability = c.state;
      }
      return {};
    });
    h.set('migrate-set-parameters', () => ({}));
    h.set('query-migrate-capabilities', () => [{ capability: 'events', state: true }, { capability: 'background-snapshot', state: this.snapshotCapability }]);
    h.set('migrate', (args) => {
      if (this.migration.status === 'active') return { error: { class: 'GenericError', desc: 'There\'s a migration process in progress' } };
      this.migration = { uri: String(args?.uri), status: 'active', polls: 0 };
      this.runStateAtMigrate = this.runState;
      // A snapshot copy: QEMU pauses the guest for an instant at the start and runs it through the copy.
      const setup = this.script.setupMs;
      if (this.snapshotCapability && setup === undefined) setImmediate(() => { this.server.emitEvent('STOP'); this.server.emitEvent('RESUME'); });
      else if (this.snapshotCapability) setTimeout(() => { const t = Date.now(); this.server.emitEvent('STOP', undefined, t); this.server.emitEvent('RESUME', undefined, t + 2); }, setup);
      return {};
    });
    h.set('query-migrate', () => this.queryMigrate());
    h.set('migrate_cancel', () => {
      if (this.migration.status === 'active') { this.migration.status = 'cancelled'; this.runState = 'running'; }
      return {};
    });
  }

  /** Listens on `socketPath` and connects to it. `pid` defaults to this process (its threads are real). */
  static async start(socketPath: string, pid = process.pid): Promise<FakeHypervisor> {
    const server = new FakeQmpServer(socketPath);
    await server.listen();
    const hv = new FakeHypervisor(server, pid);
    await hv.qmp.connect(socketPath);
    return hv;
  }

  get alive(): boolean {
    return !this.exited;
  }

  onEvent(fn: (e: QmpEvent) => void): () => void {
    this.qmp.on('event', fn);
    return () => { this.qmp.off('event', fn); };
  }

  async status(): Promise<string> {
    return (await this.qmp.execute<{ status: string }>('query-status')).status;
  }

  async vcpuThreadId(): Promise<number> {
    const cpus = await this.qmp.execute<Array<{ 'cpu-index': number; 'thread-id': number }>>('query-cpus-fast');
    return cpus[0]!['thread-id'];
  }

  /** QMP commands received, by name, in order (qmp_capabilities left out). */
  get commands(): string[] {
    return this.server.received.map((r) => r.execute).filter((c) => c !== 'qmp_capabilities');
  }

  /** The process exits: QMP goes away with it. */
  async exit(): Promise<void> {
    this.exited = true;
    this.qmp.close();
    await this.server.close();
  }

  private queryMigrate(): Record<string, unknown> {
    const m = this.migration;
    if (!m.status) return {};
    const s = this.script;
    const total = s.totalBytes ?? 64 * 1048576;
    const polls = s.polls ?? 4;
    if (m.status === 'active') {
      m.polls++;
      if (s.failAtPoll !== undefined && m.polls >= s.failAtPoll) {
        m.status = 'failed';
        this.runState = s.stateAfterFailure ?? 'paused';
      } else if (m.polls >= polls) {
        m.status = 'completed';
        if (!this.snapshotCapability) this.runState = 'postmigrate';
      }
    }
    const transferred = m.status === 'completed' ? total : Math.round((total * Math.min(m.polls, polls - 1)) / polls);
    if (m.status === 'failed') return { status: 'failed', 'error-desc': s.errorDesc ?? 'fake failure' };
    if (m.status === 'cancelled') return { status: 'cancelled' };
    return {
      status: m.status,
      ram: { transferred, total, remaining: total - transferred },
      ...(m.status === 'completed' ? { downtime: s.downtimeMs ?? 12 } : {}),
    };
  }
}
