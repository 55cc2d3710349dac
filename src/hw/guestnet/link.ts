/**
 * The guest's emulated NIC, seen from the controller: QEMU's `-netdev stream` connects to a unix
 * socket the controller listens on and exchanges Ethernet frames, each prefixed with its length
 * (32-bit big endian). The controller is the guest's only peer: it answers ARP for its own address
 * and exchanges UDP datagrams. The guest's NIC therefore never faces an external network.
 * Owns the socket and frame codec; what the datagrams mean is decided above (guest/guest-port.ts,
 * which sees only the GuestNic seam of nic.ts).
 */
import { EventEmitter } from 'node:events';
import { createServer, type Server, type Socket } from 'node:net';
import { rmSync } from 'node:fs';
import { corkForThisTick } from '../../core/cork.js';
import { UsError } from '../../core/errors.js';
import { buildArpReply, buildUdpFrame, macToBuffer, parseFrame } from './frames.js';
import type { GuestDatagram, GuestNic } from './nic.js';

export interface GuestLinkOptions {
  socketPath: string;
  /** The controller's address on the private wire (the guest's gateway). */
  controllerIp: string;
  /** The controller's MAC on the private wire. */
  controllerMac: string;
  guestIp: string;
  guestMac: string;
}

export declare interface GuestLink {
  on(ev: 'datagram', fn: (d: GuestDatagram) => void): this;
  on(ev: 'connected' | 'disconnected', fn: () => void): this;
}

const MAX_FRAME = 65536;

export class GuestLink extends EventEmitter implements GuestNic {
  private server?: Server;
  private conn?: Socket;
  private pending: Buffer = Buffer.alloc(0);
  private readonly controllerMac: Buffer;
  private readonly guestMac: Buffer;
  private ipId = 0;
  /** Frames that could not be delivered because QEMU was not connected. */
  dropped = 0;
  framesIn = 0;
  framesOut = 0;

  constructor(readonly options: GuestLinkOptions) {
    super();
    this.controllerMac = macToBuffer(options.controllerMac);
    this.guestMac = macToBuffer(options.guestMac);
  }

  async listen(): Promise<void> {
    rmSync(this.options.socketPath, { force: true });
    const server = createServer((sock) => this.onConnection(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', (e) => reject(new UsError('US_ERR_ADDRESS_IN_USE', `guest NIC socket ${this.options.socketPath}: ${e.message}`)));
      server.listen(this.options.socketPath, () => resolve());
    });
    this.server = server;
  }

  get connected(): boolean {
    return this.conn !== undefined;
  }

  /** Sends one UDP datagram to the guest, from the controller's address. */
  send(srcPort: number, dstPort: number, payload: Buffer): boolean {
    if (!this.conn) {
      this.dropped++;
      return false;
    }
    const frame = buildUdpFrame({
      srcMac: this.controllerMac, dstMac: this.guestMac, srcIp: this.options.controllerIp, dstIp: this.options.guestIp,
      srcPort, dstPort, payload, ipId: this.ipId++,
    });
    this.writeFrame(frame);
    return true;
  }

  async close(): Promise<void> {
    this.conn?.destroy();
    this.conn = undefined;
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    rmSync(this.options.socketPath, { force: true });
  }

  private writeFrame(frame: Buffer): void {
    const hdr = Buffer.alloc(4);
    hdr.writeUInt32BE(frame.length);
    corkForThisTick(this.conn!); // one writev for all the frames of a callback (a replay hands hundreds)
    this.conn!.write(Buffer.concat([hdr, frame]));
    this.framesOut++;
  }

  private onConnection(sock: Socket): void {
    // A new QEMU (restart) replaces the old connection.
    this.conn?.destroy();
    this.conn = sock;
    this.pending = Buffer.alloc(0);
    sock.setNoDelay(true);
    sock.on('data', (chunk: Buffer) => this.onData(chunk));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      if (this.conn === sock) {
        this.conn = undefined;
        this.emit('disconnected');
      }
    });
    this.emit('connected');
  }

  private onData(chunk: Buffer): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    while (this.pending.length >= 4) {
      const len = this.pending.readUInt32BE(0);
      if (len > MAX_FRAME) {
        this.conn?.destroy(); // a corrupt stream: QEMU will be restarted by its supervisor
        return;
      }
      if (this.pending.length < 4 + len) break;
      const frame = this.pending.subarray(4, 4 + len);
      this.pending = this.pending.subarray(4 + len);
      this.framesIn++;
      this.onFrame(frame);
    }
  }

  private onFrame(frame: Buffer): void {
    const p = parseFrame(frame);
    if (p.kind === 'arp-request') {
      if (p.arp.targetIp === this.options.controllerIp) this.writeFrame(buildArpReply(this.controllerMac, this.options.controllerIp, p.arp));
    } else if (p.kind === 'udp') {
      if (p.udp.dstIp !== this.options.controllerIp || p.udp.srcIp !== this.options.guestIp) return;
      this.emit('datagram', { srcPort: p.udp.srcPort, dstPort: p.udp.dstPort, payload: Buffer.from(p.udp.payload) });
    }
  }
}
