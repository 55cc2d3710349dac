/**
 * The board's durable store: SQLite (better-sqlite3) in WAL mode in the board's storage directory.
 * Owns the event journal (every role transition, link change, fencing, guest restart, with its cause)
 * and small durable counters such as the boot generation, and the fences this board carried out (the
 * escalation of fencing counts them). Nothing here decides anything.
 *
 * The journal runs with synchronous=NORMAL (a power cut may lose its last events, never corrupt it).
 * The few values that protect the pair after a power cut (the boot generation, the partner's
 * generations, the fences) are written with `durably`: their transaction alone runs with
 * synchronous=FULL, so it is on disk (fsync of the WAL) before the call returns, and the journal's
 * own writes stay as fast.
 */
import Database from 'better-sqlite3';
import { closeSync, fsyncSync, openSync } from 'node:fs';
import { join } from 'node:path';

export interface JournalEvent {
  id: number;
  at: string;
  kind: string;
  message: string;
  detail: Record<string, unknown> | null;
}

export interface FenceRecord {
  /** Wall-clock ms. */
  atMs: number;
  partner: string;
  /** reset, off, was-off, left-off */
  outcome: string;
  /** Powered off by escalation (too many resets within the window). */
  escalated: boolean;
}

export class Store {
  readonly db: Database.Database;
  private readonly insertEvent: Database.Statement;
  /** The directory entry of the database and its WAL is made durable once, at the first durable write. */
  private dirSynced = false;

  constructor(private readonly storageDir: string, file = 'understudy.db') {
    this.db = new Database(join(storageDir, file));
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL,
        detail TEXT
      );
      CREATE INDEX IF NOT EXISTS events_kind ON events(kind);
      CREATE TABLE IF NOT EXISTS fences (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at_ms INTEGER NOT NULL,
        partner TEXT NOT NULL,
        outcome TEXT NOT NULL,
        escalated INTEGER NOT NULL DEFAULT 0
      );
      CREATE INDEX IF NOT EXISTS fences_partner ON fences(partner, at_ms);
    `);
    this.insertEvent = this.db.prepare('INSERT INTO events (at, kind, message, detail) VALUES (?, ?, ?, ?)');
  }

  /**
   * Increments and returns the boot generation (at least `atLeast`), on disk before it returns:
   * heartbeats bound to an older generation are rejected, so a generation must never be used twice,
   * not even after a power cut.
   */
  nextGeneration(atLeast = 0): number {
    return this.durably(() => {
      const gen = Math.max(Number(this.getMeta('generation') ?? 0) + 1, atLeast);
      this.setMeta('generation', String(gen));
      return gen;
    });
  }

  getMeta(key: string): string | undefined {
    return (this.db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  setMeta(key: string, value: string): void {
    this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
  }

  /** setMeta, on disk before it returns (see `durably`). For rare writes only: each costs an fsync. */
  setMetaDurably(key: string, value: string): void {
    this.durably(() => this.setMeta(key, value));
  }

  /**
   * Runs `fn` in a transaction committed with synchronous=FULL (the WAL is fsynced at the commit),
   * then goes back to NORMAL for everything else.
   */
  durably<T>(fn: () => T): T {
    this.db.pragma('synchronous = FULL');
    try {
      return this.db.transaction(fn)();
    } finally {
      this.db.pragma('synchronous = NORMAL');
      if (!this.dirSynced) {
        // The database and its WAL file may have just been created: their names must survive too.
        const fd = openSync(this.storageDir, 'r');
        try { fsyncSync(fd); } finally { closeSync(fd); }
        this.dirSynced = true;
      }
    }
  }

  /**
   * Records a fence this board carried out (wall-clock ms; `outcome` as the device reported it:
   * reset, off, was-off, left-off), synced to disk before it returns: the count of resets decides
   * whether the next fence leaves the partner off, and a power cut of this board must not forget one.
   */
  recordFence(f: FenceRecord): void {
    this.durably(() => this.db.prepare('INSERT INTO fences (at_ms, partner, outcome, escalated) VALUES (?, ?, ?, ?)').run(Math.round(f.atMs), f.partner, f.outcome, f.escalated ? 1 : 0));
  }

  /** Fences of `partner` at or after `sinceMs` (wall clock), oldest first. */
  fencesSince(partner: string, sinceMs: number): FenceRecord[] {
    const rows = this.db.prepare('SELECT at_ms, partner, outcome, escalated FROM fences WHERE partner = ? AND at_ms >= ? ORDER BY id ASC')
      .all(partner, Math.round(sinceMs)) as Array<{ at_ms: number; partner: string; outcome: string; escalated: number }>;
    return rows.map((r) => ({ atMs: r.at_ms, partner: r.partner, outcome: r.outcome, escalated: r.escalated === 1 }));
  }

  /** The last fence of `partner`, if any. */
  lastFence(partner: string): FenceRecord | undefined {
    const r = this.db.prepare('SELECT at_ms, partner, outcome, escalated FROM fences WHERE partner = ? ORDER BY id DESC LIMIT 1')
      .get(partner) as { at_ms: number; partner: string; outcome: string; escalated: number } | undefined;
    return r && { atMs: r.at_ms, partner: r.partner, outcome: r.outcome, escalated: r.escalated === 1 };
  }

  record(kind: string, message: string, detail?: Record<string, unknown>): number {
    const r = this.insertEvent.run(new Date().toISOString(), kind, message, detail ? JSON.stringify(detail) : null);
    return Number(r.lastInsertRowid);
  }

  /** Newest last. `kind` filters by prefix (e.g. "role" matches "role.transition"). */
  events(opts: { limit?: number; kind?: string; sinceId?: number } = {}): JournalEvent[] {
    const limit = Math.min(Math.max(opts.limit ?? 50, 1), 10000);
    const rows = this.db.prepare(
      `SELECT * FROM (SELECT id, at, kind, message, detail FROM events
        WHERE (? IS NULL OR kind = ? OR kind LIKE ? || '.%') AND id > ?
        ORDER BY id DESC LIMIT ?) ORDER BY id ASC`,
    ).all(opts.kind ?? null, opts.kind ?? null, opts.kind ?? null, opts.sinceId ?? 0, limit) as Array<{ id: number; at: string; kind: string; message: string; detail: string | null }>;
    return rows.map((r) => ({ ...r, detail: r.detail ? (JSON.parse(r.detail) as Record<string, unknown>) : null }));
  }

  close(): void {
    this.db.close();
  }
}
