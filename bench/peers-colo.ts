/**
 * bench/peers, the QEMU COLO rows (one per x-checkpoint-delay: QEMU's default and a short one):
 * src/sim/peers/colo.ts's pair in namespaces made like the chassis's, our heartbeat on the
 * secondary's board (colo-heartbeat.ts: 5 ms interval, 25 ms deadtime, Understudy's own timers).
 * Faults on the primary: kill = SIGKILL of the primary QEMU (COLO has no controller: the process
 * that serves is what dies); power = that and the board's service NIC down; guest = SIGSTOP of the
 * primary QEMU. Recovery: the survivor is the new primary; the failed board (powered on at once)
 * gets a new secondary: protected again = COLO running again. U: the primary alone ("Primary
 * Failover" of COLO-FT.txt), P: protected; alternated. A QEMU without COLO, or a first protection
 * that fails, makes the row "not runnable" with QEMU's own error; any later failure fails the bench.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { probeKvm } from '../src/hw/hypervisor/kvm-probe.js';
import { partnerOf, type BoardName } from '../src/sim/chassis/layout.js';
import { ColoPair, DEFAULT_CHECKPOINT_DELAY_MS, type HeartbeatEvent } from '../src/sim/peers/colo.js';
import { loadDescriptor } from '../src/sim/peers/guest-vm.js';
import { peerNetDown, peerNetUp, setServiceLink, takeServiceAddress, type PeerNet } from '../src/sim/peers/net.js';
import { ProcessGroups } from '../src/sim/peers/procs.js';
import { startAuth } from '../src/sim/peers/auth.js';
import { armFigures, FAULT_KINDS, faultRound, footprint, withTeardown, type ArmFigures, type FaultKind, type FaultSample, type PeerRow } from './peers-lib.js';
import type { RunOptions } from './peers-understudy.js';

/**
 * Our heartbeat's timers. Not Understudy's 25 ms deadtime: a checkpoint stops the primary and holds
 * its main loop (and so its monitor) for tens of ms (45 ms at idle here, STOP → RESUME), and a 25 ms
 * deadtime declared a healthy primary lost within 100 ms of the first protection.
 */
export const HEARTBEAT = { intervalMs: 5, deadtimeMs: 250 };
/** Checkpoints a new COLO pair must survive before anything is measured on it. */
const CHECKPOINTS_TO_SURVIVE = 3;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

class ColoBench {
  constructor(readonly c: ColoPair, readonly net: PeerNet, readonly procs: ProcessGroups, readonly dir: string) {}

  startHeartbeat(primary: BoardName): Promise<void> {
    return this.c.startHeartbeat(primary, HEARTBEAT);
  }

  /**
   * Watches a new pair through CHECKPOINTS_TO_SURVIVE periodic checkpoints: undefined when both VMs
   * came through (no COLO_EXIT, no guest reset, no panic on the secondary's console, the primary's
   * monitor answering and still in COLO); otherwise what QEMU and the guests said.
   */
  async survivesCheckpoints(primary: BoardName, delayMs: number): Promise<string | undefined> {
    const secondary = partnerOf(primary);
    const seen: string[] = [];
    const listeners = (['sim-a', 'sim-b'] as const).map((x) => {
      const f = (e: { event: string; data?: unknown }) => { if (/COLO_EXIT|RESET|SHUTDOWN|GUEST_PANICKED/.test(e.event)) seen.push(`${x === primary ? 'primary' : 'secondary'} QEMU event ${e.event} ${JSON.stringify(e.data ?? {})}`); };
      this.c.vms[x]!.qmp.on('event', f);
      return () => this.c.vms[x]?.qmp.off('event', f);
    });
    await sleep(CHECKPOINTS_TO_SURVIVE * delayMs + 2000);
    for (const off of listeners) off();
    const status = await this.c.vms[primary]!.qmp.execute<{ status: string }>('query-migrate', undefined, 3000)
      .then((r) => (r.status === 'colo' ? undefined : `primary query-migrate: status ${r.status}`), (e: Error) => `primary QEMU's monitor: ${e.message}`);
    if (status) seen.push(status);
    const console = readFileSync(this.c.vms[secondary]!.console, 'latin1').split('\n').filter((l) => /Kernel panic|BUG:|Oops|general protection/.test(l)).slice(0, 3);
    if (console.length) seen.push(`secondary guest console: ${console.map((l) => l.trim()).join(' | ')}`);
    if (!seen.length) return undefined;
    const logs = (['sim-a', 'sim-b'] as const).map((x) => readFileSync(join(this.dir, x, 'qemu.log'), 'utf8').trim()).filter(Boolean);
    const accel = (await probeKvm()).accel;
    return `COLO did not survive its first ${CHECKPOINTS_TO_SURVIVE} checkpoints (x-checkpoint-delay ${delayMs} ms, ${accel.toUpperCase()}): ${[...new Set(seen)].join('; ')}`
      + `${logs.length ? `; QEMU stderr: ${[...new Set(logs.join('\n').split('\n'))].join(' / ')}` : ''}`
      + (accel === 'tcg' ? '. Likely cause (docs/peers.md): a checkpoint sends only the pages dirtied since the last one, and QEMU 7.2 under TCG loses dirty-page tracking'
        + ' (fixed in QEMU 9.0, commit 03bfc2188f; docs/replication.md, "Why a TCG copy is not live"), so the secondary resumes from stale memory;'
        + ` KVM: ${existsSync('/dev/kvm') ? 'present, but the KVM probe chose TCG' : 'none on this machine (/dev/kvm absent)'}` : '');
  }

  /** A heartbeat that declared the primary lost while no fault was injected. */
  falseFailover(): HeartbeatEvent | undefined {
    return this.c.heartbeatEvents().find((e) => e.event === 'lost');
  }

  async protect(primary: BoardName): Promise<void> {
    await this.c.protect(primary);
    await this.startHeartbeat(primary);
  }

  async unprotect(primary: BoardName): Promise<void> {
    await this.procs.kill('heartbeat');
    await this.c.dropSecondary(primary);
  }

  async inject(kind: FaultKind, primary: BoardName): Promise<number> {
    const t0 = Date.now();
    if (kind === 'guest') {
      this.procs.signal(this.c.key(primary), 'SIGSTOP');
      return (t0 + Date.now()) / 2;
    }
    if (kind === 'power') await setServiceLink(this.net, primary, false);
    await this.procs.kill(this.c.key(primary));
    return t0;
  }

  async recover(kind: FaultKind, failed: BoardName): Promise<void> {
    const survivor = partnerOf(failed);
    const fo = await this.c.waitHeartbeatEvent('failover', 30000);
    if (fo.errors?.length) throw new Error(`COLO failover: ${fo.errors.join('; ')}`);
    await this.procs.kill('heartbeat');
    await this.procs.kill(this.c.key(failed)); // the hung or dead primary
    delete this.c.vms[failed];
    this.c.primary = survivor;
    await this.c.waitMode(survivor, 'none');
    if (kind === 'power') await setServiceLink(this.net, failed, true);
    await this.protect(survivor);
  }
}

function sha(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

export async function coloRow(o: RunOptions & { name: string; runDir: string; checkpointDelayMs: number }): Promise<PeerRow> {
  const setup = `QEMU COLO 7.2, x-checkpoint-delay ${o.checkpointDelayMs} ms${o.checkpointDelayMs === DEFAULT_CHECKPOINT_DELAY_MS ? ' (default)' : ''}`;
  const accel = (await probeKvm()).accel;
  rmSync(o.runDir, { recursive: true, force: true });
  mkdirSync(o.runDir, { recursive: true, mode: 0o700 });
  const blank = join(o.runDir, 'blank-state.raw');
  writeFileSync(blank, Buffer.alloc(loadDescriptor().stateDisk.sizeMb * 2 ** 20));
  const procs = new ProcessGroups();
  const net = await peerNetUp(o.name);
  const c = new ColoPair(net, procs, o.runDir, accel, o.checkpointDelayMs, blank);
  const b = new ColoBench(c, net, procs, o.runDir);
  const teardown = async () => {
    await procs.killAll().catch((e: Error) => o.say(`COLO cleanup: ${e.message}`));
    await peerNetDown(net);
  };
  const qemuLogs = () => (['sim-a', 'sim-b'] as const).map((x) => `${x}: ${existsSync(join(o.runDir, x, 'qemu.log')) ? readFileSync(join(o.runDir, x, 'qemu.log'), 'utf8').trim().slice(-600) : '(no log)'}`).join('\n');
  return withTeardown(teardown, async () => {
    try {
      await startAuth(procs, net.serviceNetns, join(o.runDir, 'auth.log'));
      let primary: BoardName = 'sim-a';
      const pvm = await c.bootPrimary(primary);
      await takeServiceAddress(net, primary);
      const caps = (await pvm.qmp.execute('query-migrate-capabilities')) as Array<{ capability: string }>;
      if (!caps.some((x) => x.capability === 'x-colo')) return { setup, runnable: false, reason: `this QEMU has no x-colo migration capability (query-migrate-capabilities: ${caps.map((x) => x.capability).join(', ')})`, notes: [] };
      o.say(`${setup}: U1 (the primary alone)…`);
      const U: ArmFigures[] = [await armFigures(net.serviceNetns, o.seconds, 'cU1')];
      try {
        await c.protect(primary);
      } catch (e) {
        return { setup, runnable: false, reason: `the first protection failed: ${(e as Error).message}\n${qemuLogs()}`, notes: [] };
      }
      const broken = await b.survivesCheckpoints(primary, o.checkpointDelayMs);
      if (broken) return { setup, runnable: false, reason: broken, notes: [] };
      await b.startHeartbeat(primary);
      const roots = async () => Object.fromEntries((['sim-a', 'sim-b'] as const).map((x) => [`${x} (${x === c.primary ? 'primary' : 'secondary'})`,
        [procs.get(c.key(x))?.pid, x !== c.primary ? procs.get('heartbeat')?.pid : undefined].filter((p): p is number => p !== undefined)]));
      o.say(`${setup}: protected (primary ${primary}, ${accel}); footprint for ${o.footprintSeconds} s…`);
      const fp = await footprint(roots, o.footprintSeconds);
      const P: ArmFigures[] = [];
      for (let round = 1; round <= o.rounds; round++) {
        if (round > 1) {
          await b.unprotect(primary);
          o.say(`${setup}: U${round}…`);
          U.push(await armFigures(net.serviceNetns, o.seconds, `cU${round}`));
          await b.protect(primary);
        }
        o.say(`${setup}: P${round}…`);
        P.push(await armFigures(net.serviceNetns, o.seconds, `cP${round}`));
        const ff = b.falseFailover();
        if (ff) throw new Error(`${setup}: the heartbeat lost a healthy primary under load (${ff.why}): no figure from this run`);
      }
      const faults: FaultSample[] = [];
      for (let i = 1; i <= o.faults; i++) {
        for (const kind of FAULT_KINDS) {
          primary = c.primary!;
          await sleep(1000);
          const ff = b.falseFailover();
          if (ff) throw new Error(`${setup}: the heartbeat lost a healthy primary (${ff.why}): no figure from this run`);
          const s = await faultRound({
            serviceNetns: net.serviceNetns, kind, tag: `C${kind[0]}${i}x`, statelessOk: false,
            inject: () => b.inject(kind, primary), recover: () => b.recover(kind, primary),
          });
          o.say(`${setup} ${kind} ${i}/${o.faults}: first good reply ${s.firstGoodReply.toFixed(0)} ms, protected again ${(s.protectedAgain / 1000).toFixed(1)} s`);
          faults.push(s);
        }
      }
      const blankSum = sha(blank);
      const changed = (['sim-a', 'sim-b'] as const).filter((x) => existsSync(c.disk(x)) && sha(c.disk(x)) !== blankSum);
      if (changed.length) throw new Error(`${setup}: the state disk of ${changed.join(', ')} changed: the diskless argument does not hold, no figure from this run`);
      return {
        setup, runnable: true, faults, protectedArm: P, unprotectedArm: U, footprint: fp,
        notes: [`${setup}: heartbeat every ${HEARTBEAT.intervalMs} ms, primary lost after ${HEARTBEAT.deadtimeMs} ms of silence or at once when its monitor closes; no false failover in the run; both boards' state disks identical to the blank image at the end (no block replication needed: the guest writes its disk only on SAVE)`],
      };
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${qemuLogs()}`);
    }
  });
}
