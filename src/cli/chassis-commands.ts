/**
 * `understudy chassis …`: run and drive the simulated chassis (two boards in network namespaces,
 * their partner links, watchdogs and power controller). Every command takes --name (default us)
 * and --run-dir (default /run/understudy/chassis-<name>); `chassis run` is the internal entry of
 * chassisd, started by `chassis up`.
 */
import { Command, Option } from 'commander';
import { UsError } from '../core/errors.js';
import { runChassisd, type ChassisStatus, type BoardView, type Answer } from '../sim/chassis/chassisd.js';
import { chassisCall, chassisDown, chassisUp, DEFAULT_BAUD, DEFAULT_NAME, type DownResult } from '../sim/chassis/launcher.js';
import { boardNames, chassisLayout, parseBoardName, type ChassisBoard } from '../sim/chassis/layout.js';
import { readState } from '../sim/chassis/state.js';
import { chassisCrm } from '../sim/chassis/crm.js';
import type { ChassisManager } from '../sim/chassis/pacemaker.js';
import { SerialPort } from 'serialport';
import { attachTerminal } from './guest-commands.js';
import { action, table, type OutputOptions } from './output.js';

type Where = OutputOptions & { name: string; runDir?: string };

function withWhere(cmd: Command): Command {
  return cmd
    .option('--name <name>', 'chassis name: namespaces <name>-a and <name>-b', DEFAULT_NAME)
    .option('--run-dir <dir>', 'run directory (default /run/understudy/chassis-<name>)');
}

function intArg(what: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n)) throw new UsError('US_ERR_CONFIG', `${what}: expected an integer, got "${v}"`);
    return n;
  };
}

function answerText(a: Answer, pick: (r: any) => string): string {
  if (!a.ok) return 'unavailable';
  try {
    return pick(a.result);
  } catch {
    return JSON.stringify(a.result).slice(0, 60);
  }
}

function controllerText(b: BoardView): string {
  if (b.power === 'off') return 'off';
  if (b.resetting) return 'resetting';
  if (!b.controller) return 'none';
  return `${b.controller.pid} ${b.controller.state}`;
}

function watchdogText(b: BoardView): string {
  const w = b.watchdog;
  return `${w.armed ? 'armed' : 'disarmed'}, ${w.kicks} kicks${w.fired ? `, fired ${w.fired}` : ''}`;
}

function counters(c: ChassisStatus['links']['serial']['aToB']): string {
  return `${c.relayed} B relayed${c.droppedCut || c.droppedOverrun ? ` (${c.droppedCut} dropped cut, ${c.droppedOverrun} overrun)` : ''}${c.queued ? `, ${c.queued} queued` : ''}`;
}

export function formatChassisStatus(s: ChassisStatus): string {
  const c = s.chassis;
  const e = s.links.ethernet;
  const end = (b: ChassisBoard) => (e.ends[b] ? `${b} plink ${e.ends[b]!.adminUp ? 'up' : 'down'}/${e.ends[b]!.operstate}` : `${b} plink missing`);
  const lines = [
    `chassis ${c.name} (${c.runDir}): chassisd pid ${c.pid}, up ${c.uptimeS} s, guest ${c.guest}${c.guests ? ` (${c.guests} guests)` : ''}${c.boards ? `, ${c.boards} boards on the backplane ${c.backplaneNetns}` : ''}`,
    table([
      ['BOARD', 'NETNS', 'POWER', 'CONTROLLER', 'ANSWERS', 'ROLE', 'BOOTS', 'RESETS', 'LAST RESET', 'WATCHDOG'],
      ...s.boards.map((b) => [
        b.board, b.netns, b.power, controllerText(b), b.answers ? 'yes' : 'no',
        answerText(b.role, (r) => String(r.role)), b.boots, b.resets.count,
        b.resets.last ? `${b.resets.last.cause} ${b.resets.last.at.slice(11, 19)}` : '-', watchdogText(b),
      ]),
    ]),
  ];
  for (const b of s.boards) {
    if (b.lastExit && !b.lastExit.expected) lines.push(`${b.board}: controller ${b.lastExit.pid} exited on its own (${b.lastExit.signal ?? `code ${b.lastExit.code}`}) at ${b.lastExit.at}; log ${b.log}`);
    for (const g of b.guests ?? []) lines.push(`${b.board} guest ${g.guest} (${g.serviceAddress}): ${answerText(g.role, (r) => String(r.role))}`);
    if (b.pacemaker) lines.push(`${b.board} corosync and pacemaker: ${b.pacemaker.alive ? `running (unshare pid ${b.pacemaker.pid}, namespace pid 1 ${b.pacemaker.init ?? '?'})` : 'GONE'}; \`understudy chassis crm ${b.board} -- crm_mon -1\``);
    lines.push(`${b.board} sees its partner links: ${answerText(b.linkStatus, (r) => (r.links as Array<{ name: string; up: boolean }>).map((l) => `${l.name} ${l.up ? 'up' : 'down'}`).join(', ') + ((r.alarms as string[])?.length ? `; alarms: ${(r.alarms as string[]).join('; ')}` : ''))}`);
  }
  lines.push(`ethernet link: ${e.state} (${(Object.keys(e.ends) as ChassisBoard[]).map(end).join(', ')})`);
  lines.push(`serial link: ${s.links.serial.state}, ${s.links.serial.baud} baud; a→b ${counters(s.links.serial.aToB)}; b→a ${counters(s.links.serial.bToA)}`);
  const pc = s.powerController;
  for (const b of s.bmcs ?? []) lines.push(`BMC of ${b.board}: ipmi_sim pid ${b.pid} ${b.alive ? 'running' : 'GONE'} at ${b.address}:${b.port} in ${b.netns} (fencing of ${b.board} goes through it)`);
  lines.push(`power controller: ${pc.socket}, ${pc.broken ? 'BROKEN (OFF/RESET answer ERR BROKEN)' : 'working'}, ${pc.requests} requests${pc.recent.length ? `; last: ${pc.recent[pc.recent.length - 1]!.request} → ${pc.recent[pc.recent.length - 1]!.reply}` : ''}`);
  const deadHelpers = s.helpers.filter((h) => !h.alive);
  lines.push(deadHelpers.length ? `DEAD helpers: ${deadHelpers.map((h) => `${h.role} (pid ${h.pid})`).join(', ')}` : `helpers: ${s.helpers.length} running (socat, AUTH service${(s.bmcs ?? []).length ? ', BMCs' : ''})`);
  return lines.join('\n');
}

function downText(r: DownResult): string {
  if (!r.cleanup) return `chassis ${r.name}: nothing to stop (no state in ${r.runDir})`;
  const what = [...r.cleanup.killed, ...r.cleanup.removed];
  return `chassis ${r.name}: ${r.wasRunning ? (r.orderly ? 'shut down' : 'killed (chassisd did not shut down in time)') : 'cleaned up after a crashed run'}`
    + (what.length ? `; also ended/removed: ${what.join(', ')}` : '');
}

/** Runs one chassis request and prints the reply. */
function simple(cmd: Command, request: (o: Where, ...words: string[]) => [string, Record<string, unknown>], human: (r: any) => string): Command {
  return cmd.action(action(async (o: Where, ...words: string[]) => {
    const [command, args] = request(o, ...words);
    return chassisCall(o, command, args);
  }, (r) => human(r)));
}

export function registerChassisCommands(program: Command): void {
  const chassis = program.command('chassis').description('the simulated chassis: two boards on this machine, with partner links, watchdogs and a power controller (root)');

  withWhere(chassis.command('console <board>'))
    .description("attach this terminal to a board's serial console (as a field engineer's terminal would be); Ctrl-] detaches")
    .action(action(async (o: Where, board: string) => {
      const L = chassisLayout(o.name, o.runDir);
      const names = boardNames(readState(L.stateFile)?.boardCount ?? L.boardNames.length);
      const dev = chassisLayout(o.name, o.runDir, names.length).boards[parseBoardName(board, names)].consoleUser;
      if (!process.stdin.isTTY) throw new UsError('US_ERR_CONFIG', `chassis console needs a terminal; the console's tty is ${dev} (screen/minicom/picocom at 115200 8N1)`);
      const port = new SerialPort({ path: dev, baudRate: 115200, autoOpen: false });
      await new Promise<void>((res, rej) => port.open((e) => (e ? rej(new UsError('US_ERR_NOT_FOUND', `console of ${board}: ${e.message}`)) : res())));
      await attachTerminal(port, `the serial console of ${parseBoardName(board)} (${dev})`);
    }));

  withWhere(chassis.command('up'))
    .description('build the chassis and power both boards on; waits until both controllers answer')
    .addOption(new Option('--guest <mode>', 'none: boards without a guest; primary: the primary hosts the reference guest').choices(['none', 'primary']).default('none'))
    .option('--guest-file <descriptor>', 'with --guest primary: the guest descriptor (default guests/dx-legacy.json; guests/dx-legacy-poison.json has poison triggers)')
    .option('--baud <n>', 'serial partner link rate', intArg('--baud'), DEFAULT_BAUD)
    .addOption(new Option('--fencing <how>', 'simulated: the boards fence through the power controller; ipmi: through ipmitool to a simulated BMC per board (ipmi_sim) in front of it').choices(['simulated', 'ipmi']).default('simulated'))
    .option('--timeout <ms>', 'bound on the wait for the controllers', intArg('--timeout'))
    .option('--boards <n>', 'how many boards (2-8): sim-a and sim-b are the pair, sim-c… spares, all on one backplane bridge', intArg('--boards'), 2)
    .addOption(new Option('--manager <who>', 'pacemaker: every board also runs corosync and pacemaker in its own namespaces (docs/pacemaker.md)').choices(['understudy', 'pacemaker']).default('understudy'))
    .option('--stonith', 'with --manager pacemaker: configure the fence device stonith:fence_understudy_chassis on the power controller and enable fencing')
    .option('--guests <n>', 'with --manager pacemaker --guest primary: how many guests share the shelf (1 to boards-1; guest k>1 serves first on the (k+1)-th board, backed up on sim-b, on 192.0.2.(9+k))', intArg('--guests'), 1)
    .action(action((o: Where & { guest: 'none' | 'primary'; guestFile?: string; baud: number; fencing: 'simulated' | 'ipmi'; timeout?: number; boards: number; manager: ChassisManager; stonith?: boolean; guests: number }) => chassisUp({ name: o.name, runDir: o.runDir, guest: o.guest, guestFile: o.guestFile, baud: o.baud, fencing: o.fencing, timeoutMs: o.timeout, boards: o.boards, manager: o.manager, stonith: o.stonith, guests: o.guests }),
      (r) => [
        r.recovered ? `cleaned up after a crashed run: ${[...r.recovered.killed, ...r.recovered.removed].join(', ') || 'nothing left'}` : '',
        formatChassisStatus(r.status),
      ].filter(Boolean).join('\n')));

  withWhere(chassis.command('status'))
    .description('boards (power, controller, role, resets, watchdog), links and the power controller')
    .action(action(async (o: Where) => (await chassisCall(o, 'status')) as ChassisStatus, (s) => formatChassisStatus(s)));

  simple(withWhere(chassis.command('fail <board>'))
    .description('inject a board failure: kill (SIGKILL its controller), hang (SIGSTOP it), power (power it off)')
    .addOption(new Option('--how <how>', 'how the board fails').choices(['kill', 'hang', 'power']).makeOptionMandatory()),
  (o, board) => ['fail', { board: parseBoardName(board!), how: (o as Where & { how: string }).how }],
  (r) => `${r.board}: ${r.how === 'power' ? 'powered off' : `controller ${r.pid ?? '(none)'} ${r.how === 'kill' ? 'killed' : 'hung (SIGSTOP)'}`}`);

  simple(withWhere(chassis.command('power <board> <state>'))
    .description('switch a board on or off (off kills its process group)'),
  (_o, board, state) => {
    if (state !== 'on' && state !== 'off') throw new UsError('US_ERR_CONFIG', `power: on or off, got "${state}"`);
    return ['power', { board: parseBoardName(board!), state }];
  },
  (r) => `${r.board}: power ${r.power}`);

  simple(withWhere(chassis.command('power-controller <action>'))
    .description('break: fencing requests (OFF, RESET) fail with ERR BROKEN; fix: they work again'),
  (_o, action) => {
    if (action !== 'break' && action !== 'fix') throw new UsError('US_ERR_CONFIG', `power-controller: break or fix, got "${action}"`);
    return ['power-controller', { action }];
  },
  (r) => `power controller ${r.broken ? 'broken' : 'working'}`);

  simple(withWhere(chassis.command('cut <link>'))
    .description('cut a partner link: ethernet (a board\'s plink down: it is off the backplane, its corosync too) or serial (the relay drops bytes)')
    .option('--board <board>', 'ethernet: whose plink goes down (default sim-a)'),
  (o, link) => ['cut', { link, ...((o as Where & { board?: string }).board ? { board: (o as Where & { board?: string }).board } : {}) }],
  (r) => `${r.link} link ${r.state}${r.board ? ` (${r.board})` : ''}`);
  simple(withWhere(chassis.command('heal <link>'))
    .description('heal a partner link: ethernet (every board\'s plink up) or serial'),
  (_o, link) => ['heal', { link }],
  (r) => `${r.link} link ${r.state}`);

  withWhere(chassis.command('crm <board> <command...>'))
    .description("run one of Pacemaker's tools inside a board's namespaces (chassis up --manager pacemaker), e.g. `chassis crm sim-a -- crm_mon -1`; exits with its status")
    .action(action(async (o: Where, board: string, argv: string[]) => {
      // The tool's own output goes straight to this terminal; its exit status is ours.
      const code = await chassisCrm(o, board, argv);
      if (code !== 0) process.exitCode = code;
    }));

  withWhere(chassis.command('down'))
    .description('stop both boards and remove everything the chassis made (also after a crash)')
    .option('--purge', 'also delete the run directory (logs, stores, profiles)')
    .action(action((o: Where & { purge?: boolean }) => chassisDown({ name: o.name, runDir: o.runDir, purge: o.purge }), (r) => downText(r)));

  withWhere(chassis.command('run', { hidden: true }))
    .description('internal: the chassis supervisor, started detached by `chassis up`')
    .requiredOption('--baud <n>', 'serial partner link rate', intArg('--baud'))
    .addOption(new Option('--guest <mode>').choices(['none', 'primary']).default('none'))
    .addOption(new Option('--fencing <how>').choices(['simulated', 'ipmi']).default('simulated'))
    .option('--guest-file <descriptor>')
    .option('--boards <n>', 'how many boards', intArg('--boards'), 2)
    .addOption(new Option('--manager <who>').choices(['understudy', 'pacemaker']).default('understudy'))
    .option('--guests <n>', 'how many guests', intArg('--guests'), 1)
    .action(async (_o, cmd: Command) => {
      const o = cmd.optsWithGlobals<Where & { guest: 'none' | 'primary'; guestFile?: string; baud: number; fencing: 'simulated' | 'ipmi'; boards: number; manager: ChassisManager; guests: number }>();
      await runChassisd({ name: o.name, runDir: o.runDir, baud: o.baud, guest: o.guest, guestFile: o.guestFile, fencing: o.fencing, boards: o.boards, manager: o.manager, guests: o.guests });
    });
}
