/**
 * The quarantine of poison inputs: client requests that made both copies of the guest fail (crash or
 * hang) and failed a restored copy again at the same place when replayed (src/replication/poison.ts).
 * Each is kept with what an operator needs to judge it (its bytes, its client, its sequence number,
 * which copies failed and how, when) in the board's SQLite store, so it is never applied to a copy
 * again, also after a controller restart, and a retry of it gets the same answer.
 *
 * Owns the table and the matching rule only; decides nothing. A request matches an active entry when
 * it comes from the same client with the same request id, or carries exactly the same bytes (a
 * resend from anywhere). Released entries are kept as history and match nothing.
 *
 * The answer a matching request gets is `<id> ERR POISON q<N>` (docs/poison.md): the guest
 * protocol's error form (PROTOCOL.md §4), with the quarantine number as detail.
 */
import { createHash } from 'node:crypto';
import { UsError } from '../core/errors.js';
import { requestId } from '../core/request-id.js';
import type { Store } from './journal.js';

export interface QuarantineFailure {
  /** Which copy: 'primary', 'backup', or 'restored' (a copy restored from the checkpoint, during replay). */
  copy: string;
  /** Which board it ran on. */
  board: string;
  /** 'crash' or 'hang', and the supervisor's cause. */
  how: 'crash' | 'hang';
  cause: string;
  at: string;
}

export interface QuarantineEntry {
  /** The quarantine number (q<N> in the ERR answer and the CLI). */
  id: number;
  /** Sequence number the input had in the pair's stream. */
  seq: number;
  /** The external client: address and port. */
  clientAddress: string | null;
  clientPort: number | null;
  /** The request id (its first word), as the client sent it. */
  requestId: string;
  payload: Buffer;
  /** When it was quarantined (ISO 8601). */
  at: string;
  failures: QuarantineFailure[];
  /** How it was confirmed: the restored copy failed on it when it was replayed alone. */
  confirmation: string;
  status: 'active' | 'released';
  releasedAt: string | null;
  releasedBy: string | null;
  /** Retries answered with the error since. */
  answered: number;
  /** Board-independent identity (client + bytes): the same entry on both boards. */
  key: string;
}

/** The answer to a quarantined request (docs/poison.md). */
export function poisonReply(requestId: string, entryId: number): Buffer {
  return Buffer.from(`${requestId} ERR POISON q${entryId}`);
}

/**
 * The request id as the guest reads it (src/core/request-id.ts); '' when there is none (the guest
 * stays silent to such a datagram, and the input bounds drop it before the stream).
 */
export function requestIdOf(payload: Buffer): string {
  return requestId(payload) ?? '';
}

function keyOf(clientAddress: string | null, clientPort: number | null, payload: Buffer): string {
  return createHash('sha256').update(`${clientAddress ?? ''}:${clientPort ?? ''}\n`).update(payload).digest('hex').slice(0, 32);
}

interface Row {
  id: number; seq: number; client_address: string | null; client_port: number | null; request_id: string; payload: Buffer;
  at: string; failures: string; confirmation: string; status: string; released_at: string | null; released_by: string | null;
  answered: number; key: string;
}

function entryOf(r: Row): QuarantineEntry {
  return {
    id: r.id, seq: r.seq, clientAddress: r.client_address, clientPort: r.client_port, requestId: r.request_id, payload: r.payload,
    at: r.at, failures: JSON.parse(r.failures) as QuarantineFailure[], confirmation: r.confirmation,
    status: r.status === 'released' ? 'released' : 'active', releasedAt: r.released_at, releasedBy: r.released_by, answered: r.answered, key: r.key,
  };
}

/** An entry as JSON (the payload as text where printable, always as base64). */
export type QuarantineJson = Omit<QuarantineEntry, 'payload'> & { payloadText: string | null; payloadBase64: string };

export function quarantineJson(e: QuarantineEntry): QuarantineJson {
  const { payload, ...rest } = e;
  const text = payload.toString('latin1');
  return { ...rest, payloadText: /^[\x20-\x7e]*$/.test(text) ? text : null, payloadBase64: payload.toString('base64') };
}

export class Quarantine {
  /** Active entries in memory: matched on every client request (no SQL on the data path). */
  private byClientId = new Map<string, QuarantineEntry>();
  private byPayload = new Map<string, QuarantineEntry>();
  /** Active entries (two may carry the same bytes from two clients: byPayload.size is not the count). */
  private active = 0;

  constructor(private readonly store: Store) {
    store.db.exec(`CREATE TABLE IF NOT EXISTS quarantine (
      id INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL, client_address TEXT, client_port INTEGER,
      request_id TEXT NOT NULL, payload BLOB NOT NULL, at TEXT NOT NULL, failures TEXT NOT NULL, confirmation TEXT NOT NULL,
      status TEXT NOT NULL DEFAULT 'active', released_at TEXT, released_by TEXT, answered INTEGER NOT NULL DEFAULT 0,
      key TEXT NOT NULL UNIQUE)`);
    this.reload();
  }

  private reload(): void {
    this.byClientId.clear();
    this.byPayload.clear();
    this.active = 0;
    for (const e of this.list()) {
      if (e.status !== 'active') continue;
      this.active++;
      // Without an id (never a poison input: the input bounds drop it) it matches by its bytes only.
      if (e.requestId) this.byClientId.set(`${e.clientAddress}:${e.clientPort}:${e.requestId}`, e);
      this.byPayload.set(e.payload.toString('latin1'), e);
    }
  }

  get activeCount(): number {
    return this.active;
  }

  /** The active entry a client request matches (same client and id, or the same bytes), if any. */
  match(client: { address: string; port: number } | undefined, payload: Buffer): QuarantineEntry | undefined {
    if (!this.byPayload.size) return undefined;
    const exact = this.byPayload.get(payload.toString('latin1'));
    if (exact) return exact;
    const id = client && requestIdOf(payload);
    return id ? this.byClientId.get(`${client.address}:${client.port}:${id}`) : undefined;
  }

  /** Counts one retry answered with the error (journaled by the caller at most now and then). */
  noteAnswered(e: QuarantineEntry): void {
    e.answered++;
    this.store.db.prepare('UPDATE quarantine SET answered = answered + 1 WHERE id = ?').run(e.id);
  }

  /**
   * Quarantines a request (or returns the entry it already has: the same client and bytes). An input
   * that was released and poisoned the copies again is the same entry, active again with its new
   * failures (else it would match nothing and crash both copies at every retry). Written with
   * synchronous=FULL: a poison input forgotten by a power cut would crash both copies again.
   */
  add(e: { seq: number; client?: { address: string; port: number }; payload: Buffer; failures: QuarantineFailure[]; confirmation: string; at?: string }): QuarantineEntry {
    return this.put({ ...e, clientAddress: e.client?.address ?? null, clientPort: e.client?.port ?? null }, keyOf(e.client?.address ?? null, e.client?.port ?? null, e.payload));
  }

  /**
   * add() under a given key and, when it is free here, a given number (the partner's, in merge: the
   * same entry has the same key and, unless the two histories differ, the same q<N> on both boards,
   * so a retry after a failover gets the same answer byte for byte).
   */
  private put(e: { seq: number; clientAddress: string | null; clientPort: number | null; payload: Buffer; failures: QuarantineFailure[]; confirmation: string; at?: string }, key: string, wantedId?: number): QuarantineEntry {
    const existing = this.byKey(key);
    if (existing?.status === 'active') return existing;
    const at = e.at ?? new Date().toISOString();
    const id = this.store.durably(() => {
      if (existing) {
        this.store.db.prepare(`UPDATE quarantine SET seq = ?, at = ?, failures = ?, confirmation = ?, status = 'active', released_at = NULL, released_by = NULL
          WHERE id = ?`).run(e.seq, at, JSON.stringify(e.failures), e.confirmation, existing.id);
        return existing.id;
      }
      const free = wantedId !== undefined && Number.isSafeInteger(wantedId) && wantedId >= 1 && !this.get(wantedId) ? wantedId : null;
      return Number(this.store.db.prepare(`INSERT INTO quarantine (id, seq, client_address, client_port, request_id, payload, at, failures, confirmation, key)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(free, e.seq, e.clientAddress, e.clientPort, requestIdOf(e.payload), e.payload,
        at, JSON.stringify(e.failures), e.confirmation, key).lastInsertRowid);
    });
    this.reload();
    return this.get(id)!;
  }

  /**
   * Entries learnt from the partner (the pair keeps one quarantine): added when new, released when the
   * partner released them, active again when the partner quarantined one again after it was released
   * here (its time is later than the release). Returns how many changed here.
   */
  merge(entries: QuarantineEntry[]): number {
    let changed = 0;
    // Oldest first (by the partner's number, else by time), so numbers taken here follow its order.
    for (const e of [...entries].sort((x, y) => x.id - y.id || (x.at < y.at ? -1 : x.at > y.at ? 1 : 0))) {
      const mine = this.byKey(e.key);
      if (!mine || (mine.status === 'released' && e.status === 'active' && e.at > (mine.releasedAt ?? ''))) {
        const added = this.put(e, e.key, e.id);
        if (e.status === 'released') this.release(added.id, e.releasedBy ?? 'the partner', e.releasedAt ?? undefined);
        changed++;
      } else if (mine.status === 'active' && e.status === 'released') {
        this.release(mine.id, e.releasedBy ?? 'the partner', e.releasedAt ?? undefined);
        changed++;
      }
    }
    return changed;
  }

  private byKey(key: string): QuarantineEntry | undefined {
    const r = this.store.db.prepare('SELECT * FROM quarantine WHERE key = ?').get(key) as Row | undefined;
    return r ? entryOf(r) : undefined;
  }

  get(id: number): QuarantineEntry | undefined {
    const r = this.store.db.prepare('SELECT * FROM quarantine WHERE id = ?').get(id) as Row | undefined;
    return r ? entryOf(r) : undefined;
  }

  /** Every entry, newest first. */
  list(): QuarantineEntry[] {
    return (this.store.db.prepare('SELECT * FROM quarantine ORDER BY id DESC').all() as Row[]).map(entryOf);
  }

  /**
   * The operator takes an input out of quarantine (it was fixed in a new guest version, or judged
   * harmless): it matches nothing from now on, and a retry reaches the guest again.
   */
  release(id: number, by: string, at = new Date().toISOString()): QuarantineEntry {
    const e = this.get(id);
    if (!e) throw new UsError('US_ERR_NOT_FOUND', `no quarantined input q${id}`);
    if (e.status === 'released') throw new UsError('US_ERR_ROLE', `q${id} was already released (${e.releasedAt} by ${e.releasedBy})`);
    this.store.durably(() => this.store.db.prepare("UPDATE quarantine SET status = 'released', released_at = ?, released_by = ? WHERE id = ?").run(at, by, id));
    this.reload();
    return this.get(id)!;
  }
}
