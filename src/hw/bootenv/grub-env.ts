/**
 * GRUB's environment block (grubenv, 1024 bytes) through `grub-editenv` (Debian: grub-common).
 * grub-editenv rewrites the file in place (open O_TRUNC, write, fsync), which a power cut can tear; so
 * an update edits a copy beside it and renames the copy over the original, then fsyncs the directory.
 * GRUB's `load_env` reads the file through the filesystem and `save_env` finds its blocks each time,
 * so replacing the inode is safe for GRUB.
 */
import { copyFileSync, existsSync, renameSync, rmSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { UsError } from '../../core/errors.js';
import { checkChanges, parseEnvLines, type BootEnv } from './boot-env.js';
import { fsyncDir } from './durable.js';
import { runTool } from './run-tool.js';

export interface GrubBootEnvOptions {
  /** The grubenv file. */
  path: string;
  /** grub-editenv binary (name on PATH or absolute). Default grub-editenv. */
  grubEditenv?: string;
  /** Bound on each tool run. Default 10000 ms. */
  timeoutMs?: number;
}

export class GrubBootEnv implements BootEnv {
  readonly description: string;
  private readonly tool: string;
  private readonly timeoutMs: number;

  constructor(private readonly o: GrubBootEnvOptions) {
    if (!o.path) throw new UsError('US_ERR_CONFIG', 'GrubBootEnv: path (the grubenv file) is required');
    this.tool = o.grubEditenv ?? 'grub-editenv';
    this.timeoutMs = o.timeoutMs ?? 10000;
    this.description = `GRUB environment ${o.path}`;
  }

  async read(): Promise<Record<string, string>> {
    // grub-editenv `list` of a missing file prints nothing and succeeds; say so instead.
    if (!existsSync(this.o.path)) return {};
    const r = await runTool(this.tool, [this.o.path, 'list'], this.description, this.timeoutMs);
    return parseEnvLines(r.stdout);
  }

  async update(changes: Record<string, string | null>): Promise<void> {
    checkChanges(changes, this.description);
    const set = Object.entries(changes).filter(([, v]) => v !== null && v !== '').map(([k, v]) => `${k}=${v}`);
    const unset = Object.entries(changes).filter(([, v]) => v === null || v === '').map(([k]) => k);
    if (!set.length && !unset.length) return;
    const tmp = join(dirname(this.o.path), `.${basename(this.o.path)}.${process.pid}.new`);
    try {
      if (existsSync(this.o.path)) copyFileSync(this.o.path, tmp);
      else await runTool(this.tool, [tmp, 'create'], this.description, this.timeoutMs);
      if (set.length) await runTool(this.tool, [tmp, 'set', ...set], this.description, this.timeoutMs);
      if (unset.length) await runTool(this.tool, [tmp, 'unset', ...unset], this.description, this.timeoutMs);
      renameSync(tmp, this.o.path); // grub-editenv has fsynced tmp
      fsyncDir(dirname(this.o.path));
    } catch (e) {
      rmSync(tmp, { force: true });
      if (e instanceof UsError) throw e;
      throw new UsError('US_ERR_BOOTENV', `${this.description}: ${(e as Error).message}`);
    }
  }
}
