/**
 * In-memory partner links for membership tests: what one side sends, the other receives in a later
 * turn of the event loop (as from a socket), unless the link is cut. `inject` delivers a frame as if
 * it had arrived; `sentFrames` keeps what was sent when `record` is on (a capture of the wire).
 */
import { EventEmitter } from 'node:events';
import type { PartnerLink } from '../../src/hw/links/links.js';

export class MemLink extends EventEmitter implements PartnerLink {
  peer?: MemLink;
  cut = false;
  record = false;
  readonly sentFrames: Buffer[] = [];
  readonly counters = { txFrames: 0, txDropped: 0, rxFrames: 0, errors: 0 };
  constructor(readonly name: 'ethernet' | 'serial') { super(); }
  async open(): Promise<void> {}
  async close(): Promise<void> {}
  send(frame: Buffer): boolean {
    this.counters.txFrames++;
    if (this.record) this.sentFrames.push(Buffer.from(frame));
    if (!this.cut && this.peer) setImmediate(() => { this.peer!.counters.rxFrames++; this.peer!.emit('frame', frame); });
    return true;
  }
  inject(frame: Buffer): void { this.emit('frame', frame); }
}

export function memLinkPair(name: 'ethernet' | 'serial'): [MemLink, MemLink] {
  const a = new MemLink(name);
  const b = new MemLink(name);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
