/**
 * `understudy [--json] status [--board F]` without the command-line parser: scripts and monitoring
 * poll it, and loading commander was about a fifth of the CLI's own start-up (bench/status). The
 * same command as the one program.ts registers (replication-commands.ts: boardStatus and its text),
 * the same output and errors. Anything else on the line (--help, another option, another command)
 * is not handled here: the caller runs the full program, which explains it.
 */
import { parseArgs } from 'node:util';
import { fail, print } from './output.js';

/** Runs the plain status command and resolves true, or resolves false for any other command line. */
export async function runFastStatus(argv: readonly string[]): Promise<boolean> {
  let o: { json?: boolean; board?: string };
  try {
    const p = parseArgs({ args: [...argv], options: { json: { type: 'boolean' }, board: { type: 'string' } }, allowPositionals: true, strict: true });
    if (p.positionals.length !== 1 || p.positionals[0] !== 'status') return false;
    o = p.values;
  } catch {
    return false;
  }
  const { boardStatus, formatBoardStatus } = await import('./replication-commands.js');
  try {
    const s = await boardStatus(o);
    print(o, s, () => formatBoardStatus(s));
  } catch (e) {
    fail(o, e);
  }
  return true;
}
