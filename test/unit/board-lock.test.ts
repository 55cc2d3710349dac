/**
 * One controller per board (src/mgmt/lock.ts): the pid file names the controller by pid and start
 * time, so that a stale file whose pid now names another process (pids reused after a reboot, or in
 * a fresh pid namespace: a board's Pacemaker namespace starts at pid 1 at every boot) is taken over,
 * while a live controller's is refused. Real processes, a temporary folder.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { UsError } from '../../src/core/errors.js';
import { parseProcStat } from '../../src/hw/proc-state.js';
import { acquireBoardLock } from '../../src/mgmt/lock.js';

const startOf = (pid: number) => parseProcStat(readFileSync(`/proc/${pid}/stat`, 'latin1')).field(22)!;

describe('board lock: one controller per storage directory, judged by pid and start time', () => {
  let dir: string;
  let other: ChildProcess | undefined;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'us-lock-'));
    // A live process whose command line says understudy, as a controller's does.
    other = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)', 'understudyd-stand-in'], { stdio: 'ignore' });
    await new Promise((r) => other!.once('spawn', r));
  });
  afterEach(() => {
    other?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes its pid and start time; a live controller\'s file (both matching) is refused, naming its pid', () => {
    const file = join(dir, 'understudyd.pid');
    const release = acquireBoardLock(file, 'sim-a');
    assert.equal(readFileSync(file, 'utf8'), `${process.pid} ${startOf(process.pid)}\n`);
    release();
    writeFileSync(file, `${other!.pid} ${startOf(other!.pid!)}\n`);
    assert.throws(() => acquireBoardLock(file, 'sim-a'), (e: UsError) => e.code === 'US_ERR_ALREADY_RUNNING' && e.message.includes(`pid ${other!.pid}`) && /board sim-a/.test(e.message));
  });

  it('a stale file whose pid names another process now (its start time differs: a reused pid) is taken over', () => {
    const file = join(dir, 'understudyd.pid');
    writeFileSync(file, `${other!.pid} ${Number(startOf(other!.pid!)) - 1}\n`);
    const release = acquireBoardLock(file, 'sim-a');
    assert.equal(readFileSync(file, 'utf8').split(' ')[0], String(process.pid));
    release();
  });

  it('a file of the earlier format (the pid alone) is judged as before: a live understudy process holds it, a dead one does not', async () => {
    const file = join(dir, 'understudyd.pid');
    writeFileSync(file, `${other!.pid}\n`);
    assert.throws(() => acquireBoardLock(file, 'sim-a'), (e: UsError) => e.code === 'US_ERR_ALREADY_RUNNING');
    other!.kill('SIGKILL');
    await new Promise((r) => other!.once('exit', r));
    const release = acquireBoardLock(file, 'sim-a');
    release();
  });
});
