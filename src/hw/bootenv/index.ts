/**
 * Picks the boot environment implementation a board profile names. The only place that knows all
 * three; callers see a BootEnv.
 */
import type { BootEnv } from './boot-env.js';
import { FileBootEnv } from './file-env.js';
import { GrubBootEnv } from './grub-env.js';
import { UbootBootEnv } from './uboot-env.js';

export type { BootEnv } from './boot-env.js';
export { FileBootEnv } from './file-env.js';
export { GrubBootEnv } from './grub-env.js';
export { UbootBootEnv } from './uboot-env.js';

export type BootEnvSpec =
  | { type: 'file'; path: string }
  | { type: 'uboot'; config: string }
  | { type: 'grub'; path: string };

export function openBootEnv(spec: BootEnvSpec): BootEnv {
  switch (spec.type) {
    case 'file':
      return new FileBootEnv(spec.path);
    case 'uboot':
      return new UbootBootEnv({ config: spec.config });
    case 'grub':
      return new GrubBootEnv({ path: spec.path });
  }
}
