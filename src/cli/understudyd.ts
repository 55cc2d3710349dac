/**
 * understudyd entry: `understudyd --board <profile> --guest <descriptor>`. With UNDERSTUDY_NOTIFY=stdout
 * it writes one line to stdout when ready (`READY <pid>`), failed (`FAILED <json error>`) or up without
 * serving because of a configuration error (`CONFIG-ERROR <json>`: the console and the control socket
 * run, see src/mgmt/not-serving.ts), which is how `understudy guest start` knows the outcome before it
 * detaches.
 */
import { Command } from 'commander';
import { execFile } from 'node:child_process';
import { asUsError } from '../core/errors.js';

/**
 * systemd readiness without a native sd_notify: when started by a Type=notify unit (NOTIFY_SOCKET
 * set; the unit has NotifyAccess=all), the daemon runs systemd-notify once it serves.
 */
function notifySystemd(failure?: string, notServing?: string): void {
  if (!process.env.NOTIFY_SOCKET) return;
  // Not serving is still "ready": systemd must not kill (and restart) the console a field engineer needs.
  const args = failure ? [`--status=${failure}`] : ['--ready', `--pid=${process.pid}`, `--status=${notServing ?? 'serving'}`];
  execFile('systemd-notify', args, () => undefined);
}
import { runDaemon } from '../mgmt/run-daemon.js';
import { defaultBoardFile, defaultGuestFile } from './locate.js';

const program = new Command('understudyd')
  .description('Understudy controller daemon for one board')
  .option('--board <file>', 'board profile')
  .option('--guest <file>', 'guest descriptor')
  .option('--no-guest', 'run the board without a guest (membership and roles only)')
  .option('--start-empty', 'set the guest\'s state disk aside (kept) and boot it with an empty state: after it refused a saved state')
  .parse();
const opts = program.opts<{ board?: string; guest?: string | false; startEmpty?: boolean }>();
const notify = process.env.UNDERSTUDY_NOTIFY === 'stdout';
let notified = false;
// The line on stdout is for whoever started the controller (`understudy guest start`). A starter that
// gave up (its timeout, or killed by Pacemaker's) closed its end: the write then fails with EPIPE,
// which must never take the controller down with it.
if (notify) {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    process.stderr.write(`${JSON.stringify({ level: 40, time: Date.now(), name: 'understudyd', err: e.code ?? e.message, msg: 'the start-up notice could not be written: its reader (the starting command) is gone; the controller runs on' })}\n`);
  });
}

try {
  await runDaemon(defaultBoardFile(opts.board), opts.guest === false ? undefined : defaultGuestFile(opts.guest), (err, configError) => {
    notifySystemd(err ? `failed: ${err.message}` : undefined, configError ? `CONFIG-ERROR: ${configError.code} ${configError.message}` : undefined);
    if (!notify) return;
    notified = true;
    process.stdout.write(err ? `FAILED ${JSON.stringify(asUsError(err).toJSON())}\n` : configError ? `CONFIG-ERROR ${JSON.stringify(configError)}\n` : `READY ${process.pid}\n`);
  }, { startEmpty: opts.startEmpty === true });
} catch (e) {
  const u = asUsError(e);
  if (!notify) process.stderr.write(`error ${u.code}: ${u.message}\n`);
  else if (!notified) process.stdout.write(`FAILED ${JSON.stringify(u.toJSON())}\n`);
  process.exit(1);
}
