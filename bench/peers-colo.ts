import type { PeerRow } from './peers-lib.js';
import type { RunOptions } from './peers-understudy.js';

export async function coloRow(_o: RunOptions & { name: string; runDir: string }): Promise<PeerRow> {
  return { setup: 'QEMU COLO 7.2', runnable: false, reason: 'not yet written', notes: [] };
}
