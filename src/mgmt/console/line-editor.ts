/**
 * The console's line editor: turns the bytes a terminal sends into edited lines and the bytes to send
 * back (echo, redraws). Pure: no I/O, no timers, so every key can be unit-tested.
 *
 * Plain by default — a dumb terminal sees only printable text, CR LF, BS and BEL. Cursor keys and
 * history work when the terminal *sends* ANSI arrows (ESC [ A …) and are redrawn with backspaces;
 * only when the user turns ANSI on (`set term ansi`) does the editor *emit* escape sequences
 * (erase to end of line, cursor moves, clear screen on Ctrl-L).
 *
 * Keys: printable ASCII inserts; BS/DEL deletes left; Ctrl-U kills the line; Ctrl-W kills a word;
 * Ctrl-A/Ctrl-E or Home/End move; Left/Right move; Up/Down or Ctrl-P/Ctrl-N walk the history;
 * Ctrl-C cancels the line; Ctrl-D on an empty line is end-of-file; Enter (CR, LF or CR LF) ends it.
 * Anything else (other control bytes, unknown escape sequences, 8-bit bytes outside a password) is
 * ignored. The line is bounded: extra characters are refused with one BEL.
 */

export type EditorEvent =
  | { kind: 'line'; text: string }
  | { kind: 'cancel' }
  | { kind: 'eof' };

export interface LineEditorOptions {
  /** Longest line accepted, in bytes (default 1024). */
  maxLength?: number;
  /** Most lines kept in the history (default 100). */
  historySize?: number;
}

export interface FeedResult {
  /** Bytes to send back to the terminal (echo, redraws), as a latin1 string. */
  output: string;
  /** Set when a key ended the line; bytes after it were not consumed. */
  event?: EditorEvent;
  /** How many input bytes were consumed (all of them unless an event came first). */
  consumed: number;
}

const BS = '\b';
const BEL = '\x07';
const ESC = '\x1b';

type EscState = { s: 'none' } | { s: 'esc' } | { s: 'seq'; kind: '[' | 'O'; params: string };

export class LineEditor {
  /** Echo typed characters (off for passwords). */
  echo = true;
  /** The terminal understands ANSI escape sequences (the user said so). */
  ansi = false;
  /** Record lines in the history (off for names and passwords). */
  recordHistory = true;
  private prompt = '';
  private line = '';
  private cursor = 0;
  private esc: EscState = { s: 'none' };
  private lastWasCR = false;
  private belled = false;
  private readonly history: string[] = [];
  /** Position while walking the history; history.length = the line being typed. */
  private historyPos = 0;
  private draft = '';
  private readonly maxLength: number;
  private readonly historySize: number;

  constructor(o: LineEditorOptions = {}) {
    this.maxLength = o.maxLength ?? 1024;
    this.historySize = o.historySize ?? 100;
  }

  /** Starts a new line: returns the prompt to write. */
  begin(prompt: string): string {
    this.prompt = prompt;
    this.line = '';
    this.cursor = 0;
    this.belled = false;
    this.historyPos = this.history.length;
    this.draft = '';
    return prompt;
  }

  /** The line as typed so far (for tests). */
  get text(): string {
    return this.line;
  }

  get entries(): readonly string[] {
    return this.history;
  }

  feed(input: Uint8Array): FeedResult {
    let out = '';
    for (let i = 0; i < input.length; i++) {
      const b = input[i]!;
      const wasCR = this.lastWasCR;
      this.lastWasCR = false;
      if (this.esc.s === 'esc' && b !== 0x5b && b !== 0x4f) {
        this.esc = { s: 'none' }; // ESC then an ordinary key: drop the ESC, keep the key
      } else if (this.esc.s !== 'none') {
        out += this.escapeByte(b);
        continue;
      }
      switch (b) {
        case 0x0d: // CR
        case 0x0a: { // LF
          if (b === 0x0a && wasCR) continue; // the LF of CR LF
          this.lastWasCR = b === 0x0d;
          const text = this.line;
          if (this.recordHistory && this.echo && text.trim() && this.history[this.history.length - 1] !== text) {
            this.history.push(text);
            if (this.history.length > this.historySize) this.history.shift();
          }
          return { output: out + '\r\n', event: { kind: 'line', text: this.echo ? text : utf8(text) }, consumed: i + 1 };
        }
        case 0x03: // Ctrl-C
          return { output: out + '^C\r\n', event: { kind: 'cancel' }, consumed: i + 1 };
        case 0x04: // Ctrl-D
          if (!this.line) return { output: out + '\r\n', event: { kind: 'eof' }, consumed: i + 1 };
          out += this.deleteRight();
          continue;
        case 0x08: // BS
        case 0x7f: // DEL (what most terminals send for Backspace)
          out += this.deleteLeft();
          continue;
        case 0x15: // Ctrl-U
          out += this.replace('', 0);
          continue;
        case 0x17: // Ctrl-W
          out += this.killWord();
          continue;
        case 0x01: // Ctrl-A
          out += this.moveTo(0);
          continue;
        case 0x05: // Ctrl-E
          out += this.moveTo(this.line.length);
          continue;
        case 0x02: // Ctrl-B
          out += this.moveTo(this.cursor - 1);
          continue;
        case 0x06: // Ctrl-F
          out += this.moveTo(this.cursor + 1);
          continue;
        case 0x10: // Ctrl-P
          out += this.historyStep(-1);
          continue;
        case 0x0e: // Ctrl-N
          out += this.historyStep(1);
          continue;
        case 0x0c: // Ctrl-L
          out += (this.ansi ? `${ESC}[H${ESC}[2J` : '\r\n') + this.redrawAll();
          continue;
        case 0x1b:
          this.esc = { s: 'esc' };
          continue;
        default:
          if (b >= 0x20 && b < 0x7f) out += this.insert(String.fromCharCode(b));
          else if (b >= 0x80 && !this.echo) out += this.insert(String.fromCharCode(b)); // UTF-8 bytes of a password
          // other control bytes and 8-bit garbage: ignored
      }
    }
    return { output: out, consumed: input.length };
  }

  // ---------------------------------------------------------------- escape sequences

  private escapeByte(b: number): string {
    const st = this.esc;
    if (st.s === 'esc') { // b is [ or O
      this.esc = { s: 'seq', kind: b === 0x5b ? '[' : 'O', params: '' };
      return '';
    }
    if (st.s !== 'seq') return '';
    if (b >= 0x40 && b <= 0x7e && !(st.kind === '[' && b === 0x5b)) {
      this.esc = { s: 'none' };
      return this.escapeKey(st.kind, st.params, String.fromCharCode(b));
    }
    if (b >= 0x20 && b < 0x40 && st.params.length < 16) {
      st.params += String.fromCharCode(b);
      return '';
    }
    this.esc = { s: 'none' }; // malformed or too long: give up on it quietly
    return '';
  }

  private escapeKey(kind: '[' | 'O', params: string, final: string): string {
    if (final === 'A') return this.historyStep(-1);
    if (final === 'B') return this.historyStep(1);
    if (final === 'C') return this.moveTo(this.cursor + 1);
    if (final === 'D') return this.moveTo(this.cursor - 1);
    if (final === 'H') return this.moveTo(0);
    if (final === 'F') return this.moveTo(this.line.length);
    if (kind === '[' && final === '~') {
      if (params === '1' || params === '7') return this.moveTo(0);
      if (params === '4' || params === '8') return this.moveTo(this.line.length);
      if (params === '3') return this.deleteRight();
    }
    return '';
  }

  // ---------------------------------------------------------------- editing

  private insert(ch: string): string {
    if (this.line.length >= this.maxLength) {
      if (this.belled) return '';
      this.belled = true;
      return BEL;
    }
    const tail = this.line.slice(this.cursor);
    this.line = this.line.slice(0, this.cursor) + ch + tail;
    this.cursor++;
    if (!this.echo) return '';
    return ch + tail + this.back(tail.length);
  }

  private deleteLeft(): string {
    if (this.cursor === 0) return '';
    let from = this.cursor - 1;
    if (!this.echo) while (from > 0 && (this.line.charCodeAt(from) & 0xc0) === 0x80) from--; // whole UTF-8 character
    const tail = this.line.slice(this.cursor);
    const n = this.cursor - from;
    this.line = this.line.slice(0, from) + tail;
    this.cursor = from;
    this.belled = false;
    if (!this.echo) return '';
    return this.back(n) + tail + ' '.repeat(n) + this.back(tail.length + n);
  }

  private deleteRight(): string {
    if (this.cursor >= this.line.length) return '';
    const tail = this.line.slice(this.cursor + 1);
    this.line = this.line.slice(0, this.cursor) + tail;
    this.belled = false;
    if (!this.echo) return '';
    return tail + ' ' + this.back(tail.length + 1);
  }

  private killWord(): string {
    let from = this.cursor;
    while (from > 0 && this.line[from - 1] === ' ') from--;
    while (from > 0 && this.line[from - 1] !== ' ') from--;
    const tail = this.line.slice(this.cursor);
    const n = this.cursor - from;
    if (!n) return '';
    this.line = this.line.slice(0, from) + tail;
    this.cursor = from;
    this.belled = false;
    if (!this.echo) return '';
    return this.back(n) + tail + ' '.repeat(n) + this.back(tail.length + n);
  }

  private moveTo(pos: number): string {
    const p = Math.max(0, Math.min(this.line.length, pos));
    if (!this.echo) { this.cursor = p; return ''; }
    const out = p < this.cursor ? this.back(this.cursor - p) : this.line.slice(this.cursor, p);
    this.cursor = p;
    return out;
  }

  /** Replaces the whole line, leaving the cursor at `cursor`; returns the redraw. */
  private replace(text: string, cursor: number): string {
    const old = this.line;
    const oldCursor = this.cursor;
    this.line = text.slice(0, this.maxLength);
    this.cursor = Math.min(cursor, this.line.length);
    this.belled = false;
    if (!this.echo) return '';
    if (this.ansi) return `\r${this.prompt}${this.line}${ESC}[K${this.back(this.line.length - this.cursor)}`;
    // Plain: back to the start of the input, overwrite, blank what is left over, come back.
    const extra = Math.max(0, old.length - this.line.length);
    return this.back(oldCursor) + this.line + ' '.repeat(extra) + this.back(extra + this.line.length - this.cursor);
  }

  private redrawAll(): string {
    return this.prompt + (this.echo ? this.line + this.back(this.line.length - this.cursor) : '');
  }

  private historyStep(dir: -1 | 1): string {
    if (!this.recordHistory || !this.echo) return '';
    const next = this.historyPos + dir;
    if (next < 0 || next > this.history.length) return '';
    if (this.historyPos === this.history.length) this.draft = this.line;
    this.historyPos = next;
    const text = next === this.history.length ? this.draft : this.history[next]!;
    return this.replace(text, text.length);
  }

  /** Moves the cursor left n columns: backspaces, or one CSI when ANSI is on. */
  private back(n: number): string {
    if (n <= 0) return '';
    return this.ansi && n > 3 ? `${ESC}[${n}D` : BS.repeat(n);
  }
}

/** A password's bytes were kept as latin1 code units; read them as the UTF-8 the terminal sent. */
function utf8(latin1: string): string {
  return Buffer.from(latin1, 'latin1').toString('utf8');
}
