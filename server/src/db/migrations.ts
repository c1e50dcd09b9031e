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
  // 2: the web interface. Full-text search (FTS5, trigram tokenizer: substring matches in any
  // script, CJK included, case- and accent-insensitive) over each paper's title, authors and page
  // text, kept in step with paper and metadata by triggers, so every write path (upload, metadata
  // update, the worker's text, PDF replacement, deletion) updates it in the same
  // transaction. paper_search_key gives each paper a stable integer rowid for the FTS row (a
  // VACUUM may renumber paper's implicit rowids). And browser sessions (the id's SHA-256 only).
  `
  CREATE TABLE paper_search_key (
    id INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL UNIQUE
  );
  CREATE VIRTUAL TABLE paper_search USING fts5(title, authors, body, tokenize = 'trigram remove_diacritics 1');

  CREATE TRIGGER paper_search_paper_insert AFTER INSERT ON paper BEGIN
    INSERT INTO paper_search_key (doc_id) VALUES (new.doc_id);
    INSERT INTO paper_search (rowid, title, authors, body)
      VALUES ((SELECT id FROM paper_search_key WHERE doc_id = new.doc_id), '', '', coalesce(new.ocr_text, ''));
  END;
  CREATE TRIGGER paper_search_paper_text AFTER UPDATE OF ocr_text ON paper
    WHEN old.ocr_text IS NOT new.ocr_text BEGIN
    UPDATE paper_search SET body = coalesce(new.ocr_text, '')
      WHERE rowid = (SELECT id FROM paper_search_key WHERE doc_id = new.doc_id);
  END;
  CREATE TRIGGER paper_search_paper_delete AFTER DELETE ON paper BEGIN
    DELETE FROM paper_search WHERE rowid = (SELECT id FROM paper_search_key WHERE doc_id = old.doc_id);
    DELETE FROM paper_search_key WHERE doc_id = old.doc_id;
  END;
  CREATE TRIGGER paper_search_metadata_insert AFTER INSERT ON metadata BEGIN
    UPDATE paper_search SET
      title = coalesce(new.title, ''),
      authors = coalesce(CASE WHEN json_valid(new.authors) AND json_type(new.authors) = 'array'
        THEN (SELECT group_concat(value, ', ') FROM json_each(new.authors)) ELSE new.authors END, '')
      WHERE rowid = (SELECT id FROM paper_search_key WHERE doc_id = new.paper_id);
  END;
  CREATE TRIGGER paper_search_metadata_update AFTER UPDATE OF title, authors ON metadata BEGIN
    UPDATE paper_search SET
      title = coalesce(new.title, ''),
      authors = coalesce(CASE WHEN json_valid(new.authors) AND json_type(new.authors) = 'array'
        THEN (SELECT group_concat(value, ', ') FROM json_each(new.authors)) ELSE new.authors END, '')
      WHERE rowid = (SELECT id FROM paper_search_key WHERE doc_id = new.paper_id);
  END;
  CREATE TRIGGER paper_search_metadata_delete AFTER DELETE ON metadata BEGIN
    UPDATE paper_search SET title = '', authors = ''
      WHERE rowid = (SELECT id FROM paper_search_key WHERE doc_id = old.paper_id);
  END;

  INSERT INTO paper_search_key (doc_id) SELECT doc_id FROM paper ORDER BY rowid;
  INSERT INTO paper_search (rowid, title, authors, body)
    SELECT k.id, coalesce(m.title, ''),
      coalesce(CASE WHEN json_valid(m.authors) AND json_type(m.authors) = 'array'
        THEN (SELECT group_concat(value, ', ') FROM json_each(m.authors)) ELSE m.authors END, ''),
      coalesce(p.ocr_text, '')
    FROM paper_search_key k JOIN paper p ON p.doc_id = k.doc_id LEFT JOIN metadata m ON m.paper_id = p.doc_id;

  CREATE TABLE session (
    id_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES user(username) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at INTEGER NOT NULL
  );
  CREATE INDEX session_expires ON session(expires_at);
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
