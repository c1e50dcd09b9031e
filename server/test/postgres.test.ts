/**
 * refserver-lite on PostgreSQL: what only PostgreSQL has. Real processes (the built CLI) on one
 * database and one shared data directory: the crash test, uploads split over two processes, the
 * same key raced across both, a process SIGKILLed mid-way whose jobs finish on the other; search
 * giving the same results as SQLite on the same data; `refserver-lite migrate` from SQLite.
 * The API and concurrency suites run on both backends in api.test.ts and concurrency.test.ts.
 */
import { readdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { afterAll, describe, expect, it } from "vitest";
import { migrateLibrary } from "../src/migrate.js";
import { ADMIN, injectUpload, login, removeTempDirs, tempDataDir, testApp, uploadParts, useDatabase, waitFor } from "./helpers/app.js";
import { makeSamplePdf, makeTestPdf } from "./helpers/pdf.js";
import { testDatabase, type TestDatabase } from "./helpers/pg.js";
import { runCli, spawnServer, type ServerProcess } from "./helpers/process.js";

const found = await testDatabase("server/test/postgres.test.ts");
afterAll(async () => {
  useDatabase(undefined);
  await found?.drop();
  await removeTempDirs();
});

const ADMIN_ENV = { REFSERVER_ADMIN_USER: ADMIN.user, REFSERVER_ADMIN_PASSWORD: ADMIN.password };

async function loginHttp(url: string): Promise<string> {
  const res = await fetch(`${url}/api/v1/auth/login`, { method: "POST", body: new URLSearchParams({ username: ADMIN.user, password: ADMIN.password }) });
  expect(res.status).toBe(200);
  return ((await res.json()) as { access_token: string }).access_token;
}

async function uploadHttp(url: string, token: string, pdf: Buffer, fields: Record<string, string>): Promise<{ status: number; body: Record<string, unknown> }> {
  const form = new FormData();
  form.append("title", fields.title ?? "A paper");
  form.append("authors", fields.authors ?? '["Ada Lovelace"]');
  for (const [k, v] of Object.entries(fields)) if (k !== "title" && k !== "authors") form.append(k, v);
  form.append("file", new Blob([pdf], { type: "application/pdf" }), "paper.pdf");
  const res = await fetch(`${url}/api/v1/papers/upload_with_metadata`, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: form });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function getJson(url: string, token: string, path: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function allJobsCompleted(url: string, token: string): Promise<true | undefined> {
  const { body } = await getJson(url, token, "/api/v1/jobs?limit=500");
  const jobs = body.jobs as Array<{ status: string }>;
  return jobs.length > 0 && jobs.every((j) => j.status === "completed") ? true : undefined;
}

async function stop(server: ServerProcess): Promise<void> {
  server.child.kill("SIGTERM");
  expect((await server.exited).code).toBe(0);
}

/** Rows and files agree: every row's file exists, every file has its row, no temp file, no orphan row. */
async function rowsAndFilesAgree(db: TestDatabase, url: string, dataDir: string): Promise<number> {
  const rows = (await db.query<{ file_path: string }>(url, "SELECT file_path FROM paper ORDER BY file_path")).map((r) => r.file_path).sort();
  const files = (await readdir(join(dataDir, "pdfs"))).map((f) => `pdfs/${f}`).sort();
  expect(files).toEqual(rows);
  const orphans = await db.query(
    url,
    "SELECT p.doc_id FROM paper p WHERE NOT EXISTS (SELECT 1 FROM processingjob j WHERE j.paper_id = p.doc_id) OR NOT EXISTS (SELECT 1 FROM metadata m WHERE m.paper_id = p.doc_id)",
  );
  expect(orphans).toEqual([]);
  expect(await readdir(join(dataDir, "tmp"))).toEqual([]);
  return rows.length;
}

describe.runIf(found !== undefined)("refserver-lite processes on PostgreSQL", () => {
  const db = found as TestDatabase;

  it("SIGKILL during uploads, restart: every acknowledged upload survives, rows and files agree, every job finishes", async () => {
    const dataDir = await tempDataDir();
    const url = await db.freshSchema();
    const first = spawnServer(["--data", dataDir, "--database", url, "--job-lease-s", "2"], ADMIN_ENV);
    const base = await first.url;
    const token = await loginHttp(base);
    let answered = 0;
    const uploads = Array.from({ length: 16 }, (_, i) =>
      uploadHttp(base, token, makeSamplePdf(12, 3, `Kill${i}`), { zotero_key: `KILL${String(i).padStart(4, "0")}`, zotero_library_id: "1" }).then(
        (r) => {
          answered++;
          return r;
        },
        () => "killed" as const,
      ),
    );
    await waitFor(() => (answered >= 4 ? true : undefined));
    first.child.kill("SIGKILL");
    const outcomes = await Promise.all(uploads);
    expect((await first.exited).signal).toBe("SIGKILL");
    const acknowledged = outcomes.filter((o) => o !== "killed" && o.status === 200).map((o) => (o === "killed" ? "" : String(o.body.doc_id)));
    expect(acknowledged.length).toBeGreaterThanOrEqual(4);
    expect(outcomes.every((o) => o === "killed" || o.status === 200)).toBe(true);

    const second = spawnServer(["--data", dataDir, "--database", url, "--job-lease-s", "2"], ADMIN_ENV);
    const base2 = await second.url;
    // The token of the killed process is accepted: the secret lives in the shared data directory.
    await waitFor(() => allJobsCompleted(base2, token), 45_000);
    await stop(second);
    const papers = await rowsAndFilesAgree(db, url, dataDir);
    expect(papers).toBeGreaterThanOrEqual(acknowledged.length);
    const stored = new Set((await db.query<{ doc_id: string }>(url, "SELECT doc_id FROM paper")).map((r) => r.doc_id));
    for (const id of acknowledged) expect(stored.has(id), id).toBe(true);
    expect(await db.query(url, "SELECT status, COUNT(*)::int AS n FROM processingjob GROUP BY status")).toEqual([{ status: "completed", n: papers }]);
    // Two starts, one migration applied once.
    expect(await db.query(url, "SELECT version FROM refserver_schema")).toEqual([{ version: 1 }]);
  });

  it("the startup sweep leaves another running process's fresh files alone, and removes strays once it runs alone", async () => {
    const dataDir = await tempDataDir();
    const url = await db.freshSchema();
    const a = spawnServer(["--data", dataDir, "--database", url, "--no-worker"], ADMIN_ENV);
    await a.url;
    // What an upload in flight on A looks like on disk: a temp file, a PDF whose rows are not committed yet.
    await writeFile(join(dataDir, "tmp", "inflight.partial"), "%PDF-");
    await writeFile(join(dataDir, "pdfs", "not-yet-committed.pdf"), "%PDF-");
    const b = spawnServer(["--data", dataDir, "--database", url, "--no-worker"], ADMIN_ENV);
    await b.url;
    expect(await readdir(join(dataDir, "tmp"))).toEqual(["inflight.partial"]);
    expect(await readdir(join(dataDir, "pdfs"))).toEqual(["not-yet-committed.pdf"]);
    await Promise.all([stop(a), stop(b)]);
    const c = spawnServer(["--data", dataDir, "--database", url, "--no-worker"], ADMIN_ENV);
    await c.url;
    expect(await readdir(join(dataDir, "tmp"))).toEqual([]);
    expect(await readdir(join(dataDir, "pdfs"))).toEqual([]);
    await stop(c);
  });

  it("two processes, one database: uploads split over both are listed, downloadable and searchable through either; a token of one works on the other", async () => {
    const dataDir = await tempDataDir();
    const url = await db.freshSchema();
    const a = spawnServer(["--data", dataDir, "--database", url], ADMIN_ENV);
    const b = spawnServer(["--data", dataDir, "--database", url], ADMIN_ENV);
    const [urlA, urlB] = await Promise.all([a.url, b.url]);
    const token = await loginHttp(urlA); // issued by A, used on both
    const results = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        uploadHttp(i % 2 === 0 ? urlA : urlB, token, makeTestPdf({ pages: [[[`Split paper ${i} about ${i % 2 === 0 ? "glaciers" : "volcanoes"}.`]]] }), {
          title: `Split ${i}`,
          zotero_key: `SPLIT${String(i).padStart(3, "0")}`,
          zotero_library_id: "7",
        }),
      ),
    );
    expect(results.map((r) => r.status)).toEqual(Array(12).fill(200));
    await waitFor(() => allJobsCompleted(urlB, token), 45_000);
    for (const [mine, other] of [
      [urlA, urlB],
      [urlB, urlA],
    ] as const) {
      const listed = await getJson(other, token, "/api/v1/documents?limit=100");
      expect(listed.body.total).toBe(12);
      const up = results[mine === urlA ? 0 : 1]?.body;
      const dl = await fetch(`${other}/download/pdf/${String(up?.doc_id)}`, { headers: { authorization: `Bearer ${token}` } });
      expect(dl.status).toBe(200);
      expect((await dl.arrayBuffer()).byteLength).toBeGreaterThan(100);
    }
    const search = await getJson(urlB, token, "/api/v1/search?q=glaciers&limit=100");
    expect(search.body.total).toBe(6);
    const links = await getJson(urlA, token, "/api/v1/zotero/links?library_id=7");
    expect((links.body.links as unknown[]).length).toBe(12);
    await Promise.all([stop(a), stop(b)]);
    // Each job ran exactly once across the two processes.
    expect(await db.query(url, "SELECT COUNT(*)::int AS n, MAX(attempts) AS max FROM processingjob")).toEqual([{ n: 12, max: 1 }]);
    expect(await rowsAndFilesAgree(db, url, dataDir)).toBe(12);
  });

  it("the same key raced across two processes: one 200, the rest 409 naming the winner; one paper, one file", async () => {
    const dataDir = await tempDataDir();
    const url = await db.freshSchema();
    const a = spawnServer(["--data", dataDir, "--database", url, "--no-worker"], ADMIN_ENV);
    const b = spawnServer(["--data", dataDir, "--database", url, "--no-worker"], ADMIN_ENV);
    const [urlA, urlB] = await Promise.all([a.url, b.url]);
    const token = await loginHttp(urlB);
    const results = await Promise.all(
      Array.from({ length: 10 }, (_, i) => uploadHttp(i % 2 === 0 ? urlA : urlB, token, makeSamplePdf(1, 1), { zotero_key: "RACEBOTH", zotero_library_id: "42" })),
    );
    const ok = results.filter((r) => r.status === 200);
    const dup = results.filter((r) => r.status === 409);
    expect(ok).toHaveLength(1);
    expect(dup).toHaveLength(9);
    const winner = String(ok[0]?.body.doc_id);
    for (const d of dup) expect(d.body).toEqual({ detail: `Document with Zotero key 'RACEBOTH' already exists (doc_id: ${winner})` });
    await Promise.all([stop(a), stop(b)]);
    expect(await readdir(join(dataDir, "pdfs"))).toEqual([`${winner}.pdf`]);
    expect(await rowsAndFilesAgree(db, url, dataDir)).toBe(1);
  });

  it("a process SIGKILLed while it works on a job: the other process takes the job once the lease expires, and finishes everything", async () => {
    const dataDir = await tempDataDir();
    const url = await db.freshSchema();
    const lease = ["--job-lease-s", "2", "--pdf-time-limit-s", "120"];
    const a = spawnServer(["--data", dataDir, "--database", url, ...lease], ADMIN_ENV);
    const urlA = await a.url;
    const token = await loginHttp(urlA);
    for (let i = 0; i < 4; i++) {
      const r = await uploadHttp(urlA, token, makeSamplePdf(120, 4, `Long${i}`), { title: `long ${i}` });
      expect(r.status).toBe(200);
    }
    // A has claimed a job (its lease is in the database): kill it there.
    const held = await waitFor(async () => (await db.query<{ job_id: string }>(url, "SELECT job_id FROM processingjob WHERE lease_owner IS NOT NULL AND status = 'processing'"))[0]);
    a.child.kill("SIGKILL");
    expect((await a.exited).signal).toBe("SIGKILL");
    const b = spawnServer(["--data", dataDir, "--database", url, ...lease], ADMIN_ENV);
    const urlB = await b.url;
    for (let i = 0; i < 2; i++) expect((await uploadHttp(urlB, token, makeSamplePdf(2, 2, `After${i}`), { title: `after ${i}` })).status).toBe(200);
    await waitFor(() => allJobsCompleted(urlB, token), 90_000);
    const taken = await getJson(urlB, token, `/api/v1/job/${held.job_id}`);
    expect(taken.body).toMatchObject({ status: "completed" });
    // Claimed by A, then by B after the lease expired.
    expect(await db.query(url, "SELECT attempts FROM processingjob WHERE job_id = $1", [held.job_id])).toEqual([{ attempts: 2 }]);
    await stop(b);
    expect(await rowsAndFilesAgree(db, url, dataDir)).toBe(6);
  });

  it("refuses a database URL that is not postgres:// with one line, and names an unreachable database without its password", async () => {
    const dataDir = await tempDataDir();
    const bad = await runCli(["--data", dataDir, "--database", "mysql://x@127.0.0.1/db"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--database must start with postgres:\/\//);
    const noDb = new URL(db.url);
    noDb.pathname = "/refserver_no_such_database";
    noDb.password = "hunter2-secret";
    const missing = await runCli(["--data", dataDir, "--database", noDb.toString(), "--port", "0"]);
    expect(missing.code).toBe(1);
    expect(missing.stderr.trim().split("\n")).toHaveLength(1);
    expect(missing.stderr).toMatch(/cannot use the database postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:5432\/refserver_no_such_database/);
    expect(missing.stderr).not.toContain("hunter2-secret");
  });
});

/** Papers with words in title, authors and text; the same on both backends. */
const LIBRARY = [
  { key: "SRCH0001", title: "Glacier dynamics in Greenland", authors: '["Ada Lovelace"]', text: "Ice flows slowly over bedrock and basalt." },
  { key: "SRCH0002", title: "Volcanic basalt formation", authors: '["Paul Erdős", "Alan Turing"]', text: "Magma cools into basalt columns near the glacier." },
  { key: "SRCH0003", title: "Über Sedimente", authors: '["Émilie du Châtelet"]', text: "Sediment cores record the climate of ancient lakes." },
  { key: "SRCH0004", title: "Notes", authors: "[]", text: "Nothing here but 50% of the percent_sign cases." },
];
const QUERIES = ["basalt", "glacier", "GREENLAND", "erdos", "Erdős", "uber", "chatelet", "sediment cores", '"ancient lakes"', "basalt glacier", "50%", "percent_sign", "zz", "Lovelace", "turing basalt", "nothing-matches-this"];

async function searchAll(app: FastifyInstance, token: string): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  const keyOf = new Map<string, string>();
  for (const q of QUERIES) {
    const listed = (await app.inject({ url: `/api/v1/documents?q=${encodeURIComponent(q)}`, headers: { authorization: `Bearer ${token}` } })).json() as {
      documents: Array<{ doc_id: string; zotero_key: string | null }>;
      total: number;
    };
    for (const d of listed.documents) keyOf.set(d.doc_id, d.zotero_key ?? "");
    const searched = (await app.inject({ url: `/api/v1/search?q=${encodeURIComponent(q)}`, headers: { authorization: `Bearer ${token}` } })).json() as {
      matches: Array<{ zotero_key: string | null; snippet: string; page: number | null }>;
      total: number;
    };
    out[q] = {
      listed: listed.documents.map((d) => d.zotero_key),
      total: listed.total,
      // The set of matches (ranking formulas differ: bm25 on SQLite, weighted hits on PostgreSQL).
      matches: searched.matches.map((m) => `${m.zotero_key ?? ""} ${m.snippet} p${m.page ?? "-"}`).sort(),
      searchTotal: searched.total,
    };
  }
  return out;
}

describe.runIf(found !== undefined)("search on PostgreSQL", () => {
  it("gives the same results as SQLite on the same data (titles, authors, text; case and accents folded; phrases; short terms)", async () => {
    const results: Array<Record<string, unknown>> = [];
    for (const url of [undefined, await (found as TestDatabase).freshSchema()]) {
      useDatabase(url);
      const app = await testApp({ worker: true, workerPollIntervalMs: 20 });
      try {
        const token = await login(app);
        for (const p of LIBRARY) {
          const res = await injectUpload(app, token, uploadParts(makeTestPdf({ pages: [[[p.text]]] }), { title: p.title, authors: p.authors, zotero_key: p.key, zotero_library_id: "1" }));
          expect(res.statusCode, res.body).toBe(200);
        }
        await app.refserver.worker?.whenIdle();
        results.push(await searchAll(app, token));
      } finally {
        await app.close();
      }
    }
    useDatabase(undefined);
    const [sqlite, postgres] = results;
    expect(postgres).toEqual(sqlite);
    // and the results are the expected ones, not two equal empty answers
    expect((sqlite?.basalt as { listed: string[] }).listed.sort()).toEqual(["SRCH0001", "SRCH0002"]);
    expect((sqlite?.erdos as { listed: string[] }).listed).toEqual(["SRCH0002"]);
    expect((sqlite?.uber as { listed: string[] }).listed).toEqual(["SRCH0003"]);
    expect((sqlite?.['"ancient lakes"'] as { matches: string[] }).matches).toEqual(["SRCH0003 Sediment cores record the climate of ancient lakes. p1"]);
  });
});

describe.runIf(found !== undefined)("refserver-lite migrate --from DIR --to postgres://", () => {
  it("copies a SQLite library (papers, links, jobs, text, users), verifies counts, is safe to run twice, and the library then serves from PostgreSQL", async () => {
    const dataDir = await tempDataDir();
    useDatabase(undefined);
    const source = await testApp({ dataDir, worker: true, workerPollIntervalMs: 20 });
    const token = await login(source);
    const docs: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await injectUpload(source, token, uploadParts(makeSamplePdf(3, 2, `Migrated${i}`), { title: `Migrated ${i}`, zotero_key: `MIGR000${i}`, zotero_library_id: "3", tags: '["t"]' }));
      expect(res.statusCode).toBe(200);
      docs.push((res.json() as { doc_id: string }).doc_id);
    }
    await source.refserver.worker?.whenIdle();
    const before = (await source.inject({ url: "/api/v1/documents?limit=100", headers: { authorization: `Bearer ${token}` } })).json() as unknown;
    const links = (await source.inject({ url: "/api/v1/zotero/links?library_id=3", headers: { authorization: `Bearer ${token}` } })).json() as unknown;
    const jobs = (await source.inject({ url: "/api/v1/jobs?limit=100", headers: { authorization: `Bearer ${token}` } })).json() as unknown;
    await source.close();

    const url = await (found as TestDatabase).freshSchema();
    const first = await runCli(["migrate", "--from", dataDir, "--to", url]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/paper 5 \(5 new\)/);
    expect(first.stdout).toMatch(/counts verified/);
    const second = await runCli(["migrate", "--from", dataDir, "--to", url]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/paper 5 \(0 new\)/);
    expect(second.stdout).toMatch(/pagetext 15 \(0 new\)/);

    useDatabase(url);
    const target = await testApp({ dataDir, worker: false });
    try {
      // The admin's password and the token's secret came along; the rows read the same.
      const token2 = await login(target);
      const get = async (path: string): Promise<unknown> => (await target.inject({ url: path, headers: { authorization: `Bearer ${token2}` } })).json();
      expect(await get("/api/v1/documents?limit=100")).toEqual(before);
      expect(await get("/api/v1/zotero/links?library_id=3")).toEqual(links);
      expect(await get("/api/v1/jobs?limit=100")).toEqual(jobs);
      expect(((await get(`/api/v1/search?q=Migrated2`)) as { total: number }).total).toBe(1);
      const dl = await target.inject({ url: `/download/pdf/${docs[0] ?? ""}`, headers: { authorization: `Bearer ${token2}` } });
      expect(dl.statusCode).toBe(200);
      expect(await target.refserver.repo.chunkCount(docs[0] ?? "")).toBeGreaterThan(0);
    } finally {
      await target.close();
      useDatabase(undefined);
    }

    // Into a database that holds another library: the counts differ, it says so, exit 1.
    const other = await tempDataDir();
    const another = await testApp({ dataDir: other, adminUser: "someone-else", adminPassword: "another password" });
    await another.close();
    const mixed = await runCli(["migrate", "--from", other, "--to", url]);
    expect(mixed.code).toBe(1);
    expect(mixed.stderr).toMatch(/user: 2 rows in PostgreSQL, 1 in .*: the database held other rows before/);
  });

  it("names what is wrong: no library in DIR, a URL that is not postgres://", async () => {
    const empty = await tempDataDir();
    await expect(migrateLibrary(empty, (found as TestDatabase).url)).rejects.toThrow(/holds no refserver.db/);
    const bad = await runCli(["migrate", "--from", empty, "--to", "sqlite:///x"]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--to must start with postgres:\/\//);
  });
});
