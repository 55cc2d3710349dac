/**
 * corosync's quorum as the HA layer reads it (src/ha/quorum.ts): the parser on corosync-quorumtool's
 * `-m -p` output as captured on the chassis (a quorate side, then the side cut off), and the watch
 * around a real child process standing in for the tool (blocks, exit, restart); the serve-alone
 * gate of a withholding primary (src/pair/serve-alone.ts).
 */
import assert from 'node:assert/strict';
import { createLogger } from '../../src/core/log.js';
import { QuorumParser, QuorumWatch, type QuorumState } from '../../src/ha/quorum.js';
import { serveAloneGate } from '../../src/pair/serve-alone.js';

const log = createLogger('test', { level: 'silent' });

/** One block of `corosync-quorumtool -m -p`, as sim-c printed it (2026-12-06). */
const block = (o: { ring: string; quorate: boolean; members: Array<[number, string, boolean]> }) => `Quorum information
------------------
Date:             Sun Dec  6 18:19:02 2026
Quorum provider:  corosync_votequorum
Nodes:            ${o.members.length}
Node ID:          3
Ring ID:          ${o.ring}
Quorate:          ${o.quorate ? 'Yes' : 'No'}

Votequorum information
----------------------
Expected votes:   3
Highest expected: 3
Total votes:      ${o.members.length}
Quorum:           2 ${o.quorate ? '' : 'Activity blocked'}
Flags:            ${o.quorate ? 'Quorate ' : ''}

Membership information
----------------------
    Nodeid      Votes    Qdevice Name
${o.members.map(([id, n, local]) => `         ${id}          1         NR ${n}${local ? ' (local)' : ''}`).join('\n')}
`;

describe('corosync quorum (ha.manager pacemaker)', () => {
  it('the parser returns a state at the last member of each block: quorate with three members, then the side cut off without quorum', () => {
    const p = new QuorumParser();
    const states: QuorumState[] = [];
    const text = block({ ring: '1.d', quorate: true, members: [[1, 'sim-a', false], [2, 'sim-b', false], [3, 'sim-c', true]] })
      + '\n' + block({ ring: '3.11', quorate: false, members: [[3, 'sim-c', true]] });
    let at = 0;
    for (const l of text.split('\n')) { const s = p.feed(l, ++at); if (s) states.push(s); }
    assert.equal(states.length, 2);
    assert.deepEqual(states.map((s) => [s.quorate, s.members, s.ring]), [[true, ['sim-a', 'sim-b', 'sim-c'], '1.d'], [false, ['sim-c'], '3.11']]);
    // A block cut short (the tool killed mid-way) gives nothing; the next whole one does.
    const q = new QuorumParser();
    const lines = block({ ring: '1.15', quorate: true, members: [[1, 'sim-a', true], [2, 'sim-b', false]] }).split('\n');
    for (const l of lines.slice(0, -3)) assert.equal(q.feed(l, 1), undefined);
    assert.equal(q.feed('Cannot initialize QUORUM service', 1), undefined);
    let last: QuorumState | undefined;
    for (const l of lines) last = q.feed(l, 2) ?? last;
    assert.deepEqual(last?.members, ['sim-a', 'sim-b']);
  });

  it('the watch follows a real child process: each block a change, its exit makes the state unknown, and it is started again', async function () {
    this.timeout(10000);
    const a = block({ ring: '1.d', quorate: true, members: [[1, 'sim-a', true], [2, 'sim-b', false], [3, 'sim-c', false]] });
    const b = block({ ring: '1.11', quorate: true, members: [[1, 'sim-a', true], [3, 'sim-c', false]] });
    const script = `printf '%s\\n' "$A"; sleep 0.2; printf '%s\\n' "$B"; sleep 0.3; echo 'bye' >&2; exit 1`;
    process.env.A = a;
    process.env.B = b;
    const w = new QuorumWatch(['sh', '-c', script], log);
    const seen: Array<string | undefined> = [];
    w.on('change', (s) => seen.push(s ? `${s.quorate ? 'Q' : 'NQ'} ${s.members.join(',')}` : undefined));
    try {
      w.start();
      const until = async (cond: () => boolean, what: string) => {
        for (let i = 0; i < 400 && !cond(); i++) await new Promise((r) => setTimeout(r, 10));
        assert.ok(cond(), `${what}: ${JSON.stringify(seen)}`);
      };
      await until(() => seen.length >= 3, 'two blocks, then the exit');
      assert.deepEqual(seen.slice(0, 3), ['Q sim-a,sim-b,sim-c', 'Q sim-a,sim-c', undefined]);
      assert.equal(w.state, undefined, 'unknown once the tool exited');
      assert.match(w.status().lastError!, /exited \(code 1\): bye$/);
      await until(() => w.status().starts >= 2 && seen.length >= 4, 'started again a second later');
      assert.equal(seen[3], 'Q sim-a,sim-b,sim-c');
    } finally {
      w.stop();
      delete process.env.A;
      delete process.env.B;
    }
    assert.equal(w.status().running, false);
  });

  it('a withholding primary serves alone only once corosync settled: quorate without the partner, or quorate with it for quorumSettleMs or with it hung; never without quorum or with quorum unknown', () => {
    let q: QuorumState | undefined;
    let hung = false;
    const gate = serveAloneGate({ quorum: () => q, partner: () => 'sim-b', partnerHung: () => hung, settleMs: 16000 });
    assert.match(gate(0)!, /quorum unknown/);
    q = { quorate: true, members: ['sim-a', 'sim-b', 'sim-c'], ring: '1.d', at: 0 };
    assert.match(gate(0)!, /corosync still counts sim-b a member/);
    assert.match(gate(15999)!, /still counts/);
    assert.equal(gate(16000), undefined, 'settled: the channel failed on its own, the cluster sees both');
    q = { quorate: true, members: ['sim-a', 'sim-c'], ring: '1.11', at: 0 };
    assert.equal(gate(10), undefined, 'the partner left a quorate membership');
    q = { quorate: false, members: ['sim-a'], ring: '1.12', at: 0 };
    assert.match(gate(10)!, /no quorum/);
    assert.match(gate(1e9)!, /no quorum/, 'never, however long');
    hung = true;
    assert.match(gate(0)!, /no quorum/, 'not even with the partner hung');
    q = { quorate: true, members: ['sim-a', 'sim-b', 'sim-c'], ring: '1.d', at: 0 };
    assert.equal(gate(0), undefined, 'a hung partner cannot be promoted quickly by anyone');
  });
});
