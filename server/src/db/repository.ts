/**
 * The SQLite implementation of the `Repository` interface (types.ts): every write, and the API's
 * reads. Each write is one BEGIN IMMEDIATE transaction; statements are prepared once per
 * connection. PostgreSQL's implementation is pg/repository.ts.
 */
import type { Statement } from "better-sqlite3";
import { isUniqueViolation, writeTransaction, type SqliteDatabase } from "./connection.js";
import type {
  ChunkInput,
  ClaimedJob,
  CreateUploadResult,
  DocumentView,
  JobListQuery,
  JobRow,
  LinkPatch,
  MetadataPatch,
  MetadataRow,
  NewUpload,
  PaperRow,
  PdfReplacement,
  ReplacePdfResult,
  Repository,
  StepName,
  StepStatus,
  UserRow,
  ZoteroLinkRow,
} from "./types.js";

export type * from "./types.js";

const now = (): string => new Date().toISOString();

export class SqliteRepository implements Repository {
  readonly db: SqliteDatabase;
  private readonly statements = new Map<string, Statement>();

  constructor(db: SqliteDatabase) {
    this.db = db;
  }

  /** The statement for `sql`, prepared on first use and kept for the connection's life. */
  private q(sql: string): Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  /** Run `fn` as one write transaction (BEGIN IMMEDIATE). */
  private write<T>(fn: () => T): T {
    return writeTransaction(this.db, fn);
  }

  async ping(): Promise<boolean> {
    return this.q("SELECT 1 AS ok").get() !== undefined;
  }

  // ---- users ---------------------------------------------------------------------

  async findUser(username: string): Promise<UserRow | undefined> {
    return this.q("SELECT * FROM user WHERE username = ?").get(username) as UserRow | undefined;
  }

  async hasAdmin(): Promise<boolean> {
    return this.q("SELECT 1 FROM user WHERE is_admin = 1 LIMIT 1").get() !== undefined;
  }

  /** Create the admin, or reset its password and admin flag when it exists. */
  async upsertAdmin(username: string, passwordHash: string): Promise<void> {
    this.write(() => {
      this.q(
        `INSERT INTO user (username, password_hash, is_admin, created_at) VALUES (?, ?, 1, ?)
         ON CONFLICT(username) DO UPDATE SET password_hash = excluded.password_hash, is_admin = 1`,
      ).run(username, passwordHash, now());
    });
  }

  async createUser(username: string, passwordHash: string, isAdmin: boolean): Promise<void> {
    this.write(() => {
      this.q("INSERT INTO user (username, password_hash, is_admin, created_at) VALUES (?, ?, ?, ?)")
        .run(username, passwordHash, isAdmin ? 1 : 0, now());
    });
  }

  /** Record a login: a read then a write, in one immediate transaction. */
  async recordLogin(username: string): Promise<boolean> {
    return this.write(() => {
      const user = this.q("SELECT id FROM user WHERE username = ?").get(username) as
        | { id: number }
        | undefined;
      if (!user) return false;
      this.q("UPDATE user SET last_login = ? WHERE id = ?").run(now(), user.id);
      return true;
    });
  }

  // ---- uploads -------------------------------------------------------------------

  /**
   * Paper, Metadata (source user_api), ZoteroLink and ProcessingJob in ONE immediate
   * transaction. The duplicate check is the UNIQUE(library_id, zotero_key) index: the
   * losing insert of a race rolls the whole upload back and is reported as a duplicate.
   */
  async createUpload(u: NewUpload): Promise<CreateUploadResult> {
    try {
      this.write(() => this.insertUploadRows(u));
      return { ok: true };
    } catch (err) {
      if (u.zotero && isUniqueViolation(err)) {
        const existing = await this.findDocIdByZoteroKey(u.zotero.libraryId, u.zotero.key);
        if (existing) return { ok: false, reason: "duplicate", zoteroKey: u.zotero.key, existingDocId: existing };
      }
      throw err;
    }
  }

  private insertUploadRows(u: NewUpload): void {
    const t = now();
    this.q(
      `INSERT INTO paper (doc_id, filename, file_path, file_size, created_at, updated_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
    ).run(u.docId, u.filename, u.filePath, u.fileSize, t, t);
    this.q(
      `INSERT INTO metadata (paper_id, title, authors, year, source) VALUES (?, ?, ?, ?, 'user_api')`,
    ).run(u.docId, u.title, JSON.stringify(u.authors), u.year);
    if (u.zotero) {
      this.q(
        `INSERT INTO zoterolink (paper_id, library_id, zotero_key, zotero_version, collection_keys, tags, imported_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)`,
      ).run(u.docId, u.zotero.libraryId, u.zotero.key, u.zotero.version, u.zotero.collectionKeys, u.zotero.tags, t);
    }
    this.q(
      `INSERT INTO processingjob (job_id, paper_id, filename, status, current_step, created_at, updated_at)
       VALUES (?, ?, ?, 'uploaded', 'queued', ?, ?)`,
    ).run(u.jobId, u.docId, u.filename, t, t);
    this.q("UPDATE processingjob SET status = 'processing', updated_at = ? WHERE job_id = ?")
      .run(t, u.jobId);
  }

  async findDocIdByZoteroKey(libraryId: string, key: string): Promise<string | undefined> {
    const row = this.q("SELECT paper_id FROM zoterolink WHERE library_id = ? AND zotero_key = ?")
      .get(libraryId, key) as { paper_id: string } | undefined;
    return row?.paper_id;
  }

  /** A library's links with each paper's metadata: one query (LEFT JOIN), not one per paper. */
  async zoteroLinks(libraryId: string): Promise<ZoteroLinkRow[]> {
    return this.q(
      `SELECT z.zotero_key, z.paper_id AS doc_id, z.zotero_version, z.tags, z.collection_keys,
              m.id IS NOT NULL AS has_metadata, m.title, m.authors, m.year, m.doi, m.journal
       FROM zoterolink z LEFT JOIN metadata m ON m.paper_id = z.paper_id
       WHERE z.library_id = ? ORDER BY z.zotero_key`,
    ).all(libraryId) as ZoteroLinkRow[];
  }

  // ---- changes to a stored paper ----------------------------------------------------

  /**
   * Change the fields in `patch` (and, when the paper has a Zotero link, those in `link`) in
   * ONE immediate transaction. Creates the metadata row if the paper has none (as the original
   * does). Returns the metadata after the change, or undefined when no such paper exists.
   */
  async updateMetadata(docId: string, patch: MetadataPatch, link: LinkPatch): Promise<MetadataRow | undefined> {
    return this.write(() => {
      const t = now();
      const found = this.q("UPDATE paper SET updated_at = ? WHERE doc_id = ?").run(t, docId);
      if (found.changes === 0) return undefined;
      this.q("INSERT INTO metadata (paper_id, source) VALUES (?, 'user_api') ON CONFLICT(paper_id) DO NOTHING")
        .run(docId);
      this.q(
        `UPDATE metadata SET
           title = CASE WHEN @set_title THEN @title ELSE title END,
           authors = CASE WHEN @set_authors THEN @authors ELSE authors END,
           journal = CASE WHEN @set_journal THEN @journal ELSE journal END,
           year = CASE WHEN @set_year THEN @year ELSE year END,
           abstract = CASE WHEN @set_abstract THEN @abstract ELSE abstract END,
           doi = CASE WHEN @set_doi THEN @doi ELSE doi END
         WHERE paper_id = @doc_id`,
      ).run({
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
      return this.q("SELECT title, authors, journal, year, abstract, doi, source FROM metadata WHERE paper_id = ?")
        .get(docId) as MetadataRow;
    });
  }

  /** Apply a LinkPatch to the paper's Zotero link, if it has one (inside a write). */
  private updateLink(docId: string, link: LinkPatch): void {
    if (link.version === undefined && link.tags === undefined && link.collectionKeys === undefined) return;
    this.q(
      `UPDATE zoterolink SET
         zotero_version = CASE WHEN @set_version THEN @version ELSE zotero_version END,
         tags = CASE WHEN @set_tags THEN @tags ELSE tags END,
         collection_keys = CASE WHEN @set_collections THEN @collections ELSE collection_keys END
       WHERE paper_id = @doc_id`,
    ).run({
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
  async replacePdf(r: PdfReplacement): Promise<ReplacePdfResult> {
    return this.write((): ReplacePdfResult => {
      const row = this.q("SELECT file_path FROM paper WHERE doc_id = ?").get(r.docId) as
        | { file_path: string }
        | undefined;
      if (!row) return { ok: false, reason: "not-found" };
      const t = now();
      this.q(
        `UPDATE paper SET filename = ?, file_path = ?, file_size = ?, page_count = NULL, ocr_text = NULL,
           updated_at = ? WHERE doc_id = ?`,
      ).run(r.filename, r.filePath, r.fileSize, t, r.docId);
      this.q("DELETE FROM pagetext WHERE paper_id = ?").run(r.docId);
      this.q("DELETE FROM semanticchunk WHERE paper_id = ?").run(r.docId);
      const superseded = `Superseded: the PDF was replaced (job ${r.jobId})`;
      this.q(
        `UPDATE processingjob SET status = 'failed', current_step = 'failed', error_message = ?,
           text_status = CASE WHEN text_status = 'running' THEN 'failed' ELSE text_status END,
           chunking_status = CASE WHEN chunking_status = 'running' THEN 'failed' ELSE chunking_status END,
           updated_at = ?, completed_at = ?
         WHERE paper_id = ? AND status IN ('uploaded', 'processing')`,
      ).run(superseded, t, t, r.docId);
      this.q(
        `INSERT INTO processingjob (job_id, paper_id, filename, status, current_step, created_at, updated_at)
         VALUES (?, ?, ?, 'processing', 'queued', ?, ?)`,
      ).run(r.jobId, r.docId, r.filename, t, t);
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
  async deletePaper(docId: string): Promise<string | undefined> {
    return this.write(() => {
      const row = this.q("SELECT file_path FROM paper WHERE doc_id = ?").get(docId) as
        | { file_path: string }
        | undefined;
      if (!row) return undefined;
      for (const table of ["semanticchunk", "pagetext", "processingjob", "zoterolink", "metadata"] as const) {
        this.q(`DELETE FROM ${table} WHERE paper_id = ?`).run(docId);
      }
      this.q("DELETE FROM paper WHERE doc_id = ?").run(docId);
      return row.file_path;
    });
  }

  // ---- reads ---------------------------------------------------------------------

  async getJob(jobId: string): Promise<JobRow | undefined> {
    return this.q("SELECT * FROM processingjob WHERE job_id = ?").get(jobId) as JobRow | undefined;
  }

  async listJobs(q: JobListQuery): Promise<{ jobs: JobRow[]; total: number }> {
    const where = q.status ? "WHERE status = ?" : "";
    const args: unknown[] = q.status ? [q.status] : [];
    const jobs = this.q(`SELECT * FROM processingjob ${where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?`)
      .all(...args, q.limit, q.offset) as JobRow[];
    const total = (this.q(`SELECT COUNT(*) AS n FROM processingjob ${where}`).get(...args) as { n: number }).n;
    return { jobs, total };
  }

  async getDocument(docId: string): Promise<DocumentView | undefined> {
    const paper = this.q("SELECT * FROM paper WHERE doc_id = ?").get(docId) as PaperRow | undefined;
    if (!paper) return undefined;
    const metadata = this.q("SELECT title, authors, journal, year, abstract, doi, source FROM metadata WHERE paper_id = ?")
      .get(docId) as MetadataRow | undefined;
    return { paper, metadata: metadata ?? null };
  }

  /** What a log line names a paper by: its Zotero key and title (undefined when no such paper). */
  async paperLabel(docId: string): Promise<{ doc_id: string; zotero_key: string | null; title: string | null } | undefined> {
    return this.q(
      `SELECT p.doc_id AS doc_id, z.zotero_key AS zotero_key, m.title AS title FROM paper p
       LEFT JOIN zoterolink z ON z.paper_id = p.doc_id LEFT JOIN metadata m ON m.paper_id = p.doc_id
       WHERE p.doc_id = ?`,
    ).get(docId) as { doc_id: string; zotero_key: string | null; title: string | null } | undefined;
  }

  async getPaper(docId: string): Promise<PaperRow | undefined> {
    return this.q("SELECT * FROM paper WHERE doc_id = ?").get(docId) as PaperRow | undefined;
  }

  /** The newest papers with their latest job (the admin progress view). */
  async progress(limit: number): Promise<Array<{ doc_id: string; job: JobRow | null }>> {
    const papers = this.q("SELECT doc_id FROM paper ORDER BY created_at DESC, rowid DESC LIMIT ?")
      .all(limit) as Array<{ doc_id: string }>;
    const latest = this.q(
      "SELECT * FROM processingjob WHERE paper_id = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
    );
    return papers.map((p) => ({ doc_id: p.doc_id, job: (latest.get(p.doc_id) as JobRow | undefined) ?? null }));
  }

  async pageTexts(docId: string): Promise<string[]> {
    const rows = this.q("SELECT text FROM pagetext WHERE paper_id = ? ORDER BY page_number")
      .all(docId) as Array<{ text: string }>;
    return rows.map((r) => r.text);
  }

  async chunkCount(docId: string): Promise<number> {
    return (this.q("SELECT COUNT(*) AS n FROM semanticchunk WHERE paper_id = ?").get(docId) as { n: number }).n;
  }

  async allFilePaths(): Promise<Set<string>> {
    const rows = this.q("SELECT file_path FROM paper").all() as Array<{ file_path: string }>;
    return new Set(rows.map((r) => r.file_path));
  }

  async counts(): Promise<{ papers: number; jobs: Record<string, number> }> {
    const papers = (this.q("SELECT COUNT(*) AS n FROM paper").get() as { n: number }).n;
    const rows = this.q("SELECT status, COUNT(*) AS n FROM processingjob GROUP BY status").all() as Array<{
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
  async claimNextJob(maxAttempts: number): Promise<ClaimedJob | null> {
    return this.write(() => {
      for (;;) {
        const row = this.q(
          `SELECT j.job_id, j.paper_id, j.attempts, j.text_status, p.file_path FROM processingjob j
           JOIN paper p ON p.doc_id = j.paper_id
           WHERE j.status IN ('uploaded', 'processing') ORDER BY j.rowid LIMIT 1`,
        ).get() as
          | { job_id: string; paper_id: string; attempts: number; text_status: StepStatus; file_path: string }
          | undefined;
        if (!row) return null;
        const t = now();
        if (row.attempts >= maxAttempts) {
          this.q(
            `UPDATE processingjob SET status = 'failed', error_message = ?, updated_at = ?, completed_at = ?
             WHERE job_id = ?`,
          ).run(`Gave up after ${row.attempts} interrupted attempts`, t, t, row.job_id);
          continue;
        }
        const textDone = row.text_status === "completed";
        this.q(
          `UPDATE processingjob SET status = 'processing', attempts = attempts + 1, current_step = ?,
             text_status = CASE WHEN text_status = 'completed' THEN text_status ELSE 'running' END,
             chunking_status = CASE WHEN ? THEN 'running' ELSE chunking_status END,
             progress_percentage = CASE WHEN ? THEN 50 ELSE 10 END, updated_at = ?
           WHERE job_id = ?`,
        ).run(textDone ? "chunking" : "text", textDone ? 1 : 0, textDone ? 1 : 0, t, row.job_id);
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
      this.q(
        `SELECT 1 FROM processingjob j JOIN paper p ON p.doc_id = j.paper_id
         WHERE j.job_id = ? AND j.paper_id = ? AND j.status IN ('uploaded', 'processing')`,
      ).get(jobId, docId) !== undefined
    );
  }

  /**
   * Step 1's results, in one short transaction: every page's text and the page count.
   * False (nothing written) when the paper was deleted or the job superseded meanwhile.
   * `note` (what the PDF limits changed: text cut, page skipped) is kept as the text step's
   * `text_error` while the step still completes.
   */
  async saveText(jobId: string, docId: string, pages: readonly string[], note?: string): Promise<boolean> {
    return this.write(() => {
      if (!this.jobIsLive(jobId, docId)) return false;
      const t = now();
      this.q("DELETE FROM pagetext WHERE paper_id = ?").run(docId);
      const ins = this.q("INSERT INTO pagetext (paper_id, page_number, text) VALUES (?, ?, ?)");
      pages.forEach((text, i) => ins.run(docId, i + 1, text));
      this.q("UPDATE paper SET page_count = ?, ocr_text = ?, updated_at = ? WHERE doc_id = ?")
        .run(pages.length, pages.join("\n\n"), t, docId);
      this.q(
        `UPDATE processingjob SET text_status = 'completed', text_completed_at = ?, text_error = ?, current_step = 'chunking',
           chunking_status = 'running', progress_percentage = 50, updated_at = ? WHERE job_id = ?`,
      ).run(t, note ?? null, t, jobId);
      return true;
    });
  }

  /**
   * Step 2's results, in one short transaction: the chunks, and the job completed.
   * False (nothing written) when the paper was deleted or the job superseded meanwhile.
   */
  async saveChunks(jobId: string, docId: string, chunks: readonly ChunkInput[]): Promise<boolean> {
    return this.write(() => {
      if (!this.jobIsLive(jobId, docId)) return false;
      const t = now();
      this.q("DELETE FROM semanticchunk WHERE paper_id = ?").run(docId);
      const ins = this.q(
      "INSERT INTO semanticchunk (paper_id, page_number, chunk_index_on_page, text) VALUES (?, ?, ?, ?)",
    );
    for (const c of chunks) ins.run(docId, c.pageNumber, c.indexOnPage, c.text);
    this.q(
        `UPDATE processingjob SET chunking_status = 'completed', chunking_completed_at = ?, status = 'completed',
           current_step = 'completed', progress_percentage = 100, error_message = NULL, updated_at = ?, completed_at = ?
         WHERE job_id = ?`,
      ).run(t, t, t, jobId);
      return true;
    });
  }

  /** Fail an unfinished job; false when it is gone (paper deleted) or already closed (superseded). */
  async failJob(jobId: string, step: StepName, message: string): Promise<boolean> {
    return this.write(() => {
      const t = now();
      const col = step === "text" ? "text" : "chunking";
      const res = this.q(
        `UPDATE processingjob SET status = 'failed', ${col}_status = 'failed', ${col}_error = ?, error_message = ?,
           current_step = 'failed', updated_at = ?, completed_at = ?
         WHERE job_id = ? AND status IN ('uploaded', 'processing')`,
      ).run(message, message, t, t, jobId);
      return res.changes > 0;
    });
  }

  readonly leaseRenewIntervalMs = undefined;

  /** One process owns a SQLite database: a claimed job is never taken by another. */
  async renewLease(_jobId: string): Promise<boolean> {
    return true;
  }
}
