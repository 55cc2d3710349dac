/**
 * A stand-in for the external AUTH service (an HLR in a real network): answers `AUTHQ <sub>` with
 * `AUTHR <sub> OK`, or `DENY` when the subscriber matches the deny pattern. For the simulated
 * chassis, tests and benchmarks; a real deployment points the board profile at the real service.
 */
import { createSocket, type Socket } from 'node:dgram';
import { UsError } from '../core/errors.js';

export interface HlrOptions {
  address: string;
  port: number;
  /** Subscribers matching this are denied. */
  deny?: RegExp;
}

export class Hlr {
  private socket?: Socket;
  queries = 0;
  denied = 0;
  malformed = 0;
  constructor(readonly o: HlrOptions) {}

  async start(): Promise<void> {
    const s = createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      s.once('error', (e) => reject(new UsError('US_ERR_ADDRESS_IN_USE', `AUTH service ${this.o.address}:${this.o.port}: ${e.message}`)));
      s.bind(this.o.port, this.o.address, () => resolve());
    });
    s.on('error', () => undefined);
    s.on('message', (msg, rinfo) => {
      const m = /^AUTHQ ([A-Za-z0-9_.+-]{1,32})\s*$/.exec(msg.toString('latin1'));
      if (!m) { this.malformed++; return; }
      this.queries++;
      const deny = this.o.deny?.test(m[1]!) ?? false;
      if (deny) this.denied++;
      s.send(`AUTHR ${m[1]} ${deny ? 'DENY' : 'OK'}`, rinfo.port, rinfo.address);
    });
    this.socket = s;
  }

  close(): void {
    this.socket?.close();
    this.socket = undefined;
  }
}
