/**
 * The serial console's pure parts — word splitter, line editor, output filter, escape detector,
 * password hashing and file checks, login throttling, command policy — and the session logic driven
 * through a fake line (a Duplex), with short timers. The real tty is in test/integration/console.test.ts.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import fc from 'fast-check';
import { silentLogger } from '../../src/core/log.js';
import { splitWords } from '../../src/mgmt/console/words.js';
import { LineEditor } from '../../src/mgmt/console/line-editor.js';
import { TerminalText } from '../../src/mgmt/console/terminal-text.js';
import { EscapeDetector } from '../../src/mgmt/console/escape.js';
import { hashPassword, parseHash, readPasswordFile, verifyPassword, writePasswordFile, checkNewPassword } from '../../src/mgmt/console/password.js';
import { LoginThrottle } from '../../src/mgmt/console/throttle.js';
import { classify, consoleCommandList, describeEnd } from '../../src/mgmt/console/commands.js';
import { SerialConsole, type ConsoleAuthEvent, type ConsoleLine } from '../../src/mgmt/console/serial-console.js';

const b = (s: string) => Buffer.from(s, 'latin1');
const FAST = { N: 1024, r: 8, p: 1 };

describe('console: word splitting', () => {
  it('splits on blanks and honours quotes and backslashes', () => {
    assert.deepEqual(splitWords('  guest   status --json '), ['guest', 'status', '--json']);
    assert.deepEqual(splitWords(`upgrade build --description "two words" 'it''s' a\\ b`), ['upgrade', 'build', '--description', 'two words', 'its', 'a b']);
    assert.deepEqual(splitWords(`say "a \\"quoted\\" \\\\ word" 'no \\escape'`), ['say', 'a "quoted" \\ word', 'no \\escape']);
    assert.deepEqual(splitWords(`x "" ''`), ['x', '', '']);
    assert.deepEqual(splitWords(''), []);
    assert.deepEqual(splitWords('\t'), []);
  });

  it('rejects an unterminated quote or a trailing backslash with US_ERR_CONTROL', () => {
    assert.throws(() => splitWords('echo "abc'), { code: 'US_ERR_CONTROL', message: /unterminated double quote/ });
    assert.throws(() => splitWords("echo 'abc"), { code: 'US_ERR_CONTROL', message: /unterminated single quote/ });
    assert.throws(() => splitWords('echo abc\\'), { code: 'US_ERR_CONTROL' });
  });

  it('never throws anything but a UsError, whatever the input', () => {
    fc.assert(fc.property(fc.string({ maxLength: 200 }), (s) => {
      try { splitWords(s); } catch (e) { assert.equal((e as { code?: string }).code, 'US_ERR_CONTROL'); }
    }));
  });
});

describe('console: line editor', () => {
  const typed = (ed: LineEditor, s: string) => ed.feed(b(s));

  it('echoes printable characters and ends the line on CR, CR LF or LF', () => {
    const ed = new LineEditor();
    ed.begin('> ');
    let r = typed(ed, 'ab');
    assert.equal(r.output, 'ab');
    assert.equal(r.event, undefined);
    r = typed(ed, 'c\r\nnext');
    assert.deepEqual(r.event, { kind: 'line', text: 'abc' });
    assert.equal(r.output, 'c\r\n');
    assert.equal(r.consumed, 2, 'stops after the CR; the rest is for the next line');
    ed.begin('> ');
    r = typed(ed, '\nx\n');
    assert.deepEqual(r.event, { kind: 'line', text: 'x' }, 'the LF of CR LF split across reads is swallowed');
    ed.begin('> ');
    assert.deepEqual(typed(ed, 'y\n').event, { kind: 'line', text: 'y' }, 'a lone LF ends a line');
  });

  it('Backspace and DEL erase with BS SP BS; Ctrl-U kills the line; Ctrl-W a word', () => {
    const ed = new LineEditor();
    ed.begin('> ');
    typed(ed, 'guest statu');
    assert.equal(typed(ed, '\x7f').output, '\b \b');
    assert.equal(typed(ed, '\x08').output, '\b \b');
    assert.equal(ed.text, 'guest sta');
    typed(ed, '\x17');
    assert.equal(ed.text, 'guest ');
    const r = typed(ed, '\x15');
    assert.equal(ed.text, '');
    assert.ok(!r.output.includes('\x1b'), 'plain redraw');
    assert.equal(typed(ed, '\x7f').output, '', 'nothing to erase');
  });

  it('Ctrl-C cancels, Ctrl-D ends only an empty line', () => {
    const ed = new LineEditor();
    ed.begin('> ');
    typed(ed, 'abc');
    assert.deepEqual(typed(ed, '\x04').event, undefined, 'Ctrl-D on a non-empty line deletes (nothing at the end)');
    assert.deepEqual(typed(ed, '\x03').event, { kind: 'cancel' });
    ed.begin('> ');
    assert.deepEqual(typed(ed, '\x04').event, { kind: 'eof' });
  });

  it('history: arrows walk it and the redraw is plain unless ANSI is on', () => {
    const ed = new LineEditor();
    for (const l of ['first', 'second']) { ed.begin('> '); typed(ed, `${l}\r`); }
    ed.begin('> ');
    typed(ed, 'dr');
    let r = typed(ed, '\x1b[A');
    assert.equal(ed.text, 'second');
    assert.ok(!r.output.includes('\x1b'), `no escape sequence to a dumb terminal: ${JSON.stringify(r.output)}`);
    assert.equal(r.output, '\b\bsecond');
    r = typed(ed, '\x1bOA'); // SS3 form (application cursor keys)
    assert.equal(ed.text, 'first');
    assert.equal(r.output, '\b\b\b\b\b\bfirst ' + '\b');
    typed(ed, '\x1b[B\x1b[B');
    assert.equal(ed.text, 'dr', 'back down to the draft');
    ed.ansi = true;
    r = typed(ed, '\x10'); // Ctrl-P
    assert.equal(ed.text, 'second');
    assert.equal(r.output, '\r> second\x1b[K');
    assert.deepEqual(ed.entries, ['first', 'second']);
  });

  it('cursor keys move and insert in the middle', () => {
    const ed = new LineEditor();
    ed.begin('> ');
    typed(ed, 'gest');
    typed(ed, '\x1b[D\x1b[D\x1b[D');
    const r = typed(ed, 'u');
    assert.equal(ed.text, 'guest');
    assert.equal(r.output, 'uest\b\b\b');
    typed(ed, '\x05!'); // Ctrl-E: end
    assert.equal(ed.text, 'guest!');
    typed(ed, '\x01\x1b[3~'); // Home, Delete
    assert.equal(ed.text, 'uest!');
  });

  it('password mode echoes nothing and keeps UTF-8; no history', () => {
    const ed = new LineEditor();
    ed.echo = false;
    ed.begin('Password: ');
    const pw = Buffer.from('pässwörd\r', 'utf8');
    const r = ed.feed(pw);
    assert.equal(r.output, '\r\n');
    assert.deepEqual(r.event, { kind: 'line', text: 'pässwörd' });
    ed.begin('Password: ');
    ed.feed(Buffer.from('ö', 'utf8'));
    ed.feed(b('\x7f'));
    assert.equal(ed.text, '', 'backspace removes a whole UTF-8 character');
    assert.deepEqual(ed.entries, []);
  });

  it('garbage: control bytes, 8-bit bytes and unknown escape sequences are ignored', () => {
    const ed = new LineEditor();
    ed.begin('> ');
    const r = ed.feed(Buffer.from([0x00, 0x07, 0x0b, 0x1f, 0x80, 0xff, 0x1b, 0x5b, 0x31, 0x35, 0x3b, 0x32, 0x7e, 0x1b, 0x5d, 0x61]));
    assert.equal(ed.text, ']a', 'ESC ] is not a cursor key: the ESC is dropped, the rest typed');
    assert.ok(!r.output.includes('\x1b'));
  });

  it('bounds the line: extra characters are refused with one BEL', () => {
    const ed = new LineEditor({ maxLength: 8 });
    ed.begin('> ');
    const r = typed(ed, 'x'.repeat(100));
    assert.equal(ed.text.length, 8);
    assert.equal(r.output, `${'x'.repeat(8)}\x07`);
  });

  it('property: any bytes → no ESC to a dumb terminal, the line stays bounded, nothing throws', () => {
    fc.assert(fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 20 }), (chunks) => {
      const ed = new LineEditor({ maxLength: 32 });
      ed.begin('> ');
      for (const c of chunks) {
        let rest = Buffer.from(c);
        while (rest.length) {
          const r = ed.feed(rest);
          assert.ok(!r.output.includes('\x1b'));
          assert.ok(r.consumed > 0 && r.consumed <= rest.length);
          assert.ok(ed.text.length <= 32);
          rest = rest.subarray(r.consumed);
          if (r.event) ed.begin('> ');
        }
      }
    }), { numRuns: 300 });
  });
});

describe('console: output to the terminal', () => {
  it('turns LF into CR LF, also across chunks, and leaves CR LF alone', () => {
    const t = new TerminalText();
    assert.equal(t.convert(b('a\nb\r\nc\r')).toString('latin1'), 'a\r\nb\r\nc\r');
    assert.equal(t.convert(b('\nd')).toString('latin1'), '\nd', 'the CR came in the previous chunk');
  });

  it('strips escape sequences and stray controls for a dumb terminal, keeps them with ANSI on', () => {
    const dumb = new TerminalText(false);
    assert.equal(dumb.convert(b('\x1b[1;31mred\x1b[0m \x1b]0;title\x07ok\x1b(B\x00\x01\t.')).toString('latin1'), 'red ok\t.');
    const split = new TerminalText(false);
    assert.equal(split.convert(b('a\x1b[3')).toString('latin1') + split.convert(b('2mb')).toString('latin1'), 'ab');
    assert.equal(new TerminalText(true).convert(b('\x1b[1mB\n')).toString('latin1'), '\x1b[1mB\r\n');
    assert.equal(dumb.convert(Buffer.from('→ ě\n', 'utf8')).toString('utf8'), '→ ě\r\n', 'UTF-8 survives');
  });
});

describe('console: guest console escape (Ctrl-E c .)', () => {
  it('detaches on Ctrl-E c . and returns what follows', () => {
    const d = new EscapeDetector();
    const r = d.feed(b('ls\r\x05c.help\r'));
    assert.equal(r.forward.toString('latin1'), 'ls\r');
    assert.equal(r.command, '.');
    assert.equal(r.rest.toString('latin1'), 'help\r');
  });

  it('works split across reads, and passes non-escapes through unchanged', () => {
    const d = new EscapeDetector();
    assert.equal(d.feed(b('a\x05')).forward.toString('latin1'), 'a');
    assert.equal(d.feed(b('c')).forward.length, 0);
    assert.equal(d.feed(b('.')).command, '.');
    assert.equal(d.feed(b('\x05x')).forward.toString('latin1'), '\x05x');
    assert.equal(d.feed(b('\x05cx')).forward.toString('latin1'), '\x05cx');
    assert.equal(d.feed(b('\x05\x05c?')).forward.toString('latin1'), '\x05');
    const r = d.feed(b('\x05c?'));
    assert.equal(r.command, '?');
  });
});

describe('console: password file', () => {
  let dir: string;
  before(() => { dir = mkdtempSync(join(tmpdir(), 'us-console-pw-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('hashes with scrypt and verifies only the right password', async () => {
    const line = await hashPassword('correct horse', FAST);
    assert.match(line, /^scrypt\$1024\$8\$1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/);
    const h = parseHash(line);
    assert.equal(await verifyPassword('correct horse', h), true);
    assert.equal(await verifyPassword('correct horsE', h), false);
    assert.equal(await verifyPassword('', h), false);
    assert.notEqual(await hashPassword('correct horse', FAST), line, 'salted');
  });

  it('refuses malformed lines and parameters that would exhaust memory', () => {
    assert.throws(() => parseHash('md5$abc'), { code: 'US_ERR_CONFIG' });
    assert.throws(() => parseHash('scrypt$1048576$8$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA=='), { code: 'US_ERR_CONFIG', message: /power of two/ });
    assert.throws(() => parseHash('scrypt$1000$8$1$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA=='), { code: 'US_ERR_CONFIG' });
  });

  it('reports missing, insecure, malformed and ok files', async () => {
    const f = join(dir, 'console.passwd');
    assert.equal(readPasswordFile(f).state, 'missing');
    writePasswordFile(f, await hashPassword('secret-one', FAST));
    assert.equal(readPasswordFile(f).state, 'ok');
    chmodSync(f, 0o644);
    const st = readPasswordFile(f);
    assert.equal(st.state, 'insecure');
    assert.match((st as { why: string }).why, /mode 0600.*0644/);
    writeFileSync(f, 'nonsense\n', { mode: 0o600 });
    chmodSync(f, 0o600);
    assert.equal(readPasswordFile(f).state, 'malformed');
  });

  it('new passwords: at least 8 characters, no control characters', () => {
    assert.throws(() => checkNewPassword('short'), { code: 'US_ERR_PASSWORD' });
    assert.throws(() => checkNewPassword('long enough\x01'), { code: 'US_ERR_PASSWORD' });
    checkNewPassword('long enough');
  });
});

describe('console: login throttle', () => {
  it('doubles the delay after each failure, caps it, locks out after N, and a lockout expires', () => {
    let now = 0;
    const t = new LoginThrottle({ failureDelayMs: 1000, maxFailureDelayMs: 3000, lockoutAfter: 4, lockoutMs: 60000 }, () => now);
    assert.deepEqual(t.failure(), { kind: 'delay', failures: 1, delayMs: 1000 });
    assert.deepEqual(t.failure(), { kind: 'delay', failures: 2, delayMs: 2000 });
    assert.deepEqual(t.failure(), { kind: 'delay', failures: 3, delayMs: 3000 });
    assert.deepEqual(t.failure(), { kind: 'lockout', failures: 4, lockedForMs: 60000 });
    now = 59000;
    assert.equal(t.lockedForMs(), 1000);
    now = 60001;
    assert.equal(t.lockedForMs(), 0);
    assert.equal(t.failuresInARow, 0, 'the lockout ran out: counting starts again');
    t.failure();
    t.success();
    assert.equal(t.failuresInARow, 0);
  });
});

describe('console: command policy', () => {
  it('refuses what makes no sense on a console, attaches for guest console, hands the line over for upgrade receive', () => {
    assert.equal(classify([]).kind, 'empty');
    assert.equal(classify(['chassis', 'status']).kind, 'refuse');
    assert.equal(classify(['--json', 'chassis', 'status']).kind, 'refuse');
    assert.equal(classify(['demo']).kind, 'refuse');
    assert.equal(classify(['guest', 'start', '--foreground']).kind, 'refuse');
    assert.equal(classify(['guest', 'console']).kind, 'attach');
    assert.deepEqual(classify(['guest', 'console', '--tail', '5']), { kind: 'cli', words: ['guest', 'console', '--tail', '5'], handover: false });
    assert.equal(classify(['guest', 'status', '--json']).kind, 'cli');
    assert.equal(classify(['chassis', '--help']).kind, 'cli', 'help about anything is harmless');
    assert.equal(classify(['console', 'passwd']).kind, 'passwd');
    assert.deepEqual(classify(['help', 'guest']), { kind: 'help', topic: ['guest'] });
    assert.equal(classify(['logout']).kind, 'logout');
    assert.equal(classify(['exit']).kind, 'logout');
    assert.deepEqual(classify(['set', 'term', 'ansi']), { kind: 'set', args: ['term', 'ansi'] });
    assert.equal((classify(['upgrade', 'receive'], '/dev/ttyS0') as { handover: boolean }).handover, true);
    assert.equal((classify(['upgrade', 'receive', '--device', '/dev/ttyS0'], '/dev/ttyS0') as { handover: boolean }).handover, true);
    assert.equal((classify(['upgrade', 'receive', '--device=/dev/ttyS2'], '/dev/ttyS0') as { handover: boolean }).handover, false);
  });

  it('lists the CLI commands without the refused ones', () => {
    const help = 'Usage: understudy [options] [command]\n\nCommands:\n  guest   host the guest\n  chassis   the simulated\n            chassis\n  board   this board\n  help [command]  display help\n';
    assert.deepEqual(consoleCommandList(help), ['  guest   host the guest', '  board   this board']);
  });

  it('describes how a command ended', () => {
    const r = { code: 0, signal: null, timedOut: false, interrupted: false, durationMs: 1 };
    assert.equal(describeEnd(r, 1000), undefined);
    assert.equal(describeEnd({ ...r, code: 3 }, 1000), '[exit status 3]');
    assert.equal(describeEnd({ ...r, code: null, signal: 'SIGTERM', timedOut: true }, 5000), '[stopped: the command ran longer than 5 s]');
    assert.equal(describeEnd({ ...r, code: null, signal: 'SIGINT', interrupted: true }, 5000), '[interrupted]');
  });
});

/** A fake tty: what the console writes is collected; `type` is what the user sends. */
class FakeLine {
  written = '';
  stream!: Duplex;
  opens = 0;
  failOpens = 0;
  private waiters: Array<() => void> = [];

  open = async (): Promise<ConsoleLine> => {
    this.opens++;
    if (this.failOpens > 0) { this.failOpens--; throw new Error('ENOENT: no such tty'); }
    this.stream = new Duplex({
      read() {},
      write: (chunk: Buffer, _enc, cb) => { this.written += chunk.toString('latin1'); for (const w of this.waiters.splice(0)) w(); cb(); },
    });
    const s = this.stream;
    return { stream: s, close: async () => { s.destroy(); } };
  };

  type(s: string): void {
    this.stream.push(Buffer.from(s, 'latin1'));
  }

  hangup(): void {
    this.stream.destroy();
  }

  /** Waits (bounded) until the output so far contains `text` after position `from`. */
  async until(text: string | RegExp, from = 0, timeoutMs = 5000): Promise<number> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const tail = this.written.slice(from);
      const i = typeof text === 'string' ? tail.indexOf(text) : tail.search(text);
      if (i >= 0) return from + i;
      if (Date.now() > end) throw new Error(`timed out waiting for ${String(text)}; got ${JSON.stringify(this.written.slice(from))}`);
      await new Promise<void>((r) => { this.waiters.push(r); setTimeout(r, 50); });
    }
  }
}

describe('console: sessions through a fake line', function () {
  this.timeout(20000);
  let dir: string;
  let pwFile: string;
  const consoles: SerialConsole[] = [];
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-console-'));
    pwFile = join(dir, 'console.passwd');
    writePasswordFile(pwFile, await hashPassword('open sesame', FAST));
  });
  afterEach(async () => { for (const c of consoles.splice(0)) await c.stop(); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function make(line: FakeLine, policy: Partial<SerialConsole['policy']> = {}, passwordFile = pwFile): { con: SerialConsole; auth: ConsoleAuthEvent[] } {
    const con = new SerialConsole({
      device: '/dev/ttyFAKE', baud: 115200, board: 'sim-a', boardFile: join(dir, 'board.json'), passwordFile,
      guestConsoleSocket: () => undefined, cliEntry: join(dir, 'main.js'), log: silentLogger, openLine: line.open,
      policy: { failureDelayMs: 20, maxFailureDelayMs: 100, lockoutAfter: 3, lockoutMs: 400, reopenMs: 50, ...policy },
    });
    const auth: ConsoleAuthEvent[] = [];
    con.on('auth', (e) => auth.push(e));
    consoles.push(con);
    return { con, auth };
  }

  async function login(line: FakeLine, password = 'open sesame'): Promise<void> {
    const at = line.written.length;
    line.type('\r');
    await line.until('sim-a login: ', at);
    line.type('field\r');
    await line.until('Password: ', at);
    line.type(`${password}\r`);
  }

  it('validates its options eagerly, naming the field', () => {
    const line = new FakeLine();
    assert.throws(() => new SerialConsole({ device: '', baud: 115200, board: 'sim-a', boardFile: 'b', passwordFile: 'p', guestConsoleSocket: () => undefined, cliEntry: 'm.js', log: silentLogger, openLine: line.open }), { code: 'US_ERR_CONFIG', message: /device/ });
    assert.throws(() => new SerialConsole({ device: '/dev/x', baud: 0, board: 'sim-a', boardFile: 'b', passwordFile: 'p', guestConsoleSocket: () => undefined, cliEntry: 'm.js', log: silentLogger, openLine: line.open }), { code: 'US_ERR_CONFIG', message: /baud/ });
  });

  it('logs in, runs built-ins with CR LF and no escapes, logs out', async () => {
    const line = new FakeLine();
    const { con, auth } = make(line);
    await con.start();
    await login(line);
    await line.until('sim-a> ');
    assert.equal(con.status.user, 'field');
    const at = line.written.length;
    line.type('set term\r');
    await line.until('usage: set term ansi|dumb\r\nsim-a> ', at);
    line.type('chassis up\r');
    await line.until('error US_ERR_CONSOLE: "chassis" is not available', at);
    line.type('guest console\r');
    await line.until('error US_ERR_NOT_RUNNING: no guest is running on board sim-a', at);
    line.type('logout\r');
    await line.until('logged out\r\nsim-a login: ', at);
    assert.ok(!line.written.includes('open sesame'), 'the password is never echoed');
    assert.ok(!line.written.includes('\x1b'), 'no escape sequences to a dumb terminal');
    assert.ok(!/[^\r]\n/.test(line.written), 'every LF is preceded by CR');
    assert.deepEqual(auth.map((e) => e.kind), ['login', 'logout']);
    assert.equal(auth[1]!.reason, 'logout');
  });

  it('failures: growing delays, then a lockout that refuses logins until it ends', async () => {
    const line = new FakeLine();
    const { con, auth } = make(line);
    await con.start();
    for (let i = 0; i < 3; i++) {
      const at = line.written.length;
      await login(line, 'wrong');
      await line.until('Login incorrect', at);
    }
    await line.until('console is locked for 1 s');
    let at = line.written.length;
    line.type('field\r'); // locked: no password prompt at all
    await line.until(/locked after 3 failed logins; try again in \d+ s\r\nsim-a login: /, at);
    assert.ok(!line.written.slice(at).includes('Password:'));
    assert.deepEqual(auth.map((e) => e.kind), ['failure', 'failure', 'failure', 'lockout', 'refused']);
    assert.deepEqual(auth.slice(0, 2).map((e) => e.delayMs), [20, 40]);
    await new Promise((r) => setTimeout(r, 450));
    at = line.written.length;
    await login(line);
    await line.until('sim-a> ', at);
    assert.equal(auth[auth.length - 1]!.kind, 'login');
    assert.equal(con.status.failuresInARow, 0);
  });

  it('no password file: says so and refuses logins; an insecure file stops start()', async () => {
    const line = new FakeLine();
    const { con, auth } = make(line, {}, join(dir, 'missing.passwd'));
    await con.start();
    line.type('\rfield\r');
    await line.until('no console password is set on this board: logins are refused');
    assert.equal(auth[0]!.kind, 'refused');
    const bad = join(dir, 'open.passwd');
    writeFileSync(bad, await hashPassword('open sesame', FAST), { mode: 0o644 });
    chmodSync(bad, 0o644);
    const other = make(new FakeLine(), {}, bad).con;
    await assert.rejects(other.start(), { code: 'US_ERR_CONFIG', message: /mode 0600/ });
  });

  it('idle shell logs out; Ctrl-D logs out', async () => {
    const line = new FakeLine();
    const { con, auth } = make(line, { idleTimeoutMs: 150 });
    await con.start();
    await login(line);
    await line.until('sim-a> ');
    await line.until('logged out\r\nsim-a login: ', 0, 3000);
    assert.equal(auth[auth.length - 1]!.reason, 'idle');
    const at = line.written.length;
    await login(line);
    await line.until('sim-a> ', at);
    line.type('\x04');
    await line.until('logged out', at);
    assert.equal(auth[auth.length - 1]!.reason, 'eof');
  });

  it('a tty that is missing at start or goes away is reopened, and a hangup ends the session', async () => {
    const line = new FakeLine();
    line.failOpens = 2;
    const { con, auth } = make(line);
    await con.start();
    assert.equal(con.status.open, false);
    await line.until('sim-a login: ', 0, 3000);
    assert.equal(line.opens, 3);
    await login(line);
    await line.until('sim-a> ');
    line.hangup();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(auth[auth.length - 1]!.reason, 'hangup');
    const before = line.opens;
    line.written = '';
    await line.until('sim-a login: ', 0, 3000);
    assert.ok(line.opens > before);
    assert.equal(con.status.user, null, 'logged out by the hangup');
  });

  it('garbage and an overlong line do not break the shell', async () => {
    const line = new FakeLine();
    const { con } = make(line, { maxLineLength: 64 });
    await con.start();
    line.type('\x00\xff\x1b[99;99R\x1b]junk\x07\r'); // garbage as a user name: only the printable part is kept
    await line.until(']junk\r\nPassword: ');
    line.type('\x03'); // Ctrl-C at the password prompt: back to the login prompt, no failure counted
    await line.until('^C\r\nsim-a login: ');
    assert.equal(con.status.failuresInARow, 0);
    await login(line);
    await line.until('sim-a> ');
    const at = line.written.length;
    line.type(`${'z'.repeat(10000)}\x15set term dumb\r`);
    await line.until('terminal: dumb (plain text only)', at);
    assert.equal(line.written.slice(at).split('\x07').length - 1, 1, 'one BEL for the overflow');
  });
});
