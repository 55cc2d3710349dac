/**
 * Signing keys: Ed25519 key pairs (node:crypto), their ids, the set of public keys a board trusts
 * (every *.pem in its keys directory; several allowed for rotation), signing and verifying manifest
 * bytes. Blades hold only public keys; the private key stays with whoever builds packages.
 */
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsError } from '../core/errors.js';

/** An Ed25519 signature is always 64 bytes. */
export const SIGNATURE_BYTES = 64;

/** Key id: the first 16 hex digits of the SHA-256 of the public key's SPKI DER encoding. */
export function keyIdOf(key: KeyObject): string {
  const pub = key.type === 'private' ? createPublicKey(key) : key;
  return createHash('sha256').update(pub.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

export interface GeneratedKeys {
  keyId: string;
  privateKeyFile: string;
  publicKeyFile: string;
}

/** Makes a key pair in `outDir`: `<id>.key.pem` (mode 0600) and `<id>.pub.pem`. Never overwrites. */
export function generateKeys(outDir: string): GeneratedKeys {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const keyId = keyIdOf(publicKey);
  mkdirSync(outDir, { recursive: true, mode: 0o700 });
  const privateKeyFile = join(outDir, `understudy-${keyId}.key.pem`);
  const publicKeyFile = join(outDir, `understudy-${keyId}.pub.pem`);
  for (const f of [privateKeyFile, publicKeyFile]) {
    if (existsSync(f)) throw new UsError('US_ERR_CONFIG', `refusing to overwrite ${f}`);
  }
  writeFileSync(privateKeyFile, privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' });
  writeFileSync(publicKeyFile, publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644, flag: 'wx' });
  return { keyId, privateKeyFile, publicKeyFile };
}

export function loadPrivateKey(file: string): KeyObject {
  let pem: string;
  try {
    pem = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsError('US_ERR_NOT_FOUND', `signing key ${file}: ${(e as Error).message}; make a key pair with "understudy upgrade keygen --out DIR" (the .pub.pem goes into each board's upgrade keys directory)`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (e) {
    throw new UsError('US_ERR_CONFIG', `signing key ${file}: not a PEM private key: ${(e as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') throw new UsError('US_ERR_CONFIG', `signing key ${file}: ${key.asymmetricKeyType} key, expected ed25519`);
  return key;
}

/** The public keys a board trusts, by key id. */
export type TrustedKeys = ReadonlyMap<string, { key: KeyObject; file: string }>;

/**
 * Whoever can write a trusted key can sign packages this board installs: the keys directory and
 * every key in it must belong to root (or to the user the controller runs as) and be writable by
 * no one else. Throws US_ERR_CONFIG naming the file.
 */
export function assertKeyFileSafe(file: string, what = 'trusted key'): void {
  const st = statSync(file);
  const me = process.geteuid?.() ?? 0;
  if (st.uid !== 0 && st.uid !== me) throw new UsError('US_ERR_CONFIG', `${what} ${file}: owned by uid ${st.uid}, expected root: anyone who can replace it can sign packages for this board`, { file, uid: st.uid });
  if (st.mode & 0o022) throw new UsError('US_ERR_CONFIG', `${what} ${file}: mode ${(st.mode & 0o777).toString(8)} is group- or world-writable: anyone who can replace it can sign packages for this board (chmod go-w)`, { file, mode: st.mode & 0o777 });
}

/**
 * Reads every *.pem in `dir` as an Ed25519 public key; a file that is not one, or that someone other
 * than root could write (assertKeyFileSafe), is a config error naming it.
 */
export function loadTrustedKeys(dir: string): TrustedKeys {
  const out = new Map<string, { key: KeyObject; file: string }>();
  if (!existsSync(dir)) return out;
  assertKeyFileSafe(dir, 'keys directory');
  for (const name of readdirSync(dir).sort()) {
    if (!name.endsWith('.pem')) continue;
    const file = join(dir, name);
    assertKeyFileSafe(file);
    let key: KeyObject;
    try {
      key = createPublicKey(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new UsError('US_ERR_CONFIG', `trusted key ${file}: not a PEM public key: ${(e as Error).message}`);
    }
    if (key.asymmetricKeyType !== 'ed25519') throw new UsError('US_ERR_CONFIG', `trusted key ${file}: ${key.asymmetricKeyType} key, expected ed25519`);
    out.set(keyIdOf(key), { key, file });
  }
  return out;
}

export function signBytes(privateKey: KeyObject, data: Buffer): Buffer {
  return sign(null, data, privateKey);
}

export function verifyBytes(publicKey: KeyObject, data: Buffer, signature: Buffer): boolean {
  return signature.length === SIGNATURE_BYTES && verify(null, data, publicKey, signature);
}
