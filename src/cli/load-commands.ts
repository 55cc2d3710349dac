/**
 * `understudy load`: the load generator (src/sim/load.ts) as a command, for the main job, the tests
 * and the benchmarks. Prints one JSON line per second while running and the result at the end.
 */
import type { Command } from 'commander';
import { UsError, asUsError } from '../core/errors.js';
import { LoadGenerator, parseMix } from '../sim/load.js';

function endpoint(s: string, what: string): { address: string; port: number } {
  const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(s);
  if (!m) throw new UsError('US_ERR_CONFIG', `${what}: expected <ipv4>:<port>, got "${s}"`);
  return { address: m[1]!, port: Number(m[2]) };
}

function pool(s: string): { tag: string; count: number } {
  const m = /^([A-Za-z0-9]+):(\d+)$/.exec(s);
  if (!m) throw new UsError('US_ERR_CONFIG', `--pool: expected <tag>:<count>, got "${s}"`);
  return { tag: m[1]!, count: Number(m[2]) };
}

export function registerLoadCommands(program: Command): void {
  program.command('load')
    .description('load generator: numbered REG/CALL/END requests with retries, then a check that nothing acknowledged was lost')
    .requiredOption('--target <address:port>', 'the service endpoint')
    .option('--bind <address>', 'local address to send from', '0.0.0.0')
    .option('--rate <n>', 'requests per second (0 = as fast as the window allows)', '200')
    .option('--window <n>', 'requests in flight at most', '8')
    .option('--duration <ms>', 'how long to send', '10000')
    .option('--tag <t>', 'prefix of subscriber names and ids', 'L')
    .option('--retry <ms>', 'retry a request (same id) after this long without a reply', '100')
    .option('--give-up <ms>', 'fail when a request has had no reply for this long (default: 2000 retries)')
    .option('--reg-every <n>', 'mix: a registration every n-th step, a call (CALL + END) on the others (default: 3 registrations, 1 call in 4)')
    .option('--mix <weights>', 'mix as weights of step kinds, e.g. reg=1,get=59,call=40: REG of a new subscriber, GET, CALL + END between idle subscribers (replaces --reg-every)')
    .option('--pool <tag:count>', 'with --mix: subscribers <tag>0..<tag>(count-1) for GETs and calls, registered first if the guest does not know them (default: <tag>p, 2 × window + 2)')
    .option('--verify', 'afterwards, check every acknowledged registration and re-send a sample of ids')
    .option('--check <tag:count>', 'send nothing: check that subscribers <tag>0..<tag>(count-1) are all registered')
    .action(async (_o, cmd: Command) => {
      const o = cmd.optsWithGlobals<{ target: string; bind: string; rate: string; window: string; duration: string; tag: string; retry: string; giveUp?: string; regEvery?: string; mix?: string; pool?: string; verify?: boolean; check?: string; json?: boolean }>();
      let gen: LoadGenerator | undefined;
      try {
        const num = (v: string, what: string, min: number) => {
          const n = Number(v);
          if (!Number.isFinite(n) || n < min) throw new UsError('US_ERR_CONFIG', `--${what}: expected a number ≥ ${min}, got "${v}"`);
          return n;
        };
        gen = new LoadGenerator({
          target: endpoint(o.target, '--target'), bind: o.bind, rate: num(o.rate, 'rate', 0), window: num(o.window, 'window', 1),
          durationMs: num(o.duration, 'duration', 1), tag: o.tag, retryMs: num(o.retry, 'retry', 5),
          giveUpMs: o.giveUp === undefined ? undefined : num(o.giveUp, 'give-up', 1),
          regEvery: o.regEvery === undefined ? undefined : num(o.regEvery, 'reg-every', 1),
          mix: o.mix === undefined ? undefined : parseMix(o.mix),
          pool: o.pool === undefined ? undefined : pool(o.pool),
          onProgress: (p) => process.stdout.write(`${JSON.stringify({ progress: { ...p, gaps: p.gaps.length } })}\n`),
        });
        if (o.check) {
          const m = /^([A-Za-z0-9]+):(\d+)$/.exec(o.check);
          if (!m) throw new UsError('US_ERR_CONFIG', `--check: expected <tag>:<count>, got "${o.check}"`);
          const c = await gen.check(m[1]!, Number(m[2]));
          gen.close();
          process.stdout.write(`${JSON.stringify({ check: c })}\n`);
          if (c.missing.length) process.exitCode = 3;
          return;
        }
        const result = await gen.run();
        if (o.verify) result.verify = await gen.verify();
        gen.close();
        process.stdout.write(`${JSON.stringify({ result })}\n`);
        if (result.verify && (result.verify.missing.length || result.verify.retriedDifferent.length || result.verify.callIdsReused.length)) process.exitCode = 3;
      } catch (e) {
        // One line, like the progress lines, so a parent reading lines gets the reason.
        process.stdout.write(`${JSON.stringify({ error: asUsError(e).toJSON() })}\n`);
        process.exitCode = 1;
      } finally {
        gen?.close(); // an open socket would keep the process (and whoever waits for it) alive
      }
    });
}
