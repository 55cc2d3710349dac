/**
 * The simulated power controller (on a real chassis: the shelf manager). A unix socket speaking a
 * line protocol, one reply line per request line:
 *   OFF <board>    → kills the board, which stays off      → OK OFF <board>
 *   ON <board>     → boots it (no-op when on)              → OK ON <board>
 *   RESET <board>  → kills it, boots it after the delay    → OK RESET <board> (once killed: the boot follows)
 *                    a board that is off stays off          → OK OFF <board>
 *   STATUS         → one line of JSON
 *   STATUS <board> → its power (also while broken)     → OK ON <board> | OK OFF <board>
 *   anything else  → ERR <reason>
 * OFF and RESET answer at the power cut: every process of the board SIGKILLed (none runs another
 * user-space instruction) and its NIC silent; a fence that says OK is done. The processes' teardown
 * (a QEMU's guest memory) goes on after the answer, as a blade's power cut does not wait for it.
 * A client that closes its side after its lines still gets every reply, then the connection closes.
 * `break()` injects a fencing failure: OFF and RESET answer `ERR BROKEN` until `fix()`.
 */
import { chmodSync, rmSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { Logger } from '../../core/log.js';
import { parseBoardName, type ChassisBoard } from './layout.js';
import type { PowerState, ResetCause } from './board.js';

/** What the power controller drives on each board. */
export interface PowerTarget {
  readonly power: PowerState;
  powerOn(): Promise<void>;
  /** `killed` at the power cut (its processes SIGKILLed, its NIC silent), before they are gone. */
  powerOff(cause: ResetCause, killed?: () => void): Promise<void>;
  /** `killed` at the power cut (before its processes are gone and it boots again); resolves false for a board that was off (left off, `killed` not called). */
  reset(cause: ResetCause, killed?: () => void): Promise<boolean>;
}

export interface PowerRequestRecord {
  at: string;
  request: string;
  reply: string;
}

/** Longest request line accepted. */
const MAX_LINE = 256;

export class PowerController {
  private server?: Server;
  private brokenNow = false;
  private readonly recent: PowerRequestRecord[] = [];
  requests = 0;

  constructor(private readonly boards: Record<ChassisBoard, PowerTarget>, private readonly log: Logger) {}

  get broken(): boolean {
    return this.brokenNow;
  }

  break(): void {
    this.brokenNow = true;
    this.log.warn('power controller broken: OFF and RESET will fail');
  }

  fix(): void {
    this.brokenNow = false;
    this.log.info('power controller fixed');
  }

  async listen(socketPath: string): Promise<void> {
    rmSync(socketPath, { force: true });
    // Half-open: a client may send its line and close its side (socat, the simulated BMCs' chassis
    // control); it still gets every reply, then the close.
    this.server = createServer({ allowHalfOpen: true }, (s) => this.serve(s));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(socketPath, () => resolve());
    });
    chmodSync(socketPath, 0o600);
  }

  private serve(sock: Socket): void {
    let buf = '';
    let work: Promise<void> = Promise.resolve();
    sock.setEncoding('utf8');
    sock.on('error', () => undefined);
    sock.on('end', () => { void work.then(() => { if (!sock.destroyed) sock.end(); }); });
    sock.on('data', (d: string) => {
      buf += d;
      if (buf.length > MAX_LINE && !buf.includes('\n')) {
        sock.end('ERR line too long\n');
        buf = '';
        return;
      }
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (!line) continue;
        // Replies go out in request order, one line each.
        work = work.then(async () => {
          const reply = await this.handle(line);
          if (!sock.destroyed) sock.write(`${reply}\n`);
        });
      }
    });
  }

  /** Carries out one request line and returns the reply line. */
  async handle(line: string): Promise<string> {
    this.requests++;
    const reply = await this.answer(line);
    this.recent.push({ at: new Date().toISOString(), request: line.slice(0, 80), reply });
    if (this.recent.length > 10) this.recent.shift();
    (reply.startsWith('OK') ? this.log.info.bind(this.log) : this.log.warn.bind(this.log))({ request: line.slice(0, 80), reply }, `power controller: ${line.slice(0, 80)} → ${reply}`);
    return reply;
  }

  private async answer(line: string): Promise<string> {
    const [verb = '', target, ...extra] = line.split(/\s+/);
    const op = verb.toUpperCase();
    if (op === 'STATUS' && target === undefined) return JSON.stringify(this.status());
    if (op !== 'ON' && op !== 'OFF' && op !== 'RESET' && op !== 'STATUS') return `ERR unknown request "${line.slice(0, 40)}" (ON|OFF|RESET|STATUS <board>, STATUS)`;
    if (target === undefined || extra.length) return `ERR usage: ${op} <board>`;
    let name: ChassisBoard;
    try {
      name = parseBoardName(target, Object.keys(this.boards) as ChassisBoard[]);
    } catch {
      return `ERR unknown board "${target.slice(0, 40)}"`;
    }
    const board = this.boards[name];
    if (op === 'STATUS') return `OK ${board.power === 'on' ? 'ON' : 'OFF'} ${name}`;
    if (this.brokenNow && op !== 'ON') return 'ERR BROKEN';
    try {
      if (op === 'ON') await board.powerOn();
      else if (op === 'OFF') {
        // Answered at the power cut (its processes SIGKILLed, its NIC silent), as a shelf manager does.
        await new Promise<void>((resolve, reject) => { board.powerOff('fence', resolve).then(resolve, reject); });
      } else {
        // Answered once the board is down, not once it is up again: a fence is complete then.
        const wasOn = await new Promise<boolean>((resolve, reject) => {
          board.reset('power-controller', () => resolve(true)).then((on) => resolve(on), reject);
        });
        if (!wasOn) return `OK OFF ${name}`;
      }
    } catch (e) {
      return `ERR ${(e as Error).message.replace(/\s+/g, ' ').slice(0, 120)}`;
    }
    return `OK ${op} ${name}`;
  }

  status(): { broken: boolean; boards: Record<string, PowerState>; requests: number; recent: PowerRequestRecord[] } {
    return {
      broken: this.brokenNow,
      boards: Object.fromEntries(Object.entries(this.boards).map(([n, b]) => [n, b.power])),
      requests: this.requests,
      recent: [...this.recent],
    };
  }

  close(): void {
    this.server?.close();
    this.server = undefined;
  }
}

/** Sends one request line to a power controller socket and resolves with the reply line. */
export function powerRequest(socketPath: string, line: string, timeoutMs = 5000): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(socketPath);
    let buf = '';
    const timer = setTimeout(() => { s.destroy(); reject(new Error(`power controller ${socketPath}: no answer within ${timeoutMs} ms`)); }, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write(`${line}\n`));
    s.on('error', (e) => { clearTimeout(timer); reject(e); });
    s.on('data', (d: string) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      clearTimeout(timer);
      s.destroy();
      resolve(buf.slice(0, nl));
    });
  });
}
