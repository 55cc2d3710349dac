/**
 * The daemon as its users meet it: the CLI against a running controller with --json parsed and
 * checked; bad input on the control socket (raw garbage, oversized, unknown command, malformed
 * frames) each answered with an error or a dropped connection while the daemon stays alive; a second
 * daemon on the same board refused; `understudy logs` over the daemon's real log.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { appendFileSync, closeSync, openSync, readFileSync, renameSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { callControl } from '../../src/mgmt/ipc.js';
import { DAEMON_ENTRY, PACKAGE_ROOT } from '../../src/cli/locate.js';
import { DAEMON_ENV, DAEMON_NODE_FLAGS } from '../../src/core/footprint.js';
import { RawControl } from '../support/raw-control.js';
import { Rig, alive, eventually } from '../support/rig.js';

describe('daemon: CLI and control socket against a running controller', function () {
  this.timeout(240000);
  const rig = new Rig();
  let sock = '';

  before(async () => {
    await rig.startHlr();
    await rig.startDaemon();
    sock = join(rig.store, 'understudyd.sock');
  });
  after(() => rig.cleanup());

  async function stillServing(): Promise<void> {
    assert.ok(alive(rig.daemonPid!), 'the daemon is alive');
    const pong = (await callControl(sock, 'ping', {}, 5000)) as { pid: number; role: string };
    assert.equal(pong.pid, rig.daemonPid);
  }

  describe('the CLI with --json', () => {
    it('guest status: the board, the controller, the running guest', async () => {
      const s = await rig.cliJson('guest', 'status', '--board', rig.boardFile);
      assert.equal(s.board, rig.board.name);
      assert.equal(s.pid, rig.daemonPid);
      assert.equal(s.role, 'STANDALONE');
      assert.ok(Number.isInteger(s.uptimeS) && s.uptimeS >= 0);
      assert.equal(s.service.address, rig.board.service.address);
      assert.equal(s.service.port, rig.board.service.port);
      assert.equal(s.guest.state, 'running');
      assert.equal(s.guest.guest.name, rig.guest.name);
      assert.ok(s.guest.qemuPid > 0 && alive(s.guest.qemuPid));
      assert.ok(s.rssMb > 0 && s.rssMb < 1024);
    });

    it('role: STANDALONE without a partner', async () => {
      const r = await rig.cliJson('role', '--board', rig.boardFile);
      assert.deepEqual(r, { board: rig.board.name, role: 'STANDALONE' });
      const text = await rig.cli('role', '--board', rig.boardFile);
      assert.equal(text.code, 0);
      assert.match(text.stdout, /STANDALONE \(no partner configured\)/);
    });

    it('events: a list of journal entries with ids, times and kinds', async () => {
      const r = await rig.cliJson('events', '--board', rig.boardFile, '-n', '10');
      assert.equal(r.board, rig.board.name);
      assert.ok(Array.isArray(r.events));
      for (const e of r.events) {
        assert.ok(Number.isInteger(e.id) && typeof e.kind === 'string' && typeof e.message === 'string', JSON.stringify(e));
        assert.ok(!Number.isNaN(Date.parse(e.at)), e.at);
      }
      const bad = await rig.cli('events', '--board', rig.boardFile, '-n', 'zero', '--json');
      assert.equal(bad.code, 1);
      assert.equal(JSON.parse(bad.stdout).error.code, 'US_ERR_CONFIG');
    });

    it('link status without a partner: a US_ERR_ROLE error document and exit 1', async () => {
      const r = await rig.cli('link', 'status', '--board', rig.boardFile, '--json');
      assert.equal(r.code, 1);
      const err = JSON.parse(r.stdout).error;
      assert.equal(err.code, 'US_ERR_ROLE');
      assert.match(err.message, /no partner configured/);
    });

    it('guest manage: a reply from the guest application; an unknown command is an error', async () => {
      const r = await rig.cliJson('guest', 'manage', 'STATE', '--board', rig.boardFile);
      assert.equal(typeof r.reply, 'string');
      assert.ok(r.reply.length > 0);
      const bad = await rig.cli('guest', 'manage', 'REBOOT', '--board', rig.boardFile, '--json');
      assert.equal(bad.code, 1);
      assert.equal(JSON.parse(bad.stdout).error.code, 'US_ERR_CONTROL');
    });
  });

  describe('bad input on the control socket', () => {
    it('an unknown command: US_ERR_CONTROL', async () => {
      await assert.rejects(callControl(sock, 'frobnicate'), { code: 'US_ERR_CONTROL', message: /unknown command "frobnicate"/ });
      await stillServing();
    });

    it('an oversized request (> 64 KiB): US_ERR_CONTROL', async () => {
      await assert.rejects(callControl(sock, 'ping', { blob: 'x'.repeat(70 * 1024) }), { code: 'US_ERR_CONTROL', message: /larger than 65536/ });
      await stillServing();
    });

    it('malformed frames by hand: bad command names and args get error replies', async () => {
      const c = await RawControl.open(sock);
      try {
        c.send(`${JSON.stringify({ type: 'request', data: { id: 'a1', command: 'NOT A COMMAND!' } })}\f`);
        c.send(`${JSON.stringify({ type: 'request', data: { id: 'a2', command: 'events', args: [1, 2] } })}\f`);
        c.send(`${JSON.stringify({ type: 'request', data: { id: 'a3', command: 'events', args: { limit: 'many' } } })}\f`);
        c.send(`${JSON.stringify({ type: 'request', data: null })}\f`);
        c.send(`${JSON.stringify({ type: 'request', data: { id: 'a5', command: 'ping' } })}\f`);
        await eventually(() => (c.frames().length >= 5 ? true : undefined), 10000, 50);
        const byId = new Map(c.frames().map((f) => [f.data.id, f.data]));
        assert.equal(byId.get('a1').error.code, 'US_ERR_CONTROL');
        assert.match(byId.get('a2').error.message, /args must be an object/);
        assert.equal(byId.get('a3').error.code, 'US_ERR_CONTROL');
        assert.equal(byId.get('')?.error.code, 'US_ERR_CONTROL', 'no id: still an error reply');
        assert.equal(byId.get('a5').ok, true, 'the same connection still works');
      } finally {
        c.close();
      }
      await stillServing();
    });

    it('raw garbage (binary, invalid JSON frames, 8 MiB without a delimiter) never kills the daemon', async () => {
      for (const junk of [
        randomBytes(4096),
        Buffer.from('this is not json\f{"type":\f\f\f'),
        Buffer.from('{"type":"request","data":{"id":"x","command":"ping","args":{"a":'),
        Buffer.concat([randomBytes(100), Buffer.from('\f')]),
      ]) {
        const c = await RawControl.open(sock);
        c.send(junk);
        await new Promise((r) => setTimeout(r, 200));
        c.close();
        await stillServing();
      }
      const big = await RawControl.open(sock);
      const chunk = Buffer.alloc(1024 * 1024, 0x61);
      for (let i = 0; i < 8; i++) big.send(chunk);
      await new Promise((r) => setTimeout(r, 500));
      big.close();
      await stillServing();
    });

    it('many connections at once, most of them silent: the daemon keeps answering', async () => {
      const idle = await Promise.all(Array.from({ length: 12 }, () => RawControl.open(sock)));
      try {
        const pongs = await Promise.all(Array.from({ length: 3 }, () => callControl(sock, 'ping', {}, 10000)));
        assert.equal(pongs.length, 3);
      } finally {
        for (const c of idle) c.close();
      }
      await stillServing();
    });
  });

  it('a second daemon on the same board refuses with US_ERR_ALREADY_RUNNING', async () => {
    const r = await rig.cli('guest', 'start', '--board', rig.boardFile, '--guest', rig.guestFile, '--json');
    assert.equal(r.code, 1, r.stdout + r.stderr);
    const err = JSON.parse(r.stdout).error;
    assert.equal(err.code, 'US_ERR_ALREADY_RUNNING');
    assert.match(err.message, new RegExp(`pid ${rig.daemonPid}`));
    await stillServing();
    const st = await rig.cliJson('guest', 'status', '--board', rig.boardFile);
    assert.equal(st.guest.state, 'running', 'the first daemon and its guest are untouched');
  });

  it('its starter gone before the READY line (the pipe closed, as when `guest start` times out or is killed): the controller runs on, says so on stderr, no uncaught exception', async function () {
    this.timeout(180000);
    await rig.stopDaemon();
    const errFile = join(rig.dir, 'notify-gone.stderr');
    const errFd = openSync(errFile, 'w');
    const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, DAEMON_ENTRY, '--board', rig.boardFile, '--guest', rig.guestFile], {
      detached: true, stdio: ['ignore', 'pipe', errFd], env: { ...process.env, ...DAEMON_ENV, UNDERSTUDY_NOTIFY: 'stdout' },
    });
    closeSync(errFd);
    rig.daemonPid = child.pid;
    child.stdout!.destroy(); // the reader is gone: the READY line meets EPIPE
    child.unref();
    const st = await eventually(async () => {
      const r = (await callControl(sock, 'status', {}, 3000).catch(() => undefined)) as { guest?: { state?: string } } | undefined;
      return r?.guest?.state === 'running' ? r : undefined;
    }, 120000, 250);
    assert.equal(st.guest!.state, 'running');
    const said = await eventually(() => (/start-up notice could not be written/.test(readFileSync(errFile, 'utf8')) ? readFileSync(errFile, 'utf8') : undefined), 20000, 100)
      .catch(() => readFileSync(errFile, 'utf8'));
    assert.match(said, /"err":"EPIPE".*start-up notice could not be written/, 'the READY line met EPIPE, and that was reported');
    assert.doesNotMatch(said, /uncaught exception/);
    assert.ok(alive(child.pid!), 'the controller is alive');
    await stillServing();
  });

  describe('understudy logs', () => {
    it('reads the daemon log: readable lines, --json lines, --level filter', async () => {
      const text = await rig.cli('logs', '--board', rig.boardFile, '-n', '200');
      assert.equal(text.code, 0, text.stderr);
      assert.match(text.stdout, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  understudyd: controller running {2}.*guest=dx-legacy/m);
      const json = await rig.cli('logs', '--board', rig.boardFile, '-n', '5', '--json');
      const lines = json.stdout.trim().split('\n');
      assert.equal(lines.length, 5);
      for (const l of lines) {
        const e = JSON.parse(l);
        assert.ok(typeof e.level === 'number' && typeof e.time === 'number' && typeof e.msg === 'string');
      }
      const warn = await rig.cli('logs', '--board', rig.boardFile, '--level', 'warn', '--json');
      for (const l of warn.stdout.split('\n').filter(Boolean)) assert.ok(JSON.parse(l).level >= 40, l);
      const bad = await rig.cli('logs', '--board', rig.boardFile, '--level', 'loud');
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /US_ERR_CONFIG: --level/);
    });

    it('--follow prints new lines and survives truncation and rotation', async () => {
      const file = join(rig.dir, 'follow.log');
      const line = (msg: string) => `${JSON.stringify({ level: 30, time: Date.now(), name: 'understudyd', component: 't', msg })}\n`;
      writeFileSync(file, line('old-1') + line('old-2'));
      const child = spawn(process.execPath, [join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js'), 'logs', '--file', file, '--follow', '-n', '1'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
      try {
        await eventually(() => (out.includes('old-2') ? true : undefined), 10000, 50);
        assert.ok(!out.includes('old-1'), '-n 1: only the last line first');
        appendFileSync(file, line('new-1'));
        await eventually(() => (out.includes('new-1') ? true : undefined), 10000, 50);
        truncateSync(file, 0);
        await new Promise((r) => setTimeout(r, 400));
        appendFileSync(file, line('after-truncate'));
        await eventually(() => (out.includes('after-truncate') ? true : undefined), 10000, 50);
        renameSync(file, `${file}.1`);
        writeFileSync(file, line('after-rotate'));
        await eventually(() => (out.includes('after-rotate') ? true : undefined), 10000, 50);
        assert.match(err, /truncated/);
        assert.match(err, /rotated/);
      } finally {
        child.kill('SIGINT');
        await new Promise((r) => { if (child.exitCode !== null) r(null); else child.once('exit', r); });
      }
      assert.equal(child.exitCode, 0, 'Ctrl-C ends --follow cleanly');
    });
  });
});
