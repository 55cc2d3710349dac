/**
 * Corosync and Pacemaker on the simulated boards (`chassis up --manager pacemaker`): the real
 * Debian daemons, one set per board, each set isolated as if it ran on its own blade. Owns the
 * files under <board dir>/pacemaker (corosync.conf, the cluster's authkey, the private state and
 * log folders, the namespace's init script) and the command lines that start the daemons and run
 * Pacemaker's tools inside a board. Starts nothing itself: the board (board.ts) starts the daemons
 * with the controller and kills them with it.
 *
 * How a board's daemons are isolated (found by experiment, docs/pacemaker.md): `ip netns exec
 * <board ns> unshare --mount --pid --uts --ipc --fork --mount-proc --kill-child=SIGKILL sh init.sh`.
 * The init script is the pid namespace's pid 1: it bind-mounts the board's own folders over
 * /etc/corosync, /var/lib/pacemaker, /var/lib/corosync, /var/log/pacemaker and /var/log/cluster,
 * mounts a fresh tmpfs on /dev/shm (libqb's IPC rings) and on /run (with /run/understudy, and the
 * chassis run directory if it is elsewhere under /run, bound back into it), binds the package's board/ocf over
 * /usr/lib/ocf/resource.d/understudy (ocf:understudy:guest) and its fence agent over the installed
 * /usr/sbin/fence_understudy_chassis (stonith:fence_understudy_chassis), sets the host name to the board's, at a
 * reboot waits a blade's boot time (REBOOT_CLUSTER_DELAY_S), starts `corosync -f`,
 * waits until it answers, then `pacemakerd -f`. Every mount is `mount -n`: the machine's
 * /run/mount/utab is not the namespace's to write (and after /run has moved, mount fails to). libqb's IPC sockets are abstract unix sockets, so
 * the board's network namespace separates them too. Ending the namespace is ending its pid 1: the
 * kernel kills every process in it; `--kill-child` makes the `unshare` the chassis starts (and
 * records) take pid 1 with it, so killing that one process, or its process group, ends them all.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { UsError } from '../../core/errors.js';
import { PACKAGE_ROOT, guestOnBoard, guestPair, plinkAddress, type ChassisBoard, type ChassisLayout } from './layout.js';
import { clusterWrapperFile, PAIRING_PROFILE_PATTERN } from './profiles.js';

/** Who runs the boards: Understudy alone (the pair), or Pacemaker and Corosync beside it. */
export type ChassisManager = 'understudy' | 'pacemaker';

/** The folders a board's daemons see in place of the machine's, and the files the chassis writes. */
export interface PacemakerFiles {
  dir: string;
  /** Bound over /etc/corosync: corosync.conf and authkey. */
  etc: string;
  conf: string;
  authkey: string;
  libPacemaker: string;
  libCorosync: string;
  logPacemaker: string;
  logCluster: string;
  /** The pid namespace's pid 1. */
  init: string;
  /** stdout and stderr of the namespace (init script, corosync and pacemakerd). */
  out: string;
  /** The pid of the board's `unshare` (written by the board at every start of its cluster stack). */
  unsharePid: string;
  /** Runs a command inside the namespaces (profiles.ts clusterWrapperFile). */
  wrapper: string;
}

export function pacemakerFiles(layout: ChassisLayout, board: ChassisBoard): PacemakerFiles {
  const dir = join(layout.boards[board].dir, 'pacemaker');
  const etc = join(dir, 'etc-corosync');
  return {
    dir,
    etc,
    conf: join(etc, 'corosync.conf'),
    authkey: join(etc, 'authkey'),
    libPacemaker: join(dir, 'lib-pacemaker'),
    libCorosync: join(dir, 'lib-corosync'),
    logPacemaker: join(dir, 'log-pacemaker'),
    logCluster: join(dir, 'log-cluster'),
    init: join(dir, 'init.sh'),
    out: join(dir, 'namespace.log'),
    unsharePid: join(dir, 'unshare.pid'),
    wrapper: clusterWrapperFile(layout, board),
  };
}

/** The cluster's authkey, shared by every board: new at every `chassis up`. */
export function authkeyFile(layout: ChassisLayout): string {
  return join(layout.runDir, 'corosync.authkey');
}

/**
 * corosync.conf (pure): knet over the backplane on COROSYNC_PORT, every board a node named after it with its
 * backplane address, encrypted and authenticated with the chassis' authkey. Two boards get
 * votequorum's two_node (each may keep quorum alone after the other is fenced).
 */
export function corosyncConf(clusterName: string, boards: readonly ChassisBoard[]): string {
  const nodes = boards.map((b, i) => `  node {\n    ring0_addr: ${plinkAddress(b)}\n    name: ${b}\n    nodeid: ${i + 1}\n  }\n`).join('');
  return `# Written by the Understudy simulated chassis (src/sim/chassis/pacemaker.ts) at every chassis up.
totem {
  version: 2
  cluster_name: ${clusterName}
  transport: knet
  crypto_cipher: aes256
  crypto_hash: sha256
  interface {
    linknumber: 0
    mcastport: ${COROSYNC_PORT}
  }
}
nodelist {
${nodes}}
quorum {
  provider: corosync_votequorum
${boards.length === 2 ? '  two_node: 1\n' : ''}}
logging {
  to_logfile: yes
  logfile: /var/log/cluster/corosync.log
  to_syslog: no
  to_stderr: no
  timestamp: on
}
`;
}

/**
 * corosync's knet port on the backplane. Not its default, 5405: that is the pair's own heartbeat
 * port (PLINK_PORT) on the same address, in the same namespace — sharing it took the pair's
 * Ethernet link down (the heartbeats no longer arrived) and made the pair fence.
 */
export const COROSYNC_PORT = 5420;

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * The namespace's pid 1 (pure). `set -e`: a mount that fails ends the namespace before any daemon
 * starts on the machine's own folders. Waits (bounded) for corosync before starting pacemakerd,
 * then waits for both.
 */
/**
 * Where the namespace's new /run is filled before it is moved onto /run: a folder outside /run, so
 * that /run/understudy can be bound into it (only inside the namespace; the machine's /mnt is
 * uncovered again by the move).
 */
const NEW_RUN = '/mnt';
/** The package's OCF provider folder: board/ocf holds the agent `guest` (ocf:understudy:guest). */
export const OCF_PROVIDER_DIR = join(PACKAGE_ROOT, 'board', 'ocf');
/** The package's fence agent for the chassis' power controller (stonith:fence_understudy_chassis). */
export const FENCE_AGENT = join(PACKAGE_ROOT, 'board', 'fence', 'fence_understudy_chassis');
/** Where Pacemaker looks for it, as image-build/setup.sh installs it (fence agents live in /usr/sbin). */
export const INSTALLED_FENCE_AGENT = '/usr/sbin/fence_understudy_chassis';

/**
 * How long a board's cluster stack waits at every boot but the first before corosync starts: a
 * blade's firmware and operating system take far longer to boot than the cluster takes to see it
 * leave, and Pacemaker relies on that. A board power-cycled by a fence that rejoined at once (the
 * simulated boot is instant) would be in the new membership before the others had recorded the
 * fence (corosync holds the fencer's result until the membership without the board has formed:
 * its token timeout, 3.65 s for three nodes, and consensus, 4.38 s), would hear that it was "just
 * fenced" and stop its Pacemaker for good (fence-reaction). Found by the first runs of
 * test/integration/pacemaker-fence.test.ts. At the first boot (`chassis up`) every board boots at
 * once, so the wait would only delay them all.
 */
export const REBOOT_CLUSTER_DELAY_S = 10;
/** The environment variable through which the board tells init.sh which boot this is (1 at `chassis up`). */
export const BOOT_COUNT_ENV = 'UNDERSTUDY_BOOT_COUNT';

/**
 * The size of a board's private /dev/shm (a tmpfs: only what is used takes memory). libqb gives every
 * IPC connection to corosync about 3 MB of ring buffers there, every daemon's and every client's (a
 * controller's quorum watch, each agent's crm_attribute, stonith_admin…), and corosync's blackbox
 * takes 8 MB: an idle board of a shelf of two guests used 45–60 MB. At 64 MB a burst of the agents'
 * calls filled it (2026-12-07): the scheduler could not answer the controller ("No space left on
 * device"), Pacemaker restarted on that board, re-probed and demoted the serving guest. A blade's
 * /dev/shm is half its memory.
 */
export const SHM_SIZE = '512m';

export function initScript(f: PacemakerFiles, board: ChassisBoard, runDir: string): string {
  // What the private /run keeps from the machine's: /run/understudy (the controllers' accelerator
  // verdict, the default chassis run directories), and the run directory if it is elsewhere in /run.
  const keep = ['/run/understudy', ...(runDir.startsWith('/run/') && !runDir.startsWith('/run/understudy/') ? [runDir] : [])];
  const binds = keep.map((d) => `mkdir -p ${q(d)} ${q(NEW_RUN + d.slice('/run'.length))}\nmount -n --rbind ${q(d)} ${q(NEW_RUN + d.slice('/run'.length))}\n`).join('');
  return `#!/bin/sh
# pid 1 of ${board}'s Pacemaker namespaces (mount, pid, uts, ipc; net: the board's). Written by the chassis.
set -eu
mount -n --bind ${q(f.etc)} /etc/corosync
mount -n --bind ${q(f.libPacemaker)} /var/lib/pacemaker
mount -n --bind ${q(f.libCorosync)} /var/lib/corosync
mount -n --bind ${q(f.logPacemaker)} /var/log/pacemaker
mkdir -p /var/log/cluster
mount -n --bind ${q(f.logCluster)} /var/log/cluster
mount -n -t tmpfs -o mode=1777,size=${SHM_SIZE} shm /dev/shm
mount -n -t tmpfs -o mode=0755,size=16m run ${q(NEW_RUN)}
mkdir -p ${q(NEW_RUN)}/crm ${q(NEW_RUN)}/lock
: > ${q(NEW_RUN)}/${IN_CLUSTER_MARKER}
${binds}mount -n --move ${q(NEW_RUN)} /run
# ocf:understudy:guest is this package's agent (board/ocf/guest), whatever the machine has installed.
mkdir -p /usr/lib/ocf/resource.d/understudy
mount -n --bind ${q(OCF_PROVIDER_DIR)} /usr/lib/ocf/resource.d/understudy
# stonith:fence_understudy_chassis is this package's agent too (board/fence), bound over the installed
# copy (a bind needs a file to cover; the machine's /usr/sbin is not the namespace's to write).
if [ -f ${q(FENCE_AGENT)} ] && [ -f ${INSTALLED_FENCE_AGENT} ]; then
  mount -n --bind ${q(FENCE_AGENT)} ${INSTALLED_FENCE_AGENT}
else
  echo "init: ${INSTALLED_FENCE_AGENT} is not installed (image-build/setup.sh installs it): no stonith:fence_understudy_chassis on ${board}" >&2
fi
hostname ${board}
if [ "\${${BOOT_COUNT_ENV}:-1}" -gt 1 ]; then
  echo "init: boot \${${BOOT_COUNT_ENV}}: corosync starts in ${REBOOT_CLUSTER_DELAY_S} s (a blade's boot time: the cluster must see the board leave first)"
  sleep ${REBOOT_CLUSTER_DELAY_S}
fi
corosync -f &
tries=0
until corosync-cmapctl totem.cluster_name >/dev/null 2>&1; do
  tries=$((tries + 1))
  if [ "$tries" -gt 300 ]; then echo "init: corosync did not answer within 60 s" >&2; exit 1; fi
  sleep 0.2
done
echo "init: corosync answers; starting pacemakerd"
PCMK_logfile=/var/log/pacemaker/pacemaker.log PCMK_logfacility=none pacemakerd -f &
wait
`;
}

function idOf(file: string, name: string): number {
  const line = readFileSync(file, 'utf8').split('\n').find((l) => l.split(':')[0] === name);
  if (!line) throw new UsError('US_ERR_NOT_FOUND', `no ${name} in ${file}: Pacemaker is not installed (image-build/setup.sh installs pacemaker and corosync)`);
  return Number(line.split(':')[2]);
}

/**
 * Writes every board's folders and files (mode 0700/0600 except what Pacemaker's own user must
 * write: its state and log folders belong to hacluster:haclient, as the Debian package makes them)
 * and a fresh authkey. Returns each board's files.
 */
export function writePacemakerFiles(layout: ChassisLayout): Record<ChassisBoard, PacemakerFiles> {
  const uid = idOf('/etc/passwd', 'hacluster');
  const gid = idOf('/etc/group', 'haclient');
  const key = authkeyFile(layout);
  writeFileSync(key, randomBytes(256), { mode: 0o400 });
  chmodSync(key, 0o400);
  const conf = corosyncConf(layout.name, layout.boardNames);
  const out = {} as Record<ChassisBoard, PacemakerFiles>;
  for (const b of layout.boardNames) {
    const f = pacemakerFiles(layout, b);
    for (const d of [f.dir, f.etc, f.libCorosync, f.logCluster]) mkdirSync(d, { recursive: true, mode: 0o700 });
    for (const d of [f.libPacemaker, ...['cib', 'pengine', 'blackbox', 'cores'].map((s) => join(f.libPacemaker, s)), f.logPacemaker]) {
      mkdirSync(d, { recursive: true, mode: 0o750 });
      chmodSync(d, d === f.logPacemaker ? 0o770 : 0o750);
      chownSync(d, uid, gid);
    }
    writeFileSync(f.conf, conf, { mode: 0o644 });
    copyFileSync(key, f.authkey);
    chmodSync(f.authkey, 0o400);
    writeFileSync(f.init, initScript(f, b, layout.runDir), { mode: 0o700 });
    writeFileSync(f.wrapper, wrapperScript(f, b), { mode: 0o700 });
    out[b] = f;
  }
  return out;
}

/** A file of the namespace's private /run only: who finds it runs inside the cluster's namespaces. */
const IN_CLUSTER_MARKER = 'understudy-in-cluster';

/**
 * The board's `in-cluster` script (pure): runs its arguments inside the board's cluster namespaces,
 * entered with nsenter through the recorded unshare's child (the namespace's pid 1), or as they
 * are when already inside (a controller started by the agent). Fails, naming the board, while the
 * cluster stack does not run.
 */
export function wrapperScript(f: PacemakerFiles, board: ChassisBoard): string {
  return `#!/bin/sh
# Runs a command inside ${board}'s cluster namespaces (corosync's IPC). Written by the chassis.
if [ -e /run/${IN_CLUSTER_MARKER} ]; then exec "$@"; fi
u=$(cat ${q(f.unsharePid)} 2>/dev/null)
i=$( [ -n "$u" ] && cut -d' ' -f1 /proc/"$u"/task/"$u"/children 2>/dev/null)
if [ -z "$i" ]; then echo "in-cluster: ${board} runs no cluster stack (${f.unsharePid})" >&2; exit 1; fi
exec nsenter -t "$i" -m -u -i -p -- "$@"
`;
}

/** The command line (for `ip`) that starts a board's daemons in their own namespaces. */
export function pacemakerArgv(layout: ChassisLayout, board: ChassisBoard): string[] {
  const f = pacemakerFiles(layout, board);
  return ['netns', 'exec', layout.boards[board].netns, 'unshare', '--mount', '--pid', '--uts', '--ipc', '--fork', '--mount-proc', '--kill-child=SIGKILL', 'sh', f.init];
}

/** The pid namespace's pid 1 (as the machine sees it): the only child of the recorded `unshare`. */
export function namespaceInit(unsharePid: number): number | undefined {
  try {
    const first = readFileSync(`/proc/${unsharePid}/task/${unsharePid}/children`, 'utf8').trim().split(/\s+/)[0];
    return first ? Number(first) : undefined;
  } catch {
    return undefined;
  }
}

/** nsenter's arguments that run `argv` inside a board's Pacemaker namespaces (all five). */
export function nsenterArgv(initPid: number, argv: readonly string[]): string[] {
  return ['-t', String(initPid), '-m', '-u', '-n', '-p', '-i', '--', ...argv];
}

/** The id of the guest's promotable clone in the chassis' cluster (its primitive is `guest`). */
export const GUEST_CLONE_ID = 'guest-clone';

/** An XML attribute value, escaped. */
const esc = (v: string) => v.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');

/**
 * A primitive's parameters that differ per node (pure): one `instance_attributes` set per board,
 * chosen by a rule on `#uname`, ids `<prefix>-<board>…`; `nvpairs(board)` gives [id suffix, name, value].
 */
export function perNodeAttributes(layout: ChassisLayout, prefix: string, nvpairs: (b: ChassisBoard) => Array<[string, string, string]>): string {
  return layout.boardNames.map((b, i) => `<instance_attributes id="${prefix}-${b}" score="${100 - i}"><rule id="${prefix}-${b}-r" score="0"><expression id="${prefix}-${b}-e" attribute="#uname" operation="eq" value="${b}"/></rule>`
    + nvpairs(b).map(([id, name, value]) => `<nvpair id="${prefix}-${b}-${id}" name="${name}" value="${esc(value)}"/>`).join('')
    + '</instance_attributes>').join('');
}

/**
 * The CIB resource that `chassis up --manager pacemaker --guest primary` configures (pure;
 * exported for tests): ocf:understudy:guest as a promotable clone over every board, `promoted-max`
 * 1, each node with its own board profile through a rule on `#uname` (one parameter, a file per
 * blade), the guest descriptor, and a monitor per role (10 s promoted, 11 s unpromoted: Pacemaker
 * needs the intervals to differ). `clone-max` 2 (one guest: its primary and one backup) with
 * notifications: with more boards than the pair, each node's `pair_profile` too, and the agent
 * pairs the instance Pacemaker starts on a spare with the promoted one (N+1, docs/pacemaker.md).
 */
export function guestCloneXml(layout: ChassisLayout, o: { cli: string; daemon: string; guestFile?: string; stopped?: boolean }, k = 1): string {
  const { clone, primitive, prefix: g } = guestIds(k);
  // N+1 (more boards than the pair): each board's pairing profiles (profiles.ts pairingProfileFile).
  const nPlusOne = layout.boardNames.length > 2;
  const perNode = perNodeAttributes(layout, g, (b) => [
    ['board', 'board', guestOnBoard(layout, b, k).profile],
    ...(nPlusOne ? [['pair', 'pair_profile', join(guestOnBoard(layout, b, k).dir, PAIRING_PROFILE_PATTERN)] as [string, string, string]] : []),
  ]);
  const common = [['cli', o.cli], ['daemon', o.daemon], ...(o.guestFile ? [['guest', o.guestFile]] : [])]
    .map(([key, v]) => `<nvpair id="${g}-${key}" name="${key}" value="${esc(v!)}"/>`).join('');
  const m = `${g}cm`;
  return `<clone id="${clone}"><meta_attributes id="${clone}-meta"><nvpair id="${m}-p" name="promotable" value="true"/><nvpair id="${m}-pm" name="promoted-max" value="1"/>`
    + `<nvpair id="${m}-cm" name="clone-max" value="2"/><nvpair id="${m}-n" name="notify" value="true"/>`
    + `${o.stopped ? `<nvpair id="${m}-tr" name="target-role" value="Stopped"/>` : ''}</meta_attributes>`
    + `<primitive id="${primitive}" class="ocf" provider="understudy" type="guest">${perNode}<instance_attributes id="${g}-common">${common}</instance_attributes>`
    + `<operations><op id="${g}-mon-p" name="monitor" interval="10s" role="Promoted" timeout="30s"/><op id="${g}-mon-u" name="monitor" interval="11s" role="Unpromoted" timeout="30s"/>`
    + `<op id="${g}-start" name="start" interval="0s" timeout="240s"/><op id="${g}-stop" name="stop" interval="0s" timeout="60s"/>`
    + `<op id="${g}-promote" name="promote" interval="0s" timeout="240s"/><op id="${g}-demote" name="demote" interval="0s" timeout="120s"/>`
    + `<op id="${g}-notify" name="notify" interval="0s" timeout="60s"/></operations></primitive></clone>`;
}

/** Guest k's ids in the CIB: guest 1 `guest-clone` (primitive `guest`), guest k > 1 `guest<k>-clone` (`guest<k>`). */
export function guestIds(k: number): { clone: string; primitive: string; prefix: string } {
  return k === 1 ? { clone: GUEST_CLONE_ID, primitive: 'guest', prefix: 'g' } : { clone: `guest${k}-clone`, primitive: `guest${k}`, prefix: `g${k}` };
}

/**
 * Guest k > 1's first placement (pure; exported for tests): location constraints (score 100) for
 * its clone on its natural pair's boards, where its profiles pair them. The chassis creates the clone
 * stopped (a constraint must name an existing resource), then these, then starts it, and removes
 * them once both instances run (launcher.ts configureGuestClone).
 */
export function initialPlacementXml(layout: ChassisLayout, k: number): Array<{ id: string; xml: string }> {
  const { clone } = guestIds(k);
  return guestPair(layout, k).map((b) => {
    const id = `${clone}-first-${b}`;
    return { id, xml: `<rsc_location id="${id}" rsc="${clone}" node="${b}" score="100"/>` };
  });
}

/** The id of the fence device `chassis up --manager pacemaker --stonith` configures. */
export const FENCE_DEVICE_ID = 'fence-chassis';

/**
 * The fence device `chassis up --manager pacemaker --stonith` configures (pure; exported for
 * tests): stonith:fence_understudy_chassis on the chassis' power controller socket, able to fence
 * every board (each node's name is its plug at the power controller), monitored every 30 s.
 */
export function fenceDeviceXml(layout: ChassisLayout): string {
  const attrs: Array<[string, string]> = [
    ['socket', layout.powerSocket],
    ['pcmk_host_list', layout.boardNames.join(' ')],
    ['pcmk_host_map', layout.boardNames.map((b) => `${b}:${b}`).join(';')],
  ];
  return `<primitive id="${FENCE_DEVICE_ID}" class="stonith" type="fence_understudy_chassis"><instance_attributes id="${FENCE_DEVICE_ID}-ia">`
    + attrs.map(([k, v]) => `<nvpair id="${FENCE_DEVICE_ID}-${k}" name="${k}" value="${esc(v)}"/>`).join('')
    + `</instance_attributes><operations><op id="${FENCE_DEVICE_ID}-monitor" name="monitor" interval="30s"/></operations></primitive>`;
}
