/**
 * The foundation end to end, with real QEMU: boot the reference guest behind its controller, every
 * protocol command through the board's service endpoint, pinning read back from /proc, the guest
 * watchdog restarting a hung guest, one controller per board, no QEMU left after SIGKILL; QEMU as
 * its own user (board profile qemuUser), with no capability and no write access to the storage.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { readThreadAffinity, listThreads } from '../../src/hw/affinity.js';
import { UdpClient } from '../../src/sim/udp-client.js';
import { Rig, alive, eventually, waitGone } from '../support/rig.js';

describe('hosting the legacy guest on one board (real QEMU)', function () {
  this.timeout(240000);
  let rig: Rig;
  let client: UdpClient;
  // The guest's kernel and initrd in a folder QEMU's user cannot enter (a checkout under a 0700 folder).
  const hidden = mkdtempSync(join(tmpdir(), 'us-hidden-image-'));

  before(async () => {
    // A short guest watchdog so the hang test is quick; 'auto' accel exercises the KVM probe.
    rig = new Rig({ guest: (g) => {
      g.watchdog.timeoutS = 3;
      for (const k of ['kernel', 'initrd'] as const) {
        const to = join(hidden, basename(g.image[k] as string));
        copyFileSync(g.image[k] as string, to);
        g.image[k] = to;
      }
    } });
    await rig.startHlr();
    await rig.startDaemon();
    client = await new UdpClient(rig.board.service).open();
  });
  after(async () => {
    client?.close();
    await rig?.cleanup();
    rmSync(hidden, { recursive: true, force: true });
  });

  it('answers every protocol command through the service endpoint', async () => {
    const ask = (id: string, body: string) => client.request(id, body, 5000, 2);
    assert.equal(await ask('r1', 'REG alice'), 'r1 OK REG alice 1');
    assert.equal(await ask('r2', 'REG bob'), 'r2 OK REG bob 2');
    assert.equal(await ask('r3', 'REG carol'), 'r3 OK REG carol 3');
    assert.equal(await ask('r4', 'REG blocked9'), 'r4 ERR DENIED blocked9');
    assert.ok(rig.hlr!.queries >= 4, 'REG asked the external AUTH service through the controller');
    assert.equal(await ask('c1', 'CALL alice bob'), 'c1 OK CALL 1');
    assert.match(await ask('c2', 'CALL alice carol'), /^c2 ERR BUSY alice/);
    assert.match(await ask('c3', 'CALL alice zed'), /^c3 ERR /);
    assert.equal(await ask('g1', 'GET alice'), 'g1 OK GET alice calls=1 state=busy');
    assert.equal(await ask('g2', 'GET carol'), 'g2 OK GET carol calls=0 state=idle');
    assert.equal(await ask('s1', 'STATS'), 's1 OK STATS subs=3 active=1 total=1 version=1.0.0');
    assert.equal(await ask('e1', 'END 1'), 'e1 OK END 1');
    assert.match(await ask('e2', 'END 1'), /^e2 ERR /);
    assert.equal(await ask('c4', 'CALL bob carol'), 'c4 OK CALL 2');
    assert.equal(await ask('s2', 'STATS'), 's2 OK STATS subs=3 active=1 total=2 version=1.0.0');
    assert.match(await ask('m1', 'FROB x'), /^m1 ERR /);
  });

  it('answers a retried id from the reply cache without applying it twice', async () => {
    assert.equal(await client.request('t0', 'REG dave', 5000, 2), 't0 OK REG dave 4');
    assert.equal(await client.request('t00', 'REG erin', 5000, 2), 't00 OK REG erin 5');
    const first = await client.request('t1', 'CALL dave erin', 5000, 2);
    assert.equal(first, 't1 OK CALL 3');
    const again = await client.request('t1', 'CALL dave erin', 5000, 2);
    assert.equal(again, first);
    const stats = await client.request('t2', 'STATS', 5000, 2);
    const active = Number(/active=(\d+)/.exec(stats)![1]);
    assert.equal(active, 2, 'the retried CALL was not set up a second time');
    // Another client with the same id is a different request.
    const other = await new UdpClient(rig.board.service).open();
    try {
      assert.equal(await other.request('t1', 'GET dave', 5000, 2), 't1 OK GET dave calls=1 state=busy');
    } finally {
      other.close();
    }
  });

  it('stays silent on a request without a readable id, and keeps serving', async () => {
    client.sendRaw(Buffer.from([0, 1, 2, 255]));
    client.sendRaw('');
    client.sendRaw(' ');
    assert.match(await client.request('after', 'STATS', 5000, 2), /^after OK STATS/);
  });

  it('pins the vCPU to the guest core and everything else to housekeeping (read back from /proc)', async () => {
    const st = await rig.cliJson('guest', 'status', '--board', rig.boardFile);
    assert.equal(st.guest.state, 'running');
    const qemuPid = st.guest.qemuPid as number;
    const vcpu = st.guest.vcpuTid as number;
    assert.equal(readThreadAffinity(qemuPid, vcpu).cpus, String(rig.board.cores.guest));
    assert.match(readThreadAffinity(qemuPid, vcpu).name, /CPU 0/);
    for (const tid of listThreads(qemuPid).filter((t) => t !== vcpu)) {
      assert.equal(readThreadAffinity(qemuPid, tid).cpus, rig.board.cores.housekeeping.join(','), `QEMU thread ${tid}`);
    }
    assert.equal(readThreadAffinity(st.pid, st.pid).cpus, rig.board.cores.housekeeping.join(','), 'controller on housekeeping');
    assert.equal(st.guest.pinning.vcpu.cpus, String(rig.board.cores.guest), 'status shows the effective affinity');
    assert.match(readFileSync(`/proc/${qemuPid}/cmdline`, 'utf8').replace(/\0/g, ' '), / -smp 1 .*-device e1000,/);
  });

  it('runs QEMU as understudy-qemu from its first instruction: not root, no capability, cannot write the controller\'s storage', async () => {
    const st = await rig.cliJson('guest', 'status', '--board', rig.boardFile);
    const qemuPid = st.guest.qemuPid as number;
    const uid = Number(execFileSync('id', ['-u', 'understudy-qemu'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'understudy-qemu'], { encoding: 'utf8' }).trim());
    assert.notEqual(uid, 0);
    const status = readFileSync(`/proc/${qemuPid}/status`, 'utf8');
    const field = (name: string) => new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)?.[1]?.trim().split(/\s+/) ?? [];
    assert.deepEqual(field('Uid'), [uid, uid, uid, uid].map(String), `QEMU ${qemuPid} runs as uid ${uid} (real, effective, saved, fs)`);
    assert.deepEqual(field('Gid'), [gid, gid, gid, gid].map(String));
    const kvm = spawnSync('getent', ['group', 'kvm'], { encoding: 'utf8' }).stdout.split(':')[2];
    assert.deepEqual(field('Groups').filter(Boolean), kvm ? [kvm] : [], 'no supplementary group but kvm');
    assert.equal(field('CapEff')[0], '0000000000000000');
    assert.equal(field('CapPrm')[0], '0000000000000000');
    assert.match(readFileSync(`/proc/${qemuPid}/cmdline`, 'utf8'), /^qemu-system-x86_64\0-sandbox\0on,/, 'setpriv exec\'d QEMU itself (the pid is QEMU\'s)');
    assert.deepEqual(st.guest.qemuUser, { name: 'understudy-qemu', uid }, 'status shows QEMU\'s user');
    // Its kernel and initrd, in a folder it cannot enter, were copied where it can read them.
    const argv = readFileSync(`/proc/${qemuPid}/cmdline`, 'utf8').split('\0');
    for (const [opt, what] of [['-kernel', 'kernel'], ['-initrd', 'initrd']] as const) {
      const file = argv[argv.indexOf(opt) + 1]!;
      assert.ok(file.startsWith(join(rig.store, 'qemu-image', `${what}-`)), `${opt} ${file}`);
      const f = statSync(file);
      assert.deepEqual([f.uid, f.mode & 0o777], [0, 0o644], `${file} is root's, readable`);
      assert.ok(readFileSync(file).equals(readFileSync(rig.guest.image[what] as string)), `${file} is a copy of ${rig.guest.image[what]}`);
    }

    // The layout: storageDir searchable only, QEMU's folder its own, the state disk its own.
    assert.equal(statSync(rig.store).mode & 0o777, 0o711);
    const qdir = statSync(join(rig.store, 'qemu'));
    assert.deepEqual([qdir.uid, qdir.mode & 0o777], [uid, 0o700]);
    assert.equal(statSync(join(rig.store, 'dx-legacy-state.img')).uid, uid);
    assert.ok(existsSync(join(rig.store, 'qemu', 'qmp.sock')) && existsSync(join(rig.store, 'qemu', 'console.log')));
    // What QEMU's user can do to the controller's own files: nothing (setpriv as QEMU is started).
    const asQemu = (...cmd: string[]) => spawnSync('setpriv', ['--reuid', String(uid), '--regid', String(gid), '--clear-groups', '--', ...cmd], { encoding: 'utf8' });
    assert.notEqual(asQemu('touch', join(rig.store, 'planted')).status, 0, 'QEMU\'s user cannot create files in storageDir');
    assert.ok(!existsSync(join(rig.store, 'planted')));
    assert.notEqual(asQemu('ls', rig.store).status, 0, 'nor list it');
    for (const f of ['understudy.db', 'understudyd.log', 'qemu.log', 'qemu.pid']) {
      assert.notEqual(asQemu('cat', join(rig.store, f)).status, 0, `nor read ${f}`);
    }
    assert.equal(asQemu('touch', join(rig.store, 'qemu', 'x')).status, 0, 'but it writes its own folder (the check itself works)');
  });

  it('shows the guest console log and the board inventory', async () => {
    const con = await rig.cliJson('guest', 'console', '--board', rig.boardFile, '--tail', '50');
    assert.ok((con.lines as string[]).some((l) => l.includes('DX-READY 1.0.0')), con.lines.join('\n'));
    const inv = await rig.cliJson('board', 'info');
    assert.ok(inv.cpu.cores >= 1 && inv.memory.totalMb > 0 && Array.isArray(inv.nics));
  });

  it('refuses a second controller on the same board', async () => {
    const r = await rig.cli('guest', 'start', '--board', rig.boardFile, '--guest', rig.guestFile);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /US_ERR_ALREADY_RUNNING/);
    assert.equal((await rig.cliJson('guest', 'status', '--board', rig.boardFile)).guest.state, 'running', 'the first one is untouched');
  });

  it('restarts a hung guest when its watchdog fires, and the saved state comes back', async () => {
    assert.match((await rig.cliJson('guest', 'manage', 'SAVE', '--board', rig.boardFile)).reply, /^OK SAVE \d+/);
    const hang = await rig.cliJson('guest', 'manage', 'HANG', '--board', rig.boardFile);
    assert.equal(hang.reply, 'OK HANG');
    const st = await eventually(async () => {
      const s = await rig.cliJson('guest', 'status', '--board', rig.boardFile);
      return s.guest.restarts.length > 0 && s.guest.state === 'running' ? s : undefined;
    }, 120000, 500);
    assert.match(st.guest.restarts[0].cause, /watchdog/);
    const log = readFileSync(`${rig.store}/understudyd.log`, 'utf8');
    assert.match(log, /"cause":"guest watchdog expired[^"]*","how":"reset"/, 'the restart is logged with its cause');
    assert.equal(await client.request('w1', 'GET dave', 5000, 2), 'w1 OK GET dave calls=1 state=busy', 'state loaded from the virtual disk');
    assert.equal(await client.request('w2', 'STATS', 5000, 2), 'w2 OK STATS subs=5 active=2 total=3 version=1.0.0');
    assert.equal(await client.request('t1', 'CALL dave erin', 5000, 2), 't1 OK CALL 3', 'the reply cache was saved too');
  });

  it('leaves no QEMU behind when the controller is killed with SIGKILL', async () => {
    const qemu = rig.qemuPid()!;
    assert.ok(alive(qemu));
    process.kill(rig.daemonPid!, 'SIGKILL');
    assert.ok(await waitGone(rig.daemonPid!, 10000));
    assert.ok(await waitGone(qemu, 10000), `QEMU ${qemu} outlived its controller`);
  });
});
