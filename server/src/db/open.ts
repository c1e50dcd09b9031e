/**
 * Open the storage a server runs on: SQLite in the data directory (the default), or PostgreSQL
 * when a `postgres://` URL is given. Both are migrated to the current schema before use.
 */
import { join } from "node:path";
import { closeDatabase, DEFAULT_BUSY_TIMEOUT_MS, openDatabase } from "./connection.js";
import { SqliteLibrary } from "./library.js";
import { migrate } from "./migrations.js";
import { SqliteRepository } from "./repository.js";
import { SqliteSessionStore } from "./sessions.js";
import type { Storage } from "./types.js";

export const DB_FILENAME = "refserver.db";

export interface StorageOptions {
  /** The data directory (the SQLite file lives there). */
  dataDir: string;
  /** A `postgres://` or `postgresql://` URL: use PostgreSQL instead of SQLite. */
  databaseUrl?: string | undefined;
  /** SQLite busy timeout. Default 5000 ms. */
  busyTimeoutMs?: number;
  /** Lifetime of a browser session. */
  sessionTtlMs: number;
  /** The clock of session expiry (tests). */
  now?: () => number;
  /** PostgreSQL: how long a claimed job stays leased without renewal. Default 60 s. */
  jobLeaseMs?: number;
}

/** A database URL this server can use, or an Error naming what is wrong with it. */
export function checkDatabaseUrl(url: string): URL | Error {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return new Error(`--database must be a URL such as postgres://user@host:5432/dbname, got "${redactUrl(url)}"`);
  }
  if (parsed.protocol !== "postgres:" && parsed.protocol !== "postgresql:") {
    return new Error(`--database must start with postgres:// (SQLite needs no URL: --data DIR is enough), got ${parsed.protocol}//`);
  }
  if (parsed.pathname.replace(/^\//, "") === "") {
    return new Error("--database needs a database name: postgres://user@host:5432/dbname");
  }
  return parsed;
}

/** A URL fit for a message or a log line: the password replaced by `***`. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== "") u.password = "***";
    return u.toString();
  } catch {
    return url.replace(/:[^:@/]*@/, ":***@");
  }
}

export async function openStorage(options: StorageOptions): Promise<Storage> {
  if (options.databaseUrl !== undefined && options.databaseUrl !== "") {
    const checked = checkDatabaseUrl(options.databaseUrl);
    if (checked instanceof Error) throw checked;
    // Loaded only when used: a SQLite server never loads the PostgreSQL client.
    const { openPostgres } = await import("./pg/open.js");
    return openPostgres({ url: options.databaseUrl, sessionTtlMs: options.sessionTtlMs, now: options.now, jobLeaseMs: options.jobLeaseMs });
  }
  return openSqlite(options);
}

export function openSqlite(options: StorageOptions): Storage {
  const path = join(options.dataDir, DB_FILENAME);
  const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  const db = openDatabase({ path, busyTimeoutMs });
  let workerDb: ReturnType<typeof openDatabase> | undefined;
  try {
    migrate(db);
    workerDb = openDatabase({ path, busyTimeoutMs });
  } catch (err) {
    closeDatabase(db);
    throw err;
  }
  const wdb = workerDb;
  return {
    kind: "sqlite",
    repo: new SqliteRepository(db),
    workerRepo: new SqliteRepository(wdb),
    library: new SqliteLibrary(db),
    sessions: new SqliteSessionStore(db, options.sessionTtlMs, options.now),
    aloneAtStart: true,
    startedServing: async () => undefined,
    close: async () => {
      closeDatabase(wdb);
      closeDatabase(db);
    },
  };
}
