/**
 * Streams a package's tar payload against its verified manifest: every entry must be a regular file
 * the manifest lists, once, at a safe relative path, with the listed size and SHA-256; the whole
 * payload must hash to the manifest's. Hashes while streaming and, when given a target directory,
 * writes the files there (created exclusively, fsynced, given the manifest's mode). Nothing is
 * written outside that directory. Owns no slot or boot logic.
 */
import { createHash, type Hash } from 'node:crypto';
import { closeSync, fchmodSync, fsyncSync, mkdirSync, openSync, writeSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Header, Parser, type ReadEntry } from 'tar';
import { UsError } from '../core/errors.js';
import { fsyncDir } from '../hw/bootenv/durable.js';
import { unsafePathReason, type Manifest, type ManifestFile } from './manifest.js';

const REGULAR = new Set(['File', 'OldFile', 'ContiguousFile']);

interface OpenFile {
  spec: ManifestFile;
  fd?: number;
  hash: Hash;
  received: number;
}

export interface PayloadResult {
  files: number;
  bytes: number;
  /** Directories created under the target, deepest first (for fsync). */
  dirs: string[];
}

/**
 * Reads the payload of an open package (`total` bytes from `offset`) into `ex`, chunk by chunk, each
 * chunk also given to `onChunk` (the whole package's hash); returns the extractor's result.
 */
export async function streamPayload(fh: FileHandle, offset: number, total: number, ex: PayloadExtractor, where: string,
  o: { chunkBytes?: number; onChunk?(c: Buffer): void; onProgress?(p: { done: number; total: number }): void } = {}): Promise<PayloadResult> {
  const chunkBytes = o.chunkBytes ?? 1 << 20;
  let done = 0;
  o.onProgress?.({ done, total });
  while (done < total) {
    // A fresh buffer per read: the tar parser may keep a reference to the tail of a chunk.
    const buf = Buffer.allocUnsafe(Math.min(chunkBytes, total - done));
    const { bytesRead } = await fh.read(buf, 0, buf.length, offset + done);
    if (bytesRead === 0) throw new UsError('US_ERR_PKG_TRUNCATED', `${where}: file shrank while being read`);
    const chunk = buf.subarray(0, bytesRead);
    o.onChunk?.(chunk);
    await ex.write(chunk);
    done += bytesRead;
    o.onProgress?.({ done, total });
  }
  return ex.finish();
}

/**
 * Feed it the payload bytes in order with `write`, then call `finish`. The first violation is thrown
 * from `write` or `finish` as a UsError; after that the extractor accepts nothing more. The caller
 * removes the target directory on failure.
 */
export class PayloadExtractor {
  private readonly parser: Parser;
  private readonly byPath: Map<string, ManifestFile>;
  private readonly seen = new Set<string>();
  private readonly payloadHash = createHash('sha256');
  private readonly dirs = new Set<string>();
  private current?: OpenFile;
  private failure?: UsError;
  private fed = 0;
  private firstBlockChecked = false;
  private filesDone = 0;
  private ended?: Promise<void>;

  /** @param targetDir where files go (must exist and be empty), or undefined to verify only. */
  constructor(private readonly manifest: Manifest, private readonly targetDir: string | undefined, private readonly where: string) {
    this.byPath = new Map(manifest.files.map((f) => [f.path, f]));
    // strict: every tar warning (bad checksum, truncation) is an error. No compression is sniffed
    // (gzip is refused below before the parser sees it; brotli/zstd are off).
    this.parser = new Parser({ strict: true, brotli: false, zstd: false } as ConstructorParameters<typeof Parser>[0]);
    this.parser.on('entry', (e: ReadEntry) => this.onEntry(e));
    this.parser.on('error', (e: Error) => this.fail('US_ERR_PKG_FORMAT', `payload is not a valid tar stream: ${e.message}`));
    this.parser.on('warn', (_code: string, msg: string | Error) => this.fail('US_ERR_PKG_FORMAT', `payload is not a valid tar stream: ${String(msg)}`));
  }

  private fail(code: UsError['code'], message: string): void {
    if (this.failure) return;
    this.failure = new UsError(code, `${this.where}: ${message}`);
    if (this.current?.fd !== undefined) {
      try { closeSync(this.current.fd); } catch { /* already failing */ }
      this.current.fd = undefined;
    }
  }

  private check(): void {
    if (this.failure) throw this.failure;
  }

  /** Feeds the next payload bytes; resolves when the parser can take more. */
  async write(chunk: Buffer): Promise<void> {
    this.check();
    if (this.fed + chunk.length > this.manifest.payload.size) {
      this.fail('US_ERR_PKG_HASH_MISMATCH', `payload is longer than the manifest's ${this.manifest.payload.size} bytes`);
      this.check();
    }
    this.fed += chunk.length;
    this.payloadHash.update(chunk);
    if (!this.firstBlockChecked) {
      // Refuse compressed payloads outright: the parser would otherwise inflate gzip by itself.
      if (chunk.length >= 2 && chunk[0] === 0x1f && chunk[1] === 0x8b) this.fail('US_ERR_PKG_FORMAT', 'payload is compressed; packages carry a plain tar stream');
      else if (chunk.length >= 512 && !new Header(chunk.subarray(0, 512)).cksumValid) this.fail('US_ERR_PKG_FORMAT', 'payload does not start with a valid tar header');
      this.firstBlockChecked = true;
      this.check();
    }
    const more = this.parser.write(chunk);
    this.check();
    if (!more) await new Promise<void>((r) => this.parser.once('drain', r));
    this.check();
  }

  /** Ends the payload: checks completeness and the whole-payload hash. */
  async finish(): Promise<PayloadResult> {
    this.check();
    this.ended ??= new Promise<void>((resolve) => {
      this.parser.once('end', resolve);
      this.parser.once('close', resolve);
      this.parser.end();
    });
    await this.ended;
    this.check();
    if (this.fed < this.manifest.payload.size) this.fail('US_ERR_PKG_TRUNCATED', `payload ended after ${this.fed} of ${this.manifest.payload.size} bytes`);
    else if (this.current) this.fail('US_ERR_PKG_TRUNCATED', `payload ends inside ${this.current.spec.path}`);
    else {
      const missing = this.manifest.files.filter((f) => !this.seen.has(f.path));
      if (missing.length) this.fail('US_ERR_PKG_TRUNCATED', `payload lacks ${missing.length} listed file(s), first ${missing[0]!.path}`);
      else if (this.payloadHash.digest('hex') !== this.manifest.payload.sha256) this.fail('US_ERR_PKG_HASH_MISMATCH', 'the payload\'s SHA-256 is not the manifest\'s (bytes changed outside the files)');
    }
    this.check();
    const dirs = [...this.dirs].sort((a, b) => b.length - a.length);
    return { files: this.filesDone, bytes: this.fed, dirs };
  }

  private onEntry(entry: ReadEntry): void {
    if (this.failure) {
      entry.resume();
      return;
    }
    const path = entry.path;
    const why = unsafePathReason(path.replace(/\/$/, ''));
    if (why) {
      this.fail('US_ERR_PKG_UNSAFE_ENTRY', `entry ${JSON.stringify(path)} rejected: ${why}`);
    } else if (/^(Symbolic)?Link$/.test(entry.type)) {
      this.fail('US_ERR_PKG_UNSAFE_ENTRY', `entry ${JSON.stringify(path)} rejected: ${entry.type === 'Link' ? 'hard link' : 'symbolic link'} to ${JSON.stringify(entry.linkpath ?? '')}`);
    } else if (!REGULAR.has(entry.type) && entry.type !== 'Directory') {
      this.fail('US_ERR_PKG_UNSAFE_ENTRY', `entry ${JSON.stringify(path)} rejected: ${entry.type} entries are not allowed`);
    } else if (entry.type === 'Directory' || !this.byPath.has(path)) {
      this.fail('US_ERR_PKG_UNLISTED_ENTRY', `entry ${JSON.stringify(path)} (${entry.type}) is not in the manifest`);
    } else if (this.seen.has(path)) {
      this.fail('US_ERR_PKG_UNLISTED_ENTRY', `entry ${JSON.stringify(path)} appears twice`);
    }
    if (this.failure) {
      entry.resume();
      return;
    }
    const spec = this.byPath.get(path)!;
    this.seen.add(path);
    if (entry.size !== spec.size) {
      this.fail('US_ERR_PKG_HASH_MISMATCH', `${path}: tar entry is ${entry.size} bytes, the manifest says ${spec.size}`);
      entry.resume();
      return;
    }
    const f: OpenFile = { spec, hash: createHash('sha256'), received: 0 };
    if (this.targetDir !== undefined) {
      try {
        f.fd = openSync(this.prepare(path), 'wx', 0o600);
      } catch (e) {
        this.fail('US_ERR_INTERNAL', `${path}: cannot create: ${(e as Error).message}`);
        entry.resume();
        return;
      }
    }
    this.current = f;
    entry.on('data', (c: Buffer) => this.onData(f, c));
    entry.on('end', () => this.onEnd(f));
    entry.resume();
  }

  /** Creates the parents of `rel` under the target, remembering them for fsync. */
  private prepare(rel: string): string {
    const abs = join(this.targetDir!, rel);
    let d = dirname(rel);
    const made: string[] = [];
    while (d !== '.' && !this.dirs.has(join(this.targetDir!, d))) {
      made.push(join(this.targetDir!, d));
      d = dirname(d);
    }
    if (made.length) mkdirSync(made[0]!, { recursive: true, mode: 0o755 });
    for (const m of made) this.dirs.add(m);
    return abs;
  }

  private onData(f: OpenFile, c: Buffer): void {
    if (this.failure) return;
    f.received += c.length;
    if (f.received > f.spec.size) {
      this.fail('US_ERR_PKG_HASH_MISMATCH', `${f.spec.path}: more data than the manifest's ${f.spec.size} bytes`);
      return;
    }
    f.hash.update(c);
    if (f.fd !== undefined) {
      let off = 0;
      try {
        while (off < c.length) off += writeSync(f.fd, c, off, c.length - off);
      } catch (e) {
        this.fail('US_ERR_INTERNAL', `${f.spec.path}: write failed: ${(e as Error).message}`);
      }
    }
  }

  private onEnd(f: OpenFile): void {
    if (this.current === f) this.current = undefined;
    if (this.failure) return;
    if (f.received !== f.spec.size) {
      this.fail('US_ERR_PKG_TRUNCATED', `${f.spec.path}: ${f.received} of ${f.spec.size} bytes`);
      return;
    }
    const digest = f.hash.digest('hex');
    if (digest !== f.spec.sha256) {
      this.fail('US_ERR_PKG_HASH_MISMATCH', `${f.spec.path}: SHA-256 ${digest} is not the manifest's ${f.spec.sha256}`);
      return;
    }
    if (f.fd !== undefined) {
      try {
        fchmodSync(f.fd, f.spec.mode);
        fsyncSync(f.fd);
        closeSync(f.fd);
        f.fd = undefined;
      } catch (e) {
        this.fail('US_ERR_INTERNAL', `${f.spec.path}: cannot make durable: ${(e as Error).message}`);
        return;
      }
    }
    this.filesDone++;
  }
}

/** fsyncs the directories an extraction created (deepest first), then the target itself. */
export function syncTree(targetDir: string, dirs: string[]): void {
  for (const d of dirs) fsyncDir(d);
  fsyncDir(targetDir);
}
