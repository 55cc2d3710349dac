/**
 * Runs a bootloader tool (fw_printenv, fw_setenv, grub-editenv) with a timeout and turns every failure
 * into a precise UsError: a missing tool names the Debian package to install.
 */
import { execFile } from 'node:child_process';
import { UsError } from '../../core/errors.js';

export interface ToolResult {
  stdout: string;
  stderr: string;
}

/** Debian packages that ship the tools, for the "not found" message. */
const PACKAGE_OF: Record<string, string> = {
  fw_printenv: 'libubootenv-tool',
  fw_setenv: 'libubootenv-tool',
  'grub-editenv': 'grub-common',
};

export function runTool(binary: string, args: string[], where: string, timeoutMs = 10000): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    execFile(binary, args, { timeout: timeoutMs, encoding: 'utf8', maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve({ stdout, stderr });
      const e = err as NodeJS.ErrnoException & { killed?: boolean; code?: number | string };
      if (e.code === 'ENOENT') {
        const name = binary.split('/').pop()!;
        const pkg = PACKAGE_OF[name];
        return reject(new UsError('US_ERR_NOT_FOUND', `${where}: ${binary} not found${pkg ? ` (Debian package ${pkg})` : ''}`));
      }
      const why = e.killed ? `timed out after ${timeoutMs} ms` : `exited with ${e.code}`;
      const msg = `${stderr}`.trim().split('\n').filter(Boolean).slice(-3).join('; ');
      reject(new UsError('US_ERR_BOOTENV', `${where}: ${binary} ${args.join(' ')} ${why}${msg ? `: ${msg}` : ''}`));
    });
  });
}
