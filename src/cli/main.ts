/**
 * `understudy`: the command-line interface of a board. Every command prints human text, or one JSON
 * document with --json; failures print a US_ERR_* code and exit non-zero.
 *
 * `understudy [--json] status [--board F]`, the command scripts poll, is answered without loading
 * the command-line parser (commander: about a fifth of the CLI's own start-up; bench/status); every
 * other command line, and `status` with anything else (--help, an unknown option), goes to the full
 * program (program.ts).
 */
import { runFastStatus } from './fast-status.js';

if (!(await runFastStatus(process.argv.slice(2)))) await import('./program.js');
