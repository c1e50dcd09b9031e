/**
 * The storage interface: what routes, the worker and the web pages may ask of the database.
 * Two implementations keep the same guarantees: SQLite (repository.ts, library.ts, sessions.ts;
 * the default, one file in the data directory) and PostgreSQL (pg/; several server processes on
 * one database). Every method is asynchronous so both fit; each write is one short transaction.
 */
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

export interface LibraryRow {
  doc_id: string;
  filename: string;
  file_size: number;
  page_count: number | null;
  created_at: string;
  title: string | null;
  /** JSON array text, or null when the paper has no metadata row. */
  authors: string | null;
  year: number | null;
  journal: string | null;
  doi: string | null;
  abstract: string | null;
  zotero_key: string | null;
  zotero_library_id: string | null;
  zotero_version: number | null;
  /** The newest job of the paper (null when it has none). */
  job_id: string | null;
  job_status: string | null;
  current_step: string | null;
  progress_percentage: number | null;
  error_message: string | null;
}

export interface SearchMatch extends LibraryRow {
  /** Plain text around the first match in the page text (empty when none is found there). */
  snippet: string;
  /** The page of that match (1-based), or null. */
  page: number | null;
}

export interface LibraryQuery {
  /** Free text: words (or "quoted phrases"), all of which must occur in title, authors or text. */
  q?: string | undefined;
  limit: number;
  offset: number;
}


export interface WebSession {
  username: string;
  /** The per-session CSRF token every POST form of the pages carries. */
  csrfToken: string;
  /** Epoch milliseconds. */
  expiresAt: number;
}

/** Papers, metadata, Zotero links, jobs, users, page text and chunks: every write, and the API's reads. */
export interface Repository {
  ping(): Promise<boolean>;
  findUser(username: string): Promise<UserRow | undefined>;
  hasAdmin(): Promise<boolean>;
  /** Create the admin, or reset its password and admin flag when it exists. */
  upsertAdmin(username: string, passwordHash: string): Promise<void>;
  createUser(username: string, passwordHash: string, isAdmin: boolean): Promise<void>;
  /** Record a login; false when no such user. */
  recordLogin(username: string): Promise<boolean>;
  /**
   * Paper, metadata, Zotero link and job in ONE short transaction; a duplicate (library, key) is
   * caught by the UNIQUE constraint and answered with the winner's doc id.
   */
  createUpload(u: NewUpload): Promise<CreateUploadResult>;
  findDocIdByZoteroKey(libraryId: string, key: string): Promise<string | undefined>;
  zoteroLinks(libraryId: string): Promise<ZoteroLinkRow[]>;
  /** The metadata after the change, or undefined when no such paper exists. */
  updateMetadata(docId: string, patch: MetadataPatch, link: LinkPatch): Promise<MetadataRow | undefined>;
  replacePdf(r: PdfReplacement): Promise<ReplacePdfResult>;
  /** Delete a paper and all that hangs off it; its file path (removed by the caller after the commit), or undefined. */
  deletePaper(docId: string): Promise<string | undefined>;
  getJob(jobId: string): Promise<JobRow | undefined>;
  listJobs(q: JobListQuery): Promise<{ jobs: JobRow[]; total: number }>;
  getDocument(docId: string): Promise<DocumentView | undefined>;
  paperLabel(docId: string): Promise<{ doc_id: string; zotero_key: string | null; title: string | null } | undefined>;
  getPaper(docId: string): Promise<PaperRow | undefined>;
  progress(limit: number): Promise<Array<{ doc_id: string; job: JobRow | null }>>;
  pageTexts(docId: string): Promise<string[]>;
  chunkCount(docId: string): Promise<number>;
  allFilePaths(): Promise<Set<string>>;
  counts(): Promise<{ papers: number; jobs: Record<string, number> }>;
  /** Claim the oldest unfinished job (on PostgreSQL: not leased by a live process), or null. */
  claimNextJob(maxAttempts: number): Promise<ClaimedJob | null>;
  /** How often the worker renews its lease on the job it works on; undefined: no leases (SQLite). */
  readonly leaseRenewIntervalMs: number | undefined;
  /** Extend this process's lease on a job it works on (PostgreSQL); false when the lease was lost. */
  renewLease(jobId: string): Promise<boolean>;
  saveText(jobId: string, docId: string, pages: readonly string[], note?: string): Promise<boolean>;
  saveChunks(jobId: string, docId: string, chunks: readonly ChunkInput[]): Promise<boolean>;
  failJob(jobId: string, step: StepName, message: string): Promise<boolean>;
}

/** The library's reads for the web pages and the JSON listing/search. */
export interface Library {
  list(query: LibraryQuery): Promise<{ rows: LibraryRow[]; total: number }>;
  search(query: LibraryQuery): Promise<{ matches: SearchMatch[]; total: number }>;
  snippet(docId: string, terms: readonly string[]): Promise<{ snippet: string; page: number | null }>;
  get(docId: string): Promise<LibraryRow | undefined>;
  pageText(docId: string, page: number): Promise<string | undefined>;
  jobsOf(docId: string): Promise<JobRow[]>;
  zoteroExtras(docId: string): Promise<{ tags: string | null; collection_keys: string | null } | undefined>;
  jobs(limit: number, offset: number): Promise<{ jobs: Array<JobRow & { title: string | null }>; total: number; open: number }>;
}

/** Browser sessions of the web pages (only the id's SHA-256 is stored). */
export interface SessionStore {
  /** The session's lifetime in seconds (the cookie's Max-Age). */
  readonly ttlSeconds: number;
  create(username: string): Promise<WebSession & { id: string }>;
  find(id: string): Promise<WebSession | undefined>;
  delete(id: string): Promise<boolean>;
  count(): Promise<number>;
}

/** One open storage: the request side, the worker's own connection, the pages' reads, sessions. */
export interface Storage {
  readonly kind: "sqlite" | "postgres";
  readonly repo: Repository;
  /** The worker's repository, on its own connection (as separate as another process's). */
  readonly workerRepo: Repository;
  readonly library: Library;
  readonly sessions: SessionStore;
  /**
   * True when no other server process uses this database now, so the startup sweep may remove
   * every file no row names (SQLite: always; PostgreSQL: no other process holds the shared lock).
   */
  readonly aloneAtStart: boolean;
  /** Called once the startup sweep is done: from now on other processes see this one as running. */
  startedServing(): Promise<void>;
  /** Give back job leases (PostgreSQL) and close every connection. */
  close(): Promise<void>;
}
