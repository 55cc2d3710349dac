/**
 * The hypervisor seam: what the layers above a running guest (replication's clone and checkpoint,
 * the migration helper) use of the process hosting it. QemuProcess (qemu.ts) is the real one;
 * FakeHypervisor (fake.ts) answers over the fake QMP server for unit tests. Launching, pinning and
 * stopping stay with the guest supervisor, which owns the concrete process.
 */

import type { QmpEvent } from '../qmp/client.js';

/** The QMP commands channel: the protocol, not a method per command (see hw/qmp/client.ts). */
export interface HypervisorCommands {
  /** Runs one QMP command; resolves with its `return`, rejects with US_ERR_QMP* on an error or timeout. */
  execute<T = unknown>(command: string, args?: Record<string, unknown>, timeoutMs?: number): Promise<T>;
}

export interface Hypervisor {
  readonly qmp: HypervisorCommands;
  /** Process id of the hypervisor (its threads are under /proc/<pid>/task). */
  readonly pid: number;
  /** False once the process has exited. */
  readonly alive: boolean;
  /** QEMU's run state (`running`, `paused`, `postmigrate`, `inmigrate`, …) from query-status. */
  status(): Promise<string>;
  /** Thread id of the guest's single vCPU. */
  vcpuThreadId(): Promise<number>;
  /** Calls `fn` with every QMP event (STOP, RESUME, MIGRATION, …) until the returned function is called. */
  onEvent(fn: (e: QmpEvent) => void): () => void;
}
