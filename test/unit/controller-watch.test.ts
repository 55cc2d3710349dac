/**
 * The membership process's view of its controller (src/ha/controller-watch.ts) on a fake clock: a
 * stopped controller is hung at the second look after an alive is late, without waiting for the
 * timing bound; a busy one (late alives, state R or S) only at the bound; the process state is read
 * only while an alive is late; an alive clears the verdict.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { FakeClock } from '../../src/core/clock.js';
import { ControllerWatch } from '../../src/ha/controller-watch.js';
import { procState, procStateReader } from '../../src/hw/proc-state.js';

/** A watch on a fake clock whose process state the test sets; checks at a 5 ms heartbeat. */
function watch(o: { lateMs?: number; hangAfterMs?: number } = {}) {
  const clock = new FakeClock();
  let state: string | undefined = 'S';
  const w = new ControllerWatch({ now: () => clock.now(), lateMs: o.lateMs ?? 30, hangAfterMs: o.hangAfterMs ?? 1000, processState: () => state });
  const verdicts: Array<{ at: number; health: string; reason?: string }> = [] as Array<{ at: number; health: string; reason?: string }>;
  let last = 'ok';
  clock.setInterval(() => {
    const v = w.check();
    if (v.health !== last) { last = v.health; verdicts.push({ at: clock.now(), ...v }); }
  }, 5);
  return { clock, w, verdicts, setState: (s: string | undefined) => { state = s; } };
}

describe('controller watch (membership process side of the controller hang)', () => {
  it('a healthy controller (alive every 20 ms) is never read in /proc and never hung', () => {
    const { clock, w, verdicts } = watch();
    const alive = clock.setInterval(() => w.alive(), 20);
    clock.advance(10000);
    clock.clearInterval(alive);
    assert.equal(verdicts.length, 0);
    assert.equal(w.stateReads, 0);
    const st = w.status();
    assert.equal(st.aliveGapMs.count, 500);
    assert.ok(Math.abs(st.aliveGapMs.max - 20) < 0.1, `max gap ${st.aliveGapMs.max}`);
  });

  it('a stopped controller (state T) is hung one heartbeat after its alive is late, long before the timing bound', () => {
    const { clock, w, verdicts, setState } = watch();
    w.alive();
    setState('T');
    clock.advance(30);
    assert.equal(verdicts.length, 0, 'not late yet at exactly lateMs');
    clock.advance(5); // 35: late, first look finds T
    assert.equal(verdicts.length, 0);
    clock.advance(5); // 40: second look, still T
    assert.equal(verdicts.length, 1);
    assert.equal(verdicts[0]!.at, 1040);
    assert.equal(verdicts[0]!.health, 'hung');
    assert.match(verdicts[0]!.reason!, /stopped \(state T\), no alive for 40 ms/);
    assert.equal(w.stateReads, 2);
    // It stays hung without reading /proc again, until an alive comes.
    clock.advance(100);
    assert.equal(w.stateReads, 2);
    assert.equal(w.check().health, 'hung');
    setState('S');
    w.alive();
    assert.equal(w.check().health, 'ok');
  });

  it('a tracer\'s momentary stop (t at one look only) is not a hang', () => {
    const { clock, w, verdicts, setState } = watch();
    w.alive();
    clock.advance(35);
    setState('t');
    clock.advance(5); // first look that finds t
    setState('S');
    clock.advance(5);
    w.alive();
    clock.advance(200);
    w.alive();
    assert.equal(verdicts.length, 0);
  });

  it('a busy controller (late alives, running) is hung only at the bound, and a late alive clears the suspicion', () => {
    const { clock, w, verdicts, setState } = watch({ hangAfterMs: 400 });
    setState('R');
    w.alive();
    clock.advance(390); // a 390 ms stall: suspicious, not hung
    w.alive();
    clock.advance(5);
    assert.equal(verdicts.length, 0);
    assert.ok(w.stateReads > 0, 'read while late');
    clock.advance(400); // the first look past the bound at 400 ms of silence, confirmed at 405
    assert.equal(verdicts.length, 1);
    assert.equal(verdicts[0]!.at - 1390, 405, 'confirmed one heartbeat after the first look past the bound');
    assert.match(verdicts[0]!.reason!, /main loop silent for 405 ms \(state R; bound 400 ms\)/);
  });

  it('an unreadable process state (gone) counts as not stopped: only the bound applies', () => {
    const { clock, w, verdicts, setState } = watch({ hangAfterMs: 200 });
    w.alive();
    setState(undefined);
    clock.advance(200);
    assert.equal(verdicts.length, 0);
    clock.advance(5);
    assert.equal(verdicts.length, 1);
    assert.match(verdicts[0]!.reason!, /state unknown/);
  });

  it('rejects a bound that is not above the lateness', () => {
    assert.throws(() => new ControllerWatch({ now: () => 1, lateMs: 30, hangAfterMs: 30, processState: () => 'S' }), /lateMs/);
  });

  it('procState and procStateReader read a real process: S while it sleeps, T once SIGSTOPped, nothing once gone', async () => {
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 30000)'], { stdio: 'ignore' });
    const reader = procStateReader(child.pid!);
    try {
      await new Promise((r) => setTimeout(r, 300));
      assert.match(procState(child.pid!) ?? '', /^[SR]$/);
      assert.match(reader() ?? '', /^[SR]$/);
      child.kill('SIGSTOP');
      let s: string | undefined;
      for (let i = 0; i < 100 && s !== 'T'; i++) { s = reader(); await new Promise((r) => setTimeout(r, 10)); }
      assert.equal(s, 'T');
      assert.equal(procState(child.pid!), 'T');
    } finally {
      child.kill('SIGKILL');
    }
    await new Promise((r) => child.once('exit', r));
    assert.equal(reader(), undefined, 'the reader of a process that exited');
    assert.equal(procState(2 ** 22 + 12345), undefined, 'no such process');
    assert.equal(procStateReader(2 ** 22 + 12345)(), undefined);
  });
});
