import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { NO_STATE_FENCE_DELAY_MS, PRIORITY_FENCING_DELAY_MS, loadBoardProfile, partnerNameOf } from '../../src/config/board-profile.js';
import { loadGuestDescriptor } from '../../src/config/guest-descriptor.js';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { readKeyFile } from '../../src/core/key-file.js';
import { LinuxWatchdog } from '../../src/hw/watchdog/watchdog.js';
import { loadPrivateKey } from '../../src/upgrade/keys.js';

const repo = (p: string) => join(PACKAGE_ROOT, p);

describe('board profiles and guest descriptors', () => {
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-cfg-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, obj: unknown) => {
    const f = join(dir, name);
    writeFileSync(f, typeof obj === 'string' ? obj : JSON.stringify(obj));
    return f;
  };
  const sample = (f: string) => JSON.parse(readFileSync(repo(f), 'utf8')) as Record<string, any>;

  it('loads every shipped profile and descriptor', () => {
    for (const f of ['board/sim-a.json', 'board/sim-b.json', 'board/example-atca-blade.json', 'board/standalone.json']) {
      const b = loadBoardProfile(repo(f));
      assert.ok(b.name && b.cores.housekeeping.length > 0, f);
    }
    const g = loadGuestDescriptor(repo('guests/dx-legacy.json'));
    assert.equal(g.nic.model, 'e1000');
    assert.ok(g.image.kernel.startsWith('/'), 'image paths are resolved against the descriptor folder');
  });

  it('the standalone profile is one board on its own: no partner, heartbeat key, watchdog or fencing to set up first', () => {
    const b = loadBoardProfile(repo('board/standalone.json'));
    assert.equal(b.ha, undefined, 'no ha section: no key file is read');
    assert.equal(b.partner, undefined);
    assert.equal(b.watchdog, undefined);
    assert.equal(b.fencing, undefined);
    assert.ok(b.service.address.startsWith('127.'), 'its service stays on loopback');
  });

  it('ipmitool fencing: port and cipher suite default to 623 and 3, the bridged target is optional and must be an IPMB address', () => {
    const b = sample('board/example-atca-blade.json');
    const f = { method: 'ipmitool', host: '192.0.2.50', user: 'fence', passwordFile: '/etc/understudy/ipmi.pass' };
    const loaded = loadBoardProfile(write('ipmi.json', { ...b, fencing: f }));
    assert.deepEqual({ ...loaded.fencing, action: undefined, escalation: undefined }, { ...f, port: 623, cipherSuite: 3, action: undefined, escalation: undefined });
    assert.throws(() => loadBoardProfile(write('ipmi-bad.json', { ...b, fencing: { ...f, partnerTarget: 'slot 4' } })), (e: Error) => /fencing\.partnerTarget/.test(e.message) && /IPMB address/.test(e.message));
  });

  it('every shipped dx-legacy descriptor is the same guest and states the version its image was built with', () => {
    const files = readdirSync(repo('guests')).filter((f) => f.startsWith('dx-legacy') && f.endsWith('.json'));
    assert.ok(files.includes('dx-legacy-v2.json') && files.includes('dx-legacy-v2-broken.json'), files.join(' '));
    for (const f of files) {
      const g = loadGuestDescriptor(repo(`guests/${f}`));
      assert.equal(g.name, 'dx-legacy', `${f}: every generation is the same guest, so it keeps the same state disk`);
      const manifest = join(dirname(g.image.initrd), 'manifest.json');
      if (existsSync(manifest)) assert.equal(JSON.parse(readFileSync(manifest, 'utf8')).version, g.version, f);
    }
  });

  it('names the file and the bad field', () => {
    const b = sample('board/sim-a.json');
    b.cores.guest = 'one';
    const f = write('bad-board.json', b);
    assert.throws(() => loadBoardProfile(f), (e: Error & { code: string }) => {
      assert.equal(e.code, 'US_ERR_CONFIG');
      assert.ok(e.message.includes(f), e.message);
      assert.match(e.message, /cores\.guest/);
      return true;
    });
  });

  it('rejects a guest core that is also a housekeeping core', () => {
    const b = sample('board/sim-a.json');
    b.cores.housekeeping = [0, 1];
    assert.throws(() => loadBoardProfile(write('b.json', b)), /cores\.housekeeping: must not contain the guest core 1/);
  });

  it('rejects unknown fields, bad addresses and unknown NIC models', () => {
    const b = sample('board/sim-a.json');
    b.servise = {};
    assert.throws(() => loadBoardProfile(write('b1.json', b)), /servise|Unrecognized key/);
    const b2 = sample('board/sim-a.json');
    b2.service.address = '127.0.0.300';
    assert.throws(() => loadBoardProfile(write('b2.json', b2)), /service\.address: must be an IPv4 address/);
    const g = sample('guests/dx-legacy.json');
    g.nic.model = 'virtio-net-pci';
    assert.throws(() => loadGuestDescriptor(write('g.json', g)), /nic\.model/);
    const g2 = sample('guests/dx-legacy.json');
    g2.ports.service = 70000;
    assert.throws(() => loadGuestDescriptor(write('g2.json', g2)), /ports\.service/);
  });

  it('HA decisions: defaults of the start-up policy, the priority fencing delay, the fence action and its escalation; bad values name their field', () => {
    const b = sample('board/sim-a.json');
    delete b.ha.startup;
    delete b.ha.priorityFencingDelayMs;
    delete b.ha.primaryConfirmMs;
    delete b.fencing.action;
    delete b.fencing.escalation;
    const p = loadBoardProfile(write('defaults.json', b));
    assert.equal(p.ha!.startup, 'wait-for-partner');
    assert.equal(p.ha!.priorityFencingDelayMs, PRIORITY_FENCING_DELAY_MS);
    assert.equal(p.ha!.primaryConfirmMs, 75);
    assert.equal(p.ha!.noStateFenceDelayMs, NO_STATE_FENCE_DELAY_MS);
    assert.ok(p.fencing?.method === 'simulated');
    assert.equal(p.fencing.action, 'reset');
    assert.deepEqual(p.fencing.escalation, { maxResets: 3, windowS: 3600 });
    assert.equal(partnerNameOf(p), 'sim-b');
    const bad = (name: string, edit: (x: Record<string, any>) => void, field: RegExp) => {
      const x = sample('board/sim-a.json');
      edit(x);
      assert.throws(() => loadBoardProfile(write(name, x)), (e: Error & { code: string }) => e.code === 'US_ERR_CONFIG' && field.test(e.message), name);
    };
    bad('startup.json', (x) => { x.ha.startup = 'serve-anyway'; }, /ha\.startup/);
    bad('pfd.json', (x) => { x.ha.priorityFencingDelayMs = -1; }, /ha\.priorityFencingDelayMs/);
    bad('pfd2.json', (x) => { x.ha.priorityFencingDelayMs = 299; }, /ha\.priorityFencingDelayMs: must be at least deadtimeMs \+ primaryConfirmMs \+ fenceDelayMs/);
    bad('confirm.json', (x) => { x.ha.primaryConfirmMs = 76; }, /ha\.priorityFencingDelayMs: must be at least/);
    bad('nostate.json', (x) => { x.ha.noStateFenceDelayMs = 299; }, /ha\.noStateFenceDelayMs: must be at least priorityFencingDelayMs/);
    bad('action.json', (x) => { x.fencing.action = 'reboot'; }, /fencing\.action/);
    bad('esc.json', (x) => { x.fencing.escalation = { maxResets: 0, windowS: 60 }; }, /fencing\.escalation\.maxResets/);
    bad('esc2.json', (x) => { x.fencing.escalation = { maxResets: 2, windowS: 60, extra: 1 }; }, /fencing\.escalation/);
    // fence-then-serve needs both boards to agree which fences first: the partner's name must be known.
    bad('fts.json', (x) => { x.name = 'shelf1-slot5'; x.ha.startup = 'fence-then-serve'; }, /partner\.name: required with ha\.startup fence-then-serve/);
    const named = sample('board/sim-a.json');
    Object.assign(named, { name: 'shelf1-slot5' });
    named.ha.startup = 'fence-then-serve';
    named.partner.name = 'shelf1-slot6';
    assert.equal(partnerNameOf(loadBoardProfile(write('named.json', named))), 'shelf1-slot6');
  });

  it('reports a file that is not JSON, or missing, with its path', () => {
    assert.throws(() => loadBoardProfile(write('x.json', '{ "name": ')), (e: Error & { code: string }) => e.code === 'US_ERR_CONFIG' && /not valid JSON/.test(e.message));
    assert.throws(() => loadGuestDescriptor(join(dir, 'nope.json')), (e: Error & { code: string }) => e.code === 'US_ERR_NOT_FOUND' && e.message.includes('nope.json'));
  });

  it('every error about a missing file says what makes it: board profile, guest descriptor, heartbeat key, watchdog device, signing key', () => {
    const missing = (re: RegExp) => (e: Error & { code: string }) => e.code === 'US_ERR_NOT_FOUND' && e.message.includes(join(dir, 'nope')) && re.test(e.message);
    assert.throws(() => loadBoardProfile(join(dir, 'nope')), missing(/board\/standalone\.json/));
    assert.throws(() => loadGuestDescriptor(join(dir, 'nope')), missing(/guests\/dx-legacy\.json/));
    assert.throws(() => readKeyFile(join(dir, 'nope')), missing(new RegExp(`understudy ha keygen --file ${join(dir, 'nope')}`)));
    assert.throws(() => new LinuxWatchdog(join(dir, 'nope'), 1000).open(), missing(/understudy chassis up. makes it/));
    assert.throws(() => loadPrivateKey(join(dir, 'nope')), missing(/understudy upgrade keygen --out/));
  });
});
