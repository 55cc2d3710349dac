/**
 * The `understudy` program (commander): every command and its options. Loaded by main.ts for every
 * command line but the plain `status` (fast-status.ts). Command modules are loaded on demand:
 * `understudy guest status` loads the guest commands, not the upgrade installer, the chassis or the
 * load generator. Help, an unknown command or no command at all loads every module, so help and
 * errors list everything.
 */
import { resolve } from 'node:path';
import { Command } from 'commander';
import { UsError } from '../core/errors.js';
import { defaultBoardFile, defaultGuestFile } from './locate.js';
import { modulesFor } from './command-modules.js';
import { action, print, table, type OutputOptions } from './output.js';

const program = new Command('understudy')
  .description('Understudy: keeps a legacy uniprocessor guest alive on a 2N pair of blades')
  .option('--json', 'print one JSON document instead of text')
  .showHelpAfterError();

for (const register of await Promise.all(modulesFor(process.argv.slice(2)).map((m) => m()))) register(program);

program.command('board')
  .description('this board')
  .command('info')
  .description('inventory of this board: cores, memory, NICs, temperatures')
  .action(action(async () => {
    const { readInventory } = await import('../hw/inventory.js');
    return readInventory();
  }, (inv) => [
    `host ${inv.hostname}: ${inv.os.distro} ${inv.os.release}, kernel ${inv.os.kernel}`,
    `cpu: ${inv.cpu.model}, ${inv.cpu.cores} cores (${inv.cpu.physicalCores} physical) @ ${inv.cpu.speedGHz} GHz`,
    `memory: ${inv.memory.totalMb} MB total, ${inv.memory.availableMb} MB available`,
    `temperature: ${inv.temperatures.mainC ?? 'no sensor'}${inv.temperatures.coresC.length ? ` (cores ${inv.temperatures.coresC.join(', ')})` : ''}`,
    table([['NIC', 'MAC', 'IPV4', 'STATE', 'SPEED'], ...inv.nics.map((n) => [n.name, n.mac, n.ipv4 || '-', n.operstate, n.speedMbps ?? '-'])]),
  ].join('\n')));

program.command('hlr')
  .description('run a stand-in external AUTH service (answers AUTHQ with AUTHR OK, or DENY for --deny)')
  .option('--listen <address:port>', 'UDP address to listen on', '127.0.0.1:17000')
  .option('--deny <regex>', 'deny subscribers matching this regular expression')
  .action(action(async (o: OutputOptions & { listen: string; deny?: string }) => {
    const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(o.listen);
    if (!m) throw new UsError('US_ERR_CONFIG', `--listen: expected <ipv4>:<port>, got "${o.listen}"`);
    let deny: RegExp | undefined;
    try { deny = o.deny ? new RegExp(o.deny) : undefined; } catch (e) { throw new UsError('US_ERR_CONFIG', `--deny: ${(e as Error).message}`); }
    const { Hlr } = await import('../sim/hlr.js');
    const hlr = new Hlr({ address: m[1]!, port: Number(m[2]), deny });
    await hlr.start();
    print(o, { listening: o.listen, deny: o.deny ?? null }, () => `AUTH service listening on ${o.listen}${deny ? `, denying ${deny}` : ''}; Ctrl-C to stop`);
    await new Promise<void>((r) => { process.once('SIGINT', r); process.once('SIGTERM', r); });
    hlr.close();
  }));

program.command('demo')
  .description('the main job: a replicated pair on the simulated chassis, a load, a failure, the takeover, messages lost (0)')
  .option('--name <n>', 'chassis name', 'us')
  .option('--run-dir <dir>', 'chassis run directory')
  .option('--how <how>', 'the failure: kill (SIGKILL the primary controller), power (power off), hang (SIGSTOP)', 'kill')
  .option('--rate <n>', 'client requests per second', '200')
  .option('--seconds <s>', 'load duration', '12')
  .option('--keep', 'leave the chassis running afterwards')
  .option('--upgrade-guest [descriptor]', 'afterwards, upgrade the guest application under the same load (default guests/dx-legacy-v2.json)')
  .option('--poison [subscriber]', 'a poison input instead: the guest\'s poison build, under load one request that crashes both copies (default subscriber crashDemo; hang… hangs them), the recovery, the quarantine')
  .option('--standalone', 'one board only: boot the guest pinned and show it answering (no pair)')
  .option('--board <file>', 'board profile (with --standalone)', defaultBoardFile())
  .option('--guest <file>', 'guest descriptor (with --standalone)', defaultGuestFile())
  .action(action(async (o: OutputOptions & { name: string; runDir?: string; how: string; rate: string; seconds: string; keep?: boolean; standalone?: boolean; board: string; guest: string; upgradeGuest?: string | boolean; poison?: string | boolean }) => {
    if (o.poison) {
      const sub = typeof o.poison === 'string' ? o.poison : undefined;
      if (sub !== undefined && !/^(crash|hang)[A-Za-z0-9_.+-]{0,27}$/.test(sub)) throw new UsError('US_ERR_CONFIG', `--poison: a subscriber name starting with crash or hang (at most 32 characters), not "${sub}"`);
      const { runPoisonDemo } = await import('./demo-poison.js');
      const r = await runPoisonDemo({ name: o.name, runDir: o.runDir, rate: Number(o.rate), seconds: Number(o.seconds), keep: o.keep, json: o.json, poison: sub });
      if (o.json) print(o, r, () => '');
      if ((r.lost as number) > 0 || !/ ERR POISON q\d+$/.test(String(r.answer))) process.exitCode = 3;
      return;
    }
    if (o.standalone) {
      const { runDemo } = await import('./demo.js');
      const r = await runDemo(o);
      if (o.json) print(o, r, () => '');
      return;
    }
    if (!['kill', 'power', 'hang'].includes(o.how)) throw new UsError('US_ERR_CONFIG', `--how: kill, power or hang, not "${o.how}"`);
    const { runPairDemo } = await import('./demo-pair.js');
    const upgradeGuest = typeof o.upgradeGuest === 'string' ? resolve(o.upgradeGuest) : o.upgradeGuest === true ? true : undefined;
    const r = await runPairDemo({ name: o.name, runDir: o.runDir, how: o.how as 'kill', rate: Number(o.rate), seconds: Number(o.seconds), keep: o.keep, json: o.json, upgradeGuest });
    if (o.json) print(o, r, () => '');
    if ((r.lost as number) > 0 || ((r.upgrade as { lost?: number } | undefined)?.lost ?? 0) > 0) process.exitCode = 3;
  }));

await program.parseAsync();
