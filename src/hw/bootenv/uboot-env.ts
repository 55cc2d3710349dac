/**
 * U-Boot's environment through libubootenv's `fw_printenv` / `fw_setenv` (Debian: libubootenv-tool),
 * configured by an fw_env.config (device or file, offset, size; two lines for a redundant
 * environment, which is what makes a U-Boot env write power-cut safe). All changes of one update go
 * through `fw_setenv --script`, so they land in a single environment write.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { UsError } from '../../core/errors.js';
import { checkChanges, parseEnvLines, type BootEnv } from './boot-env.js';
import { runTool } from './run-tool.js';

export interface UbootBootEnvOptions {
  /** fw_env.config describing where the environment lives. */
  config: string;
  /** fw_printenv binary (name on PATH or absolute). Default fw_printenv. */
  fwPrintenv?: string;
  /** fw_setenv binary. Default fw_setenv. */
  fwSetenv?: string;
  /** Bound on each tool run. Default 10000 ms. */
  timeoutMs?: number;
}

export class UbootBootEnv implements BootEnv {
  readonly description: string;
  private readonly printenv: string;
  private readonly setenv: string;
  private readonly timeoutMs: number;

  constructor(private readonly o: UbootBootEnvOptions) {
    if (!o.config) throw new UsError('US_ERR_CONFIG', 'UbootBootEnv: config (the fw_env.config path) is required');
    this.printenv = o.fwPrintenv ?? 'fw_printenv';
    this.setenv = o.fwSetenv ?? 'fw_setenv';
    this.timeoutMs = o.timeoutMs ?? 10000;
    this.description = `U-Boot environment (${o.config})`;
  }

  async read(): Promise<Record<string, string>> {
    const r = await runTool(this.printenv, ['-c', this.o.config], this.description, this.timeoutMs);
    return parseEnvLines(r.stdout);
  }

  async update(changes: Record<string, string | null>): Promise<void> {
    checkChanges(changes, this.description);
    if (Object.keys(changes).length === 0) return;
    // libubootenv's script format: one `name=value` per line; an empty value deletes the variable.
    const dir = mkdtempSync(join(tmpdir(), 'us-fwenv-'));
    try {
      const script = join(dir, 'script');
      writeFileSync(script, Object.entries(changes).map(([k, v]) => `${k}=${v ?? ''}\n`).join(''), { mode: 0o600 });
      await runTool(this.setenv, ['-c', this.o.config, '-s', script], this.description, this.timeoutMs);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
}
