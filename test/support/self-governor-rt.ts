/**
 * A process scheduled as the membership process is (every thread SCHED_FIFO, the helpers one
 * priority below and reset-on-fork, the event loop thread not) running the membership process's
 * own governor (src/ha/rt-governor.ts SelfGovernor, real CPU readings, real chrt). Messages from the
 * test: `spin` (its event loop kept busy: an immediate after another, each ~1 ms of work, timers
 * still run, as in the spin seen on the chassis), `stop`. It reports `ready` and `dropped`.
 */
import { execFileSync } from 'node:child_process';
import { SelfGovernor } from '../../src/ha/rt-governor.js';

if (!process.send) throw new Error('usage: self-governor-rt.js (with an IPC channel)');
execFileSync('chrt', ['-a', '-R', '-f', '-p', '19', String(process.pid)]);
execFileSync('chrt', ['-f', '-p', '20', String(process.pid)]);
let spinning = false;
const governor = new SelfGovernor({
  dropped: (reason, threads) => {
    spinning = false;
    process.send!({ t: 'dropped', reason, threads });
  },
});
const spin = () => {
  if (!spinning) return;
  const end = performance.now() + 1;
  while (performance.now() < end) { /* work */ }
  setImmediate(spin);
};
process.on('message', (m: { t: 'spin' | 'stop' }) => {
  if (m.t === 'spin') { spinning = true; setImmediate(spin); }
  if (m.t === 'stop') { spinning = false; governor.stop(); process.exit(0); }
});
process.send({ t: 'ready' });
