import { execFileSync } from "node:child_process";
import { mkdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { FastifyInstance } from "fastify";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { metadataBodyLimit } from "../src/routes/document-write.js";
import { DEFAULT_MAX_FIELD_BYTES as FIELD, MULTIPART_COUNTS } from "../src/routes/form.js";
import {
  injectUpload,
  listDir,
  login,
  multipart,
  removeTempDirs,
  tempDataDir,
  testApp,
  uploadParts,
  type Part,
  sqliteOf,
} from "./helpers/app.js";
import { makeSamplePdf } from "./helpers/pdf.js";

const pdf = makeSamplePdf(1, 1, "Limits");

const apps: FastifyInstance[] = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
});
afterAll(removeTempDirs);

async function start(overrides: Parameters<typeof testApp>[0] = {}): Promise<{ app: FastifyInstance; token: string; dataDir: string }> {
  const dataDir = overrides.dataDir ?? (await tempDataDir());
  const app = await testApp({ ...overrides, dataDir });
  apps.push(app);
  return { app, token: await login(app), dataDir };
}

/** Nothing of a refused request is kept: no temp file, no PDF, no row. */
async function expectNothingKept(app: FastifyInstance, dataDir: string, papers = 0): Promise<void> {
  expect(await listDir(join(dataDir, "tmp"))).toEqual([]);
  expect((await listDir(join(dataDir, "pdfs"))).length).toBe(papers);
  expect((await app.refserver.repo.counts()).papers).toBe(papers);
}

function detailOf(res: { json: () => unknown }): unknown {
  return (res.json() as { detail: unknown }).detail;
}

describe("each 413 names the limit that was hit", () => {
  it("a login body over 64 KiB: the body limit of that endpoint", async () => {
    const { app } = await start();
    const res = await app.inject({
      method: "POST",
      url: "/api/v1/auth/login",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      payload: `username=admin&password=${"x".repeat(70_000)}`,
    });
    expect(res.statusCode).toBe(413);
    expect(res.json()).toEqual({ detail: "Request body too large: the limit is 65536 bytes for this endpoint" });
  });

  it("a metadata body over its limit: that limit (room for every field at the field limit)", async () => {
    const { app, token } = await start({ maxFieldBytes: 1024 });
    const limit = metadataBodyLimit(1024);
    const res = await app.inject({
      method: "POST",
      url: "/api/v1/document/x/metadata",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/x-www-form-urlencoded" },
      payload: `abstract=${"a".repeat(limit + 1)}`,
    });
    expect(res.statusCode).toBe(413);
    expect(res.json()).toEqual({ detail: `Request body too large: the limit is ${limit} bytes for this endpoint` });
  });

  it("too many form fields, too many files, too many parts, a file too large; nothing kept", async () => {
    const { app, token, dataDir } = await start({ maxUploadBytes: 4096 });
    const fields = (n: number): Part[] => Array.from({ length: n }, (_, i) => ({ name: `f${i}`, value: "v" }));
    const file = (i: number): Part => ({ name: "file", filename: `p${i}.pdf`, content: pdf });
    const cases: Array<[string, Part[], string]> = [
      ["100 fields", [...uploadParts(pdf), ...fields(100)], `Too many form fields: the limit is ${MULTIPART_COUNTS.fields} fields`],
      ["5 files", [...uploadParts(pdf), file(1), file(2), file(3), file(4)], `Too many files: the limit is ${MULTIPART_COUNTS.files} file parts`],
      [
        "63 fields and 4 files",
        [...fields(61), ...uploadParts(pdf), file(1), file(2), file(3)],
        `Too many parts: the limit is ${MULTIPART_COUNTS.parts} parts (fields and files together)`,
      ],
      ["a 20 KB file", uploadParts(Buffer.concat([pdf, Buffer.alloc(20_000, 0x20)])), "File too large: the limit is 4096 bytes per file"],
    ];
    for (const [what, parts, detail] of cases) {
      const res = await injectUpload(app, token, parts);
      expect(res.statusCode, what).toBe(413);
      expect(res.json(), what).toEqual({ detail });
      await expectNothingKept(app, dataDir);
    }
    // The same limits on the PDF replacement route.
    const up = await injectUpload(app, token, uploadParts(pdf));
    const docId = (up.json() as { doc_id: string }).doc_id;
    const { body, contentType } = multipart([...fields(100), file(1)]);
    const put = await app.inject({
      method: "PUT",
      url: `/api/v1/document/${docId}/pdf`,
      headers: { authorization: `Bearer ${token}`, "content-type": contentType },
      payload: body,
    });
    expect(put.statusCode).toBe(413);
    expect(put.json()).toEqual({ detail: `Too many form fields: the limit is ${MULTIPART_COUNTS.fields} fields` });
  });
});

describe("form fields: over the field limit refused by name, never stored cut; integers in range", () => {
  it("upload: a title or authors over 64 KiB is 422 string_too_long naming the field; nothing kept", async () => {
    const { app, token, dataDir } = await start();
    for (const field of ["title", "authors", "tags", "zotero_key"] as const) {
      const res = await injectUpload(app, token, uploadParts(pdf, { [field]: "x".repeat(FIELD + 1) }));
      expect(res.statusCode, field).toBe(422);
      expect(detailOf(res)).toEqual([
        { type: "string_too_long", loc: ["body", field], msg: `String should have at most ${FIELD} bytes`, ctx: { max_length: FIELD } },
      ]);
      await expectNothingKept(app, dataDir);
    }
    // 2 MiB: busboy cuts it at the limit; still named, not stored cut.
    const huge = await injectUpload(app, token, uploadParts(pdf, { title: "t".repeat(2 * 1024 * 1024) }));
    expect(huge.statusCode).toBe(422);
    expect(detailOf(huge)).toEqual([expect.objectContaining({ type: "string_too_long", loc: ["body", "title"] })]);
    await expectNothingKept(app, dataDir);
    // Exactly the limit is stored whole.
    const ok = await injectUpload(app, token, uploadParts(pdf, { title: "t".repeat(FIELD) }));
    expect(ok.statusCode, ok.body).toBe(200);
    const docId = (ok.json() as { doc_id: string }).doc_id;
    expect((await app.refserver.repo.getDocument(docId))?.metadata?.title).toHaveLength(FIELD);
  });

  it("the field limit is configurable (maxFieldBytes, --max-field-kb)", async () => {
    const { app, token } = await start({ maxFieldBytes: 100 });
    const res = await injectUpload(app, token, uploadParts(pdf, { title: "x".repeat(101) }));
    expect(res.statusCode).toBe(422);
    expect(detailOf(res)).toEqual([expect.objectContaining({ loc: ["body", "title"], msg: "String should have at most 100 bytes" })]);
    expect((await injectUpload(app, token, uploadParts(pdf, { title: "x".repeat(100) }))).statusCode).toBe(200);
  });

  it("upload: year outside 1..9999 and zotero_version outside 0..2^53-1 (or a float) are 422 naming the field", async () => {
    const { app, token, dataDir } = await start();
    const cases: Array<[Record<string, string>, string, string]> = [
      [{ year: "0" }, "year", "greater_than_equal"],
      [{ year: "10000" }, "year", "less_than_equal"],
      [{ year: "-44" }, "year", "greater_than_equal"],
      [{ year: "99999999999999999999999" }, "year", "less_than_equal"],
      [{ year: "2021.0" }, "year", "int_parsing"],
      [{ zotero_version: "-1" }, "zotero_version", "greater_than_equal"],
      [{ zotero_version: "99999999999999999999999" }, "zotero_version", "less_than_equal"],
      [{ zotero_version: "9007199254740992" }, "zotero_version", "less_than_equal"],
      [{ zotero_version: "1e21" }, "zotero_version", "int_parsing"],
      [{ zotero_version: "12.5" }, "zotero_version", "int_parsing"],
    ];
    for (const [fields, field, type] of cases) {
      const res = await injectUpload(app, token, uploadParts(pdf, { zotero_key: "RANGE001", zotero_library_id: "1", ...fields }));
      expect(res.statusCode, JSON.stringify(fields)).toBe(422);
      expect(detailOf(res), JSON.stringify(fields)).toEqual([expect.objectContaining({ type, loc: ["body", field] })]);
      await expectNothingKept(app, dataDir);
    }
    const edge = await injectUpload(
      app,
      token,
      uploadParts(pdf, { year: "9999", zotero_version: "9007199254740991", zotero_key: "RANGE001", zotero_library_id: "1" }),
    );
    expect(edge.statusCode, edge.body).toBe(200);
    const stored = sqliteOf(app).prepare("SELECT zotero_version, typeof(zotero_version) AS t FROM zoterolink").get();
    expect(stored).toEqual({ zotero_version: Number.MAX_SAFE_INTEGER, t: "integer" });
  });
});

// A full disk, for real: a 1 MiB tmpfs as the data dir (needs root, as in CI).
const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)("a full disk: 507, nothing half-written (1 MiB tmpfs data dir)", () => {
  let mountPoint: string | undefined;

  afterEach(async () => {
    for (const a of apps.splice(0)) await a.close();
    if (mountPoint) {
      execFileSync("umount", [mountPoint]);
      await rm(mountPoint, { recursive: true, force: true });
      mountPoint = undefined;
    }
  });

  async function tmpfsApp(): Promise<{ app: FastifyInstance; token: string; dataDir: string }> {
    mountPoint = join(await tempDataDir(), "tmpfs");
    await mkdir(mountPoint);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", mountPoint]);
    return start({ dataDir: mountPoint });
  }

  const tooBig = Buffer.concat([pdf, Buffer.alloc(2 * 1024 * 1024, 0x20)]);

  it("an upload larger than the free space: 507, no temp file, no PDF, no row; then a small upload works", async () => {
    const { app, token, dataDir } = await tmpfsApp();
    const res = await injectUpload(app, token, uploadParts(tooBig, { zotero_key: "FULL0001", zotero_library_id: "1" }));
    expect(res.statusCode).toBe(507);
    expect(res.json()).toEqual({ detail: "not enough space on the server's disk" });
    await expectNothingKept(app, dataDir);
    expect(sqliteOf(app).prepare("SELECT COUNT(*) AS n FROM processingjob").get()).toEqual({ n: 0 });
    // The space was given back: the same key uploads fine now.
    const small = await injectUpload(app, token, uploadParts(pdf, { zotero_key: "FULL0001", zotero_library_id: "1" }));
    expect(small.statusCode, small.body).toBe(200);
    await expectNothingKept(app, dataDir, 1);
  });

  it("a PDF replacement larger than the free space: 507, the old file and rows stay", async () => {
    const { app, token, dataDir } = await tmpfsApp();
    const up = (await injectUpload(app, token, uploadParts(pdf))).json() as { doc_id: string; job_id: string };
    const before = await listDir(join(dataDir, "pdfs"));
    const { body, contentType } = multipart([{ name: "file", filename: "new.pdf", content: tooBig }]);
    const res = await app.inject({
      method: "PUT",
      url: `/api/v1/document/${up.doc_id}/pdf`,
      headers: { authorization: `Bearer ${token}`, "content-type": contentType },
      payload: body,
    });
    expect(res.statusCode).toBe(507);
    expect(res.json()).toEqual({ detail: "not enough space on the server's disk" });
    expect(await listDir(join(dataDir, "pdfs"))).toEqual(before);
    expect(await listDir(join(dataDir, "tmp"))).toEqual([]);
    expect((await app.refserver.repo.getPaper(up.doc_id))?.file_path).toBe(`pdfs/${up.doc_id}.pdf`);
    expect(sqliteOf(app).prepare("SELECT job_id FROM processingjob").all()).toEqual([{ job_id: up.job_id }]);
  });
});
