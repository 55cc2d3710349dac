/**
 * The HA controller's timers on a fake clock: the startup wait, the fence delay of the less
 * preferred board, the fence retry, the health tick and the yield after a switchover, each at the
 * millisecond it is due, without sleeping. The membership process is not started (its start() is
 * replaced): partner events are emitted on it by hand, and fencing goes to a stand-in power
 * controller on a unix socket.
 */
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadBoardProfile } from '../../src/config/board-profile.js';
import { PACKAGE_ROOT } from '../../src/cli/locate.js';
import { FakeClock } from '../../src/core/clock.js';
import { createLogger } from '../../src/core/log.js';
import type { Heartbeat } from '../../src/ha/frame.js';
import { HaController, type RoleChange } from '../../src/ha/ha-controller.js';
import { Store } from '../../src/store/journal.js';

const log = createLogger('test', { level: 'silent' });

describe('HA controller timers on a fake clock', () => {
  let dir: string;
  let store: Store;
  let clock: FakeClock;
  let ha: HaController | undefined;
  let power: Server | undefined;
  /** Requests the stand-in power controller received, with the fake time they arrived at. */
  let powerRequests: Array<{ line: string; at: number }>;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'us-ha-'));
    store = new Store(dir);
    clock = new FakeClock();
    powerRequests = [];
  });
  afterEach(async () => {
    await ha?.stop();
    ha = undefined;
    await new Promise<void>((r) => (power ? power.close(() => r()) : r()));
    power = undefined;
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** sim-a's profile in the temp dir; `fencing: true` points it at the stand-in power controller. */
  async function controller(o: { priority: number; fencing: boolean }): Promise<{ ha: HaController; roles: RoleChange[] }> {
    const profile = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'board/sim-a.json'), 'utf8')) as Record<string, any>;
    const keyFile = join(dir, 'ha.key');
    writeFileSync(keyFile, 'ab'.repeat(32));
    chmodSync(keyFile, 0o600);
    profile.storageDir = dir;
    profile.ha = { ...profile.ha, keyFile, priority: o.priority, startupWaitMs: 5000, fenceDelayMs: 200 };
    if (o.fencing) {
      const socket = join(dir, 'power.sock');
      power = createServer((s) => {
        s.setEncoding('utf8');
        s.on('data', (line: string) => {
          powerRequests.push({ line: line.trim(), at: clock.now() });
          s.end(`OK ${line.trim()}\n`);
        });
      });
      await new Promise<void>((r) => power!.listen(socket, () => r()));
      profile.fencing = { method: 'simulated', controlSocket: socket };
    } else {
      delete profile.fencing; // no fencing: every fence fails
    }
    const file = join(dir, 'board.json');
    writeFileSync(file, JSON.stringify(profile));
    const c = new HaController(loadBoardProfile(file), store, log, { clock });
    c.membership.start = async () => undefined; // no membership process: partner events come from the test
    const roles: RoleChange[] = [];
    c.on('role', (r) => roles.push(r));
    ha = c;
    return { ha: c, roles };
  }

  /** Waits (real time) for I/O the fake clock does not drive: the power controller's answer. */
  const until = async (cond: () => boolean, what: string) => {
    for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
    assert.ok(cond(), what);
  };
  const path = (roles: RoleChange[]) => roles.map((r) => r.to);

  it('a board that hears no partner fences it after exactly startupWaitMs, and retries a failed fence every second', async () => {
    const { ha, roles } = await controller({ priority: 10, fencing: false });
    await ha.start();
    await clock.advanceAsync(4999);
    assert.equal(ha.currentRole, 'STARTING');
    await clock.advanceAsync(1);
    assert.deepEqual(path(roles), ['FENCING', 'BACKUP'], 'no fencing configured: the fence fails and the board does not promote');
    assert.match(roles[0]!.cause, /no partner heard since start/);
    await clock.advanceAsync(999);
    assert.equal(roles.length, 2);
    await clock.advanceAsync(1);
    assert.deepEqual(path(roles), ['FENCING', 'BACKUP', 'FENCING', 'BACKUP'], 'the retry, FENCE_RETRY_MS after the failure');
    assert.match(roles[2]!.cause, /retrying the fence/);
  });

  it('the less preferred board waits fenceDelayMs before powering its partner off', async () => {
    const { ha, roles } = await controller({ priority: 200, fencing: true });
    await ha.start();
    await clock.advanceAsync(5000);
    assert.equal(ha.currentRole, 'FENCING');
    await clock.advanceAsync(199);
    assert.deepEqual(powerRequests, []);
    await clock.advanceAsync(1);
    await until(() => ha.currentRole === 'PRIMARY', 'promoted once the power controller confirmed');
    assert.deepEqual(powerRequests, [{ line: 'OFF sim-b', at: 1000 + 5000 + 200 }]);
    assert.deepEqual(path(roles), ['FENCING', 'PRIMARY']);
  });

  it('after a switchover the board does not take the primary role back on a tie for yieldMs', async () => {
    const { ha, roles } = await controller({ priority: 10, fencing: true });
    await ha.start();
    await clock.advanceAsync(5000);
    await until(() => ha.currentRole === 'PRIMARY', 'preferred: fenced and promoted');
    assert.equal(powerRequests[0]?.at, 6000, 'the preferred board fences with no delay');
    assert.equal(ha.yieldPrimary(5000), true);
    const partnerBackup = { sender: 'sim-b', role: 'BACKUP' } as Heartbeat; // both boards backup: a tie
    await clock.advanceAsync(4999);
    ha.membership.emit('partner-update', partnerBackup);
    assert.equal(ha.currentRole, 'BACKUP', 'still yielding');
    await clock.advanceAsync(1);
    ha.membership.emit('partner-update', partnerBackup);
    assert.equal(ha.currentRole, 'PRIMARY', 'preferred again once the yield is over');
    assert.deepEqual(path(roles), ['FENCING', 'PRIMARY', 'BACKUP', 'PRIMARY']);
  });

  it('the health tick polls every 100 ms: a lost guest supervision stops the watchdog kicks at the next tick', async () => {
    const { ha } = await controller({ priority: 10, fencing: false });
    const stops: Array<{ reason: string; at: number }> = [];
    ha.membership.stopKicking = (reason) => { stops.push({ reason, at: clock.now() }); };
    let healthy = true;
    await ha.start({ healthy: () => healthy });
    await clock.advanceAsync(250);
    healthy = false;
    await clock.advanceAsync(49);
    assert.deepEqual(stops, []);
    await clock.advanceAsync(1);
    assert.deepEqual(stops, [{ reason: 'guest supervision lost', at: 1300 }]);
  });

  it('a heartbeat saying the partner\'s controller is hung: the backup fences it at once (no fence delay even when not preferred), and retries a failed fence while it stays hung', async () => {
    for (const fencing of [true, false]) {
      const { ha, roles } = await controller({ priority: 200, fencing });
      await ha.start();
      const primary = { sender: 'sim-b', role: 'PRIMARY', priority: 10, generation: 1, seq: 1, health: 'ok' } as Heartbeat;
      ha.membership.emit('partner-alive', primary);
      assert.equal(ha.currentRole, 'BACKUP');
      const hung = { ...primary, seq: 2, health: 'hung' } as Heartbeat;
      Object.assign(ha.membership, { partner: hung, partnerState: 'alive' }); // what MembershipProcess mirrors from its process
      ha.membership.emit('partner-update', hung);
      assert.equal(roles[1]?.to, 'FENCING');
      assert.match(roles[1]!.cause, /controller hung/);
      if (fencing) {
        await until(() => ha.currentRole === 'PRIMARY', 'promoted once the power controller confirmed');
        assert.deepEqual(powerRequests, [{ line: 'OFF sim-b', at: 1000 }], 'no fence delay');
      } else {
        await until(() => roles.length === 3, 'the fence failed');
        assert.deepEqual(path(roles), ['BACKUP', 'FENCING', 'BACKUP'], 'no fencing configured: the fence fails and the board does not promote');
        await clock.advanceAsync(1000);
        assert.deepEqual(path(roles), ['BACKUP', 'FENCING', 'BACKUP', 'FENCING', 'BACKUP'], 'retried while the partner still reports its controller hung');
        assert.match(roles[3]!.cause, /controller hung.*retrying the fence/);
      }
      await ha.stop();
      await new Promise<void>((r) => (power ? power.close(() => r()) : r()));
      power = undefined;
      powerRequests = [];
    }
  });
});
