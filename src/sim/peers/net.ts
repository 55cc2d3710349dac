/**
 * The network of a peer set-up: the simulated chassis's topology made by the chassis's own code
 * (chassis/netns.ts) under another name: a namespace per board joined by the partner link (`plink`,
 * 198.51.100.1/.2), and the service network's namespace (the clients at 192.0.2.100, the AUTH
 * service at 192.0.2.200) bridged to each board's `svc0` (192.0.2.1/.2). The service address
 * 192.0.2.10 belongs to whichever board the peer's own mechanism gives it to. Owns only the
 * namespaces and links it creates; removes them on down().
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { BOARD_NAMES, PLINK_ADDRESS, SERVICE_BOARD_ADDRESS, SERVICE_INTERFACE, SERVICE_PREFIX, SERVICE_VIP, type BoardName } from '../chassis/layout.js';
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
    // A guest's user-mode NIC binds the service address on both boards before either holds it.
    for (const ns of boards) await run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv4.ip_nonlocal_bind=1']);
  } catch (e) {
    await peerNetDown(net).catch(() => undefined);
    throw e;
  }
  return net;
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
  await run('ip', ['netns', 'exec', net.boards[board], 'arping', '-q', '-U', '-c', '1', '-I', SERVICE_INTERFACE, SERVICE_VIP]).catch(() => undefined);
}

export async function dropServiceAddress(net: PeerNet, board: BoardName): Promise<void> {
  await ip('-n', net.boards[board], 'addr', 'del', `${SERVICE_VIP}/${SERVICE_PREFIX}`, 'dev', SERVICE_INTERFACE).catch(() => undefined);
}
