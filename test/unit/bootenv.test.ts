/**
 * The boot-environment seam, each implementation against the same contract; U-Boot and GRUB through
 * the real Debian tools (fw_printenv/fw_setenv from libubootenv-tool, mkenvimage from u-boot-tools,
 * grub-editenv from grub-common) on file-backed environments.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileBootEnv, GrubBootEnv, UbootBootEnv, openBootEnv, type BootEnv } from '../../src/hw/bootenv/index.js';
import { armTrial, markGood, readBootState, simulateBoot } from '../../src/upgrade/bootflow.js';
import { SlotStore } from '../../src/upgrade/slots.js';
import { writeImage } from '../../src/upgrade/testing.js';

const ENV_SIZE = 0x4000;

/** A redundant U-Boot environment in two plain files, made by mkenvimage, with its fw_env.config. */
function makeUbootEnv(dir: string, initial: string): string {
  const txt = join(dir, 'initial.txt');
  writeFileSync(txt, initial);
  for (const copy of ['env0.bin', 'env1.bin']) execFileSync('mkenvimage', ['-r', '-s', `0x${ENV_SIZE.toString(16)}`, '-o', join(dir, copy), txt]);
  const config = join(dir, 'fw_env.config');
  writeFileSync(config, `# file-backed redundant environment\n${join(dir, 'env0.bin')} 0x0 0x${ENV_SIZE.toString(16)}\n${join(dir, 'env1.bin')} 0x0 0x${ENV_SIZE.toString(16)}\n`);
  return config;
}

const kinds: Array<{ name: string; make: (dir: string) => BootEnv }> = [
  { name: 'file', make: (dir) => new FileBootEnv(join(dir, 'bootenv')) },
  { name: 'U-Boot (fw_setenv on a file-backed redundant env)', make: (dir) => new UbootBootEnv({ config: makeUbootEnv(dir, 'bootdelay=2\nbaudrate=115200\n') }) },
  { name: 'GRUB (grub-editenv)', make: (dir) => new GrubBootEnv({ path: join(dir, 'grubenv') }) },
];

describe('boot environments', function () {
  this.timeout(30000);
  let dir: string;
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-bootenv-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  for (const k of kinds) {
    describe(k.name, () => {
      it('sets and deletes several variables in one update, keeping the others', async () => {
        const env = k.make(dir);
        const before = await env.read();
        await env.update({ us_slot_good: 'A', us_slot_try: 'B', us_try_left: '3' });
        assert.deepEqual(await env.read(), { ...before, us_slot_good: 'A', us_slot_try: 'B', us_try_left: '3' });
        await env.update({ us_slot_try: null, us_try_left: '', us_slot_good: 'B' });
        assert.deepEqual(await env.read(), { ...before, us_slot_good: 'B' });
        await env.update({ us_note: 'a value with spaces = and equals' });
        assert.equal((await env.read()).us_note, 'a value with spaces = and equals');
      });

      it('rejects names and values not every bootloader stores unchanged', async () => {
        const env = k.make(dir);
        for (const bad of [{ 'bad name': 'x' }, { '1x': 'y' }, { ok: 'new\nline' }, { ok: 'quote"' }, { ok: 'x'.repeat(300) }] as Array<Record<string, string>>) {
          await assert.rejects(env.update(bad), (e: Error & { code: string }) => e.code === 'US_ERR_BOOTENV');
        }
      });

      it('runs the A/B protocol: trial with a counter, rollback when exhausted, commit', async () => {
        const env = k.make(dir);
        const store = new SlotStore(join(dir, 'slots'), join(dir, 'slots', 'cmdline'));
        for (const s of ['A', 'B'] as const) {
          writeImage(store.slotDir(s), { 'f.txt': s });
          store.writeRecordInto(store.slotDir(s), { format: 1, slot: s, version: s === 'A' ? '1.0.0' : '1.1.0', compatible: 'f', installedAt: 'now', packageSha256: '0'.repeat(64), keyId: 'k', files: [] });
        }
        await armTrial(env, 'A', 'B', 2);
        assert.deepEqual(await readBootState(env), { good: 'A', trial: 'B', triesLeft: 2 });
        assert.deepEqual([(await simulateBoot(env, store)).slot, (await readBootState(env)).triesLeft], ['B', 1]);
        assert.deepEqual([(await simulateBoot(env, store)).slot, (await readBootState(env)).triesLeft], ['B', 0]);
        const back = await simulateBoot(env, store);
        assert.deepEqual([back.slot, back.reason], ['A', 'rollback']);
        assert.deepEqual(await readBootState(env), { good: 'A', trial: undefined, triesLeft: 0 });
        await armTrial(env, 'A', 'B', 3);
        assert.equal((await simulateBoot(env, store)).slot, 'B');
        assert.equal((await markGood(env, store)).committed, true);
        assert.deepEqual(await readBootState(env), { good: 'B', trial: undefined, triesLeft: 0 });
        assert.equal((await simulateBoot(env, store)).reason, 'good');
      });
    });
  }

  describe('U-Boot specifics', () => {
    it('keeps unrelated variables and writes the copies alternately (a torn write leaves the previous env)', async () => {
      const config = makeUbootEnv(dir, 'bootcmd=run us_boot\n');
      const env = new UbootBootEnv({ config });
      await env.update({ us_slot_good: 'A' });
      await env.update({ us_slot_good: 'B', us_slot_try: 'A', us_try_left: '3' });
      assert.equal((await env.read()).bootcmd, 'run us_boot');
      // Find the copy holding the newest write and destroy it, as a power cut in mid-write would.
      const copies = ['env0.bin', 'env1.bin'].map((f) => join(dir, f));
      const newest = copies.find((f) => readFileSync(f).includes('us_try_left=3'))!;
      const b = readFileSync(newest);
      b.fill(0xff, 4, 200);
      writeFileSync(newest, b);
      const after = await env.read();
      assert.equal(after.us_slot_good, 'A', 'fell back to the previous complete copy');
      assert.equal(after.us_slot_try, undefined);
    });

    it('reports a missing tool with its Debian package, and an unreadable environment', async () => {
      const config = makeUbootEnv(dir, 'a=b\n');
      await assert.rejects(new UbootBootEnv({ config, fwPrintenv: '/nonexistent/fw_printenv' }).read(),
        (e: Error & { code: string }) => e.code === 'US_ERR_NOT_FOUND' && /libubootenv-tool/.test(e.message));
      const zero = join(dir, 'zero.bin');
      writeFileSync(zero, Buffer.alloc(ENV_SIZE));
      writeFileSync(join(dir, 'zero.config'), `${zero} 0x0 0x${ENV_SIZE.toString(16)}\n`);
      await assert.rejects(new UbootBootEnv({ config: join(dir, 'zero.config') }).read(), (e: Error & { code: string }) => e.code === 'US_ERR_BOOTENV');
    });
  });

  describe('GRUB specifics', () => {
    it('creates a standard 1024-byte grubenv, replaces it by rename, leaves no temporary file', async () => {
      const path = join(dir, 'grubenv');
      const env = new GrubBootEnv({ path });
      assert.deepEqual(await env.read(), {});
      await env.update({ us_slot_good: 'A' });
      assert.equal(statSync(path).size, 1024);
      assert.match(readFileSync(path, 'latin1'), /^# GRUB Environment Block\n(# [^\n]*\n)?us_slot_good=A\n#+$/);
      const ino = statSync(path).ino;
      await env.update({ us_slot_try: 'B' });
      assert.notEqual(statSync(path).ino, ino, 'replaced, not rewritten in place');
      assert.deepEqual(readdirSync(dir), ['grubenv']);
      assert.equal(execFileSync('grub-editenv', [path, 'list'], { encoding: 'utf8' }), 'us_slot_good=A\nus_slot_try=B\n');
    });
  });

  it('openBootEnv picks the implementation a profile names', () => {
    assert.ok(openBootEnv({ type: 'file', path: join(dir, 'e') }) instanceof FileBootEnv);
    assert.ok(openBootEnv({ type: 'uboot', config: '/etc/fw_env.config' }) instanceof UbootBootEnv);
    assert.ok(openBootEnv({ type: 'grub', path: '/boot/grub/grubenv' }) instanceof GrubBootEnv);
  });

  it('the file env starts empty and is replaced atomically', async () => {
    const env = new FileBootEnv(join(dir, 'bootenv'));
    assert.deepEqual(await env.read(), {});
    await env.update({ a: '1' });
    assert.equal(readFileSync(join(dir, 'bootenv'), 'utf8'), 'a=1\n');
    assert.deepEqual(readdirSync(dir), ['bootenv']);
    assert.ok(!existsSync(join(dir, '.bootenv.tmp')));
  });
});
