/**
 * `refserver-lite migrate --from DIR --to postgres://…`: copy a SQLite library (DIR/refserver.db)
 * into PostgreSQL: users, papers, metadata, Zotero links, jobs, page text, chunks and browser
 * sessions. The PDFs stay where they are: start the PostgreSQL server with `--data DIR`.
 *
 * - Consistent: the SQLite side is read in one read transaction (one snapshot).
 * - All or nothing: the PostgreSQL side is written in one transaction.
 * - Safe to run twice: every row is inserted with ON CONFLICT DO NOTHING on its own key, so a
 *   second run adds only what the first did not copy (rows the library gained meanwhile; a row
 *   changed in SQLite after it was copied is not updated: stop the SQLite server first).
 * - Verified: before the commit, every table must hold as many rows in PostgreSQL as in the
 *   snapshot; otherwise (PostgreSQL held other rows before) the transaction is rolled back, and it
 *   says so and exits 1.
 */
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import Database from "better-sqlite3";
import type pg from "pg";
import { DB_FILENAME, checkDatabaseUrl, redactUrl } from "./db/open.js";
import { makePool } from "./db/pg/client.js";
import { migratePostgres } from "./db/pg/migrations.js";

const USAGE = `Usage: refserver-lite migrate --from DIR --to postgres://user@host:5432/dbname

Copies the SQLite library in DIR (DIR/refserver.db) into the PostgreSQL database: users, papers,
metadata, Zotero links, jobs, page text, chunks and browser sessions, in one transaction, then
checks that every table holds as many rows there as in DIR. Safe to run twice. Stop the SQLite
server first. The PDFs stay in DIR/pdfs: start the server with --data DIR --database URL.
The database URL may also come from REFSERVER_DATABASE_URL.
Exit codes: 0 copied and verified, 1 failed or counts differ, 2 usage.
`;

interface TableCopy {
  table: string;
  /** The PostgreSQL name (quoted where it is a keyword). */
  target: string;
  columns: readonly string[];
  /** The ON CONFLICT target: the row's own key. */
  key: string;
}

/** In dependency order: parents before the rows that reference them. */
const TABLES: readonly TableCopy[] = [
  { table: "user", target: '"user"', columns: ["username", "password_hash", "is_admin", "created_at", "last_login"], key: "(username)" },
  { table: "paper", target: "paper", columns: ["doc_id", "filename", "file_path", "file_size", "page_count", "ocr_text", "created_at", "updated_at"], key: "(doc_id)" },
  { table: "metadata", target: "metadata", columns: ["paper_id", "title", "authors", "journal", "year", "abstract", "doi", "source"], key: "(paper_id)" },
  { table: "zoterolink", target: "zoterolink", columns: ["paper_id", "library_id", "zotero_key", "zotero_version", "collection_keys", "tags", "imported_at"], key: "(paper_id)" },
  {
    table: "processingjob",
    target: "processingjob",
    columns: [
      "job_id", "paper_id", "filename", "status", "current_step", "progress_percentage", "error_message", "attempts",
      "text_status", "text_error", "text_completed_at", "chunking_status", "chunking_error", "chunking_completed_at",
      "created_at", "updated_at", "completed_at",
    ],
    key: "(job_id)",
  },
  { table: "pagetext", target: "pagetext", columns: ["paper_id", "page_number", "text"], key: "(paper_id, page_number)" },
  { table: "semanticchunk", target: "semanticchunk", columns: ["paper_id", "page_number", "chunk_index_on_page", "text"], key: "(paper_id, page_number, chunk_index_on_page)" },
  { table: "session", target: "session", columns: ["id_hash", "username", "csrf_token", "created_at", "expires_at"], key: "(id_hash)" },
];

/** Rows per INSERT. */
const BATCH = 200;

export interface MigrateReport {
  /** Rows in the SQLite snapshot, per table. */
  source: Record<string, number>;
  /** Rows this run inserted (a second run: 0 for what the first copied). */
  inserted: Record<string, number>;
  /** Tables whose PostgreSQL count differs from the snapshot's. */
  mismatches: Array<{ table: string; sqlite: number; postgres: number }>;
}

export class MigrateError extends Error {}

/** Copy DIR's SQLite library into the PostgreSQL database at `url`. */
export async function migrateLibrary(fromDir: string, url: string): Promise<MigrateReport> {
  const dbPath = join(resolve(fromDir), DB_FILENAME);
  if (!existsSync(dbPath)) throw new MigrateError(`${fromDir} holds no ${DB_FILENAME}: give the --data directory of a SQLite refserver-lite`);
  const sqlite = new Database(dbPath, { readonly: true, fileMustExist: true });
  sqlite.pragma("busy_timeout = 5000");
  const pool = makePool({ url, max: 1, applicationName: "refserver-lite migrate" });
  const report: MigrateReport = { source: {}, inserted: {}, mismatches: [] };
  try {
    const client = await pool.connect();
    try {
      await migratePostgres(client);
      sqlite.exec("BEGIN"); // one read snapshot for the whole copy
      await client.query("BEGIN");
      try {
        for (const t of TABLES) {
          report.source[t.table] = (sqlite.prepare(`SELECT COUNT(*) AS n FROM "${t.table}"`).get() as { n: number }).n;
          report.inserted[t.table] = await copyTable(sqlite, client, t);
        }
        // Verified before the commit: when the counts differ nothing of this run is kept.
        for (const t of TABLES) {
          const { rows } = await client.query<{ n: number }>(`SELECT COUNT(*) AS n FROM ${t.target}`);
          const n = rows[0]?.n ?? 0;
          const expected = report.source[t.table] ?? 0;
          if (n !== expected) report.mismatches.push({ table: t.table, sqlite: expected, postgres: n });
        }
        await client.query(report.mismatches.length === 0 ? "COMMIT" : "ROLLBACK");
      } catch (err) {
        await client.query("ROLLBACK").catch(() => undefined);
        throw err;
      } finally {
        sqlite.exec("COMMIT");
      }
    } finally {
      client.release();
    }
  } finally {
    sqlite.close();
    await pool.end();
  }
  return report;
}

async function copyTable(sqlite: Database.Database, client: pg.PoolClient, t: TableCopy): Promise<number> {
  const cols = t.columns.map((c) => `"${c}"`).join(", ");
  const page = sqlite.prepare(`SELECT rowid AS _rowid, ${cols} FROM "${t.table}" WHERE rowid > ? ORDER BY rowid LIMIT ${BATCH}`);
  let last = -Infinity;
  let inserted = 0;
  for (;;) {
    const batch = page.all(last) as Array<Record<string, unknown> & { _rowid: number }>;
    if (batch.length === 0) return inserted;
    last = batch[batch.length - 1]?._rowid ?? last;
    const values: unknown[] = [];
    const tuples = batch.map((row) => {
      const slots = t.columns.map((c) => {
        values.push(row[c] ?? null);
        return `$${values.length}`;
      });
      return `(${slots.join(", ")})`;
    });
    const res = await client.query(`INSERT INTO ${t.target} (${cols}) VALUES ${tuples.join(", ")} ON CONFLICT ${t.key} DO NOTHING`, values);
    inserted += res.rowCount ?? 0;
  }
}

export async function migrateCommand(
  argv: string[],
  io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream } = process,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: { from: { type: "string" }, to: { type: "string" }, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    io.stderr.write(`refserver-lite migrate: ${(err as Error).message}\nTry --help.\n`);
    return 2;
  }
  if (parsed.values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  const usage = (message: string): number => {
    io.stderr.write(`refserver-lite migrate: ${message}\nTry --help.\n`);
    return 2;
  };
  const from = parsed.values.from;
  const to = parsed.values.to ?? env.REFSERVER_DATABASE_URL;
  if (!from) return usage("--from DIR is required (the SQLite server's --data directory)");
  if (!to) return usage("--to postgres://user@host:5432/dbname is required");
  const checked = checkDatabaseUrl(to);
  if (checked instanceof Error) return usage(checked.message.replace("--database", "--to"));
  try {
    const report = await migrateLibrary(from, to);
    const summary = Object.entries(report.source)
      .map(([table, n]) => `${table} ${n} (${report.inserted[table] ?? 0} new)`)
      .join(", ");
    io.stdout.write(`refserver-lite migrate: ${redactUrl(to)}: ${summary}\n`);
    if (report.mismatches.length > 0) {
      for (const m of report.mismatches) {
        io.stderr.write(
          `refserver-lite migrate: ${m.table}: ${m.postgres} rows in PostgreSQL, ${m.sqlite} in ${from}: the database held other rows before; nothing was copied: migrate into an empty database\n`,
        );
      }
      return 1;
    }
    io.stdout.write(`refserver-lite migrate: counts verified. Start the server with --data ${from} --database ${redactUrl(to)} (the PDFs stay in ${join(from, "pdfs")})\n`);
    return 0;
  } catch (err) {
    const message = err instanceof MigrateError ? err.message : `${redactUrl(to)}: ${(err as Error).message}`;
    io.stderr.write(`refserver-lite migrate: ${message}\n`);
    return 1;
  }
}
