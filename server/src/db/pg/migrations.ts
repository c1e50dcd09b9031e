/**
 * PostgreSQL schema migrations, applied in order at start (and by `refserver-lite migrate`):
 * versioned in `refserver_schema`, each in the same transaction as its record, under an advisory
 * lock so two processes starting at once apply each migration exactly once. Idempotent: a
 * database already at the current version is left as it is.
 *
 * The tables mirror SQLite's (db/migrations.ts) column for column, so rows read the same through
 * both backends, with these differences:
 * - `seq` (bigserial) on paper and processingjob gives the insertion order SQLite's rowid gives;
 * - processingjob has a lease (`lease_owner`, `lease_expires_at` in epoch ms): a claimed job is
 *   skipped by other processes until its lease expires (a process that died stops renewing it);
 * - search: `paper_search` holds each paper's title, authors and text folded (lower case, accents
 *   removed, as SQLite's trigram tokenizer with remove_diacritics does), kept in step by triggers
 *   like SQLite's FTS table, with pg_trgm GIN indexes so substring queries (LIKE '%…%') use them.
 */
import type { PoolClient } from "pg";

/** Key of the advisory lock that serialises migrations ("refsrv" in ASCII). */
const MIGRATION_LOCK = 0x726566737276;

const MIGRATIONS: readonly string[] = [
  `
  CREATE EXTENSION IF NOT EXISTS pg_trgm SCHEMA public;
  CREATE EXTENSION IF NOT EXISTS unaccent SCHEMA public;

  CREATE TABLE "user" (
    id BIGSERIAL PRIMARY KEY,
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
    file_size BIGINT NOT NULL,
    page_count INTEGER,
    ocr_text TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    seq BIGSERIAL NOT NULL UNIQUE
  );
  CREATE TABLE metadata (
    id BIGSERIAL PRIMARY KEY,
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
    id BIGSERIAL PRIMARY KEY,
    paper_id TEXT NOT NULL UNIQUE REFERENCES paper(doc_id) ON DELETE CASCADE,
    library_id TEXT NOT NULL,
    zotero_key TEXT NOT NULL,
    zotero_version BIGINT NOT NULL DEFAULT 0,
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
    completed_at TEXT,
    seq BIGSERIAL NOT NULL UNIQUE,
    lease_owner TEXT,
    lease_expires_at BIGINT
  );
  CREATE INDEX processingjob_status ON processingjob(status, seq);
  CREATE INDEX processingjob_paper ON processingjob(paper_id);
  CREATE TABLE pagetext (
    paper_id TEXT NOT NULL REFERENCES paper(doc_id) ON DELETE CASCADE,
    page_number INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (paper_id, page_number)
  );
  CREATE TABLE semanticchunk (
    id BIGSERIAL PRIMARY KEY,
    paper_id TEXT NOT NULL REFERENCES paper(doc_id) ON DELETE CASCADE,
    page_number INTEGER NOT NULL,
    chunk_index_on_page INTEGER NOT NULL,
    text TEXT NOT NULL,
    UNIQUE (paper_id, page_number, chunk_index_on_page)
  );
  CREATE TABLE session (
    id_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES "user"(username) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at BIGINT NOT NULL
  );
  CREATE INDEX session_expires ON session(expires_at);

  CREATE FUNCTION refserver_fold(t TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT lower(public.unaccent('public.unaccent'::regdictionary, coalesce(t, ''))) $$;

  -- A JSON array of names as "A, B" (as SQLite's group_concat over json_each); other text as it is.
  CREATE FUNCTION refserver_authors_text(a TEXT) RETURNS TEXT LANGUAGE plpgsql IMMUTABLE AS $$
  BEGIN
    IF a IS NULL THEN RETURN ''; END IF;
    BEGIN
      IF json_typeof(a::json) = 'array' THEN
        RETURN coalesce((SELECT string_agg(value, ', ') FROM json_array_elements_text(a::json)), '');
      END IF;
    EXCEPTION WHEN others THEN
      RETURN a;
    END;
    RETURN a;
  END $$;

  CREATE TABLE paper_search (
    doc_id TEXT PRIMARY KEY REFERENCES paper(doc_id) ON DELETE CASCADE,
    title TEXT NOT NULL DEFAULT '',
    authors TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL DEFAULT ''
  );
  CREATE INDEX paper_search_title ON paper_search USING gin (title public.gin_trgm_ops);
  CREATE INDEX paper_search_authors ON paper_search USING gin (authors public.gin_trgm_ops);
  CREATE INDEX paper_search_body ON paper_search USING gin (body public.gin_trgm_ops);

  CREATE FUNCTION refserver_search_paper() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    IF TG_OP = 'INSERT' THEN
      INSERT INTO paper_search (doc_id, body) VALUES (NEW.doc_id, refserver_fold(NEW.ocr_text))
        ON CONFLICT (doc_id) DO UPDATE SET body = excluded.body;
    ELSIF NEW.ocr_text IS DISTINCT FROM OLD.ocr_text THEN
      UPDATE paper_search SET body = refserver_fold(NEW.ocr_text) WHERE doc_id = NEW.doc_id;
    END IF;
    RETURN NULL;
  END $$;
  CREATE TRIGGER paper_search_paper AFTER INSERT OR UPDATE OF ocr_text ON paper
    FOR EACH ROW EXECUTE FUNCTION refserver_search_paper();

  CREATE FUNCTION refserver_search_metadata() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    IF TG_OP = 'DELETE' THEN
      UPDATE paper_search SET title = '', authors = '' WHERE doc_id = OLD.paper_id;
    ELSE
      UPDATE paper_search SET title = refserver_fold(NEW.title), authors = refserver_fold(refserver_authors_text(NEW.authors))
        WHERE doc_id = NEW.paper_id;
    END IF;
    RETURN NULL;
  END $$;
  CREATE TRIGGER paper_search_metadata AFTER INSERT OR DELETE OR UPDATE OF title, authors ON metadata
    FOR EACH ROW EXECUTE FUNCTION refserver_search_metadata();
  `,
];

export const PG_SCHEMA_VERSION = MIGRATIONS.length;

/** Bring the schema up to date in one transaction (under the migration lock). Returns the version. */
export async function migratePostgres(client: PoolClient): Promise<number> {
  await client.query("BEGIN");
  try {
    await client.query("SELECT pg_advisory_xact_lock($1)", [MIGRATION_LOCK]);
    await client.query(
      "CREATE TABLE IF NOT EXISTS refserver_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    );
    const { rows } = await client.query<{ v: number | null }>("SELECT max(version) AS v FROM refserver_schema");
    const current = rows[0]?.v ?? 0;
    for (let v = current; v < MIGRATIONS.length; v++) {
      await client.query(MIGRATIONS[v] ?? "");
      await client.query("INSERT INTO refserver_schema (version) VALUES ($1)", [v + 1]);
    }
    await client.query("COMMIT");
    return MIGRATIONS.length;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}
