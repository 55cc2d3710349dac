/**
 * The reference guest as a peer set-up hosts it: a plain QEMU (the same machine, CPU model, memory,
 * NIC model and state disk as Understudy's guest, src/hw/hypervisor/qemu.ts), but with QEMU's own
 * NIC on a tap in the board's namespace (net.ts: the board forwards the service address's port to
 * it and masquerades its AUTH queries to 192.0.2.200:7000) instead of Understudy's controller.
 * Pinned with taskset to the guest core the board profiles give Understudy's guest (core 1).
 * Owns one QEMU process (through ProcessGroups) and its QMP connection.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { QmpClient } from '../../hw/qmp/client.js';
import { cpuModelFor, type Accel } from '../../hw/hypervisor/kvm-probe.js';
import { AUTH_SERVICE, PACKAGE_ROOT } from '../chassis/layout.js';
import { GUEST_TAP } from './net.js';
import type { ProcessGroups } from './procs.js';

export const GUEST_DESCRIPTOR = join(PACKAGE_ROOT, 'guests', 'dx-legacy.json');
/** Core the board profiles reserve for the guest. */
export const GUEST_CORE = 1;

interface Descriptor {
  image: { kernel: string; initrd: string; append: string };
  memoryMb: number;
  nic: { model: string; mac: string };
  network: { guestAddress: string; controllerAddress: string; netmask: string };
  ports: { service: number; management: number; auth: number; guestAuth?: number };
  watchdog: { timeoutS: number };
  stateDisk: { sizeMb: number };
}

export interface GuestVmOptions {
  /** ProcessGroups key, also the QEMU name. */
  key: string;
  netns: string;
  /** A directory of its own: qmp.sock, console.log, qemu.log. */
  dir: string;
  accel: Accel;
  /** The state disk file (created zeroed if missing). */
  stateDisk: string;
  /** Replaces the default `-drive` (COLO's quorum/replication drives). */
  drive?: string[];
  /** More arguments (COLO's chardevs and filters). */
  extra?: string[];
  /** A migration target: `-incoming <uri>`. */
  incoming?: string;
}

export function loadDescriptor(): Descriptor {
  return JSON.parse(readFileSync(GUEST_DESCRIPTOR, 'utf8')) as Descriptor;
}

/** The same kernel command line as Understudy's guest, but for the AUTH service reached through the NAT. */
export function guestAppend(g: Descriptor): string {
  return ['console=ttyS0', 'quiet', 'ipv6.disable=1', 'oops=panic', 'panic=-1', 'unknown_nmi_panic',
    `dx.ip=${g.network.guestAddress}`, `dx.mask=${g.network.netmask}`, `dx.gw=${g.network.controllerAddress}`,
    `dx.port=${g.ports.service}`, `dx.mport=${g.ports.management}`, `dx.auth=${AUTH_SERVICE.address}:${AUTH_SERVICE.port}`,
    `dx.aport=${g.ports.guestAuth ?? 5001}`, `dx.wdt=${g.watchdog.timeoutS}`, g.image.append].filter(Boolean).join(' ');
}

/** The netdev `hn0`: the board's tap (net.ts), no helper scripts. */
export const TAP_NETDEV = `tap,id=hn0,ifname=${GUEST_TAP},script=no,downscript=no,vhost=off`;

export function guestVmArgs(o: GuestVmOptions, g = loadDescriptor()): string[] {
  const img = (p: string) => resolve(dirname(GUEST_DESCRIPTOR), p);
  return [
    '-name', `${o.key},debug-threads=on`, '-accel', o.accel, '-machine', 'pc', '-cpu', cpuModelFor(o.accel), '-smp', '1', '-m', String(g.memoryMb),
    '-nodefaults', '-no-user-config', '-display', 'none',
    '-qmp', `unix:${join(o.dir, 'qmp.sock')},server=on,wait=off`,
    '-chardev', `file,id=con0,path=${join(o.dir, 'console.log')}`, '-serial', 'chardev:con0',
    '-kernel', img(g.image.kernel), '-initrd', img(g.image.initrd), '-append', guestAppend(g),
    '-netdev', TAP_NETDEV,
    '-device', `${g.nic.model},id=e0,netdev=hn0,mac=${g.nic.mac}${g.nic.model === 'e1000' ? ',autonegotiation=off' : ''}`,
    ...(o.drive ?? ['-drive', `file=${o.stateDisk},format=raw,if=ide,cache=writeback`]),
    '-device', 'i6300esb', '-action', 'watchdog=none',
    ...(o.extra ?? []),
    ...(o.incoming ? ['-incoming', o.incoming] : []),
  ];
}

export class GuestVm {
  readonly qmp = new QmpClient();
  private constructor(readonly o: GuestVmOptions, private readonly procs: ProcessGroups, readonly pid: number) {}

  get console(): string {
    return join(this.o.dir, 'console.log');
  }

  get qmpPath(): string {
    return join(this.o.dir, 'qmp.sock');
  }

  /** Starts QEMU (running unless `incoming`), connected over QMP. */
  static async start(procs: ProcessGroups, o: GuestVmOptions): Promise<GuestVm> {
    const g = loadDescriptor();
    if (!existsSync(o.stateDisk)) writeFileSync(o.stateDisk, Buffer.alloc(g.stateDisk.sizeMb * 2 ** 20));
    writeFileSync(join(o.dir, 'console.log'), '');
    const s = await procs.spawnIn(o.key, o.netns, 'taskset', ['-c', String(GUEST_CORE), 'qemu-system-x86_64', ...guestVmArgs(o, g)], join(o.dir, 'qemu.log'));
    const vm = new GuestVm(o, procs, s.pid);
    try {
      await vm.qmp.connectWithRetry(vm.qmpPath, 10000, () => !s.exited);
    } catch (e) {
      await procs.kill(o.key);
      throw new Error(`QEMU ${o.key} did not come up: ${(e as Error).message}; ${readFileSync(join(o.dir, 'qemu.log'), 'utf8').trim().slice(-500)}`);
    }
    return vm;
  }

  get alive(): boolean {
    return this.procs.get(this.o.key)?.pid === this.pid;
  }

  /** Waits (bounded) for the application's DX-READY on the console. */
  async waitReady(timeoutMs = 60000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      const log = readFileSync(this.console, 'latin1');
      if (/DX-READY/.test(log)) return;
      if (!this.alive) throw new Error(`QEMU ${this.o.key} exited while booting: ${readFileSync(join(this.o.dir, 'qemu.log'), 'utf8').trim().slice(-500)}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`guest ${this.o.key} not ready within ${timeoutMs} ms; console: ${readFileSync(this.console, 'latin1').slice(-400)}`);
  }

  async kill(): Promise<void> {
    this.qmp.close();
    await this.procs.kill(this.o.key);
  }
}
