import { randomUUID } from "node:crypto";
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { DiskFullError, FileSaveError, NotPdfError } from "./errors.js";

export const PDF_DIR = "pdfs";
export const TMP_DIR = "tmp";
const PDF_MAGIC = Buffer.from("%PDF-", "latin1");

/** Files older than this are a crash's leftovers even while another server process runs. */
export const STALE_FILE_MS = 60 * 60 * 1000;

/** The disk (or the user's quota) is full: ENOSPC, EDQUOT, SQLite's SQLITE_FULL, PostgreSQL's 53100. */
export function isDiskFull(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === "ENOSPC" || code === "EDQUOT" || code === "SQLITE_FULL" || code === "53100";
}

/** A failure to store a file, as a domain error: the disk is full, or another I/O error. */
export function saveFailure(err: unknown): Error {
  if (isDiskFull(err)) return new DiskFullError();
  return new FileSaveError((err as NodeJS.ErrnoException).code ?? "I/O error");
}

/** The result of streaming one upload to a temp file. */
export interface StagedFile {
  tempPath: string;
  size: number;
}

/** Make a client filename safe to store and show: no directories, no `..`, no controls. */
export function sanitizeFilename(name: string): string {
  const base = name.split(/[\\/]/).pop() ?? "";
  let clean = base
    .replace(/[\u0000-\u001f\u007f]/g, "")
    .replace(/\.{2,}/g, ".")
    .replace(/^[.\s]+/, "")
    .trim();
  if (clean.length > 200) clean = clean.slice(clean.length - 200);
  return clean.length > 0 ? clean : "document.pdf";
}

export class FileStore {
  readonly dataDir: string;

  constructor(dataDir: string) {
    this.dataDir = dataDir;
  }

  async init(): Promise<void> {
    await mkdir(join(this.dataDir, PDF_DIR), { recursive: true });
    await mkdir(join(this.dataDir, TMP_DIR), { recursive: true });
  }

  absolute(relPath: string): string {
    return join(this.dataDir, relPath);
  }

  /** Relative path of a paper's file; generated from the doc id, never from client input. */
  relativePathFor(docId: string): string {
    return `${PDF_DIR}/${docId}.pdf`;
  }

  /**
   * A fresh path for a paper's replacement PDF (`pdfs/<doc_id>.<uuid>.pdf`): the new file is
   * committed under it while the row still names the old one, so neither is ever missing.
   */
  replacementPathFor(docId: string): string {
    return `${PDF_DIR}/${docId}.${randomUUID()}.pdf`;
  }

  /**
   * Stream `source` to a temp file in the data dir, never holding it whole in memory;
   * check that it starts with `%PDF-` (400 otherwise, after draining), fsync and close.
   */
  async stage(source: Readable): Promise<StagedFile> {
    const tempPath = join(this.dataDir, TMP_DIR, `${randomUUID()}.partial`);
    let fh: FileHandle | undefined;
    // A write that failed (a full disk): the temp file is removed at once and the rest of
    // the part is still read, so the client gets an answer rather than a reset connection.
    let failure: unknown;
    const dropTemp = async (): Promise<void> => {
      if (fh) await fh.close().catch(() => undefined);
      fh = undefined;
      await rm(tempPath, { force: true });
    };
    try {
      fh = await open(tempPath, "wx", 0o600);
    } catch (err) {
      failure = err;
    }
    let size = 0;
    let head = Buffer.alloc(0);
    let badMagic = false;
    try {
      for await (const chunk of source) {
        const buf = chunk as Buffer;
        if (badMagic || failure !== undefined || !fh) continue; // drain the rest of the part
        if (head.length < PDF_MAGIC.length) {
          head = Buffer.concat([head, buf.subarray(0, PDF_MAGIC.length - head.length)]);
          if (head.length === PDF_MAGIC.length && !head.equals(PDF_MAGIC)) {
            badMagic = true;
            continue;
          }
        }
        size += buf.length;
        try {
          await fh.write(buf);
        } catch (err) {
          failure = err;
          await dropTemp();
        }
      }
      if (failure !== undefined || !fh) throw failure;
      if (badMagic || head.length < PDF_MAGIC.length) {
        throw new NotPdfError();
      }
      await fh.sync();
      await fh.close();
      fh = undefined;
      return { tempPath, size };
    } catch (err) {
      await dropTemp();
      throw isDiskFull(err) ? new DiskFullError() : err;
    }
  }

  /** Move a staged file to its final name and fsync the directory so the rename is durable. */
  async commit(staged: StagedFile, relPath: string): Promise<void> {
    const target = this.absolute(relPath);
    await rename(staged.tempPath, target);
    const dir = await open(join(this.dataDir, PDF_DIR), "r");
    try {
      await dir.sync();
    } catch {
      // Some filesystems refuse fsync on a directory; the rename still happened.
    } finally {
      await dir.close();
    }
  }

  async discard(path: string): Promise<void> {
    await rm(path, { force: true });
  }

  /** Remove a stored PDF by its relative path; a file already gone is not an error. */
  async remove(relPath: string): Promise<void> {
    await rm(this.absolute(relPath), { force: true });
  }

  /**
   * Startup sweep: remove every temp file, and every stored PDF that no paper row
   * names (only those older than `olderThanMs` when another server process may be writing): left by a crash between rename and commit (upload, PDF replacement), or between
   * a commit and the unlink of the file it made obsolete (PDF replacement, deletion).
   * Returns what it removed.
   */
  async sweep(knownPaths: ReadonlySet<string>, olderThanMs = 0): Promise<string[]> {
    const removed: string[] = [];
    const cutoff = Date.now() - olderThanMs;
    const old = async (path: string): Promise<boolean> =>
      olderThanMs <= 0 || ((await stat(path).catch(() => undefined))?.mtimeMs ?? Infinity) < cutoff;
    for (const name of await readdir(join(this.dataDir, TMP_DIR))) {
      if (!(await old(join(this.dataDir, TMP_DIR, name)))) continue;
      await rm(join(this.dataDir, TMP_DIR, name), { force: true, recursive: true });
      removed.push(`${TMP_DIR}/${name}`);
    }
    for (const name of await readdir(join(this.dataDir, PDF_DIR))) {
      const rel = `${PDF_DIR}/${name}`;
      if (!knownPaths.has(rel) && (await old(join(this.dataDir, PDF_DIR, name)))) {
        await unlink(join(this.dataDir, PDF_DIR, name)).catch(() => undefined);
        removed.push(rel);
      }
    }
    return removed;
  }
}
