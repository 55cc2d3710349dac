/**
 * The guest descriptor: one guest's image, memory, emulated legacy NIC, ports and watchdog.
 * Format documented in guests/README.md. Validation only.
 */
import { realpathSync } from 'node:fs';
import { isIP } from 'node:net';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { UsError } from '../core/errors.js';
import { z } from 'zod';
import { loadJsonFile } from './load.js';
import { checkResolvedPaths, safePath, unsafePathReason } from './safe-path.js';

const ipv4 = z.string().refine((s) => isIP(s) === 4, { message: 'must be an IPv4 address' });
const port = z.number().int().min(1).max(65535);

export const NIC_MODELS = ['e1000', 'rtl8139', 'ne2k_pci'] as const;

export const guestDescriptorSchema = z.strictObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'lowercase letters, digits and -, at most 32'),
  /** Version of the guest application the image holds (reported by STATS). */
  version: z.string().min(1).max(32),
  image: z.strictObject({
    /** Kernel, relative to the descriptor's folder. */
    kernel: safePath,
    /** Initramfs holding the application, relative to the descriptor's folder. */
    initrd: safePath,
    /** Extra kernel command line. */
    append: z.string().default(''),
  }),
  /** Guest RAM in MiB. */
  memoryMb: z.number().int().min(32).max(65536).default(128),
  nic: z.strictObject({
    /** Emulated legacy NIC: the guest never sees a modern paravirtual device. */
    model: z.enum(NIC_MODELS),
    mac: z.string().regex(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/, 'must be a lowercase MAC like 52:54:00:12:34:56'),
  }),
  /** The private link between the guest and its controller (never the external network). */
  network: z
    .strictObject({ guestAddress: ipv4, controllerAddress: ipv4, netmask: ipv4.default('255.255.255.0') })
    .refine((n) => n.guestAddress !== n.controllerAddress, { message: 'guestAddress and controllerAddress must differ' }),
  ports: z.strictObject({
    /** UDP port the application serves requests on. */
    service: port,
    /** UDP management port (PING, SAVE, HANG), reachable only from the controller. */
    management: port,
    /** Port on the controller address where the guest sends AUTH queries. */
    auth: port,
    /** The guest's own port its AUTH queries leave from (fixed, so answers can be handed to it before it asks again). */
    guestAuth: port.default(5001),
  }),
  watchdog: z.strictObject({
    model: z.literal('i6300esb'),
    /** Seconds without a kick before QEMU raises WATCHDOG and the controller restarts the guest; 0 = off. */
    timeoutS: z.number().int().min(0).max(600),
  }),
  /** Raw virtual disk where the application saves its state. */
  stateDisk: z.strictObject({ sizeMb: z.number().int().min(1).max(1024) }).default({ sizeMb: 4 }),
  /** How long boot-to-ready may take before the start is declared failed. */
  bootTimeoutMs: z.number().int().min(1000).max(600000).default(60000),
});

export type GuestDescriptor = z.output<typeof guestDescriptorSchema> & { readonly sourceFile: string };

export function loadGuestDescriptor(file: string): GuestDescriptor {
  const g = loadJsonFile(file, guestDescriptorSchema, 'guest descriptor', 'copy the package\'s guests/dx-legacy.json there (its image paths relative to the copy, or absolute) and edit it, or name another with --guest or $UNDERSTUDY_GUEST');
  const dir = dirname(g.sourceFile);
  const image = { ...g.image, kernel: resolve(dir, g.image.kernel), initrd: resolve(dir, g.image.initrd) };
  checkResolvedPaths('guest descriptor', g.sourceFile, { 'image.kernel': image.kernel, 'image.initrd': image.initrd });
  return { ...g, image };
}

/** What a partner names a descriptor unpacked from a guest package by: `guest-package:<id>/<path in the package>`. */
export const GUEST_PACKAGE_REF = 'guest-package:';
const PACKAGE_REF = /^guest-package:([0-9a-f]{16})\/(guests\/[^/]+\.json)$/;

/** Where a board unpacks guest packages (src/upgrade/guest-package.ts): one folder per package, named by its id. */
export function guestPackagesDir(storageDir: string): string {
  return join(storageDir, 'guest-packages');
}

/**
 * How this board names `g` to its partner: a descriptor unpacked from a guest package by the
 * package's id and its path in the package (each board unpacks it under its own storage dir), any
 * other by its path (the same on both boards, as before).
 */
export function partnerNameOf(g: Pick<GuestDescriptor, 'sourceFile'>, storageDir: string): string {
  const base = realpathOr(guestPackagesDir(storageDir));
  const rel = relative(base, realpathOr(g.sourceFile));
  const m = /^([0-9a-f]{16})\/(guests\/[^/]+\.json)$/.exec(rel.split(sep).join('/'));
  return m ? `${GUEST_PACKAGE_REF}${m[1]}/${m[2]}` : g.sourceFile;
}

function realpathOr(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/**
 * A guest descriptor the PARTNER names (a clone's or a guest upgrade's `guestFile`): loaded only
 * from the folder this board's own descriptor is in (`ownFile`), or, named `guest-package:<id>/guests/<f>.json`,
 * from a guest package this board unpacked itself under `storageDir` — both resolved through
 * symlinks, so whoever can talk on the partner channel cannot make this board read, or start QEMU
 * on, files anywhere else. Throws US_ERR_CONFIG naming the field before anything is stopped or started.
 */
export function loadPartnerGuestDescriptor(file: string, ownFile: string, field = 'guestFile', storageDir?: string): GuestDescriptor {
  if (file.startsWith(GUEST_PACKAGE_REF)) {
    const m = PACKAGE_REF.exec(file);
    if (!m || !storageDir) throw new UsError('US_ERR_CONFIG', `the partner's ${field} ${JSON.stringify(file.slice(0, 80))}: not guest-package:<16 hex digits>/guests/<name>.json${storageDir ? '' : ' (this board takes no guest packages here)'}: refused`, { field });
    const dir = join(guestPackagesDir(storageDir), m[1]!);
    let real: string;
    try {
      real = realpathSync(join(dir, m[2]!));
    } catch (e) {
      throw new UsError('US_ERR_CONFIG', `the partner's ${field} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} on this board (the guest package was not unpacked here)`, { field });
    }
    if (dirname(real) !== join(realpathSync(dir), 'guests')) throw new UsError('US_ERR_CONFIG', `the partner's ${field} ${file} leads out of the guest package's guests/ folder: refused`, { field });
    return loadGuestDescriptor(real);
  }
  const bad = unsafePathReason(file, true);
  if (bad) throw new UsError('US_ERR_CONFIG', `the partner's ${field} ${JSON.stringify(file.slice(0, 80))}: ${bad}`, { field });
  let real: string;
  try {
    real = realpathSync(file);
  } catch (e) {
    throw new UsError('US_ERR_CONFIG', `the partner's ${field} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} on this board`, { field });
  }
  const allowed = dirname(realpathSync(ownFile));
  if (dirname(real) !== allowed || !real.endsWith('.json')) {
    throw new UsError('US_ERR_CONFIG', `the partner's ${field} ${file} is not a .json descriptor in ${allowed}, the folder of this board's guest descriptor: refused`, { field });
  }
  return loadGuestDescriptor(real);
}
