/**
 * Which module defines which top-level CLI command, so main.ts loads only the one a command line
 * needs. Each entry is a dynamic import: nothing here loads a command module by itself.
 */
import type { Command } from 'commander';

export type Register = (program: Command) => void;
export type CommandModule = () => Promise<Register>;

const guest: CommandModule = () => import('./guest-commands.js').then((m) => m.registerGuestCommands);
const logs: CommandModule = () => import('./logs-commands.js').then((m) => m.registerLogsCommands);
const consoleCmds: CommandModule = () => import('./console-commands.js').then((m) => m.registerConsoleCommands);
const upgrade: CommandModule = () => import('./upgrade-commands.js').then((m) => m.registerUpgradeCommands);
const chassis: CommandModule = () => import('./chassis-commands.js').then((m) => m.registerChassisCommands);
const ha: CommandModule = () => import('./ha-commands.js').then((m) => m.registerHaCommands);
const load: CommandModule = () => import('./load-commands.js').then((m) => m.registerLoadCommands);
const replication: CommandModule = () => import('./replication-commands.js').then((m) => m.registerReplicationCommands);
const alarms: CommandModule = () => import('./alarms-commands.js').then((m) => m.registerAlarmsCommands);
const quarantine: CommandModule = () => import('./quarantine-commands.js').then((m) => m.registerQuarantineCommands);

/** Every command module, in help order. */
export const ALL_MODULES: readonly CommandModule[] = [guest, logs, consoleCmds, upgrade, chassis, ha, load, replication, alarms, quarantine];

/** The module that registers each top-level command. */
export const MODULE_OF: Readonly<Record<string, CommandModule>> = {
  guest, logs, console: consoleCmds, upgrade, chassis, ha, role: ha, link: ha, events: ha, 'start-alone': ha, partner: ha, load,
  status: replication, clone: replication, checkpoint: replication, switchover: replication, alarms, quarantine,
};

/** Defined in program.ts itself (their heavy parts are imported inside their actions). */
export const BUILTIN: ReadonlySet<string> = new Set(['board', 'hlr', 'demo']);

/**
 * The modules a command line needs: the command word's own (the first argument that is not an
 * option; the only global option, --json, takes no value), none for a built-in command, and every
 * module for help, an unknown command or none (so help and errors list everything).
 */
export function modulesFor(args: readonly string[]): readonly CommandModule[] {
  const word = args.find((a) => !a.startsWith('-'));
  if (word && Object.hasOwn(MODULE_OF, word)) return [MODULE_OF[word]!];
  if (word && BUILTIN.has(word)) return [];
  return ALL_MODULES;
}
