import Database from "better-sqlite3";

export type SqliteDatabase = Database.Database;

/** How the connection is configured. */
export interface ConnectionOptions {
  /** Path of the SQLite file. */
  path: string;
  /** How long a statement waits for a lock before SQLITE_BUSY. Default 5000 ms. */
  busyTimeoutMs?: number;
}

export const DEFAULT_BUSY_TIMEOUT_MS = 5000;

/**
 * Open a connection and apply the pragmas. Each one matters:
 * - journal_mode=WAL: readers never block the writer and the writer never blocks
 *   readers, so an open read (a request, the worker) cannot stall an upload's commit.
 * - synchronous=NORMAL: in WAL mode commits stay durable against a process crash and
 *   only the WAL is fsynced at checkpoints, so a commit is one write, not two fsyncs.
 * - busy_timeout: a writer that meets another writer waits instead of failing.
 * - foreign_keys=ON: a job, metadata or link row can never point at a missing paper.
 * - temp_store=MEMORY: sorts and temp b-trees do not touch the disk.
 */
export function openDatabase(options: ConnectionOptions): SqliteDatabase {
  const db = new Database(options.path);
  const busy = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  db.pragma("journal_mode = WAL");
  db.pragma("synchronous = NORMAL");
  db.pragma(`busy_timeout = ${Math.max(0, Math.floor(busy))}`);
  db.pragma("foreign_keys = ON");
  db.pragma("temp_store = MEMORY");
  return db;
}

/**
 * Run `fn` inside `BEGIN IMMEDIATE`. A deferred transaction that reads and then writes
 * must upgrade its lock; if another connection holds the write lock at that moment
 * SQLite answers SQLITE_BUSY at once (the busy handler is not consulted for an upgrade,
 * and in WAL mode a stale snapshot gives SQLITE_BUSY_SNAPSHOT). Taking the write lock
 * first makes the wait happen at BEGIN, where busy_timeout applies.
 */
export function writeTransaction<T>(db: SqliteDatabase, fn: () => T): T {
  return db.transaction(fn).immediate();
}

/** Checkpoint the WAL into the main file and close. Safe to call twice. */
export function closeDatabase(db: SqliteDatabase): void {
  if (!db.open) return;
  try {
    const mode = String(db.pragma("journal_mode", { simple: true }));
    if (mode === "wal") db.pragma("wal_checkpoint(TRUNCATE)");
  } catch {
    // Another connection may still be reading; closing checkpoints what it can.
  }
  db.close();
}

/** True when an error is SQLite's "database is locked" family. */
export function isBusyError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED"));
}

/** True when an error is a UNIQUE constraint violation. */
export function isUniqueViolation(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "SQLITE_CONSTRAINT_UNIQUE" || code === "SQLITE_CONSTRAINT_PRIMARYKEY";
}
