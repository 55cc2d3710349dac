/**
 * A SerialLink in a process of its own, scheduled as the membership process is (every thread
 * SCHED_FIFO, the libuv pool one priority below the event loop): serial-link.test.ts runs it pinned
 * to one core. Messages from the test: `flood` (a frame every millisecond, more than the line
 * takes), `pace` (one every 5 ms), `report` (its link's counters), `stop`.
 */
import { execFileSync } from 'node:child_process';
import { SerialLink } from '../../src/hw/links/links.js';

const path = process.argv[2];
if (!path || !process.send) throw new Error('usage: serial-link-rt.js <tty> (with an IPC channel)');
const link = new SerialLink({ path, baudRate: 115200 });
await link.open();
execFileSync('chrt', ['-a', '-R', '-f', '-p', '19', String(process.pid)]);
execFileSync('chrt', ['-R', '-f', '-p', '20', String(process.pid)]);
const frame = Buffer.alloc(46, 0x5a);
let timer: NodeJS.Timeout | undefined;
process.on('message', (m: { t: 'flood' | 'pace' | 'report' | 'stop' }) => {
  switch (m.t) {
    case 'flood':
    case 'pace':
      clearInterval(timer);
      timer = setInterval(() => link.send(frame), m.t === 'flood' ? 1 : 5);
      break;
    case 'report':
      process.send!({ t: 'report', ...link.counters });
      break;
    case 'stop':
      clearInterval(timer);
      void link.close().then(() => process.exit(0));
      break;
  }
});
process.send({ t: 'ready' });
