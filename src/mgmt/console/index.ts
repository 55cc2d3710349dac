/** The serial console of a board (see serial-console.ts); the daemon composes it. */
export { SerialConsole, openSerialLine, DEFAULT_CONSOLE_POLICY, DEFAULT_CLI_ENTRY } from './serial-console.js';
export type { SerialConsoleOptions, ConsoleAuthEvent, ConsolePolicy, ConsoleLine, OpenLine } from './serial-console.js';
export { hashPassword, verifyPassword, parseHash, readPasswordFile, writePasswordFile, checkNewPassword, consolePasswordPath } from './password.js';
export { ESCAPE_HELP } from './escape.js';
