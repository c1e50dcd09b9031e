import type { FastifyInstance } from "fastify";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { closeDatabase, openDatabase } from "../src/db/connection.js";
import { SqliteLibrary, queryTerms } from "../src/db/library.js";
import { migrate } from "../src/db/migrations.js";
import { SqliteRepository } from "../src/db/repository.js";
import { injectUpload, login, multipart, removeTempDirs, tempDataDir, testApp, uploadParts, waitFor, type UploadFields, sqliteOf } from "./helpers/app.js";
import { makeTestPdf } from "./helpers/pdf.js";
import { join } from "node:path";

/** A one-page PDF whose text holds `words`. */
function pdfWith(words: string, pages = 1): Buffer {
  const all: string[][][] = [];
  for (let p = 1; p <= pages; p++) all.push([[`Page ${p} of the paper.`, p === pages ? words : "Nothing to see here."]]);
  return makeTestPdf({ pages: all });
}

let app: FastifyInstance;
let token: string;
const auth = () => ({ authorization: `Bearer ${token}` });

beforeEach(async () => {
  app = await testApp({ worker: true });
  token = await login(app);
});
afterEach(async () => {
  await app.close();
});
afterAll(removeTempDirs);

async function upload(fields: UploadFields, pdf: Buffer): Promise<string> {
  const res = await injectUpload(app, token, uploadParts(pdf, fields));
  expect(res.statusCode, res.body).toBe(200);
  return (res.json() as { doc_id: string }).doc_id;
}

/** Wait until the worker finished every job. */
async function processed(): Promise<void> {
  await waitFor(async () => {
    const { jobs } = await app.refserver.repo.counts();
    return (jobs.processing ?? 0) + (jobs.uploaded ?? 0) === 0 ? true : undefined;
  });
}

interface DocumentsAnswer {
  documents: Array<{ doc_id: string; metadata: { title: string | null; authors: string[]; year: number | null }; zotero_key: string | null; status: string | null }>;
  total: number;
  limit: number;
  offset: number;
}
interface SearchAnswer {
  query: string;
  matches: Array<{ doc_id: string; metadata: { title: string | null; authors: string[] }; snippet: string; page: number | null }>;
  total: number;
}

async function documents(query: string): Promise<DocumentsAnswer> {
  const res = await app.inject({ url: `/api/v1/documents${query}`, headers: auth() });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as DocumentsAnswer;
}
async function search(q: string, extra = ""): Promise<SearchAnswer> {
  const res = await app.inject({ url: `/api/v1/search?q=${encodeURIComponent(q)}${extra}`, headers: auth() });
  expect(res.statusCode, res.body).toBe(200);
  return res.json() as SearchAnswer;
}
const titles = (a: DocumentsAnswer | SearchAnswer) =>
  ("documents" in a ? a.documents : a.matches).map((d) => d.metadata.title);

describe("GET /api/v1/documents and /api/v1/search", () => {
  it("401 without a token or session (bare, nothing of a paper), 200 with one", async () => {
    await upload({ title: "Secret moraine survey" }, pdfWith("moraine"));
    for (const url of ["/api/v1/documents", "/api/v1/documents?q=moraine", "/api/v1/search?q=moraine"]) {
      const res = await app.inject({ url });
      expect(res.statusCode, url).toBe(401);
      expect(res.headers["www-authenticate"]).toBe("Bearer");
      expect(res.json()).toEqual({ detail: "Authentication required" });
      const bad = await app.inject({ url, headers: { authorization: "Bearer nope" } });
      expect(bad.statusCode).toBe(401);
      expect(bad.body).not.toContain("moraine");
    }
  });

  it("lists every paper newest first with metadata, Zotero key and status; limit and offset page it; total counts all", async () => {
    const ids: string[] = [];
    for (let i = 1; i <= 7; i++) {
      ids.push(
        await upload(
          { title: `Paper ${i}`, authors: JSON.stringify([`Author ${i}`, "Ada Lovelace"]), year: String(2000 + i), zotero_key: `KEY0000${i}`, zotero_library_id: "5" },
          pdfWith(`word${i}`),
        ),
      );
    }
    const all = await documents("");
    expect(all.total).toBe(7);
    expect(all.limit).toBe(50);
    expect(all.offset).toBe(0);
    expect(titles(all)).toEqual(["Paper 7", "Paper 6", "Paper 5", "Paper 4", "Paper 3", "Paper 2", "Paper 1"]);
    expect(all.documents[0]).toMatchObject({
      doc_id: ids[6],
      metadata: { title: "Paper 7", authors: ["Author 7", "Ada Lovelace"], year: 2007 },
      zotero_key: "KEY00007",
    });
    expect(["processing", "completed"]).toContain(all.documents[0]?.status);

    const page1 = await documents("?limit=3&offset=0");
    const page2 = await documents("?limit=3&offset=3");
    const page3 = await documents("?limit=3&offset=6");
    expect([page1, page2, page3].map((p) => p.total)).toEqual([7, 7, 7]);
    expect([...titles(page1), ...titles(page2), ...titles(page3)]).toEqual(titles(all));
    expect(page3.documents).toHaveLength(1);
    expect((await documents("?limit=3&offset=99")).documents).toEqual([]);

    for (const bad of ["?limit=0", "?limit=501", "?offset=-1", "?limit=x", `?q=${"a".repeat(501)}`]) {
      const res = await app.inject({ url: `/api/v1/documents${bad}`, headers: auth() });
      expect(res.statusCode, bad).toBe(422);
    }
  });

  it("full-text search finds words of the page text, title and authors; snippets show the page text around the match", async () => {
    const glacier = await upload({ title: "Alpine survey", authors: '["Mary Somerville"]' }, pdfWith("The drumlin field lies north of the lake.", 3));
    const other = await upload({ title: "Drumlins of Ireland", authors: '["Ada Lovelace"]' }, pdfWith("Nothing about ice at all."));
    await upload({ title: "Unrelated", authors: '["Alan Turing"]' }, pdfWith("Cryptography and computing."));
    await processed();

    // Text on page 3 of one paper, in the title of another ("drumlin" is in "Drumlins", any case).
    const res = await search("drumlin");
    expect(res.query).toBe("drumlin");
    expect(res.total).toBe(2);
    expect(res.matches.map((m) => m.doc_id).sort()).toEqual([glacier, other].sort());
    const inText = res.matches.find((m) => m.doc_id === glacier);
    expect(inText?.snippet).toContain("The drumlin field lies north of the lake.");
    expect(inText?.page).toBe(3);
    // A title match without the word in the text: no snippet.
    expect(res.matches.find((m) => m.doc_id === other)).toMatchObject({ snippet: "", page: null });
    // The title weighs more than the text: the title match ranks first.
    expect(res.matches[0]?.doc_id).toBe(other);

    // All words must occur (AND), in any field.
    expect((await search("drumlin Somerville")).matches.map((m) => m.doc_id)).toEqual([glacier]);
    expect((await search("drumlin Turing")).total).toBe(0);
    expect((await search("cryptography")).matches.map((m) => m.metadata.title)).toEqual(["Unrelated"]);
    expect((await search('"north of the lake"')).matches.map((m) => m.doc_id)).toEqual([glacier]);
    // The listing takes the same filter (newest first).
    const listed = await documents("?q=drumlin");
    expect(listed.total).toBe(2);
    expect(titles(listed)).toEqual(["Drumlins of Ireland", "Alpine survey"]);
    // Paging the search.
    const first = await search("drumlin", "&limit=1");
    const second = await search("drumlin", "&limit=1&offset=1");
    expect([first.total, second.total]).toEqual([2, 2]);
    expect([first.matches[0]?.doc_id, second.matches[0]?.doc_id].sort()).toEqual([glacier, other].sort());
  });

  it("the user's query never reaches FTS5 as syntax; a missing or blank q is 422", async () => {
    await upload({ title: "Quotes and stars" }, pdfWith("A plain sentence."));
    await processed();
    for (const q of ['"', '"unbalanced', "AND OR NOT", "*", "NEAR(a b)", "title:x", "(", "a-b", "^start", "'; DROP TABLE paper; --"]) {
      const res = await app.inject({ url: `/api/v1/search?q=${encodeURIComponent(q)}`, headers: auth() });
      expect(res.statusCode, q).toBe(200);
      const list = await app.inject({ url: `/api/v1/documents?q=${encodeURIComponent(q)}`, headers: auth() });
      expect(list.statusCode, q).toBe(200);
    }
    expect((await search("plain sentence")).total).toBe(1);
    for (const url of ["/api/v1/search", "/api/v1/search?q=", "/api/v1/search?q=%20%20", "/api/v1/search?q=x&limit=101"]) {
      const res = await app.inject({ url, headers: auth() });
      expect(res.statusCode, url).toBe(422);
    }
    expect((await app.refserver.repo.counts()).papers).toBe(1);
  });

  it("CJK and other scripts: substrings of 3+ characters through the index, shorter ones by scanning; accents and case ignored", async () => {
    const cjk = await upload({ title: "氷床の融解と海面上昇", authors: '["山田 太郎"]' }, pdfWith("Sea level."));
    const accented = await upload({ title: "Études glaciaires", authors: '["Émile Dupont"]' }, pdfWith("Les glaciers."));
    await processed();
    expect((await search("融解と")).matches.map((m) => m.doc_id)).toEqual([cjk]);
    expect((await search("海面")).matches.map((m) => m.doc_id)).toEqual([cjk]); // two characters
    expect((await search("山田")).matches.map((m) => m.doc_id)).toEqual([cjk]);
    expect((await search("etudes")).matches.map((m) => m.doc_id)).toEqual([accented]);
    expect((await search("DUPONT")).matches.map((m) => m.doc_id)).toEqual([accented]);
    expect((await search("氷床 sea")).matches.map((m) => m.doc_id)).toEqual([cjk]);
  });

  it("JSON carries text as stored: a title with markup is not escaped", async () => {
    const title = `<script>alert(1)</script> & "quotes" 'too'`;
    const docId = await upload({ title, authors: '["<b>Bold</b>"]' }, pdfWith("Tags <i>in</i> text."));
    await processed();
    const listed = await documents("");
    expect(listed.documents[0]?.metadata).toMatchObject({ title, authors: ["<b>Bold</b>"] });
    const found = await search("script");
    expect(found.matches[0]).toMatchObject({ doc_id: docId, metadata: { title } });
    const raw = await app.inject({ url: "/api/v1/search?q=script", headers: auth() });
    expect(raw.headers["content-type"]).toMatch(/^application\/json/);
    expect(raw.body).toContain("<script>alert(1)</script>");
    expect(raw.body).not.toContain("&lt;");
  });
});

describe("the search index keeps in step with every write path", () => {
  const put = (docId: string, pdf: Buffer) => {
    const { body, contentType } = multipart([{ name: "file", filename: "new.pdf", content: pdf }]);
    return app.inject({ method: "PUT", url: `/api/v1/document/${docId}/pdf`, headers: { ...auth(), "content-type": contentType }, payload: body });
  };
  const metadata = (docId: string, fields: Record<string, string>) =>
    app.inject({
      method: "POST",
      url: `/api/v1/document/${docId}/metadata`,
      headers: { ...auth(), "content-type": "application/x-www-form-urlencoded" },
      payload: new URLSearchParams(fields).toString(),
    });
  const found = async (q: string) => (await search(q)).matches.map((m) => m.doc_id);

  it("upload, worker text, metadata update, PDF replacement and deletion", async () => {
    const docId = await upload({ title: "Original title", authors: '["First Author"]' }, pdfWith("Old words: basalt."));
    // Before the worker: title and authors are searchable, the text not yet.
    expect(await found("original")).toEqual([docId]);
    await processed();
    expect(await found("basalt")).toEqual([docId]);

    // A metadata update: the old title and authors no longer match, the new ones do.
    expect((await metadata(docId, { title: "Renamed paper", authors: "Grace Hopper, Alan Turing" })).statusCode).toBe(200);
    expect(await found("original")).toEqual([]);
    expect(await found("First Author")).toEqual([]);
    expect(await found("renamed")).toEqual([docId]);
    expect(await found("Hopper")).toEqual([docId]);
    // Fields not sent stay indexed; clearing the title clears it from the index.
    expect((await metadata(docId, { year: "2001" })).statusCode).toBe(200);
    expect(await found("renamed")).toEqual([docId]);
    expect((await metadata(docId, { title: "" })).statusCode).toBe(200);
    expect(await found("renamed")).toEqual([]);

    // A PDF replacement drops the old text at once, and the new text is found once processed.
    expect((await put(docId, pdfWith("New words: granite."))).statusCode).toBe(200);
    expect(await found("basalt")).toEqual([]);
    await processed();
    expect(await found("granite")).toEqual([docId]);
    expect(await found("Hopper")).toEqual([docId]);

    // Deletion removes it from the index (and its key row).
    expect((await app.inject({ method: "DELETE", url: `/api/v1/document/${docId}`, headers: auth() })).statusCode).toBe(200);
    expect(await found("granite")).toEqual([]);
    expect(await found("Hopper")).toEqual([]);
    const db = sqliteOf(app);
    expect(db.prepare("SELECT COUNT(*) AS n FROM paper_search").get()).toEqual({ n: 0 });
    expect(db.prepare("SELECT COUNT(*) AS n FROM paper_search_key").get()).toEqual({ n: 0 });
    // The same paper uploaded again is indexed afresh.
    const again = await upload({ title: "Original title" }, pdfWith("basalt again"));
    await processed();
    expect(await found("basalt")).toEqual([again]);
  });
});

describe("migration 2 on an existing database", () => {
  it("indexes the papers already stored, with their text", async () => {
    const path = join(await tempDataDir(), "old.db");
    const db = openDatabase({ path });
    try {
      migrate(db);
      // Back to a version-1 database (no index, no triggers) holding a processed paper.
      const triggers = db.prepare("SELECT name FROM sqlite_master WHERE type = 'trigger'").all() as Array<{ name: string }>;
      expect(triggers.length).toBe(6);
      for (const t of triggers) db.exec(`DROP TRIGGER ${t.name}`);
      db.exec("DROP TABLE paper_search; DROP TABLE paper_search_key; DROP TABLE session; PRAGMA user_version = 1;");
      expect(db.prepare("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'trigger'").get()).toEqual({ n: 0 });
      const repo = new SqliteRepository(db);
      await repo.createUpload({
        docId: "old-doc",
        jobId: "old-job",
        filename: "old.pdf",
        filePath: "pdfs/old-doc.pdf",
        fileSize: 1,
        title: "Legacy paper",
        authors: ["Old Author"],
        year: 1999,
        zotero: null,
      });
      db.prepare("UPDATE paper SET ocr_text = 'ancient sediment cores' WHERE doc_id = 'old-doc'").run();
      db.prepare("INSERT INTO pagetext (paper_id, page_number, text) VALUES ('old-doc', 1, 'ancient sediment cores')").run();
      expect(migrate(db)).toBeGreaterThanOrEqual(2);
      const library = new SqliteLibrary(db);
      for (const q of ["legacy", "old author", "sediment"]) {
        expect((await library.search({ q, limit: 10, offset: 0 })).matches.map((m) => m.doc_id), q).toEqual(["old-doc"]);
      }
      expect((await library.search({ q: "sediment", limit: 10, offset: 0 })).matches[0]?.snippet).toBe("ancient sediment cores");
    } finally {
      closeDatabase(db);
    }
  });
});

describe("queryTerms", () => {
  it("splits words and quoted phrases, drops empty and repeated terms, keeps at most 16", () => {
    expect(queryTerms('  ice  "sea level"  ice ""  ')).toEqual(["ice", "sea level"]);
    expect(queryTerms('"unbalanced quote')).toEqual(["unbalanced", "quote"]);
    expect(queryTerms(undefined)).toEqual([]);
    expect(queryTerms(Array.from({ length: 40 }, (_, i) => `w${i}`).join(" "))).toHaveLength(16);
  });
});
