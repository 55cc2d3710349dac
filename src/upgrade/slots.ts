/**
 * The two slots A and B under a board's slots directory: their records (slot.json), a full content
 * check against the record, which slot is running (the kernel command line's `understudy.slot=`),
 * the installer's scratch directories and the lock that serialises upgrade operations. Owns the
 * on-disk layout; no boot-environment logic (bootflow.ts) and no package parsing.
 */
import { createHash } from 'node:crypto';
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, rmSync, writeSync, type Dirent } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { UsError } from '../core/errors.js';
import { writeFileDurable } from '../hw/bootenv/durable.js';
import { manifestFileSchema, SLOT_RECORD, SLOT_SIGNED_HEAD } from './manifest.js';
import type { TrustedKeys } from './keys.js';
import { verifyHeadBytes } from './package-format.js';
import { isSemVer } from './semver.js';

export type SlotName = 'A' | 'B';
export const SLOT_NAMES: readonly SlotName[] = ['A', 'B'];
export const otherSlot = (s: SlotName): SlotName => (s === 'A' ? 'B' : 'A');
export const isSlotName = (s: unknown): s is SlotName => s === 'A' || s === 'B';

export const slotRecordSchema = z.strictObject({
  format: z.literal(1),
  slot: z.enum(['A', 'B']),
  version: z.string().refine(isSemVer),
  compatible: z.string(),
  installedAt: z.string(),
  /** SHA-256 of the package file as built (what `sha256sum pkg.usp` prints). */
  packageSha256: z.string().regex(/^[0-9a-f]{64}$/),
  keyId: z.string(),
  description: z.string().optional(),
  files: z.array(manifestFileSchema),
});
export type SlotRecord = z.output<typeof slotRecordSchema>;

export interface SlotVerdict {
  ok: boolean;
  /** First problems found (bounded). */
  problems: string[];
}

/** The kernel command line argument naming the running slot. */
export const CMDLINE_ARG = 'understudy.slot';

export class SlotStore {
  /**
   * @param slotsDir holds A/ and B/
   * @param cmdlineFile the kernel command line: /proc/cmdline on a blade, a file the simulated
   *   bootloader writes on the simulated chassis
   */
  constructor(readonly slotsDir: string, readonly cmdlineFile: string) {}

  slotDir(s: SlotName): string {
    return join(this.slotsDir, s);
  }

  /** Where the installer assembles a new image (same filesystem as the slot, so the rename is atomic). */
  stagingDir(s: SlotName): string {
    return join(this.slotsDir, `.staging-${s}`);
  }

  /** Where a replaced image waits for deletion. */
  retiredDir(s: SlotName): string {
    return join(this.slotsDir, `.retired-${s}`);
  }

  ensureDir(): void {
    mkdirSync(this.slotsDir, { recursive: true, mode: 0o755 });
  }

  /** The slot's record, or undefined with the reason when it has none or a damaged one. */
  readRecord(s: SlotName): { record?: SlotRecord; problem?: string } {
    const file = join(this.slotDir(s), SLOT_RECORD);
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      return { problem: code === 'ENOENT' ? 'empty (no slot.json)' : `slot.json unreadable: ${(e as Error).message}` };
    }
    const r = slotRecordSchema.safeParse(raw);
    if (!r.success || r.data.slot !== s) return { problem: 'slot.json malformed' };
    return { record: r.data };
  }

  writeRecordInto(dir: string, rec: SlotRecord): void {
    writeFileDurable(join(dir, SLOT_RECORD), `${JSON.stringify(rec, null, 2)}\n`, 0o644);
  }

  /** Keeps the package's signed head in the slot being staged (read back by `signedVersion`). */
  writeSignedHeadInto(dir: string, head: Buffer): void {
    writeFileDurable(join(dir, SLOT_SIGNED_HEAD), head, 0o644);
  }

  /**
   * The slot's version as its package's signed head says it, verified with the trusted keys and
   * checked against slot.json (same version, key and files): the downgrade floor. Throws
   * US_ERR_UPGRADE_FLOOR naming the file when it is missing, unreadable, does not verify or does not match.
   */
  signedVersion(s: SlotName, trusted: TrustedKeys): string {
    const file = join(this.slotDir(s), SLOT_SIGNED_HEAD);
    const floor = (why: string) => new UsError('US_ERR_UPGRADE_FLOOR', `${file}: ${why}: slot ${s}'s version, the downgrade floor, cannot be trusted; use --force to install anyway`, { file, slot: s });
    const { record, problem } = this.readRecord(s);
    if (!record) throw floor(`slot.json: ${problem}`);
    let bytes: Buffer;
    try {
      bytes = readFileSync(file);
    } catch (e) {
      throw floor((e as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing (a slot installed before signed version records)' : `unreadable: ${(e as Error).message}`);
    }
    let m;
    try {
      ({ manifest: m } = verifyHeadBytes(bytes, trusted, file));
    } catch (e) {
      throw floor(`does not verify: ${(e as Error).message}`);
    }
    if (m.version !== record.version || m.keyId !== record.keyId || m.compatible !== record.compatible || JSON.stringify(m.files) !== JSON.stringify(record.files)) {
      throw floor(`signed for version ${m.version}, slot.json says ${record.version} (or its files differ)`);
    }
    return m.version;
  }

  /** What a bootloader can check cheaply: the slot has a well-formed record. */
  isLoadable(s: SlotName): boolean {
    return this.readRecord(s).record !== undefined;
  }

  /** Full check: every recorded file present, a regular file, with its size, mode and SHA-256; nothing extra. */
  verify(s: SlotName): SlotVerdict {
    const { record, problem } = this.readRecord(s);
    if (!record) return { ok: false, problems: [problem!] };
    const problems: string[] = [];
    const buf = Buffer.allocUnsafe(1 << 20);
    for (const f of record.files) {
      if (problems.length >= 10) break;
      const p = join(this.slotDir(s), f.path);
      let st;
      try {
        st = lstatSync(p);
      } catch {
        problems.push(`${f.path}: missing`);
        continue;
      }
      if (!st.isFile()) { problems.push(`${f.path}: not a regular file`); continue; }
      if (st.size !== f.size) { problems.push(`${f.path}: ${st.size} bytes, recorded ${f.size}`); continue; }
      if ((st.mode & 0o777) !== f.mode) { problems.push(`${f.path}: mode ${(st.mode & 0o777).toString(8)}, recorded ${f.mode.toString(8)}`); continue; }
      const h = createHash('sha256');
      const fd = openSync(p, 'r');
      try {
        for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0;) h.update(buf.subarray(0, n));
      } finally {
        closeSync(fd);
      }
      if (h.digest('hex') !== f.sha256) problems.push(`${f.path}: SHA-256 differs from the record`);
    }
    if (problems.length === 0) {
      const listed = new Set([SLOT_RECORD, SLOT_SIGNED_HEAD, ...record.files.map((f) => f.path)]);
      const extra = walkFiles(this.slotDir(s)).filter((p) => !listed.has(p));
      if (extra.length) problems.push(`unrecorded file(s): ${extra.slice(0, 3).join(', ')}`);
    }
    return { ok: problems.length === 0, problems };
  }

  /** The running slot per the kernel command line, or undefined if it does not say. */
  bootedSlot(): SlotName | undefined {
    let line: string;
    try {
      line = readFileSync(this.cmdlineFile, 'utf8');
    } catch {
      return undefined;
    }
    const m = new RegExp(`(?:^|\\s)${CMDLINE_ARG.replace('.', '\\.')}=([AB])(?:\\s|$)`).exec(line);
    return m ? (m[1] as SlotName) : undefined;
  }

  /** What the simulated bootloader hands the simulated kernel. */
  writeCmdline(s: SlotName): void {
    this.ensureDir();
    writeFileDurable(this.cmdlineFile, `${CMDLINE_ARG}=${s}\n`, 0o644);
  }

  /** Removes scratch directories a killed installer left behind. */
  cleanLeftovers(): string[] {
    const removed: string[] = [];
    for (const s of SLOT_NAMES) {
      for (const d of [this.stagingDir(s), this.retiredDir(s)]) {
        if (existsSync(d)) {
          rmSync(d, { recursive: true, force: true });
          removed.push(d);
        }
      }
    }
    return removed;
  }

  /**
   * Takes the slots' lock (a pid file with the boot id). A lock whose process is gone, or that was
   * taken before the last reboot, is stale and taken over. Returns the release function.
   */
  lock(what: string): () => void {
    this.ensureDir();
    const path = join(this.slotsDir, '.lock');
    const me = `${process.pid} ${bootId()}\n`;
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fd = openSync(path, 'wx', 0o600);
        writeSync(fd, me);
        closeSync(fd);
        return () => {
          try {
            if (readFileSync(path, 'utf8') === me) rmSync(path, { force: true });
          } catch { /* gone already */ }
        };
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        const holder = liveHolder(path);
        if (holder !== undefined) throw new UsError('US_ERR_UPGRADE_BUSY', `cannot ${what}: another upgrade operation (pid ${holder}) holds ${path}`, { pid: holder });
        rmSync(path, { force: true });
      }
    }
    throw new UsError('US_ERR_UPGRADE_BUSY', `cannot ${what}: cannot take ${path}`);
  }
}

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

function liveHolder(path: string): number | undefined {
  try {
    const [pidText, boot] = readFileSync(path, 'utf8').trim().split(/\s+/);
    const pid = Number.parseInt(pidText ?? '', 10);
    if (!Number.isInteger(pid) || pid <= 0 || boot !== bootId()) return undefined;
    return existsSync(`/proc/${pid}`) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** Relative paths of all non-directory entries under `root`, sorted. */
export function walkFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    const abs = rel ? join(root, rel) : root;
    for (const d of readdirSorted(abs)) {
      const r = rel ? `${rel}/${d.name}` : d.name;
      if (d.isDirectory()) walk(r);
      else out.push(r);
    }
  };
  walk('');
  return out;
}

function readdirSorted(dir: string): Dirent[] {
  return readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
