/**
 * The board's management interfaces beside the control socket: the serial console and the metrics
 * endpoint, when the profile has them. Their code is loaded only then (the console when configured,
 * prom-client at the first scrape): an idle board keeps the controller's footprint small (see
 * BENCHMARKS.md, bench/daemon). A console that cannot start never keeps the board from serving.
 */
import type { BoardProfile } from '../config/board-profile.js';
import type { Logger } from '../core/log.js';
import type { AlarmList } from '../store/alarms.js';
import type { Store } from '../store/journal.js';
import type { SerialConsole } from './console/index.js';
import type { snapshotFrom } from './metrics.js';
import { serveMetrics, type MetricsBody } from './metrics-endpoint.js';

export interface ManagementDeps {
  board: BoardProfile;
  store: Store;
  /** The console's lockout is raised and cleared here. */
  alarms?: AlarmList;
  log: Logger;
  /** The guest's console socket while it runs, and its console log. */
  guestConsole(): { socket?: string; log?: string };
  /** What the console shows after a login, if anything (the controller is not serving, and why). */
  notice?(): string | undefined;
  /** What a scrape reports, as src/mgmt/metrics.ts snapshotFrom takes it. */
  scrape(): Promise<Parameters<typeof snapshotFrom>[0]>;
}

export interface Management {
  close(): Promise<void>;
}

/** console-lockout: raised at a lockout, cleared when it ends or a login succeeds. */
function followLockout(console: SerialConsole, alarms: AlarmList, device: string): void {
  const resource = alarms.resource('console');
  let timer: NodeJS.Timeout | undefined;
  console.on('auth', (e) => {
    if (e.kind === 'lockout') {
      alarms.raise('console-lockout', resource, `serial console ${device} locked for ${Math.ceil((e.lockedForMs ?? 0) / 1000)} s after ${e.failures ?? '?'} failed logins (last user "${e.user}")`);
      clearTimeout(timer);
      timer = setTimeout(() => alarms.clear('console-lockout', resource, 'the console lockout ended'), e.lockedForMs ?? 0);
      timer.unref();
    } else if (e.kind === 'login') {
      clearTimeout(timer);
      alarms.clear('console-lockout', resource, `login of ${e.user} on the console`);
    }
  });
  // A lockout still active from before a restart: this console starts unlocked.
  alarms.clear('console-lockout', resource, 'the console started again (unlocked)');
}

export async function startManagement(d: ManagementDeps): Promise<Management> {
  const b = d.board;
  let console: SerialConsole | undefined;
  if (b.console) {
    const { SerialConsole, DEFAULT_CLI_ENTRY, consolePasswordPath } = await import('./console/index.js');
    console = new SerialConsole({
      device: b.console.device, baud: b.console.baud, board: b.name, boardFile: b.sourceFile, passwordFile: consolePasswordPath(b),
      guestConsoleSocket: () => d.guestConsole().socket,
      guestConsoleLog: () => d.guestConsole().log,
      notice: () => d.notice?.(),
      cliEntry: DEFAULT_CLI_ENTRY,
      log: d.log.child({ component: 'console' }),
    });
    console.on('auth', (e) => d.store.record('console', `${e.kind} ${e.user}${e.reason ? ` (${e.reason})` : ''}`, { ...e }));
    if (d.alarms) followLockout(console, d.alarms, b.console.device);
    try {
      await console.start();
    } catch (e) {
      d.store.record('console', `serial console not started: ${(e as Error).message}`);
      d.log.error({ err: (e as Error).message }, 'serial console not started');
      console = undefined;
    }
  }
  let metricsServer: { close(): Promise<void> } | undefined;
  if (b.metrics) {
    let registry: Promise<() => Promise<MetricsBody>> | undefined;
    const firstScrape = async () => {
      const { Metrics, snapshotFrom } = await import('./metrics.js');
      const metrics = new Metrics();
      metrics.onScrape(async () => snapshotFrom(await d.scrape()));
      return async () => ({ contentType: metrics.registry.contentType, body: await metrics.text() });
    };
    metricsServer = await serveMetrics(b.metrics.address, b.metrics.port, async () => (await (registry ??= firstScrape().catch((e) => { registry = undefined; throw e; })))());
  }
  return {
    close: async () => {
      await console?.stop().catch(() => undefined);
      await metricsServer?.close().catch(() => undefined);
    },
  };
}
