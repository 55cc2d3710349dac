/**
 * keepalived as its users deploy it for a service like this one: VRRPv3 on the service network at
 * the fastest advert interval it accepts (10 ms), the service address moving with the VRRP master,
 * `nopreempt` (a board that comes back does not take the address back: that would be a second
 * outage), a health check of the local guest (keepalived's vrrp_script, whose interval is a whole
 * number of seconds, at its minimum: 1 s), and one guest booted independently on each board: a
 * warm standby, no state transfer. Real keepalived processes (Debian's package) in the boards'
 * namespaces; the state of each instance is written by its notify script.
 * Owns the keepalived processes, their guests and their files under `dir`.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Accel } from '../../hw/hypervisor/kvm-probe.js';
import { BOARD_NAMES, SERVICE_INTERFACE, SERVICE_PORT, SERVICE_PREFIX, SERVICE_VIP, partnerOf, type BoardName } from '../chassis/layout.js';
import { GuestVm } from './guest-vm.js';
import { GUEST_ADDRESS, dropServiceAddress, setServiceLink, type PeerNet } from './net.js';
import type { ProcessGroups } from './procs.js';

/** VRRP advertisement interval, s: keepalived's minimum (RFC 5798 allows centiseconds). */
export const ADVERT_INT_S = 0.01;
/** keepalived's vrrp_script interval, s: an integer ≥ 1 (keepalived -t refuses 0.2). */
export const CHECK_INTERVAL_S = 1;
export const VRID = 51;
const PRIORITY: Record<BoardName, number> = { 'sim-a': 150, 'sim-b': 100 };

export type VrrpState = 'MASTER' | 'BACKUP' | 'FAULT' | 'STOP' | 'none';

export function keepalivedConf(board: BoardName, dir: string): string {
  return `global_defs {
  router_id ${board}
  vrrp_version 3
  script_user root
  vrrp_garp_master_delay 0
  vrrp_garp_master_repeat 1
}
vrrp_script guest_alive {
  script "${join(dir, 'check.sh')}"
  interval ${CHECK_INTERVAL_S}
  timeout 1
  fall 1
  rise 1
}
vrrp_instance service {
  state BACKUP
  nopreempt
  interface ${SERVICE_INTERFACE}
  virtual_router_id ${VRID}
  priority ${PRIORITY[board]}
  advert_int ${ADVERT_INT_S}
  virtual_ipaddress {
    ${SERVICE_VIP}/${SERVICE_PREFIX} dev ${SERVICE_INTERFACE}
  }
  track_script {
    guest_alive
  }
  notify "${join(dir, 'notify.sh')}"
}
`;
}

/**
 * The health check: one STATS to the local guest (on the board's tap), answered within 0.3 s.
 * python3 starts in a few tens of ms (Node: ~100).
 */
export const CHECK_SCRIPT = `#!/usr/bin/python3
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.3)
rid = b"hc%d" % os.getpid()
s.sendto(rid + b" STATS", ("${GUEST_ADDRESS}", ${SERVICE_PORT}))
try:
    while True:
        if s.recv(2048).startswith(rid + b" OK STATS "):
            sys.exit(0)
except socket.timeout:
    sys.exit(1)
`;

export class KeepalivedPair {
  readonly guests: Partial<Record<BoardName, GuestVm>> = {};

  constructor(readonly net: PeerNet, private readonly procs: ProcessGroups, readonly dir: string, private readonly accel: Accel) {}

  boardDir(b: BoardName): string {
    return join(this.dir, b);
  }

  guestKey(b: BoardName): string {
    return `guest-${b}`;
  }

  keepalivedKey(b: BoardName): string {
    return `keepalived-${b}`;
  }

  /** Boots the board's guest, then starts its keepalived (as a board's boot would). */
  async startBoard(b: BoardName): Promise<void> {
    const d = this.boardDir(b);
    mkdirSync(d, { recursive: true, mode: 0o700 });
    const vm = await GuestVm.start(this.procs, { key: this.guestKey(b), netns: this.net.boards[b], dir: d, accel: this.accel, stateDisk: join(d, 'state.raw') });
    this.guests[b] = vm;
    await vm.waitReady();
    await this.startKeepalived(b);
  }

  async startKeepalived(b: BoardName): Promise<void> {
    const d = this.boardDir(b);
    writeFileSync(join(d, 'check.sh'), CHECK_SCRIPT, { mode: 0o700 });
    writeFileSync(join(d, 'notify.sh'), `#!/bin/sh\necho "$3" > ${join(d, 'state')}\n`, { mode: 0o700 });
    chmodSync(join(d, 'check.sh'), 0o700);
    chmodSync(join(d, 'notify.sh'), 0o700);
    writeFileSync(join(d, 'keepalived.conf'), keepalivedConf(b, d));
    writeFileSync(join(d, 'state'), 'none\n');
    // Pid files a SIGKILLed keepalived left: its dead VRRP child may linger as a zombie (this
    // machine's init reaps slowly), which keepalived would take for a running daemon.
    for (const f of ['keepalived.pid', 'vrrp.pid', 'checkers.pid']) rmSync(join(d, f), { force: true });
    await this.procs.spawnIn(this.keepalivedKey(b), this.net.boards[b], 'keepalived',
      ['--dont-fork', '--log-console', '--log-detail', '--no-syslog', '--vrrp', '-f', join(d, 'keepalived.conf'), '-p', join(d, 'keepalived.pid'), '-r', join(d, 'vrrp.pid'), '-c', join(d, 'checkers.pid')],
      join(d, 'keepalived.log'));
  }

  state(b: BoardName): VrrpState {
    const f = join(this.boardDir(b), 'state');
    return existsSync(f) ? (readFileSync(f, 'utf8').trim() as VrrpState) : 'none';
  }

  /** keepalived's main process (the one `kill -9 $(pidof keepalived)`'s first pid would be). */
  keepalivedPid(b: BoardName): number | undefined {
    return this.procs.get(this.keepalivedKey(b))?.pid;
  }

  /** One MASTER, one BACKUP, both guests alive: returns the master. Bounded by `timeoutMs`. */
  async waitProtected(timeoutMs = 60000): Promise<BoardName> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      for (const b of BOARD_NAMES) {
        if (this.state(b) === 'MASTER' && this.state(partnerOf(b)) === 'BACKUP' && this.guests[b]?.alive && this.guests[partnerOf(b)]?.alive) return b;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`keepalived pair not protected within ${timeoutMs} ms: sim-a ${this.state('sim-a')}, sim-b ${this.state('sim-b')}; see ${this.dir}/*/keepalived.log`);
  }

  /** Everything on the board stops at once (its processes SIGKILLed, its NIC dead). */
  async powerOff(b: BoardName): Promise<void> {
    await setServiceLink(this.net, b, false);
    await Promise.all([this.procs.kill(this.keepalivedKey(b)), this.procs.kill(this.guestKey(b))]);
    delete this.guests[b];
  }

  /** The board boots again: NIC up, no address left over, guest, keepalived (it joins as BACKUP: nopreempt). */
  async powerOn(b: BoardName): Promise<void> {
    await dropServiceAddress(this.net, b);
    await setServiceLink(this.net, b, true);
    await this.startBoard(b);
  }

  async stop(): Promise<void> {
    for (const b of BOARD_NAMES) await this.powerOff(b).catch(() => undefined);
  }
}
