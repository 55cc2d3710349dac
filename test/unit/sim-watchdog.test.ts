/**
 * The simulated watchdog hardware (src/sim/chassis/watchdog.ts) on a real FIFO: kicks arm it, a
 * starved watchdog fires once, and a reader that was itself starved (chassisd's event loop held
 * up while the board kept kicking) reads the pending kicks before it confirms an expiry, so a
 * healthy board is not reset.
 */
import assert from 'node:assert/strict';
import { closeSync, constants, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SimWatchdog } from '../../src/sim/chassis/watchdog.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('simulated watchdog (FIFO)', () => {
  let dir: string;
  let wd: SimWatchdog | undefined;
  let writer: number | undefined;
  let fired = 0;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'us-simwd-'));
    fired = 0;
    wd = new SimWatchdog({ fifo: join(dir, 'watchdog'), timeoutMs: 50, checkEveryMs: 5, onFire: () => { fired++; } });
    wd.open();
    wd.listen();
    writer = openSync(join(dir, 'watchdog'), constants.O_WRONLY | constants.O_NONBLOCK);
  });

  afterEach(() => {
    if (writer !== undefined) closeSync(writer);
    wd?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('fires once when an armed watchdog is starved', async () => {
    writeSync(writer!, 'k');
    for (let i = 0; i < 100 && fired === 0; i++) await sleep(10);
    assert.equal(fired, 1);
    assert.equal(wd!.status().armed, false);
  });

  it('does not fire while kicks sit unread in the FIFO because the reader was starved', async () => {
    writeSync(writer!, 'k');
    await sleep(20);
    assert.equal(wd!.status().armed, true);
    const kicksBefore = wd!.status().kicks;
    // The reader's event loop is held up for 3 timeouts while the board kicks every 5 ms.
    const start = Date.now();
    let last = start;
    while (Date.now() - start < 150) {
      if (Date.now() - last >= 5) { writeSync(writer!, 'k'); last = Date.now(); }
    }
    await sleep(20); // the loop runs again: timers first, then the FIFO is read
    assert.equal(fired, 0, 'a healthy, kicking board must not be reset');
    assert.ok(wd!.status().kicks > kicksBefore, 'the pending kicks were read');
    assert.equal(wd!.status().armed, true);
  });
});
