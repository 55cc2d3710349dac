/**
 * The input-loss watch against a scripted guest: a busy guest is never reported, an idle guest
 * short of what it was handed is reported once, a REG waiting for AUTH or a guest that does not
 * answer is not taken for a loss.
 */
import assert from 'node:assert/strict';
import type { GuestSupervisor } from '../../src/guest/supervisor.js';
import { InputLossWatch, type InputLoss } from '../../src/replication/loss-watch.js';

/** Just what the watch reads of a supervisor: the handed-over count and a PING that reports `processed`. */
class ScriptedGuest {
  currentState = 'running';
  base = 100;
  processed = 100;
  answers = true;
  port = {
    delivered: 0,
    serviceDelivered: 0,
    authOutstanding: new Set<string>(),
    management: async (cmd: string): Promise<string> => {
      assert.equal(cmd, 'PING');
      if (!this.answers) throw new Error('timeout');
      return `OK PING 1.0.0 seq=${this.processed}`;
    },
    processedCount: async (timeoutMs: number): Promise<number | undefined> => {
      assert.ok(timeoutMs > 0);
      return Number(/seq=(\d+)/.exec(await this.port.management('PING'))![1]);
    },
  };
  get appSeqExpected(): number {
    return this.base + this.port.serviceDelivered;
  }
  hand(n: number): void {
    this.port.delivered += n;
    this.port.serviceDelivered += n;
  }
}

function watch(g: ScriptedGuest, active = () => true): { w: InputLossWatch; losses: InputLoss[] } {
  const w = new InputLossWatch(g as unknown as GuestSupervisor, active);
  const losses: InputLoss[] = [];
  w.on('loss', (l) => losses.push(l));
  return { w, losses };
}

describe('input-loss watch', () => {
  it('stays quiet while the guest has processed everything it was handed', async () => {
    const g = new ScriptedGuest();
    const { w, losses } = watch(g);
    for (let i = 0; i < 5; i++) {
      g.hand(10);
      g.processed += 10;
      await w.check();
    }
    assert.equal(losses.length, 0);
    assert.equal(w.checks, 5);
  });

  it('does not report a busy guest (its count moves, or more is handed over)', async () => {
    const g = new ScriptedGuest();
    const { w, losses } = watch(g);
    g.hand(50);
    for (let i = 0; i < 4; i++) {
      g.processed += 5; // working through the backlog
      await w.check();
    }
    g.hand(5); // and new requests arrive while it lags
    await w.check();
    await w.check();
    assert.equal(losses.length, 1, 'once idle (same count twice, nothing new) the shortfall is a loss');
    assert.deepEqual(losses[0], { delivered: 155, processed: 120, missing: 35 });
  });

  it('reports an idle shortfall once, and again only when it changes', async () => {
    const g = new ScriptedGuest();
    const { w, losses } = watch(g);
    g.hand(20);
    g.processed += 17; // three lost
    await w.check();
    assert.equal(losses.length, 0, 'one look is not enough: the guest may still be working');
    await w.check();
    await w.check();
    await w.check();
    assert.deepEqual(losses, [{ delivered: 120, processed: 117, missing: 3 }]);
    assert.equal(w.losses, 1);
    assert.equal(w.lastLoss?.missing, 3);
    g.hand(10);
    g.processed += 8; // two more lost
    await w.check();
    await w.check();
    assert.equal(losses.length, 2);
    assert.equal(losses[1]!.missing, 5);
    // Repaired (a re-clone resets the count): quiet again, and a later loss is reported anew.
    g.base = g.processed - g.port.serviceDelivered;
    w.reset();
    await w.check();
    await w.check();
    assert.equal(losses.length, 2);
  });

  it('reports a guest that counts more than it was handed', async () => {
    const g = new ScriptedGuest();
    const { w, losses } = watch(g);
    g.processed += 1;
    await w.check();
    await w.check();
    assert.equal(losses[0]?.missing, -1);
  });

  it('is not fooled by a REG waiting for AUTH, a silent guest, or an inactive pair', async () => {
    const g = new ScriptedGuest();
    let active = false;
    const { w, losses } = watch(g, () => active);
    g.hand(4);
    g.processed += 3;
    await w.check();
    await w.check();
    assert.equal(losses.length, 0, 'inactive: no looks');
    assert.equal(w.checks, 0);
    active = true;
    g.port.authOutstanding.add('S1');
    await w.check();
    await w.check();
    assert.equal(losses.length, 0, 'the REG is not counted until AUTH answers');
    g.port.authOutstanding.clear();
    g.answers = false;
    await w.check();
    await w.check();
    assert.equal(losses.length, 0, 'no answer, no verdict');
    g.answers = true;
    await w.check();
    g.currentState = 'starting';
    await w.check();
    g.currentState = 'running';
    await w.check();
    assert.equal(losses.length, 0, 'a restart in between starts the comparison over');
    await w.check();
    assert.equal(losses.length, 1);
  });
  it('reports a shortfall again after the watch was inactive (a clone that failed, or began while the loss was reported)', async () => {
    const g = new ScriptedGuest();
    let active = true;
    const { w, losses } = watch(g, () => active);
    g.hand(6);
    g.processed += 4;
    await w.check();
    await w.check();
    assert.equal(losses.length, 1, 'reported once');
    await w.check();
    await w.check();
    assert.equal(losses.length, 1, 'not again while nothing changes');
    active = false; // a clone under way; it fails and leaves the copy as it was
    await w.check();
    active = true;
    await w.check();
    await w.check();
    assert.equal(losses.length, 2, 'the same shortfall is reported again once the watch is active');
    assert.equal(losses[1]!.missing, 2);
  });
});
