import assert from 'node:assert/strict';
import { QEMU_SANDBOX, qemuArgs } from '../../src/hw/hypervisor/qemu.js';

describe('QEMU\'s command line', () => {
  const base = {
    name: 'understudy-sim-a-dx-legacy', accel: 'tcg' as const, memoryMb: 128, kernel: '/g/vmlinuz', initrd: '/g/initrd.img', append: 'console=ttyS0',
    nic: { model: 'e1000', mac: '52:54:00:12:34:56' }, nicSocketPath: '/s/nic.sock', qmpSocketPath: '/s/qmp.sock', consoleSocketPath: '/s/console.sock',
    consoleLogPath: '/s/console.log', stateDiskPath: '/s/dx-state.img', watchdog: true, stderrPath: '/s/qemu.log',
  };

  it('runs QEMU under its seccomp sandbox: no privilege change, no fork/exec, no resource control', () => {
    const a = qemuArgs(base);
    assert.equal(a[a.indexOf('-sandbox') + 1], QEMU_SANDBOX);
    for (const opt of ['on', 'obsolete=deny', 'elevateprivileges=deny', 'spawn=deny', 'resourcecontrol=deny']) assert.ok(QEMU_SANDBOX.split(',').includes(opt), opt);
  });

  it('a restore or clone target listens on a unix socket; nothing on the line runs a shell', () => {
    const a = qemuArgs({ ...base, incoming: 'unix:/s/restore-in.sock' });
    assert.equal(a[a.indexOf('-incoming') + 1], 'unix:/s/restore-in.sock');
    assert.ok(!a.some((x) => x.includes('exec:')), a.join(' '));
  });
});
