/**
 * The escape sequence that ends a guest-console attachment, as in conserver: Ctrl-E c, then a command
 * character — `.` detaches, `?` lists the commands, `r` replays the recent console log. Any other
 * byte after Ctrl-E or Ctrl-E c is not an escape: the held bytes go to the guest unchanged, so a
 * guest that needs a literal Ctrl-E still gets it. Pure; survives a sequence split across reads.
 */

export const ESCAPE_HELP = 'Ctrl-E c .';
export type EscapeCommand = '.' | '?' | 'r';
const COMMANDS = new Set<number>([0x2e /* . */, 0x3f /* ? */, 0x72 /* r */]);
const CTRL_E = 0x05;
const C = 0x63;

export interface EscapeResult {
  /** Bytes for the guest. */
  forward: Buffer;
  /** The escape command typed, if any; input after it is in `rest`. */
  command?: EscapeCommand;
  rest: Buffer;
}

export class EscapeDetector {
  /** 0: nothing held; 1: Ctrl-E held; 2: Ctrl-E c held. */
  private held = 0;

  feed(input: Buffer): EscapeResult {
    const out: number[] = [];
    for (let i = 0; i < input.length; i++) {
      const b = input[i]!;
      if (this.held === 0) {
        if (b === CTRL_E) this.held = 1; else out.push(b);
      } else if (this.held === 1) {
        if (b === C) this.held = 2;
        else {
          out.push(CTRL_E);
          if (b === CTRL_E) continue; // stays held: a new sequence may start here
          this.held = 0;
          out.push(b);
        }
      } else {
        this.held = 0;
        if (COMMANDS.has(b)) return { forward: Buffer.from(out), command: String.fromCharCode(b) as EscapeCommand, rest: input.subarray(i + 1) };
        out.push(CTRL_E, C);
        if (b === CTRL_E) this.held = 1; else out.push(b);
      }
    }
    return { forward: Buffer.from(out), rest: Buffer.alloc(0) };
  }

  reset(): void {
    this.held = 0;
  }
}
