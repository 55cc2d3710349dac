/**
 * The pair's key file (src/core/key-file.ts): the one format (64 hexadecimal digits, optional
 * trailing newline), owner root, mode 0600; every other file refused with US_ERR_CONFIG naming the
 * file, what is wrong and how to make one. `understudy ha keygen`'s writer makes a file the reader
 * takes, atomically, mode 0600 whatever the umask, and never replaces a key unless forced. As root
 * (the owner checks need chown).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { UsError } from '../../src/core/errors.js';
import { readKeyFile, writeKeyFile } from '../../src/core/key-file.js';

const HEX = 'a1b2c3d4e5f60718293a4b5c6d7e8f90'.repeat(2);

describe('the heartbeat key file', () => {
  let dir: string;
  before(function () { if (process.getuid?.() !== 0) this.skip(); });
  beforeEach(() => { dir = mkdtempSync(join(tmpdir(), 'us-key-')); });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const file = (content: string | Buffer, mode = 0o600, name = 'ha.key') => {
    const f = join(dir, name);
    writeFileSync(f, content);
    chmodSync(f, mode);
    return f;
  };
  /** readKeyFile refuses `f` with `code`, a message naming the file and matching `what`, and the how-to. */
  const refused = (f: string, what: RegExp, code = 'US_ERR_CONFIG') => assert.throws(() => readKeyFile(f), (e: UsError) => {
    assert.equal(e.code, code);
    assert.ok(e.message.includes(`heartbeat key file ${f}`), e.message);
    assert.match(e.message, what);
    assert.ok(e.message.includes(`understudy ha keygen --file ${f}`) && e.message.includes('head -c 32 /dev/urandom | xxd -p -c 64'), e.message);
    return true;
  });

  it('reads the one format: 64 hexadecimal digits, with or without a trailing newline, either case', () => {
    assert.deepEqual(readKeyFile(file(`${HEX}\n`)), Buffer.from(HEX, 'hex'));
    assert.deepEqual(readKeyFile(file(HEX)), Buffer.from(HEX, 'hex'));
    assert.deepEqual(readKeyFile(file(HEX.toUpperCase())), Buffer.from(HEX, 'hex'));
    assert.equal(readKeyFile(file(HEX)).length, 32);
  });

  it('refuses short hex, an odd number of digits and too many', () => {
    refused(file(HEX.slice(0, 32)), /holds 32 hexadecimal digits, not 64/);
    refused(file(`${HEX.slice(0, 63)}\n`), /holds 63 hexadecimal digits \(an odd number\), not 64/);
    refused(file(`${HEX}ab`), /holds 66 hexadecimal digits, not 64/);
  });

  it('refuses non-hex text, raw binary, blanks, several lines and an empty file', () => {
    refused(file(`${HEX.slice(0, 60)}xyz!`), /not hexadecimal digits \("xyz!"\)/);
    refused(file(Buffer.alloc(32, 0x9c)), /32 bytes that are not text \(raw binary\?\)/);
    refused(file(` ${HEX}`), /leading or trailing blanks/);
    refused(file(`${HEX}\r\n`), /leading or trailing blanks/);
    refused(file(`${HEX}\n${HEX}\n`), /more than one line/);
    refused(file(''), /it is empty/);
  });

  it('refuses a file readable by group or others, and names its mode', () => {
    refused(file(HEX, 0o640), /mode 0640, readable by others than root \(chmod 600 /);
    refused(file(HEX, 0o604), /mode 0604/);
  });

  it('refuses a file not owned by root', () => {
    const f = file(HEX);
    chownSync(f, 1, 0);
    refused(f, /owned by uid 1, not root \(chown root:root /);
  });

  it('refuses a directory, and says a missing file is missing (US_ERR_NOT_FOUND)', () => {
    const d = join(dir, 'ha.key.d');
    mkdirSync(d, { mode: 0o700 });
    refused(d, /not a regular file/);
    refused(join(dir, 'absent.key'), /ENOENT/, 'US_ERR_NOT_FOUND');
  });

  it('writeKeyFile makes a file readKeyFile takes: mode 0600 whatever the umask, no temporary left, never replaced unless forced', () => {
    const f = join(dir, 'new.key');
    const umask = process.umask(0o022);
    try {
      writeKeyFile(f);
    } finally {
      process.umask(umask);
    }
    assert.equal(statSync(f).mode & 0o777, 0o600);
    assert.match(readFileSync(f, 'latin1'), /^[0-9a-f]{64}\n$/);
    const key = readKeyFile(f);
    assert.equal(key.length, 32);
    assert.deepEqual(readdirSync(dir), ['new.key']);
    assert.throws(() => writeKeyFile(f), (e: UsError) => e.code === 'US_ERR_CONFIG' && /exists/.test(e.message) && e.message.includes(f));
    assert.deepEqual(readKeyFile(f), key, 'the existing key is untouched');
    writeKeyFile(f, { force: true });
    assert.notDeepEqual(readKeyFile(f), key);
  });

  it('understudy ha keygen --file writes one, --json says where (never the key), and refuses to overwrite', async () => {
    const run = promisify(execFile);
    const cli = join(PACKAGE_ROOT, 'dist', 'src', 'cli', 'main.js');
    const f = join(dir, 'cli.key');
    const r = await run(process.execPath, [cli, 'ha', 'keygen', '--file', f, '--json']);
    const out = JSON.parse(r.stdout) as { file: string; bytes: number };
    assert.deepEqual(out, { file: f, bytes: 32, format: 'hex', mode: '0600' });
    const key = readKeyFile(f);
    assert.ok(!r.stdout.includes(key.toString('hex')), 'the key is not printed');
    const again = await run(process.execPath, [cli, 'ha', 'keygen', '--file', f, '--json']).then(() => undefined, (e: { code: number; stdout: string }) => e);
    assert.equal(again?.code, 1);
    assert.equal(JSON.parse(again!.stdout).error.code, 'US_ERR_CONFIG');
  });
});
