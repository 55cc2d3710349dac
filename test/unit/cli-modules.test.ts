/**
 * The CLI loads command modules on demand (src/cli/command-modules.ts): the table that maps a
 * command word to its module must match what each module really registers, or a command would
 * be missing from a command line that names it. Also the daemon's footprint settings are the same
 * in the systemd unit as in src/core/footprint.ts.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { ALL_MODULES, BUILTIN, MODULE_OF, modulesFor } from '../../src/cli/command-modules.js';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { DAEMON_ENV, DAEMON_NODE_FLAGS } from '../../src/core/footprint.js';

describe('CLI command modules', () => {
  it('every top-level command maps to the module that registers it', async () => {
    const registered = new Map<string, unknown>();
    for (const m of ALL_MODULES) {
      const p = new Command('understudy');
      (await m())(p);
      for (const c of p.commands) {
        assert.ok(!registered.has(c.name()), `${c.name()} registered twice`);
        registered.set(c.name(), m);
        assert.equal(MODULE_OF[c.name()], m, `MODULE_OF.${c.name()} points at the module that registers it`);
      }
    }
    for (const name of Object.keys(MODULE_OF)) assert.ok(registered.has(name), `${name} is registered by a module`);
    for (const name of BUILTIN) assert.ok(!registered.has(name), `${name} is defined in main.ts only`);
  });

  it('chooses the modules from the command word', () => {
    assert.deepEqual(modulesFor(['status', '--json']), [MODULE_OF.status]);
    assert.deepEqual(modulesFor(['--json', 'guest', 'status']), [MODULE_OF.guest]);
    assert.deepEqual(modulesFor(['board', 'info']), []);
    assert.equal(modulesFor([]), ALL_MODULES);
    assert.equal(modulesFor(['--help']), ALL_MODULES);
    assert.equal(modulesFor(['help', 'status']), ALL_MODULES);
    assert.equal(modulesFor(['no-such-command']), ALL_MODULES);
    assert.equal(modulesFor(['toString']), ALL_MODULES, 'not fooled by Object.prototype');
  });

  it('the systemd unit starts the daemon with the footprint settings of src/core/footprint.ts', () => {
    const unit = readFileSync(join(PACKAGE_ROOT, 'image-build', 'firmware', 'understudyd.service'), 'utf8');
    const exec = /^ExecStart=.*$/m.exec(unit)?.[0] ?? '';
    for (const f of DAEMON_NODE_FLAGS) assert.ok(exec.includes(`/usr/bin/node ${f}`) || exec.includes(` ${f} `), `ExecStart has ${f}`);
    for (const [k, v] of Object.entries(DAEMON_ENV)) assert.match(unit, new RegExp(`^Environment=${k}=${v}$`, 'm'));
  });
});
