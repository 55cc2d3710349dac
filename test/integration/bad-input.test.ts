/**
 * Bad input to `understudy guest start`: a malformed profile or descriptor, a missing QEMU or image,
 * a port already in use. Each gives a clear error naming what is wrong, a non-zero exit, and leaves
 * nothing started behind (no controller, no QEMU, no lock).
 */
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Rig } from '../support/rig.js';

function startArgs(rig: Rig): string[] {
  return ['guest', 'start', '--board', rig.boardFile, '--guest', rig.guestFile];
}

/** Nothing of a controller is left: no lock, no sockets, no QEMU. */
function assertNothingStarted(rig: Rig): void {
  const list = (d: string) => (existsSync(d) ? readdirSync(d) : []);
  const left = [...list(rig.store), ...list(join(rig.store, 'qemu')).map((f) => `qemu/${f}`)];
  for (const f of ['understudyd.pid', 'qemu.pid', 'understudyd.sock', 'qemu/qmp.sock', 'qemu/guest-nic.sock']) {
    assert.ok(!left.includes(f), `${f} left behind in ${rig.store}: ${left.join(', ')}`);
  }
}

describe('bad input to guest start', function () {
  this.timeout(180000);
  const rigs: Rig[] = [];
  const rig = (o?: ConstructorParameters<typeof Rig>[0]) => { const r = new Rig(o); rigs.push(r); return r; };
  after(async () => { for (const r of rigs) await r.cleanup(); });

  it('malformed board profile: names the file and the field', async () => {
    const r = rig({ board: (b) => { b.cores.guest = -1; } });
    const out = await r.cli(...startArgs(r));
    assert.equal(out.code, 1);
    assert.match(out.stderr, /US_ERR_CONFIG/);
    assert.ok(out.stderr.includes(r.boardFile), out.stderr);
    assert.match(out.stderr, /cores\.guest/);
    assertNothingStarted(r);
  });

  it('malformed guest descriptor: names the file and the field, also with --json', async () => {
    const r = rig({ guest: (g) => { g.nic.model = 'virtio'; } });
    const out = await r.cli(...startArgs(r), '--json');
    assert.equal(out.code, 1);
    const err = JSON.parse(out.stdout).error;
    assert.equal(err.code, 'US_ERR_CONFIG');
    assert.ok(err.message.includes(r.guestFile) && err.message.includes('nic.model'), err.message);
    assertNothingStarted(r);
  });

  it('a descriptor that is not JSON', async () => {
    const r = rig();
    writeFileSync(r.guestFile, '{"name": "dx-legacy",');
    const out = await r.cli(...startArgs(r));
    assert.equal(out.code, 1);
    assert.match(out.stderr, /US_ERR_CONFIG: guest descriptor .*guest\.json: not valid JSON/);
  });

  it('missing QEMU binary', async () => {
    const r = rig({ board: (b) => { b.qemuBinary = '/nonexistent/qemu-system-x86_64'; } });
    const out = await r.cli(...startArgs(r));
    assert.equal(out.code, 1);
    assert.match(out.stderr, /US_ERR_NOT_FOUND: QEMU binary "\/nonexistent\/qemu-system-x86_64"/);
    assertNothingStarted(r);
  });

  it('QEMU\'s user missing on the host: names qemuUser and the fix', async () => {
    const r = rig({ board: (b) => { b.qemuUser = 'us-no-such-user'; } });
    const out = await r.cli(...startArgs(r));
    assert.equal(out.code, 1);
    assert.match(out.stderr, /US_ERR_CONFIG: board profile \S+board\.json: qemuUser: QEMU's user "us-no-such-user" does not exist on this host/);
    assert.match(out.stderr, /image-build\/setup\.sh/);
    assertNothingStarted(r);
  });

  it('storageDir under a folder QEMU\'s user cannot enter: names qemuUser and that folder', async () => {
    const r = rig();
    const locked = join(r.dir, 'locked');
    mkdirSync(locked, { mode: 0o700 });
    r.board.storageDir = join(locked, 'store');
    writeFileSync(r.boardFile, JSON.stringify(r.board, null, 2));
    const out = await r.cli(...startArgs(r));
    assert.equal(out.code, 1);
    assert.match(out.stderr, /US_ERR_CONFIG: .*qemuUser: QEMU runs as understudy-qemu \(uid \d+\), which cannot reach its folder/);
    assert.ok(out.stderr.includes(`${locked} (mode 0700, owner uid 0) is not searchable by understudy-qemu`), out.stderr);
    assertNothingStarted(r);
  });

  it('missing guest image', async () => {
    const r = rig({ guest: (g) => { g.image.kernel = join('/nonexistent', 'vmlinuz'); } });
    const out = await r.cli(...startArgs(r));
    assert.equal(out.code, 1);
    assert.match(out.stderr, /US_ERR_NOT_FOUND: guest image kernel \/nonexistent\/vmlinuz/);
    assertNothingStarted(r);
  });

  it('service port already in use', async () => {
    const r = rig();
    const squatter = createSocket('udp4');
    await new Promise<void>((res) => squatter.bind(r.board.service.port, r.board.service.address, () => res()));
    try {
      const out = await r.cli(...startArgs(r));
      assert.equal(out.code, 1);
      assert.match(out.stderr, new RegExp(`US_ERR_ADDRESS_IN_USE: service endpoint ${r.board.service.address.replace(/\./g, '\\.')}:5000: address already in use`));
      assertNothingStarted(r);
    } finally {
      squatter.close();
    }
  });

  it('commands against a board with no controller say so', async () => {
    const r = rig();
    const out = await r.cli('guest', 'status', '--board', r.boardFile);
    assert.equal(out.code, 1);
    assert.match(out.stderr, /US_ERR_NOT_RUNNING/);
  });
});
