/** One raw connection to a control socket, speaking node-ipc's framing (JSON then \f) by hand: bad input for tests. */
import { connect, type Socket } from 'node:net';

export class RawControl {
  readonly sock: Socket;
  received = '';
  closed = false;

  private constructor(sock: Socket) {
    this.sock = sock;
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => { this.received += d; });
    sock.on('close', () => { this.closed = true; });
    sock.on('error', () => undefined);
  }

  static open(path: string): Promise<RawControl> {
    return new Promise((resolve, reject) => {
      const s = connect(path);
      s.once('connect', () => resolve(new RawControl(s)));
      s.once('error', reject);
    });
  }

  send(data: string | Buffer): void {
    this.sock.write(data);
  }

  /** Frames received so far, parsed. */
  frames(): Array<{ type: string; data: any }> {
    return this.received.split('\f').filter(Boolean).map((f) => JSON.parse(f) as { type: string; data: any });
  }

  close(): void {
    this.sock.destroy();
  }
}
