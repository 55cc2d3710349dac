/**
 * The simulated chassis' boot environment: `name=value` lines in a plain file, replaced atomically
 * (temporary file, fsync, rename, fsync of the directory). A missing file is an empty environment,
 * like a blade whose bootloader never saved one.
 */
import { readFileSync } from 'node:fs';
import { UsError } from '../../core/errors.js';
import { checkChanges, parseEnvLines, type BootEnv } from './boot-env.js';
import { writeFileDurable } from './durable.js';

export class FileBootEnv implements BootEnv {
  readonly description: string;

  constructor(readonly path: string) {
    if (!path) throw new UsError('US_ERR_CONFIG', 'FileBootEnv: path is required');
    this.description = `file boot environment ${path}`;
  }

  async read(): Promise<Record<string, string>> {
    return this.readSync();
  }

  private readSync(): Record<string, string> {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw new UsError('US_ERR_BOOTENV', `${this.description}: cannot read: ${(e as Error).message}`);
    }
    return parseEnvLines(text);
  }

  async update(changes: Record<string, string | null>): Promise<void> {
    checkChanges(changes, this.description);
    const env = this.readSync();
    for (const [k, v] of Object.entries(changes)) {
      if (v === null || v === '') delete env[k];
      else env[k] = v;
    }
    const text = Object.keys(env).sort().map((k) => `${k}=${env[k]}\n`).join('');
    try {
      writeFileDurable(this.path, text, 0o600);
    } catch (e) {
      throw new UsError('US_ERR_BOOTENV', `${this.description}: cannot write: ${(e as Error).message}`);
    }
  }
}
