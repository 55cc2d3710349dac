/**
 * The partner's control messages, one dispatch. Each message type arrives already validated
 * (src/replication/messages.ts decodeControl); this table says in which role it is acted on and by
 * which pair module. A message that arrives in another role is logged and ignored: it is stale (the
 * roles changed while it was on its way), or it came from a partner that disagrees about the roles,
 * which the HA machine, not a control message, resolves.
 *
 * The clone protocol itself (clone-prepare, clone-ready, clone-failed, clone-done) stays with the
 * clone manager (src/replication/manager.ts), which hands every other type here.
 */
import type { Role } from '../ha/frame.js';
import type { ControlMessage, ControlType } from '../replication/messages.js';
import type { GuestHang } from './guest-hang.js';
import type { GuestUpgrade } from './guest-upgrade.js';
import type { PoisonGuard } from './poison-guard.js';
import type { PairParts } from './parts.js';
import type { Protection } from './protection.js';
import type { Switchover } from './switchover.js';

type Msg<T extends ControlType> = Extract<ControlMessage, { type: T }>;

interface Route<T extends ControlType> {
  /** The roles in which the message is acted on; 'any' for reports that carry their own context. */
  roles: readonly Role[] | 'any';
  handle(m: Msg<T>): void;
}

export type ControlRoutes = { [T in ControlType]?: Route<T> };

/** The routes of a pair: who acts on what, in which role. */
export function controlRoutes(p: PairParts, protection: Protection, switchover: Switchover, upgrade: GuestUpgrade, guestHang: GuestHang, poison?: PoisonGuard): ControlRoutes {
  return {
    // The backup's copy diverged, lost inputs or died: clone again (unless a guest upgrade is replacing it).
    reclone: { roles: ['PRIMARY'], handle: (m) => {
      if (upgrade.waitingForBackup) p.journal.record('guest-upgrade', `backup asks for a re-clone during the guest upgrade (${m.reason}): left to the upgrade`);
      else protection.onRecloneRequest(m.reason);
    } },
    'guest-upgrade-prepare': { roles: ['BACKUP'], handle: (m) => void upgrade.onPrepare(m.guestFile) },
    'guest-upgrade-progress': { roles: 'any', handle: (m) => upgrade.onBackupReport(m) },
    'guest-upgrade-ready': { roles: 'any', handle: (m) => upgrade.onBackupReport(m) },
    'guest-upgrade-failed': { roles: 'any', handle: (m) => upgrade.onBackupReport(m) },
    switchover: { roles: ['BACKUP'], handle: (m) => switchover.onPartnerHandsOver(m.keepCopy === true) },
    'guest-upgrade-commit': { roles: ['PRIMARY'], handle: () => void upgrade.commit().catch(() => undefined) },
    // The backup's witness says this board's guest stopped answering: checked here, then handed over.
    'guest-hung': { roles: ['PRIMARY'], handle: (m) => guestHang.onBackupReport(m) },
    // The primary's quarantine of poison inputs: merged, so this board answers their retries the same way.
    quarantine: { roles: ['BACKUP'], handle: (m) => poison?.onPartnerQuarantine(m) },
  };
}

/** Acts on one message of the partner's; returns whether it was acted on. */
export function dispatchControl(routes: ControlRoutes, role: Role, m: ControlMessage, log: PairParts['log']): boolean {
  const route = routes[m.type] as Route<typeof m.type> | undefined;
  if (!route || (route.roles !== 'any' && !route.roles.includes(role))) {
    log.warn({ type: m.type, role }, 'partner control message ignored in this role');
    return false;
  }
  route.handle(m as never);
  return true;
}
