/**
 * The controller's side of the membership process at an adoption (src/ha/membership-process.ts):
 * the process may hear the adopted partner, and report it alive, before its answer to the adoption
 * reaches the controller. That report must stand: reset after it, the partner read 'unknown' for
 * good (later frames only update it) and the primary never cloned to the spare it had adopted
 * (n-plus-one test, 2026-12-06). The process's side is played here by the test, over the same
 * messages, in each order.
 */
import assert from 'node:assert/strict';
import { MembershipProcess, type MembershipConfig } from '../../src/ha/membership-process.js';
import type { Heartbeat } from '../../src/ha/frame.js';

const hb = { sender: 'sim-c', role: 'STARTING', generation: 1, echo: 0, seq: 1, guest: 'none', watchdog: 'none', cpuLoad: null, priority: 100, health: 'ok' } as unknown as Heartbeat;

type Msg = { t: string; id?: number };
interface Inside { worker: { connected: boolean; send(m: Msg): void }; onMessage(m: unknown): void }

/** A MembershipProcess whose worker is the test: `answer` plays the process's reply to adopt-partner. */
function withWorker(answer: (inside: Inside, id: number) => void): { m: MembershipProcess; inside: Inside } {
  const m = new MembershipProcess({} as MembershipConfig);
  const inside = m as unknown as Inside;
  inside.worker = { connected: true, send: (msg: Msg) => { if (msg.t === 'adopt-partner') setImmediate(() => answer(inside, msg.id!)); } };
  return { m, inside };
}

describe('membership process: the partner view at an adoption', () => {
  it('the adopted partner heard before the answer: it stays alive', async () => {
    const { m } = withWorker((p, id) => {
      p.onMessage({ t: 'partner-alive', hb });
      p.onMessage({ t: 'adopted', id, closed: ['serial'] });
    });
    assert.deepEqual(await m.adoptPartner('198.51.100.3', { highest: 0 } as never), ['serial']);
    assert.equal(m.partnerView.state, 'alive');
    assert.equal(m.partnerView.heartbeat?.sender, 'sim-c');
  });

  it('not heard yet: unknown until it is, then alive', async () => {
    const { m, inside } = withWorker((p, id) => p.onMessage({ t: 'adopted', id, closed: [] }));
    await m.adoptPartner('198.51.100.3', { highest: 0 } as never);
    assert.equal(m.partnerView.state, 'unknown');
    assert.equal(m.partnerView.heartbeat, undefined);
    inside.onMessage({ t: 'partner-alive', hb });
    assert.equal(m.partnerView.state, 'alive');
  });

  it('refused: the refusal is the error, the view unchanged', async () => {
    const { m } = withWorker((p, id) => p.onMessage({ t: 'adopted', id, error: 'partner sim-b is heard' }));
    await assert.rejects(m.adoptPartner('198.51.100.3', { highest: 0 } as never), /sim-b is heard/);
    assert.equal(m.partnerView.state, 'unknown');
  });
});
