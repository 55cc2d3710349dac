/**
 * A fake guest NIC for unit tests (a public test double, like the fake QMP server): records what
 * the controller sends and lets the test play the guest. Never used by the product itself.
 */
import { EventEmitter } from 'node:events';
import type { GuestDatagram, GuestNic } from './nic.js';

export class FakeGuestNic extends EventEmitter implements GuestNic {
  /** Every datagram sent to the guest, in order. */
  readonly sent: GuestDatagram[] = [];
  /** While false, send() drops (like a link QEMU is not connected to). */
  connected = true;
  dropped = 0;
  /**
   * Plays the guest: called for every datagram sent while connected; a payload it returns is sent
   * back (on the next turn of the event loop) from the datagram's destination port to its source port.
   */
  responder?: (d: GuestDatagram) => Buffer | string | undefined;

  send(srcPort: number, dstPort: number, payload: Buffer): boolean {
    if (!this.connected) {
      this.dropped++;
      return false;
    }
    const d = { srcPort, dstPort, payload };
    this.sent.push(d);
    const back = this.responder?.(d);
    if (back !== undefined) setImmediate(() => this.fromGuest(dstPort, srcPort, back));
    return true;
  }

  /** The guest sends a datagram to the controller. */
  fromGuest(srcPort: number, dstPort: number, payload: Buffer | string): void {
    this.emit('datagram', { srcPort, dstPort, payload: Buffer.isBuffer(payload) ? payload : Buffer.from(payload) } satisfies GuestDatagram);
  }

  /** The guest answers the i-th datagram sent (from its destination port back to its source port). */
  answer(i: number, payload: Buffer | string): void {
    const s = this.sent[i];
    if (!s) throw new Error(`no datagram ${i} was sent (${this.sent.length} so far)`);
    this.fromGuest(s.dstPort, s.srcPort, payload);
  }
}
