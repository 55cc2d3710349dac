/**
 * `understudy logs`: the controller's log (pino JSON lines in <storageDir>/understudyd.log) as
 * readable lines — time, level, component, message, then the other fields as key=value — or the raw
 * JSON lines with --json (one object per line, so it streams with --follow). Filters by level and
 * component; --follow keeps reading and survives truncation (copytruncate) and rotation (rename).
 * Reads the file only; never talks to the daemon, so it works when the daemon is down.
 */
import { closeSync, fstatSync, openSync, readSync, statSync } from 'node:fs';
import type { Command } from 'commander';
import { loadBoardProfile } from '../config/board-profile.js';
import { UsError } from '../core/errors.js';
import { daemonLogPath } from '../mgmt/paths.js';
import { defaultBoardFile } from './locate.js';
import { action, type OutputOptions } from './output.js';

type Opts = OutputOptions & { board?: string; file?: string; follow?: boolean; level?: string; lines: string; component?: string };

export const LEVELS: Readonly<Record<string, number>> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };
const LEVEL_NAMES = new Map(Object.entries(LEVELS).map(([k, v]) => [v, k]));
/** Fields shown in the head of a line, or not worth showing. */
const HEAD_FIELDS = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg', 'component', 'board', 'v']);
const CHUNK = 64 * 1024;
const POLL_MS = 250;

export function parseLevel(s: string): number {
  const n = LEVELS[s.toLowerCase()] ?? (/^\d+$/.test(s) ? Number(s) : undefined);
  if (n === undefined) throw new UsError('US_ERR_CONFIG', `--level: expected one of ${Object.keys(LEVELS).join(', ')}, got "${s}"`);
  return n;
}

interface Filter {
  minLevel: number;
  component?: string;
}

type Entry = Record<string, unknown>;

function parse(line: string): Entry | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const v = JSON.parse(line) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Entry) : undefined;
  } catch {
    return undefined;
  }
}

function accepts(e: Entry | undefined, f: Filter): boolean {
  if (!e) return f.minLevel <= 0 && !f.component; // a line that is not JSON: shown only unfiltered
  if (typeof e.level === 'number' && e.level < f.minLevel) return false;
  if (f.component && (e.component ?? e.name) !== f.component) return false;
  return true;
}

function value(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  if (v && typeof v === 'object' && 'message' in v && typeof (v as { message: unknown }).message === 'string') return JSON.stringify((v as { message: string }).message);
  return JSON.stringify(v) ?? String(v);
}

/** One log entry as a readable line. */
export function formatEntry(e: Entry): string {
  const t = typeof e.time === 'number' ? new Date(e.time).toISOString() : String(e.time ?? '-');
  const lvl = (typeof e.level === 'number' ? LEVEL_NAMES.get(e.level) ?? String(e.level) : String(e.level ?? '?')).toUpperCase();
  const comp = String(e.component ?? e.name ?? '-');
  const rest = Object.entries(e).filter(([k]) => !HEAD_FIELDS.has(k)).map(([k, v]) => `${k}=${value(v)}`);
  return `${t} ${lvl.padEnd(5)} ${comp}: ${String(e.msg ?? '')}${rest.length ? `  ${rest.join(' ')}` : ''}`;
}

function render(line: string, e: Entry | undefined, json: boolean): string | undefined {
  if (json) return e ? line : undefined;
  return e ? formatEntry(e) : line;
}

/**
 * The last `n` accepted complete lines before `end`, reading backwards in chunks; and the offset where
 * following should continue (after the last complete line).
 */
function lastLines(fd: number, size: number, n: number, f: Filter): { lines: Array<{ line: string; e?: Entry }>; end: number } {
  const found: Array<{ line: string; e?: Entry }> = [];
  // Only complete lines: a line still being written is left for --follow.
  let end = size;
  {
    const tail = Buffer.alloc(Math.min(size, CHUNK));
    let pos = size;
    while (pos > 0) {
      const len = Math.min(CHUNK, pos);
      readSync(fd, tail, 0, len, pos - len);
      const nl = tail.subarray(0, len).lastIndexOf(0x0a);
      if (nl >= 0) { end = pos - len + nl + 1; break; }
      pos -= len;
      if (pos === 0) end = 0;
    }
  }
  let pos = end;
  let carry = Buffer.alloc(0);
  while (pos > 0 && found.length < n) {
    const len = Math.min(CHUNK, pos);
    pos -= len;
    const chunk = Buffer.alloc(len);
    readSync(fd, chunk, 0, len, pos);
    const buf = carry.length ? Buffer.concat([chunk, carry]) : chunk;
    const parts = buf.toString('utf8').split('\n');
    // parts[0] may continue in the previous chunk (unless at the file's start); the last part is ''
    // (buf ends with \n or with the carry, which ends where a later part began).
    carry = pos > 0 ? Buffer.from(parts.shift()!, 'utf8') : Buffer.alloc(0);
    for (let i = parts.length - 1; i >= 0 && found.length < n; i--) {
      const line = parts[i]!;
      if (!line) continue;
      const e = parse(line);
      if (accepts(e, f)) found.push({ line, e });
    }
  }
  return { lines: found.reverse(), end };
}

function logFileOf(o: Opts): string {
  return o.file ?? daemonLogPath(loadBoardProfile(defaultBoardFile(o.board)));
}

async function follow(path: string, from: number, f: Filter, json: boolean, out: (s: string) => void): Promise<void> {
  let fd: number | undefined;
  let ino = 0;
  let pos = from;
  let partial = '';
  const note = (s: string) => process.stderr.write(`[${s}]\n`);
  const openAt = (offset: number): boolean => {
    try {
      fd = openSync(path, 'r');
    } catch {
      return false;
    }
    ino = fstatSync(fd).ino;
    pos = offset;
    partial = '';
    return true;
  };
  const drain = () => {
    if (fd === undefined) return;
    const size = fstatSync(fd).size;
    if (size < pos) {
      note(`${path} was truncated; reading it from the start`);
      pos = 0;
      partial = '';
    }
    const buf = Buffer.alloc(CHUNK);
    for (let guard = 0; pos < size && guard < 100000; guard++) {
      const n = readSync(fd, buf, 0, Math.min(CHUNK, size - pos), pos);
      if (n <= 0) break;
      pos += n;
      const parts = (partial + buf.subarray(0, n).toString('utf8')).split('\n');
      partial = parts.pop()!;
      if (partial.length > 1 << 20) partial = ''; // a runaway line without newline: drop it
      for (const line of parts) {
        if (!line) continue;
        const e = parse(line);
        if (!accepts(e, f)) continue;
        const r = render(line, e, json);
        if (r !== undefined) out(`${r}\n`);
      }
    }
  };
  if (!openAt(from)) note(`waiting for ${path} to appear`);
  await new Promise<void>((resolve) => {
    const stop = () => { clearInterval(timer); resolve(); };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    const timer = setInterval(() => {
      try {
        if (fd === undefined) {
          if (openAt(0)) note(`${path} appeared`);
          return;
        }
        drain();
        let cur: number | undefined;
        try { cur = statSync(path).ino; } catch { cur = undefined; }
        if (cur !== undefined && cur !== ino) {
          drain(); // whatever reached the old file before it was renamed
          closeSync(fd);
          fd = undefined;
          if (openAt(0)) note(`${path} was rotated; following the new file`);
        }
      } catch (e) {
        note(`${path}: ${(e as Error).message}`);
      }
    }, POLL_MS);
  });
  if (fd !== undefined) closeSync(fd);
}

export function registerLogsCommands(program: Command): void {
  program.command('logs')
    .description("the controller's log: readable lines, or the raw JSON lines with --json (one per line)")
    .option('--board <file>', 'board profile')
    .option('--file <path>', 'read this log file instead of the board\'s <storageDir>/understudyd.log')
    .option('-f, --follow', 'keep printing lines as they are written (Ctrl-C stops); survives truncation and rotation')
    .option('--level <level>', 'only this level and worse: trace, debug, info, warn, error, fatal')
    .option('--component <name>', 'only this component (ha, guest, endpoint, console, …)')
    .option('-n, --lines <n>', 'how many of the last lines to print first', '50')
    .action(action(async (o: Opts) => {
      const n = Number.parseInt(o.lines, 10);
      if (!Number.isInteger(n) || n < 0 || String(n) !== o.lines.trim()) throw new UsError('US_ERR_CONFIG', `--lines: expected a whole number, got "${o.lines}"`);
      const f: Filter = { minLevel: o.level === undefined ? 0 : parseLevel(o.level), component: o.component };
      const path = logFileOf(o);
      const json = o.json === true;
      const out = (s: string) => { process.stdout.write(s); };
      process.stdout.on('error', (e: NodeJS.ErrnoException) => { if (e.code === 'EPIPE') process.exit(0); });
      let from = 0;
      let fd: number | undefined;
      try {
        fd = openSync(path, 'r');
      } catch (e) {
        if (!o.follow) throw new UsError('US_ERR_NOT_FOUND', `no controller log at ${path} (has understudyd run on this board?): ${(e as Error).message}`);
      }
      if (fd !== undefined) {
        try {
          const r = lastLines(fd, fstatSync(fd).size, n, f);
          const text = r.lines.map((l) => render(l.line, l.e, json)).filter((s): s is string => s !== undefined);
          if (text.length) out(`${text.join('\n')}\n`);
          from = r.end;
        } finally {
          closeSync(fd);
        }
      }
      if (o.follow) await follow(path, from, f, json, out);
    }));
}
