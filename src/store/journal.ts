/**
 * The board's durable store: SQLite (better-sqlite3) in WAL mode in the board's storage directory.
 * Owns the event journal (every role transition, link change, fencing, guest restart, with its cause)
 * and small durable counters such as the boot generation. Nothing here decides anything.
 *
 * The journal runs with synchronous=NORMAL (a power cut may lose its last events, never corrupt it).
 * The few values that protect the pair after a power cut (the boot generation, the partner's
 * generations) are written with `durably`: their transaction alone runs with synchronous=FULL, so it
 * is on disk (fsync of the WAL) before the call returns, and the journal's own writes stay as fast.
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
