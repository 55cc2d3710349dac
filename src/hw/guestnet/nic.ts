/**
 * The guest NIC seam: what the guest's ports (src/guest/guest-port.ts) use of the wire to the guest.
 * GuestLink (link.ts) is the real one, over QEMU's stream netdev; FakeGuestNic (fake-nic.ts) is the
 * test double. Listening, connection state and frame counters stay with the supervisor, which owns
 * the concrete link.
 */

/** One UDP datagram between the controller and the guest, on the private wire. */
export interface GuestDatagram {
  srcPort: number;
  dstPort: number;
  payload: Buffer;
}

export interface GuestNic {
  /**
   * Sends one UDP datagram to the guest, from the controller's address. False when it could not be
   * sent (the guest's NIC is not connected: the datagram is dropped and counted).
   */
  send(srcPort: number, dstPort: number, payload: Buffer): boolean;
  /** Datagrams the guest sent to the controller's address. */
  on(ev: 'datagram', fn: (d: GuestDatagram) => void): this;
}
