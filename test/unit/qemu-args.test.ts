import assert from 'node:assert/strict';
import { QEMU_SANDBOX, qemuArgs, qemuCommand } from '../../src/hw/hypervisor/qemu.js';
import { ROOT_CREDENTIALS } from '../../src/hw/hypervisor/qemu-user.js';

describe('QEMU\'s command line', () => {
  const base = {
    name: 'understudy-sim-a-dx-legacy', accel: 'tcg' as const, memoryMb: 128, kernel: '/g/vmlinuz', initrd: '/g/initrd.img', append: 'console=ttyS0',
    nic: { model: 'e1000', mac: '52:54:00:12:34:56' }, nicSocketPath: '/s/nic.sock', qmpSocketPath: '/s/qmp.sock', consoleSocketPath: '/s/console.sock',
    consoleLogPath: '/s/console.log', stateDiskPath: '/s/dx-state.img', watchdog: true, stderrPath: '/s/qemu.log',
    credentials: { user: 'understudy-qemu', uid: 998, gid: 997, groups: [106] }, cwd: '/s',
  };

  it('starts QEMU through setpriv as its own user, uid and gid changed before the parent-death signal, only the kvm group kept', () => {
    const { file, args } = qemuCommand(base);
    assert.equal(file, 'setpriv');
    const sep = args.indexOf('--');
    assert.deepEqual(args.slice(0, sep), ['--reuid', '998', '--regid', '997', '--groups', '106', '--pdeathsig', 'SIGKILL']);
    assert.deepEqual(args.slice(sep + 1), ['qemu-system-x86_64', ...qemuArgs(base)]);
    // QEMU's own -runas would change uid after its seccomp filter is in place (SIGSYS with elevateprivileges=deny).
    assert.ok(!args.includes('-runas') && !args.includes('--keep-groups') && !args.includes('--init-groups'), args.join(' '));
  });

  it('a copy that loads a stream first starts on the given CPUs: taskset, then setpriv as before', () => {
    const { file, args } = qemuCommand({ ...base, incoming: 'unix:/s/restore-in.sock', startCpus: [1] });
    assert.equal(file, 'taskset');
    assert.deepEqual(args.slice(0, 3), ['-c', '1', 'setpriv']);
    assert.deepEqual(args.slice(3), qemuCommand({ ...base, incoming: 'unix:/s/restore-in.sock' }).args, 'the rest is setpriv\'s line, unchanged');
    assert.equal(qemuCommand({ ...base, startCpus: [] }).file, 'setpriv', 'no CPUs given: the controller\'s');
  });

  it('without a kvm group on the host, QEMU keeps no supplementary group at all', () => {
    const { args } = qemuCommand({ ...base, credentials: { user: 'q', uid: 1001, gid: 1001, groups: [] }, binary: '/opt/qemu/bin/qemu-system-x86_64' });
    assert.deepEqual(args.slice(0, args.indexOf('--') + 2), ['--reuid', '1001', '--regid', '1001', '--clear-groups', '--pdeathsig', 'SIGKILL', '--', '/opt/qemu/bin/qemu-system-x86_64']);
  });

  it('qemuUser root: QEMU keeps the controller\'s identity (only the parent-death signal)', () => {
    const { args } = qemuCommand({ ...base, credentials: ROOT_CREDENTIALS });
    assert.deepEqual(args.slice(0, args.indexOf('--') + 2), ['--pdeathsig', 'SIGKILL', '--', 'qemu-system-x86_64']);
  });

  it('runs QEMU under its seccomp sandbox: no privilege change, no fork/exec, no resource control', () => {
    const a = qemuArgs(base);
    assert.equal(a[a.indexOf('-sandbox') + 1], QEMU_SANDBOX);
    for (const opt of ['on', 'obsolete=deny', 'elevateprivileges=deny', 'spawn=deny', 'resourcecontrol=deny']) assert.ok(QEMU_SANDBOX.split(',').includes(opt), opt);
  });

  it('a restore reads its saved image from descriptor 3 (given at start), not from a socket', () => {
    const a = qemuArgs({ ...base, incomingFile: '/s/checkpoint.img', incoming: 'unix:/s/clone-in.sock' });
    assert.equal(a[a.indexOf('-incoming') + 1], 'fd:3');
    assert.equal(a.filter((x) => x === '-incoming').length, 1, 'one -incoming: the file wins');
    assert.ok(!a.join(' ').includes('/s/checkpoint.img'), 'the path is not on the line: QEMU reads the descriptor');
  });

  it('a restore or clone target listens on a unix socket; nothing on the line runs a shell', () => {
    const a = qemuArgs({ ...base, incoming: 'unix:/s/restore-in.sock' });
    assert.equal(a[a.indexOf('-incoming') + 1], 'unix:/s/restore-in.sock');
    assert.ok(!a.some((x) => x.includes('exec:')), a.join(' '));
  });
});
