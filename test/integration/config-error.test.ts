/**
 * A board whose configuration is bad keeps its serial console (issue 13, task 6): a paired board with
 * a console and a heartbeat key file of the wrong format. `understudy guest start` says what is wrong
 * (US_ERR_CONFIG naming the file) and that the controller stays up; the controller answers `status`
 * with role CONFIG-ERROR and the error, journals it, refuses what needs a serving board, starts no
 * HA and no guest; a field engineer logs in on the console (a real pty pair, as console.test.ts),
 * sees the error, and fixes it from there: `ha keygen --force`, then `guest start`. A SIGHUP with
 * the file still bad leaves it as it was. Cleans up socat, the controller and any QEMU, by pid.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { hashPassword, writePasswordFile } from '../../src/mgmt/console/password.js';
import { Rig, alive, eventually } from '../support/rig.js';
import { Terminal, ptyPair, stopPty } from '../support/terminal.js';

const PASSWORD = 'field engineer 2';

describe('a bad key file: the controller stays up without serving, with its console', function () {
  this.timeout(240000);
  let keyFile = '';
  const rig = new Rig({
    board: (b) => {
      const base = (b.service.address as string).replace(/\.1$/, '');
      keyFile = join(b.storageDir as string, '..', 'ha.key');
      b.ha = { keyFile, startupWaitMs: 600000 }; // once fixed it listens for its (absent) partner, quietly
      b.partner = { ethernet: { localAddress: `${base}.2`, partnerAddress: `${base}.3`, port: 21000 + (process.pid % 20000) } };
      b.console = { device: join(b.storageDir as string, '..', 'ttyBoard') };
    },
  });
  const tty = join(rig.dir, 'ttyUser');
  const term = new Terminal();
  const prompt = `${rig.board.name}> `;
  let socat: ChildProcess | undefined;

  before(async function () {
    if (process.getuid?.() !== 0) this.skip();
    // 32 hex digits: the 16-byte key the previous firmware took, refused by the one format.
    writeFileSync(keyFile, `${'ab'.repeat(16)}\n`);
    chmodSync(keyFile, 0o600);
    mkdirSync(rig.store, { recursive: true, mode: 0o700 });
    writePasswordFile(join(rig.store, 'console.passwd'), await hashPassword(PASSWORD));
    socat = await ptyPair(rig.board.console.device as string, tty);
    await term.open(tty);
  });

  after(async () => {
    await term.close().catch(() => undefined);
    await rig.cleanup();
    await stopPty(socat);
  });

  it('guest start: US_ERR_CONFIG naming the file and what is wrong; the controller stays up, CONFIG-ERROR in status, journaled, nothing started', async () => {
    const r = await rig.cli('guest', 'start', '--board', rig.boardFile, '--guest', rig.guestFile, '--json');
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const err = JSON.parse(r.stdout).error as { code: string; message: string; detail: { pid: number; role: string } };
    assert.equal(err.code, 'US_ERR_CONFIG');
    assert.ok(err.message.includes(`heartbeat key file ${keyFile}`), err.message);
    assert.match(err.message, /32 hexadecimal digits, not 64/);
    assert.match(err.message, /stays up without serving/);
    rig.daemonPid = err.detail.pid;
    assert.ok(alive(err.detail.pid), 'the controller is still running');

    const st = await rig.cliJson('status', '--board', rig.boardFile);
    assert.equal(st.role, 'CONFIG-ERROR');
    assert.equal(st.pid, err.detail.pid);
    assert.equal(st.configError.code, 'US_ERR_CONFIG');
    assert.ok(st.configError.message.includes(keyFile), st.configError.message);
    assert.equal(st.guest, null, 'no guest');
    assert.equal(st.partner, null, 'no HA');
    assert.equal(rig.qemuPid(), undefined, 'no QEMU');
    const role = await rig.cliJson('role', '--board', rig.boardFile);
    assert.equal(role.role, 'CONFIG-ERROR');
    const text = await rig.cli('status', '--board', rig.boardFile);
    assert.match(text.stdout, new RegExp(`NOT SERVING since .*configuration error US_ERR_CONFIG: heartbeat key file ${keyFile.replace(/[.]/g, '\\.')}`));

    const journal = await rig.cliJson('events', '--board', rig.boardFile, '--kind', 'config');
    assert.ok(journal.events.some((e: { message: string }) => /^NOT SERVING \(CONFIG-ERROR\): US_ERR_CONFIG heartbeat key file/.test(e.message)), JSON.stringify(journal.events));
    const clone = await rig.cli('clone', '--board', rig.boardFile, '--json');
    assert.equal(clone.code, 1);
    assert.match(JSON.parse(clone.stdout).error.message, /is not serving \(CONFIG-ERROR\)/);
  });

  it('the console answers a login, shows the error, and `status` on it names the file', async () => {
    const at = term.mark;
    await eventually(async () => {
      term.type('\r');
      await term.until('login: ', at, 1500);
      return true;
    }, 20000, 100);
    term.type('field\r');
    await term.until('Password: ', at);
    term.type(`${PASSWORD}\r`);
    await term.until(`logged in to ${rig.board.name} as field`, at);
    const notice = await term.until(prompt, at);
    assert.match(term.transcript.slice(at, notice), new RegExp(`NOT SERVING \\(CONFIG-ERROR since [^)]*\\): US_ERR_CONFIG heartbeat key file ${keyFile.replace(/[.]/g, '\\.')}`));
    const out = await term.run('status', prompt);
    assert.match(out, /\(CONFIG-ERROR\)/);
    assert.ok(out.includes(keyFile), out);
  });

  it('SIGHUP with the file still bad: still CONFIG-ERROR, the retry journaled', async () => {
    const before = (await rig.cliJson('events', '--board', rig.boardFile, '--kind', 'config')).events.length;
    process.kill(rig.daemonPid!, 'SIGHUP');
    const after = await eventually(async () => {
      const e = (await rig.cliJson('events', '--board', rig.boardFile, '--kind', 'config')).events;
      return e.length > before ? e : undefined;
    }, 15000, 100);
    assert.match(after.at(-1).message, /^NOT SERVING \(CONFIG-ERROR\)/);
    assert.equal((await rig.cliJson('status', '--board', rig.boardFile)).role, 'CONFIG-ERROR');
  });

  it('fixed from the console (ha keygen --force, then guest start): the same controller serves', async () => {
    const kg = await term.run('ha keygen --force', prompt);
    assert.ok(kg.includes(`heartbeat key written to ${keyFile}`), kg);
    const started = await term.run('guest start', prompt, 120000);
    assert.match(started, /controller started \(pid \d+\)/);
    const st = await rig.cliJson('status', '--board', rig.boardFile);
    assert.notEqual(st.role, 'CONFIG-ERROR');
    assert.equal(st.configError, null);
    assert.equal(st.pid, rig.daemonPid, 'the same controller: its console never went away');
    const role = await rig.cliJson('role', '--board', rig.boardFile);
    assert.ok(Number.isInteger(role.generation), 'HA runs');
    const journal = await rig.cliJson('events', '--board', rig.boardFile, '--kind', 'config');
    assert.match(journal.events.at(-1).message, /^configuration fixed: serving/);
  });
});
