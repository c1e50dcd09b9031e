/**
 * The library's reads for the web pages and the JSON listing/search: papers with their
 * metadata, Zotero key and latest job, newest first, filtered by a full-text query over the
 * `paper_search` FTS5 table (migration 2, kept in step by triggers). Reads only: every write
 * stays in `repository.ts`. The SQLite implementation of `Library` (types.ts); PostgreSQL's is
 * pg/library.ts, with the same matching rules (queryTerms below).
 */
import type { Statement } from "better-sqlite3";
import type { SqliteDatabase } from "./connection.js";
import type { JobRow, Library, LibraryQuery, LibraryRow, SearchMatch } from "./types.js";

export type { LibraryQuery, LibraryRow, SearchMatch } from "./types.js";

/** At most this many terms of a query are used. */
export const MAX_TERMS = 16;
/** The trigram tokenizer indexes runs of 3 characters; shorter terms are matched with LIKE. */
const MIN_INDEXED_CHARS = 3;
export const SNIPPET_BEFORE = 60;
export const SNIPPET_LENGTH = 220;

/**
 * The terms of a query: "quoted phrases" and whitespace-separated words, lower-cased for the
 * snippet search; empty when the query holds none.
 */
export function queryTerms(q: string | undefined): string[] {
  if (q === undefined) return [];
  const terms: string[] = [];
  for (const m of q.matchAll(/"([^"]*)"|(\S+)/g)) {
    const term = (m[1] ?? m[2] ?? "").replace(/"/g, "").trim();
    if (term !== "" && !terms.includes(term)) terms.push(term);
    if (terms.length >= MAX_TERMS) break;
  }
  return terms;
}

/** A LIKE pattern (escape character `\\`) that matches text containing `term`. */
export function likePattern(term: string): string {
  return `%${term.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
}

/**
 * The SQL that selects matching papers (`doc_id`, and `score`: bm25, lower is better), with
 * its parameters. Terms of 3+ characters go to FTS5 MATCH as quoted strings (no query syntax of
 * the user's reaches FTS5); shorter ones (e.g. a two-character CJK word) are LIKE conditions
 * on the same table, which scan it.
 */
function matchingPapers(terms: readonly string[]): { sql: string; params: Record<string, string> } {
  const params: Record<string, string> = {};
  const long = terms.filter((t) => [...t].length >= MIN_INDEXED_CHARS);
  const short = terms.filter((t) => [...t].length < MIN_INDEXED_CHARS);
  const where: string[] = [];
  if (long.length > 0) {
    params.match = long.map((t) => `"${t.replace(/"/g, '""')}"`).join(" AND ");
    where.push("paper_search MATCH @match");
  }
  short.forEach((t, i) => {
    params[`like${i}`] = likePattern(t);
    where.push(
      `(paper_search.title LIKE @like${i} ESCAPE '\\' OR paper_search.authors LIKE @like${i} ESCAPE '\\'` +
        ` OR paper_search.body LIKE @like${i} ESCAPE '\\')`,
    );
  });
  const score = long.length > 0 ? "bm25(paper_search, 10.0, 5.0, 1.0)" : "0";
  return {
    sql: `SELECT paper_search_key.doc_id AS doc_id, ${score} AS score FROM paper_search
          JOIN paper_search_key ON paper_search_key.id = paper_search.rowid
          WHERE ${where.join(" AND ")}`,
    params,
  };
}

/** The columns of a library row, the same on both backends (`j` is the paper's newest job; see ROW_JOINS). */
export const ROW_COLUMNS = `
  p.doc_id, p.filename, p.file_size, p.page_count, p.created_at,
  m.title, m.authors, m.year, m.journal, m.doi, m.abstract,
  z.zotero_key, z.library_id AS zotero_library_id, z.zotero_version,
  j.job_id, j.status AS job_status, j.current_step, j.progress_percentage, j.error_message`;

const ROW_JOINS = `
  LEFT JOIN metadata m ON m.paper_id = p.doc_id
  LEFT JOIN zoterolink z ON z.paper_id = p.doc_id
  LEFT JOIN processingjob j ON j.rowid =
    (SELECT rowid FROM processingjob WHERE paper_id = p.doc_id ORDER BY created_at DESC, rowid DESC LIMIT 1)`;

/**
 * A snippet from `part` (the SNIPPET_LENGTH characters of a page from 1-based `start`; the page
 * has `total` characters): whitespace collapsed, cut on word boundaries, `…` where cut.
 */
export function formatSnippet(partText: string, start: number, total: number): string {
  let part = partText.replace(/\s+/g, " ");
  const cutStart = start > 1;
  const cutEnd = start - 1 + SNIPPET_LENGTH < total;
  if (cutStart) part = part.replace(/^\S*\s/, "");
  if (cutEnd) part = part.replace(/\s\S*$/, "");
  return `${cutStart ? "…" : ""}${part.trim()}${cutEnd ? "…" : ""}`;
}

export class SqliteLibrary implements Library {
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

  /** Papers newest first, filtered by `q` when it holds a term; `total` counts every match. */
  async list(query: LibraryQuery): Promise<{ rows: LibraryRow[]; total: number }> {
    const terms = queryTerms(query.q);
    if (terms.length === 0) {
      const rows = this.q(`SELECT ${ROW_COLUMNS} FROM paper p ${ROW_JOINS} ORDER BY p.created_at DESC, p.rowid DESC LIMIT @limit OFFSET @offset`)
        .all({ limit: query.limit, offset: query.offset }) as LibraryRow[];
      const total = (this.q("SELECT COUNT(*) AS n FROM paper").get() as { n: number }).n;
      return { rows, total };
    }
    const hits = matchingPapers(terms);
    const rows = this.q(
      `SELECT ${ROW_COLUMNS} FROM paper p ${ROW_JOINS}
       WHERE p.doc_id IN (SELECT doc_id FROM (${hits.sql}))
       ORDER BY p.created_at DESC, p.rowid DESC LIMIT @limit OFFSET @offset`,
    ).all({ ...hits.params, limit: query.limit, offset: query.offset }) as LibraryRow[];
    const total = (this.q(`SELECT COUNT(*) AS n FROM (${hits.sql})`).get(hits.params) as { n: number }).n;
    return { rows, total };
  }

  /**
   * Papers matching `q`, best first (bm25 over title, authors, text; newest first among
   * equals), each with a plain-text snippet of the page text around its first match.
   */
  async search(query: LibraryQuery): Promise<{ matches: SearchMatch[]; total: number }> {
    const terms = queryTerms(query.q);
    if (terms.length === 0) return { matches: [], total: 0 };
    const hits = matchingPapers(terms);
    const rows = this.q(
      `SELECT ${ROW_COLUMNS} FROM (${hits.sql}) h JOIN paper p ON p.doc_id = h.doc_id ${ROW_JOINS}
       ORDER BY h.score, p.created_at DESC, p.rowid DESC LIMIT @limit OFFSET @offset`,
    ).all({ ...hits.params, limit: query.limit, offset: query.offset }) as LibraryRow[];
    const total = (this.q(`SELECT COUNT(*) AS n FROM (${hits.sql})`).get(hits.params) as { n: number }).n;
    return { matches: await Promise.all(rows.map(async (r) => ({ ...r, ...(await this.snippet(r.doc_id, terms)) }))), total };
  }

  /**
   * The text around the first page-text occurrence of a term (terms in query order), found by
   * SQLite's `instr` on `lower()` (ASCII case folding), cut on word boundaries.
   */
  async snippet(docId: string, terms: readonly string[]): Promise<{ snippet: string; page: number | null }> {
    const find = this.q(
      `SELECT page_number, instr(lower(text), lower(@term)) AS pos FROM pagetext
       WHERE paper_id = @doc_id AND instr(lower(text), lower(@term)) > 0 ORDER BY page_number LIMIT 1`,
    );
    const cut = this.q(
      `SELECT substr(text, @start, @length) AS part, length(text) AS total FROM pagetext WHERE paper_id = @doc_id AND page_number = @page`,
    );
    for (const term of terms) {
      const hit = find.get({ doc_id: docId, term }) as { page_number: number; pos: number } | undefined;
      if (!hit) continue;
      const start = Math.max(1, hit.pos - SNIPPET_BEFORE);
      const row = cut.get({ doc_id: docId, page: hit.page_number, start, length: SNIPPET_LENGTH }) as
        | { part: string; total: number }
        | undefined;
      if (!row) continue;
      return { snippet: formatSnippet(row.part, start, row.total), page: hit.page_number };
    }
    return { snippet: "", page: null };
  }

  /** One paper's row, as in the list. */
  async get(docId: string): Promise<LibraryRow | undefined> {
    return this.q(`SELECT ${ROW_COLUMNS} FROM paper p ${ROW_JOINS} WHERE p.doc_id = ?`).get(docId) as
      | LibraryRow
      | undefined;
  }

  /** The text of one page (1-based), or undefined before the worker extracted it. */
  async pageText(docId: string, page: number): Promise<string | undefined> {
    const row = this.q("SELECT text FROM pagetext WHERE paper_id = ? AND page_number = ?").get(docId, page) as
      | { text: string }
      | undefined;
    return row?.text;
  }

  /** Every job of a paper, newest first (an upload's, then each PDF replacement's). */
  async jobsOf(docId: string): Promise<JobRow[]> {
    return this.q("SELECT * FROM processingjob WHERE paper_id = ? ORDER BY created_at DESC, rowid DESC")
      .all(docId) as JobRow[];
  }

  /** The Zotero link's tags and collections (JSON text), when the paper has a link. */
  async zoteroExtras(docId: string): Promise<{ tags: string | null; collection_keys: string | null } | undefined> {
    return this.q("SELECT tags, collection_keys FROM zoterolink WHERE paper_id = ?").get(docId) as
      | { tags: string | null; collection_keys: string | null }
      | undefined;
  }

  /** Jobs newest first with each paper's title (the jobs page). */
  async jobs(limit: number, offset: number): Promise<{ jobs: Array<JobRow & { title: string | null }>; total: number; open: number }> {
    const jobs = this.q(
      `SELECT j.*, m.title FROM processingjob j LEFT JOIN metadata m ON m.paper_id = j.paper_id
       ORDER BY j.created_at DESC, j.rowid DESC LIMIT ? OFFSET ?`,
    ).all(limit, offset) as Array<JobRow & { title: string | null }>;
    const counts = this.q(`SELECT COUNT(*) AS n, SUM(status IN ('uploaded', 'processing')) AS open FROM processingjob`)
      .get() as { n: number; open: number | null };
    return { jobs, total: counts.n, open: counts.open ?? 0 };
  }
}
