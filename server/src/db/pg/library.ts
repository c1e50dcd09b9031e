/**
 * The PostgreSQL implementation of `Library` (types.ts): the same rows, order and matching rules
 * as SQLite's (db/library.ts). A paper matches when every term occurs in its title, authors or
 * text, compared folded (lower case, accents removed) against `paper_search` (kept in step by
 * triggers, pg_trgm indexes serve the LIKE '%term%'). Search ranks by where the terms occur
 * (title over authors over text, as SQLite's bm25 weights do), newest first among equals.
 */
import type pg from "pg";
import { formatSnippet, likePattern, queryTerms, SNIPPET_BEFORE, SNIPPET_LENGTH } from "../library.js";
import type { JobRow, Library, LibraryQuery, LibraryRow, SearchMatch } from "../types.js";
import { one, rows } from "./client.js";
import { ROW_COLUMNS } from "../library.js";

const JOB_COLUMNS = `job_id, paper_id, filename, status, current_step, progress_percentage, error_message, attempts,
  text_status, text_error, text_completed_at, chunking_status, chunking_error, chunking_completed_at,
  created_at, updated_at, completed_at`;

const ROW_JOINS = `
  LEFT JOIN metadata m ON m.paper_id = p.doc_id
  LEFT JOIN zoterolink z ON z.paper_id = p.doc_id
  LEFT JOIN LATERAL (SELECT job_id, status, current_step, progress_percentage, error_message FROM processingjob
    WHERE paper_id = p.doc_id ORDER BY created_at DESC, seq DESC LIMIT 1) j ON true`;

/**
 * The matching papers (`doc_id`, `score`: higher is better) for the terms, whose LIKE patterns
 * are parameters `$first`… .
 */
function matchingPapers(terms: readonly string[], first: number): { sql: string; params: string[] } {
  const params = terms.map(likePattern);
  const conds = params.map((_, i) => {
    const p = `refserver_fold($${first + i})`;
    return { where: `(s.title LIKE ${p} OR s.authors LIKE ${p} OR s.body LIKE ${p})`, score: `(CASE WHEN s.title LIKE ${p} THEN 10 ELSE 0 END + CASE WHEN s.authors LIKE ${p} THEN 5 ELSE 0 END + CASE WHEN s.body LIKE ${p} THEN 1 ELSE 0 END)` };
  });
  return {
    sql: `SELECT s.doc_id, ${conds.map((c) => c.score).join(" + ")} AS score FROM paper_search s WHERE ${conds.map((c) => c.where).join(" AND ")}`,
    params,
  };
}

export class PgLibrary implements Library {
  private readonly pool: pg.Pool;

  constructor(pool: pg.Pool) {
    this.pool = pool;
  }

  async list(query: LibraryQuery): Promise<{ rows: LibraryRow[]; total: number }> {
    const terms = queryTerms(query.q);
    if (terms.length === 0) {
      const list = await rows<LibraryRow>(
        this.pool,
        `SELECT ${ROW_COLUMNS} FROM paper p ${ROW_JOINS} ORDER BY p.created_at DESC, p.seq DESC LIMIT $1 OFFSET $2`,
        [query.limit, query.offset],
      );
      const total = (await one<{ n: number }>(this.pool, "SELECT COUNT(*) AS n FROM paper"))?.n ?? 0;
      return { rows: list, total };
    }
    const hits = matchingPapers(terms, 3);
    const list = await rows<LibraryRow>(
      this.pool,
      `SELECT ${ROW_COLUMNS} FROM paper p ${ROW_JOINS}
       WHERE p.doc_id IN (SELECT doc_id FROM (${hits.sql}) h)
       ORDER BY p.created_at DESC, p.seq DESC LIMIT $1 OFFSET $2`,
      [query.limit, query.offset, ...hits.params],
    );
    const total = await this.count(terms);
    return { rows: list, total };
  }

  private async count(terms: readonly string[]): Promise<number> {
    const hits = matchingPapers(terms, 1);
    return (await one<{ n: number }>(this.pool, `SELECT COUNT(*) AS n FROM (${hits.sql}) h`, hits.params))?.n ?? 0;
  }

  async search(query: LibraryQuery): Promise<{ matches: SearchMatch[]; total: number }> {
    const terms = queryTerms(query.q);
    if (terms.length === 0) return { matches: [], total: 0 };
    const hits = matchingPapers(terms, 3);
    const list = await rows<LibraryRow>(
      this.pool,
      `SELECT ${ROW_COLUMNS} FROM (${hits.sql}) h JOIN paper p ON p.doc_id = h.doc_id ${ROW_JOINS}
       ORDER BY h.score DESC, p.created_at DESC, p.seq DESC LIMIT $1 OFFSET $2`,
      [query.limit, query.offset, ...hits.params],
    );
    const total = await this.count(terms);
    const matches = await Promise.all(list.map(async (r) => ({ ...r, ...(await this.snippet(r.doc_id, terms)) })));
    return { matches, total };
  }

  async snippet(docId: string, terms: readonly string[]): Promise<{ snippet: string; page: number | null }> {
    for (const term of terms) {
      const hit = await one<{ page_number: number; pos: number }>(
        this.pool,
        `SELECT page_number, strpos(lower(text), lower($2)) AS pos FROM pagetext
         WHERE paper_id = $1 AND strpos(lower(text), lower($2)) > 0 ORDER BY page_number LIMIT 1`,
        [docId, term],
      );
      if (!hit) continue;
      const start = Math.max(1, hit.pos - SNIPPET_BEFORE);
      const row = await one<{ part: string; total: number }>(
        this.pool,
        "SELECT substr(text, $3, $4) AS part, length(text) AS total FROM pagetext WHERE paper_id = $1 AND page_number = $2",
        [docId, hit.page_number, start, SNIPPET_LENGTH],
      );
      if (!row) continue;
      return { snippet: formatSnippet(row.part, start, row.total), page: hit.page_number };
    }
    return { snippet: "", page: null };
  }

  async get(docId: string): Promise<LibraryRow | undefined> {
    return one<LibraryRow>(this.pool, `SELECT ${ROW_COLUMNS} FROM paper p ${ROW_JOINS} WHERE p.doc_id = $1`, [docId]);
  }

  async pageText(docId: string, page: number): Promise<string | undefined> {
    return (await one<{ text: string }>(this.pool, "SELECT text FROM pagetext WHERE paper_id = $1 AND page_number = $2", [docId, page]))?.text;
  }

  async jobsOf(docId: string): Promise<JobRow[]> {
    return rows<JobRow>(this.pool, `SELECT ${JOB_COLUMNS} FROM processingjob WHERE paper_id = $1 ORDER BY created_at DESC, seq DESC`, [docId]);
  }

  async zoteroExtras(docId: string): Promise<{ tags: string | null; collection_keys: string | null } | undefined> {
    return one(this.pool, "SELECT tags, collection_keys FROM zoterolink WHERE paper_id = $1", [docId]);
  }

  async jobs(limit: number, offset: number): Promise<{ jobs: Array<JobRow & { title: string | null }>; total: number; open: number }> {
    const jobs = await rows<JobRow & { title: string | null }>(
      this.pool,
      `SELECT ${JOB_COLUMNS.split(",").map((c) => `j.${c.trim()}`).join(", ")}, m.title FROM processingjob j
       LEFT JOIN metadata m ON m.paper_id = j.paper_id
       ORDER BY j.created_at DESC, j.seq DESC LIMIT $1 OFFSET $2`,
      [limit, offset],
    );
    const counts = await one<{ n: number; open: number }>(
      this.pool,
      "SELECT COUNT(*) AS n, COUNT(*) FILTER (WHERE status IN ('uploaded', 'processing')) AS open FROM processingjob",
    );
    return { jobs, total: counts?.n ?? 0, open: counts?.open ?? 0 };
  }
}
