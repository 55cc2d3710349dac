/** The controller's event-loop delay windows (src/mgmt/process-info.ts): a blocked loop shows, an idle one does not. */
import assert from 'node:assert/strict';
import { EventLoopDelay } from '../../src/mgmt/process-info.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('controller event-loop delay', function () {
  this.timeout(10000);

  it('a loop blocked for 150 ms shows in the window it happened in, and not in the next one', async () => {
    const d = new EventLoopDelay(400);
    try {
      assert.equal(d.status().lastWindow, null, 'no window over yet');
      await sleep(20);
      const until = performance.now() + 150;
      while (performance.now() < until) { /* block the loop */ }
      await sleep(450);
      const blocked = d.status();
      assert.ok(blocked.lastWindow !== null && blocked.lastWindow.maxMs >= 120, JSON.stringify(blocked));
      assert.ok(blocked.maxMsSinceStart >= 120);
      await sleep(850); // at least one full window with nothing blocking
      const calm = d.status();
      assert.ok(calm.lastWindow!.maxMs < blocked.lastWindow!.maxMs, JSON.stringify(calm));
      assert.ok(calm.maxMsSinceStart >= 120, 'the worst since start is kept');
      assert.equal(calm.windowS, 0.4);
    } finally {
      d.stop();
    }
  });
});
