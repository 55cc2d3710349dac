/**
 * The service address as a movable thing: on takeover the new primary adds it to its service
 * interface and announces it with gratuitous ARP (iputils-arping), so switches and clients learn the
 * new MAC at once; the old primary (if alive) removes it. Same on a real blade and in the simulated
 * chassis, where the interface sits in the board's network namespace.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { UsError } from '../core/errors.js';

const run = promisify(execFile);

export async function addressPresent(iface: string, address: string): Promise<boolean> {
  try {
    const { stdout } = await run('ip', ['-o', '-4', 'addr', 'show', 'dev', iface]);
    return stdout.split('\n').some((l) => l.includes(` ${address}/`));
  } catch {
    return false;
  }
}

export async function takeAddress(iface: string, address: string, prefixLength: number): Promise<void> {
  // One `ip` run on the takeover path: `replace` adds the address, or leaves it if already there.
  try {
    await run('ip', ['addr', 'replace', `${address}/${prefixLength}`, 'dev', iface]);
  } catch (e) {
    throw new UsError('US_ERR_CONFIG', `cannot take the service address ${address} on ${iface}: ${(e as Error).message.trim()}`);
  }
  // Gratuitous ARP, best effort and not awaited (arping lingers for its deadline): the address works
  // without it, clients just learn the new MAC later.
  const garp = spawn('arping', ['-U', '-c', '2', '-I', iface, address], { stdio: 'ignore' });
  garp.on('error', () => undefined);
  garp.unref();
}

export async function releaseAddress(iface: string, address: string, prefixLength: number): Promise<void> {
  if (await addressPresent(iface, address)) {
    await run('ip', ['addr', 'del', `${address}/${prefixLength}`, 'dev', iface]).catch(() => undefined);
  }
}
