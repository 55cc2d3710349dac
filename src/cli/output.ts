/**
 * How every command speaks: human text by default, one JSON document with --json; errors print their
 * US_ERR_* code and exit non-zero. Commands get this by running as an `action`. (`understudy load`
 * speaks JSON lines instead, errors included, and does not use it.)
 */
import type { Command } from 'commander';
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

/**
 * A command's action: `run` gets the command's options (with the global --json) and its positional
 * arguments. With `human`, what `run` returns is printed (`print`); without, `run` prints for itself.
 * Whatever it throws is printed with its code and exits 1 (`fail`).
 */
export function action<O extends OutputOptions, A extends unknown[], R>(run: (o: O, ...args: A) => Promise<R> | R, human: (result: R, o: O) => string): (...a: unknown[]) => Promise<void>;
export function action<O extends OutputOptions, A extends unknown[]>(run: (o: O, ...args: A) => Promise<void> | void): (...a: unknown[]) => Promise<void>;
export function action(run: (o: OutputOptions, ...args: unknown[]) => unknown, human?: (result: unknown, o: OutputOptions) => string): (...a: unknown[]) => Promise<void> {
  return async (...a) => {
    // commander calls an action with the positional arguments, then the options, then the command
    const o = (a[a.length - 1] as Command).optsWithGlobals<OutputOptions>();
    try {
      const result = await run(o, ...a.slice(0, -2));
      if (human) print(o, result, () => human(result, o));
    } catch (e) {
      fail(o, e);
    }
  };
}

/** Formats rows as a left-aligned text table. */
export function table(rows: Array<Array<string | number | undefined>>): string {
  const cells = rows.map((r) => r.map((c) => (c === undefined ? '-' : String(c))));
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n');
}
