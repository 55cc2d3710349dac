/**
 * bench/peers, the keepalived row: src/sim/peers/keepalived.ts's pair (VRRPv3 at 10 ms, the service
 * address with the master, nopreempt, a 1 s health check of the local guest, one guest booted per
 * board, no state transfer) in namespaces made like the chassis's. Faults on the master:
 *  - kill: SIGKILL of keepalived's main process (its VRRP child then leaves: it sends priority 0);
 *    then restarted, as systemd's Restart= would; it joins as BACKUP;
 *  - power: the board's processes SIGKILLed and its service NIC down; powered on at once by the
 *    bench after the takeover (its guest boots afresh);
 *  - guest: SIGSTOP of the master's QEMU; the health check fails, the master goes FAULT; the hung
 *    QEMU is then killed and a new guest booted (what a watchdog reset would do).
 * Protected again: the failed board BACKUP with a guest that answers its health check.
 */
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { probeKvm } from '../src/hw/hypervisor/kvm-probe.js';
import { BOARD_NAMES, SERVICE_PORT, partnerOf, type BoardName } from '../src/sim/chassis/layout.js';
import { startAuth } from '../src/sim/peers/auth.js';
import { GuestVm } from '../src/sim/peers/guest-vm.js';
import { KeepalivedPair } from '../src/sim/peers/keepalived.js';
import { GUEST_ADDRESS, peerNetDown, peerNetUp } from '../src/sim/peers/net.js';
import { ProcessGroups } from '../src/sim/peers/procs.js';
import { armFigures, callsTotal, FAULT_KINDS, faultRound, footprint, withTeardown, type ArmFigures, type FaultKind, type FaultSample, type PeerRow } from './peers-lib.js';
import type { RunOptions } from './peers-understudy.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(what: string, ok: () => boolean, timeoutMs: number): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(2);
  }
}

async function inject(k: KeepalivedPair, procs: ProcessGroups, kind: FaultKind, master: BoardName): Promise<number> {
  const t0 = Date.now();
  if (kind === 'kill') process.kill(k.keepalivedPid(master)!, 'SIGKILL');
  else if (kind === 'power') await k.powerOff(master);
  else procs.signal(k.guestKey(master), 'SIGSTOP');
  return kind === 'power' ? t0 : (t0 + Date.now()) / 2;
}

async function recover(k: KeepalivedPair, procs: ProcessGroups, kind: FaultKind, master: BoardName, accel: 'kvm' | 'tcg'): Promise<void> {
  const backup = partnerOf(master);
  await until(`${kind}: ${backup} MASTER`, () => k.state(backup) === 'MASTER', 30000);
  if (kind === 'kill') {
    await procs.kill(k.keepalivedKey(master)); // what is left of it (its VRRP child)
    await k.startKeepalived(master);
  } else if (kind === 'power') {
    await k.powerOn(master);
  } else {
    await procs.kill(k.guestKey(master));
    const d = k.boardDir(master);
    const vm = await GuestVm.start(procs, { key: k.guestKey(master), netns: k.net.boards[master], dir: d, accel, stateDisk: join(d, 'state.raw') });
    k.guests[master] = vm;
    await vm.waitReady();
  }
  await k.waitProtected(60000);
}

export async function keepalivedRow(o: RunOptions & { name: string; runDir: string }): Promise<PeerRow> {
  const accel = (await probeKvm()).accel;
  rmSync(o.runDir, { recursive: true, force: true });
  mkdirSync(o.runDir, { recursive: true, mode: 0o700 });
  const procs = new ProcessGroups();
  const net = await peerNetUp(o.name);
  const k = new KeepalivedPair(net, procs, o.runDir, accel);
  const teardown = async () => {
    await procs.killAll().catch((e: Error) => o.say(`keepalived cleanup: ${e.message}`));
    await peerNetDown(net);
  };
  return withTeardown(teardown, async () => {
    await startAuth(procs, net.serviceNetns, join(o.runDir, 'auth.log'));
    await Promise.all(BOARD_NAMES.map((b) => k.startBoard(b)));
    let master = await k.waitProtected();
    const roots = async () => Object.fromEntries(BOARD_NAMES.map((b) => [`${b} (${b === master ? 'master' : 'backup'})`,
      [k.keepalivedPid(b), procs.get(k.guestKey(b))?.pid].filter((p): p is number => p !== undefined)]));
    o.say(`keepalived: protected (master ${master}, ${accel}); footprint for ${o.footprintSeconds} s…`);
    const fp = await footprint(roots, o.footprintSeconds);
    const P: ArmFigures[] = [];
    const U: ArmFigures[] = [];
    for (let round = 1; round <= o.rounds; round++) {
      master = await k.waitProtected();
      o.say(`keepalived P${round}…`);
      P.push(await armFigures(net.serviceNetns, o.seconds, `kP${round}`));
      o.say(`keepalived U${round}: backup ${partnerOf(master)} powered off…`);
      await k.powerOff(partnerOf(master));
      U.push(await armFigures(net.serviceNetns, o.seconds, `kU${round}`));
      await k.powerOn(partnerOf(master));
    }
    const faults: FaultSample[] = [];
    for (let i = 1; i <= o.faults; i++) {
      for (const kind of FAULT_KINDS) {
        master = await k.waitProtected();
        await sleep(1000);
        const s = await faultRound({
          serviceNetns: net.serviceNetns, kind, tag: `K${kind[0]}${i}x`, statelessOk: true,
          inject: () => inject(k, procs, kind, master), recover: () => recover(k, procs, kind, master, accel),
          // The backup's own guest, asked from its board: its counter is not the master's.
          survivorTotal: () => callsTotal(net.boards[partnerOf(master)], { address: GUEST_ADDRESS, port: SERVICE_PORT, bind: '10.0.0.1' }),
        });
        o.say(`keepalived ${kind} ${i}/${o.faults}: first good reply ${s.firstGoodReply.toFixed(0)} ms, lost ${s.lostRegs} registrations / ${s.lostCalls} calls, protected again ${(s.protectedAgain / 1000).toFixed(1)} s`);
        faults.push(s);
      }
    }
    return {
      setup: 'keepalived 2.2.7', runnable: true, faults, protectedArm: P, unprotectedArm: U, footprint: fp,
      notes: ['keepalived: VRRPv3 advert_int 0.01 s, nopreempt, vrrp_script health check every 1 s (its minimum), warm standby (each board boots its own guest: no state transfer); kill = SIGKILL of keepalived\'s main process, restarted by the bench; power = processes SIGKILLed + service NIC down, powered on at once; guest = SIGSTOP of QEMU, the hung QEMU then replaced by a fresh boot'],
    };
  });
}
