/**
 * The controller's last line against what no guard caught: a promise rejected with nobody waiting
 * is journaled and logged and the controller goes on (the operation it belonged to is abandoned,
 * Node would otherwise end the process); an exception thrown out of an event handler is journaled
 * and logged, and the controller exits (its state may be half-changed: the watchdog and the partner's
 * fencing take over from a controller that is gone, never from one that is wrong). Partner messages
 * never get here: each channel validates what it reads (replication/rejections.ts).
 */
import type { Logger } from '../core/log.js';

export interface CrashHandlerDeps {
  log: Logger;
  /** The event journal, if open (kind "controller"). */
  journal?: () => { record(kind: string, message: string, detail?: Record<string, unknown>): unknown } | undefined;
  /** Default: process.exit. */
  exit?: (code: number) => void;
  /** Default: process. */
  proc?: Pick<NodeJS.EventEmitter, 'on'>;
}

/** Exit code after an uncaught exception (EX_SOFTWARE). */
export const UNCAUGHT_EXIT_CODE = 70;

export function installCrashHandlers(d: CrashHandlerDeps): { unhandledRejections: () => number } {
  const proc = d.proc ?? process;
  let rejections = 0;
  const describe = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e)).slice(0, 500);
  const record = (message: string, detail: Record<string, unknown>) => {
    try {
      d.journal?.()?.record('controller', message, detail);
    } catch { /* the journal itself may be what failed */ }
  };
  proc.on('unhandledRejection', (reason: unknown) => {
    rejections++;
    d.log.error({ err: describe(reason), stack: (reason as Error)?.stack }, 'unhandled promise rejection: the operation is abandoned, the controller goes on');
    record(`unhandled promise rejection (the operation is abandoned): ${describe(reason)}`, { count: rejections });
  });
  proc.on('uncaughtException', (err: Error) => {
    d.log.fatal({ err: describe(err), stack: err?.stack }, 'uncaught exception: the controller exits');
    record(`uncaught exception, the controller exits: ${describe(err)}`, { stack: String(err?.stack ?? '').slice(0, 2000) });
    (d.exit ?? process.exit)(UNCAUGHT_EXIT_CODE);
  });
  return { unhandledRejections: () => rejections };
}
