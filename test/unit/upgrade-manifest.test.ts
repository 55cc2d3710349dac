import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { keyIdOf } from '../../src/upgrade/keys.js';
import { manifestSchema, unsafePathReason } from '../../src/upgrade/manifest.js';
import { decodeHeader, encodeHeader, HEADER_BYTES, MAGIC } from '../../src/upgrade/package-format.js';
import { compareSemVer, isSemVer } from '../../src/upgrade/semver.js';

describe('upgrade manifest, versions and package header', () => {
  it('orders versions as semver 2.0.0 says', () => {
    const ordered = ['0.9.9', '1.0.0-alpha', '1.0.0-alpha.1', '1.0.0-alpha.beta', '1.0.0-beta', '1.0.0-beta.2', '1.0.0-beta.11', '1.0.0-rc.1', '1.0.0', '1.0.1', '1.2.0', '1.10.0', '2.0.0'];
    for (let i = 0; i < ordered.length; i++) {
      for (let j = 0; j < ordered.length; j++) assert.equal(Math.sign(compareSemVer(ordered[i]!, ordered[j]!)), Math.sign(i - j), `${ordered[i]} vs ${ordered[j]}`);
    }
    assert.equal(compareSemVer('1.0.0+build.5', '1.0.0'), 0, 'build metadata does not count');
    for (const bad of ['1', '1.0', '01.0.0', '1.0.0-', 'v1.0.0', '1.0.0-01', '']) assert.equal(isSemVer(bad), false, bad);
  });

  it('version comparison is antisymmetric and consistent with the numbers (property)', () => {
    const v = fc.tuple(fc.nat(50), fc.nat(50), fc.nat(50)).map(([a, b, c]) => `${a}.${b}.${c}`);
    fc.assert(fc.property(v, v, (a, b) => {
      assert.equal(Math.sign(compareSemVer(a, b)), -Math.sign(compareSemVer(b, a)));
      const num = (s: string) => s.split('.').map(Number).reduce((x, y) => x * 1000 + y, 0);
      assert.equal(Math.sign(compareSemVer(a, b)), Math.sign(num(a) - num(b)));
    }), { seed: 66 });
  });

  it('allows only safe relative paths', () => {
    for (const ok of ['a', 'a/b/c.txt', 'controller/understudy.mjs', '.hidden', 'a..b']) assert.equal(unsafePathReason(ok), undefined, ok);
    const bad: Array<[string, RegExp]> = [['', /empty/], ['/etc/passwd', /absolute/], ['../x', /\.\./], ['a/../../x', /\.\./], ['a//b', /empty/], ['./a', /"\."/], ['a\\b', /backslash/], ['a\nb', /control/], ['a/', /empty/], ['x'.repeat(300), /255/]];
    for (const [p, why] of bad) assert.match(unsafePathReason(p) ?? '', why, JSON.stringify(p));
  });

  it('the manifest schema rejects duplicates, file/directory clashes, the reserved slot.json and bad modes', () => {
    const keyId = keyIdOf(generateKeyPairSync('ed25519').publicKey);
    const f = (path: string, mode = 0o644) => ({ path, size: 1, mode, sha256: 'a'.repeat(64) });
    const base = { format: 1, compatible: 'x', version: '1.0.0', keyId, createdAt: 'now', payload: { size: 10000, sha256: 'b'.repeat(64) } };
    assert.ok(manifestSchema.safeParse({ ...base, files: [f('a'), f('b/c')] }).success);
    const problems = (files: unknown[], extra = {}) => {
      const r = manifestSchema.safeParse({ ...base, ...extra, files });
      return r.success ? '' : r.error.issues.map((i) => i.message).join('; ');
    };
    assert.match(problems([f('a'), f('a')]), /duplicate path a/);
    assert.match(problems([f('a'), f('a/b')]), /a is both a file and a directory/);
    assert.match(problems([f('slot.json')]), /reserved/);
    assert.match(problems([f('a', 0o4755)]), /<=511/);
    assert.match(problems([f('a')], { version: '1.0' }), /semantic version/);
    assert.match(problems([f('a')], { payload: { size: 0, sha256: 'b'.repeat(64) } }), /smaller than the files/);
    assert.match(problems([f('a')], { extra: 1 }), /unrecognized/i);
  });

  it('encodes and decodes the header, rejecting a bad magic, format, lengths and reserved bytes', () => {
    const h = encodeHeader({ manifestBytes: 1234, signatureBytes: 64, payloadBytes: 2 ** 40 });
    assert.equal(h.length, HEADER_BYTES);
    assert.deepEqual(decodeHeader(h, 'p'), { manifestBytes: 1234, signatureBytes: 64, payloadBytes: 2 ** 40 });
    const bad = (mut: (b: Buffer) => void, code: string, re: RegExp) => {
      const b = Buffer.from(h);
      mut(b);
      assert.throws(() => decodeHeader(b, 'p'), (e: Error & { code: string }) => e.code === code && re.test(e.message));
    };
    bad((b) => { b[0] = 0x55; }, 'US_ERR_PKG_FORMAT', /bad magic/);
    bad((b) => { b[4] = 0x0a; }, 'US_ERR_PKG_FORMAT', /binary mode/); // CR turned into LF by a text-mode transfer
    bad((b) => b.writeUInt16BE(2, 8), 'US_ERR_PKG_FORMAT', /format 2/);
    bad((b) => b.writeUInt16BE(65, 10), 'US_ERR_PKG_FORMAT', /signature length/);
    bad((b) => b.writeUInt32BE(0, 12), 'US_ERR_PKG_FORMAT', /manifest length/);
    bad((b) => { b[31] = 1; }, 'US_ERR_PKG_FORMAT', /reserved/);
    assert.throws(() => decodeHeader(MAGIC.subarray(0, 5), 'p'), (e: Error & { code: string }) => e.code === 'US_ERR_PKG_TRUNCATED');
  });
});
