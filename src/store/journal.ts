/**
 * The board's durable store: SQLite (better-sqlite3) in WAL mode in the board's storage directory.
 * Owns the event journal (every role transition, link change, fencing, guest restart, with its cause)
 * and small durable counters such as the boot generation. Nothing here decides anything.
 */
import Database from 'better-sqlite3';
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

  constructor(storageDir: string, file = 'understudy.db') {
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

  /** Increments and returns the boot generation: heartbeats from an older generation are rejected. */
  nextGeneration(): number {
    return this.db.transaction(() => {
      const row = this.db.prepare("SELECT value FROM meta WHERE key = 'generation'").get() as { value: string } | undefined;
      const gen = (row ? Number(row.value) : 0) + 1;
      this.db.prepare("INSERT INTO meta (key, value) VALUES ('generation', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(String(gen));
      return gen;
    })();
  }

  getMeta(key: string): string | undefined {
    return (this.db.prepare('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  setMeta(key: string, value: string): void {
    this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
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
