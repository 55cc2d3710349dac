/**
 * Writes to a non-blocking tty on the calling thread, never through serialport's write. Its write
 * waits for a full tty with a native poller that, once it has waited for "writable", keeps
 * alternating readable/writable while input waits for the thread pool's read: in a process at
 * SCHED_FIFO whose pool threads run one priority lower, that is a livelock (the event loop spinning
 * at the kernel's real-time cap, the read never done). Both the membership process's serial link
 * and the simulated chassis' serial relay run real-time, so both write through this.
 *
 * What the tty did not take waits here (bounded by the caller) and goes out before anything newer.
 */
import type { SerialPort } from 'serialport';

const NOTHING = Buffer.alloc(0);

/** The descriptor of an open serialport port (its binding holds it), or undefined when it is not open. */
export function openFd(port: SerialPort | undefined): number | undefined {
  if (!port?.isOpen) return undefined;
  const fd = (port.port as { fd?: number | null } | undefined)?.fd;
  return typeof fd === 'number' ? fd : undefined;
}

export class TtyWriter {
  private unsent: Buffer = NOTHING;

  /**
   * `write`: one non-blocking write of the bytes, returning how many the tty took (throws EAGAIN
   * when none). `onError`: a write that failed otherwise (the bytes then wait as on a full tty).
   */
  constructor(private readonly write: (data: Buffer) => number, private readonly onError: (e: Error) => void = () => undefined) {}

  /** Bytes the tty has not taken yet. */
  get pending(): number {
    return this.unsent.length;
  }

  /** Writes what waits, as far as the tty takes it now. */
  flush(): void {
    if (this.unsent.length) this.unsent = this.out(this.unsent);
  }

  /**
   * Flushes, then writes `data` behind what still waits; refuses it (false, nothing written) when
   * that would leave more than `maxPending` bytes waiting.
   */
  send(data: Buffer, maxPending: number): boolean {
    this.flush();
    if (this.unsent.length + data.length > maxPending) return false;
    // Behind bytes the tty has not taken, new bytes wait their turn (never written ahead of them).
    this.unsent = this.unsent.length ? Buffer.concat([this.unsent, data]) : this.out(data);
    return true;
  }

  /** Forgets what waits (the tty was closed or reopened). */
  reset(): void {
    this.unsent = NOTHING;
  }

  private out(data: Buffer): Buffer {
    let n = 0;
    try {
      n = this.write(data);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EAGAIN' && code !== 'EWOULDBLOCK' && code !== 'EINTR') this.onError(e as Error);
    }
    return n >= data.length ? NOTHING : Buffer.from(data.subarray(n));
  }
}
