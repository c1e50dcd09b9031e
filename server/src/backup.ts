/**
 * `refserver-lite backup DIR`: a consistent copy of a data directory, taken while the server runs.
 *
 * What a data directory holds and how each part is copied:
 * - refserver.db (+ -wal, -shm): through SQLite's online backup API (better-sqlite3's
 *   `db.backup()`), in one step, so the copy is one consistent snapshot of the database, WAL
 *   included. Copying refserver.db as a file is no backup: with WAL, committed rows may live only
 *   in refserver.db-wal, and a copy taken during a write can be torn.
 * - pdfs/: after the snapshot, exactly the files its `paper.file_path` rows name. Every stored
 *   PDF path is written once and never changed (uploads are renamed into place before their row
 *   commits; a replacement gets a new name), so a file copied for a snapshot stays right for it.
 *   A paper replaced or deleted after the snapshot has its old file removed once the change has
 *   committed: such a file is gone when we come to it, and a newer snapshot no longer names it,
 *   so the backup takes a new snapshot and copies what that one names (files already copied are
 *   kept, those it no longer names are dropped). A file named by two snapshots in a row and absent
 *   both times is missing from the data directory itself: the backup is still written, and says so.
 * - jwt-secret, and any other file or directory beside them: copied as they are (tokens signed
 *   before the backup stay valid after a restore). tmp/ (uploads in flight) is left out.
 *
 * Atomic: everything is written (and fsynced) into DIR.partial, which is then renamed to DIR, so
 * DIR either does not exist or holds a whole backup. An existing non-empty DIR is refused; a
 * DIR.partial left by an interrupted backup is removed first.
 */
import { constants } from "node:fs";
import { copyFile, cp, mkdir, open, readdir, rename, rm, rmdir, stat, writeFile } from "node:fs/promises";
import { dirname, join, resolve, sep } from "node:path";
import { parseArgs } from "node:util";
import Database from "better-sqlite3";
import { DB_FILENAME } from "./app.js";
import { DEFAULT_BUSY_TIMEOUT_MS } from "./db/connection.js";
import { PDF_DIR, TMP_DIR } from "./storage.js";
import { VERSION } from "./version.js";

/** The description written into every backup (and skipped when a restored backup is backed up). */
export const BACKUP_MANIFEST = "refserver-backup.json";
/** Pages per backup step: all of them, so the copy is one read transaction, one snapshot. */
const ALL_PAGES = 0x7fffffff;
/** Entries of the data directory that are not copied as they are. */
const NOT_COPIED_AS_IS = new Set([
  DB_FILENAME,
  `${DB_FILENAME}-wal`,
  `${DB_FILENAME}-shm`,
  `${DB_FILENAME}-journal`,
  PDF_DIR,
  TMP_DIR,
  BACKUP_MANIFEST,
]);

export interface BackupOptions {
  /** The server's data directory. */
  dataDir: string;
  /** Where the backup goes; must not exist, or be empty. */
  target: string;
  /** SQLite busy timeout for the snapshot. Default 5000 ms. */
  busyTimeoutMs?: number;
  /** Snapshots to try before giving up while papers keep being replaced or deleted. Default 10. */
  maxSnapshots?: number;
  /** Test hook: runs after each database snapshot, before its files are copied. */
  afterSnapshot?: (snapshot: number) => Promise<void> | void;
}

export interface BackupReport {
  /** The backup directory (absolute). */
  target: string;
  papers: number;
  /** PDFs copied, and their bytes. */
  files: number;
  bytes: number;
  /** Database snapshots taken: more than 1 when papers were replaced or deleted during the backup. */
  snapshots: number;
  /** Files the database names that the data directory itself lacks (not a fault of the backup). */
  missing: string[];
  /** The other state copied as it is (jwt-secret, …), relative to the data directory. */
  otherFiles: string[];
  durationMs: number;
}

/** A backup that was not written (the message says why). */
export class BackupError extends Error {}

function isErrno(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | null)?.code === code;
}

async function fsyncPath(path: string, flags = "r"): Promise<void> {
  const fh = await open(path, flags);
  try {
    await fh.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; nothing more can be done there.
  } finally {
    await fh.close();
  }
}

/** Copy a file (a reflink where the filesystem can), with its mode, fsynced; returns its size. */
async function copyDurably(from: string, to: string): Promise<number> {
  await copyFile(from, to, constants.COPYFILE_FICLONE);
  await fsyncPath(to, "r+");
  return (await stat(to)).size;
}

/** Resolve `rel` (a `paper.file_path`) under `base`, refusing anything outside `base/pdfs/`. */
function storedPath(base: string, rel: string): string {
  const abs = resolve(base, rel);
  if (!abs.startsWith(join(base, PDF_DIR) + sep)) throw new BackupError(`refusing a file path outside ${PDF_DIR}/: ${rel}`);
  return abs;
}

async function refuseNonEmpty(target: string): Promise<"absent" | "empty"> {
  let entries: string[];
  try {
    entries = await readdir(target);
  } catch (err) {
    if (isErrno(err, "ENOENT")) return "absent";
    if (isErrno(err, "ENOTDIR")) throw new BackupError(`${target} exists and is not a directory`);
    throw err;
  }
  if (entries.length > 0) throw new BackupError(`${target} exists and is not empty: a backup never overwrites one`);
  return "empty";
}

interface Snapshot {
  papers: number;
  paths: string[];
}

/** Take one snapshot of the live database into `dest` and read what it names. */
async function snapshot(source: Database.Database, dest: string): Promise<Snapshot> {
  await rm(dest, { force: true });
  await source.backup(dest, { progress: () => ALL_PAGES });
  const copy = new Database(dest, { fileMustExist: true });
  try {
    // A standalone file: the server switches it back to WAL when it opens it.
    copy.pragma("journal_mode = DELETE");
    const check = String(copy.pragma("quick_check", { simple: true }));
    if (check !== "ok") throw new BackupError(`the database copy fails SQLite's quick_check: ${check}`);
    const rows = copy.prepare("SELECT file_path FROM paper").all() as Array<{ file_path: string }>;
    return { papers: rows.length, paths: rows.map((r) => r.file_path) };
  } finally {
    copy.close();
  }
}

/** Back up a data directory (the server may be running). Throws BackupError when nothing was written. */
export async function backupDataDir(options: BackupOptions): Promise<BackupReport> {
  const started = Date.now();
  const dataDir = resolve(options.dataDir);
  const target = resolve(options.target);
  const dbPath = join(dataDir, DB_FILENAME);
  const maxSnapshots = options.maxSnapshots ?? 10;
  try {
    await stat(dbPath);
  } catch {
    throw new BackupError(
      `no ${DB_FILENAME} in ${dataDir}: is that the server's data directory? (A server on PostgreSQL is backed up with pg_dump and a copy of the PDFs: see the README.)`,
    );
  }
  if (target === dataDir || target.startsWith(dataDir + sep) || dataDir.startsWith(target + sep)) {
    throw new BackupError("the backup directory and the data directory must not contain each other");
  }
  const targetState = await refuseNonEmpty(target);
  const partial = `${target}.partial`;
  await rm(partial, { recursive: true, force: true }); // left by an interrupted backup
  await mkdir(join(partial, PDF_DIR), { recursive: true });

  let done = false;
  try {
    const source = new Database(dbPath, { fileMustExist: true });
    const copied = new Map<string, number>();
    let snap: Snapshot;
    let snapshots = 0;
    let missing: string[] = [];
    try {
      source.pragma(`busy_timeout = ${Math.max(0, Math.floor(options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS))}`);
      let goneBefore = new Set<string>();
      for (;;) {
        snapshots++;
        snap = await snapshot(source, join(partial, DB_FILENAME));
        await options.afterSnapshot?.(snapshots);
        const named = new Set(snap.paths);
        const gone: string[] = [];
        for (const rel of snap.paths) {
          if (copied.has(rel)) continue;
          try {
            copied.set(rel, await copyDurably(storedPath(dataDir, rel), storedPath(partial, rel)));
          } catch (err) {
            if (!isErrno(err, "ENOENT")) throw err;
            gone.push(rel);
          }
        }
        for (const rel of [...copied.keys()]) {
          if (named.has(rel)) continue;
          await rm(storedPath(partial, rel), { force: true });
          copied.delete(rel);
        }
        if (gone.length === 0) break;
        if (gone.every((rel) => goneBefore.has(rel))) {
          missing = gone.sort();
          break;
        }
        if (snapshots >= maxSnapshots) {
          throw new BackupError(`papers kept being replaced or deleted during ${snapshots} snapshots in a row; try again`);
        }
        goneBefore = new Set(gone);
      }
    } finally {
      source.close();
    }

    const otherFiles: string[] = [];
    for (const name of (await readdir(dataDir)).sort()) {
      if (NOT_COPIED_AS_IS.has(name)) continue;
      const from = join(dataDir, name);
      const info = await stat(from).catch(() => undefined);
      if (!info) continue;
      if (info.isFile()) await copyDurably(from, join(partial, name));
      else if (info.isDirectory()) await cp(from, join(partial, name), { recursive: true, preserveTimestamps: true });
      else continue;
      otherFiles.push(name);
    }

    let bytes = 0;
    for (const size of copied.values()) bytes += size;
    const report: BackupReport = {
      target,
      papers: snap.papers,
      files: copied.size,
      bytes,
      snapshots,
      missing,
      otherFiles,
      durationMs: 0,
    };
    const manifest = {
      format: 1,
      created_at: new Date().toISOString(),
      refserver_lite: VERSION,
      source: dataDir,
      database: DB_FILENAME,
      papers: report.papers,
      pdf_files: report.files,
      pdf_bytes: report.bytes,
      snapshots,
      missing_in_source: missing,
      other_files: otherFiles,
    };
    await writeFile(join(partial, BACKUP_MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`, { mode: 0o600 });
    await fsyncPath(join(partial, BACKUP_MANIFEST));
    await fsyncPath(join(partial, DB_FILENAME));
    await fsyncPath(join(partial, PDF_DIR));
    await fsyncPath(partial);

    if (targetState === "empty") await rmdir(target);
    await rename(partial, target);
    await fsyncPath(dirname(target));
    done = true;
    report.durationMs = Date.now() - started;
    return report;
  } finally {
    if (!done) await rm(partial, { recursive: true, force: true });
  }
}

const USAGE = `Usage: refserver-lite backup DIR [--data DATA_DIR]

Copy the data directory (database, PDFs, JWT secret) into DIR, consistently, while the
server runs. DIR must not exist (or be empty); the copy is made in DIR.partial and renamed.

  --data DIR      the server's data directory (env REFSERVER_DATA)
  -h, --help      show this help

Restore: stop the server, put DIR in place of the data directory, start the server.
Exit codes: 0 written; 1 not written (the reason is printed); 2 usage;
3 written, but the data directory itself lacks PDFs its database names (listed).
`;

/** The `backup` subcommand. Returns the exit code. */
export async function backupCommand(
  argv: string[],
  io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream } = process,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: { data: { type: "string" }, help: { type: "boolean", short: "h" } },
      strict: true,
      allowPositionals: true,
    });
  } catch (err) {
    io.stderr.write(`refserver-lite backup: ${(err as Error).message}\nTry --help.\n`);
    return 2;
  }
  if (parsed.values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  const dataDir = parsed.values.data ?? env.REFSERVER_DATA;
  const [target, ...extra] = parsed.positionals;
  const usage = (message: string): number => {
    io.stderr.write(`refserver-lite backup: ${message}\nTry --help.\n`);
    return 2;
  };
  if (!target) return usage("the backup directory DIR is required");
  if (extra.length > 0) return usage(`one backup directory only, got also: ${extra.join(" ")}`);
  if (!dataDir) return usage("--data DIR is required");
  if (typeof process.getuid === "function" && process.getuid() === 0) {
    const owner = await stat(dataDir).then((s) => s.uid, () => 0);
    if (owner !== 0) {
      io.stderr.write(
        "refserver-lite backup: warning: running as root on a data directory owned by another user; when the server " +
          "is stopped, SQLite may leave root-owned refserver.db-wal/-shm files it cannot open. Run it as that user " +
          "(sudo -u USER refserver-lite backup …).\n",
      );
    }
  }
  try {
    const r = await backupDataDir({ dataDir, target });
    const mb = (r.bytes / 1024 / 1024).toFixed(1);
    const others = r.otherFiles.length > 0 ? `, ${r.otherFiles.join(", ")}` : "";
    io.stdout.write(
      `refserver-lite backup: ${r.target}: ${r.papers} papers, ${r.files} PDFs (${mb} MB)${others}; ` +
        `${r.snapshots} database snapshot${r.snapshots === 1 ? "" : "s"}, ${(r.durationMs / 1000).toFixed(1)} s\n`,
    );
    if (r.missing.length > 0) {
      io.stderr.write(
        `refserver-lite backup: the data directory itself lacks ${r.missing.length} PDF${r.missing.length === 1 ? "" : "s"} its database names ` +
          `(the backup has the same rows without them):\n${r.missing.map((p) => `  ${p}\n`).join("")}`,
      );
      return 3;
    }
    return 0;
  } catch (err) {
    io.stderr.write(`refserver-lite backup: no backup written: ${(err as Error).message}\n`);
    return 1;
  }
}
