/**
 * SLIP (RFC 1055) framing for the serial partner link. The decoder is bounded: a frame longer than
 * maxFrame (line noise, a cable on the wrong port) is dropped and counted, never buffered without
 * end — serialport's SlipDecoder grows its buffer without limit and copies per byte, which does not
 * fit a link that must survive garbage for years. Pure, no I/O.
 */
const END = 0xc0;
const ESC = 0xdb;
const ESC_END = 0xdc;
const ESC_ESC = 0xdd;

export class SlipFrameDecoder {
  private buf: Buffer;
  private len = 0;
  private escaped = false;
  private overflowed = false;
  oversized = 0;
  badEscapes = 0;

  constructor(private readonly onFrame: (frame: Buffer) => void, readonly maxFrame = 256) {
    this.buf = Buffer.alloc(maxFrame);
  }

  push(chunk: Buffer): void {
    for (let i = 0; i < chunk.length; i++) {
      let b = chunk[i]!;
      if (b === END) {
        if (this.overflowed) this.oversized++;
        else if (this.len > 0 && !this.escaped) this.onFrame(Buffer.from(this.buf.subarray(0, this.len)));
        this.len = 0;
        this.escaped = false;
        this.overflowed = false;
        continue;
      }
      if (this.escaped) {
        this.escaped = false;
        if (b === ESC_END) b = END;
        else if (b === ESC_ESC) b = ESC;
        else { this.badEscapes++; this.overflowed = true; continue; } // protocol violation: drop this frame
      } else if (b === ESC) {
        this.escaped = true;
        continue;
      }
      if (this.overflowed) continue;
      if (this.len >= this.maxFrame) { this.overflowed = true; continue; }
      this.buf[this.len++] = b;
    }
  }
}

/** SLIP-encodes one frame (END-terminated, with a leading END to flush line noise). */
export function slipEncode(frame: Buffer): Buffer {
  const out: number[] = [END];
  for (const b of frame) {
    if (b === END) out.push(ESC, ESC_END);
    else if (b === ESC) out.push(ESC, ESC_ESC);
    else out.push(b);
  }
  out.push(END);
  return Buffer.from(out);
}
