/**
 * understudyd entry: `understudyd --board <profile> --guest <descriptor>`. With UNDERSTUDY_NOTIFY=stdout
 * it writes one line to stdout when ready (`READY <pid>`) or failed (`FAILED <json error>`), which is
 * how `understudy guest start` knows the outcome before it detaches.
 */
import { Command } from 'commander';
import { execFile } from 'node:child_process';
import { asUsError } from '../core/errors.js';

/**
 * systemd readiness without a native sd_notify: when started by a Type=notify unit (NOTIFY_SOCKET
 * set; the unit has NotifyAccess=all), the daemon runs systemd-notify once it serves.
 */
function notifySystemd(failure?: string): void {
  if (!process.env.NOTIFY_SOCKET) return;
  const args = failure ? [`--status=${failure}`] : ['--ready', `--pid=${process.pid}`, '--status=serving'];
  execFile('systemd-notify', args, () => undefined);
}
import { runDaemon } from '../mgmt/daemon.js';
import { defaultBoardFile, defaultGuestFile } from './locate.js';

const program = new Command('understudyd')
  .description('Understudy controller daemon for one board')
  .option('--board <file>', 'board profile')
  .option('--guest <file>', 'guest descriptor')
  .option('--no-guest', 'run the board without a guest (membership and roles only)')
  .parse();
const opts = program.opts<{ board?: string; guest?: string | false }>();
const notify = process.env.UNDERSTUDY_NOTIFY === 'stdout';
let notified = false;

try {
  await runDaemon(defaultBoardFile(opts.board), opts.guest === false ? undefined : defaultGuestFile(opts.guest), (err) => {
    if (!notify) { notifySystemd(err ? `failed: ${err.message}` : undefined); return; }
    notified = true;
    notifySystemd(err ? `failed: ${err.message}` : undefined);
    process.stdout.write(err ? `FAILED ${JSON.stringify(asUsError(err).toJSON())}\n` : `READY ${process.pid}\n`);
  });
} catch (e) {
  const u = asUsError(e);
  if (!notify) process.stderr.write(`error ${u.code}: ${u.message}\n`);
  else if (!notified) process.stdout.write(`FAILED ${JSON.stringify(u.toJSON())}\n`);
  process.exit(1);
}
