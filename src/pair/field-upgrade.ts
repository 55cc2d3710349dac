/**
 * The pair's side of a rolling field upgrade (src/upgrade/rolling.ts runs the sequence): the upgrade
 * channel to the partner (src/upgrade/peer.ts), this board's view of the pair, the switchover and
 * the reboot into a trial. A run interrupted by a controller restart resumes here. Works on a
 * paired board with or without a guest. Also the guest package of `guest upgrade --to <package>`:
 * unpacked here and, over the same channel, on the partner (src/upgrade/guest-package.ts).
 */
import { realpathSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { BoardProfile } from '../config/board-profile.js';
import { UsError } from '../core/errors.js';
import { readKeyFile } from '../core/key-file.js';
import { boardPowerFor } from '../hw/fencing/fencing.js';
import type { PartnerRejections } from '../replication/rejections.js';
import type { AuthServer } from '../replication/secure-channel.js';
import { upgradeSetupFor } from '../upgrade/board-setup.js';
import { chooseGuestDescriptor, unpackGuestPackage } from '../upgrade/guest-package.js';
import { loadTrustedKeys } from '../upgrade/keys.js';
import { PeerClient, UPGRADE_PORT_OFFSET, listenPeer, type PeerRequest } from '../upgrade/peer.js';
import { DEFAULT_ROLLING, RollingUpgrade } from '../upgrade/rolling.js';
import type { HaController } from '../ha/ha-controller.js';
import type { PairController } from './controller.js';
import type { HaPart, HostPart, Journal } from './parts.js';

export interface FieldUpgradeDeps {
  board: BoardProfile;
  ha: HaPart & Pick<HaController, 'leaveForReboot' | 'rebootFailed'>;
  journal: Journal;
  /** The guest and its pair, when this board hosts one. */
  host?: HostPart;
  pair?: PairController;
  /** Where refused upgrade-channel messages are counted and journaled. */
  rejections?: PartnerRejections;
  /** True once the controller stops (the channel then stops trying to listen). */
  stopping(): boolean;
}

export interface FieldUpgrade {
  rolling: RollingUpgrade;
  /**
   * `guest upgrade --to <package>` on the primary: unpacks the guest package here and on the partner
   * (pushed over the upgrade channel, verified there with its own keys) and returns the descriptor
   * here to upgrade to.
   */
  prepareGuestPackage(packagePath: string): Promise<string>;
  /** Starts a rolling upgrade from a control request's arguments (package, timeoutMs, stableMs), checked. */
  startRun(a: Record<string, unknown>): Promise<unknown>;
  close(): Promise<void>;
}

export function startFieldUpgrade(d: FieldUpgradeDeps): FieldUpgrade {
  const b = d.board;
  const eth = b.partner!.ethernet!;
  const key = readKeyFile(b.ha!.keyFile);
  const setup = upgradeSetupFor(b);
  const { ha, host, pair } = d;
  let server: AuthServer | undefined;
  const peer = new PeerClient(() => eth.partnerAddress, eth.port + UPGRADE_PORT_OFFSET, key, d.rejections);
  const unpack = (packagePath: string) => unpackGuestPackage({ packagePath, family: setup.family, trustedKeys: loadTrustedKeys(setup.keysDir), storageDir: b.storageDir, reserveBytes: setup.reserveBytes });
  const rolling = new RollingUpgrade({
    board: b.name,
    get partner() { return ha.membership.partnerView.heartbeat?.sender ?? 'the partner'; },
    setup,
    peer,
    pairView: () => {
      const role = ha.currentRole;
      return {
        role,
        guest: host ? host.supervisor.currentState : null,
        protected: role === 'PRIMARY' && !!host?.replicator.protectedNow && !pair?.cloneInProgress,
        backlog: host ? Math.max(0, host.replicator.lastSeq - host.replicator.deliveredSeq) : 0,
        cloning: role === 'PRIMARY' && !!pair?.cloneInProgress,
      };
    },
    journal: (message, detail) => d.journal.record('upgrade', message, detail),
    switchover: () => (pair ? pair.switchover.handOver()
      : Promise.reject(new UsError('US_ERR_ROLE', `switchover: board ${b.name} does not replicate (no partner or no guest)`))),
    rebootSelf: () => rebootSelf(b, d.journal, setup.rebootCommand, ha),
  }, join(b.storageDir, 'rolling-upgrade.json'));
  /** The partner's requests: a guest package to unpack (only one it pushed here), else the rolling upgrade's. */
  const handler = async (req: PeerRequest): Promise<unknown> => {
    if (req.op !== 'guest-package') return rolling.handler(req);
    const file = realpathSync(req.file);
    if (dirname(file) !== realpathSync(setup.incomingDir)) throw new UsError('US_ERR_CONTROL', `guest-package: ${req.file} is not a package the partner pushed`);
    try {
      const p = await unpack(file);
      d.journal.record('guest-upgrade', `guest package ${p.id} (${p.version}) unpacked for the partner: ${p.descriptors.map((g) => `${g.name} ${g.version}`).join(', ')}`, { id: p.id });
      return { id: p.id, descriptors: p.descriptors.map(({ ref, name, version }) => ({ ref, name, version })) };
    } finally {
      rmSync(file, { force: true });
    }
  };
  const prepareGuestPackage = async (packagePath: string): Promise<string> => {
    if (ha.currentRole !== 'PRIMARY' || !host) throw new UsError('US_ERR_ROLE', `guest upgrade: board ${b.name} is ${ha.currentRole}${host ? '' : ' without a guest'}; run it on the primary`);
    const where = `guest package ${packagePath}`;
    const here = await unpack(resolve(packagePath));
    const target = chooseGuestDescriptor(here, host.supervisor.guest, where);
    d.journal.record('guest-upgrade', `guest package ${here.id} (${here.version}) verified and unpacked${here.fresh ? '' : ' (already here)'}: upgrading to ${target.name} ${target.version}; pushing it to the partner`, { id: here.id });
    const put = await peer.put(resolve(packagePath));
    const there = await peer.call<{ id: string; descriptors: Array<{ ref: string }> }>({ op: 'guest-package', file: put.file }, 600000);
    if (there.id !== here.id || !there.descriptors.some((g) => g.ref === target.ref)) {
      throw new UsError('US_ERR_GUEST_UPGRADE', `${where}: the partner unpacked ${there.id}, not ${here.id} with ${target.ref}`);
    }
    return target.file;
  };
  void (async () => {
    // The partner-link address may not be up yet.
    for (let attempt = 0; attempt < 60 && !d.stopping(); attempt++) {
      try {
        server = await listenPeer({
          address: eth.localAddress, port: eth.port + UPGRADE_PORT_OFFSET, key, incomingDir: setup.incomingDir, handler,
          rejections: d.rejections, reserveBytes: setup.reserveBytes,
          onReject: (e) => d.journal.record('upgrade', `rejected a partner connection on the upgrade channel: ${e.message}`),
        });
        if (d.stopping()) await server.close();
        return;
      } catch {
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    d.journal.record('upgrade', 'the upgrade channel could not listen on the partner link: rolling upgrades cannot reach this board');
  })();
  rolling.resume();
  const startRun = (a: Record<string, unknown>) => {
    const timeoutMs = a.timeoutMs === undefined ? DEFAULT_ROLLING.timeoutMs : Number(a.timeoutMs);
    const stableMs = a.stableMs === undefined ? DEFAULT_ROLLING.stableMs : Number(a.stableMs);
    if (!(timeoutMs >= 1000 && stableMs >= 0)) throw new UsError('US_ERR_CONTROL', 'upgrade.rolling: timeoutMs ≥ 1000 and stableMs ≥ 0');
    if (typeof a.package !== 'string' || !a.package) throw new UsError('US_ERR_CONTROL', 'upgrade.rolling: package (a path on this board) expected');
    return rolling.start(a.package, { timeoutMs, stableMs });
  };
  return { rolling, startRun, prepareGuestPackage, close: async () => { await server?.close().catch(() => undefined); } };
}

/**
 * A real blade runs the profile's reboot command; a simulated board is power-cycled by the chassis'
 * power controller. First the board announces STOPPING, as the orderly shutdown of a real reboot
 * does, so its partner sees it leave and does not fence it as lost; a reboot that then fails leaves
 * the board to its watchdog.
 */
async function rebootSelf(board: BoardProfile, journal: Journal, command: string[], ha: FieldUpgradeDeps['ha']): Promise<void> {
  journal.record('upgrade', `rebooting board ${board.name}`);
  await ha.leaveForReboot(`rebooting ${board.name} (rolling upgrade)`);
  try {
    await boardPowerFor(board, command).rebootSelf();
  } catch (e) {
    ha.rebootFailed((e as Error).message);
    throw e;
  }
}
