/**
 * Installs a signed package into the inactive slot and arms a one-shot trial of it. Order, chosen so
 * a power cut at any instant leaves a bootable board:
 *
 *   1. verify the signature (before any payload byte is read), the family, the version rules;
 *   2. stream the payload into <slots>/.staging-X (hashing, fsync per file), add slot.json, fsync the tree;
 *   3. if X is the armed trial, disarm it (X is about to change);
 *   4. rename X to .retired-X, rename the staging dir to X, fsync the slots dir, delete .retired-X;
 *   5. arm the trial of X with the board's boot attempts (one env write).
 *
 * A rejection at 1-2 leaves slot X and the boot environment untouched. Owns that sequence only; the
 * pieces are in package-format.ts, payload.ts, slots.ts and bootflow.ts.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { UsError } from '../core/errors.js';
import type { BootEnv } from '../hw/bootenv/boot-env.js';
import { fsyncDir } from '../hw/bootenv/durable.js';
import { armTrial, commitSlot, disarmTrial, readBootState } from './bootflow.js';
import { assertRoom, statfsFreeBytes, type FreeBytes } from './free-space.js';
import type { TrustedKeys } from './keys.js';
import { readVerifiedHead, type VerifiedHead } from './package-format.js';
import { PayloadExtractor, streamPayload, syncTree, type PayloadResult } from './payload.js';
import { compareSemVer } from './semver.js';
import { otherSlot, SLOT_NAMES, type SlotName, type SlotStore } from './slots.js';

/** Named points of the sequence, reported through `onStep` (tests kill the process at each). */
export type InstallStep = 'verified' | 'staged' | 'disarmed' | 'retired' | 'swapped' | 'armed';

export interface InstallProgress {
  /** Payload bytes processed so far. */
  done: number;
  total: number;
}

export interface InstallOptions {
  /** The .usp file. */
  packagePath: string;
  /** The board's family; the package's `compatible` must equal it. */
  family: string;
  store: SlotStore;
  env: BootEnv;
  trustedKeys: TrustedKeys;
  /** Boot attempts armed for the new slot. */
  bootAttempts: number;
  /** Install even if it is a downgrade or the running version is below the package's minimum. */
  force?: boolean;
  onProgress?: (p: InstallProgress) => void;
  onStep?: (s: InstallStep) => void;
  /** Read size while streaming. Default 1 MiB. */
  chunkBytes?: number;
  /** Bytes kept free in the slots directory after the install (upgrade.reserveMb). Default 64 MiB. */
  reserveBytes?: number;
  /** Free bytes on a filesystem (a seam for tests). Default: statfs. */
  freeBytes?: FreeBytes;
}

export interface InstallResult {
  slot: SlotName;
  version: string;
  /** The running slot's version before the install, if it had one. */
  previousVersion?: string;
  /** A trial was armed (false only for the first install on an empty board, committed directly). */
  armed: boolean;
  firstInstall: boolean;
  bootAttempts: number;
  forced: boolean;
  packageSha256: string;
  keyId: string;
  files: number;
  bytes: number;
  durationMs: number;
}

export type VerifyOptions = Pick<InstallOptions, 'packagePath' | 'family' | 'store' | 'env' | 'trustedKeys' | 'force'>;

export interface PackageCheck {
  head: VerifiedHead;
  /** The slot an install would write. */
  target: SlotName;
  /** The slot kept as the fallback (none on an empty board). */
  running?: SlotName;
  firstInstall: boolean;
  previousVersion?: string;
  /** The version rules were overridden by `force`. */
  forced: boolean;
}

/**
 * Step 1 of an install, on its own: signature, family, version rules and the slots' state, exactly as
 * `installPackage` checks them, reading no payload byte and writing nothing. For a caller that must
 * know a package would install before it acts on it (the rolling upgrade of a pair).
 */
export async function verifyPackage(o: VerifyOptions): Promise<PackageCheck> {
  const where = `package ${o.packagePath}`;
  const fh = await open(o.packagePath, 'r').catch((e: Error) => {
    throw new UsError('US_ERR_NOT_FOUND', `${where}: cannot open: ${e.message}`);
  });
  try {
    return await checkOpenPackage(fh, o, where);
  } finally {
    await fh.close();
  }
}

async function checkOpenPackage(fh: FileHandle, o: VerifyOptions, where: string, onVerified?: () => void): Promise<PackageCheck> {
  const head = await readVerifiedHead(fh, o.trustedKeys, where);
  onVerified?.();
  const m = head.manifest;
  if (m.compatible !== o.family) {
    throw new UsError('US_ERR_PKG_INCOMPATIBLE', `${where}: made for board family "${m.compatible}", this board is "${o.family}"`, { compatible: m.compatible, family: o.family });
  }
  const st = await readBootState(o.env);
  const noRecord = SLOT_NAMES.every((s) => !o.store.isLoadable(s));
  let target: SlotName;
  let running: SlotName | undefined;
  let previousVersion: string | undefined;
  let forced = false;
  // A board with no slot at all is empty; slots that are there but unreadable hide the running
  // version, and a downgrade must not pass for a first install.
  const present = SLOT_NAMES.filter((s) => existsSync(o.store.slotDir(s)));
  if (noRecord && present.length) {
    const files = present.map((s) => o.store.readRecord(s).problem && `${o.store.slotDir(s)}/slot.json (${o.store.readRecord(s).problem})`).join(', ');
    if (!o.force) throw new UsError('US_ERR_UPGRADE_FLOOR', `${where}: no slot has a readable record (${files}): the running version, the downgrade floor, is unknown; use --force to install anyway`, { slots: present });
    forced = true;
  }
  const firstInstall = noRecord;
  if (firstInstall) {
    target = 'A';
  } else {
    // The slot we run from, and so must keep, is always a loadable one: a stale command line or a
    // damaged slot must never make the installer overwrite the only image that boots.
    running = [o.store.bootedSlot(), st.good, ...SLOT_NAMES].find((s): s is SlotName => s !== undefined && o.store.isLoadable(s))!;
    if (st.trial === running && st.good !== running) {
      throw new UsError('US_ERR_UPGRADE_STATE', `the running slot ${running} is an uncommitted trial and slot ${otherSlot(running)} is its fallback: run \`understudy upgrade mark-good\` first (or reboot to fall back)`);
    }
    target = otherSlot(running);
    previousVersion = o.store.readRecord(running).record?.version;
    // The floor is the running slot's version as its signed head says; never a bare, unsigned slot.json.
    try {
      previousVersion = o.store.signedVersion(running, o.trustedKeys);
    } catch (e) {
      if (!o.force) throw e;
      forced = true;
    }
  }
  if (previousVersion !== undefined) {
    if (compareSemVer(m.version, previousVersion) < 0) {
      if (!o.force) throw new UsError('US_ERR_PKG_DOWNGRADE', `${where}: version ${m.version} is older than the running ${previousVersion}; use --force to downgrade`, { version: m.version, running: previousVersion });
      forced = true;
    }
    if (m.minVersion && compareSemVer(previousVersion, m.minVersion) < 0) {
      if (!o.force) throw new UsError('US_ERR_PKG_TOO_OLD', `${where}: upgrades from ${m.minVersion} or later; the running version is ${previousVersion}; use --force to install anyway`, { minVersion: m.minVersion, running: previousVersion });
      forced = true;
    }
  }
  return { head, target, running, firstInstall, previousVersion, forced };
}

export async function installPackage(o: InstallOptions): Promise<InstallResult> {
  const t0 = performance.now();
  const where = `package ${o.packagePath}`;
  const step = (s: InstallStep) => o.onStep?.(s);
  const release = o.store.lock('install');
  let staging: string | undefined;
  try {
    o.store.cleanLeftovers();
    const fh = await open(o.packagePath, 'r').catch((e: Error) => {
      throw new UsError('US_ERR_NOT_FOUND', `${where}: cannot open: ${e.message}`);
    });
    let head: VerifiedHead;
    let target: SlotName;
    let running: SlotName | undefined;
    let firstInstall: boolean;
    let previousVersion: string | undefined;
    let forced: boolean;
    const pkgHash = createHash('sha256');
    let result: PayloadResult;
    try {
      ({ head, target, running, firstInstall, previousVersion, forced } = await checkOpenPackage(fh, o, where, () => step('verified')));
      const m = head.manifest;

      // 2. Stream the payload into the staging directory, if it fits beside what is there.
      assertRoom(o.store.slotsDir, head.header.payloadBytes, o.reserveBytes ?? 64 * 1048576, where, o.freeBytes ?? statfsFreeBytes);
      staging = o.store.stagingDir(target);
      mkdirSync(staging, { mode: 0o755 });
      pkgHash.update(head.headBytes);
      result = await streamPayload(fh, head.payloadOffset, head.header.payloadBytes, new PayloadExtractor(m, staging, where), where,
        { chunkBytes: o.chunkBytes, onChunk: (c) => pkgHash.update(c), onProgress: o.onProgress });
    } finally {
      await fh.close();
    }
    const m = head.manifest;
    const packageSha256 = pkgHash.digest('hex');
    o.store.writeRecordInto(staging, {
      format: 1,
      slot: target,
      version: m.version,
      compatible: m.compatible,
      installedAt: new Date().toISOString(),
      packageSha256,
      keyId: head.keyId,
      ...(m.description ? { description: m.description } : {}),
      files: m.files,
    });
    o.store.writeSignedHeadInto(staging, head.headBytes);
    syncTree(staging, result.dirs);
    step('staged');

    // 3-4. From here on the slot changes: it must not be armed while it does.
    const st = await readBootState(o.env);
    if (st.trial === target) {
      await disarmTrial(o.env);
      step('disarmed');
    }
    const slotDir = o.store.slotDir(target);
    const retired = o.store.retiredDir(target);
    if (existsSync(slotDir)) {
      renameSync(slotDir, retired);
      step('retired');
    }
    renameSync(staging, slotDir);
    staging = undefined;
    fsyncDir(o.store.slotsDir);
    step('swapped');
    rmSync(retired, { recursive: true, force: true });

    // 5. Arm (or, on an empty board, commit: there is nothing to fall back to).
    if (firstInstall) await commitSlot(o.env, target);
    else await armTrial(o.env, running!, target, o.bootAttempts);
    step('armed');
    return {
      slot: target,
      version: m.version,
      previousVersion,
      armed: !firstInstall,
      firstInstall,
      bootAttempts: firstInstall ? 0 : o.bootAttempts,
      forced,
      packageSha256,
      keyId: head.keyId,
      files: result.files,
      bytes: result.bytes,
      durationMs: Math.round(performance.now() - t0),
    };
  } finally {
    if (staging) rmSync(staging, { recursive: true, force: true });
    release();
  }
}
