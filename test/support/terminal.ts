/**
 * The user's end of a board's serial console in integration tests: a socat pty pair (the board end
 * opened by the console with serialport, this end opened here the same way, as screen or picocom
 * would) and a Terminal that types and waits for text. Cleans up only the socat it started, by pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { SerialPort } from 'serialport';
import { eventually } from './rig.js';

/** A socat pty pair `pty,raw,echo=0` with two stable links; killed by pid. */
export async function ptyPair(a: string, b: string): Promise<ChildProcess> {
  const p = spawn('socat', [`pty,raw,echo=0,link=${a}`, `pty,raw,echo=0,link=${b}`], { stdio: ['ignore', 'ignore', 'inherit'] });
  await eventually(() => (existsSync(a) && existsSync(b) ? true : undefined), 5000, 20);
  return p;
}

export async function stopPty(p: ChildProcess | undefined): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  await Promise.race([gone, new Promise((r) => setTimeout(r, 2000))]);
  if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
}

/** The user's terminal: the other end of the pty pair. */
export class Terminal {
  transcript = '';
  private port?: SerialPort;

  async open(path: string): Promise<void> {
    const port = new SerialPort({ path, baudRate: 115200, autoOpen: false });
    await new Promise<void>((resolve, reject) => port.open((e) => (e ? reject(e) : resolve())));
    port.on('data', (d: Buffer) => { this.transcript += d.toString('latin1'); });
    port.on('error', () => undefined);
    this.port = port;
  }

  async close(): Promise<void> {
    const p = this.port;
    this.port = undefined;
    if (p?.isOpen) await new Promise<void>((r) => p.close(() => r()));
  }

  type(s: string | Buffer): void {
    this.port!.write(typeof s === 'string' ? Buffer.from(s, 'latin1') : s);
  }

  get mark(): number {
    return this.transcript.length;
  }

  /** Waits (bounded) for text after `from`; returns the index just past it. */
  async until(text: string | RegExp, from: number, timeoutMs = 15000): Promise<number> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const tail = this.transcript.slice(from);
      const m = typeof text === 'string' ? (tail.includes(text) ? { i: tail.indexOf(text), n: text.length } : undefined) : (() => { const r = text.exec(tail); return r ? { i: r.index, n: r[0].length } : undefined; })();
      if (m) return from + m.i + m.n;
      if (Date.now() > end) throw new Error(`timed out waiting for ${JSON.stringify(String(text))}; terminal shows ${JSON.stringify(tail.slice(-600))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Types a command at the shell prompt and returns what it printed before the next prompt. */
  async run(command: string, prompt: string, timeoutMs = 30000): Promise<string> {
    const at = this.mark;
    this.type(`${command}\r`);
    const start = await this.until(`${command}\r\n`, at, timeoutMs);
    const end = await this.until(prompt, start, timeoutMs);
    return this.transcript.slice(start, end - prompt.length);
  }
}
