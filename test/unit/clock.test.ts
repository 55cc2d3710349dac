import assert from 'node:assert/strict';
import { FakeClock, systemClock } from '../../src/core/clock.js';

describe('FakeClock', () => {
  it('fires timers only when time reaches them, in due order, reading their due time', () => {
    const c = new FakeClock();
    const fired: Array<[string, number]> = [];
    c.setTimeout(() => fired.push(['b', c.now()]), 20);
    c.setTimeout(() => fired.push(['a', c.now()]), 10);
    c.setTimeout(() => fired.push(['a2', c.now()]), 10);
    c.advance(9);
    assert.deepEqual(fired, []);
    c.advance(11);
    assert.deepEqual(fired, [['a', 1010], ['a2', 1010], ['b', 1020]], 'ties in the order armed');
    assert.equal(c.now(), 1020);
    assert.equal(c.pending, 0);
  });

  it('re-arms intervals from their due time, fires a timer armed by a callback when it falls due, and clears', () => {
    const c = new FakeClock(1);
    const ticks: number[] = [];
    const iv = c.setInterval(() => ticks.push(c.now()), 100);
    let nested = 0;
    c.setTimeout(() => c.setTimeout(() => { nested = c.now(); }, 30), 50);
    c.advance(350);
    assert.deepEqual(ticks, [101, 201, 301]);
    assert.equal(nested, 81);
    c.clearInterval(iv);
    c.clearTimeout(undefined);
    c.advance(1000);
    assert.equal(ticks.length, 3);
  });

  it('sleep() resolves once advanceAsync() passes it, and the awaiting code runs on', async () => {
    const c = new FakeClock();
    const seen: string[] = [];
    void (async () => { await c.sleep(200); seen.push('woke'); c.setTimeout(() => seen.push('then'), 50); })();
    await c.advanceAsync(199);
    assert.deepEqual(seen, []);
    await c.advanceAsync(1);
    assert.deepEqual(seen, ['woke']);
    await c.advanceAsync(50);
    assert.deepEqual(seen, ['woke', 'then']);
  });
});

describe('systemClock', () => {
  it('is monotonic performance time with Node timers behind it', async () => {
    const t0 = systemClock.now();
    let fired = false;
    const cleared = systemClock.setTimeout(() => { fired = true; }, 1);
    systemClock.clearTimeout(cleared);
    await systemClock.sleep(5);
    assert.ok(systemClock.now() >= t0 + 4);
    assert.equal(fired, false);
  });
});
