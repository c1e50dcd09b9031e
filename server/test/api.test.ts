import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { SignJWT } from "jose";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import type { FastifyInstance } from "fastify";
import { hashPassword } from "../src/auth.js";
import { ADMIN, currentDatabase, dbRows, injectUpload, listDir, login, removeTempDirs, tempDataDir, testApp, uploadParts, useDatabase } from "./helpers/app.js";
import { testDatabase } from "./helpers/pg.js";
import { makeSamplePdf } from "./helpers/pdf.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const pdf = makeSamplePdf(2, 2);

const pgdb = await testDatabase("server/test/api.test.ts");
afterAll(async () => {
  useDatabase(undefined);
  await pgdb?.drop();
  await removeTempDirs();
});

// The same API tests on both backends: SQLite (the default) and PostgreSQL.
for (const backend of ["sqlite", "postgres"] as const) describe.runIf(backend === "sqlite" || pgdb !== undefined)(`on ${backend}`, () => {
  let app: FastifyInstance;
  let dataDir: string;
  let token: string;

  beforeEach(async () => {
    dataDir = await tempDataDir();
    useDatabase(backend === "postgres" ? await pgdb?.freshSchema() : undefined);
    app = await testApp({ dataDir });
    token = await login(app);
  });
  afterEach(async () => {
    await app.close();
  });

  const auth = () => ({ authorization: `Bearer ${token}` });

  describe("POST /api/v1/auth/login", () => {
    it("answers a bearer JWT (HS256, 480 minutes) for the admin", async () => {
      const res = await app.inject({
        method: "POST",
        url: "/api/v1/auth/login",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        payload: `username=${ADMIN.user}&password=${encodeURIComponent(ADMIN.password)}`,
      });
      expect(res.statusCode).toBe(200);
      const body = res.json() as { access_token: string; token_type: string };
      expect(body.token_type).toBe("bearer");
      expect(Object.keys(body).sort()).toEqual(["access_token", "token_type"]);
      const [header, payload] = body.access_token.split(".").slice(0, 2).map((p) => JSON.parse(Buffer.from(p, "base64url").toString()));
      expect(header.alg).toBe("HS256");
      expect(payload.sub).toBe(ADMIN.user);
      expect(payload.exp - payload.iat).toBe(480 * 60);
      const row = await app.refserver.repo.findUser(ADMIN.user);
      expect(row?.last_login).toEqual(expect.any(String));
    });

    it("401 Invalid credentials for a wrong password, an unknown user, or a non-admin", async () => {
      await app.refserver.repo.createUser("reader", await hashPassword("pw"), false);
      for (const [u, p] of [
        [ADMIN.user, "wrong"],
        ["nobody", "x"],
        ["reader", "pw"],
      ] as const) {
        const res = await app.inject({
          method: "POST",
          url: "/api/v1/auth/login",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          payload: new URLSearchParams({ username: u, password: p }).toString(),
        });
        expect(res.statusCode).toBe(401);
        expect(res.json()).toEqual({ detail: "Invalid credentials" });
      }
    });

    it("422 in FastAPI's shape when a field is missing", async () => {
      const res = await app.inject({
        method: "POST",
        url: "/api/v1/auth/login",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        payload: "username=admin",
      });
      expect(res.statusCode).toBe(422);
      expect(res.json()).toEqual({
        detail: [{ type: "missing", loc: ["body", "password"], msg: "Field required", input: null }],
      });
    });
  });

  describe("bearer authentication", () => {
    const protectedRoutes = [
      ["GET", "/api/v1/jobs"],
      ["GET", "/api/v1/job/x"],
      ["GET", "/api/v1/zotero/links?library_id=1"],
      ["POST", "/api/v1/papers/upload_with_metadata"],
    ] as const;

    it("401 Authentication required without a token, with a bad one, or an expired one", async () => {
      const secret = Buffer.from((await readFile(join(dataDir, "jwt-secret"), "utf8")).trim(), "hex");
      const now = Math.floor(Date.now() / 1000);
      const expired = await new SignJWT({})
        .setProtectedHeader({ alg: "HS256" })
        .setSubject(ADMIN.user)
        .setIssuedAt(now - 7200)
        .setExpirationTime(now - 60)
        .sign(secret);
      const otherSecret = await new SignJWT({})
        .setProtectedHeader({ alg: "HS256" })
        .setSubject(ADMIN.user)
        .setExpirationTime(now + 600)
        .sign(Buffer.alloc(32, 7));
      const unsigned = `${Buffer.from('{"alg":"none"}').toString("base64url")}.${Buffer.from(
        JSON.stringify({ sub: ADMIN.user, exp: now + 600 }),
      ).toString("base64url")}.`;
      for (const [method, url] of protectedRoutes) {
        for (const header of [undefined, "Bearer", "Bearer garbage", `Bearer ${expired}`, `Bearer ${otherSecret}`, `Bearer ${unsigned}`, `Basic ${token}`]) {
          const res = await app.inject({ method, url, headers: header ? { authorization: header } : {} });
          expect(res.statusCode, `${method} ${url} ${header}`).toBe(401);
          expect(res.json()).toEqual({ detail: "Authentication required" });
        }
      }
    });

    it("403 Admin access required for a valid token of a non-admin user", async () => {
      await app.refserver.repo.createUser("reader", await hashPassword("pw"), false);
      const readerToken = await app.refserver.tokens.issue("reader");
      const res = await app.inject({ method: "GET", url: "/api/v1/jobs", headers: { authorization: `Bearer ${readerToken}` } });
      expect(res.statusCode).toBe(403);
      expect(res.json()).toEqual({ detail: "Admin access required" });
    });

    it("the JWT secret is kept in the data dir: a token survives a restart", async () => {
      await app.close();
      app = await testApp({ dataDir });
      const res = await app.inject({ method: "GET", url: "/api/v1/jobs", headers: auth() });
      expect(res.statusCode).toBe(200);
    });
  });

  describe("POST /api/v1/papers/upload_with_metadata", () => {
    it("200 with job_id, doc_id, filename, message, status; stores every row and the file", async () => {
      const res = await injectUpload(
        app,
        token,
        uploadParts(pdf, {
          title: "Ice sheets",
          authors: '["Ada Lovelace","Alan Turing"]',
          year: "2021",
          zotero_key: "ABCD2345",
          zotero_library_id: "12345",
          zotero_version: "77",
          collection_keys: '["COLL0001"]',
          tags: '["ice"]',
        }),
      );
      expect(res.statusCode).toBe(200);
      const body = res.json() as Record<string, string>;
      expect(Object.keys(body).sort()).toEqual(["doc_id", "filename", "job_id", "message", "status"]);
      expect(body.job_id).toMatch(UUID);
      expect(body.doc_id).toMatch(UUID);
      expect(body.filename).toBe("paper.pdf");
      expect(body.status).toBe("processing");

      const doc = await app.inject({ method: "GET", url: `/api/v1/document/${body.doc_id}`, headers: auth() });
      expect(doc.statusCode).toBe(200);
      expect(doc.json()).toMatchObject({
        doc_id: body.doc_id,
        filename: "paper.pdf",
        metadata: { title: "Ice sheets", authors: ["Ada Lovelace", "Alan Turing"], year: 2021, journal: null, doi: null },
        text: "",
        created_at: expect.any(String),
      });
      expect(await dbRows(app, "SELECT source FROM metadata WHERE paper_id = ?", [body.doc_id])).toEqual([{ source: "user_api" }]);
      expect((await dbRows(app, "SELECT library_id, zotero_key, zotero_version, collection_keys, tags FROM zoterolink"))[0]).toEqual({
        library_id: "12345",
        zotero_key: "ABCD2345",
        zotero_version: 77,
        collection_keys: '["COLL0001"]',
        tags: '["ice"]',
      });
      expect(await listDir(join(dataDir, "pdfs"))).toEqual([`${body.doc_id}.pdf`]);
      expect(await listDir(join(dataDir, "tmp"))).toEqual([]);

      const dl = await app.inject({ method: "GET", url: `/download/pdf/${body.doc_id}`, headers: auth() });
      expect(dl.statusCode).toBe(200);
      expect(dl.headers["content-type"]).toBe("application/pdf");
      expect(dl.headers["content-disposition"]).toContain('filename="paper.pdf"');
      expect(dl.rawPayload.equals(pdf)).toBe(true);
    });

    it("accepts the fields in any order (file first)", async () => {
      const res = await injectUpload(app, token, uploadParts(pdf, { title: "File first" }, "paper.pdf", true));
      expect(res.statusCode).toBe(200);
      const doc = await app.inject({ method: "GET", url: `/api/v1/document/${(res.json() as { doc_id: string }).doc_id}`, headers: auth() });
      expect((doc.json() as { metadata: { title: string } }).metadata.title).toBe("File first");
    });

    it("stores an empty title as the filename (the original answers 422)", async () => {
      const res = await injectUpload(app, token, uploadParts(pdf, { title: "" }, "Untitled scan.pdf"));
      expect(res.statusCode).toBe(200);
      const doc = await app.inject({ method: "GET", url: `/api/v1/document/${(res.json() as { doc_id: string }).doc_id}`, headers: auth() });
      expect((doc.json() as { metadata: { title: string } }).metadata.title).toBe("Untitled scan.pdf");
    });

    it("409 with the original's message when the (library, key) is already held; no rows or files left", async () => {
      const fields = { zotero_key: "DUPE0001", zotero_library_id: "9" };
      const first = await injectUpload(app, token, uploadParts(pdf, fields));
      const docId = (first.json() as { doc_id: string }).doc_id;
      const second = await injectUpload(app, token, uploadParts(pdf, fields));
      expect(second.statusCode).toBe(409);
      expect(second.json()).toEqual({ detail: `Document with Zotero key 'DUPE0001' already exists (doc_id: ${docId})` });
      expect((await app.refserver.repo.counts()).papers).toBe(1);
      expect(await listDir(join(dataDir, "pdfs"))).toEqual([`${docId}.pdf`]);
      expect(await listDir(join(dataDir, "tmp"))).toEqual([]);
    });

    it("stores no Zotero link unless both key and library id are given", async () => {
      const res = await injectUpload(app, token, uploadParts(pdf, { zotero_key: "ONLYKEY1" }));
      expect(res.statusCode).toBe(200);
      const again = await injectUpload(app, token, uploadParts(pdf, { zotero_key: "ONLYKEY1" }));
      expect(again.statusCode).toBe(200);
      expect(await dbRows(app, "SELECT COUNT(*) AS n FROM zoterolink")).toEqual([{ n: 0 }]);
    });

    it("422 when file, title or authors is missing, or year is not an integer", async () => {
      const missing = await injectUpload(app, token, [{ name: "title", value: "x" }]);
      expect(missing.statusCode).toBe(422);
      expect((missing.json() as { detail: Array<{ loc: string[] }> }).detail.map((d) => d.loc)).toEqual([
        ["body", "file"],
        ["body", "authors"],
      ]);
      const badYear = await injectUpload(app, token, uploadParts(pdf, { year: "twenty" }));
      expect(badYear.statusCode).toBe(422);
      expect(badYear.json()).toEqual({
        detail: [
          {
            type: "int_parsing",
            loc: ["body", "year"],
            msg: "Input should be a valid integer, unable to parse string as an integer",
            input: "twenty",
          },
        ],
      });
      const noTitle = await injectUpload(app, token, [
        { name: "authors", value: "[]" },
        { name: "file", filename: "a.pdf", content: pdf },
      ]);
      expect(noTitle.statusCode).toBe(422);
      expect(await listDir(join(dataDir, "tmp"))).toEqual([]);
      expect(await listDir(join(dataDir, "pdfs"))).toEqual([]);
    });

    it("400 Only PDF files are allowed for a name not ending in .pdf", async () => {
      const res = await injectUpload(app, token, uploadParts(pdf, {}, "paper.docx"));
      expect(res.statusCode).toBe(400);
      expect(res.json()).toEqual({ detail: "Only PDF files are allowed" });
    });

    it("400 when the content does not begin with %PDF-, and nothing is kept", async () => {
      const res = await injectUpload(app, token, uploadParts(Buffer.from("<html>not a pdf</html>"), {}, "fake.pdf"));
      expect(res.statusCode).toBe(400);
      expect((res.json() as { detail: string }).detail).toMatch(/%PDF-/);
      expect(await listDir(join(dataDir, "tmp"))).toEqual([]);
      expect(await listDir(join(dataDir, "pdfs"))).toEqual([]);
      expect((await app.refserver.repo.counts()).papers).toBe(0);
    });

    it("413 over the size limit, and nothing is kept", async () => {
      await app.close();
      app = await testApp({ dataDir, maxUploadBytes: 4096 });
      const big = Buffer.concat([pdf, Buffer.alloc(20_000, 0x20)]);
      const res = await injectUpload(app, token, uploadParts(big));
      expect(res.statusCode).toBe(413);
      expect((res.json() as { detail: string }).detail).toMatch(/too large/i);
      expect(await listDir(join(dataDir, "tmp"))).toEqual([]);
      expect(await listDir(join(dataDir, "pdfs"))).toEqual([]);
      const small = await injectUpload(app, token, uploadParts(makeSamplePdf(1, 1)));
      expect(small.statusCode).toBe(200);
    });

    it("sanitises the client filename and never uses it as a path", async () => {
      const res = await injectUpload(app, token, uploadParts(pdf, {}, "../../escape..attempt.pdf"));
      expect(res.statusCode).toBe(200);
      const body = res.json() as { doc_id: string; filename: string };
      expect(body.filename).toBe("escape.attempt.pdf");
      expect(existsSync(join(dataDir, "..", "escape..attempt.pdf"))).toBe(false);
      expect(await listDir(join(dataDir, "pdfs"))).toEqual([`${body.doc_id}.pdf`]);
      const win = await injectUpload(app, token, uploadParts(pdf, {}, "C:\\Users\\me\\paper.pdf"));
      expect((win.json() as { filename: string }).filename).toBe("paper.pdf");
    });
  });

  describe("jobs, documents, progress, links, health", () => {
    it("GET /api/v1/job/{id}: the original's shape; 404 Job not found", async () => {
      const up = (await injectUpload(app, token, uploadParts(pdf))).json() as { job_id: string };
      const res = await app.inject({ method: "GET", url: `/api/v1/job/${up.job_id}`, headers: auth() });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({
        job_id: up.job_id,
        filename: "paper.pdf",
        status: "processing",
        current_step: "queued",
        progress_percentage: 0,
      });
      const missing = await app.inject({ method: "GET", url: "/api/v1/job/nope", headers: auth() });
      expect(missing.statusCode).toBe(404);
      expect(missing.json()).toEqual({ detail: "Job not found" });
    });

    it("GET /api/v1/jobs lists with status, limit and offset; 422 for a bad limit", async () => {
      for (let i = 0; i < 3; i++) await injectUpload(app, token, uploadParts(pdf));
      const all = await app.inject({ method: "GET", url: "/api/v1/jobs", headers: auth() });
      expect(all.statusCode).toBe(200);
      const body = all.json() as { jobs: Array<Record<string, unknown>>; total: number };
      expect(body.total).toBe(3);
      expect(body.jobs[0]).toMatchObject({ status: "processing", doc_id: expect.stringMatching(UUID), steps: { text: { status: "pending" } } });
      const page = await app.inject({ method: "GET", url: "/api/v1/jobs?limit=2&offset=2", headers: auth() });
      expect((page.json() as { jobs: unknown[] }).jobs).toHaveLength(1);
      const none = await app.inject({ method: "GET", url: "/api/v1/jobs?status=completed", headers: auth() });
      expect(none.json()).toMatchObject({ jobs: [], total: 0 });
      const bad = await app.inject({ method: "GET", url: "/api/v1/jobs?limit=zero", headers: auth() });
      expect(bad.statusCode).toBe(422);
      expect((bad.json() as { detail: Array<{ loc: string[] }> }).detail[0]?.loc).toEqual(["query", "limit"]);
    });

    it("GET /api/v1/document/{id} and /download/pdf/{id}: 404 Document not found", async () => {
      for (const url of ["/api/v1/document/nope", "/download/pdf/nope"]) {
        const res = await app.inject({ method: "GET", url, headers: auth() });
        expect(res.statusCode).toBe(404);
        expect(res.json()).toEqual({ detail: "Document not found" });
      }
    });

    it("GET /api/v1/admin/progress: the newest papers with their job steps", async () => {
      const up = (await injectUpload(app, token, uploadParts(pdf))).json() as { job_id: string; doc_id: string };
      const res = await app.inject({ method: "GET", url: "/api/v1/admin/progress", headers: auth() });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({
        documents: [
          {
            doc_id: up.doc_id,
            job_id: up.job_id,
            status: "processing",
            current_step: "queued",
            progress_percentage: 0,
            error_message: null,
            steps: {
              text: { status: "pending", error: null, completed_at: null },
              chunking: { status: "pending", error: null, completed_at: null },
            },
          },
        ],
      });
    });

    it("GET /api/v1/zotero/links answers the keys held for one library; 422 without library_id", async () => {
      const a = (await injectUpload(app, token, uploadParts(pdf, { zotero_key: "KEYB0002", zotero_library_id: "7", zotero_version: "5" }))).json() as { doc_id: string };
      const b = (await injectUpload(app, token, uploadParts(pdf, { zotero_key: "KEYA0001", zotero_library_id: "7" }))).json() as { doc_id: string };
      await injectUpload(app, token, uploadParts(pdf, { zotero_key: "OTHERLIB", zotero_library_id: "8" }));
      const res = await app.inject({ method: "GET", url: "/api/v1/zotero/links?library_id=7", headers: auth() });
      expect(res.statusCode).toBe(200);
      // Each entry carries the paper's metadata (no tags or collections were uploaded here).
      const meta = { title: "A paper", authors: ["Ada Lovelace"], year: null, doi: null, journal: null };
      expect(res.json()).toEqual({
        library_id: "7",
        links: [
          { zotero_key: "KEYA0001", doc_id: b.doc_id, zotero_version: 0, ...meta },
          { zotero_key: "KEYB0002", doc_id: a.doc_id, zotero_version: 5, ...meta },
        ],
      });
      const missing = await app.inject({ method: "GET", url: "/api/v1/zotero/links", headers: auth() });
      expect(missing.statusCode).toBe(422);
      expect(missing.json()).toEqual({ detail: [{ type: "missing", loc: ["query", "library_id"], msg: "Field required" }] });
    });

    it("GET /health", async () => {
      const res = await app.inject({ method: "GET", url: "/health" });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toMatchObject({ status: "ok", database: "ok" });
    });

    it("unknown routes answer 404 {detail}", async () => {
      const res = await app.inject({ method: "GET", url: "/nope" });
      expect(res.statusCode).toBe(404);
      expect(res.json()).toEqual({ detail: "Not Found" });
    });
  });

  describe("errors never carry stack traces", () => {
    it("an unexpected error answers 500 {detail} without the message or stack", async () => {
      const dir = await tempDataDir();
      const { buildApp } = await import("../src/app.js");
      const raw = await buildApp({ dataDir: dir, databaseUrl: currentDatabase(), adminUser: ADMIN.user, adminPassword: ADMIN.password, worker: false });
      raw.get("/boom", async () => {
        throw new Error("secret internals at /srv/app.js:12");
      });
      await raw.ready();
      const res = await raw.inject({ method: "GET", url: "/boom" });
      expect(res.statusCode).toBe(500);
      expect(res.json()).toEqual({ detail: "Internal Server Error" });
      expect(res.body).not.toMatch(/secret|\.js:|\n\s+at /);
      await raw.close();
    });
  });

  describe("admin account", () => {
    it("creates a random-password admin once when none exists and none is given", async () => {
      const dir = await tempDataDir();
      // A database of its own: the one of beforeEach already holds an admin.
      if (backend === "postgres") useDatabase(await pgdb?.freshSchema());
      const created: Array<[string, string]> = [];
      const first = await testApp({ dataDir: dir, adminUser: undefined, adminPassword: undefined, onAdminCreated: (u, p) => created.push([u, p]) });
      expect(created).toHaveLength(1);
      const [user, password] = created[0] ?? ["", ""];
      expect(user).toBe("admin");
      expect(password.length).toBeGreaterThanOrEqual(16);
      expect(first.refserver.generatedAdminPassword).toBe(password);
      await login(first, user, password);
      await first.close();
      const second = await testApp({ dataDir: dir, adminUser: undefined, adminPassword: undefined, onAdminCreated: (u, p) => created.push([u, p]) });
      expect(created).toHaveLength(1);
      expect(second.refserver.generatedAdminPassword).toBeUndefined();
      await second.close();
    });
  });
});
