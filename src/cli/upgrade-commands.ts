/**
 * `understudy upgrade …`: make keys and packages, install a package into the inactive slot, show the
 * slots, commit or abandon a trial, take a package over a serial line (YMODEM), and run the simulated
 * board's bootloader step. The logic is in src/upgrade/; this file parses options and prints.
 * Progress goes to stderr (a bar on a terminal, percentage lines otherwise), results to stdout.
 */
import { existsSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { loadBoardProfile, type BoardProfile } from '../config/board-profile.js';
import { UsError } from '../core/errors.js';
import { abandonTrial, markGood, readBootState, simulateBoot } from '../upgrade/bootflow.js';
import { upgradeSetupFor, type UpgradeSetup } from '../upgrade/board-setup.js';
import { buildPackage } from '../upgrade/builder.js';
import { installPackage, type InstallResult } from '../upgrade/installer.js';
import { generateKeys, loadPrivateKey, loadTrustedKeys } from '../upgrade/keys.js';
import { SLOT_NAMES, type SlotName } from '../upgrade/slots.js';
import type { RollingRecord } from '../upgrade/rolling.js';
import { controlSocketOf, defaultBoardFile } from './locate.js';
import { action, print, table, type OutputOptions } from './output.js';

type Opts = OutputOptions & { board?: string };

function setupOf(o: Opts): UpgradeSetup {
  return upgradeSetupFor(loadBoardProfile(defaultBoardFile(o.board)));
}

/** Reports progress on stderr: a bar on a terminal, a line per 10 % otherwise. */
export function progressReporter(label: string): { update(done: number, total: number, phase?: string): void; stop(): void } {
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar({
      stream: process.stderr,
      format: `${label}{phase} [{bar}] {percentage}% | {valueMb}/{totalMb} MB`,
      hideCursor: true,
      clearOnComplete: false,
    }, cliProgress.Presets.shades_classic);
    let started = false;
    return {
      update(done, total, phase = '') {
        const payload = { phase: phase ? ` ${phase}` : '', valueMb: (done / 1e6).toFixed(1), totalMb: (total / 1e6).toFixed(1) };
        if (!started) { bar.start(Math.max(total, 1), done, payload); started = true; }
        bar.setTotal(Math.max(total, 1));
        bar.update(done, payload);
      },
      stop() { if (started) bar.stop(); },
    };
  }
  let last = '';
  return {
    update(done, total, phase = '') {
      const pct = total > 0 ? Math.floor((done / total) * 10) * 10 : 100;
      const key = `${phase} ${pct}`;
      if (key === last) return;
      last = key;
      process.stderr.write(`${label}${phase ? ` ${phase}` : ''}: ${pct}%\n`);
    },
    stop() {},
  };
}

function short(h?: string): string {
  return h ? h.slice(0, 12) : '-';
}

function formatInstall(r: InstallResult): string {
  const lines = [
    `installed ${r.version} into slot ${r.slot} (${r.files} files, ${(r.bytes / 1e6).toFixed(1)} MB, ${r.durationMs} ms, package sha256 ${r.packageSha256})`,
  ];
  if (r.forced) lines.push('  (forced past the version checks)');
  if (r.firstInstall) lines.push(`first install on this board: slot ${r.slot} is committed as the good slot`);
  else lines.push(`armed a one-shot trial of slot ${r.slot} with ${r.bootAttempts} boot attempts; after it boots and is healthy, run \`understudy upgrade mark-good\` (otherwise the board falls back to ${r.previousVersion ?? 'the current slot'})`);
  return lines.join('\n');
}

async function installWithProgress(s: UpgradeSetup, file: string, force: boolean): Promise<InstallResult> {
  const progress = progressReporter('install');
  try {
    return await installPackage({
      packagePath: file,
      family: s.family,
      store: s.store,
      env: s.env,
      trustedKeys: loadTrustedKeys(s.keysDir),
      bootAttempts: s.bootAttempts,
      reserveBytes: s.reserveBytes,
      force,
      onProgress: (p) => progress.update(p.done, p.total),
    });
  } finally {
    progress.stop();
  }
}

export interface UpgradeStatus {
  board: string;
  family: string;
  slotsDir: string;
  bootEnv: string;
  running: SlotName | null;
  good: SlotName | null;
  trial: SlotName | null;
  triesLeft: number;
  slots: Array<{
    slot: SlotName;
    version: string | null;
    installedAt: string | null;
    packageSha256: string | null;
    keyId: string | null;
    problem: string | null;
    roles: string[];
    verified?: { ok: boolean; problems: string[] };
  }>;
  trustedKeys: Array<{ keyId: string; file: string }>;
  /** Role in the 2N pair (PRIMARY, BACKUP, STANDALONE…) as its controller reports it; null when no controller answers. */
  haRole: string | null;
}

/** The board's role in the pair, asked of its controller; null when none answers. */
async function haRoleOf(board: BoardProfile): Promise<string | null> {
  try {
    const { callControl } = await import('../mgmt/ipc.js');
    const { controlSocketPath } = await import('../mgmt/paths.js');
    if (!existsSync(controlSocketPath(board))) return null;
    const r = (await callControl(controlSocketPath(board), 'ping', {}, 1500)) as { role?: string };
    return r.role ?? null;
  } catch {
    return null;
  }
}

async function readStatus(s: UpgradeSetup, verify: boolean, board: BoardProfile): Promise<UpgradeStatus> {
  const st = await readBootState(s.env);
  const running = s.store.bootedSlot() ?? null;
  const slots = SLOT_NAMES.map((slot) => {
    const { record, problem } = s.store.readRecord(slot);
    const roles: string[] = [];
    if (running === slot) roles.push('running');
    if (st.good === slot) roles.push('good');
    if (st.trial === slot) roles.push(`trial (${st.triesLeft} attempts left)`);
    return {
      slot,
      version: record?.version ?? null,
      installedAt: record?.installedAt ?? null,
      packageSha256: record?.packageSha256 ?? null,
      keyId: record?.keyId ?? null,
      problem: problem ?? null,
      roles,
      ...(verify ? { verified: s.store.verify(slot) } : {}),
    };
  });
  let trustedKeys: UpgradeStatus['trustedKeys'] = [];
  try {
    trustedKeys = [...loadTrustedKeys(s.keysDir)].map(([keyId, k]) => ({ keyId, file: k.file }));
  } catch {
    trustedKeys = [];
  }
  return {
    board: s.board,
    family: s.family,
    slotsDir: s.slotsDir,
    bootEnv: s.env.description,
    running,
    good: st.good ?? null,
    trial: st.trial ?? null,
    triesLeft: st.triesLeft,
    slots,
    trustedKeys,
    haRole: await haRoleOf(board),
  };
}

function formatStatus(x: UpgradeStatus): string {
  const lines = [
    `board ${x.board} (family ${x.family}): slots in ${x.slotsDir}, ${x.bootEnv}`,
    `running: ${x.running ?? 'unknown (no understudy.slot= on the kernel command line)'}; good: ${x.good ?? 'unset'}; trial: ${x.trial ? `${x.trial}, ${x.triesLeft} attempts left` : 'none'}`,
    table([
      ['SLOT', 'VERSION', 'STATE', 'INSTALLED', 'PACKAGE', ...(x.slots[0]?.verified ? ['CONTENT'] : [])],
      ...x.slots.map((s) => [
        s.slot,
        s.version ?? '-',
        s.roles.join(', ') || (s.version ? 'inactive' : s.problem ?? 'empty'),
        s.installedAt ?? '-',
        short(s.packageSha256 ?? undefined),
        ...(s.verified ? [s.verified.ok ? 'verified' : `BAD: ${s.verified.problems[0]}`] : []),
      ]),
    ]),
    `trusted keys: ${x.trustedKeys.length ? x.trustedKeys.map((k) => `${k.keyId} (${basename(k.file)})`).join(', ') : 'none'}`,
    `HA role: ${x.haRole ?? 'unknown (no controller answers on this board)'}`,
  ];
  return lines.join('\n');
}

export function registerUpgradeCommands(program: Command): void {
  const up = program.command('upgrade').description('field upgrades: signed packages, A/B slots with rollback, upload over a serial line');

  up.command('keygen')
    .description('make an Ed25519 key pair for signing packages (the .pub.pem goes into each board\'s keys directory)')
    .requiredOption('--out <dir>', 'directory for the key files')
    .action(action((o: Opts & { out: string }) => generateKeys(o.out), (k) => [
      `key ${k.keyId}`,
      `  private: ${k.privateKeyFile} (keep it off the blades)`,
      `  public:  ${k.publicKeyFile} (install into each board's upgrade keys directory)`,
    ].join('\n')));

  up.command('build')
    .description('make a signed upgrade package (.usp) from a slot image directory')
    .requiredOption('--key <private.pem>', 'Ed25519 private key')
    .requiredOption('--family <family>', 'board family the package fits (the profile\'s "family")')
    .requiredOption('--version <semver>', 'version of the package, like 1.2.0')
    .option('--min-version <semver>', 'oldest running version this package may upgrade')
    .option('--description <text>', 'a line for operators')
    .requiredOption('--from <dir>', 'the slot image directory tree')
    .requiredOption('--out <file.usp>', 'package file to write')
    .action(action(async (o: Opts & { key: string; family: string; version: string; minVersion?: string; description?: string; from: string; out: string }) => {
      const progress = progressReporter('build');
      let r;
      try {
        r = await buildPackage({
          fromDir: o.from,
          privateKey: loadPrivateKey(o.key),
          family: o.family,
          version: o.version,
          minVersion: o.minVersion,
          description: o.description,
          out: o.out,
          onProgress: (p) => progress.update(p.done, p.total, p.phase),
        });
      } finally {
        progress.stop();
      }
      const m = r.manifest;
      print(o, { out: r.out, bytes: r.packageBytes, sha256: r.packageSha256, manifest: { ...m, files: m.files.length } }, () =>
        `${r.out}: ${m.compatible} ${m.version}${m.minVersion ? ` (from ${m.minVersion})` : ''}, ${m.files.length} files, ${(r.packageBytes / 1e6).toFixed(1)} MB, key ${m.keyId}\nsha256 ${r.packageSha256}`);
    }));

  up.command('install <package>')
    .description('verify a package and install it into the inactive slot, then arm a one-shot trial boot of it')
    .option('--force', 'allow a downgrade, or an upgrade from below the package\'s minimum version')
    .option('--board <file>', 'board profile')
    .action(action((o: Opts & { force?: boolean }, file: string) => installWithProgress(setupOf(o), file, o.force === true), (r) => formatInstall(r)));

  up.command('status')
    .description('slots, versions, which slot is running, good and on trial')
    .option('--verify', 'also check every file of both slots against its record')
    .option('--board <file>', 'board profile')
    .action(action((o: Opts & { verify?: boolean }) => {
      const board = loadBoardProfile(defaultBoardFile(o.board));
      return readStatus(upgradeSetupFor(board), o.verify === true, board);
    }, (x) => formatStatus(x)));

  up.command('mark-good')
    .description('commit the running slot after a trial boot (its health checks passed)')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts) => {
      const s = setupOf(o);
      const release = s.store.lock('mark the running slot good');
      try {
        const r = await markGood(s.env, s.store);
        print(o, r, () => (r.committed ? `slot ${r.slot} (${r.version ?? '?'}) committed: it is now the good slot` : `slot ${r.slot} (${r.version ?? '?'}) already is the good slot`));
      } finally {
        release();
      }
    }));

  up.command('rollback')
    .description('abandon an armed trial: the next boot selects the good slot')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts) => {
      const s = setupOf(o);
      const release = s.store.lock('roll back');
      try {
        const r = await abandonTrial(s.env);
        print(o, r, () => `trial of slot ${r.abandoned} abandoned; the next boot selects slot ${r.nextBoot ?? '?'}`);
      } finally {
        release();
      }
    }));

  up.command('commit-when-healthy')
    .description('after a trial boot: commit the running slot once the controller reports the guest running for --stable seconds; else roll back (exit 1, so the boot unit can reboot)')
    .option('--timeout <s>', 'give up (and roll back) after this long', (v) => Number.parseInt(v, 10), 300)
    .option('--stable <s>', 'healthy for this long without a break', (v) => Number.parseInt(v, 10), 30)
    .option('--interval <ms>', 'poll interval', (v) => Number.parseInt(v, 10), 2000)
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts & { timeout: number; stable: number; interval: number }) => {
      const board = loadBoardProfile(defaultBoardFile(o.board));
      const s = upgradeSetupFor(board);
      const running = s.store.bootedSlot();
      const st = await readBootState(s.env);
      if (!running || st.trial !== running) {
        print(o, { committed: false, reason: 'no trial running', running: running ?? null }, () => `nothing to commit: slot ${running ?? '?'} is not on trial`);
        return;
      }
      const { callControl } = await import('../mgmt/ipc.js');
      const { controlSocketPath } = await import('../mgmt/paths.js');
      const sock = controlSocketPath(board);
      const deadline = Date.now() + o.timeout * 1000;
      let healthySince: number | undefined;
      let last = 'no answer yet';
      while (Date.now() < deadline) {
        try {
          const status = (await callControl(sock, 'status', {}, Math.min(5000, o.interval * 2))) as { guest?: { state?: string } };
          const state = status.guest?.state ?? 'running'; // a board without a guest: the controller answering is the health
          last = `guest ${state}`;
          if (state === 'running') healthySince ??= Date.now();
          else healthySince = undefined;
        } catch (e) {
          last = (e as Error).message;
          healthySince = undefined;
        }
        if (healthySince !== undefined && Date.now() - healthySince >= o.stable * 1000) {
          const release = s.store.lock('commit');
          try {
            const r = await markGood(s.env, s.store);
            print(o, { ...r, healthyForS: o.stable }, () => `slot ${r.slot} (${r.version ?? '?'}) healthy for ${o.stable} s: committed`);
          } finally {
            release();
          }
          return;
        }
        await new Promise((r) => setTimeout(r, o.interval));
      }
      const release = s.store.lock('roll back');
      try {
        await abandonTrial(s.env);
      } finally {
        release();
      }
      throw new UsError('US_ERR_UPGRADE_STATE', `slot ${running} did not become healthy within ${o.timeout} s (last: ${last}); trial abandoned: the next boot selects slot ${st.good ?? '?'}`);
    }));

  up.command('rolling <package>')
    .description('upgrade both boards of the pair, backup first, then switch over and upgrade the other; the guest is served throughout (run it on the primary)')
    .option('--timeout <s>', 'bound on each wait for an upgraded board to come back healthy and protected; past it the trial is abandoned', (v) => Number.parseInt(v, 10), 300)
    .option('--stable <s>', 'an upgraded board must stay healthy and protected this long before its trial is committed', (v) => Number.parseInt(v, 10), 5)
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts & { timeout: number; stable: number }, file: string) => {
      const sock = await controlSocketOf(o.board);
      const { callControl } = await import('../mgmt/ipc.js');
      const started = (await callControl(sock, 'upgrade.rolling', { package: resolve(file), timeoutMs: o.timeout * 1000, stableMs: o.stable * 1000 }, 60000)) as { run: RollingRecord };
      const id = started.run.id;
      let shown = 0;
      let away = false;
      const show = (run: RollingRecord) => {
        for (const st of run.steps.slice(shown)) process.stderr.write(`[${st.n}] ${st.step}: ${st.message}\n`);
        shown = run.steps.length;
      };
      show(started.run);
      // Every wait inside is bounded by --timeout; this one only guards against a controller that never returns.
      const end = Date.now() + (4 * o.timeout + 600) * 1000;
      for (;;) {
        if (Date.now() > end) throw new UsError('US_ERR_TIMEOUT', `rolling upgrade ${id}: no end reported by the controller; see \`understudy events --kind upgrade\``);
        await new Promise((r) => setTimeout(r, 500));
        let run: RollingRecord | null;
        try {
          run = ((await callControl(sock, 'upgrade.rolling.status', {}, 5000)) as { run: RollingRecord | null }).run;
          if (away) process.stderr.write('controller answers again\n');
          away = false;
        } catch {
          // This board reboots into its trial during the run: wait for its controller to come back.
          if (!away) process.stderr.write('controller not answering (this board is rebooting); waiting for it\n');
          away = true;
          continue;
        }
        // A controller that has just started answers before it has loaded the run's record.
        if (!run) continue;
        if (run.id !== id) throw new UsError('US_ERR_UPGRADE_STATE', `rolling upgrade ${id}: the controller reports another run (${run.id}) now`);
        show(run);
        if (run.state === 'done') {
          print(o, run, () => `rolling upgrade ${id}: both boards run ${run.version}, committed; ${run.partner} is primary, ${run.orchestrator} backup`);
          return;
        }
        if (run.state === 'failed') {
          throw new UsError('US_ERR_UPGRADE_ABORTED', `rolling upgrade ${id} to ${run.version} failed at step ${run.failed?.step}: ${run.failed?.code}: ${run.failed?.message}. Now: ${run.outcome ?? '?'}`, { run });
        }
      }
    }));

  up.command('boot')
    .description('simulated board only: one power-on of its bootloader (trial with a boot counter, else the good slot)')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts) => {
      const s = setupOf(o);
      if (!s.simulated) throw new UsError('US_ERR_UPGRADE_STATE', `board ${s.board} is a real blade: its bootloader selects the slot (see docs/upgrade.md)`);
      const release = s.store.lock('boot');
      try {
        const r = await simulateBoot(s.env, s.store);
        const why = {
          good: 'the good slot',
          trial: `trial, ${r.triesLeft} attempts left after this one`,
          rollback: 'the trial ran out of attempts: rolled back to the good slot',
          'last-resort': 'the good slot does not load: last resort',
        }[r.reason];
        print(o, r, () => `booted slot ${r.slot} (${r.version ?? '?'}): ${why}${r.failedLoads.length ? `; failed to load: ${r.failedLoads.join(', ')}` : ''}`);
      } finally {
        release();
      }
    }));

  up.command('receive')
    .description('receive a package by YMODEM / XMODEM-1K on a serial line (send it with sb, minicom or screen), optionally install it')
    .option('--device <path>', 'serial device (default: the board\'s console device)')
    .option('--baud <n>', 'baud rate (default: the board\'s console baud rate)', (v) => Number.parseInt(v, 10))
    .option('--dir <dir>', 'where to store it (default <storageDir>/incoming)')
    .option('--max-mb <n>', 'largest file accepted, MB', (v) => Number.parseInt(v, 10), 1024)
    .option('--timeout <s>', 'wait this long for the sender to start', (v) => Number.parseInt(v, 10), 60)
    .option('--install', 'install the received package')
    .option('--force', 'with --install: allow a downgrade')
    .option('--board <file>', 'board profile')
    .action(action(async (o: Opts & { device?: string; baud?: number; dir?: string; maxMb: number; timeout: number; install?: boolean; force?: boolean }) => {
      const board = loadBoardProfile(defaultBoardFile(o.board));
      const s = upgradeSetupFor(board);
      const device = o.device ?? board.console?.device;
      if (!device) throw new UsError('US_ERR_CONFIG', `board ${board.name} has no console device; give --device`);
      const { SerialPort } = await import('serialport');
      const port = new SerialPort({ path: device, baudRate: o.baud ?? board.console?.baud ?? 115200, autoOpen: false });
      await new Promise<void>((resolve, reject) => port.open((e) => (e ? reject(new UsError('US_ERR_NOT_FOUND', `serial device ${device}: ${e.message}`)) : resolve())));
      const { receiveFile } = await import('../upgrade/ymodem.js');
      const progress = progressReporter('receive');
      const ctl = new AbortController();
      const onSig = () => ctl.abort();
      process.once('SIGINT', onSig);
      process.stderr.write(`waiting for a YMODEM/XMODEM sender on ${device} (${o.timeout} s)…\n`);
      let rx;
      try {
        rx = await receiveFile(port, {
          dir: o.dir ?? s.incomingDir,
          maxBytes: o.maxMb * 1024 * 1024,
          handshakeTimeoutMs: o.timeout * 1000,
          signal: ctl.signal,
          onProgress: (p) => progress.update(p.received, p.total ?? p.received),
        });
      } finally {
        progress.stop();
        process.off('SIGINT', onSig);
        // The last ACK must reach the sender before the port closes (tcdrain), or sb repeats its last block for ~100 s.
        await new Promise<void>((r) => port.drain(() => r()));
        await new Promise<void>((r) => port.close(() => r()));
      }
      const installed = o.install ? await installWithProgress(s, rx.path, o.force === true) : undefined;
      print(o, { received: rx, installed }, () => [
        `received ${rx.name} (${rx.bytes} bytes, ${rx.protocol}, ${rx.blocks} blocks, ${rx.retries} retries, ${rx.durationMs} ms) into ${rx.path}`,
        ...(installed ? [formatInstall(installed)] : []),
      ].join('\n'));
    }));
}
