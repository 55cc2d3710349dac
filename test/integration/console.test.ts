/**
 * The serial console as a field engineer uses it: through a real pty pair made by socat (the board
 * end opened by the console with serialport, the user end opened here with serialport, exactly as
 * screen or picocom would), against a real controller with its real QEMU guest. Wrong password
 * (the delay grows), right password, help, board info, a daemon command with --json, the guest's
 * own console and back with Ctrl-E c ., Ctrl-C on a running command, and the tty vanishing and
 * coming back. Cleans up socat, the controller and QEMU, even on failure.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { SerialConsole, type ConsoleAuthEvent } from '../../src/mgmt/console/serial-console.js';
import { hashPassword, writePasswordFile } from '../../src/mgmt/console/password.js';
import { Rig, alive, eventually } from '../support/rig.js';
import { Terminal, ptyPair, stopPty } from '../support/terminal.js';

const PASSWORD = 'field engineer 1';
const CLI = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');

describe('serial console through a pty pair', function () {
  this.timeout(240000);
  const rig = new Rig();
  const A = join(rig.dir, 'ttyConsoleBoard');
  const B = join(rig.dir, 'ttyConsoleUser');
  const passwordFile = join(rig.dir, 'console.passwd');
  const term = new Terminal();
  const auth: ConsoleAuthEvent[] = [];
  const logs: Array<Record<string, unknown>> = [];
  let socat: ChildProcess | undefined;
  let con: SerialConsole | undefined;
  let prompt = '';

  before(async () => {
    await rig.startHlr();
    await rig.startDaemon();
    writePasswordFile(passwordFile, await hashPassword(PASSWORD));
    socat = await ptyPair(A, B);
    const log = pino({ level: 'info' }, { write: (s: string) => { logs.push(JSON.parse(s) as Record<string, unknown>); } });
    con = new SerialConsole({
      device: A,
      baud: 115200,
      board: rig.board.name,
      boardFile: rig.boardFile,
      passwordFile,
      guestConsoleSocket: () => join(rig.store, 'qemu', 'console.sock'),
      guestConsoleLog: () => join(rig.store, 'qemu', 'console.log'),
      cliEntry: CLI,
      log,
    });
    con.on('auth', (e) => auth.push(e));
    prompt = `${rig.board.name}> `;
    await term.open(B);
    await con.start();
  });

  after(async () => {
    await term.close().catch(() => undefined);
    await con?.stop().catch(() => undefined);
    await stopPty(socat);
    await rig.cleanup();
  });

  it('a wrong password is refused, and the delay grows after each failure', async () => {
    const delays: number[] = [];
    for (let i = 0; i < 2; i++) {
      const at = term.mark;
      term.type('\r');
      await term.until(`${rig.board.name} login: `, at);
      term.type('field\r');
      const pw = await term.until('Password: ', at);
      const t0 = Date.now();
      term.type('not the password\r');
      await term.until('Login incorrect\r\n', pw);
      delays.push(Date.now() - t0);
    }
    // Default policy: 1 s, then 2 s (plus a ~0.1 s scrypt check each). Generous bounds.
    assert.ok(delays[0]! >= 900 && delays[0]! < 6000, `first delay ${delays[0]} ms`);
    assert.ok(delays[1]! >= delays[0]! + 600, `second delay ${delays[1]} ms should be clearly longer than the first ${delays[0]} ms`);
    assert.deepEqual(auth.map((e) => [e.kind, e.failures, e.delayMs]), [['failure', 1, 1000], ['failure', 2, 2000]]);
    assert.equal(logs.filter((l) => l.msg === 'console login failed').length, 2, 'every failure is logged');
    assert.ok(!term.transcript.includes('not the password'), 'the password is not echoed');
  });

  it('the right password opens a shell', async () => {
    const at = term.mark;
    term.type('\r');
    await term.until('login: ', at);
    term.type('field\r');
    await term.until('Password: ', at);
    term.type(`${PASSWORD}\r`);
    await term.until(`logged in to ${rig.board.name} as field`, at);
    await term.until(prompt, at);
    assert.equal(auth[auth.length - 1]!.kind, 'login');
  });

  it('help lists the commands', async () => {
    const out = await term.run('help', prompt);
    for (const s of ['guest ', 'board ', 'events', 'guest console', 'Ctrl-E c .', 'logout']) assert.ok(out.includes(s), `help mentions ${s}:\n${out}`);
    assert.ok(!/^ {2}chassis /m.test(out), 'chassis is not offered on the console');
  });

  it('board info: the same output as the CLI', async () => {
    // The transcript keeps the tty's bytes as latin1 code units; the console passes the CLI's UTF-8
    // through unchanged (an Intel CPU's brand has a ®), so read it back as UTF-8.
    const out = Buffer.from(await term.run('board info', prompt), 'latin1').toString('utf8');
    const cli = await rig.cli('board', 'info'); // board info takes no --board: it reads this machine
    assert.equal(cli.code, 0);
    const firstLines = (s: string) => s.split(/\r?\n/).slice(0, 2).join('\n');
    assert.equal(firstLines(out), firstLines(cli.stdout), 'host and cpu lines are identical');
    assert.match(out, /^host .*\r\ncpu: /);
  });

  it('a daemon command, in text and with --json', async () => {
    const text = await term.run('guest status', prompt);
    assert.match(text, new RegExp(`^board ${rig.board.name} \\(STANDALONE\\): controller pid ${rig.daemonPid}`));
    const json = JSON.parse(await term.run('guest status --json', prompt)) as { board: string; role: string; pid: number; guest: { state: string } };
    assert.equal(json.board, rig.board.name);
    assert.equal(json.role, 'STANDALONE');
    assert.equal(json.pid, rig.daemonPid);
    assert.equal(json.guest.state, 'running');
    const bad = await term.run('guest manage NONSENSE', prompt);
    assert.match(bad, /error US_ERR_CONTROL: unknown management command "NONSENSE".*\r\n\[exit status 1\]\r\n$/s);
  });

  it('attaches to the guest console, sees the guest, and comes back with Ctrl-E c .', async () => {
    let at = term.mark;
    term.type('guest console\r');
    const attached = await term.until('[attached to the guest console', at);
    await term.until('Ctrl-E c . to come back', at);
    // What the guest prints arrives: a management SAVE makes the application print DX-SAVE.
    const save = await rig.cli('guest', 'manage', 'SAVE', '--board', rig.boardFile);
    assert.equal(save.code, 0, save.stderr);
    await term.until(/DX-SAVE bytes=\d+/, attached);
    // What we type reaches the guest's tty, whose line discipline echoes it back.
    at = term.mark;
    term.type('hello-guest');
    await term.until('hello-guest', at);
    // The boot lines are in the console log: Ctrl-E c r replays it.
    at = term.mark;
    term.type('\x05cr');
    await term.until(/DX-BOOT .*\r\n(.*\r\n)*.*DX-READY/, at);
    await term.until('[end of replay]', at);
    at = term.mark;
    term.type('\x05c.');
    await term.until('[detached from the guest console]\r\n', at);
    await term.until(prompt, at);
    const role = await term.run('role --json', prompt);
    assert.equal((JSON.parse(role) as { role: string }).role, 'STANDALONE', 'the shell works again after detaching');
  });

  it('Ctrl-C stops a running command (logs --follow) and the prompt returns', async () => {
    const at = term.mark;
    term.type('logs --follow -n 3\r');
    await term.until('controller running', at);
    term.type('\x03');
    await term.until(`[interrupted]\r\n${prompt}`, at, 10000);
  });

  it('upgrade receive hands the line to the YMODEM receiver; sb sends a file; the shell comes back', async () => {
    const incoming = join(rig.dir, 'incoming');
    const payload = join(rig.dir, 'payload.bin');
    writeFileSync(payload, randomBytes(20000));
    const at = term.mark;
    term.type(`upgrade receive --dir ${incoming} --timeout 30\r`);
    await term.until('then Ctrl-A Ctrl-S.\r\n', at);
    // The user's terminal program steps aside and runs sb on the same tty, as minicom does.
    await term.close();
    const fd = openSync(B, 'r+');
    const sb = spawn('sb', ['--ymodem', '-k', payload], { stdio: [fd, fd, 'pipe'] });
    closeSync(fd);
    let sbErr = '';
    sb.stderr!.on('data', (d: Buffer) => { sbErr += d.toString('latin1'); });
    const bound = setTimeout(() => sb.kill('SIGKILL'), 60000);
    try {
      const code = await new Promise<number | null>((r) => sb.once('exit', r));
      clearTimeout(bound);
      assert.equal(code, 0, `sb failed: ${sbErr.slice(-300)}`);
    } finally {
      clearTimeout(bound);
      if (sb.exitCode === null && sb.signalCode === null) sb.kill('SIGKILL');
    }
    await term.open(B);
    await eventually(() => (existsSync(join(incoming, 'payload.bin')) ? true : undefined), 10000, 50);
    assert.deepEqual(readFileSync(join(incoming, 'payload.bin')), readFileSync(payload));
    await eventually(() => (con!.status.open && con!.status.mode === 'shell' ? true : undefined), 10000, 50);
    const role = await term.run('role --json', prompt);
    assert.equal((JSON.parse(role) as { role: string }).role, 'STANDALONE', 'still logged in after the transfer');
  });

  it('console passwd changes the password: the old one stops working, the new one works', async () => {
    const NEW = 'a brand new secret';
    let at = term.mark;
    term.type('console passwd\r');
    await term.until('Current password: ', at);
    term.type(`${PASSWORD}\r`);
    await term.until('New password: ', at);
    term.type(`${NEW}\r`);
    await term.until('Retype new password: ', at);
    term.type(`${NEW}\r`);
    await term.until(`console password set (${passwordFile}, mode 0600)\r\n${prompt}`, at);
    assert.ok(!term.transcript.slice(at).includes(NEW), 'never echoed');
    term.type('logout\r');
    await term.until('login: ', at);
    for (const [pw, expect] of [[PASSWORD, 'Login incorrect'], [NEW, prompt]] as const) {
      at = term.mark;
      term.type('\r');
      await term.until('login: ', at);
      term.type('field\r');
      await term.until('Password: ', at);
      term.type(`${pw}\r`);
      await term.until(expect, at);
    }
  });

  it('the terminal only ever saw plain text with CR LF', () => {
    const shellPart = term.transcript;
    assert.ok(!shellPart.includes('\x1b'), 'no escape sequences');
    const bareLf = /[^\r]\n/.exec(shellPart);
    assert.equal(bareLf, null, `a bare LF at ${bareLf?.index}: ${JSON.stringify(shellPart.slice((bareLf?.index ?? 0) - 40, (bareLf?.index ?? 0) + 10))}`);
  });

  it('the tty disappearing ends the session; the console reopens it when it is back', async () => {
    await term.close();
    await stopPty(socat);
    await eventually(() => (auth.some((e) => e.kind === 'logout' && e.reason === 'hangup') ? true : undefined), 5000, 50);
    assert.equal(con!.status.open, false);
    socat = await ptyPair(A, B);
    await term.open(B);
    await eventually(() => (con!.status.open ? true : undefined), 5000, 50);
    const at = term.mark;
    term.type('\r');
    await term.until(`${rig.board.name} login: `, at, 5000);
    assert.equal(con!.status.user, null);
    assert.ok(alive(rig.daemonPid!), 'the controller was never affected');
  });
});
