/**
 * `understudy chassis crm <board> -- <command…>`: runs one of Pacemaker's tools (crm_mon,
 * crm_attribute, crm, crm_resource, cibadmin…) inside a board's Pacemaker namespaces, as an
 * operator logged in on that blade would. Finds the namespaces through state.json (the recorded
 * `unshare`, checked to be the same process, and its child, the namespace's pid 1) and enters all
 * five with nsenter. Starts only the one short-lived process it waits for.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { UsError } from '../../core/errors.js';
import { boardNames, chassisLayout, parseBoardName } from './layout.js';
import { DEFAULT_NAME } from './launcher.js';
import { namespaceInit, nsenterArgv } from './pacemaker.js';
import { carriesMarker, isSameProcess } from './procs.js';
import { chassisdAlive, readState } from './state.js';

/** The board's namespace pid 1, or a US_ERR_* saying why there is none. */
export function pacemakerInitOf(o: { name?: string; runDir?: string }, board: string): number {
  const L0 = chassisLayout(o.name ?? DEFAULT_NAME, o.runDir);
  const st = readState(L0.stateFile);
  if (!st || !chassisdAlive(st)) throw new UsError('US_ERR_NOT_RUNNING', `no chassis "${L0.name}" is running (${L0.stateFile})`);
  const name = parseBoardName(board, boardNames(st.boardCount ?? L0.boardNames.length));
  const rec = st.boards[name]?.pacemaker;
  if (!rec) throw new UsError('US_ERR_NOT_RUNNING', `${name} runs no Pacemaker (chassis up --manager pacemaker; or the board is off)`);
  if (!isSameProcess(rec) || !carriesMarker(rec.pid, st.runDir)) throw new UsError('US_ERR_NOT_RUNNING', `${name}'s corosync and pacemaker have ended (see ${chassisLayout(st.name, st.runDir, st.boardCount ?? 2).boards[name].dir}/pacemaker/namespace.log)`);
  const init = namespaceInit(rec.pid);
  if (!init) throw new UsError('US_ERR_NOT_RUNNING', `${name}'s Pacemaker namespace has no init process`);
  return init;
}

/** Runs `argv` inside the board's namespaces with this terminal; resolves to its exit status. */
export async function chassisCrm(o: { name?: string; runDir?: string }, board: string, argv: string[]): Promise<number> {
  if (argv.length === 0) throw new UsError('US_ERR_CONFIG', 'chassis crm: name the command to run, e.g. `chassis crm sim-a -- crm_mon -1`');
  const init = pacemakerInitOf(o, board);
  const child = spawn('nsenter', nsenterArgv(init, argv), { stdio: 'inherit' });
  return new Promise<number>((resolve, reject) => {
    child.once('error', (e) => reject(new UsError('US_ERR_NOT_FOUND', `nsenter: ${e.message}`)));
    child.once('exit', (code, sig) => resolve(code ?? 128 + (sig ? constants.signals[sig] : 0)));
  });
}
