/**
 * What a console command line means (classify) and how a CLI command runs for the console (runCli):
 * the CLI itself is spawned — `node <cliEntry> <words…>` with UNDERSTUDY_BOARD set to this board — so
 * the console has exactly the CLI's commands and output, --json included. Runtime is bounded; Ctrl-C
 * interrupts. This module never touches the serial line.
 */
import { spawn } from 'node:child_process';
import { UsError } from '../../core/errors.js';

export type ConsoleAction =
  | { kind: 'empty' }
  | { kind: 'help'; topic: string[] }
  | { kind: 'logout' }
  | { kind: 'set'; args: string[] }
  | { kind: 'history' }
  | { kind: 'passwd' }
  | { kind: 'attach' }
  | { kind: 'refuse'; why: string }
  | { kind: 'cli'; words: string[]; handover: boolean };

/** Top-level CLI commands that make no sense on a board's console, and why. */
export const REFUSED: Readonly<Record<string, string>> = {
  chassis: 'the simulated chassis is driven from the host machine, not from one of its boards',
  demo: 'demo boots a board and a guest of its own; run it on the host',
  hlr: 'the stand-in AUTH service runs until interrupted; run it on the host',
};

/** First word that is not an option (the CLI's global options may come first). */
function commandWords(words: string[]): string[] {
  return words.filter((w) => !w.startsWith('-'));
}

export function classify(words: string[], consoleDevice?: string): ConsoleAction {
  if (!words.length) return { kind: 'empty' };
  const [first, second] = commandWords(words);
  const has = (...opts: string[]) => words.some((w) => opts.some((o) => w === o || w.startsWith(`${o}=`)));
  if (first === undefined) return { kind: 'cli', words, handover: false }; // e.g. --help, --version
  if (first === 'help' && words[0] === 'help') return { kind: 'help', topic: words.slice(1) };
  if (words.length === 1 && (first === 'logout' || first === 'exit' || first === 'quit')) return { kind: 'logout' };
  if (first === 'set' && words[0] === 'set') return { kind: 'set', args: words.slice(1) };
  if (words.length === 1 && first === 'history') return { kind: 'history' };
  if (has('--help', '-h')) return { kind: 'cli', words, handover: false };
  const refused = REFUSED[first];
  if (refused) return { kind: 'refuse', why: `"${first}" is not available on the console: ${refused}` };
  if (first === 'guest' && second === 'console' && !has('--tail', '--json')) return { kind: 'attach' };
  if (first === 'guest' && second === 'start' && has('--foreground')) {
    return { kind: 'refuse', why: '"guest start --foreground" would run the controller inside this console; use "guest start"' };
  }
  if (first === 'console' && second === 'passwd') {
    if (has('--file')) return { kind: 'refuse', why: 'on the console, "console passwd" changes this console\'s password file only' };
    return { kind: 'passwd' };
  }
  if (first === 'upgrade' && second === 'receive') {
    const i = words.findIndex((w) => w === '--device' || w.startsWith('--device='));
    const device = i < 0 ? undefined : words[i]!.includes('=') ? words[i]!.split('=').slice(1).join('=') : words[i + 1];
    return { kind: 'cli', words, handover: device === undefined || device === consoleDevice };
  }
  return { kind: 'cli', words, handover: false };
}

export interface RunCliOptions {
  /** dist/src/cli/main.js */
  cliEntry: string;
  /** This board's profile: the child sees it as UNDERSTUDY_BOARD. */
  boardFile: string;
  words: string[];
  /** Killed (SIGTERM, then SIGKILL) after this long. */
  timeoutMs: number;
  /** Written to the child's stdin, which is then closed (e.g. a new password). */
  stdin?: string;
  /** Every chunk of stdout and stderr, in arrival order. */
  onOutput: (chunk: Buffer) => void;
}

export interface RunCliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  interrupted: boolean;
  durationMs: number;
}

export interface CliRun {
  done: Promise<RunCliResult>;
  /** Ctrl-C: SIGINT, then SIGKILL if it does not end within 2 s. */
  interrupt(): void;
  /** Backpressure from a slow line: stop reading the child's output for now. */
  pause(): void;
  resume(): void;
  /** Hangup or shutdown: SIGKILL at once. */
  kill(): void;
  readonly pid?: number;
}

/** Environment of a console command: this board, no colours, nothing meant for the daemon itself. */
function childEnv(boardFile: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, UNDERSTUDY_BOARD: boardFile, NO_COLOR: '1', FORCE_COLOR: '0', TERM: 'dumb', UNDERSTUDY_CONSOLE: '1' };
  delete env.UNDERSTUDY_NOTIFY;
  delete env.UNDERSTUDY_MEMBERSHIP;
  return env;
}

export function runCli(o: RunCliOptions): CliRun {
  const t0 = Date.now();
  const child = spawn(process.execPath, [o.cliEntry, ...o.words], {
    stdio: [o.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    env: childEnv(o.boardFile),
  });
  let timedOut = false;
  let interrupted = false;
  let killTimer: NodeJS.Timeout | undefined;
  const hardKill = () => { try { child.kill('SIGKILL'); } catch { /* gone */ } };
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGTERM');
    killTimer = setTimeout(hardKill, 2000);
  }, o.timeoutMs);
  child.stdout!.on('data', o.onOutput);
  child.stderr!.on('data', o.onOutput);
  if (o.stdin !== undefined) {
    child.stdin!.on('error', () => undefined);
    child.stdin!.end(o.stdin);
  }
  const done = new Promise<RunCliResult>((resolve) => {
    let spawnError: Error | undefined;
    child.once('error', (e) => { spawnError = e; });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      if (spawnError && code === null && signal === null) o.onOutput(Buffer.from(`error US_ERR_INTERNAL: cannot run the CLI: ${spawnError.message}\n`));
      resolve({ code, signal, timedOut, interrupted, durationMs: Date.now() - t0 });
    });
  });
  return {
    done,
    pid: child.pid,
    interrupt() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      interrupted = true;
      child.kill('SIGINT');
      killTimer ??= setTimeout(hardKill, 2000);
    },
    pause() { child.stdout!.pause(); child.stderr!.pause(); },
    resume() { child.stdout!.resume(); child.stderr!.resume(); },
    kill: hardKill,
  };
}

/** Runs the CLI and returns everything it printed (for `help`'s command list). */
export async function captureCli(o: Omit<RunCliOptions, 'onOutput'>): Promise<{ result: RunCliResult; output: string }> {
  const chunks: Buffer[] = [];
  const run = runCli({ ...o, onOutput: (c) => chunks.push(c) });
  const result = await run.done;
  return { result, output: Buffer.concat(chunks).toString('utf8') };
}

/** The "Commands:" section of `understudy --help`, without the commands the console refuses. */
export function consoleCommandList(cliHelp: string): string[] {
  const lines = cliHelp.split('\n');
  const start = lines.findIndex((l) => /^Commands:/.test(l));
  if (start < 0) return [];
  const out: string[] = [];
  let keep = false;
  for (const l of lines.slice(start + 1)) {
    if (!l.trim()) break;
    const entry = /^ {2}(\S+)/.exec(l);
    if (entry) keep = !(entry[1]! in REFUSED) && entry[1] !== 'help';
    if (keep) out.push(l);
  }
  return out;
}

/** Describes how a command ended, for the line after its output; undefined when it succeeded. */
export function describeEnd(r: RunCliResult, timeoutMs: number): string | undefined {
  if (r.timedOut) return `[stopped: the command ran longer than ${Math.round(timeoutMs / 1000)} s]`;
  if (r.interrupted) return '[interrupted]';
  if (r.code === 0) return undefined;
  if (r.code !== null) return `[exit status ${r.code}]`;
  return `[killed by ${r.signal}]`;
}

export function assertCliEntry(path: string): void {
  if (!path.endsWith('.js')) throw new UsError('US_ERR_CONFIG', `console: cliEntry must be the CLI's main.js, got "${path}"`);
}
