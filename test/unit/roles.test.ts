import assert from 'node:assert/strict';
import { ROLE_TABLE, isPreferred, nextRole, type RoleContext, type Transition } from '../../src/ha/roles.js';
import { ROLES, type Role } from '../../src/ha/frame.js';

describe('role state machine', () => {
  const pref = { preferred: true };
  const notPref = { preferred: false };

  it('both starting: exactly one becomes primary, decided by preference', () => {
    assert.equal(nextRole('STARTING', 'partner-starting', pref)?.to, 'PRIMARY');
    assert.equal(nextRole('STARTING', 'partner-starting', notPref)?.to, 'BACKUP');
    assert.equal(isPreferred({ name: 'sim-a', priority: 10 }, { name: 'sim-b', priority: 20 }), true);
    assert.equal(isPreferred({ name: 'sim-b', priority: 20 }, { name: 'sim-a', priority: 10 }), false);
    assert.equal(isPreferred({ name: 'x', priority: 5 }, { name: 'a', priority: 5 }), false, 'same priority: lower name wins');
  });

  it('a returning board joins as backup and never preempts', () => {
    assert.equal(nextRole('STARTING', 'partner-primary', pref)?.to, 'BACKUP');
    assert.equal(nextRole('WAITING', 'partner-primary', pref)?.to, 'BACKUP');
    assert.equal(nextRole('BACKUP', 'partner-primary', pref), undefined);
  });

  it('never promotes over a silent partner without fencing it first', () => {
    for (const state of ROLES) {
      for (const partnerLast of [undefined, ...ROLES]) {
        for (const c of [pref, notPref]) {
          const ctx = { ...c, partnerLast };
          const t = nextRole(state, 'partner-dead', ctx);
          if (state === 'PRIMARY') assert.ok(!t || (t.to === 'PRIMARY' && t.fence), `PRIMARY + partner-dead stays PRIMARY: ${JSON.stringify(t)}`);
          else assert.notEqual(t?.to, 'PRIMARY', `${state} + partner-dead`);
          for (const startup of ['wait-for-partner', 'fence-then-serve'] as const) {
            assert.notEqual(nextRole(state, 'startup-timeout', { ...ctx, startup })?.to, 'PRIMARY', `${state} + startup-timeout`);
          }
          assert.notEqual(nextRole(state, 'start-alone', ctx)?.to, 'PRIMARY', `${state} + start-alone: fence first`);
          if (t?.to === 'FENCING') assert.ok(t.fence, `${state} + partner-dead orders the fence`);
        }
      }
    }
    assert.equal(nextRole('BACKUP', 'partner-dead', pref)?.to, 'FENCING');
    assert.equal(nextRole('FENCING', 'fence-ok', pref)?.to, 'PRIMARY');
    assert.equal(nextRole('FENCING', 'fence-failed', { ...pref, partnerLast: 'PRIMARY' })?.to, 'BACKUP');
  });

  it('priority fencing: a primary fences its silent backup at once and keeps serving; a backup waits the priority delay before fencing a silent primary', () => {
    for (const c of [pref, notPref]) {
      const p = nextRole('PRIMARY', 'partner-dead', { ...c, partnerLast: 'BACKUP' });
      assert.equal(p?.to, 'PRIMARY');
      assert.deepEqual(p?.fence, { wait: 'confirm' }, 'one more deadtime, well within the backup\'s priority delay');
      assert.match(p!.cause, /serving on unprotected/);
      const b = nextRole('BACKUP', 'partner-dead', { ...c, partnerLast: 'PRIMARY' });
      assert.equal(b?.to, 'FENCING');
      assert.deepEqual(b?.fence, { wait: 'priority-delay' }, 'whatever the preference: the primary keeps the service');
    }
    // A partner that left in order (its last heartbeat STOPPING): the primary does not fence it; a backup fences it at once.
    assert.equal(nextRole('PRIMARY', 'partner-dead', { ...pref, partnerLast: 'STOPPING' }), undefined);
    assert.deepEqual(nextRole('BACKUP', 'partner-dead', { ...notPref, partnerLast: 'STOPPING' })?.fence, { wait: 'now' });
    // Two backups (right after a switchover): the symmetric fence delay, the preferred goes first.
    assert.deepEqual(nextRole('BACKUP', 'partner-dead', { ...pref, partnerLast: 'BACKUP' })?.fence, { wait: 'now' });
    assert.deepEqual(nextRole('BACKUP', 'partner-dead', { ...notPref, partnerLast: 'BACKUP' })?.fence, { wait: 'fence-delay' });
  });

  it('a partition never has both boards fence at once: on partner-dead (and on a cold start with fence-then-serve) one fences first, the other a delay later', () => {
    // Config guarantees: confirm (a deadtime) + a fence (within fenceDelayMs) ≤ priority-delay.
    // And no-state-delay ≥ priority-delay.
    const rank = { now: 0, confirm: 1, 'fence-delay': 2, 'priority-delay': 3, 'no-state-delay': 4, quorum: 5 } as const;
    const order = (state: Role, ctx: RoleContext, ev: 'partner-dead' | 'startup-timeout'): Transition['fence'] | undefined => nextRole(state, ev, ctx)?.fence;
    for (const a of ROLES) {
      for (const b of ROLES) {
        for (const aPreferred of [true, false]) {
          for (const [aState, bState] of [[undefined, undefined], [false, true], [true, false], [false, false]] as const) {
            const fa = order(a, { preferred: aPreferred, partnerLast: b, holdsState: aState }, 'partner-dead');
            const fb = order(b, { preferred: !aPreferred, partnerLast: a, holdsState: bState }, 'partner-dead');
            if (fa && fb) {
              assert.notEqual(rank[fa.wait], rank[fb.wait], `${a} and ${b} would fence each other with the same wait (${fa.wait})`);
              const first = rank[fa.wait] < rank[fb.wait] ? fa.wait : fb.wait;
              const second = first === fa.wait ? fb.wait : fa.wait;
              assert.ok(first === 'now' || (first === 'confirm' && (second === 'priority-delay' || second === 'no-state-delay')), `${a}/${b}: one fences at once (a primary: after confirming), the other a fence delay later (${fa.wait}, ${fb.wait})`);
            }
          }
        }
      }
    }
    for (const aPreferred of [true, false]) {
      const ctx = (preferred: boolean): RoleContext => ({ preferred, startup: 'fence-then-serve' });
      const fa = order('STARTING', ctx(aPreferred), 'startup-timeout');
      const fb = order('STARTING', ctx(!aPreferred), 'startup-timeout');
      assert.ok(fa && fb);
      assert.deepEqual([fa.wait, fb.wait].sort(), ['fence-delay', 'now']);
      assert.equal(fa.keepOff && fb.keepOff, true, 'fence-then-serve leaves the partner off: a reset one could fence back');
    }
  });

  it('a hung partner is fenced at once, and its heartbeats do not call the fence off', () => {
    for (const c of [pref, notPref]) {
      const t = nextRole('BACKUP', 'partner-hung', { ...c, partnerLast: 'PRIMARY', partnerHung: true });
      assert.equal(t?.to, 'FENCING');
      assert.deepEqual(t?.fence, { wait: 'now' });
    }
    for (const c of [pref, notPref]) {
      // A backup whose clone is not cut over yet holds no copy to serve: it does not fence a hung primary.
      assert.equal(nextRole('BACKUP', 'partner-hung', { ...c, partnerLast: 'PRIMARY', partnerHung: true, holdsState: false }), undefined);
      assert.equal(nextRole('BACKUP', 'partner-hung', { ...c, partnerLast: 'PRIMARY', partnerHung: true, holdsState: true })?.to, 'FENCING');
      // Silence is a death, state or not; but without the state the backup waits the no-state delay
      // (a live primary is heard again by then, a hung one reset by its watchdog), not the priority delay.
      const dead = nextRole('BACKUP', 'partner-dead', { ...c, partnerLast: 'PRIMARY', holdsState: false });
      assert.equal(dead?.to, 'FENCING');
      assert.deepEqual(dead?.fence, { wait: 'no-state-delay' });
      assert.match(dead!.cause, /holds none of its state/);
      assert.deepEqual(nextRole('BACKUP', 'partner-dead', { ...c, partnerLast: 'PRIMARY', holdsState: true })?.fence, { wait: 'priority-delay' });
      // A dying gasp is proof: at once, state or not.
      assert.deepEqual(nextRole('BACKUP', 'partner-dead', { ...c, partnerLast: 'PRIMARY', partnerGone: true, holdsState: false })?.fence, { wait: 'now' });
      // Two backups: no primary is at stake, the symmetric fence delay as always.
      assert.deepEqual(nextRole('BACKUP', 'partner-dead', { ...c, partnerLast: 'BACKUP', holdsState: false })?.fence, { wait: c.preferred ? 'now' : 'fence-delay' });
    }
    assert.equal(nextRole('FENCING', 'partner-primary', { ...pref, partnerHung: true }), undefined);
    assert.equal(nextRole('FENCING', 'partner-primary', pref)?.to, 'BACKUP', 'a partner back and healthy: fencing abandoned');
  });

  it('a dying gasp (partner-gone): a BACKUP fences its primary at once, a PRIMARY its backup at once and serves on; a starting or waiting board does nothing on it (it falls silent next)', () => {
    for (const c of [pref, notPref]) {
      const b = nextRole('BACKUP', 'partner-gone', { ...c, partnerLast: 'PRIMARY' });
      assert.equal(b?.to, 'FENCING');
      assert.deepEqual(b?.fence, { wait: 'now' });
      const p = nextRole('PRIMARY', 'partner-gone', { ...c, partnerLast: 'BACKUP' });
      assert.equal(p?.to, 'PRIMARY');
      assert.deepEqual(p?.fence, { wait: 'now' });
      for (const r of ['STARTING', 'WAITING', 'FENCING', 'STOPPING'] as const) assert.equal(nextRole(r, 'partner-gone', c), undefined, r);
      // A board in FAULT (it handed over) whose partner dies is the only one left: it fences and serves what it has.
      assert.deepEqual(nextRole('FAULT', 'partner-gone', c)?.fence, { wait: 'now' });
      assert.equal(nextRole('FAULT', 'partner-dead', { ...c, partnerLast: 'PRIMARY' })?.to, 'FENCING');
      // Its silence after the gasp is no partition either: no priority delay, no confirmation.
      assert.deepEqual(nextRole('BACKUP', 'partner-dead', { ...c, partnerLast: 'PRIMARY', partnerGone: true })?.fence, { wait: 'now' });
      assert.deepEqual(nextRole('PRIMARY', 'partner-dead', { ...c, partnerLast: 'BACKUP', partnerGone: true })?.fence, { wait: 'now' });
    }
  });

  it('safe start-up: with wait-for-partner a board that heard nobody waits, neither fencing nor serving; fence-then-serve fences (left off) first', () => {
    const t = nextRole('STARTING', 'startup-timeout', pref);
    assert.equal(t?.to, 'WAITING', 'the default policy');
    assert.equal(t?.fence, undefined);
    assert.equal(nextRole('STARTING', 'startup-timeout', { ...pref, startup: 'wait-for-partner' })?.to, 'WAITING');
    const f = nextRole('STARTING', 'startup-timeout', { ...pref, startup: 'fence-then-serve' });
    assert.equal(f?.to, 'FENCING');
    assert.deepEqual(f?.fence, { wait: 'now', keepOff: true });
    assert.deepEqual(nextRole('STARTING', 'startup-timeout', { ...notPref, startup: 'fence-then-serve' })?.fence, { wait: 'fence-delay', keepOff: true });
    // A WAITING board: nothing happens by itself; it hears its partner, or the operator speaks.
    for (const ev of ['startup-timeout', 'partner-dead', 'partner-misconfigured', 'fence-ok', 'takeover', 'switchover'] as const) {
      assert.equal(nextRole('WAITING', ev, pref), undefined, `WAITING + ${ev}`);
    }
    assert.equal(nextRole('WAITING', 'partner-starting', pref)?.to, 'PRIMARY');
    assert.equal(nextRole('WAITING', 'partner-starting', notPref)?.to, 'BACKUP');
    assert.equal(nextRole('WAITING', 'partner-backup', notPref)?.to, 'PRIMARY');
    // fence-then-serve retries a fence that failed from WAITING; wait-for-partner never fences.
    assert.equal(nextRole('WAITING', 'startup-timeout', { ...pref, startup: 'fence-then-serve' })?.to, 'FENCING');
  });

  it('start-alone (operator): from STARTING or WAITING, fence at once, then serve; a failed fence goes back to waiting', () => {
    for (const s of ['STARTING', 'WAITING'] as const) {
      const t = nextRole(s, 'start-alone', pref);
      assert.equal(t?.to, 'FENCING');
      assert.deepEqual(t?.fence, { wait: 'now' });
    }
    for (const s of ['BACKUP', 'PRIMARY', 'FENCING', 'FAULT', 'STOPPING'] as const) assert.equal(nextRole(s, 'start-alone', pref), undefined, s);
    assert.equal(nextRole('FENCING', 'fence-failed', pref)?.to, 'WAITING', 'never heard: back to waiting, not BACKUP');
    assert.match(nextRole('FENCING', 'fence-failed', pref)!.cause, /^FENCING FAILED/);
  });

  it('a partner heard only with a bad MAC is alive and misconfigured: wait, never fence it', () => {
    assert.equal(nextRole('STARTING', 'partner-misconfigured', pref)?.to, 'WAITING');
    for (const startup of ['wait-for-partner', 'fence-then-serve'] as const) {
      const t = nextRole('STARTING', 'startup-timeout', { ...pref, startup, partnerMisconfigured: true });
      assert.equal(t?.to, 'WAITING');
      assert.equal(t?.fence, undefined);
      assert.equal(nextRole('WAITING', 'startup-timeout', { ...pref, startup, partnerMisconfigured: true }), undefined);
    }
    for (const s of ['BACKUP', 'PRIMARY', 'FENCING', 'FAULT', 'WAITING'] as const) assert.equal(nextRole(s, 'partner-misconfigured', pref), undefined, s);
  });

  it('two primaries after a heal: the less preferred steps down', () => {
    assert.equal(nextRole('PRIMARY', 'partner-primary', notPref)?.to, 'BACKUP');
    assert.equal(nextRole('PRIMARY', 'partner-primary', pref), undefined);
  });

  it('every state handles stop, every rule names its cause, and every move to FENCING orders a fence', () => {
    const contexts: RoleContext[] = [];
    for (const preferred of [true, false]) {
      for (const partnerLast of [undefined, 'PRIMARY', 'BACKUP', 'STOPPING'] as const) {
        for (const startup of ['wait-for-partner', 'fence-then-serve'] as const) contexts.push({ preferred, partnerLast, startup }, { preferred, partnerLast, startup, partnerMisconfigured: true });
      }
    }
    for (const state of ROLES) {
      if (state !== 'STOPPING') assert.equal(nextRole(state, 'stop', pref)?.to, 'STOPPING', state);
      for (const [ev, rule] of Object.entries(ROLE_TABLE[state])) {
        for (const c of contexts) {
          const t = typeof rule === 'function' ? rule(c) : rule;
          if (!t) continue;
          assert.ok(t.cause.length > 5, `${state} + ${ev}`);
          if (t.to === 'FENCING') assert.ok(t.fence, `${state} + ${ev} -> FENCING orders a fence`);
          if (t.fence) assert.ok(t.to === 'FENCING' || (state === 'PRIMARY' && t.to === 'PRIMARY'), `${state} + ${ev}: only FENCING or a serving PRIMARY fences`);
        }
      }
    }
  });

  it('WAITING is appended to the wire roles (the frame encodes the index)', () => {
    assert.deepEqual(ROLES.slice(0, 6), ['STARTING', 'BACKUP', 'PRIMARY', 'FENCING', 'FAULT', 'STOPPING']);
    assert.equal(ROLES.indexOf('WAITING'), 6);
  });
});
