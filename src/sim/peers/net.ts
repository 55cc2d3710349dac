/**
 * The network of a peer set-up: the simulated chassis's topology made by the chassis's own code
 * (chassis/netns.ts) under another name: a namespace per board joined by the partner link (`plink`,
 * 198.51.100.1/.2), and the service network's namespace (the clients at 192.0.2.100, the AUTH
 * service at 192.0.2.200) bridged to each board's `svc0` (192.0.2.1/.2). The service address
 * 192.0.2.10 belongs to whichever board the peer's own mechanism gives it to.
 * On each board the guest's NIC is a tap (`dx0`, the board 10.0.0.1, the guest 10.0.0.2 as its
 * descriptor says), and the board forwards: the service address's port to the guest (DNAT), the
 * guest's AUTH queries out to the service network (masquerade): nftables in the board's namespace.
 * The forward applies only while the board holds the service address (`fib daddr type local`).
 * (QEMU's user-mode network cannot stand in: its forwarded UDP port answers only the first client.)
 * Owns only the namespaces and links it creates; removes them on down().
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { BOARD_NAMES, PLINK_ADDRESS, SERVICE_BOARD_ADDRESS, SERVICE_INTERFACE, SERVICE_PORT, SERVICE_PREFIX, SERVICE_VIP, type BoardName } from '../chassis/layout.js';
import { assertNetworkFree, createNetwork, createServiceNetwork, ip, removeNetwork, vethTempNames } from '../chassis/netns.js';

const run = promisify(execFile);

export interface PeerNet {
  name: string;
  boards: Record<BoardName, string>;
  serviceNetns: string;
  vethTemp: string[];
}

/** Names are `<name>-a`, `<name>-b`, `<name>-n` (a chassis name: a lowercase letter, then ≤ 7 letters or digits). */
export async function peerNetUp(name: string): Promise<PeerNet> {
  const net: PeerNet = { name, boards: { 'sim-a': `${name}-a`, 'sim-b': `${name}-b` }, serviceNetns: `${name}-n`, vethTemp: [] };
  const plink = vethTempNames(name);
  const svc = [...vethTempNames(`${name}s`), ...vethTempNames(`${name}t`)] as [string, string, string, string];
  net.vethTemp = [...plink, ...svc];
  const boards: [string, string] = [net.boards['sim-a'], net.boards['sim-b']];
  await assertNetworkFree({ namespaces: boards, vethTemp: plink, addresses: [PLINK_ADDRESS['sim-a'], PLINK_ADDRESS['sim-b']] });
  try {
    await createNetwork({ namespaces: boards, vethTemp: plink, addresses: [PLINK_ADDRESS['sim-a'], PLINK_ADDRESS['sim-b']] });
    await createServiceNetwork({ serviceNetns: net.serviceNetns, boards, vethTemp: svc, addresses: [SERVICE_BOARD_ADDRESS['sim-a'], SERVICE_BOARD_ADDRESS['sim-b']] });
    for (const ns of boards) await guestLink(ns);
  } catch (e) {
    await peerNetDown(net).catch(() => undefined);
    throw e;
  }
  return net;
}

/** The guest's tap on the board and the board's forwarding to and from it. */
export const GUEST_TAP = 'dx0';
export const GUEST_ADDRESS = '10.0.0.2';
const BOARD_GUEST_SIDE = '10.0.0.1/24';

export function natRules(): string {
  return `table ip peer {
  chain pre { type nat hook prerouting priority dstnat; ip daddr ${SERVICE_VIP} fib daddr type local udp dport ${SERVICE_PORT} dnat to ${GUEST_ADDRESS}:${SERVICE_PORT}; }
  chain post { type nat hook postrouting priority srcnat; ip saddr 10.0.0.0/24 oifname "${SERVICE_INTERFACE}" masquerade; }
}
`;
}

async function guestLink(ns: string): Promise<void> {
  await ip('-n', ns, 'tuntap', 'add', 'dev', GUEST_TAP, 'mode', 'tap');
  await ip('-n', ns, 'addr', 'add', BOARD_GUEST_SIDE, 'dev', GUEST_TAP);
  await ip('-n', ns, 'link', 'set', GUEST_TAP, 'up');
  await run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  await new Promise<void>((resolve, reject) => {
    const c = execFile('ip', ['netns', 'exec', ns, 'nft', '-f', '-'], (e, _o, err) => (e ? reject(new Error(`nft in ${ns}: ${err || e.message}`)) : resolve()));
    c.stdin!.end(natRules());
  });
}

export async function peerNetDown(net: PeerNet): Promise<void> {
  await removeNetwork([...BOARD_NAMES.map((b) => net.boards[b]), net.serviceNetns], net.vethTemp);
}

/** A board's service NIC up or down (down: a board without power answers nothing). */
export async function setServiceLink(net: PeerNet, board: BoardName, up: boolean): Promise<void> {
  await ip('-n', net.boards[board], 'link', 'set', SERVICE_INTERFACE, up ? 'up' : 'down');
}

/** Gives the service address to `board` and announces it (gratuitous ARP), as a takeover does. */
export async function takeServiceAddress(net: PeerNet, board: BoardName): Promise<void> {
  await ip('-n', net.boards[board], 'addr', 'replace', `${SERVICE_VIP}/${SERVICE_PREFIX}`, 'dev', SERVICE_INTERFACE);
  // Unsolicited ARP: nothing to wait for (arping would sit out its one-second interval).
  spawn('ip', ['netns', 'exec', net.boards[board], 'arping', '-q', '-U', '-c', '1', '-I', SERVICE_INTERFACE, SERVICE_VIP], { stdio: 'ignore' }).on('error', () => undefined);
}

export async function dropServiceAddress(net: PeerNet, board: BoardName): Promise<void> {
  await ip('-n', net.boards[board], 'addr', 'del', `${SERVICE_VIP}/${SERVICE_PREFIX}`, 'dev', SERVICE_INTERFACE).catch(() => undefined);
}
