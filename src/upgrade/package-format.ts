/**
 * The upgrade package file (.usp) framing and its signed head:
 *
 *   offset  size  field
 *        0     8  magic 89 55 53 50 0d 0a 1a 0a  ("\x89USP\r\n\x1a\n": catches 7-bit and CR/LF
 *                 mangling by a terminal program sending in text mode)
 *        8     2  header format, big-endian (1)
 *       10     2  signature length (64: Ed25519)
 *       12     4  manifest length
 *       16     8  payload length
 *       24     8  reserved, zero
 *       32     …  manifest (UTF-8 JSON), signature over exactly those bytes, payload (a tar stream)
 *
 * The header is not signed; every length in it is checked against the signed manifest. Reading the
 * head verifies the signature before anything else trusts the manifest and before the payload is
 * read. Owns no payload parsing (payload.ts) and no installation (installer.ts).
 */
import type { FileHandle } from 'node:fs/promises';
import { UsError } from '../core/errors.js';
import { keyIdOf, SIGNATURE_BYTES, verifyBytes, type TrustedKeys } from './keys.js';
import { manifestSchema, type Manifest } from './manifest.js';
import { formatPath } from '../config/load.js';

export const MAGIC = Buffer.from([0x89, 0x55, 0x53, 0x50, 0x0d, 0x0a, 0x1a, 0x0a]);
export const HEADER_BYTES = 32;
export const HEADER_FORMAT = 1;
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;
/** A serial transfer (XMODEM) may pad the file with SUB bytes up to a block; tolerated after the payload. */
export const MAX_TRAILING_PADDING = 1024;
export const SUB = 0x1a;

export interface PackageHeader {
  manifestBytes: number;
  signatureBytes: number;
  payloadBytes: number;
}

export function encodeHeader(h: PackageHeader): Buffer {
  const b = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(b, 0);
  b.writeUInt16BE(HEADER_FORMAT, 8);
  b.writeUInt16BE(h.signatureBytes, 10);
  b.writeUInt32BE(h.manifestBytes, 12);
  b.writeBigUInt64BE(BigInt(h.payloadBytes), 16);
  return b;
}

export function decodeHeader(b: Buffer, where: string): PackageHeader {
  if (b.length < HEADER_BYTES) {
    if (b.length > 0 && MAGIC.subarray(0, Math.min(b.length, MAGIC.length)).equals(b.subarray(0, Math.min(b.length, MAGIC.length)))) {
      throw new UsError('US_ERR_PKG_TRUNCATED', `${where}: truncated: ${b.length} bytes, shorter than the ${HEADER_BYTES}-byte header`);
    }
    throw new UsError('US_ERR_PKG_FORMAT', `${where}: not an Understudy upgrade package (${b.length} bytes)`);
  }
  if (!b.subarray(0, 8).equals(MAGIC)) {
    const hint = b.subarray(1, 4).toString('latin1') === 'USP' ? ' (bytes changed in transfer: send it in binary mode)' : '';
    throw new UsError('US_ERR_PKG_FORMAT', `${where}: not an Understudy upgrade package (bad magic)${hint}`);
  }
  const format = b.readUInt16BE(8);
  if (format !== HEADER_FORMAT) throw new UsError('US_ERR_PKG_FORMAT', `${where}: package format ${format} is not supported (this installer reads ${HEADER_FORMAT})`);
  const signatureBytes = b.readUInt16BE(10);
  const manifestBytes = b.readUInt32BE(12);
  const payload = b.readBigUInt64BE(16);
  if (b.readBigUInt64BE(24) !== 0n) throw new UsError('US_ERR_PKG_FORMAT', `${where}: reserved header bytes are not zero`);
  if (signatureBytes !== SIGNATURE_BYTES) throw new UsError('US_ERR_PKG_FORMAT', `${where}: signature length ${signatureBytes}, expected ${SIGNATURE_BYTES} (Ed25519)`);
  if (manifestBytes === 0 || manifestBytes > MAX_MANIFEST_BYTES) throw new UsError('US_ERR_PKG_FORMAT', `${where}: manifest length ${manifestBytes} out of range (1..${MAX_MANIFEST_BYTES})`);
  if (payload > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsError('US_ERR_PKG_FORMAT', `${where}: payload length out of range`);
  return { manifestBytes, signatureBytes, payloadBytes: Number(payload) };
}

/** What reading and verifying a package's head yields. */
export interface VerifiedHead {
  header: PackageHeader;
  /** The signed manifest bytes, exactly as in the file. */
  manifestBytes: Buffer;
  signature: Buffer;
  manifest: Manifest;
  /** The trusted key that verified it. */
  keyId: string;
  keyFile: string;
  /** Offset of the payload in the file. */
  payloadOffset: number;
  /** Bytes of tolerated SUB padding after the payload (XMODEM). */
  trailingPadding: number;
  /** Head bytes (header + manifest + signature), for hashing the whole package. */
  headBytes: Buffer;
}

async function readAt(fh: FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await fh.read(buf, got, length - got, position + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return buf.subarray(0, got);
}

function peekKeyId(manifestBytes: Buffer): string | undefined {
  try {
    const v = (JSON.parse(manifestBytes.toString('utf8')) as { keyId?: unknown }).keyId;
    return typeof v === 'string' ? v : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Reads the header, manifest and signature of an open package and verifies the signature with the
 * trusted key the manifest names; only then parses the manifest. Reads no payload byte, except the
 * few after it (to accept XMODEM padding and reject anything else).
 */
export async function readVerifiedHead(fh: FileHandle, trusted: TrustedKeys, where: string): Promise<VerifiedHead> {
  const headerBuf = await readAt(fh, 0, HEADER_BYTES);
  const header = decodeHeader(headerBuf, where);
  const manifestBytes = await readAt(fh, HEADER_BYTES, header.manifestBytes);
  if (manifestBytes.length < header.manifestBytes) throw new UsError('US_ERR_PKG_TRUNCATED', `${where}: truncated inside the manifest`);
  const signature = await readAt(fh, HEADER_BYTES + header.manifestBytes, header.signatureBytes);
  if (signature.length < header.signatureBytes) throw new UsError('US_ERR_PKG_TRUNCATED', `${where}: truncated inside the signature`);

  const { manifest, keyId: claimed, keyFile } = verifyManifest(manifestBytes, signature, trusted, where);
  if (manifest.payload.size !== header.payloadBytes) {
    throw new UsError('US_ERR_PKG_FORMAT', `${where}: header says ${header.payloadBytes} payload bytes, the signed manifest ${manifest.payload.size}`);
  }

  const payloadOffset = HEADER_BYTES + header.manifestBytes + header.signatureBytes;
  const end = payloadOffset + header.payloadBytes;
  const { size } = await fh.stat();
  if (size < end) {
    throw new UsError('US_ERR_PKG_TRUNCATED', `${where}: truncated: ${size} bytes, the package needs ${end} (${end - size} missing; was the transfer interrupted?)`, { size, expected: end });
  }
  let trailingPadding = 0;
  if (size > end) {
    const extra = size - end;
    const tail = extra <= MAX_TRAILING_PADDING ? await readAt(fh, end, extra) : undefined;
    if (!tail || !tail.every((c) => c === SUB)) {
      throw new UsError('US_ERR_PKG_FORMAT', `${where}: ${extra} unexpected bytes after the payload`, { size, expected: end });
    }
    trailingPadding = extra;
  }
  const headBytes = Buffer.concat([headerBuf, manifestBytes, signature]);
  return { header, manifestBytes, signature, manifest, keyId: claimed, keyFile, payloadOffset, trailingPadding, headBytes };
}

/**
 * A package's head on its own (header, manifest, signature: `VerifiedHead.headBytes`, as the installer
 * keeps it in each slot), verified exactly as in a package: the signature by a trusted key before
 * the manifest is parsed, every length accounted for.
 */
export function verifyHeadBytes(b: Buffer, trusted: TrustedKeys, where: string): { manifest: Manifest; keyId: string } {
  const header = decodeHeader(b, where);
  const end = HEADER_BYTES + header.manifestBytes + header.signatureBytes;
  if (b.length !== end) throw new UsError('US_ERR_PKG_FORMAT', `${where}: ${b.length} bytes, the head it describes has ${end}`);
  const manifestBytes = b.subarray(HEADER_BYTES, HEADER_BYTES + header.manifestBytes);
  const r = verifyManifest(manifestBytes, b.subarray(HEADER_BYTES + header.manifestBytes, end), trusted, where);
  if (r.manifest.payload.size !== header.payloadBytes) throw new UsError('US_ERR_PKG_FORMAT', `${where}: header and signed manifest disagree on the payload size`);
  return { manifest: r.manifest, keyId: r.keyId };
}

/** The signature over the manifest bytes by the trusted key the manifest names; then the manifest, parsed. */
function verifyManifest(manifestBytes: Buffer, signature: Buffer, trusted: TrustedKeys, where: string): { manifest: Manifest; keyId: string; keyFile: string } {
  if (trusted.size === 0) throw new UsError('US_ERR_PKG_UNKNOWN_KEY', `${where}: this board trusts no signing keys (install a public key in its keys directory)`);
  const claimed = peekKeyId(manifestBytes);
  if (claimed === undefined) throw new UsError('US_ERR_PKG_SIGNATURE', `${where}: the manifest names no signing key; the signature cannot be checked`);
  const k = trusted.get(claimed);
  if (!k) {
    throw new UsError('US_ERR_PKG_UNKNOWN_KEY', `${where}: signed with key ${JSON.stringify(claimed).slice(0, 40)}, which this board does not trust (trusted: ${[...trusted.keys()].join(', ')})`, { keyId: claimed });
  }
  if (!verifyBytes(k.key, manifestBytes, signature)) {
    throw new UsError('US_ERR_PKG_SIGNATURE', `${where}: the signature does not verify with trusted key ${claimed} (${k.file}): the package was altered or is not from the key's owner`, { keyId: claimed });
  }

  let raw: unknown;
  try {
    raw = JSON.parse(manifestBytes.toString('utf8'));
  } catch (e) {
    throw new UsError('US_ERR_PKG_MANIFEST', `${where}: signed manifest is not JSON: ${(e as Error).message}`);
  }
  const r = manifestSchema.safeParse(raw);
  if (!r.success) {
    const problems = r.error.issues.slice(0, 10).map((i) => `${formatPath(i.path)}: ${i.message}`);
    throw new UsError('US_ERR_PKG_MANIFEST', `${where}: manifest: ${problems.join('; ')}`, { problems });
  }
  const manifest = r.data;
  if (keyIdOf(k.key) !== manifest.keyId) throw new UsError('US_ERR_PKG_SIGNATURE', `${where}: key id mismatch`);
  return { manifest, keyId: claimed, keyFile: k.file };
}
