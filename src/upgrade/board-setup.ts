/**
 * What the upgrade commands need from a board profile, with the defaults filled in: the slots
 * directory, the trusted keys, the boot environment, the kernel command line, the boot attempts.
 * Relative paths are from the profile's folder. Defaults: slots and keys under storageDir; a file boot
 * environment on a simulated board, GRUB's /boot/grub/grubenv on a real (x86-64) blade.
 */
import { dirname, join, resolve } from 'node:path';
import type { BoardProfile } from '../config/board-profile.js';
import { openBootEnv, type BootEnv, type BootEnvSpec } from '../hw/bootenv/index.js';
import { SlotStore } from './slots.js';

export interface UpgradeSetup {
  board: string;
  family: string;
  simulated: boolean;
  slotsDir: string;
  keysDir: string;
  bootAttempts: number;
  bootEnvSpec: BootEnvSpec;
  env: BootEnv;
  store: SlotStore;
  /** Where received packages land by default (YMODEM, and from the partner in a rolling upgrade). */
  incomingDir: string;
  /** argv that reboots a real blade (the profile's upgrade.rebootCommand). */
  rebootCommand: string[];
  /** Bytes kept free where a package is pushed or installed (upgrade.reserveMb). */
  reserveBytes: number;
}

export function upgradeSetupFor(board: BoardProfile): UpgradeSetup {
  const base = dirname(board.sourceFile);
  const at = (p: string) => resolve(base, p);
  const u = board.upgrade;
  const simulated = board.kind === 'simulated';
  const slotsDir = u.slotsDir ? at(u.slotsDir) : join(board.storageDir, 'slots');
  const keysDir = u.keysDir ? at(u.keysDir) : join(board.storageDir, 'keys');
  let bootEnvSpec: BootEnvSpec;
  if (!u.bootEnv) bootEnvSpec = simulated ? { type: 'file', path: join(board.storageDir, 'bootenv') } : { type: 'grub', path: '/boot/grub/grubenv' };
  else if (u.bootEnv.type === 'file') bootEnvSpec = { type: 'file', path: at(u.bootEnv.path) };
  else if (u.bootEnv.type === 'uboot') bootEnvSpec = { type: 'uboot', config: at(u.bootEnv.config) };
  else bootEnvSpec = { type: 'grub', path: at(u.bootEnv.path) };
  // A blade's bootloader puts understudy.slot= on the kernel command line; the simulated bootloader
  // writes the simulated board's command line beside the slots.
  const cmdline = simulated ? join(slotsDir, 'cmdline') : '/proc/cmdline';
  return {
    board: board.name,
    family: board.family,
    simulated,
    slotsDir,
    keysDir,
    bootAttempts: u.bootAttempts,
    bootEnvSpec,
    env: openBootEnv(bootEnvSpec),
    store: new SlotStore(slotsDir, cmdline),
    incomingDir: join(board.storageDir, 'incoming'),
    rebootCommand: u.rebootCommand ?? ['systemctl', 'reboot'],
    reserveBytes: (u.reserveMb ?? 64) * 1048576,
  };
}
