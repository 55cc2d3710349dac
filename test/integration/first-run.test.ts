/**
 * The fresh-machine path: README's "First run" section, run as written. The commands are parsed out
 * of README.md (the first ```sh block under that heading), so the test breaks when README changes in
 * a way that no longer works; each line runs through `sh -c` from the repository, as root, with the
 * CLI's documented defaults (no $UNDERSTUDY_BOARD / $UNDERSTUDY_GUEST, no /etc/understudy/board.json:
 * the standalone board and the reference guest). Real QEMU, no partner, no key file.
 *
 * Whatever the section started is stopped afterwards, failed or not: `guest stop` again, then the
 * controller's pid (read from its status) if it still runs. The board's storage is the profile's
 * own (/var/lib/understudy/standalone), as on a fresh machine.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { loadBoardProfile } from '../../src/config/board-profile.js';

const run = promisify(execFile);

/** The lines of the first ```sh block after README's `## First run` heading, trailing comments removed. */
function firstRunCommands(readme: string): string[] {
  const start = readme.search(/^## First run\b/m);
  assert.ok(start >= 0, 'README.md has a "## First run" section');
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  const block = /```sh\n([\s\S]*?)```/.exec(section);
  assert.ok(block, 'the First run section has a ```sh block');
  return block[1]!.split('\n').map((l) => l.replace(/\s+#.*$/, '').trim()).filter((l) => l && !l.startsWith('#'));
}

describe('first run: README\'s standalone commands on a fresh machine (root, real QEMU)', function () {
  this.timeout(300000);
  const env = { ...process.env };
  delete env.UNDERSTUDY_BOARD;
  delete env.UNDERSTUDY_GUEST;
  const sh = (line: string) => run('sh', ['-c', line], { cwd: PACKAGE_ROOT, env, timeout: 240000 })
    .then((r) => ({ code: 0, out: r.stdout + r.stderr }), (e: { code?: number; stdout?: string; stderr?: string }) => ({ code: e.code ?? -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` }));
  const board = loadBoardProfile(join(PACKAGE_ROOT, 'board', 'standalone.json'));
  let controllerPid: number | undefined;

  before(function () {
    if (process.getuid?.() !== 0) this.skip();
  });

  after(async () => {
    await sh(`node ${join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js')} guest stop --board ${join(PACKAGE_ROOT, 'board', 'standalone.json')}`);
    if (controllerPid) {
      try {
        process.kill(controllerPid, 'SIGKILL');
      } catch {
        // stopped by guest stop, as it should be
      }
    }
  });

  it('the section\'s commands use the defaults, start the standalone board and stop it again', () => {
    const commands = firstRunCommands(readFileSync(join(PACKAGE_ROOT, 'README.md'), 'utf8'));
    assert.ok(commands.length >= 2, commands.join('\n'));
    assert.match(commands[0]!, /guest start$/, 'it starts the board');
    assert.match(commands.at(-1)!, /guest stop$/, 'it stops what it started');
    assert.ok(commands.every((c) => !/--board|--guest\b|UNDERSTUDY_/.test(c)), 'the documented defaults, nothing named');
    assert.equal(board.ha, undefined, 'the standalone board reads no heartbeat key');
  });

  it('runs every line as written: each exits 0; the board serves STANDALONE with its guest running, then nothing of it runs', async () => {
    assert.ok(!existsSync('/etc/understudy/board.json'), 'a fresh machine: no /etc/understudy/board.json (it would be the default board)');
    const commands = firstRunCommands(readFileSync(join(PACKAGE_ROOT, 'README.md'), 'utf8'));
    const outputs: string[] = [];
    for (const [i, line] of commands.entries()) {
      const r = await sh(line);
      outputs.push(r.out);
      assert.equal(r.code, 0, `"${line}" exited ${r.code}:\n${r.out}`);
      if (i === 0) {
        const st = await sh(`node ${join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js')} status --json`);
        const s = JSON.parse(st.out) as { board: string; role: string; pid?: number; controller?: { pid: number } };
        controllerPid = s.pid ?? s.controller?.pid;
        assert.equal(s.board, board.name, 'the default board is the standalone one');
        assert.equal(s.role, 'STANDALONE');
      }
    }
    const all = outputs.join('\n');
    assert.match(all, /board standalone \(STANDALONE\)/);
    assert.match(all, /guest dx-legacy [\d.]+ \(app [\d.]+\): running/);
    if (commands.some((c) => /manage PING/.test(c))) assert.match(all, /OK PING/);
    assert.match(outputs.at(-1)!, /guest and controller stopped/);
    const after = await sh(`node ${join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js')} status`);
    assert.notEqual(after.code, 0, `nothing answers after the last line:\n${after.out}`);
    if (controllerPid) assert.throws(() => process.kill(controllerPid!, 0), 'the controller is gone');
  });
});
