/**
 * The simulated chassis' IPMI side (`chassis up --fencing ipmi`): one `ipmi_sim` (Debian's openipmi)
 * per board, standing in for the shelf manager's view of that board. Each listens on loopback inside
 * the partner's network namespace (the one board that fences it reaches it there, as a real blade
 * reaches the shelf manager on its management network), speaks RMCP+ with one admin user whose
 * password is random per run, and carries out chassis control through a script that asks the
 * chassis' power controller: `power off` really powers the board off, `power on` boots it. Owns the
 * files under <board dir>/bmc and the `fence.pass` the partner's profile names; starts nothing
 * itself (chassisd starts ipmi_sim and records its pid).
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { partnerOf, type BoardName, type ChassisLayout } from './layout.js';

/** Where each board's BMC listens (in its partner's namespace). */
export const BMC_ADDRESS: Record<BoardName, string> = { 'sim-a': '127.0.50.1', 'sim-b': '127.0.50.2' };
export const BMC_PORT = 623;
export const BMC_USER = 'fence';
/** RMCP+ cipher suite the simulated BMCs are asked with (ipmi_sim does not answer Get Channel Cipher Suites). */
export const BMC_CIPHER_SUITE = 3;

export interface BmcFiles {
  /** The board it powers (the name the power controller knows). */
  board: string;
  dir: string;
  lanConf: string;
  emu: string;
  control: string;
  stateDir: string;
  log: string;
  /** The password file the partner's profile names (fencing.passwordFile). */
  partnerPasswordFile: string;
  /** The namespace the BMC listens in: the partner's. */
  netns: string;
  address: string;
  port: number;
}

export function bmcFiles(layout: ChassisLayout, board: BoardName): BmcFiles {
  const dir = join(layout.boards[board].dir, 'bmc');
  const partner = partnerOf(board);
  return {
    board,
    dir,
    lanConf: join(dir, 'lan.conf'),
    emu: join(dir, 'bmc.emu'),
    control: join(dir, 'chassis-control'),
    stateDir: join(dir, 'state'),
    log: join(dir, 'ipmi_sim.log'),
    partnerPasswordFile: join(layout.boards[partner].dir, 'fence.pass'),
    netns: layout.boards[partner].netns,
    address: BMC_ADDRESS[board],
    port: BMC_PORT,
  };
}

/** The fencing section of a board's profile that fences its partner through the partner's BMC. */
export function ipmiFencingOf(layout: ChassisLayout, board: BoardName): Record<string, unknown> {
  const b = bmcFiles(layout, partnerOf(board));
  return { method: 'ipmitool', host: b.address, port: b.port, user: BMC_USER, passwordFile: b.partnerPasswordFile, cipherSuite: BMC_CIPHER_SUITE };
}

/**
 * ipmi_sim's chassis_control program for one board: `<mc> get power`, `<mc> set power 0|1`,
 * `<mc> set reset 1` (and `boot`, accepted and ignored). Each request is one line to the power
 * controller through socat; socat half-closes after the line and the controller answers, then
 * closes. OFF and RESET are answered once the board's processes are gone, so ipmi_sim's answer to
 * `chassis power off` comes only once the board really is off.
 */
export function chassisControlScript(powerSocket: string, board: string): string {
  return `#!/bin/sh
# chassis_control of the simulated BMC of ${board} (written by chassisd; src/sim/chassis/bmc.ts)
sock='${powerSocket}'
board='${board}'
ask() {
  reply=$(printf '%s\\n' "$1 $board" | socat -t 60 - "UNIX-CONNECT:$sock") || { echo "power controller $sock: no answer" >&2; exit 1; }
  case "$reply" in OK*) ;; *) echo "power controller: $reply" >&2; exit 1;; esac
}
shift # the MC address
op=$1; shift
case "$op" in
  get)
    for parm; do
      case "$parm" in
        power) ask STATUS; case "$reply" in "OK ON"*) echo "power:1";; *) echo "power:0";; esac;;
        boot) echo "boot:default";;
        *) echo "unknown parameter $parm" >&2; exit 1;;
      esac
    done;;
  set)
    while [ $# -ge 2 ]; do
      case "$1" in
        power) if [ "$2" = 1 ]; then ask ON; else ask OFF; fi;;
        reset) ask RESET;;
        boot|identify) ;;
        *) echo "unknown parameter $1" >&2; exit 1;;
      esac
      shift 2
    done;;
  *) echo "unsupported operation $op" >&2; exit 1;;
esac
`;
}

/** ipmi_sim's LAN configuration: one RMCP+ channel on the BMC's loopback address, one admin user. */
export function lanConf(b: Pick<BmcFiles, 'board' | 'address' | 'port'>, password: string, control: string): string {
  return `# ipmi_sim configuration of the simulated BMC of ${b.board} (written by chassisd; src/sim/chassis/bmc.ts)
name "${b.board}"
set_working_mc 0x20
  startlan 1
    addr ${b.address} ${b.port}
    priv_limit admin
    allowed_auths_callback md5
    allowed_auths_user md5
    allowed_auths_operator md5
    allowed_auths_admin md5
    guid ${randomBytes(16).toString('hex')}
  endlan
  chassis_control "${control}"
  user 2 true "${BMC_USER}" "${password}" admin 10 md5
`;
}

const EMU = `# the BMC itself (IPMB 0x20), no sensors: chassis control is all the fence needs
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 0x09 0x08 0x9f 0x1291 0xf02 persist_sdr
mc_enable 0x20
`;

/**
 * Writes one BMC's files (fresh state, a new random password in lan.conf and in `partnerPasswordFile`,
 * both 0600; the chassis-control script asks the power controller at `powerSocket` about `b.board`)
 * and returns ipmi_sim's argv. Used by chassisd and by tests that run a BMC on their own.
 */
export function writeBmcConfig(b: BmcFiles, powerSocket: string): string[] {
  rmSync(b.stateDir, { recursive: true, force: true });
  mkdirSync(b.stateDir, { recursive: true, mode: 0o700 });
  chmodSync(b.dir, 0o700);
  const password = randomBytes(12).toString('base64url');
  writeFileSync(b.control, chassisControlScript(powerSocket, b.board), { mode: 0o700 });
  writeFileSync(b.lanConf, lanConf(b, password, `${b.control} 0x20`), { mode: 0o600 });
  writeFileSync(b.emu, EMU, { mode: 0o600 });
  writeFileSync(b.partnerPasswordFile, `${password}\n`, { mode: 0o600 });
  return ['ipmi_sim', '-c', b.lanConf, '-f', b.emu, '-s', b.stateDir, '-n'];
}

/** One board's BMC in the chassis: its files written, and ipmi_sim's argv. */
export function writeBmcFiles(layout: ChassisLayout, board: BoardName): { files: BmcFiles; argv: string[] } {
  const files = bmcFiles(layout, board);
  return { files, argv: writeBmcConfig(files, layout.powerSocket) };
}
