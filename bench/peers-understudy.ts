/**
 * bench/peers, the Understudy row: the simulated chassis as shipped (Chassis.up with the guest
 * replicated), the faults through bench/hangs.ts's HangBench.round (kill: SIGKILL of the primary's
 * controller, power: its board loses power, guest: SIGSTOP of its QEMU; each round checks the
 * boards' journals for the expected path and throws on any acknowledged loss), the load and
 * footprint through peers-lib like the other set-ups. P: protected pair; U: backup powered off.
 */
import { BOARD_NAMES, partnerOf } from '../src/sim/chassis/layout.js';
import { Chassis } from '../src/sim/chassis/rig.js';
import { waitProtected, waitUnprotected } from '../src/sim/pair.js';
import { HangBench } from './hangs.js';
import { armFigures, FAULT_KINDS, footprint, withTeardown, type ArmFigures, type FaultSample, type PeerRow } from './peers-lib.js';

export interface RunOptions { faults: number; seconds: number; rounds: number; footprintSeconds: number; say: (s: string) => void }

export async function understudyRow(o: RunOptions & { name: string; runDir: string }): Promise<PeerRow> {
  const chassis = await Chassis.up({ name: o.name, runDir: o.runDir, guest: 'primary' });
  return withTeardown(() => chassis.down({ purge: true }), async () => {
    // Every kill and power loss resets a board: keep the fencing escalation out of the rounds (as bench/failover-detect does).
    await chassis.coldStart((_, p) => { p.fencing.escalation = { ...(p.fencing.escalation ?? {}), maxResets: o.faults * 3 + 10 }; });
    const bench = new HangBench(chassis, () => { throw new Error('no CPU burners in bench/peers'); });
    let { primary } = await bench.protectedPair();
    const notes: string[] = [];
    const roots = async () => {
      const out: Record<string, number[]> = {};
      for (const b of BOARD_NAMES) {
        const pid = (await chassis.board(b)).controller?.pid;
        out[`${b} (${b === primary ? 'primary' : 'backup'})`] = pid ? [pid] : [];
      }
      return out;
    };
    o.say(`understudy: protected (primary ${primary}); footprint for ${o.footprintSeconds} s…`);
    const fp = await footprint(roots, o.footprintSeconds);
    const P: ArmFigures[] = [];
    const U: ArmFigures[] = [];
    for (let round = 1; round <= o.rounds; round++) {
      primary = await waitProtected(chassis.layout, 240000);
      o.say(`understudy P${round}…`);
      P.push(await armFigures(chassis.layout.serviceNetns, o.seconds, `uP${round}`));
      o.say(`understudy U${round}: backup ${partnerOf(primary)} powered off…`);
      await chassis.power(partnerOf(primary), 'off');
      await waitUnprotected(chassis.layout, primary);
      U.push(await armFigures(chassis.layout.serviceNetns, o.seconds, `uU${round}`));
      await chassis.power(partnerOf(primary), 'on');
    }
    const faults: FaultSample[] = [];
    for (let i = 1; i <= o.faults; i++) {
      for (const kind of FAULT_KINDS) {
        const s = await bench.round(kind, i); // throws on a loss or an unexpected path: no figure from it
        o.say(`understudy ${kind} ${i}/${o.faults}: first good reply ${s.firstGoodReply.toFixed(0)} ms, protected again ${(s.protectedAgain / 1000).toFixed(1)} s`);
        faults.push({ kind, firstGoodReply: s.firstGoodReply, protectedAgain: s.protectedAgain, ackedRegs: NaN, lostRegs: 0, ackedCalls: NaN, lostCalls: 0, answered: s.answered, lostStateReplies: 0 });
      }
    }
    notes.push('Understudy: faults by bench/hangs.ts (HangBench.round: journals checked, any acknowledged registration lost or re-sent id answered differently fails the bench); a board that lost power is powered on by the bench at once.');
    return { setup: 'Understudy', runnable: true, faults, protectedArm: P, unprotectedArm: U, footprint: fp, notes };
  });
}
