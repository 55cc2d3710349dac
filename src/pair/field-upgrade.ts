/**
 * The pair's side of a rolling field upgrade (src/upgrade/rolling.ts runs the sequence): the upgrade
 * channel to the partner (src/upgrade/peer.ts), this board's view of the pair, the switchover and
 * the reboot into a trial. A run that rebooted this board into its trial resumes here. Works on a
 * paired board with or without a guest.
 */
import { join } from 'node:path';
import type { BoardProfile } from '../config/board-profile.js';
import { UsError } from '../core/errors.js';
import { readKeyFile } from '../core/key-file.js';
import { boardPowerFor } from '../hw/fencing/fencing.js';
import type { PartnerRejections } from '../replication/rejections.js';
import type { AuthServer } from '../replication/secure-channel.js';
import { upgradeSetupFor } from '../upgrade/board-setup.js';
import { PeerClient, UPGRADE_PORT_OFFSET, listenPeer } from '../upgrade/peer.js';
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
  const rolling = new RollingUpgrade({
    board: b.name,
    get partner() { return ha.membership.partnerView.heartbeat?.sender ?? 'the partner'; },
    setup,
    peer: new PeerClient(eth.partnerAddress, eth.port + UPGRADE_PORT_OFFSET, key, d.rejections),
    pairView: () => {
      const role = ha.currentRole;
      return {
        role,
        guest: host ? host.supervisor.currentState : null,
        protected: role === 'PRIMARY' && !!host?.replicator.protectedNow && !pair?.cloneInProgress,
        backlog: host ? Math.max(0, host.replicator.lastSeq - host.replicator.deliveredSeq) : 0,
      };
    },
    journal: (message, detail) => d.journal.record('upgrade', message, detail),
    switchover: () => (pair ? pair.switchover.handOver()
      : Promise.reject(new UsError('US_ERR_ROLE', `switchover: board ${b.name} does not replicate (no partner or no guest)`))),
    rebootSelf: () => rebootSelf(b, d.journal, setup.rebootCommand, ha),
  }, join(b.storageDir, 'rolling-upgrade.json'));
  void (async () => {
    // The partner-link address may not be up yet.
    for (let attempt = 0; attempt < 60 && !d.stopping(); attempt++) {
      try {
        server = await listenPeer({
          address: eth.localAddress, port: eth.port + UPGRADE_PORT_OFFSET, key, incomingDir: setup.incomingDir, handler: rolling.handler,
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
  return { rolling, startRun, close: async () => { await server?.close().catch(() => undefined); } };
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
