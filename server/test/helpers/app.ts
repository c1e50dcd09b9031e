import { randomUUID } from "node:crypto";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import pg from "pg";
import { buildApp, type AppOptions } from "../../src/app.js";
import type { SqliteDatabase } from "../../src/db/connection.js";
import { SqliteRepository } from "../../src/db/repository.js";

export const ADMIN = { user: "admin", password: "correct horse battery staple" };

const dirs: string[] = [];

export async function tempDataDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "refserver-test-"));
  dirs.push(dir);
  return dir;
}

export async function removeTempDirs(): Promise<void> {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
}

let currentDatabaseUrl: string | undefined;

/**
 * The database the next testApp() calls use when they name none: a PostgreSQL URL (a schema of
 * the test database), or undefined for SQLite in the data directory.
 */
export function useDatabase(url: string | undefined): void {
  currentDatabaseUrl = url;
}

export function currentDatabase(): string | undefined {
  return currentDatabaseUrl;
}

export async function testApp(overrides: Partial<AppOptions> = {}): Promise<FastifyInstance> {
  const dataDir = overrides.dataDir ?? (await tempDataDir());
  const app = await buildApp({
    databaseUrl: currentDatabaseUrl,
    adminUser: ADMIN.user,
    adminPassword: ADMIN.password,
    worker: false,
    workerPollIntervalMs: 50,
    ...overrides,
    dataDir,
  });
  await app.ready();
  return app;
}

export async function login(app: FastifyInstance, user = ADMIN.user, password = ADMIN.password): Promise<string> {
  const res = await app.inject({
    method: "POST",
    url: "/api/v1/auth/login",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    payload: new URLSearchParams({ username: user, password }).toString(),
  });
  if (res.statusCode !== 200) throw new Error(`login failed: ${res.statusCode} ${res.body}`);
  return (res.json() as { access_token: string }).access_token;
}

export type Part =
  | { name: string; value: string }
  | { name: string; filename: string; content: Buffer; contentType?: string };

/** A multipart/form-data body with the parts in exactly the given order. */
export function multipart(parts: Part[]): { body: Buffer; contentType: string } {
  const boundary = `----refserver${randomUUID().replace(/-/g, "")}`;
  const chunks: Buffer[] = [];
  for (const p of parts) {
    if ("filename" in p) {
      chunks.push(
        Buffer.from(
          `--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"; filename="${p.filename}"\r\n` +
            `Content-Type: ${p.contentType ?? "application/pdf"}\r\n\r\n`,
        ),
        p.content,
        Buffer.from("\r\n"),
      );
    } else {
      chunks.push(Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="${p.name}"\r\n\r\n${p.value}\r\n`));
    }
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), contentType: `multipart/form-data; boundary=${boundary}` };
}

export interface UploadFields {
  title?: string;
  authors?: string;
  year?: string;
  zotero_key?: string;
  zotero_library_id?: string;
  zotero_version?: string;
  collection_keys?: string;
  tags?: string;
}

export function uploadParts(pdf: Buffer, fields: UploadFields = {}, filename = "paper.pdf", fileFirst = false): Part[] {
  const all: UploadFields = { title: "A paper", authors: '["Ada Lovelace"]', ...fields };
  const fieldParts: Part[] = Object.entries(all)
    .filter((e): e is [string, string] => typeof e[1] === "string")
    .map(([name, value]) => ({ name, value }));
  const file: Part = { name: "file", filename, content: pdf };
  return fileFirst ? [file, ...fieldParts] : [...fieldParts, file];
}

export async function injectUpload(app: FastifyInstance, token: string | undefined, parts: Part[]) {
  const { body, contentType } = multipart(parts);
  const headers: Record<string, string> = { "content-type": contentType };
  if (token) headers.authorization = `Bearer ${token}`;
  return app.inject({ method: "POST", url: "/api/v1/papers/upload_with_metadata", headers, payload: body });
}

export async function listDir(path: string): Promise<string[]> {
  return (await readdir(path)).sort();
}

/** Poll `check` until it returns a value (not undefined), or fail after `timeoutMs`. */
export async function waitFor<T>(check: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error("waitFor: timed out");
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The SQLite connection of an app's requests (or its worker's): for tests that read rows directly. */
export function sqliteOf(app: FastifyInstance, worker = false): SqliteDatabase {
  const repo = worker ? app.refserver.workerRepo : app.refserver.repo;
  if (!(repo instanceof SqliteRepository)) throw new Error("this test reads the SQLite database directly");
  return repo.db;
}

/**
 * Rows of a query on an app's database, SQLite or PostgreSQL (`?` parameters; the SQL must be
 * valid on both): for tests that check stored rows on either backend.
 */
export async function dbRows<R>(app: FastifyInstance, sql: string, params: unknown[] = []): Promise<R[]> {
  if (app.refserver.storage.kind === "sqlite") return sqliteOf(app).prepare(sql).all(...params) as R[];
  const url = currentDatabaseUrl;
  if (!url) throw new Error("dbRows: no PostgreSQL URL in use");
  let n = 0;
  const text = sql.replace(/\?/g, () => `$${++n}`);
  const client = new pg.Client({ connectionString: url, types: { getTypeParser: (oid: number, format?: "text" | "binary") => (oid === 20 ? (v: string) => Number(v) : format === "binary" ? pg.types.getTypeParser(oid, "binary") : pg.types.getTypeParser(oid, "text")) } as pg.CustomTypesConfig });
  await client.connect();
  try {
    return (await client.query(text, params)).rows as R[];
  } finally {
    await client.end();
  }
}
