import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { loadBoardProfile } from '../../src/config/board-profile.js';
import { loadGuestDescriptor } from '../../src/config/guest-descriptor.js';
import { unsafePathReason } from '../../src/config/safe-path.js';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';

const repo = (p: string) => join(PACKAGE_ROOT, p);
const sample = (f: string) => JSON.parse(readFileSync(repo(f), 'utf8')) as Record<string, any>;

/** Values an attacker (or a typo) could put in a path that reaches QEMU's options or a shell. */
const HOSTILE = [
  '/var/lib/us,file=/etc/shadow', // a comma: QEMU reads the rest as its own options
  '/var/lib/us;rm -rf /', '/var/lib/$(reboot)', '/var/lib/`id`', '/var/lib/us|cat', '/var/lib/us&', '/var/lib/us > /x',
  '/var/lib/us\nfile=/x', '/var/lib/us\r', '/var/lib/us\u0000x', '/var/lib/us\u001b[2J', '/var/lib/with space',
  "/var/lib/'q'", '/var/lib/"q"', '/var/lib/*', '/var/lib/us?', '/var/lib/~root', '/var/lib/{a,b}', '/var/lib/us\\x',
  'nbd:127.0.0.1:10809', '/var/lib/us#x', '/var/lib/us!', '/var/lib/us=x%', '', 'x'.repeat(300),
];

describe('paths from the configuration (hostile values)', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-paths-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const write = (name: string, obj: unknown) => { const f = join(dir, name); writeFileSync(f, JSON.stringify(obj)); return f; };

  for (const v of HOSTILE) {
    it(`storageDir ${JSON.stringify(v.length > 40 ? `${v.slice(0, 20)}…` : v)} is rejected at load, naming the field`, () => {
      const b = sample('board/sim-a.json');
      b.storageDir = v;
      const f = write('b.json', b);
      assert.throws(() => loadBoardProfile(f), (e: Error & { code: string }) => {
        assert.equal(e.code, 'US_ERR_CONFIG');
        assert.ok(e.message.includes(f), e.message);
        assert.match(e.message, /storageDir: /);
        return true;
      });
    });
  }

  it('every path field of a profile and a descriptor is checked, each named', () => {
    const fields: Array<[string, (b: Record<string, any>) => void]> = [
      ['qemuBinary', (b) => { b.qemuBinary = 'qemu,x'; }],
      ['console.device', (b) => { b.console.device = '/dev/tty S0'; }],
      ['partner.serial.device', (b) => { b.partner.serial.device = '/dev/ttyS1;x'; }],
      ['watchdog.device', (b) => { b.watchdog.device = '/dev/w$x'; }],
      ['fencing.controlSocket', (b) => { b.fencing.controlSocket = '/run/p,s'; }],
      ['ha.keyFile', (b) => { b.ha.keyFile = '/etc/k\n'; }],
      ['upgrade.slotsDir', (b) => { b.upgrade = { slotsDir: '/slots|x' }; }],
      ['upgrade.keysDir', (b) => { b.upgrade = { keysDir: '/keys`x`' }; }],
      ['upgrade.bootEnv.path', (b) => { b.upgrade = { bootEnv: { type: 'file', path: '/env:x' } }; }],
    ];
    for (const [field, spoil] of fields) {
      const b = sample('board/sim-a.json');
      spoil(b);
      assert.throws(() => loadBoardProfile(write('b.json', b)), (e: Error) => e.message.includes(`${field}: `), field);
    }
    for (const k of ['kernel', 'initrd'] as const) {
      const g = sample('guests/dx-legacy.json');
      g.image[k] = '/out/v1,format=qcow2';
      assert.throws(() => loadGuestDescriptor(write('g.json', g)), new RegExp(`image\\.${k}: must not contain a comma`));
    }
  });

  it('a relative path is resolved against the file\'s folder, and the folder itself is checked', () => {
    const bad = join(dir, 'a,b');
    mkdirSync(bad);
    const b = sample('board/sim-a.json');
    b.storageDir = 'store';
    const ok = loadBoardProfile(write('b.json', b));
    assert.equal(ok.storageDir, join(dir, 'store'));
    const f = join(bad, 'b.json');
    writeFileSync(f, JSON.stringify(b));
    assert.throws(() => loadBoardProfile(f), /storageDir: resolves to ".*a,b\/store", which must not contain a comma/);
  });

  it('a device path must be absolute', () => {
    const b = sample('board/sim-a.json');
    b.watchdog.device = 'dev/watchdog';
    assert.throws(() => loadBoardProfile(write('b.json', b)), /watchdog\.device: resolves to "dev\/watchdog", which must be an absolute path/);
  });

  it('property: a path is accepted only if it has none of the characters QEMU or a shell interpret', () => {
    const meaningful = new Set([...',:;|&$`\'"\\ \t\n\r*?~{}[]<>()#!=%^\u0000\u007f']);
    fc.assert(fc.property(fc.string({ maxLength: 40 }), (s) => {
      const p = `/srv/${s}`;
      const accepted = unsafePathReason(p, true) === undefined;
      // eslint-disable-next-line no-control-regex
      const hasMeaning = [...p].some((c) => meaningful.has(c) || /[\u0000-\u001f\u007f-\uffff]/.test(c));
      assert.equal(accepted, !hasMeaning, p);
    }), { numRuns: 2000 });
  });
});
