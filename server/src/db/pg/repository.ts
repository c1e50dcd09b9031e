/**
 * The PostgreSQL implementation of `Repository` (types.ts), with SQLite's guarantees: every write
 * is one short transaction; a duplicate (library, key) is caught by the UNIQUE index, even when
 * the two uploads arrive at two server processes at once (the second insert waits for the first
 * to commit, then fails, and is answered with the winner); rows that change together are locked
 * with FOR UPDATE. Jobs are claimed with FOR UPDATE SKIP LOCKED and leased to this process; a
 * lease this process stops renewing (it died) expires and another process claims the job.
 */
import type pg from "pg";
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
} from "../types.js";
import { one, query, rows, sqlState, transaction, UNIQUE_VIOLATION, type Queryable } from "./client.js";

const now = (): string => new Date().toISOString();

const JOB_COLUMNS = `job_id, paper_id, filename, status, current_step, progress_percentage, error_message, attempts,
  text_status, text_error, text_completed_at, chunking_status, chunking_error, chunking_completed_at,
  created_at, updated_at, completed_at`;
const PAPER_COLUMNS = "doc_id, filename, file_path, file_size, page_count, ocr_text, created_at, updated_at";

export interface PgRepositoryOptions {
  /** This process's name on the leases it takes. */
  owner: string;
  /** How long a claimed job stays leased without a renewal. */
  leaseMs: number;
}

export class PgRepository implements Repository {
  private readonly pool: pg.Pool;
  private readonly owner: string;
  private readonly leaseMs: number;

  constructor(pool: pg.Pool, options: PgRepositoryOptions) {
    this.pool = pool;
    this.owner = options.owner;
    this.leaseMs = options.leaseMs;
  }

  /** How often the worker renews its lease on a job (a third of the lease). */
  get leaseRenewIntervalMs(): number {
    return Math.max(100, Math.floor(this.leaseMs / 3));
  }

  async ping(): Promise<boolean> {
    return (await one(this.pool, "SELECT 1 AS ok")) !== undefined;
  }

  // ---- users ---------------------------------------------------------------------

  async findUser(username: string): Promise<UserRow | undefined> {
    return one<UserRow>(this.pool, `SELECT id, username, password_hash, is_admin, created_at, last_login FROM "user" WHERE username = $1`, [username]);
  }

  async hasAdmin(): Promise<boolean> {
    return (await one(this.pool, `SELECT 1 FROM "user" WHERE is_admin = 1 LIMIT 1`)) !== undefined;
  }

  async upsertAdmin(username: string, passwordHash: string): Promise<void> {
    await query(
      this.pool,
      `INSERT INTO "user" (username, password_hash, is_admin, created_at) VALUES ($1, $2, 1, $3)
       ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, is_admin = 1`,
      [username, passwordHash, now()],
    );
  }

  async createUser(username: string, passwordHash: string, isAdmin: boolean): Promise<void> {
    await query(this.pool, `INSERT INTO "user" (username, password_hash, is_admin, created_at) VALUES ($1, $2, $3, $4)`, [
      username,
      passwordHash,
      isAdmin ? 1 : 0,
      now(),
    ]);
  }

  async recordLogin(username: string): Promise<boolean> {
    const res = await query(this.pool, `UPDATE "user" SET last_login = $1 WHERE username = $2`, [now(), username]);
    return (res.rowCount ?? 0) > 0;
  }

  // ---- uploads -------------------------------------------------------------------

  async createUpload(u: NewUpload): Promise<CreateUploadResult> {
    try {
      await transaction(this.pool, async (c) => {
        const t = now();
        await query(c, `INSERT INTO paper (doc_id, filename, file_path, file_size, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)`, [
          u.docId,
          u.filename,
          u.filePath,
          u.fileSize,
          t,
        ]);
        await query(c, `INSERT INTO metadata (paper_id, title, authors, year, source) VALUES ($1, $2, $3, $4, 'user_api')`, [
          u.docId,
          u.title,
          JSON.stringify(u.authors),
          u.year,
        ]);
        if (u.zotero) {
          await query(
            c,
            `INSERT INTO zoterolink (paper_id, library_id, zotero_key, zotero_version, collection_keys, tags, imported_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)`,
            [u.docId, u.zotero.libraryId, u.zotero.key, u.zotero.version, u.zotero.collectionKeys, u.zotero.tags, t],
          );
        }
        await query(
          c,
          `INSERT INTO processingjob (job_id, paper_id, filename, status, current_step, created_at, updated_at)
           VALUES ($1, $2, $3, 'processing', 'queued', $4, $4)`,
          [u.jobId, u.docId, u.filename, t],
        );
      });
      return { ok: true };
    } catch (err) {
      if (u.zotero && sqlState(err) === UNIQUE_VIOLATION) {
        const existing = await this.findDocIdByZoteroKey(u.zotero.libraryId, u.zotero.key);
        if (existing) return { ok: false, reason: "duplicate", zoteroKey: u.zotero.key, existingDocId: existing };
      }
      throw err;
    }
  }

  async findDocIdByZoteroKey(libraryId: string, key: string): Promise<string | undefined> {
    const row = await one<{ paper_id: string }>(this.pool, "SELECT paper_id FROM zoterolink WHERE library_id = $1 AND zotero_key = $2", [libraryId, key]);
    return row?.paper_id;
  }

  async zoteroLinks(libraryId: string): Promise<ZoteroLinkRow[]> {
    return rows<ZoteroLinkRow>(
      this.pool,
      `SELECT z.zotero_key, z.paper_id AS doc_id, z.zotero_version, z.tags, z.collection_keys,
              CASE WHEN m.id IS NOT NULL THEN 1 ELSE 0 END AS has_metadata, m.title, m.authors, m.year, m.doi, m.journal
       FROM zoterolink z LEFT JOIN metadata m ON m.paper_id = z.paper_id
       WHERE z.library_id = $1 ORDER BY z.zotero_key COLLATE "C"`,
      [libraryId],
    );
  }

  // ---- changes to a stored paper ----------------------------------------------------

  async updateMetadata(docId: string, patch: MetadataPatch, link: LinkPatch): Promise<MetadataRow | undefined> {
    return transaction(this.pool, async (c) => {
      const found = await query(c, "UPDATE paper SET updated_at = $1 WHERE doc_id = $2", [now(), docId]);
      if ((found.rowCount ?? 0) === 0) return undefined;
      await query(c, "INSERT INTO metadata (paper_id, source) VALUES ($1, 'user_api') ON CONFLICT (paper_id) DO NOTHING", [docId]);
      await query(
        c,
        `UPDATE metadata SET
           title = CASE WHEN $2::boolean THEN $3::text ELSE title END,
           authors = CASE WHEN $4::boolean THEN $5::text ELSE authors END,
           journal = CASE WHEN $6::boolean THEN $7::text ELSE journal END,
           year = CASE WHEN $8::boolean THEN $9::integer ELSE year END,
           abstract = CASE WHEN $10::boolean THEN $11::text ELSE abstract END,
           doi = CASE WHEN $12::boolean THEN $13::text ELSE doi END
         WHERE paper_id = $1`,
        [
          docId,
          patch.title !== undefined,
          patch.title ?? null,
          patch.authors !== undefined,
          patch.authors !== undefined ? JSON.stringify(patch.authors) : null,
          patch.journal !== undefined,
          patch.journal ?? null,
          patch.year !== undefined,
          patch.year ?? null,
          patch.abstract !== undefined,
          patch.abstract ?? null,
          patch.doi !== undefined,
          patch.doi ?? null,
        ],
      );
      await this.updateLink(c, docId, link);
      return one<MetadataRow>(c, "SELECT title, authors, journal, year, abstract, doi, source FROM metadata WHERE paper_id = $1", [docId]);
    });
  }

  private async updateLink(c: Queryable, docId: string, link: LinkPatch): Promise<void> {
    if (link.version === undefined && link.tags === undefined && link.collectionKeys === undefined) return;
    await query(
      c,
      `UPDATE zoterolink SET
         zotero_version = CASE WHEN $2::boolean THEN $3::bigint ELSE zotero_version END,
         tags = CASE WHEN $4::boolean THEN $5::text ELSE tags END,
         collection_keys = CASE WHEN $6::boolean THEN $7::text ELSE collection_keys END
       WHERE paper_id = $1`,
      [
        docId,
        link.version !== undefined,
        link.version ?? null,
        link.tags !== undefined,
        link.tags !== undefined ? JSON.stringify(link.tags) : null,
        link.collectionKeys !== undefined,
        link.collectionKeys !== undefined ? JSON.stringify(link.collectionKeys) : null,
      ],
    );
  }

  async replacePdf(r: PdfReplacement): Promise<ReplacePdfResult> {
    return transaction(this.pool, async (c): Promise<ReplacePdfResult> => {
      const row = await one<{ file_path: string }>(c, "SELECT file_path FROM paper WHERE doc_id = $1 FOR UPDATE", [r.docId]);
      if (!row) return { ok: false, reason: "not-found" };
      const t = now();
      await query(
        c,
        `UPDATE paper SET filename = $1, file_path = $2, file_size = $3, page_count = NULL, ocr_text = NULL, updated_at = $4 WHERE doc_id = $5`,
        [r.filename, r.filePath, r.fileSize, t, r.docId],
      );
      await query(c, "DELETE FROM pagetext WHERE paper_id = $1", [r.docId]);
      await query(c, "DELETE FROM semanticchunk WHERE paper_id = $1", [r.docId]);
      await query(
        c,
        `UPDATE processingjob SET status = 'failed', current_step = 'failed', error_message = $1,
           text_status = CASE WHEN text_status = 'running' THEN 'failed' ELSE text_status END,
           chunking_status = CASE WHEN chunking_status = 'running' THEN 'failed' ELSE chunking_status END,
           updated_at = $2, completed_at = $2, lease_owner = NULL, lease_expires_at = NULL
         WHERE paper_id = $3 AND status IN ('uploaded', 'processing')`,
        [`Superseded: the PDF was replaced (job ${r.jobId})`, t, r.docId],
      );
      await query(
        c,
        `INSERT INTO processingjob (job_id, paper_id, filename, status, current_step, created_at, updated_at)
         VALUES ($1, $2, $3, 'processing', 'queued', $4, $4)`,
        [r.jobId, r.docId, r.filename, t],
      );
      await this.updateLink(c, r.docId, r.link);
      return { ok: true, oldFilePath: row.file_path };
    });
  }

  async deletePaper(docId: string): Promise<string | undefined> {
    return transaction(this.pool, async (c) => {
      const row = await one<{ file_path: string }>(c, "SELECT file_path FROM paper WHERE doc_id = $1 FOR UPDATE", [docId]);
      if (!row) return undefined;
      // The children go by ON DELETE CASCADE (foreign keys are always enforced here).
      await query(c, "DELETE FROM paper WHERE doc_id = $1", [docId]);
      return row.file_path;
    });
  }

  // ---- reads ---------------------------------------------------------------------

  async getJob(jobId: string): Promise<JobRow | undefined> {
    return one<JobRow>(this.pool, `SELECT ${JOB_COLUMNS} FROM processingjob WHERE job_id = $1`, [jobId]);
  }

  async listJobs(q: JobListQuery): Promise<{ jobs: JobRow[]; total: number }> {
    if (q.status) {
      const jobs = await rows<JobRow>(
        this.pool,
        `SELECT ${JOB_COLUMNS} FROM processingjob WHERE status = $1 ORDER BY created_at DESC, seq DESC LIMIT $2 OFFSET $3`,
        [q.status, q.limit, q.offset],
      );
      const total = (await one<{ n: number }>(this.pool, "SELECT COUNT(*) AS n FROM processingjob WHERE status = $1", [q.status]))?.n ?? 0;
      return { jobs, total };
    }
    const jobs = await rows<JobRow>(this.pool, `SELECT ${JOB_COLUMNS} FROM processingjob ORDER BY created_at DESC, seq DESC LIMIT $1 OFFSET $2`, [
      q.limit,
      q.offset,
    ]);
    const total = (await one<{ n: number }>(this.pool, "SELECT COUNT(*) AS n FROM processingjob"))?.n ?? 0;
    return { jobs, total };
  }

  async getDocument(docId: string): Promise<DocumentView | undefined> {
    const paper = await this.getPaper(docId);
    if (!paper) return undefined;
    const metadata = await one<MetadataRow>(this.pool, "SELECT title, authors, journal, year, abstract, doi, source FROM metadata WHERE paper_id = $1", [docId]);
    return { paper, metadata: metadata ?? null };
  }

  async paperLabel(docId: string): Promise<{ doc_id: string; zotero_key: string | null; title: string | null } | undefined> {
    return one(
      this.pool,
      `SELECT p.doc_id AS doc_id, z.zotero_key AS zotero_key, m.title AS title FROM paper p
       LEFT JOIN zoterolink z ON z.paper_id = p.doc_id LEFT JOIN metadata m ON m.paper_id = p.doc_id
       WHERE p.doc_id = $1`,
      [docId],
    );
  }

  async getPaper(docId: string): Promise<PaperRow | undefined> {
    return one<PaperRow>(this.pool, `SELECT ${PAPER_COLUMNS} FROM paper WHERE doc_id = $1`, [docId]);
  }

  async progress(limit: number): Promise<Array<{ doc_id: string; job: JobRow | null }>> {
    const list = await rows<JobRow & { doc_id: string; has_job: boolean }>(
      this.pool,
      `SELECT p.doc_id, j.job_id IS NOT NULL AS has_job, j.* FROM (SELECT doc_id, created_at, seq FROM paper ORDER BY created_at DESC, seq DESC LIMIT $1) p
       LEFT JOIN LATERAL (SELECT ${JOB_COLUMNS} FROM processingjob WHERE paper_id = p.doc_id ORDER BY created_at DESC, seq DESC LIMIT 1) j ON true
       ORDER BY p.created_at DESC, p.seq DESC`,
      [limit],
    );
    return list.map(({ doc_id, has_job, ...job }) => ({ doc_id, job: has_job ? (job as JobRow) : null }));
  }

  async pageTexts(docId: string): Promise<string[]> {
    return (await rows<{ text: string }>(this.pool, "SELECT text FROM pagetext WHERE paper_id = $1 ORDER BY page_number", [docId])).map((r) => r.text);
  }

  async chunkCount(docId: string): Promise<number> {
    return (await one<{ n: number }>(this.pool, "SELECT COUNT(*) AS n FROM semanticchunk WHERE paper_id = $1", [docId]))?.n ?? 0;
  }

  async allFilePaths(): Promise<Set<string>> {
    return new Set((await rows<{ file_path: string }>(this.pool, "SELECT file_path FROM paper")).map((r) => r.file_path));
  }

  async counts(): Promise<{ papers: number; jobs: Record<string, number> }> {
    const papers = (await one<{ n: number }>(this.pool, "SELECT COUNT(*) AS n FROM paper"))?.n ?? 0;
    const jobs: Record<string, number> = {};
    for (const r of await rows<{ status: string; n: number }>(this.pool, "SELECT status, COUNT(*) AS n FROM processingjob GROUP BY status ORDER BY status")) {
      jobs[r.status] = r.n;
    }
    return { papers, jobs };
  }

  // ---- worker ----------------------------------------------------------------------

  async claimNextJob(maxAttempts: number): Promise<ClaimedJob | null> {
    return transaction(this.pool, async (c) => {
      for (;;) {
        const row = await one<{ job_id: string; paper_id: string; attempts: number; text_status: StepStatus; file_path: string }>(
          c,
          `SELECT j.job_id, j.paper_id, j.attempts, j.text_status, p.file_path FROM processingjob j
           JOIN paper p ON p.doc_id = j.paper_id
           WHERE j.status IN ('uploaded', 'processing') AND (j.lease_expires_at IS NULL OR j.lease_expires_at < $1)
           ORDER BY j.seq LIMIT 1 FOR UPDATE OF j SKIP LOCKED`,
          [Date.now()],
        );
        if (!row) return null;
        const t = now();
        if (row.attempts >= maxAttempts) {
          await query(
            c,
            `UPDATE processingjob SET status = 'failed', error_message = $1, updated_at = $2, completed_at = $2,
               lease_owner = NULL, lease_expires_at = NULL WHERE job_id = $3`,
            [`Gave up after ${row.attempts} interrupted attempts`, t, row.job_id],
          );
          continue;
        }
        const textDone = row.text_status === "completed";
        await query(
          c,
          `UPDATE processingjob SET status = 'processing', attempts = attempts + 1, current_step = $1,
             text_status = CASE WHEN text_status = 'completed' THEN text_status ELSE 'running' END,
             chunking_status = CASE WHEN $2::boolean THEN 'running' ELSE chunking_status END,
             progress_percentage = CASE WHEN $2::boolean THEN 50 ELSE 10 END, updated_at = $3,
             lease_owner = $4, lease_expires_at = $5
           WHERE job_id = $6`,
          [textDone ? "chunking" : "text", textDone, t, this.owner, Date.now() + this.leaseMs, row.job_id],
        );
        return { jobId: row.job_id, docId: row.paper_id, filePath: row.file_path, attempts: row.attempts + 1, textDone };
      }
    });
  }

  async renewLease(jobId: string): Promise<boolean> {
    const res = await query(
      this.pool,
      `UPDATE processingjob SET lease_expires_at = $1 WHERE job_id = $2 AND lease_owner = $3 AND status IN ('uploaded', 'processing')`,
      [Date.now() + this.leaseMs, jobId, this.owner],
    );
    return (res.rowCount ?? 0) > 0;
  }

  /** Give back the leases of this process (a clean stop): another process may take the jobs at once. */
  async releaseLeases(): Promise<void> {
    await query(this.pool, "UPDATE processingjob SET lease_owner = NULL, lease_expires_at = NULL WHERE lease_owner = $1", [this.owner]);
  }

  /**
   * Lock the job and its paper while they may still take results: the job unfinished, its paper
   * there, and the lease still this process's (not taken over after an expiry).
   */
  private async jobIsLive(c: Queryable, jobId: string, docId: string): Promise<boolean> {
    const row = await one(
      c,
      `SELECT 1 FROM processingjob j JOIN paper p ON p.doc_id = j.paper_id
       WHERE j.job_id = $1 AND j.paper_id = $2 AND j.status IN ('uploaded', 'processing')
         AND (j.lease_owner IS NULL OR j.lease_owner = $3)
       FOR UPDATE`,
      [jobId, docId, this.owner],
    );
    return row !== undefined;
  }

  async saveText(jobId: string, docId: string, pages: readonly string[], note?: string): Promise<boolean> {
    return transaction(this.pool, async (c) => {
      if (!(await this.jobIsLive(c, jobId, docId))) return false;
      const t = now();
      await query(c, "DELETE FROM pagetext WHERE paper_id = $1", [docId]);
      if (pages.length > 0) {
        await c.query(
          "INSERT INTO pagetext (paper_id, page_number, text) SELECT $1, n, t FROM unnest($2::text[]) WITH ORDINALITY AS x(t, n)",
          [docId, pages],
        );
      }
      await query(c, "UPDATE paper SET page_count = $1, ocr_text = $2, updated_at = $3 WHERE doc_id = $4", [pages.length, pages.join("\n\n"), t, docId]);
      await query(
        c,
        `UPDATE processingjob SET text_status = 'completed', text_completed_at = $1, text_error = $2, current_step = 'chunking',
           chunking_status = 'running', progress_percentage = 50, updated_at = $1 WHERE job_id = $3`,
        [t, note ?? null, jobId],
      );
      return true;
    });
  }

  async saveChunks(jobId: string, docId: string, chunks: readonly ChunkInput[]): Promise<boolean> {
    return transaction(this.pool, async (c) => {
      if (!(await this.jobIsLive(c, jobId, docId))) return false;
      const t = now();
      await query(c, "DELETE FROM semanticchunk WHERE paper_id = $1", [docId]);
      if (chunks.length > 0) {
        await c.query(
          `INSERT INTO semanticchunk (paper_id, page_number, chunk_index_on_page, text)
           SELECT $1, p, i, t FROM unnest($2::int[], $3::int[], $4::text[]) AS x(p, i, t)`,
          [docId, chunks.map((ch) => ch.pageNumber), chunks.map((ch) => ch.indexOnPage), chunks.map((ch) => ch.text)],
        );
      }
      await query(
        c,
        `UPDATE processingjob SET chunking_status = 'completed', chunking_completed_at = $1, status = 'completed',
           current_step = 'completed', progress_percentage = 100, error_message = NULL, updated_at = $1, completed_at = $1,
           lease_owner = NULL, lease_expires_at = NULL
         WHERE job_id = $2`,
        [t, jobId],
      );
      return true;
    });
  }

  async failJob(jobId: string, step: StepName, message: string): Promise<boolean> {
    const col = step === "text" ? "text" : "chunking";
    const res = await query(
      this.pool,
      `UPDATE processingjob SET status = 'failed', ${col}_status = 'failed', ${col}_error = $1, error_message = $1,
         current_step = 'failed', updated_at = $2, completed_at = $2, lease_owner = NULL, lease_expires_at = NULL
       WHERE job_id = $3 AND status IN ('uploaded', 'processing') AND (lease_owner IS NULL OR lease_owner = $4)`,
      [message, now(), jobId, this.owner],
    );
    return (res.rowCount ?? 0) > 0;
  }
}
