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
    for (const name of BUILTIN) assert.ok(!registered.has(name), `${name} is defined in program.ts only`);
  });

  it('the plain status command is answered without commander, as the full program answers it; anything else goes to the program', async () => {
    const { runFastStatus } = await import('../../src/cli/fast-status.js');
    for (const argv of [['status', '--help'], ['guest', 'status'], ['status', 'extra'], ['status', '--bogus'], ['--version'], [], ['status', '--board']]) {
      assert.equal(await runFastStatus(argv), false, argv.join(' '));
    }
    // Against a board with no controller: the same error document and exit code either way.
    const { execFile } = await import('node:child_process');
    const run = (args: string[]) => new Promise<{ code: number | null; out: string }>((res) => {
      execFile(process.execPath, args, (e, out) => res({ code: e ? (e as { code?: number }).code ?? 1 : 0, out }));
    });
    const board = join(PACKAGE_ROOT, 'board', 'standalone.json');
    const fast = await run([join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js'), '--json', 'status', '--board', board]);
    const full = await run(['--input-type=module', '-e', `process.argv.push('--json', 'status', '--board', ${JSON.stringify(board)}); await import(${JSON.stringify(join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'program.js'))});`]);
    assert.equal(fast.code, 1);
    assert.equal(JSON.parse(fast.out).error.code, 'US_ERR_NOT_RUNNING');
    assert.deepEqual([fast.code, JSON.parse(fast.out)], [full.code, JSON.parse(full.out)]);
  });

  it('chooses the modules from the command word', () => {
    assert.deepEqual(modulesFor(['status', '--json']), [MODULE_OF.status]);
    assert.deepEqual(modulesFor(['--json', 'guest', 'status']), [MODULE_OF.guest]);
    assert.deepEqual(modulesFor(['quarantine', 'release', 'q7', '--json']), [MODULE_OF.quarantine]);
    assert.notEqual(MODULE_OF.quarantine, MODULE_OF.alarms, 'quarantine has a module of its own');
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
