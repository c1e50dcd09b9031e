import type { SqliteDatabase } from "./connection.js";

/** Schema migrations, applied in order; PRAGMA user_version records the last applied. */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE user (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    last_login TEXT
  );
  CREATE TABLE paper (
    doc_id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    file_path TEXT NOT NULL UNIQUE,
    file_size INTEGER NOT NULL,
    page_count INTEGER,
    ocr_text TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
  );
  CREATE TABLE metadata (
    id INTEGER PRIMARY KEY,
    paper_id TEXT NOT NULL UNIQUE REFERENCES paper(doc_id) ON DELETE CASCADE,
    title TEXT,
    authors TEXT NOT NULL DEFAULT '[]',
    journal TEXT,
    year INTEGER,
    abstract TEXT,
    doi TEXT,
    source TEXT NOT NULL
  );
  CREATE TABLE zoterolink (
    id INTEGER PRIMARY KEY,
    paper_id TEXT NOT NULL UNIQUE REFERENCES paper(doc_id) ON DELETE CASCADE,
    library_id TEXT NOT NULL,
    zotero_key TEXT NOT NULL,
    zotero_version INTEGER NOT NULL DEFAULT 0,
    collection_keys TEXT,
    tags TEXT,
    imported_at TEXT NOT NULL
  );
  CREATE UNIQUE INDEX zoterolink_library_key ON zoterolink(library_id, zotero_key);
  CREATE TABLE processingjob (
    job_id TEXT PRIMARY KEY,
    paper_id TEXT NOT NULL REFERENCES paper(doc_id) ON DELETE CASCADE,
    filename TEXT NOT NULL,
    status TEXT NOT NULL,
    current_step TEXT,
    progress_percentage INTEGER NOT NULL DEFAULT 0,
    error_message TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    text_status TEXT NOT NULL DEFAULT 'pending',
    text_error TEXT,
    text_completed_at TEXT,
    chunking_status TEXT NOT NULL DEFAULT 'pending',
    chunking_error TEXT,
    chunking_completed_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    completed_at TEXT
  );
  CREATE INDEX processingjob_status ON processingjob(status);
  CREATE INDEX processingjob_paper ON processingjob(paper_id);
  CREATE TABLE pagetext (
    paper_id TEXT NOT NULL REFERENCES paper(doc_id) ON DELETE CASCADE,
    page_number INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (paper_id, page_number)
  );
  CREATE TABLE semanticchunk (
    id INTEGER PRIMARY KEY,
    paper_id TEXT NOT NULL REFERENCES paper(doc_id) ON DELETE CASCADE,
    page_number INTEGER NOT NULL,
    chunk_index_on_page INTEGER NOT NULL,
    text TEXT NOT NULL,
    UNIQUE (paper_id, page_number, chunk_index_on_page)
  );
  `,
];

/** Bring the schema up to date, in one immediate transaction. Returns the version. */
export function migrate(db: SqliteDatabase): number {
  const run = db.transaction(() => {
    const current = Number(db.pragma("user_version", { simple: true }));
    for (let v = current; v < MIGRATIONS.length; v++) {
      db.exec(MIGRATIONS[v] ?? "");
    }
    if (current < MIGRATIONS.length) db.pragma(`user_version = ${MIGRATIONS.length}`);
    return MIGRATIONS.length;
  });
  return run.immediate();
}
