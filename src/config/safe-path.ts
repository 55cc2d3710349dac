/**
 * Paths from the configuration that reach QEMU's command line, a migration URI or a file name:
 * what characters they may hold. QEMU parses `-drive file=…,` / `-chardev …,path=…` as comma-
 * separated options (a comma in a path injects one; `,,` is its escape), treats `proto:` prefixes of
 * a drive file as protocols, and a shell would interpret quotes, `$`, `;`, `|`, `&`, `*`, spaces,
 * redirections and newlines. No shell runs here any more (see hw/hypervisor/migration.ts), but a
 * path that would need quoting is refused at load anyway, with the field named, rather than quoted
 * somewhere and forgotten elsewhere. Owns the rule; the schemas in this folder apply it.
 */
import { isAbsolute } from 'node:path';
import { z } from 'zod';
import { UsError } from '../core/errors.js';

/** Letters, digits and `/ . _ - + @`: nothing QEMU's option parser or a shell gives a meaning to. */
const SAFE_PATH = /^[A-Za-z0-9/._+@-]+$/;
/** Longest path accepted (a unix socket path is at most 107 bytes; storageDir leaves room for names). */
export const MAX_PATH_LENGTH = 255;

/** Why `p` is not a safe path, or undefined. `absolute`: it must be absolute (after resolution). */
export function unsafePathReason(p: string, absolute = false): string | undefined {
  if (p.length === 0) return 'must not be empty';
  if (p.length > MAX_PATH_LENGTH) return `must be at most ${MAX_PATH_LENGTH} characters`;
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(p)) return 'must not contain control characters or newlines';
  if (p.includes(',')) return 'must not contain a comma (QEMU would read the rest as its own options)';
  if (p.includes(':')) return 'must not contain a colon (QEMU would read a prefix as a protocol)';
  const bad = [...p].find((c) => !SAFE_PATH.test(c));
  if (bad !== undefined) return `must not contain ${JSON.stringify(bad)}: only letters, digits and / . _ - + @ are allowed in a path`;
  if (absolute && !isAbsolute(p)) return 'must be an absolute path';
  return undefined;
}

/** A path field: relative ones are resolved against the file's folder by the loader, then checked again. */
export const safePath = z.string().superRefine((p, ctx) => {
  const why = unsafePathReason(p);
  if (why) ctx.addIssue({ code: 'custom', message: why });
});

/** A program name or path (QEMU's binary): a bare name is looked up in PATH. */
export const safeProgram = safePath;

/** Each resolved path, checked like the raw value was; US_ERR_CONFIG naming the file and the field. */
export function checkResolvedPaths(what: string, file: string, paths: Record<string, string>): void {
  const problems = Object.entries(paths).flatMap(([field, value]) => {
    const why = unsafePathReason(value, true);
    return why ? [`${field}: resolves to ${JSON.stringify(value)}, which ${why}`] : [];
  });
  if (problems.length) throw new UsError('US_ERR_CONFIG', `${what} ${file}: ${problems.join('; ')}`, { file, problems });
}
