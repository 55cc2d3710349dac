/** The AUTH stand-in (`understudy hlr`, the one the chassis runs) in a peer set-up's service network. */
import { AUTH_SERVICE, CLI_ENTRY } from '../chassis/layout.js';
import type { ProcessGroups } from './procs.js';

export async function startAuth(procs: ProcessGroups, serviceNetns: string, log: string): Promise<void> {
  await procs.spawnIn('auth', serviceNetns, process.execPath, [CLI_ENTRY, 'hlr', '--listen', `${AUTH_SERVICE.address}:${AUTH_SERVICE.port}`], log);
}
