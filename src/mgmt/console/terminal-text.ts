/**
 * What a command's output becomes on the serial line: LF → CR LF (a serial terminal needs both), and,
 * unless the user turned ANSI on, every escape sequence and stray control byte removed — a dumb
 * terminal must never see them as garbage. Streaming: state survives chunk boundaries.
 */

/** Control bytes a dumb terminal handles: BEL, BS, TAB, LF, CR. */
const KEEP = new Set([0x07, 0x08, 0x09, 0x0a, 0x0d]);

export class TerminalText {
  private prevCR = false;
  /** 0 none, 1 after ESC, 2 in CSI, 3 in OSC/DCS/APC/PM string, 4 ESC inside such a string, 5 ESC + intermediates. */
  private esc = 0;

  constructor(public ansi = false) {}

  convert(chunk: Uint8Array): Buffer {
    const out = Buffer.allocUnsafe(chunk.length * 2);
    let n = 0;
    for (let i = 0; i < chunk.length; i++) {
      const b = chunk[i]!;
      if (!this.ansi) {
        if (this.esc === 1) {
          // ESC [ starts CSI; ESC ] P ^ _ start strings; anything else is a two-byte sequence.
          this.esc = b === 0x5b ? 2 : b === 0x5d || b === 0x50 || b === 0x5e || b === 0x5f ? 3 : b >= 0x20 && b <= 0x2f ? 5 : 0;
          continue;
        }
        if (this.esc === 5) { // ESC ( B and friends: intermediates, then one final byte
          if (b < 0x20 || b > 0x2f) this.esc = 0;
          continue;
        }
        if (this.esc === 2) {
          if (b >= 0x40 && b <= 0x7e) this.esc = 0;
          continue;
        }
        if (this.esc === 3 || this.esc === 4) {
          if (b === 0x07 || (this.esc === 4 && b === 0x5c)) this.esc = 0;
          else this.esc = b === 0x1b ? 4 : 3;
          continue;
        }
        if (b === 0x1b) { this.esc = 1; continue; }
        if (b < 0x20 && !KEEP.has(b)) continue;
        if (b === 0x7f) continue;
      }
      if (b === 0x0a && !this.prevCR) out[n++] = 0x0d;
      out[n++] = b;
      this.prevCR = b === 0x0d;
    }
    return out.subarray(0, n);
  }
}

/** LF → CR LF for text this module writes itself. */
export function crlf(text: string): string {
  return text.replace(/\r?\n/g, '\r\n');
}
