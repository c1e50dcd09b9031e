import { randomUUID } from "node:crypto";
import { copyFileSync } from "node:fs";
import { copyFile } from "node:fs/promises";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { DB_FILENAME } from "../src/app.js";
import { DEFAULT_MAX_FIELD_BYTES as FIELD } from "../src/routes/form.js";
import type { SqliteDatabase } from "../src/db/connection.js";
import {
  injectUpload,
  listDir,
  login,
  multipart,
  removeTempDirs,
  tempDataDir,
  testApp,
  uploadParts,
  waitFor,
  type Part,
  type UploadFields,
  sqliteOf,
} from "./helpers/app.js";
import { holdLock } from "./helpers/lock-holder.js";
import { makeSamplePdf } from "./helpers/pdf.js";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const pdfA = makeSamplePdf(2, 2, "Alpha");
const pdfB = makeSamplePdf(3, 1, "Bravo");

let app: FastifyInstance;
let dataDir: string;
let token: string;

async function start(overrides: Parameters<typeof testApp>[0] = {}): Promise<void> {
  app = await testApp({ dataDir, ...overrides });
  token = await login(app);
}

beforeEach(async () => {
  dataDir = await tempDataDir();
  await start();
});
afterEach(async () => {
  await app.close();
});
afterAll(removeTempDirs);

const auth = (t = token) => ({ authorization: `Bearer ${t}` });

async function upload(fields: UploadFields = {}, pdf = pdfA, name = "paper.pdf"): Promise<{ doc_id: string; job_id: string }> {
  const res = await injectUpload(app, token, uploadParts(pdf, fields, name));
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as { doc_id: string; job_id: string };
}

function postForm(docId: string, fields: Record<string, string>, headers: Record<string, string> = auth()) {
  return app.inject({
    method: "POST",
    url: `/api/v1/document/${docId}/metadata`,
    headers: { ...headers, "content-type": "application/x-www-form-urlencoded" },
    payload: new URLSearchParams(fields).toString(),
  });
}

function postMultipart(docId: string, fields: Record<string, string>) {
  const { body, contentType } = multipart(Object.entries(fields).map(([name, value]) => ({ name, value })));
  return app.inject({
    method: "POST",
    url: `/api/v1/document/${docId}/metadata`,
    headers: { ...auth(), "content-type": contentType },
    payload: body,
  });
}

function putPdf(docId: string, parts: Part[], headers: Record<string, string> = auth()) {
  const { body, contentType } = multipart(parts);
  return app.inject({
    method: "PUT",
    url: `/api/v1/document/${docId}/pdf`,
    headers: { ...headers, "content-type": contentType },
    payload: body,
  });
}

function del(docId: string, headers: Record<string, string> = auth()) {
  return app.inject({ method: "DELETE", url: `/api/v1/document/${docId}`, headers });
}

async function links(libraryId: string): Promise<Array<Record<string, unknown>>> {
  const res = await app.inject({ method: "GET", url: `/api/v1/zotero/links?library_id=${libraryId}`, headers: auth() });
  expect(res.statusCode).toBe(200);
  return (res.json() as { links: Array<Record<string, unknown>> }).links;
}

/** How many rows each table holds for one paper. */
function rowsFor(db: SqliteDatabase, docId: string): Record<string, number> {
  const count = (sql: string): number => (db.prepare(sql).get(docId) as { n: number }).n;
  return {
    paper: count("SELECT COUNT(*) AS n FROM paper WHERE doc_id = ?"),
    metadata: count("SELECT COUNT(*) AS n FROM metadata WHERE paper_id = ?"),
    zoterolink: count("SELECT COUNT(*) AS n FROM zoterolink WHERE paper_id = ?"),
    processingjob: count("SELECT COUNT(*) AS n FROM processingjob WHERE paper_id = ?"),
    pagetext: count("SELECT COUNT(*) AS n FROM pagetext WHERE paper_id = ?"),
    semanticchunk: count("SELECT COUNT(*) AS n FROM semanticchunk WHERE paper_id = ?"),
  };
}

async function documentOf(docId: string): Promise<Record<string, unknown> & { metadata: Record<string, unknown> }> {
  const res = await app.inject({ method: "GET", url: `/api/v1/document/${docId}`, headers: auth() });
  expect(res.statusCode).toBe(200);
  return res.json() as Record<string, unknown> & { metadata: Record<string, unknown> };
}

const NO_TOKEN_HEADERS: Array<Record<string, string>> = [{}, { authorization: "Bearer garbage" }];

describe("POST /api/v1/document/{doc_id}/metadata", () => {
  it("form-urlencoded: the original's comma-separated authors; answers the original's shape", async () => {
    const up = await upload({ title: "Old", year: "2001" });
    const res = await postForm(up.doc_id, {
      title: "  Ice sheets  ",
      authors: "Ada Lovelace, Alan Turing , ,Grace Hopper",
      journal: "Nature",
      year: "2021",
      abstract: "About ice.",
      doi: "10.1000/xyz",
    });
    expect(res.statusCode, res.body).toBe(200);
    const metadata = {
      title: "Ice sheets",
      authors: ["Ada Lovelace", "Alan Turing", "Grace Hopper"],
      journal: "Nature",
      year: 2021,
      abstract: "About ice.",
      doi: "10.1000/xyz",
    };
    expect(res.json()).toEqual({ status: "success", message: "Metadata updated successfully", metadata });
    expect((await documentOf(up.doc_id)).metadata).toEqual(metadata);
  });

  it("multipart/form-data: authors as a JSON array of strings (a name may hold a comma)", async () => {
    const up = await upload();
    const res = await postMultipart(up.doc_id, { authors: '["Lovelace, Ada", " Turing, Alan "]', year: "1843" });
    expect(res.statusCode, res.body).toBe(200);
    expect((res.json() as { metadata: unknown }).metadata).toMatchObject({ authors: ["Lovelace, Ada", "Turing, Alan"], year: 1843 });
    expect((await documentOf(up.doc_id)).metadata).toMatchObject({ title: "A paper", authors: ["Lovelace, Ada", "Turing, Alan"] });
  });

  it("changes only the fields sent; an empty string clears title, journal, abstract, doi; an empty year is absent", async () => {
    const up = await upload({ title: "Kept title", authors: '["Ada Lovelace"]', year: "1999" });
    expect((await postForm(up.doc_id, { journal: "Science", doi: "10.1/a", abstract: "Text" })).statusCode).toBe(200);
    expect((await documentOf(up.doc_id)).metadata).toEqual({
      title: "Kept title",
      authors: ["Ada Lovelace"],
      journal: "Science",
      year: 1999,
      abstract: "Text",
      doi: "10.1/a",
    });
    const cleared = await postForm(up.doc_id, { title: "", journal: "", abstract: " ", doi: "", year: "" });
    expect(cleared.statusCode).toBe(200);
    expect((cleared.json() as { metadata: unknown }).metadata).toEqual({
      title: null,
      authors: ["Ada Lovelace"],
      journal: null,
      year: 1999,
      abstract: null,
      doi: null,
    });
    // An empty authors value clears the list; nothing sent changes nothing.
    expect(((await postForm(up.doc_id, { authors: "" })).json() as { metadata: { authors: unknown } }).metadata.authors).toEqual([]);
    const none = await postForm(up.doc_id, {});
    expect(none.statusCode).toBe(200);
    expect((none.json() as { metadata: unknown }).metadata).toEqual({
      title: null,
      authors: [],
      journal: null,
      year: 1999,
      abstract: null,
      doi: null,
    });
  });

  it("zotero_version, tags and collection_keys update the Zotero link, shown with the metadata by /zotero/links", async () => {
    const up = await upload({ zotero_key: "LINK0001", zotero_library_id: "42", zotero_version: "3", tags: '["old"]' });
    const other = await upload({ zotero_key: "LINK0002", zotero_library_id: "42", zotero_version: "9" });
    const res = await postForm(up.doc_id, {
      journal: "Cell",
      doi: "10.5/x",
      authors: "Ada Lovelace, Alan Turing",
      year: "2020",
      zotero_version: "17",
      tags: '["ice", "climate"]',
      collection_keys: '["COLL0001","COLL0002"]',
    });
    expect(res.statusCode, res.body).toBe(200);
    const db = sqliteOf(app);
    expect(db.prepare("SELECT zotero_version, tags, collection_keys FROM zoterolink WHERE paper_id = ?").get(up.doc_id)).toEqual({
      zotero_version: 17,
      tags: '["ice","climate"]',
      collection_keys: '["COLL0001","COLL0002"]',
    });
    expect(await links("42")).toEqual([
      {
        zotero_key: "LINK0001",
        doc_id: up.doc_id,
        zotero_version: 17,
        title: "A paper",
        authors: ["Ada Lovelace", "Alan Turing"],
        year: 2020,
        doi: "10.5/x",
        journal: "Cell",
        tags: ["ice", "climate"],
        collection_keys: ["COLL0001", "COLL0002"],
      },
      {
        zotero_key: "LINK0002",
        doc_id: other.doc_id,
        zotero_version: 9,
        title: "A paper",
        authors: ["Ada Lovelace"],
        year: null,
        doi: null,
        journal: null,
      },
    ]);
    // Only the link fields sent change; an empty tags value is absent.
    expect((await postForm(up.doc_id, { zotero_version: "18", tags: "" })).statusCode).toBe(200);
    expect(await links("42")).toContainEqual(expect.objectContaining({ zotero_key: "LINK0001", zotero_version: 18, tags: ["ice", "climate"] }));
    // A paper without a link: the link fields are accepted and no link is created.
    const bare = await upload();
    expect((await postForm(bare.doc_id, { zotero_version: "5", tags: "[]" })).statusCode).toBe(200);
    expect(rowsFor(db, bare.doc_id).zoterolink).toBe(0);
  });

  it("401 without a valid token; 404 Document not found", async () => {
    const up = await upload();
    for (const headers of NO_TOKEN_HEADERS) {
      const res = await postForm(up.doc_id, { title: "x" }, headers);
      expect(res.statusCode).toBe(401);
      expect(res.json()).toEqual({ detail: "Authentication required" });
    }
    expect((await documentOf(up.doc_id)).metadata).toMatchObject({ title: "A paper" });
    const missing = await postForm(randomUUID(), { title: "x" });
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toEqual({ detail: "Document not found" });
  });

  it("422 in FastAPI's shape for a bad year, version, tags, collections or authors, or an over-long field; nothing changes", async () => {
    const up = await upload({ title: "Unchanged", year: "2000", zotero_key: "BAD00001", zotero_library_id: "1", tags: '["t"]' });
    const cases: Array<[Record<string, string>, Array<Record<string, unknown>>]> = [
      [{ year: "twenty" }, [{ type: "int_parsing", loc: ["body", "year"] }]],
      [{ year: "2020.5" }, [{ type: "int_parsing", loc: ["body", "year"] }]],
      [{ year: "10000" }, [{ type: "less_than_equal", loc: ["body", "year"], msg: "Input should be less than or equal to 9999" }]],
      [{ year: "0" }, [{ type: "greater_than_equal", loc: ["body", "year"] }]],
      [{ zotero_version: "-1" }, [{ type: "greater_than_equal", loc: ["body", "zotero_version"] }]],
      [{ zotero_version: "v2" }, [{ type: "int_parsing", loc: ["body", "zotero_version"] }]],
      [{ tags: "ice, climate" }, [{ type: "json_invalid", loc: ["body", "tags"] }]],
      [{ tags: '{"a":1}' }, [{ type: "list_type", loc: ["body", "tags"] }]],
      [{ tags: '["ok", 7]' }, [{ type: "string_type", loc: ["body", "tags", 1] }]],
      [{ collection_keys: '"COLL0001"' }, [{ type: "list_type", loc: ["body", "collection_keys"] }]],
      [{ authors: "[Ada Lovelace]" }, [{ type: "json_invalid", loc: ["body", "authors"] }]],
      [{ authors: '[{"name":"Ada"}]' }, [{ type: "string_type", loc: ["body", "authors", 0] }]],
      [{ zotero_version: "99999999999999999999999" }, [{ type: "less_than_equal", loc: ["body", "zotero_version"] }]],
      [{ zotero_version: "9007199254740992" }, [{ type: "less_than_equal", loc: ["body", "zotero_version"] }]],
      [{ title: "x".repeat(FIELD + 1) }, [{ type: "string_too_long", loc: ["body", "title"] }]],
      [{ authors: "Ada, ".repeat(FIELD) }, [{ type: "string_too_long", loc: ["body", "authors"] }]],
      [{ title: "ok", year: "x", tags: "[1]" }, [{ type: "int_parsing" }, { type: "string_type" }]],
    ];
    for (const [fields, detail] of cases) {
      const res = await postForm(up.doc_id, fields);
      expect(res.statusCode, JSON.stringify(fields).slice(0, 80)).toBe(422);
      const body = res.json() as { detail: Array<Record<string, unknown>> };
      expect(body.detail).toHaveLength(detail.length);
      detail.forEach((d, i) => expect(body.detail[i]).toMatchObject({ msg: expect.any(String), ...d }));
    }
    // multipart cuts a field at the field limit (64 KiB): refused by name, not stored cut
    const cut = await postMultipart(up.doc_id, { abstract: "y".repeat(FIELD + 10) });
    expect(cut.statusCode).toBe(422);
    expect(cut.json()).toEqual({
      detail: [{ type: "string_too_long", loc: ["body", "abstract"], msg: `String should have at most ${FIELD} bytes`, ctx: { max_length: FIELD } }],
    });
    // A value of exactly the limit is accepted; a version of 2^53-1 too.
    expect((await postForm(up.doc_id, { abstract: "z".repeat(FIELD), zotero_version: "9007199254740991" })).statusCode).toBe(200);
    const doc = await documentOf(up.doc_id);
    expect(doc.metadata).toMatchObject({ title: "Unchanged", year: 2000 });
    expect((doc.metadata.abstract as string).length).toBe(FIELD);
    expect(await links("1")).toEqual([expect.objectContaining({ zotero_version: Number.MAX_SAFE_INTEGER, tags: ["t"] })]);
  });

  it("waits for another process's write lock (one IMMEDIATE transaction) instead of failing", async () => {
    const up = await upload();
    const holder = holdLock(join(dataDir, DB_FILENAME), "write", 400);
    await holder.ready;
    const res = await postForm(up.doc_id, { title: "After the lock" });
    expect(res.statusCode, res.body).toBe(200);
    expect(await holder.done).toBe(0);
    expect((await documentOf(up.doc_id)).metadata).toMatchObject({ title: "After the lock" });
  });
});

describe("PUT /api/v1/document/{doc_id}/pdf", () => {
  it("replaces the file: new bytes downloadable, same doc_id, a new job rebuilds the text, old file gone, no temp files", async () => {
    await app.close();
    await start({ worker: true });
    const up = await upload({ zotero_key: "REPL0001", zotero_library_id: "5", zotero_version: "1" }, pdfA, "first.pdf");
    await app.refserver.worker?.whenIdle();
    const repo = app.refserver.repo;
    expect((await repo.pageTexts(up.doc_id)).join("\n")).toContain("Alpha page 2");
    const { file_path: oldPath, updated_at: updatedBefore } = (await repo.getPaper(up.doc_id)) ?? { file_path: "", updated_at: "" };
    expect(await listDir(join(dataDir, "pdfs"))).toEqual([`${up.doc_id}.pdf`]);

    const res = await putPdf(up.doc_id, [
      { name: "zotero_version", value: "2" },
      { name: "file", filename: "second.pdf", content: pdfB },
    ]);
    expect(res.statusCode, res.body).toBe(200);
    const body = res.json() as { doc_id: string; job_id: string; status: string };
    expect(body).toEqual({ doc_id: up.doc_id, job_id: expect.stringMatching(UUID), status: "replaced" });
    expect(body.job_id).not.toBe(up.job_id);

    const dl = await app.inject({ method: "GET", url: `/download/pdf/${up.doc_id}`, headers: auth() });
    expect(dl.statusCode).toBe(200);
    expect(dl.rawPayload.equals(pdfB)).toBe(true);
    expect(dl.headers["content-disposition"]).toContain('filename="second.pdf"');
    const paper = await repo.getPaper(up.doc_id);
    expect(paper).toMatchObject({ filename: "second.pdf", file_size: pdfB.length });
    expect(paper?.file_path).not.toBe(oldPath);
    expect((paper?.updated_at ?? "") > updatedBefore).toBe(true);
    expect(await listDir(join(dataDir, "pdfs"))).toEqual([paper?.file_path.replace("pdfs/", "")]);
    expect(await listDir(join(dataDir, "tmp"))).toEqual([]);

    await app.refserver.worker?.whenIdle();
    expect(await repo.getJob(body.job_id)).toMatchObject({ paper_id: up.doc_id, status: "completed", progress_percentage: 100 });
    expect(await repo.getJob(up.job_id)).toMatchObject({ status: "completed" });
    const pages = await repo.pageTexts(up.doc_id);
    expect(pages).toHaveLength(3);
    expect(pages.join("\n")).toContain("Bravo page 3");
    expect(pages.join("\n")).not.toContain("Alpha");
    expect(await repo.chunkCount(up.doc_id)).toBe(3);
    const doc = await documentOf(up.doc_id);
    expect(doc).toMatchObject({ doc_id: up.doc_id, filename: "second.pdf", page_count: 3, metadata: { title: "A paper" } });
    expect(await links("5")).toEqual([expect.objectContaining({ zotero_key: "REPL0001", doc_id: up.doc_id, zotero_version: 2 })]);
  });

  it("drops the page text and chunks at once, supersedes an unfinished job, queues a new one (worker off)", async () => {
    const first = await upload();
    // give the paper text as if the first job had run its text step
    await app.refserver.workerRepo.saveText(first.job_id, first.doc_id, ["old text"]);
    const res = await putPdf(first.doc_id, [{ name: "file", filename: "b.pdf", content: pdfB }]);
    expect(res.statusCode, res.body).toBe(200);
    const { job_id } = res.json() as { job_id: string };
    const db = sqliteOf(app);
    expect(rowsFor(db, first.doc_id)).toMatchObject({ paper: 1, metadata: 1, processingjob: 2, pagetext: 0, semanticchunk: 0 });
    expect(await app.refserver.repo.getPaper(first.doc_id)).toMatchObject({ page_count: null, ocr_text: null });
    expect(await app.refserver.repo.getJob(first.job_id)).toMatchObject({
      status: "failed",
      error_message: `Superseded: the PDF was replaced (job ${job_id})`,
    });
    expect(await app.refserver.repo.getJob(job_id)).toMatchObject({ status: "processing", current_step: "queued", filename: "b.pdf" });
    // The worker, started later, processes only the new job.
    await app.close();
    await start({ worker: true });
    await app.refserver.worker?.whenIdle();
    expect((await app.refserver.repo.getJob(job_id))?.status).toBe("completed");
    expect((await app.refserver.repo.pageTexts(first.doc_id)).join("\n")).toContain("Bravo");
    expect(app.refserver.worker?.stats).toMatchObject({ completed: 1, failed: 0, aborted: 0 });
  });

  it("401 without a token, 404 unknown doc, 422, 400 and 413 like the upload route; the stored file stays", async () => {
    const up = await upload();
    const filePart: Part = { name: "file", filename: "b.pdf", content: pdfB };
    const before = async () => ({
      files: await listDir(join(dataDir, "pdfs")),
      paper: (await app.refserver.repo.getPaper(up.doc_id)),
      jobs: rowsFor(sqliteOf(app), up.doc_id).processingjob,
    });
    const state = await before();
    const expectUnchanged = async () => {
      expect(await before()).toEqual(state);
      expect(await listDir(join(dataDir, "tmp"))).toEqual([]);
    };

    for (const headers of NO_TOKEN_HEADERS) {
      const res = await putPdf(up.doc_id, [filePart], headers);
      expect(res.statusCode).toBe(401);
      expect(res.json()).toEqual({ detail: "Authentication required" });
    }
    const unknown = await putPdf(randomUUID(), [filePart]);
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json()).toEqual({ detail: "Document not found" });

    const noFile = await putPdf(up.doc_id, [{ name: "zotero_version", value: "3" }]);
    expect(noFile.statusCode).toBe(422);
    expect(noFile.json()).toEqual({ detail: [{ type: "missing", loc: ["body", "file"], msg: "Field required", input: null }] });
    const badVersion = await putPdf(up.doc_id, [filePart, { name: "zotero_version", value: "three" }]);
    expect(badVersion.statusCode).toBe(422);
    expect((badVersion.json() as { detail: Array<{ loc: string[] }> }).detail[0]?.loc).toEqual(["body", "zotero_version"]);

    const badName = await putPdf(up.doc_id, [{ name: "file", filename: "b.docx", content: pdfB }]);
    expect(badName.statusCode).toBe(400);
    expect(badName.json()).toEqual({ detail: "Only PDF files are allowed" });
    const notPdf = await putPdf(up.doc_id, [{ name: "file", filename: "b.pdf", content: Buffer.from("<html>no</html>") }]);
    expect(notPdf.statusCode).toBe(400);
    expect((notPdf.json() as { detail: string }).detail).toMatch(/%PDF-/);

    const wrongType = await app.inject({
      method: "PUT",
      url: `/api/v1/document/${up.doc_id}/pdf`,
      headers: { ...auth(), "content-type": "application/octet-stream" },
      payload: "%PDF-1.4",
    });
    expect(wrongType.statusCode).toBe(415);
    expect(wrongType.json()).toHaveProperty("detail");
    await expectUnchanged();

    await app.close();
    await start({ maxUploadBytes: 4096 });
    const big = await putPdf(up.doc_id, [{ name: "file", filename: "big.pdf", content: Buffer.concat([pdfB, Buffer.alloc(20_000, 0x20)]) }]);
    expect(big.statusCode).toBe(413);
    expect((big.json() as { detail: string }).detail).toMatch(/too large/i);
    await expectUnchanged();
  });

  it("after a crash on either side of the commit, the startup sweep leaves exactly the file the row names", async () => {
    const up = await upload();
    const original = join(dataDir, "pdfs", `${up.doc_id}.pdf`);
    // Crash after the new file was renamed into place, before the rows: an unreferenced new file.
    await copyFile(original, join(dataDir, "pdfs", `${up.doc_id}.${randomUUID()}.pdf`));
    await app.close();
    await start();
    expect(await listDir(join(dataDir, "pdfs"))).toEqual([`${up.doc_id}.pdf`]);
    // Crash after the commit, before the old file was removed: the old file is unreferenced.
    await copyFile(original, join(dataDir, "old-copy.pdf"));
    expect((await putPdf(up.doc_id, [{ name: "file", filename: "b.pdf", content: pdfB }])).statusCode).toBe(200);
    await copyFile(join(dataDir, "old-copy.pdf"), original);
    const newPath = (await app.refserver.repo.getPaper(up.doc_id))?.file_path ?? "";
    await app.close();
    await start();
    expect(await listDir(join(dataDir, "pdfs"))).toEqual([newPath.replace("pdfs/", "")]);
    const dl = await app.inject({ method: "GET", url: `/download/pdf/${up.doc_id}`, headers: auth() });
    expect(dl.rawPayload.equals(pdfB)).toBe(true);
  });
});

describe("DELETE /api/v1/document/{doc_id}", () => {
  it("deletes every row and the file; /zotero/links forgets the key; the key can be uploaded again", async () => {
    await app.close();
    await start({ worker: true });
    const fields = { zotero_key: "GONE0001", zotero_library_id: "77", zotero_version: "4", tags: '["x"]' };
    const up = await upload(fields);
    const kept = await upload({ zotero_key: "KEEP0001", zotero_library_id: "77" });
    await app.refserver.worker?.whenIdle();
    const db = sqliteOf(app);
    expect(db.pragma("foreign_keys", { simple: true })).toBe(1);
    expect(sqliteOf(app, true).pragma("foreign_keys", { simple: true })).toBe(1);
    expect(rowsFor(db, up.doc_id)).toEqual({ paper: 1, metadata: 1, zoterolink: 1, processingjob: 1, pagetext: 2, semanticchunk: 4 });

    const res = await del(up.doc_id);
    expect(res.statusCode, res.body).toBe(200);
    expect(res.json()).toEqual({ status: "deleted", doc_id: up.doc_id });
    expect(rowsFor(db, up.doc_id)).toEqual({ paper: 0, metadata: 0, zoterolink: 0, processingjob: 0, pagetext: 0, semanticchunk: 0 });
    expect(await listDir(join(dataDir, "pdfs"))).toEqual([`${kept.doc_id}.pdf`]);
    expect((await links("77")).map((l) => l.zotero_key)).toEqual(["KEEP0001"]);
    expect((await app.inject({ method: "GET", url: `/api/v1/document/${up.doc_id}`, headers: auth() })).statusCode).toBe(404);
    expect((await app.inject({ method: "GET", url: `/download/pdf/${up.doc_id}`, headers: auth() })).statusCode).toBe(404);
    expect(rowsFor(db, kept.doc_id)).toMatchObject({ paper: 1, pagetext: 2 });

    const again = await injectUpload(app, token, uploadParts(pdfB, fields));
    expect(again.statusCode, again.body).toBe(200);
    const second = await del(up.doc_id);
    expect(second.statusCode).toBe(404);
    expect(second.json()).toEqual({ detail: "Document not found" });
  });

  it("401 without a valid token (nothing deleted); 404 for an unknown doc", async () => {
    const up = await upload();
    for (const headers of NO_TOKEN_HEADERS) {
      const res = await del(up.doc_id, headers);
      expect(res.statusCode).toBe(401);
      expect(res.json()).toEqual({ detail: "Authentication required" });
    }
    expect(rowsFor(sqliteOf(app), up.doc_id).paper).toBe(1);
    expect(await listDir(join(dataDir, "pdfs"))).toEqual([`${up.doc_id}.pdf`]);
    const res = await del(randomUUID());
    expect(res.statusCode).toBe(404);
    expect(res.json()).toEqual({ detail: "Document not found" });
  });

  it("a crash between the row delete and the file removal leaves no orphan after the next start", async () => {
    const up = await upload();
    expect(await app.refserver.repo.deletePaper(up.doc_id)).toBe(`pdfs/${up.doc_id}.pdf`); // rows gone, file not yet
    expect(await listDir(join(dataDir, "pdfs"))).toEqual([`${up.doc_id}.pdf`]);
    await app.close();
    await start();
    expect(await listDir(join(dataDir, "pdfs"))).toEqual([]);
  });

  it("a paper deleted or replaced while the worker holds its job: the job's writes are dropped, nothing is resurrected", async () => {
    const repo = app.refserver.repo;
    const wrepo = app.refserver.workerRepo;
    const gone = await upload();
    const claimed = await wrepo.claimNextJob(3);
    expect(claimed?.docId).toBe(gone.doc_id);
    await repo.deletePaper(gone.doc_id);
    expect(await wrepo.saveText(gone.job_id, gone.doc_id, ["page"])).toBe(false);
    expect(await wrepo.saveChunks(gone.job_id, gone.doc_id, [{ pageNumber: 1, indexOnPage: 0, text: "page" }])).toBe(false);
    expect(await wrepo.failJob(gone.job_id, "text", "ENOENT")).toBe(false);
    expect(rowsFor(sqliteOf(app), gone.doc_id)).toEqual({ paper: 0, metadata: 0, zoterolink: 0, processingjob: 0, pagetext: 0, semanticchunk: 0 });

    const replaced = await upload();
    expect((await wrepo.claimNextJob(3))?.jobId).toBe(replaced.job_id);
    expect((await putPdf(replaced.doc_id, [{ name: "file", filename: "b.pdf", content: pdfB }])).statusCode).toBe(200);
    expect(await wrepo.saveText(replaced.job_id, replaced.doc_id, ["stale text of the old file"])).toBe(false);
    expect(rowsFor(sqliteOf(app), replaced.doc_id)).toMatchObject({ pagetext: 0, semanticchunk: 0 });
  });

  for (const when of ["as the worker claims the job", "while the worker parses the file"] as const) {
    it(`DELETE ${when}: the worker drops the job, does not crash, and processes later jobs`, async () => {
      await app.close();
      await start({ worker: true, workerPollIntervalMs: 20 });
      const worker = app.refserver.worker;
      const files = app.refserver.files;
      const wrepo = app.refserver.workerRepo;
      await worker?.stop(); // queue the paper first, so the hooks below know it
      const big = await upload({}, makeSamplePdf(150, 3, "Long"));
      const bigPath = `pdfs/${big.doc_id}.pdf`;
      let deletion: Promise<{ statusCode: number }> | undefined;
      const saved: boolean[] = [];
      const originalClaim = wrepo.claimNextJob.bind(wrepo);
      const originalAbsolute = files.absolute.bind(files);
      const originalSaveText = wrepo.saveText.bind(wrepo);
      if (when === "as the worker claims the job") {
        // The DELETE is sent as the worker claims the job: the file is usually gone before it is read.
        wrepo.claimNextJob = async (maxAttempts: number) => {
          const job = await originalClaim(maxAttempts);
          if (job?.docId === big.doc_id) deletion ??= del(big.doc_id);
          return job;
        };
      } else {
        // The worker gets a copy to read; the DELETE is sent as it starts, and lands while the
        // 150 pages are parsed, before the text is saved.
        const copy = join(dataDir, "worker-copy.pdf");
        files.absolute = (relPath: string) => {
          if (relPath !== bigPath || deletion) return originalAbsolute(relPath);
          copyFileSync(originalAbsolute(relPath), copy);
          deletion = del(big.doc_id);
          return copy;
        };
        wrepo.saveText = async (jobId: string, docId: string, pages: readonly string[]) => {
          const ok = await originalSaveText(jobId, docId, pages);
          if (docId === big.doc_id) saved.push(ok);
          return ok;
        };
      }
      worker?.start();
      const res = await waitFor(() => deletion);
      expect((await res).statusCode).toBe(200);
      await waitFor(() => ((worker?.stats.skipped ?? 0) > 0 ? true : undefined));
      if (when === "while the worker parses the file") expect(saved).toEqual([false]);
      expect(rowsFor(sqliteOf(app), big.doc_id)).toEqual({ paper: 0, metadata: 0, zoterolink: 0, processingjob: 0, pagetext: 0, semanticchunk: 0 });

      const later = await upload({}, pdfB);
      await waitFor(async () => ((await app.refserver.repo.getJob(later.job_id))?.status === "completed" ? true : undefined));
      expect(worker?.stats).toMatchObject({ completed: 1, failed: 0, aborted: 0, skipped: 1 });
      expect(await app.refserver.repo.pageTexts(later.doc_id)).toHaveLength(3);
      expect(await listDir(join(dataDir, "pdfs"))).toEqual([`${later.doc_id}.pdf`]);
      const health = await app.inject({ method: "GET", url: "/health" });
      expect(health.json()).toMatchObject({ status: "ok", worker: "running" });
    });
  }
});
