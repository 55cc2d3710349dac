/**
 * Logging: pino JSON lines, or human-readable lines when writing to a terminal. Every component
 * gets a child logger named after itself (`component` field) so an operator can filter.
 */
import { createWriteStream } from 'node:fs';
import { pino, multistream, type Logger, type StreamEntry } from 'pino';
import pretty from 'pino-pretty';

export type { Logger } from 'pino';

export interface LogOptions {
  /** Minimum level written: trace, debug, info, warn, error, fatal. Default: env UNDERSTUDY_LOG or info. */
  level?: string;
  /** Also append JSON lines to this file (the daemon's log). */
  file?: string;
  /** Write to stderr at all (default true). */
  stderr?: boolean;
}

export function createLogger(name: string, opts: LogOptions = {}): Logger {
  const level = opts.level ?? process.env.UNDERSTUDY_LOG ?? 'info';
  const streams: StreamEntry[] = [];
  if (opts.stderr !== false) {
    const human = process.stderr.isTTY === true;
    streams.push({
      level: level as pino.Level,
      stream: human
        ? pretty({ destination: 2, colorize: true, sync: true, translateTime: 'HH:MM:ss.l', ignore: 'pid,hostname' })
        : pino.destination({ fd: 2, sync: true }),
    });
  }
  if (opts.file) streams.push({ level: level as pino.Level, stream: createWriteStream(opts.file, { flags: 'a', mode: 0o600 }) });
  return pino({ name, level, base: { pid: process.pid } }, multistream(streams));
}

/** A logger that writes nothing, for unit tests and library callers that bring none. */
export const silentLogger: Logger = pino({ level: 'silent' });
