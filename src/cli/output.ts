/**
 * How every command speaks: human text by default, one JSON document with --json; errors print their
 * US_ERR_* code and exit non-zero.
 */
import { asUsError } from '../core/errors.js';

export interface OutputOptions {
  json?: boolean;
}

export function print(o: OutputOptions, result: unknown, human: () => string): void {
  process.stdout.write(o.json ? `${JSON.stringify(result, null, 2)}\n` : `${human()}\n`);
}

export function fail(o: OutputOptions, err: unknown): never {
  const u = asUsError(err);
  if (o.json) process.stdout.write(`${JSON.stringify({ error: u.toJSON() }, null, 2)}\n`);
  else process.stderr.write(`error ${u.code}: ${u.message}\n`);
  process.exit(1);
}

/** Formats rows as a left-aligned text table. */
export function table(rows: Array<Array<string | number | undefined>>): string {
  const cells = rows.map((r) => r.map((c) => (c === undefined ? '-' : String(c))));
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}
