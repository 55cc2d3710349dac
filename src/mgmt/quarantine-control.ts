/**
 * The quarantine of poison inputs as the operator reaches it (docs/poison.md): the control socket's
 * `quarantine.list`, `quarantine.show` and `quarantine.release`, and the `poison-input` alarm (one
 * per quarantined input, qualifier `q<N>`, on the board's guest resource; src/store/alarms.ts).
 *
 * Owns the argument checks, the journal line of a release and the alarm's raise and clear. The
 * entries, their matching and their durability are the store's (src/store/quarantine.ts); what a
 * release does to the pair (telling the partner) is the caller's, through onReleased. The daemon
 * composes it; nothing here touches the guest or the pair.
 */
import { UsError } from '../core/errors.js';
import type { AlarmChange, AlarmList } from '../store/alarms.js';
import type { Store } from '../store/journal.js';
import { quarantineJson, type Quarantine, type QuarantineEntry } from '../store/quarantine.js';

export interface QuarantineControlDeps {
  /** The board's name, in every answer. */
  board: string;
  /** The board's quarantine, or undefined on a board that hosts no guest (or not yet / no longer). */
  quarantine: () => Quarantine | undefined;
  /** The journal a release is recorded in (kind `quarantine`). */
  store: Store;
  /** The alarm list whose `poison-input` alarms a release clears. */
  alarms?: AlarmList;
  /** Called after an entry was released here (the pair keeps one quarantine: the partner must hear it). */
  onReleased?: (e: QuarantineEntry) => void;
}

type Handler = (a: Record<string, unknown>) => unknown;

/** Who released an entry when the request does not say. */
export const DEFAULT_RELEASED_BY = 'operator';

/**
 * A quarantine number as an operator writes it: 7, '7' or 'q7' (Q7 too). Throws US_ERR_CONTROL
 * naming the field otherwise.
 */
export function parseQuarantineId(command: string, v: unknown): number {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^[qQ]?\d{1,15}$/.test(v.trim()) ? Number(v.trim().replace(/^[qQ]/, '')) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) {
    throw new UsError('US_ERR_CONTROL', `${command}: id must be a quarantine number such as 7 or q7 (got ${v === undefined ? 'nothing' : JSON.stringify(v)})`, { field: 'id' });
  }
  return n;
}

/** Who the operator says released it: 1-64 printable characters. */
function parseBy(v: unknown): string {
  if (v === undefined) return DEFAULT_RELEASED_BY;
  if (typeof v !== 'string' || !/^[\x20-\x7e]{1,64}$/.test(v) || !v.trim()) {
    throw new UsError('US_ERR_CONTROL', `quarantine.release: by must be a name of 1-64 printable characters (got ${JSON.stringify(v)})`, { field: 'by' });
  }
  return v.trim();
}

/** The client as it is written in texts: address:port, or 'an unknown client'. */
export function clientText(e: Pick<QuarantineEntry, 'clientAddress' | 'clientPort'>): string {
  return e.clientAddress === null ? 'an unknown client' : `${e.clientAddress}${e.clientPort === null ? '' : `:${e.clientPort}`}`;
}

/** How the copies failed, in order: 'primary crash, backup crash, restored crash'. */
export function failuresText(e: Pick<QuarantineEntry, 'failures'>): string {
  return e.failures.map((f) => `${f.copy} ${f.how}`).join(', ') || '-';
}

/**
 * Raises the `poison-input` alarm of a quarantined input (the caller does it once the entry is
 * stored). One alarm per input (qualifier `q<N>`): a second poison input is a notification of its own.
 */
export function raisePoisonAlarm(alarms: AlarmList, entry: QuarantineEntry): AlarmChange | undefined {
  const text = `q${entry.id}: input seq ${entry.seq} from ${clientText(entry)}, request id ${entry.requestId || '(none)'}, `
    + `failed ${failuresText(entry)}; quarantined, answered ERR POISON q${entry.id}`;
  return alarms.raise('poison-input', alarms.resource('guest'), text, { qualifier: `q${entry.id}` });
}

/** Clears the alarm of an entry released (here, or by the partner: merge). */
export function clearPoisonAlarm(alarms: AlarmList, entry: QuarantineEntry): AlarmChange | undefined {
  return alarms.clear('poison-input', alarms.resource('guest'), `q${entry.id} released by ${entry.releasedBy ?? 'someone'}: a retry reaches the guest again`, { qualifier: `q${entry.id}` });
}

/**
 * Brings the `poison-input` alarms in line with the quarantine: raised for every active entry,
 * cleared for every other one. For after a merge from the partner and at start-up (a quarantined
 * input is written with an fsync, its alarm is not: a power cut between the two loses the alarm).
 * Returns the changes.
 */
export function syncPoisonAlarms(alarms: AlarmList, q: Quarantine): AlarmChange[] {
  const changes: AlarmChange[] = [];
  const active = new Set<string>();
  for (const e of q.list()) {
    if (e.status !== 'active') continue;
    active.add(`q${e.id}`);
    const c = raisePoisonAlarm(alarms, e);
    if (c) changes.push(c);
  }
  for (const a of alarms.activeOf('poison-input')) {
    if (active.has(a.alarmTypeQualifier)) continue;
    const c = alarms.clear('poison-input', a.resource, `${a.alarmTypeQualifier || 'the input'} is no longer in quarantine`, { qualifier: a.alarmTypeQualifier });
    if (c) changes.push(c);
  }
  return changes;
}

/** The control socket's quarantine commands (the daemon adds them to its own). */
export function quarantineCommands(d: QuarantineControlDeps): Record<string, Handler> {
  const none = (id: number) => new UsError('US_ERR_NOT_FOUND', `no quarantined input q${id}: board ${d.board} hosts no guest, so it keeps no quarantine`);
  return {
    'quarantine.list': (a) => {
      if (a.active !== undefined && typeof a.active !== 'boolean') {
        throw new UsError('US_ERR_CONTROL', `quarantine.list: active must be true or false (got ${JSON.stringify(a.active)})`, { field: 'active' });
      }
      const q = d.quarantine();
      const all = q?.list() ?? [];
      const entries = a.active === true ? all.filter((e) => e.status === 'active') : all;
      return { board: d.board, active: q?.activeCount ?? 0, entries: entries.map(quarantineJson) };
    },
    'quarantine.show': (a) => {
      const id = parseQuarantineId('quarantine.show', a.id);
      const q = d.quarantine();
      if (!q) throw none(id);
      const e = q.get(id);
      if (!e) throw new UsError('US_ERR_NOT_FOUND', `no quarantined input q${id} on board ${d.board} ("understudy quarantine list" lists them)`);
      return { board: d.board, entry: quarantineJson(e) };
    },
    'quarantine.release': (a) => {
      const id = parseQuarantineId('quarantine.release', a.id);
      const by = parseBy(a.by);
      const q = d.quarantine();
      if (!q) throw none(id);
      const e = q.release(id, by);
      d.store.record('quarantine', `q${id} released by ${by}: input seq ${e.seq} from ${clientText(e)}, request id ${e.requestId || '(none)'}, `
        + `no longer answered ERR POISON; a retry reaches the guest again (${q.activeCount} still in quarantine)`,
      { id, seq: e.seq, client: clientText(e), requestId: e.requestId, key: e.key, by, active: q.activeCount });
      if (d.alarms) {
        clearPoisonAlarm(d.alarms, e);
        if (q.activeCount === 0) syncPoisonAlarms(d.alarms, q);
      }
      d.onReleased?.(e);
      return { board: d.board, entry: quarantineJson(e), active: q.activeCount };
    },
  };
}
