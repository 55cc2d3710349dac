/**
 * The controller's last line (src/mgmt/crash-handlers.ts), on a fake process: an unhandled rejection
 * is journaled and the controller goes on; an uncaught exception is journaled, then the controller exits.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { createLogger } from '../../src/core/log.js';
import { UNCAUGHT_EXIT_CODE, installCrashHandlers } from '../../src/mgmt/crash-handlers.js';

describe('crash handlers', () => {
  const log = createLogger('test', { level: 'silent' });

  it('journals an unhandled rejection and does not exit; journals an uncaught exception and exits 70', () => {
    const proc = new EventEmitter();
    const lines: Array<[string, string]> = [];
    const exits: number[] = [];
    const h = installCrashHandlers({ log, proc, journal: () => ({ record: (kind: string, m: string) => lines.push([kind, m]) }), exit: (c) => exits.push(c) });
    proc.emit('unhandledRejection', new TypeError("Cannot read properties of null (reading 'type')"));
    assert.deepEqual(exits, []);
    assert.equal(h.unhandledRejections(), 1);
    assert.deepEqual(lines[0], ['controller', "unhandled promise rejection (the operation is abandoned): TypeError: Cannot read properties of null (reading 'type')"]);
    proc.emit('uncaughtException', new RangeError('boom'));
    assert.deepEqual(exits, [UNCAUGHT_EXIT_CODE]);
    assert.deepEqual(lines[1], ['controller', 'uncaught exception, the controller exits: RangeError: boom']);
  });

  it('a journal that fails (closed store) does not keep the controller from exiting', () => {
    const proc = new EventEmitter();
    const exits: number[] = [];
    installCrashHandlers({ log, proc, journal: () => ({ record: () => { throw new Error('database is closed'); } }), exit: (c) => exits.push(c) });
    proc.emit('uncaughtException', new Error('x'));
    assert.deepEqual(exits, [UNCAUGHT_EXIT_CODE]);
  });
});
