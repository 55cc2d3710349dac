/**
 * A SerialLink (or, with `relay-end`, the chassis relay's end of the line: openSerialEnd) in a
 * process of its own, scheduled as the membership process is (every thread SCHED_FIFO, the libuv
 * pool one priority below the event loop): serial-link.test.ts runs it pinned to one core. Messages from the test: `flood` (a frame every millisecond, more than the line
 * takes), `pace` (one every 5 ms), `report` (its link's counters), `stop`.
 */
import { execFileSync } from 'node:child_process';
import { SerialLink } from '../../src/hw/links/links.js';
import { SlipFrameDecoder, slipEncode } from '../../src/hw/serial/slip.js';
import { openSerialEnd } from '../../src/sim/chassis/serial-relay.js';

const path = process.argv[2];
const mode = process.argv[3] ?? 'link';
if (!path || !process.send || (mode !== 'link' && mode !== 'relay-end')) throw new Error('usage: serial-link-rt.js <tty> [link|relay-end] (with an IPC channel)');
const frame = Buffer.alloc(46, 0x5a);
let send: () => void;
let counters: () => { txFrames: number; txDropped: number; rxFrames: number; errors: number };
let close: () => Promise<void>;
if (mode === 'link') {
  const link = new SerialLink({ path, baudRate: 115200 });
  await link.open();
  send = () => void link.send(frame);
  counters = () => link.counters;
  close = () => link.close();
} else {
  // The chassis' end of the line (the relay's write path), with the link's bound on what may wait.
  const c = { txFrames: 0, txDropped: 0, rxFrames: 0, errors: 0 };
  const end = await openSerialEnd(path, () => { c.errors++; });
  const decoder = new SlipFrameDecoder(() => { c.rxFrames++; });
  end.onData((d) => decoder.push(d));
  const encoded = slipEncode(frame);
  send = () => {
    if (end.pending() + encoded.length > 512) c.txDropped++;
    else { end.write(encoded); c.txFrames++; }
  };
  counters = () => c;
  close = () => end.close();
}
execFileSync('chrt', ['-a', '-R', '-f', '-p', '19', String(process.pid)]);
execFileSync('chrt', ['-R', '-f', '-p', '20', String(process.pid)]);
let timer: NodeJS.Timeout | undefined;
process.on('message', (m: { t: 'flood' | 'pace' | 'report' | 'stop' }) => {
  switch (m.t) {
    case 'flood':
    case 'pace':
      clearInterval(timer);
      timer = setInterval(send, m.t === 'flood' ? 1 : 5);
      break;
    case 'report':
      process.send!({ t: 'report', ...counters() });
      break;
    case 'stop':
      clearInterval(timer);
      void close().then(() => process.exit(0));
      break;
  }
});
process.send({ t: 'ready' });
