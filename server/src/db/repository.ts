/**
 * The one module that holds SQL. Routes and the worker talk to a `Repository`; a
 * PostgreSQL backend would implement the same interface without touching them.
 */
import {
  isUniqueViolation,
  writeTransaction,
  type SqliteDatabase,
} from "./connection.js";

export type JobStatus = "uploaded" | "processing" | "completed" | "failed";
export type StepStatus = "pending" | "running" | "completed" | "failed";
export type StepName = "text" | "chunking";

export interface UserRow {
  id: number;
  username: string;
  password_hash: string;
  is_admin: number;
  created_at: string;
  last_login: string | null;
}

export interface JobRow {
  job_id: string;
  paper_id: string;
  filename: string;
  status: JobStatus;
  current_step: string | null;
  progress_percentage: number;
  error_message: string | null;
  attempts: number;
  text_status: StepStatus;
  text_error: string | null;
  text_completed_at: string | null;
  chunking_status: StepStatus;
  chunking_error: string | null;
  chunking_completed_at: string | null;
  created_at: string;
  updated_at: string;
  completed_at: string | null;
}

export interface PaperRow {
  doc_id: string;
  filename: string;
  file_path: string;
  file_size: number;
  page_count: number | null;
  ocr_text: string | null;
  created_at: string;
  updated_at: string;
}

export interface MetadataRow {
  title: string | null;
  authors: string;
  journal: string | null;
  year: number | null;
  abstract: string | null;
  doi: string | null;
  source: string;
}

export interface ZoteroLinkRow {
  zotero_key: string;
  doc_id: string;
  zotero_version: number;
  /** The link's stored JSON text (as given at upload or by a metadata update), or null. */
  tags: string | null;
  collection_keys: string | null;
  /** 1 when the paper has a metadata row (then the columns below are its values). */
  has_metadata: number;
  title: string | null;
  /** JSON array text. */
  authors: string | null;
  year: number | null;
  doi: string | null;
  journal: string | null;
}

/** The fields a metadata update changes; an absent key leaves the column as it is. */
export interface MetadataPatch {
  title?: string | null;
  authors?: string[];
  journal?: string | null;
  year?: number;
  abstract?: string | null;
  doi?: string | null;
}

/** The Zotero link fields a metadata update or PDF replacement changes (when the paper has a link). */
export interface LinkPatch {
  version?: number;
  tags?: string[];
  collectionKeys?: string[];
}

export interface PdfReplacement {
  docId: string;
  /** The new processing job. */
  jobId: string;
  filename: string;
  /** The new file's path relative to the data dir (already committed to disk). */
  filePath: string;
  fileSize: number;
  link: LinkPatch;
}

export type ReplacePdfResult = { ok: true; oldFilePath: string } | { ok: false; reason: "not-found" };

export interface NewUpload {
  docId: string;
  jobId: string;
  filename: string;
  /** Path relative to the data dir, e.g. `pdfs/<doc_id>.pdf`. */
  filePath: string;
  fileSize: number;
  title: string;
  authors: string[];
  year: number | null;
  zotero: {
    key: string;
    libraryId: string;
    version: number;
    collectionKeys: string | null;
    tags: string | null;
  } | null;
}

export type CreateUploadResult =
  | { ok: true }
  | { ok: false; reason: "duplicate"; zoteroKey: string; existingDocId: string };

export interface JobListQuery {
  status?: string | undefined;
  limit: number;
  offset: number;
}

export interface ChunkInput {
  pageNumber: number;
  indexOnPage: number;
  text: string;
}

/** Everything the worker needs to process one claimed job. */
export interface ClaimedJob {
  jobId: string;
  docId: string;
  filePath: string;
  attempts: number;
  textDone: boolean;
}

export interface DocumentView {
  paper: PaperRow;
  metadata: MetadataRow | null;
}

const now = (): string => new Date().toISOString();

export class Repository {
  readonly db: SqliteDatabase;

  constructor(db: SqliteDatabase) {
    this.db = db;
  }

  /** Run `fn` as one write transaction (BEGIN IMMEDIATE). */
  private write<T>(fn: () => T): T {
    return writeTransaction(this.db, fn);
  }

  ping(): boolean {
    return this.db.prepare("SELECT 1 AS ok").get() !== undefined;
  }

  // ---- users ---------------------------------------------------------------------

  findUser(username: string): UserRow | undefined {
    return this.db.prepare("SELECT * FROM user WHERE username = ?").get(username) as UserRow | undefined;
  }

  hasAdmin(): boolean {
    return this.db.prepare("SELECT 1 FROM user WHERE is_admin = 1 LIMIT 1").get() !== undefined;
  }

  /** Create the admin, or reset its password and admin flag when it exists. */
  upsertAdmin(username: string, passwordHash: string): void {
    this.write(() => {
      this.db
        .prepare(
          `INSERT INTO user (username, password_hash, is_admin, created_at) VALUES (?, ?, 1, ?)
           ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash, is_admin = 1`,
        )
        .run(username, passwordHash, now());
    });
  }

  createUser(username: string, passwordHash: string, isAdmin: boolean): void {
    this.write(() => {
      this.db
        .prepare("INSERT INTO user (username, password_hash, is_admin, created_at) VALUES (?, ?, ?, ?)")
        .run(username, passwordHash, isAdmin ? 1 : 0, now());
    });
  }

  /** Record a login: a read then a write, in one immediate transaction. */
  recordLogin(username: string): boolean {
    return this.write(() => {
      const user = this.db.prepare("SELECT id FROM user WHERE username = ?").get(username) as
        | { id: number }
        | undefined;
      if (!user) return false;
      this.db.prepare("UPDATE user SET last_login = ? WHERE id = ?").run(now(), user.id);
      return true;
    });
  }

  // ---- uploads -------------------------------------------------------------------

  /**
   * Paper, Metadata (source user_api), ZoteroLink and ProcessingJob in ONE immediate
   * transaction. The duplicate check is the UNIQUE(library_id, zotero_key) index: the
   * losing insert of a race rolls the whole upload back and is reported as a duplicate.
   */
  createUpload(u: NewUpload): CreateUploadResult {
    try {
      this.write(() => this.insertUploadRows(u));
      return { ok: true };
    } catch (err) {
      if (u.zotero && isUniqueViolation(err)) {
        const existing = this.findDocIdByZoteroKey(u.zotero.libraryId, u.zotero.key);
        if (existing) return { ok: false, reason: "duplicate", zoteroKey: u.zotero.key, existingDocId: existing };
      }
      throw err;
    }
  }

  private insertUploadRows(u: NewUpload): void {
    const t = now();
    this.db
      .prepare(
        `INSERT INTO paper (doc_id, filename, file_path, file_size, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?)`,
      )
      .run(u.docId, u.filename, u.filePath, u.fileSize, t, t);
    this.db
      .prepare(
        `INSERT INTO metadata (paper_id, title, authors, year, source) VALUES (?, ?, ?, ?, 'user_api')`,
      )
      .run(u.docId, u.title, JSON.stringify(u.authors), u.year);
    if (u.zotero) {
      this.db
        .prepare(
          `INSERT INTO zoterolink (paper_id, library_id, zotero_key, zotero_version, collection_keys, tags, imported_at)
           VALUES (?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(u.docId, u.zotero.libraryId, u.zotero.key, u.zotero.version, u.zotero.collectionKeys, u.zotero.tags, t);
    }
    this.db
      .prepare(
        `INSERT INTO processingjob (job_id, paper_id, filename, status, current_step, created_at, updated_at)
         VALUES (?, ?, ?, 'uploaded', 'queued', ?, ?)`,
      )
      .run(u.jobId, u.docId, u.filename, t, t);
    this.db
      .prepare("UPDATE processingjob SET status = 'processing', updated_at = ? WHERE job_id = ?")
      .run(t, u.jobId);
  }

  findDocIdByZoteroKey(libraryId: string, key: string): string | undefined {
    const row = this.db
      .prepare("SELECT paper_id FROM zoterolink WHERE library_id = ? AND zotero_key = ?")
      .get(libraryId, key) as { paper_id: string } | undefined;
    return row?.paper_id;
  }

  /** A library's links with each paper's metadata: one query (LEFT JOIN), not one per paper. */
  zoteroLinks(libraryId: string): ZoteroLinkRow[] {
    return this.db
      .prepare(
        `SELECT z.zotero_key, z.paper_id AS doc_id, z.zotero_version, z.tags, z.collection_keys,
                m.id IS NOT NULL AS has_metadata, m.title, m.authors, m.year, m.doi, m.journal
         FROM zoterolink z LEFT JOIN metadata m ON m.paper_id = z.paper_id
         WHERE z.library_id = ? ORDER BY z.zotero_key`,
      )
      .all(libraryId) as ZoteroLinkRow[];
  }

  // ---- changes to a stored paper ----------------------------------------------------

  /**
   * Change the fields in `patch` (and, when the paper has a Zotero link, those in `link`) in
   * ONE immediate transaction. Creates the metadata row if the paper has none (as the original
   * does). Returns the metadata after the change, or undefined when no such paper exists.
   */
  updateMetadata(docId: string, patch: MetadataPatch, link: LinkPatch): MetadataRow | undefined {
    return this.write(() => {
      const t = now();
      const found = this.db.prepare("UPDATE paper SET updated_at = ? WHERE doc_id = ?").run(t, docId);
      if (found.changes === 0) return undefined;
      this.db
        .prepare("INSERT INTO metadata (paper_id, source) VALUES (?, 'user_api') ON CONFLICT(paper_id) DO NOTHING")
        .run(docId);
      this.db
        .prepare(
          `UPDATE metadata SET
             title = CASE WHEN @set_title THEN @title ELSE title END,
             authors = CASE WHEN @set_authors THEN @authors ELSE authors END,
             journal = CASE WHEN @set_journal THEN @journal ELSE journal END,
             year = CASE WHEN @set_year THEN @year ELSE year END,
             abstract = CASE WHEN @set_abstract THEN @abstract ELSE abstract END,
             doi = CASE WHEN @set_doi THEN @doi ELSE doi END
           WHERE paper_id = @doc_id`,
        )
        .run({
          doc_id: docId,
          set_title: patch.title !== undefined ? 1 : 0,
          title: patch.title ?? null,
          set_authors: patch.authors !== undefined ? 1 : 0,
          authors: patch.authors !== undefined ? JSON.stringify(patch.authors) : null,
          set_journal: patch.journal !== undefined ? 1 : 0,
          journal: patch.journal ?? null,
          set_year: patch.year !== undefined ? 1 : 0,
          year: patch.year ?? null,
          set_abstract: patch.abstract !== undefined ? 1 : 0,
          abstract: patch.abstract ?? null,
          set_doi: patch.doi !== undefined ? 1 : 0,
          doi: patch.doi ?? null,
        });
      this.updateLink(docId, link);
      return this.db
        .prepare("SELECT title, authors, journal, year, abstract, doi, source FROM metadata WHERE paper_id = ?")
        .get(docId) as MetadataRow;
    });
  }

  /** Apply a LinkPatch to the paper's Zotero link, if it has one (inside a write). */
  private updateLink(docId: string, link: LinkPatch): void {
    if (link.version === undefined && link.tags === undefined && link.collectionKeys === undefined) return;
    this.db
      .prepare(
        `UPDATE zoterolink SET
           zotero_version = CASE WHEN @set_version THEN @version ELSE zotero_version END,
           tags = CASE WHEN @set_tags THEN @tags ELSE tags END,
           collection_keys = CASE WHEN @set_collections THEN @collections ELSE collection_keys END
         WHERE paper_id = @doc_id`,
      )
      .run({
        doc_id: docId,
        set_version: link.version !== undefined ? 1 : 0,
        version: link.version ?? null,
        set_tags: link.tags !== undefined ? 1 : 0,
        tags: link.tags !== undefined ? JSON.stringify(link.tags) : null,
        set_collections: link.collectionKeys !== undefined ? 1 : 0,
        collections: link.collectionKeys !== undefined ? JSON.stringify(link.collectionKeys) : null,
      });
  }

  /**
   * Point a paper at its replacement PDF (already on disk under a new name), in ONE immediate
   * transaction: file name, path and size; its page text, chunks, page count and text dropped;
   * its unfinished jobs closed as superseded (the worker skips their results); a new job queued;
   * the Zotero link's version updated when given. Returns the old file's path, which the caller
   * removes after the commit (a crash before that leaves an unreferenced file the startup sweep
   * removes).
   */
  replacePdf(r: PdfReplacement): ReplacePdfResult {
    return this.write((): ReplacePdfResult => {
      const row = this.db.prepare("SELECT file_path FROM paper WHERE doc_id = ?").get(r.docId) as
        | { file_path: string }
        | undefined;
      if (!row) return { ok: false, reason: "not-found" };
      const t = now();
      this.db
        .prepare(
          `UPDATE paper SET filename = ?, file_path = ?, file_size = ?, page_count = NULL, ocr_text = NULL,
             updated_at = ? WHERE doc_id = ?`,
        )
        .run(r.filename, r.filePath, r.fileSize, t, r.docId);
      this.db.prepare("DELETE FROM pagetext WHERE paper_id = ?").run(r.docId);
      this.db.prepare("DELETE FROM semanticchunk WHERE paper_id = ?").run(r.docId);
      const superseded = `Superseded: the PDF was replaced (job ${r.jobId})`;
      this.db
        .prepare(
          `UPDATE processingjob SET status = 'failed', current_step = 'failed', error_message = ?,
             text_status = CASE WHEN text_status = 'running' THEN 'failed' ELSE text_status END,
             chunking_status = CASE WHEN chunking_status = 'running' THEN 'failed' ELSE chunking_status END,
             updated_at = ?, completed_at = ?
           WHERE paper_id = ? AND status IN ('uploaded', 'processing')`,
        )
        .run(superseded, t, t, r.docId);
      this.db
        .prepare(
          `INSERT INTO processingjob (job_id, paper_id, filename, status, current_step, created_at, updated_at)
           VALUES (?, ?, ?, 'processing', 'queued', ?, ?)`,
        )
        .run(r.jobId, r.docId, r.filename, t, t);
      this.updateLink(r.docId, r.link);
      return { ok: true, oldFilePath: row.file_path };
    });
  }

  /**
   * Delete a paper and everything that hangs off it (metadata, Zotero link, jobs, page text,
   * chunks) in ONE immediate transaction. The children are deleted explicitly as well as by
   * ON DELETE CASCADE, so the result does not depend on the foreign_keys pragma. Returns the
   * paper's file path (the caller removes the file after the commit), or undefined.
   */
  deletePaper(docId: string): string | undefined {
    return this.write(() => {
      const row = this.db.prepare("SELECT file_path FROM paper WHERE doc_id = ?").get(docId) as
        | { file_path: string }
        | undefined;
      if (!row) return undefined;
      for (const table of ["semanticchunk", "pagetext", "processingjob", "zoterolink", "metadata"] as const) {
        this.db.prepare(`DELETE FROM ${table} WHERE paper_id = ?`).run(docId);
      }
      this.db.prepare("DELETE FROM paper WHERE doc_id = ?").run(docId);
      return row.file_path;
    });
  }

  // ---- reads ---------------------------------------------------------------------

  getJob(jobId: string): JobRow | undefined {
    return this.db.prepare("SELECT * FROM processingjob WHERE job_id = ?").get(jobId) as JobRow | undefined;
  }

  listJobs(q: JobListQuery): { jobs: JobRow[]; total: number } {
    const where = q.status ? "WHERE status = ?" : "";
    const args: unknown[] = q.status ? [q.status] : [];
    const jobs = this.db
      .prepare(`SELECT * FROM processingjob ${where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?`)
      .all(...args, q.limit, q.offset) as JobRow[];
    const total = (this.db.prepare(`SELECT COUNT(*) AS n FROM processingjob ${where}`).get(...args) as { n: number }).n;
    return { jobs, total };
  }

  getDocument(docId: string): DocumentView | undefined {
    const paper = this.db.prepare("SELECT * FROM paper WHERE doc_id = ?").get(docId) as PaperRow | undefined;
    if (!paper) return undefined;
    const metadata = this.db
      .prepare("SELECT title, authors, journal, year, abstract, doi, source FROM metadata WHERE paper_id = ?")
      .get(docId) as MetadataRow | undefined;
    return { paper, metadata: metadata ?? null };
  }

  /** What a log line names a paper by: its Zotero key and title (undefined when no such paper). */
  paperLabel(docId: string): { doc_id: string; zotero_key: string | null; title: string | null } | undefined {
    return this.db
      .prepare(
        `SELECT p.doc_id AS doc_id, z.zotero_key AS zotero_key, m.title AS title FROM paper p
         LEFT JOIN zoterolink z ON z.paper_id = p.doc_id LEFT JOIN metadata m ON m.paper_id = p.doc_id
         WHERE p.doc_id = ?`,
      )
      .get(docId) as { doc_id: string; zotero_key: string | null; title: string | null } | undefined;
  }

  getPaper(docId: string): PaperRow | undefined {
    return this.db.prepare("SELECT * FROM paper WHERE doc_id = ?").get(docId) as PaperRow | undefined;
  }

  /** The newest papers with their latest job (the admin progress view). */
  progress(limit: number): Array<{ doc_id: string; job: JobRow | null }> {
    const papers = this.db
      .prepare("SELECT doc_id FROM paper ORDER BY created_at DESC, rowid DESC LIMIT ?")
      .all(limit) as Array<{ doc_id: string }>;
    const latest = this.db.prepare(
      "SELECT * FROM processingjob WHERE paper_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
    );
    return papers.map((p) => ({ doc_id: p.doc_id, job: (latest.get(p.doc_id) as JobRow | undefined) ?? null }));
  }

  pageTexts(docId: string): string[] {
    const rows = this.db
      .prepare("SELECT text FROM pagetext WHERE paper_id = ? ORDER BY page_number")
      .all(docId) as Array<{ text: string }>;
    return rows.map((r) => r.text);
  }

  chunkCount(docId: string): number {
    return (this.db.prepare("SELECT COUNT(*) AS n FROM semanticchunk WHERE paper_id = ?").get(docId) as { n: number }).n;
  }

  allFilePaths(): Set<string> {
    const rows = this.db.prepare("SELECT file_path FROM paper").all() as Array<{ file_path: string }>;
    return new Set(rows.map((r) => r.file_path));
  }

  counts(): { papers: number; jobs: Record<string, number> } {
    const papers = (this.db.prepare("SELECT COUNT(*) AS n FROM paper").get() as { n: number }).n;
    const rows = this.db.prepare("SELECT status, COUNT(*) AS n FROM processingjob GROUP BY status").all() as Array<{
      status: string;
      n: number;
    }>;
    const jobs: Record<string, number> = {};
    for (const r of rows) jobs[r.status] = r.n;
    return { papers, jobs };
  }

  // ---- worker ----------------------------------------------------------------------

  /**
   * Claim the oldest unfinished job: a read then a write in ONE immediate transaction,
   * so the claim never meets SQLITE_BUSY on a lock upgrade. Jobs over `maxAttempts`
   * are failed instead of being retried forever.
   */
  claimNextJob(maxAttempts: number): ClaimedJob | null {
    return this.write(() => {
      for (;;) {
        const row = this.db
          .prepare(
            `SELECT j.job_id, j.paper_id, j.attempts, j.text_status, p.file_path FROM processingjob j
             JOIN paper p ON p.doc_id = j.paper_id
             WHERE j.status IN ('uploaded', 'processing') ORDER BY j.rowid LIMIT 1`,
          )
          .get() as
          | { job_id: string; paper_id: string; attempts: number; text_status: StepStatus; file_path: string }
          | undefined;
        if (!row) return null;
        const t = now();
        if (row.attempts >= maxAttempts) {
          this.db
            .prepare(
              `UPDATE processingjob SET status = 'failed', error_message = ?, updated_at = ?, completed_at = ?
               WHERE job_id = ?`,
            )
            .run(`Gave up after ${row.attempts} interrupted attempts`, t, t, row.job_id);
          continue;
        }
        const textDone = row.text_status === "completed";
        this.db
          .prepare(
            `UPDATE processingjob SET status = 'processing', attempts = attempts + 1, current_step = ?,
               text_status = CASE WHEN text_status = 'completed' THEN text_status ELSE 'running' END,
               chunking_status = CASE WHEN ? THEN 'running' ELSE chunking_status END,
               progress_percentage = CASE WHEN ? THEN 50 ELSE 10 END, updated_at = ?
             WHERE job_id = ?`,
          )
          .run(textDone ? "chunking" : "text", textDone ? 1 : 0, textDone ? 1 : 0, t, row.job_id);
        return {
          jobId: row.job_id,
          docId: row.paper_id,
          filePath: row.file_path,
          attempts: row.attempts + 1,
          textDone,
        };
      }
    });
  }

  /**
   * True while a claimed job may still write: the job is unfinished and its paper exists. A
   * paper deleted, or a job superseded by a PDF replacement, while the worker parsed is not
   * resurrected: its results are dropped.
   */
  private jobIsLive(jobId: string, docId: string): boolean {
    return (
      this.db
        .prepare(
          `SELECT 1 FROM processingjob j JOIN paper p ON p.doc_id = j.paper_id
           WHERE j.job_id = ? AND j.paper_id = ? AND j.status IN ('uploaded', 'processing')`,
        )
        .get(jobId, docId) !== undefined
    );
  }

  /**
   * Step 1's results, in one short transaction: every page's text and the page count.
   * False (nothing written) when the paper was deleted or the job superseded meanwhile.
   * `note` (what the PDF limits changed: text cut, page skipped) is kept as the text step's
   * `text_error` while the step still completes.
   */
  saveText(jobId: string, docId: string, pages: readonly string[], note?: string): boolean {
    return this.write(() => {
      if (!this.jobIsLive(jobId, docId)) return false;
      const t = now();
      this.db.prepare("DELETE FROM pagetext WHERE paper_id = ?").run(docId);
      const ins = this.db.prepare("INSERT INTO pagetext (paper_id, page_number, text) VALUES (?, ?, ?)");
      pages.forEach((text, i) => ins.run(docId, i + 1, text));
      this.db
        .prepare("UPDATE paper SET page_count = ?, ocr_text = ?, updated_at = ? WHERE doc_id = ?")
        .run(pages.length, pages.join("\n\n"), t, docId);
      this.db
        .prepare(
          `UPDATE processingjob SET text_status = 'completed', text_completed_at = ?, text_error = ?, current_step = 'chunking',
             chunking_status = 'running', progress_percentage = 50, updated_at = ? WHERE job_id = ?`,
        )
        .run(t, note ?? null, t, jobId);
      return true;
    });
  }

  /**
   * Step 2's results, in one short transaction: the chunks, and the job completed.
   * False (nothing written) when the paper was deleted or the job superseded meanwhile.
   */
  saveChunks(jobId: string, docId: string, chunks: readonly ChunkInput[]): boolean {
    return this.write(() => {
      if (!this.jobIsLive(jobId, docId)) return false;
      const t = now();
      this.db.prepare("DELETE FROM semanticchunk WHERE paper_id = ?").run(docId);
      const ins = this.db.prepare(
        "INSERT INTO semanticchunk (paper_id, page_number, chunk_index_on_page, text) VALUES (?, ?, ?, ?)",
      );
      for (const c of chunks) ins.run(docId, c.pageNumber, c.indexOnPage, c.text);
      this.db
        .prepare(
          `UPDATE processingjob SET chunking_status = 'completed', chunking_completed_at = ?, status = 'completed',
             current_step = 'completed', progress_percentage = 100, error_message = NULL, updated_at = ?, completed_at = ?
           WHERE job_id = ?`,
        )
        .run(t, t, t, jobId);
      return true;
    });
  }

  /** Fail an unfinished job; false when it is gone (paper deleted) or already closed (superseded). */
  failJob(jobId: string, step: StepName, message: string): boolean {
    return this.write(() => {
      const t = now();
      const col = step === "text" ? "text" : "chunking";
      const res = this.db
        .prepare(
          `UPDATE processingjob SET status = 'failed', ${col}_status = 'failed', ${col}_error = ?, error_message = ?,
             current_step = 'failed', updated_at = ?, completed_at = ?
           WHERE job_id = ? AND status IN ('uploaded', 'processing')`,
        )
        .run(message, message, t, t, jobId);
      return res.changes > 0;
    });
  }
}
