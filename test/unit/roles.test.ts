import assert from 'node:assert/strict';
import { ROLE_TABLE, isPreferred, nextRole } from '../../src/ha/roles.js';
import { ROLES } from '../../src/ha/frame.js';

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
    assert.equal(nextRole('BACKUP', 'partner-primary', pref), undefined);
  });

  it('never promotes over a silent partner without fencing it first', () => {
    for (const state of ROLES) {
      const t = nextRole(state, 'partner-dead', pref);
      assert.notEqual(t?.to, 'PRIMARY', `${state} + partner-dead`);
      const s = nextRole(state, 'startup-timeout', pref);
      assert.notEqual(s?.to, 'PRIMARY', `${state} + startup-timeout`);
    }
    assert.equal(nextRole('BACKUP', 'partner-dead', pref)?.to, 'FENCING');
    assert.equal(nextRole('FENCING', 'fence-ok', pref)?.to, 'PRIMARY');
    assert.equal(nextRole('FENCING', 'fence-failed', pref)?.to, 'BACKUP');
  });

  it('a partner whose controller is hung is fenced by its backup before it promotes, preferred or not; nobody else acts on it', () => {
    for (const c of [pref, notPref]) assert.equal(nextRole('BACKUP', 'partner-hung', c)?.to, 'FENCING');
    for (const state of ROLES) if (state !== 'BACKUP') assert.equal(nextRole(state, 'partner-hung', pref), undefined, `${state} + partner-hung`);
  });

  it('a primary keeps serving when the partner goes silent (it does not fence)', () => {
    assert.equal(nextRole('PRIMARY', 'partner-dead', pref), undefined);
  });

  it('two primaries after a heal: the less preferred steps down', () => {
    assert.equal(nextRole('PRIMARY', 'partner-primary', notPref)?.to, 'BACKUP');
    assert.equal(nextRole('PRIMARY', 'partner-primary', pref), undefined);
  });

  it('every state handles stop, and every rule names its cause', () => {
    for (const state of ROLES) {
      if (state !== 'STOPPING') assert.equal(nextRole(state, 'stop', pref)?.to, 'STOPPING', state);
      for (const [ev, rule] of Object.entries(ROLE_TABLE[state])) {
        for (const c of [pref, notPref]) {
          const t = typeof rule === 'function' ? rule(c) : rule;
          if (t) assert.ok(t.cause.length > 5, `${state} + ${ev}`);
        }
      }
    }
  });
});
