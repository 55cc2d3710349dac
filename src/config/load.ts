/**
 * Reads a JSON config file and validates it against a zod schema, turning every problem into one
 * US_ERR_CONFIG error that names the file and each bad field. Owns no schema of its own.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { z } from 'zod';
import { UsError } from '../core/errors.js';

export function formatPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out || '(top level)';
}

/** Loads `file`; a missing or unreadable one is US_ERR_NOT_FOUND naming it, with `howToCreate` (what makes one) when given. */
export function loadJsonFile<S extends z.ZodType>(file: string, schema: S, what: string, howToCreate?: string): z.output<S> & { readonly sourceFile: string } {
  const abs = resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    throw new UsError('US_ERR_NOT_FOUND', `${what} ${file}: cannot read: ${(e as Error).message}${howToCreate ? `; ${howToCreate}` : ''}`, { file: abs });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UsError('US_ERR_CONFIG', `${what} ${file}: not valid JSON: ${(e as Error).message}`, { file: abs });
  }
  return validate(raw, schema, `${what} ${file}`, abs);
}

export function validate<S extends z.ZodType>(raw: unknown, schema: S, label: string, sourceFile: string): z.output<S> & { readonly sourceFile: string } {
  const r = schema.safeParse(raw);
  if (!r.success) {
    const problems = r.error.issues.map((i) => `${formatPath(i.path)}: ${i.message}`);
    throw new UsError('US_ERR_CONFIG', `${label}: ${problems.join('; ')}`, { file: sourceFile, problems });
  }
  return Object.assign(r.data as object, { sourceFile }) as z.output<S> & { readonly sourceFile: string };
}
