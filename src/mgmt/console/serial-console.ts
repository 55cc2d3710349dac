/**
 * The serial console of a board: a login, then a line-editing shell with the CLI's commands, on the
 * board's console tty (opened with serialport by path; in the simulated chassis one end of a socat
 * pty pair). Field engineers reach a blade this way when nothing else works, so the console:
 *  - asks `<board> login:` and `Password:` (no echo), checks the password against the root-only
 *    scrypt file, slows down after each failure and locks out after several, and logs all of it
 *    (and emits 'auth' events for the journal);
 *  - runs every command by spawning the CLI itself (commands.ts), so output is identical;
 *  - attaches to the guest's own serial console (`guest console`) until Ctrl-E c . ;
 *  - speaks plain text with CR LF unless the user turns ANSI on (`set term ansi`);
 *  - survives garbage, overlong lines and a tty that disappears (it reopens it every second).
 * It owns the console tty, its session state and the children it spawns; it never touches the
 * guest, HA or the store (the daemon composes those).
 *
 * Session modes (one at a time; input bytes are routed by mode):
 *   closed   → tty not open; retried every reopenMs
 *   login    → reading a user name                       → password | login (locked / no password)
 *   password → reading a password, no echo               → wait → shell | wait → login (delay, lockout)
 *   wait     → checking a password or serving a failure delay; input discarded
 *   shell    → reading a command line                     → running | attached | passwd | login (logout)
 *   running  → a CLI child runs; Ctrl-C interrupts, other input is type-ahead (bounded)
 *   attached → bytes go to and from the guest console    → shell on Ctrl-E c . or when it closes
 *   passwd   → reading current/new/confirmed password     → running (the CLI writes the file) | shell
 *   handover → the tty is closed and lent to `upgrade receive` (YMODEM) until it ends → shell
 */
import { EventEmitter } from 'node:events';
import { closeSync, constants as fsConstants, existsSync, openSync, readSync, fstatSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { UsError } from '../../core/errors.js';
import type { Logger } from '../../core/log.js';
import { LineEditor, type EditorEvent } from './line-editor.js';
import { readPasswordFile, verifyPassword, checkNewPassword } from './password.js';
import { LoginThrottle, DEFAULT_LOGIN_POLICY, type LoginPolicy } from './throttle.js';
import { EscapeDetector, ESCAPE_HELP } from './escape.js';
import { TerminalText, crlf } from './terminal-text.js';
import { splitWords } from './words.js';
import { classify, runCli, captureCli, consoleCommandList, describeEnd, assertCliEntry, type CliRun } from './commands.js';

/** The CLI beside this module in the same build (dist/src/cli/main.js), without importing the CLI layer. */
export const DEFAULT_CLI_ENTRY = fileURLToPath(new URL('../../cli/main.js', import.meta.url));

/** The tty, seen as a byte stream. The real one is serialport; tests may bring any Duplex. */
export interface ConsoleLine {
  stream: Duplex;
  close(): Promise<void>;
}
export type OpenLine = (device: string, baud: number) => Promise<ConsoleLine>;

/** Opens a tty by path with serialport (never SerialPort.list(): it crashes on some hosts). */
export const openSerialLine: OpenLine = async (device, baud) => {
  const { SerialPort } = await import('serialport');
  const port = new SerialPort({ path: device, baudRate: baud, autoOpen: false });
  await new Promise<void>((resolve, reject) => port.open((e) => (e ? reject(e) : resolve())));
  return {
    stream: port,
    close: () => new Promise<void>((resolve) => {
      if (!port.isOpen) { resolve(); return; }
      port.close(() => resolve());
    }),
  };
};

export interface ConsolePolicy extends LoginPolicy {
  /** Logged-in shell with no input for this long logs out (default 15 min). */
  idleTimeoutMs: number;
  /** A password prompt left unanswered this long goes back to the login prompt (default 60 s). */
  passwordTimeoutMs: number;
  /** A command running longer than this is stopped (default 10 min). Ctrl-C stops it sooner. */
  commandTimeoutMs: number;
  /** Retry period for opening a missing or vanished tty (default 1000 ms). */
  reopenMs: number;
  /** Longest command line, bytes (default 1024). */
  maxLineLength: number;
}

export const DEFAULT_CONSOLE_POLICY: ConsolePolicy = {
  ...DEFAULT_LOGIN_POLICY,
  idleTimeoutMs: 15 * 60_000,
  passwordTimeoutMs: 60_000,
  commandTimeoutMs: 10 * 60_000,
  reopenMs: 1000,
  maxLineLength: 1024,
};

export interface SerialConsoleOptions {
  /** The console tty, e.g. /dev/ttyS0 (board profile `console.device`). */
  device: string;
  /** Its speed (board profile `console.baud`, 115200 8N1 by default). */
  baud: number;
  /** Board name: the login and shell prompts. */
  board: string;
  /** The board profile file, handed to every CLI command (as UNDERSTUDY_BOARD). */
  boardFile: string;
  /** The scrypt password file (root-only). Missing: logins are refused. */
  passwordFile: string;
  /** The guest's serial console socket while the guest runs, else undefined. */
  guestConsoleSocket: () => string | undefined;
  /** The guest's console log (for Ctrl-E c r), if any. */
  guestConsoleLog?: () => string | undefined;
  /** Shown after each login when it returns text (the controller is not serving, and why). */
  notice?: () => string | undefined;
  /** The CLI entry, dist/src/cli/main.js. */
  cliEntry: string;
  log: Logger;
  /** Timers and limits; defaults in DEFAULT_CONSOLE_POLICY. */
  policy?: Partial<ConsolePolicy>;
  /** How the tty is opened (default: serialport). */
  openLine?: OpenLine;
}

/** Every login, failure, lockout and logout, for the event journal. */
export interface ConsoleAuthEvent {
  kind: 'login' | 'failure' | 'lockout' | 'logout' | 'refused';
  board: string;
  device: string;
  user: string;
  at: string;
  /** Failed logins in a row so far (failure, lockout). */
  failures?: number;
  /** Wait imposed before the next login prompt (failure). */
  delayMs?: number;
  /** Length of the lockout (lockout). */
  lockedForMs?: number;
  /** logout: logout, eof, idle, hangup, stop; refused: why no login was possible. */
  reason?: string;
}

export declare interface SerialConsole {
  on(ev: 'auth', fn: (e: ConsoleAuthEvent) => void): this;
}

type Mode = 'closed' | 'login' | 'password' | 'wait' | 'shell' | 'running' | 'attached' | 'passwd' | 'handover' | 'stopped';
type PasswdStep = { step: 'current' } | { step: 'new' } | { step: 'confirm'; first: string };

const MAX_TYPEAHEAD = 4096;
const REPLAY_BYTES = 16 * 1024;
const REPLAY_LINES = 20;

export class SerialConsole extends EventEmitter {
  readonly policy: ConsolePolicy;
  private readonly o: SerialConsoleOptions;
  private readonly throttle: LoginThrottle;
  private readonly openLine: OpenLine;
  private line?: ConsoleLine;
  private mode: Mode = 'closed';
  private editor: LineEditor;
  private user?: string;
  private loggedIn = false;
  private ansi = false;
  private child?: CliRun;
  private guest?: { sock: Socket; esc: EscapeDetector };
  private passwd?: PasswdStep;
  /** A guest console connection not yet established (Ctrl-C abandons it). */
  private connecting?: Socket;
  /** Writers waiting for the tty to drain. */
  private drainWaiters: Array<() => void> = [];
  /** What `upgrade receive` printed while it owned the line, shown when the console has it back. */
  private handoverResult?: { output: Buffer; end?: string };
  private typeahead: Buffer[] = [];
  private typeaheadBytes = 0;
  private idleTimer?: NodeJS.Timeout;
  private waitTimer?: NodeJS.Timeout;
  private reopenTimer?: NodeJS.Timeout;
  private openFailure?: string;
  private helpList?: string[];
  /** Last byte written ended a line (so status lines start on their own line). */
  private atLineStart = true;

  constructor(o: SerialConsoleOptions) {
    super();
    const need = (ok: boolean, field: string, what: string) => {
      if (!ok) throw new UsError('US_ERR_CONFIG', `console: ${field} ${what}`);
    };
    need(typeof o.device === 'string' && o.device.length > 0, 'device', 'must be a tty path');
    need(Number.isInteger(o.baud) && o.baud > 0, 'baud', `must be a positive integer, got ${o.baud}`);
    need(/^[a-z0-9][a-z0-9-]{0,31}$/.test(o.board), 'board', `must be a board name, got "${o.board}"`);
    need(typeof o.boardFile === 'string' && o.boardFile.length > 0, 'boardFile', 'must be the board profile path');
    need(typeof o.passwordFile === 'string' && o.passwordFile.length > 0, 'passwordFile', 'must be a path');
    need(typeof o.guestConsoleSocket === 'function', 'guestConsoleSocket', 'must be a function');
    assertCliEntry(o.cliEntry);
    this.o = o;
    this.policy = { ...DEFAULT_CONSOLE_POLICY, ...o.policy };
    for (const [k, v] of Object.entries(this.policy)) need(Number.isFinite(v) && v >= 0, `policy.${k}`, `must be a non-negative number, got ${v}`);
    need(this.policy.lockoutAfter >= 1, 'policy.lockoutAfter', 'must be at least 1');
    this.throttle = new LoginThrottle(this.policy);
    this.openLine = o.openLine ?? openSerialLine;
    this.editor = new LineEditor({ maxLength: this.policy.maxLineLength });
  }

  /**
   * Checks the password file and opens the tty (or keeps retrying every reopenMs if it is missing).
   * Throws US_ERR_CONFIG when the password file exists but is not root-only or not valid: a console
   * that anyone could log into is worse than none.
   */
  async start(): Promise<void> {
    if (this.mode !== 'closed') return;
    const pf = readPasswordFile(this.o.passwordFile);
    if (pf.state === 'insecure' || pf.state === 'malformed') {
      this.o.log.error({ passwordFile: this.o.passwordFile, why: pf.why }, 'console not started: unusable password file');
      throw new UsError('US_ERR_CONFIG', `console password file: ${pf.why}`);
    }
    if (pf.state === 'missing') {
      this.o.log.warn({ passwordFile: this.o.passwordFile }, 'no console password is set: console logins are refused until `understudy console passwd` sets one');
    }
    if (!existsSync(this.o.cliEntry)) this.o.log.warn({ cliEntry: this.o.cliEntry }, 'console: the CLI entry does not exist; commands will fail');
    await this.tryOpen();
  }

  async stop(): Promise<void> {
    if (this.mode === 'stopped') return;
    const wasLoggedIn = this.loggedIn;
    if (this.line) this.write('\r\n[console stopped: the controller is shutting down]\r\n');
    this.mode = 'stopped';
    this.clearTimers();
    clearTimeout(this.reopenTimer);
    this.child?.kill();
    this.guest?.sock.destroy();
    this.guest = undefined;
    this.connecting?.destroy();
    this.connecting = undefined;
    if (wasLoggedIn) this.endSession('stop');
    const line = this.line;
    this.line = undefined;
    await line?.close();
  }

  /** For `status`: what the console is doing, without secrets. */
  get status(): { device: string; open: boolean; mode: string; user: string | null; failuresInARow: number; lockedForS: number } {
    return {
      device: this.o.device,
      open: !!this.line,
      mode: this.mode,
      user: this.loggedIn ? this.user ?? null : null,
      failuresInARow: this.throttle.failuresInARow,
      lockedForS: Math.ceil(this.throttle.lockedForMs() / 1000),
    };
  }

  // ------------------------------------------------------------------------------------ the tty

  private async tryOpen(): Promise<void> {
    if (this.mode === 'stopped' || this.line) return;
    let line: ConsoleLine;
    try {
      line = await this.openLine(this.o.device, this.o.baud);
    } catch (e) {
      const msg = (e as Error).message;
      if (this.openFailure !== msg) this.o.log.warn({ device: this.o.device, err: msg }, 'console tty cannot be opened; retrying every second');
      this.openFailure = msg;
      this.scheduleReopen();
      return;
    }
    if ((this.mode as Mode) === 'stopped') { await line.close(); return; }
    this.openFailure = undefined;
    this.line = line;
    line.stream.on('data', (d: Buffer) => this.input(d));
    line.stream.on('error', (e: Error) => this.o.log.debug({ device: this.o.device, err: e.message }, 'console tty error'));
    line.stream.on('close', () => this.lineClosed(line));
    this.o.log.info({ device: this.o.device, baud: this.o.baud }, 'console open');
    if (this.mode === 'handover') {
      this.finishHandover();
      return;
    }
    this.write(`\r\nUnderstudy console: board ${this.o.board}\r\n`);
    this.showLogin();
  }

  private scheduleReopen(): void {
    if (this.mode === 'stopped') return;
    clearTimeout(this.reopenTimer);
    this.reopenTimer = setTimeout(() => void this.tryOpen(), this.policy.reopenMs);
  }

  private lineClosed(line: ConsoleLine): void {
    if (this.line !== line) return;
    this.line = undefined;
    this.drainWaiters = [];
    if (this.mode === 'stopped' || this.mode === 'handover') return;
    // A hangup ends the session, as DCD loss does on a real serial line.
    this.o.log.warn({ device: this.o.device }, 'console tty went away; reopening every second');
    this.child?.kill();
    this.child = undefined;
    this.guest?.sock.destroy();
    this.guest = undefined;
    this.connecting?.destroy();
    this.connecting = undefined;
    if (this.loggedIn) this.endSession('hangup');
    this.clearTimers();
    this.mode = 'closed';
    this.scheduleReopen();
  }

  /** Writes to the tty; false when the tty's buffer is full (the caller may wait for 'drain'). */
  private write(data: string | Buffer): boolean {
    if (!data.length) return true;
    const b = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
    this.atLineStart = b[b.length - 1] === 0x0a;
    return this.line ? this.line.stream.write(b) : true;
  }

  /** Runs fn once the tty has room again (one listener, however many writers wait). */
  private afterDrain(fn: () => void): void {
    const stream = this.line?.stream;
    if (!stream) { fn(); return; }
    if (!this.drainWaiters.includes(fn)) this.drainWaiters.push(fn);
    if (this.drainWaiters.length === 1) {
      stream.once('drain', () => {
        for (const w of this.drainWaiters.splice(0)) w();
      });
    }
  }

  // ------------------------------------------------------------------------------------ input

  private input(chunk: Buffer): void {
    let rest = chunk;
    for (let guard = 0; rest.length && guard < 100000; guard++) {
      switch (this.mode) {
        case 'login':
        case 'password':
        case 'shell':
        case 'passwd': {
          if (this.mode !== 'login') this.idleTimer?.refresh();
          const r = this.editor.feed(rest);
          this.write(r.output);
          rest = rest.subarray(r.consumed);
          if (r.event) this.onEditorEvent(r.event);
          break;
        }
        case 'running':
          if (rest.includes(0x03)) {
            this.typeahead = [];
            this.typeaheadBytes = 0;
            this.child?.interrupt();
            if (this.connecting) {
              this.connecting.destroy();
              this.connecting = undefined;
              this.write('^C\r\n');
              this.showPrompt();
            }
          } else if (this.typeaheadBytes + rest.length <= MAX_TYPEAHEAD) {
            this.typeahead.push(Buffer.from(rest));
            this.typeaheadBytes += rest.length;
          }
          rest = rest.subarray(rest.length);
          break;
        case 'attached': {
          const g = this.guest!;
          const r = g.esc.feed(rest);
          if (r.forward.length) g.sock.write(r.forward);
          rest = r.rest;
          if (r.command === '.') this.detachGuest('[detached from the guest console]');
          else if (r.command === '?') this.write(`\r\n[${ESCAPE_HELP} detach | Ctrl-E c r replay the last ${REPLAY_LINES} console lines | Ctrl-E c ? this help]\r\n`);
          else if (r.command === 'r') this.replayGuestLog();
          break;
        }
        default: // closed, wait, handover, stopped: input is discarded (as login flushes it after a failure)
          rest = rest.subarray(rest.length);
      }
    }
  }

  private onEditorEvent(ev: EditorEvent): void {
    switch (this.mode) {
      case 'login':
        if (ev.kind === 'line') this.gotUser(ev.text.trim());
        else this.showLogin();
        return;
      case 'password':
        if (ev.kind === 'line') void this.gotPassword(ev.text);
        else this.showLogin();
        return;
      case 'shell':
        if (ev.kind === 'line') this.execute(ev.text);
        else if (ev.kind === 'eof') this.logout('eof');
        else this.showPrompt();
        return;
      case 'passwd':
        if (ev.kind === 'line') void this.passwdStep(ev.text);
        else { this.passwd = undefined; this.showPrompt(); }
        return;
      default:
    }
  }

  // ------------------------------------------------------------------------------------ login

  private showLogin(): void {
    this.clearTimers();
    this.mode = 'login';
    this.editor.echo = true;
    this.editor.ansi = false;
    this.editor.recordHistory = false;
    this.write(this.editor.begin(`${this.o.board} login: `));
  }

  private gotUser(name: string): void {
    if (!name) { this.showLogin(); return; }
    const user = name.replace(/[^\x21-\x7e]/g, '?').slice(0, 32);
    const locked = this.throttle.lockedForMs();
    if (locked > 0) {
      this.write(`the console is locked after ${this.throttle.failuresInARow} failed logins; try again in ${Math.ceil(locked / 1000)} s\r\n`);
      this.emitAuth({ kind: 'refused', user, reason: 'locked' });
      this.showLogin();
      return;
    }
    const pf = readPasswordFile(this.o.passwordFile);
    if (pf.state !== 'ok') {
      const why = pf.state === 'missing'
        ? 'no console password is set on this board: logins are refused (set one with "understudy console passwd" on the host)'
        : 'the console password file is not usable: logins are refused (see the controller log)';
      if (pf.state !== 'missing') this.o.log.error({ passwordFile: this.o.passwordFile, why: pf.why }, 'console login refused: unusable password file');
      this.write(`${why}\r\n`);
      this.emitAuth({ kind: 'refused', user, reason: pf.state === 'missing' ? 'no password set' : pf.why });
      this.showLogin();
      return;
    }
    this.user = user;
    this.mode = 'password';
    this.editor.echo = false;
    this.write(this.editor.begin('Password: '));
    this.arm(this.policy.passwordTimeoutMs, () => { this.write('\r\n'); this.showLogin(); });
  }

  private async gotPassword(password: string): Promise<void> {
    this.clearTimers();
    this.mode = 'wait';
    const user = this.user ?? '?';
    const pf = readPasswordFile(this.o.passwordFile);
    let ok = false;
    try {
      ok = pf.state === 'ok' && await verifyPassword(password, pf.hash);
    } catch (e) {
      this.o.log.error({ err: (e as Error).message }, 'console password check failed');
    }
    if (this.mode !== 'wait') return; // hangup or stop while checking
    if (ok) {
      this.throttle.success();
      this.loggedIn = true;
      this.ansi = false;
      this.editor = new LineEditor({ maxLength: this.policy.maxLineLength }); // a fresh history per session
      this.o.log.info({ user, device: this.o.device }, 'console login');
      this.emitAuth({ kind: 'login', user });
      this.write(`logged in to ${this.o.board} as ${user}; "help" lists the commands, "logout" or Ctrl-D ends the session\r\n`);
      const notice = this.o.notice?.();
      if (notice) this.write(`${notice.replace(/\r?\n/g, '\r\n')}\r\n`);
      this.showPrompt();
      return;
    }
    const v = this.throttle.failure();
    if (v.kind === 'lockout') {
      this.o.log.error({ user, device: this.o.device, failures: v.failures, lockedForS: v.lockedForMs / 1000 }, 'console locked after repeated failed logins');
      this.emitAuth({ kind: 'failure', user, failures: v.failures, delayMs: 0 });
      this.emitAuth({ kind: 'lockout', user, failures: v.failures, lockedForMs: v.lockedForMs });
      this.write(`Login incorrect\r\ntoo many failed logins: the console is locked for ${Math.ceil(v.lockedForMs / 1000)} s\r\n`);
      this.showLogin();
      return;
    }
    this.o.log.warn({ user, device: this.o.device, failures: v.failures, delayMs: v.delayMs }, 'console login failed');
    this.emitAuth({ kind: 'failure', user, failures: v.failures, delayMs: v.delayMs });
    this.waitTimer = setTimeout(() => {
      if (this.mode !== 'wait') return;
      this.write('Login incorrect\r\n');
      this.showLogin();
    }, v.delayMs);
  }

  private logout(reason: 'logout' | 'eof' | 'idle'): void {
    this.write(reason === 'idle' ? `\r\nno input for ${Math.round(this.policy.idleTimeoutMs / 60000)} min: logged out\r\n` : 'logged out\r\n');
    this.endSession(reason);
    this.showLogin();
  }

  private endSession(reason: string): void {
    this.o.log.info({ user: this.user, device: this.o.device, reason }, 'console logout');
    this.emitAuth({ kind: 'logout', user: this.user ?? '?', reason });
    this.loggedIn = false;
    this.user = undefined;
    this.ansi = false;
    this.passwd = undefined;
    this.typeahead = [];
    this.typeaheadBytes = 0;
  }

  private emitAuth(e: Omit<ConsoleAuthEvent, 'board' | 'device' | 'at'>): void {
    this.emit('auth', { ...e, board: this.o.board, device: this.o.device, at: new Date().toISOString() } satisfies ConsoleAuthEvent);
  }

  // ------------------------------------------------------------------------------------ shell

  private showPrompt(): void {
    this.clearTimers();
    if (!this.loggedIn || this.mode === 'stopped' || this.mode === 'closed') return;
    this.mode = 'shell';
    this.editor.echo = true;
    this.editor.ansi = this.ansi;
    this.editor.recordHistory = true;
    if (!this.atLineStart) this.write('\r\n');
    this.write(this.editor.begin(`${this.o.board}> `));
    this.arm(this.policy.idleTimeoutMs, () => this.logout('idle'));
    if (this.typeahead.length) {
      const ahead = Buffer.concat(this.typeahead);
      this.typeahead = [];
      this.typeaheadBytes = 0;
      setImmediate(() => { if (this.mode === 'shell') this.input(ahead); });
    }
  }

  private execute(text: string): void {
    let words: string[];
    try {
      words = splitWords(text);
    } catch (e) {
      this.write(`error US_ERR_CONSOLE: ${(e as Error).message}\r\n`);
      this.showPrompt();
      return;
    }
    if (words.length && words[0] === 'understudy') words = words.slice(1); // people will type it
    const action = classify(words, this.o.device);
    switch (action.kind) {
      case 'empty':
        this.showPrompt();
        return;
      case 'logout':
        this.logout('logout');
        return;
      case 'help':
        if (action.topic.length) this.runCommand([...action.topic, '--help']);
        else void this.help();
        return;
      case 'set':
        this.set(action.args);
        return;
      case 'history':
        this.write(crlf(this.editor.entries.map((h, i) => `${String(i + 1).padStart(4)}  ${h}`).join('\n') + '\n'));
        this.showPrompt();
        return;
      case 'refuse':
        this.write(`error US_ERR_CONSOLE: ${action.why}\r\n`);
        this.showPrompt();
        return;
      case 'passwd':
        this.passwd = { step: 'current' };
        this.askPasswd('Current password: ');
        return;
      case 'attach':
        this.attachGuest();
        return;
      case 'cli':
        if (action.handover) this.handover(action.words);
        else this.runCommand(action.words);
    }
  }

  private set(args: string[]): void {
    if (args.length === 2 && args[0] === 'term' && (args[1] === 'ansi' || args[1] === 'dumb')) {
      this.ansi = args[1] === 'ansi';
      this.write(`terminal: ${args[1]}${this.ansi ? ' (line redraws and Ctrl-L use ANSI escape sequences)' : ' (plain text only)'}\r\n`);
    } else {
      this.write('usage: set term ansi|dumb\r\n');
    }
    this.showPrompt();
  }

  private async help(): Promise<void> {
    this.mode = 'running';
    if (!this.helpList) {
      const { output } = await captureCli({ cliEntry: this.o.cliEntry, boardFile: this.o.boardFile, words: ['--help'], timeoutMs: 30000 });
      const list = consoleCommandList(output);
      if (list.length) this.helpList = list;
    }
    if (this.mode !== 'running') return;
    const text = [
      `Console of board ${this.o.board}. Commands are the understudy CLI's, with the same output (add --json for JSON):`,
      ...(this.helpList ?? ['  (the CLI could not be asked for its command list)']),
      '',
      'On the console also:',
      '  help [command...]     this list, or the CLI help of a command (help guest, help upgrade install)',
      `  guest console         attach to the guest's serial console; ${ESCAPE_HELP} comes back here`,
      '  console passwd        change this console\'s password',
      '  set term ansi|dumb    let the line editor use ANSI escape sequences (default: dumb, plain text)',
      '  history               the lines typed in this session',
      '  logout, exit, Ctrl-D  end the session',
      'Editing: Backspace, Ctrl-U kill line, Ctrl-W kill word, Ctrl-C cancel (or stop a running command),',
      '         Up/Down or Ctrl-P/Ctrl-N history, Left/Right, Ctrl-A/Ctrl-E start/end of line.',
      'Not here: chassis, demo, hlr (run them on the host).',
    ].join('\n');
    this.write(crlf(`${text}\n`));
    this.showPrompt();
  }

  private runCommand(words: string[], stdin?: string): void {
    this.mode = 'running';
    this.clearTimers();
    const text = new TerminalText(this.ansi);
    const timeoutMs = this.policy.commandTimeoutMs;
    const run = runCli({
      cliEntry: this.o.cliEntry,
      boardFile: this.o.boardFile,
      words,
      timeoutMs,
      stdin,
      onOutput: (chunk) => {
        if (this.child !== run) return;
        if (!this.write(text.convert(chunk))) {
          run.pause();
          this.afterDrain(resume);
        }
      },
    });
    const resume = () => run.resume();
    this.child = run;
    this.o.log.info({ user: this.user, command: words[0] === 'console' ? 'console passwd' : words.join(' ').slice(0, 200), childPid: run.pid }, 'console command');
    void run.done.then((r) => {
      if (this.child !== run) return;
      this.child = undefined;
      if (this.mode !== 'running') return;
      const end = describeEnd(r, timeoutMs);
      if (end) {
        if (!this.atLineStart) this.write('\r\n');
        this.write(`${end}\r\n`);
      }
      this.showPrompt();
    });
  }

  // ------------------------------------------------------------------------------------ passwd

  private askPasswd(prompt: string): void {
    this.mode = 'passwd';
    this.editor.echo = false;
    this.editor.recordHistory = false;
    this.write(this.editor.begin(prompt));
    this.arm(this.policy.passwordTimeoutMs, () => { this.passwd = undefined; this.write('\r\n'); this.showPrompt(); });
  }

  private async passwdStep(text: string): Promise<void> {
    const st = this.passwd;
    if (!st) { this.showPrompt(); return; }
    if (st.step === 'current') {
      this.mode = 'wait';
      const pf = readPasswordFile(this.o.passwordFile);
      const ok = pf.state === 'ok' && await verifyPassword(text, pf.hash).catch(() => false);
      if (this.mode !== 'wait') return;
      if (!ok) {
        this.o.log.warn({ user: this.user, device: this.o.device }, 'console passwd: wrong current password');
        this.passwd = undefined;
        this.write('error US_ERR_PASSWORD: wrong password\r\n');
        this.showPrompt();
        return;
      }
      this.passwd = { step: 'new' };
      this.askPasswd('New password: ');
      return;
    }
    if (st.step === 'new') {
      try {
        checkNewPassword(text);
      } catch (e) {
        this.passwd = undefined;
        this.write(`error US_ERR_PASSWORD: ${(e as Error).message}\r\n`);
        this.showPrompt();
        return;
      }
      this.passwd = { step: 'confirm', first: text };
      this.askPasswd('Retype new password: ');
      return;
    }
    this.passwd = undefined;
    if (text !== st.first) {
      this.write('error US_ERR_PASSWORD: the passwords differ; nothing changed\r\n');
      this.showPrompt();
      return;
    }
    this.runCommand(['console', 'passwd', '--file', this.o.passwordFile], `${text}\n`);
  }

  // ------------------------------------------------------------------------------------ guest console

  private attachGuest(): void {
    const path = this.o.guestConsoleSocket();
    if (!path) {
      this.write(`error US_ERR_NOT_RUNNING: no guest is running on board ${this.o.board}\r\n`);
      this.showPrompt();
      return;
    }
    this.mode = 'running';
    this.clearTimers();
    const sock = connect(path);
    this.connecting = sock;
    const esc = new EscapeDetector();
    let attached = false;
    sock.once('connect', () => {
      if (this.connecting !== sock) { sock.destroy(); return; }
      this.connecting = undefined;
      if (this.mode !== 'running' || this.child) { sock.destroy(); return; }
      attached = true;
      this.guest = { sock, esc };
      this.mode = 'attached';
      this.typeahead = [];
      this.typeaheadBytes = 0;
      this.o.log.info({ user: this.user, socket: path }, 'console attached to the guest console');
      this.write(`[attached to the guest console of ${this.o.board}; ${ESCAPE_HELP} to come back, Ctrl-E c ? for help]\r\n`);
    });
    const resume = () => sock.resume();
    sock.on('data', (d: Buffer) => {
      if (this.guest?.sock !== sock) return;
      if (!this.write(d)) {
        sock.pause();
        this.afterDrain(resume);
      }
    });
    sock.on('error', (e) => {
      if (!attached && this.connecting === sock) {
        this.connecting = undefined;
        this.write(`error US_ERR_NOT_RUNNING: guest console ${path}: ${e.message}\r\n`);
        this.showPrompt();
      }
    });
    sock.on('close', () => {
      if (this.guest?.sock === sock) this.detachGuest('[the guest console closed]');
    });
  }

  private detachGuest(message: string): void {
    const g = this.guest;
    this.guest = undefined;
    g?.sock.destroy();
    this.o.log.info({ user: this.user }, 'console detached from the guest console');
    this.write(`\r\n${message}\r\n`);
    this.showPrompt();
  }

  private replayGuestLog(): void {
    const path = this.o.guestConsoleLog?.();
    if (!path) {
      this.write('\r\n[no guest console log on this board]\r\n');
      return;
    }
    let text = '';
    try {
      // QEMU's user owns the folder of that log: no symlink followed, no FIFO waited on (the daemon's loop).
      const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
      try {
        if (!fstatSync(fd).isFile()) throw new Error('not a regular file');
        const size = fstatSync(fd).size;
        const len = Math.min(size, REPLAY_BYTES);
        const buf = Buffer.alloc(len);
        readSync(fd, buf, 0, len, size - len);
        text = buf.toString('latin1');
      } finally {
        closeSync(fd);
      }
    } catch (e) {
      this.write(`\r\n[guest console log ${path}: ${(e as Error).message}]\r\n`);
      return;
    }
    const lines = text.split(/\r?\n/).filter((l) => l.length).slice(-REPLAY_LINES);
    const plain = new TerminalText(this.ansi);
    this.write(`\r\n[last ${lines.length} lines of ${path}]\r\n`);
    this.write(plain.convert(Buffer.from(`${lines.join('\n')}\n`, 'latin1')));
    this.write('[end of replay]\r\n');
  }

  // ------------------------------------------------------------------------------------ serial transfer

  /**
   * `upgrade receive` on the console line itself: the console steps aside — prints how to send,
   * closes the tty, lets the CLI's YMODEM receiver own it, then reopens it and shows what the
   * receiver printed. The session stays logged in.
   */
  private handover(words: string[]): void {
    this.mode = 'handover';
    this.clearTimers();
    this.write(crlf(`the console line is now the YMODEM receiver's until the transfer ends (its --timeout bounds the wait).\nStart the sender: sb <file> (lrzsz), minicom Ctrl-A S ymodem, or picocom --send-cmd "sb -vv" then Ctrl-A Ctrl-S.\n`));
    const chunks: Buffer[] = [];
    const line = this.line;
    const release = async () => {
      if (line) {
        await new Promise<void>((r) => { if (line.stream.writableLength === 0) r(); else line.stream.once('drain', () => r()); setTimeout(r, 2000); });
        this.line = undefined;
        await line.close();
      }
    };
    // The receiver gets this very line, whatever the profile says.
    const lineWords = words.some((w) => w === '--device' || w.startsWith('--device='))
      ? words
      : [...words, '--device', this.o.device, ...(words.some((w) => w === '--baud' || w.startsWith('--baud=')) ? [] : ['--baud', String(this.o.baud)])];
    void release().then(() => {
      if (this.mode !== 'handover') return;
      const run = runCli({
        cliEntry: this.o.cliEntry,
        boardFile: this.o.boardFile,
        words: lineWords,
        timeoutMs: this.policy.commandTimeoutMs,
        onOutput: (c) => { if (chunks.length < 4096) chunks.push(c); },
      });
      this.child = run;
      this.o.log.info({ user: this.user, command: words.join(' ').slice(0, 200), childPid: run.pid }, 'console handed to a serial transfer');
      void run.done.then((r) => {
        this.child = undefined;
        this.handoverResult = { output: Buffer.concat(chunks), end: describeEnd(r, this.policy.commandTimeoutMs) };
        if (this.mode === 'handover') void this.tryOpen();
      });
    });
  }

  private finishHandover(): void {
    const r = this.handoverResult;
    this.handoverResult = undefined;
    this.write('\r\n');
    if (r) {
      this.write(new TerminalText(this.ansi).convert(r.output));
      if (r.end) this.write(`${this.atLineStart ? '' : '\r\n'}${r.end}\r\n`);
    }
    this.mode = 'running';
    this.showPrompt();
  }

  // ------------------------------------------------------------------------------------ timers

  private arm(ms: number, fn: () => void): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = ms > 0 ? setTimeout(fn, ms) : undefined;
  }

  private clearTimers(): void {
    clearTimeout(this.idleTimer);
    clearTimeout(this.waitTimer);
    this.idleTimer = undefined;
    this.waitTimer = undefined;
  }
}
