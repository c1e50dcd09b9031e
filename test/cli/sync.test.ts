/**
 * Keeping the server in step with Zotero, end to end: the real `import-from-zotero` process
 * against the fake Zotero Web API and either the real refserver-lite process (behind a
 * pass-through FaultProxy that only logs, so every request the importer makes is counted) or
 * the fake RefServer, which is the original RefServerLite's shape (metadata endpoint, no
 * PUT …/pdf, no DELETE).
 *
 * 1. richer metadata: journal, DOI (from Extra) and abstract through the metadata endpoint,
 *    authors as "First Last"; a metadata call failing past its retries is "metadata pending"
 *    (exit 1), and the next run sends it without uploading again;
 * 2. an edited title reaches the server on an incremental run (same doc_id, no upload, never
 *    "skipped" although Zotero lists the parent without its attachment); the run after does nothing;
 * 3. a replaced PDF: PUT …/pdf on refserver-lite (same doc_id, new md5); reported once on a
 *    server that cannot take it, never uploaded twice;
 * 4. trash and deletions: reported (summary, --json, status), kept by default, listed by
 *    `--prune --dry-run`, removed by `--prune` where the server can; a restored item stays;
 * 5. a paper deleted on the server is reported lost, never silently re-imported;
 * 6. exactly once across runs with edits in between, and a `--since 0` run that changes nothing.
 *
 * No sleeps and no timing between processes: every assertion is on what the servers hold and
 * what the importer's processes said.
 */
import { readFileSync, statSync } from "node:fs";
import { readJournal } from "../../src/journal/journal.js";
import { scopeOf } from "../../src/journal/records.js";
import { loadState, snapshotPath } from "../../src/journal/snapshot.js";
import { reduceJournal } from "../../src/journal/state.js";
import { afterEach, describe, expect, it } from "vitest";
import { makeSandbox, removeSandbox, runCli, type CliResult, type Sandbox, type SandboxOptions } from "../helpers/cli.js";
import { FakeZotero, makeLibrary, type FakeLibrary, type ZoteroCreator } from "../../fixtures/fake-zotero.js";
import { FaultProxy } from "../../fixtures/fault-proxy.js";
import { makePdf, md5 } from "../../fixtures/pdf.js";
import { startRefServer, type RefServerProcess } from "../helpers/refserver-process.js";
import { API_KEY, makeWorld, type World, type WorldOptions } from "../helpers/world.js";

// ---- cleanup: every process stopped, every temp dir removed --------------------------------

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  // Last registered first: a sandbox (and any CLI still running in it) before the servers it used.
  while (cleanups.length > 0) {
    const fn = cleanups.pop()!;
    try {
      await fn();
    } catch {
      // keep cleaning up
    }
  }
});

const LIBRARY_ID = 4242;
const LIB = String(LIBRARY_ID);

// ---- worlds --------------------------------------------------------------------------------

/** The fake Zotero and the fake RefServer (the original's routes: metadata, no PUT, no DELETE). */
async function fakeWorld(build: (lib: FakeLibrary) => void, o: Omit<WorldOptions, "build" | "library"> = {}): Promise<World> {
  const w = await makeWorld({ library: { apiKey: API_KEY, libraryId: LIBRARY_ID }, build, ...o });
  cleanups.push(() => w.close());
  return w;
}

interface RealWorld {
  library: FakeLibrary;
  zotero: FakeZotero;
  server: RefServerProcess;
  /** Between the importer and the server; forwards everything, logs every request. */
  proxy: FaultProxy;
  sandbox: Sandbox;
}

/** The fake Zotero and the real refserver-lite process, the importer talking to it through a logging proxy. */
async function realWorld(build: (lib: FakeLibrary) => void, sandbox: Partial<SandboxOptions> = {}): Promise<RealWorld> {
  const library = makeLibrary({ apiKey: API_KEY, libraryId: LIBRARY_ID });
  build(library);
  const zotero = new FakeZotero({ library });
  const z = await zotero.start();
  cleanups.push(() => z.close());
  const server = await startRefServer({ inProcess: true });
  cleanups.push(() => server.close());
  const proxy = new FaultProxy({ target: server.url, match: () => false });
  await proxy.start();
  cleanups.push(() => proxy.close());
  const box = makeSandbox({ zoteroUrl: z.url, refserverUrl: proxy.url, libraryId: LIB, apiKey: API_KEY, username: server.adminUser, password: server.adminPassword, ...sandbox });
  cleanups.push(() => removeSandbox(box));
  return { library, zotero, server, proxy, sandbox: box };
}

// ---- what the importer said ------------------------------------------------------------------

interface RunSummary {
  imported: number;
  alreadyPresent: number;
  skipped: Record<string, number>;
  failed: { key: string; message: string }[];
  interrupted: number;
  updated: number;
  replaced: number;
  pdfChanged: { key: string; title: string }[];
  metadataPending: number;
  updateFailed: { key: string; title: string; message: string }[];
  gone: { trash: number; deleted: number; items: { key: string; title: string; where: "trash" | "deleted" }[] };
  removed: number;
  lost: { key: string; title: string }[];
}

type RunJson = RunSummary & { exitCode: number; report: string; checkpoint: string };

function parseJson<T>(r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`stdout is not one JSON document (exit ${r.code}):\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
}

/** A text run's summary, read back from the JSON report it names on stdout (the same object --json prints). */
function reportOf(r: CliResult): RunSummary & { exitCode: number } {
  const path = /Report: (\S+\.json)\s*$/m.exec(r.stdout)?.[1];
  if (!path) throw new Error(`no report named on stdout (exit ${r.code}):\n${r.stdout}\nstderr:\n${r.stderr}`);
  const report = JSON.parse(readFileSync(path, "utf8")) as { exitCode: number; summary: RunSummary };
  return { ...report.summary, exitCode: report.exitCode };
}

const occurrences = (text: string, needle: string): number => text.split(needle).length - 1;
const out = (r: CliResult): string => `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

// ---- what the servers saw ----------------------------------------------------------------------

/** Requests through the proxy from `from` on that can change the server: everything but GETs and logins. */
function proxyWrites(proxy: FaultProxy, from = 0): string[] {
  return proxy.log
    .slice(from)
    .filter((e) => e.method !== "GET" && e.method !== "HEAD" && e.path !== "/api/v1/auth/login")
    .map((e) => `${e.method} ${e.path}`);
}

/** Requests to the fake RefServer from `from` on that can change it: everything but GETs and logins. */
function fakeWrites(w: World, from = 0): string[] {
  return w.refserver.requestLog
    .slice(from)
    .filter((e) => e.method !== "GET" && e.method !== "HEAD" && e.route !== "login")
    .map((e) => `${e.method} ${e.path} → ${String(e.outcome)}`);
}

interface ServerDocument {
  doc_id: string;
  metadata: { title: string | null; authors: string[]; journal: string | null; year: number | null; abstract: string | null; doi: string | null };
}

async function getDocument(server: RefServerProcess, docId: string): Promise<ServerDocument> {
  const res = await fetch(`${server.url}/api/v1/document/${encodeURIComponent(docId)}`, { headers: { authorization: `Bearer ${await server.login()}` } });
  expect(res.status, `GET /api/v1/document/${docId}`).toBe(200);
  return (await res.json()) as ServerDocument;
}

type Link = { zotero_key: string; doc_id: string; zotero_version: number; title?: string | null };

async function linksByKey(server: RefServerProcess): Promise<Map<string, Link>> {
  const links = (await server.apiLinks(LIB)) as Link[];
  return new Map(links.map((l) => [l.zotero_key, l]));
}

const author = (firstName: string, lastName: string, creatorType = "author"): ZoteroCreator => ({ creatorType, firstName, lastName });

/** A distinct valid PDF (for a replacement: other bytes, so another md5). */
const newPdf = (label: string): Buffer => makePdf({ title: label, pages: [`${label}\nreplacement text`], padToBytes: 2_500 });

// ---- 1. richer metadata ---------------------------------------------------------------------------

describe("richer metadata", () => {
  /** Two authors and an editor, a journal, the DOI only in Extra, an abstract. */
  function addRichItem(lib: FakeLibrary): string {
    return lib.addParentWithPdf({
      title: "Sketch of the Analytical Engine",
      creators: [author("Ada", "Lovelace"), author("Charles", "Babbage"), author("Luigi", "Menabrea", "editor")],
      date: "1843-10-01",
      extra: { publicationTitle: "Scientific Memoirs", DOI: "", extra: "Original date: 1842\nDOI: 10.1234/abc.5", abstractNote: "Notes by the translator on the engine." },
    }).parentKey;
  }

  it("journal, DOI from Extra and abstract reach refserver-lite with the upload; authors as 'First Last'; a second run sends nothing", async () => {
    let key = "";
    const w = await realWorld((lib) => {
      key = addRichItem(lib);
      lib.addParentWithPdf();
    });

    const first = await runCli(["--json"], w.sandbox);
    expect(first.code, out(first)).toBe(0);
    expect(parseJson<RunJson>(first)).toMatchObject({ imported: 2, metadataPending: 0, failed: [] });

    const link = (await linksByKey(w.server)).get(key);
    expect(link, "the paper is on the server").toBeDefined();
    const doc = await getDocument(w.server, link!.doc_id);
    expect(doc.metadata).toEqual({
      title: "Sketch of the Analytical Engine",
      authors: ["Ada Lovelace", "Charles Babbage"],
      journal: "Scientific Memoirs",
      year: 1843,
      abstract: "Notes by the translator on the engine.",
      doi: "10.1234/abc.5",
    });
    // One upload and one metadata call per paper, nothing else that writes.
    const writes = proxyWrites(w.proxy);
    expect(writes.filter((x) => x === "POST /api/v1/papers/upload_with_metadata")).toHaveLength(2);
    expect(writes.filter((x) => /^POST \/api\/v1\/document\/[^/]+\/metadata$/.test(x))).toHaveLength(2);
    expect(writes).toHaveLength(4);
    expect(writes).toContain(`POST /api/v1/document/${link!.doc_id}/metadata`);

    const mark = w.proxy.log.length;
    const second = await runCli(["--json"], w.sandbox);
    expect(second.code, out(second)).toBe(0);
    expect(parseJson<RunJson>(second)).toMatchObject({ imported: 0, updated: 0, replaced: 0, metadataPending: 0 });
    expect(proxyWrites(w.proxy, mark)).toEqual([]);
  });

  it("an abstract longer than refserver-lite's field limit: the rest of the metadata is sent without it, said once; no 'metadata pending', and the next run sends nothing", async () => {
    let key = "";
    const long = "An abstract that goes on. ".repeat(3_000); // 78 000 bytes, past the 64 KiB field limit
    const w = await realWorld((lib) => {
      key = lib.addParentWithPdf({ title: "Long-winded", creators: [author("Ada", "Lovelace")], extra: { publicationTitle: "Memoirs", abstractNote: long } }).parentKey;
    });
    const first = await runCli([], w.sandbox);
    expect(first.code, out(first)).toBe(0);
    expect(reportOf(first)).toMatchObject({ imported: 1, metadataPending: 0 });
    expect(occurrences(first.stderr + first.stdout, "refuses its abstract as longer than its field limit")).toBe(1);
    const link = (await linksByKey(w.server)).get(key)!;
    const doc = await getDocument(w.server, link.doc_id);
    expect(doc.metadata).toMatchObject({ title: "Long-winded", journal: "Memoirs", abstract: null });

    const mark = w.proxy.log.length;
    const second = await runCli(["--json"], w.sandbox);
    expect(second.code, out(second)).toBe(0);
    expect(parseJson<RunJson>(second)).toMatchObject({ imported: 0, updated: 0, metadataPending: 0 });
    expect(proxyWrites(w.proxy, mark)).toEqual([]);
  });

  it("the original's metadata endpoint gets authors as one comma-separated string, with journal, DOI and abstract", async () => {
    let key = "";
    const w = await fakeWorld((lib) => {
      key = addRichItem(lib);
    });
    const r = await runCli(["--json"], w.sandbox);
    expect(r.code, out(r)).toBe(0);
    const paper = w.refserver.papers.get(key)!;
    expect(paper).toBeDefined();
    expect(w.refserver.metadataCalls).toHaveLength(1);
    const call = w.refserver.metadataCalls[0]!;
    expect(call.docId).toBe(paper.docId);
    expect(call.fields).toMatchObject({
      title: "Sketch of the Analytical Engine",
      authors: "Ada Lovelace, Charles Babbage",
      journal: "Scientific Memoirs",
      year: "1843",
      abstract: "Notes by the translator on the engine.",
      doi: "10.1234/abc.5",
    });
    expect(paper).toMatchObject({ journal: "Scientific Memoirs", doi: "10.1234/abc.5", abstract: "Notes by the translator on the engine.", authors: ["Ada Lovelace", "Charles Babbage"] });
  });

  it("a metadata call failing past its retries: exit 1, the paper is on the server, 'metadata pending'; the next run sends it without uploading again", async () => {
    let key = "";
    const w = await fakeWorld(
      (lib) => {
        key = addRichItem(lib);
        lib.addParentWithPdf();
      },
      { sandbox: { retries: 2 } },
    );
    // Every attempt at the metadata endpoint answers "database is locked" until the rule is removed.
    const fault = w.refserver.failMetadataNext(1_000);

    const first = await runCli([], w.sandbox);
    expect(first.code, out(first)).toBe(1);
    expect(first.stdout).toContain("2 imported with metadata pending: the next run sends it.");
    expect(first.stderr).toMatch(new RegExp(`${key}: imported, metadata pending \\(.*database is locked.*\\); the next run sends it`));
    expect(reportOf(first)).toMatchObject({ exitCode: 1, imported: 2, metadataPending: 2, failed: [] });
    // The papers are there; each metadata call was tried 1 + retries times.
    expect(w.refserver.papers.has(key)).toBe(true);
    expect(w.refserver.uploads).toHaveLength(2);
    expect(w.refserver.metadataCalls).toHaveLength(0);
    expect(w.refserver.requestLog.filter((e) => e.route === "metadata" && e.outcome === 500)).toHaveLength(2 * 3);
    expect(w.refserver.papers.get(key)!.journal).toBeUndefined();

    const status = await runCli(["status"], w.sandbox);
    expect(status.code, out(status)).toBe(0);
    expect(status.stdout).toContain("metadata pending: 2");

    w.refserver.removeFault(fault);
    const second = await runCli(["--json"], w.sandbox);
    expect(second.code, out(second)).toBe(0);
    expect(parseJson<RunJson>(second)).toMatchObject({ exitCode: 0, imported: 0, updated: 2, metadataPending: 0, failed: [], updateFailed: [] });
    expect(w.refserver.uploads, "no upload again").toHaveLength(2);
    expect(w.refserver.duplicateKeys()).toEqual([]);
    expect(w.refserver.metadataCalls).toHaveLength(2);
    expect(w.refserver.papers.get(key)).toMatchObject({ journal: "Scientific Memoirs", doi: "10.1234/abc.5", abstract: "Notes by the translator on the engine." });

    const mark = w.refserver.requestLog.length;
    const third = await runCli(["--json"], w.sandbox);
    expect(third.code, out(third)).toBe(0);
    expect(parseJson<RunJson>(third)).toMatchObject({ imported: 0, updated: 0, metadataPending: 0 });
    expect(fakeWrites(w, mark)).toEqual([]);
  });
});

// ---- 2. metadata edits ------------------------------------------------------------------------------

describe("metadata edits in Zotero", () => {
  it("an edited title reaches refserver-lite on the next (incremental) run: updated 1, no upload, same doc_id, never 'skipped'; the run after does nothing", async () => {
    let edited = "";
    const w = await realWorld((lib) => {
      for (let i = 0; i < 3; i++) lib.addParentWithPdf();
      edited = lib.pdfPairs()[1]!.parent!.key;
    });
    const first = await runCli(["--json"], w.sandbox);
    expect(first.code, out(first)).toBe(0);
    expect(parseJson<RunJson>(first).imported).toBe(3);
    const before = await linksByKey(w.server);

    // As Zotero does: the item's version and the library's move on; the attachment is untouched.
    const libraryVersion = w.library.version;
    w.library.update(edited, { title: "A Title Edited in Zotero" });
    const itemVersion = w.library.getItem(edited)!.version;
    expect(itemVersion).toBe(w.library.version);
    expect(w.library.version).toBeGreaterThan(libraryVersion);

    // The dry run says so, and changes nothing.
    const markDry = w.proxy.log.length;
    const dry = await runCli(["--dry-run"], w.sandbox);
    expect(dry.code, out(dry)).toBe(0);
    expect(dry.stdout).toContain("Would update 1 paper already on the server.");
    expect(proxyWrites(w.proxy, markDry)).toEqual([]);

    const mark = w.proxy.log.length;
    const second = await runCli([], w.sandbox);
    expect(second.code, out(second)).toBe(0);
    const summary = reportOf(second);
    expect(summary).toMatchObject({ exitCode: 0, imported: 0, updated: 1, replaced: 0, failed: [], updateFailed: [] });
    // Zotero listed the parent alone (only it changed): still the paper on the server, not an item without a PDF.
    expect(summary.skipped).toEqual({});
    expect(second.stdout).toMatch(/Imported 0, updated 1, already on the server \d+, skipped 0, failed 0\./);
    expect(second.stdout).not.toContain("no attachment");

    expect(proxyWrites(w.proxy, mark)).toEqual([`POST /api/v1/document/${before.get(edited)!.doc_id}/metadata`]);
    const after = await linksByKey(w.server);
    expect([...after.keys()].sort()).toEqual([...before.keys()].sort());
    expect(after.get(edited)!.doc_id, "same doc_id").toBe(before.get(edited)!.doc_id);
    expect(after.get(edited)!.title).toBe("A Title Edited in Zotero");
    expect(after.get(edited)!.zotero_version, "the link carries the item's new version").toBe(itemVersion);
    expect((await getDocument(w.server, after.get(edited)!.doc_id)).metadata.title).toBe("A Title Edited in Zotero");
    expect(w.server.db().counts().papers).toBe(3);

    const mark3 = w.proxy.log.length;
    const third = await runCli(["--json"], w.sandbox);
    expect(third.code, out(third)).toBe(0);
    expect(parseJson<RunJson>(third)).toMatchObject({ imported: 0, updated: 0, replaced: 0, metadataPending: 0 });
    expect(proxyWrites(w.proxy, mark3), "no upload, metadata call, PUT or DELETE").toEqual([]);
  });
});

// ---- 3. replaced PDFs ----------------------------------------------------------------------------------

describe("a PDF replaced in Zotero", () => {
  it("refserver-lite gets the new file through PUT …/pdf: same doc_id, the new md5, counted as replaced; the run after does nothing", async () => {
    let key = "";
    let att = "";
    const w = await realWorld((lib) => {
      for (let i = 0; i < 3; i++) lib.addParentWithPdf();
      const pair = lib.pdfPairs()[0]!;
      key = pair.parent!.key;
      att = pair.attachment.key;
    });
    const first = await runCli(["--json"], w.sandbox);
    expect(first.code, out(first)).toBe(0);
    const before = await linksByKey(w.server);
    const oldMd5 = md5(await w.server.download(before.get(key)!.doc_id));

    const body = newPdf("Replaced in Zotero");
    w.library.setFile(att, body);
    expect(md5(body)).not.toBe(oldMd5);

    const markDry = w.proxy.log.length;
    const dry = parseJson<{ counts: { import: number; update: number; replacePdf: number } }>(await runCli(["--dry-run", "--json"], w.sandbox));
    expect(dry.counts).toMatchObject({ import: 0, update: 0, replacePdf: 1 });
    expect(proxyWrites(w.proxy, markDry)).toEqual([]);

    const mark = w.proxy.log.length;
    const second = await runCli([], w.sandbox);
    expect(second.code, out(second)).toBe(0);
    expect(reportOf(second)).toMatchObject({ exitCode: 0, imported: 0, replaced: 1, failed: [], updateFailed: [], pdfChanged: [] });
    expect(second.stdout).toContain("(1 PDF replaced)");
    const docId = before.get(key)!.doc_id;
    expect(proxyWrites(w.proxy, mark)).toEqual([`PUT /api/v1/document/${docId}/pdf`]);
    const after = await linksByKey(w.server);
    expect(after.get(key)!.doc_id, "same doc_id").toBe(docId);
    expect(md5(await w.server.download(docId)), "the server's PDF is the new one").toBe(md5(body));
    expect(w.server.db().counts().papers).toBe(3);
    expect(w.server.storedFiles().size, "the old file is gone").toBe(3);

    const mark3 = w.proxy.log.length;
    const third = await runCli(["--json"], w.sandbox);
    expect(third.code, out(third)).toBe(0);
    expect(parseJson<RunJson>(third)).toMatchObject({ imported: 0, updated: 0, replaced: 0, pdfChanged: [] });
    expect(proxyWrites(w.proxy, mark3)).toEqual([]);
  });

  it("a server without PUT …/pdf: 'PDF changed in Zotero, the server keeps the older file' once; the next run neither says it again nor uploads", async () => {
    let key = "";
    let att = "";
    const w = await fakeWorld((lib) => {
      for (let i = 0; i < 3; i++) lib.addParentWithPdf();
      const pair = lib.pdfPairs()[2]!;
      key = pair.parent!.key;
      att = pair.attachment.key;
    });
    const first = await runCli(["--json"], w.sandbox);
    expect(first.code, out(first)).toBe(0);
    const oldMd5 = w.refserver.papers.get(key)!.md5;

    w.library.setFile(att, newPdf("Changed where the server cannot follow"));
    const second = await runCli([], w.sandbox);
    expect(second.code, out(second)).toBe(0);
    expect(occurrences(second.stdout, "PDF changed in Zotero, the server keeps the older file")).toBe(1);
    expect(second.stdout).toContain(`PDF changed in Zotero, the server keeps the older file: ${key}`);
    expect(reportOf(second)).toMatchObject({ exitCode: 0, imported: 0, replaced: 0, pdfChanged: [{ key }], failed: [] });
    expect(w.refserver.uploads).toHaveLength(3);
    expect(w.refserver.papers.get(key)!.md5, "the server keeps the older file").toBe(oldMd5);

    // Neither the next incremental run nor one that lists the whole library again (--since 0,
    // where the item comes with its changed attachment) says it again, or sends anything.
    const mark = w.refserver.requestLog.length;
    for (const args of [[], ["--since", "0"]]) {
      const again = await runCli(args, w.sandbox);
      expect(again.code, out(again)).toBe(0);
      expect(again.stdout + again.stderr, args.join(" ")).not.toContain("PDF changed in Zotero");
      expect(reportOf(again)).toMatchObject({ imported: 0, replaced: 0, pdfChanged: [] });
    }
    expect(fakeWrites(w, mark)).toEqual([]);
    expect(w.refserver.uploads).toHaveLength(3);
    expect(w.refserver.duplicateKeys()).toEqual([]);
    expect(w.refserver.allPapers).toHaveLength(3);
  });
});

// ---- 4. trash and deletions ------------------------------------------------------------------------------

describe("items trashed or deleted in Zotero", () => {
  it("are reported (summary, --json, status), kept by default, listed by --prune --dry-run, and removed from refserver-lite by --prune", { timeout: 120_000 }, async () => {
    let trashed = "";
    let deleted = "";
    let kept: string[] = [];
    const w = await realWorld((lib) => {
      for (let i = 0; i < 4; i++) lib.addParentWithPdf();
      const keys = lib.pdfPairs().map((p) => p.parent!.key);
      [trashed, deleted] = [keys[0]!, keys[2]!];
      kept = [keys[1]!, keys[3]!];
    });
    const first = await runCli(["--json"], w.sandbox);
    expect(first.code, out(first)).toBe(0);
    expect(parseJson<RunJson>(first).imported).toBe(4);
    const links = await linksByKey(w.server);

    w.library.trash(trashed);
    w.library.deleteWithChildren(deleted);

    // Reported, not removed.
    const mark = w.proxy.log.length;
    const second = await runCli([], w.sandbox);
    expect(second.code, out(second)).toBe(0);
    expect(second.stdout).toContain("Gone from Zotero: 2 (1 in the trash, 1 deleted); still on the server (--prune removes them).");
    expect(reportOf(second).gone).toEqual({
      trash: 1,
      deleted: 1,
      items: expect.arrayContaining([expect.objectContaining({ key: trashed, where: "trash" }), expect.objectContaining({ key: deleted, where: "deleted" })]),
    });
    const json = await runCli(["--json"], w.sandbox);
    expect(json.code, out(json)).toBe(0);
    const gone = parseJson<RunJson>(json).gone;
    expect(gone).toMatchObject({ trash: 1, deleted: 1 });
    expect(gone.items.map((g) => `${g.key}:${g.where}`).sort()).toEqual([`${trashed}:trash`, `${deleted}:deleted`].sort());
    expect(proxyWrites(w.proxy, mark)).toEqual([]);
    expect((await linksByKey(w.server)).size).toBe(4);

    const status = await runCli(["status"], w.sandbox);
    expect(status.code, out(status)).toBe(0);
    expect(status.stdout).toContain("gone from Zotero: 2 (1 in the trash, 1 deleted)");
    expect(status.stdout).toMatch(new RegExp(`${trashed} ".*" \\(in the trash\\)`));
    expect(status.stdout).toMatch(new RegExp(`${deleted} ".*" \\(deleted\\)`));
    const statusJson = parseJson<{ scopes: { gone: { key: string; where: string }[] }[] }>(await runCli(["status", "--json"], w.sandbox));
    expect(statusJson.scopes[0]!.gone.map((g) => `${g.key}:${g.where}`).sort()).toEqual([`${trashed}:trash`, `${deleted}:deleted`].sort());

    // --prune --dry-run: lists them, removes nothing.
    const markDry = w.proxy.log.length;
    const dry = await runCli(["--prune", "--dry-run"], w.sandbox);
    expect(dry.code, out(dry)).toBe(0);
    expect(dry.stdout).toContain("Gone from Zotero: 2 (1 in the trash, 1 deleted); --prune would remove them from the server:");
    expect(dry.stdout).toMatch(new RegExp(`remove ${trashed} ".*" \\(in the trash\\)`));
    expect(dry.stdout).toMatch(new RegExp(`remove ${deleted} ".*" \\(deleted\\)`));
    const dryJson = parseJson<{ wouldRemove: string[] }>(await runCli(["--prune", "--dry-run", "--json"], w.sandbox));
    expect([...dryJson.wouldRemove].sort()).toEqual([trashed, deleted].sort());
    expect(proxyWrites(w.proxy, markDry)).toEqual([]);
    expect((await linksByKey(w.server)).size).toBe(4);

    // --prune: both leave the server, through DELETE, and nothing else.
    const markPrune = w.proxy.log.length;
    const prune = await runCli(["--prune"], w.sandbox);
    expect(prune.code, out(prune)).toBe(0);
    expect(prune.stdout).toContain("Gone from Zotero: 2 (1 in the trash, 1 deleted); removed from the server: 2.");
    expect(reportOf(prune)).toMatchObject({ removed: 2, updateFailed: [] });
    expect(proxyWrites(w.proxy, markPrune).sort()).toEqual([`DELETE /api/v1/document/${links.get(trashed)!.doc_id}`, `DELETE /api/v1/document/${links.get(deleted)!.doc_id}`].sort());
    expect([...(await linksByKey(w.server)).keys()].sort()).toEqual([...kept].sort());
    expect(w.server.db().counts().papers).toBe(2);

    // Done: the next run reports nothing gone and changes nothing.
    const markAfter = w.proxy.log.length;
    const after = await runCli([], w.sandbox);
    expect(after.code, out(after)).toBe(0);
    expect(after.stdout).not.toContain("Gone from Zotero");
    expect(reportOf(after)).toMatchObject({ imported: 0, gone: { trash: 0, deleted: 0 }, removed: 0 });
    expect(proxyWrites(w.proxy, markAfter)).toEqual([]);
  });

  it("--prune against a server that cannot remove papers says so, removes nothing and exits without error", async () => {
    let trashed = "";
    let deleted = "";
    const w = await fakeWorld((lib) => {
      for (let i = 0; i < 3; i++) lib.addParentWithPdf();
      const keys = lib.pdfPairs().map((p) => p.parent!.key);
      [trashed, deleted] = [keys[0]!, keys[1]!];
    });
    const first = await runCli(["--json"], w.sandbox);
    expect(first.code, out(first)).toBe(0);
    w.library.trash(trashed);
    w.library.deleteWithChildren(deleted);

    const prune = await runCli(["--prune"], w.sandbox);
    expect(prune.code, out(prune)).toBe(0);
    expect(prune.stderr).toMatch(/the RefServer cannot remove papers \(40[45]\): --prune needs refserver-lite; nothing was removed/);
    expect(reportOf(prune)).toMatchObject({ exitCode: 0, removed: 0, gone: { trash: 1, deleted: 1 }, updateFailed: [] });
    expect(w.refserver.papers.has(trashed) && w.refserver.papers.has(deleted)).toBe(true);
    expect(w.refserver.allPapers).toHaveLength(3);
    expect(w.refserver.uploads).toHaveLength(3);
  });

  it("an item restored from the trash before a prune stays on the server and is no longer reported gone", async () => {
    let trashed = "";
    const w = await realWorld((lib) => {
      for (let i = 0; i < 3; i++) lib.addParentWithPdf();
      trashed = lib.pdfPairs()[1]!.parent!.key;
    });
    const first = await runCli(["--json"], w.sandbox);
    expect(first.code, out(first)).toBe(0);
    const docId = (await linksByKey(w.server)).get(trashed)!.doc_id;

    w.library.trash(trashed);
    const second = await runCli([], w.sandbox);
    expect(second.code, out(second)).toBe(0);
    expect(second.stdout).toContain("Gone from Zotero: 1 (1 in the trash, 0 deleted)");

    w.library.restore(trashed);
    const mark = w.proxy.log.length;
    const prune = await runCli(["--prune"], w.sandbox);
    expect(prune.code, out(prune)).toBe(0);
    expect(prune.stdout).not.toContain("Gone from Zotero");
    expect(reportOf(prune)).toMatchObject({ imported: 0, removed: 0, gone: { trash: 0, deleted: 0, items: [] } });
    expect(proxyWrites(w.proxy, mark), "no DELETE, no upload").toEqual([]);
    expect((await linksByKey(w.server)).get(trashed)?.doc_id, "still on the server, same doc_id").toBe(docId);

    const status = await runCli(["status", "--json"], w.sandbox);
    expect(status.code, out(status)).toBe(0);
    expect(parseJson<{ scopes: { gone: unknown[] }[] }>(status).scopes[0]!.gone).toEqual([]);
  });
});

// ---- 5. lost papers --------------------------------------------------------------------------------------

describe("a paper deleted on the server", () => {
  it("is reported lost with the way to repair it, and is not re-imported behind the user's back", async () => {
    let lostKey = "";
    const w = await realWorld((lib) => {
      for (let i = 0; i < 3; i++) lib.addParentWithPdf();
      lostKey = lib.pdfPairs()[0]!.parent!.key;
    });
    const first = await runCli(["--json"], w.sandbox);
    expect(first.code, out(first)).toBe(0);
    const docId = (await linksByKey(w.server)).get(lostKey)!.doc_id;

    // Someone removes it on the server directly (not through the proxy).
    const res = await fetch(`${w.server.url}/api/v1/document/${encodeURIComponent(docId)}`, { method: "DELETE", headers: { authorization: `Bearer ${await w.server.login()}` } });
    expect(res.status, await res.text()).toBe(200);

    const mark = w.proxy.log.length;
    const second = await runCli([], w.sandbox);
    expect([0, 1], out(second)).toContain(second.code);
    expect(second.stdout).toContain("1 paper imported earlier is no longer on the server: run `import-from-zotero verify --repair`.");
    expect(reportOf(second)).toMatchObject({ imported: 0, lost: [{ key: lostKey }] });
    // The whole library listed again (--since 0): still reported, still not uploaded.
    const full = await runCli(["--since", "0", "--json"], w.sandbox);
    expect([0, 1], out(full)).toContain(full.code);
    expect(parseJson<RunJson>(full)).toMatchObject({ imported: 0, lost: [{ key: lostKey }] });
    expect(proxyWrites(w.proxy, mark), "no upload").toEqual([]);
    expect((await linksByKey(w.server)).has(lostKey)).toBe(false);
  });
});

// ---- 6. exactly once across runs with edits ------------------------------------------------------------

describe("exactly once across runs with edits in between", () => {
  it("20 items, edits (titles, a replaced PDF, a trashed item), then a --since 0 run: every item once on refserver-lite, and the last run changes nothing", async () => {
    const w = await realWorld((lib) => {
      for (let i = 0; i < 20; i++) lib.addParentWithPdf();
      lib.addItemWithoutAttachment({ title: "Bare item" });
      lib.addNote(undefined);
    });
    const pairs = w.library.pdfPairs();
    const keys = pairs.map((p) => p.parent!.key);
    expect(new Set(keys).size).toBe(20);

    const first = await runCli(["--json"], w.sandbox);
    expect(first.code, out(first)).toBe(0);
    expect(parseJson<RunJson>(first)).toMatchObject({ imported: 20, failed: [], metadataPending: 0 });
    const docIds = new Map([...(await linksByKey(w.server))].map(([k, l]) => [k, l.doc_id]));

    // Edits between runs.
    const retitled = [keys[3]!, keys[7]!, keys[11]!];
    for (const k of retitled) w.library.update(k, { title: `Retitled ${k}` });
    const replaced = pairs[15]!;
    const body = newPdf("Replaced between runs");
    w.library.setFile(replaced.attachment.key, body);
    const trashed = keys[18]!;
    w.library.trash(trashed);

    const second = await runCli(["--json"], w.sandbox);
    expect(second.code, out(second)).toBe(0);
    expect(parseJson<RunJson>(second)).toMatchObject({ imported: 0, updated: 4, replaced: 1, failed: [], updateFailed: [], gone: { trash: 1, deleted: 0 } });

    const mark = w.proxy.log.length;
    const full = await runCli(["--since", "0", "--json"], w.sandbox);
    expect(full.code, out(full)).toBe(0);
    expect(parseJson<RunJson>(full)).toMatchObject({ imported: 0, updated: 0, replaced: 0, failed: [], updateFailed: [], pdfChanged: [], lost: [], gone: { trash: 1, deleted: 0 } });
    expect(proxyWrites(w.proxy, mark), "the --since 0 run changes nothing").toEqual([]);

    // Every Zotero item exactly once (the trashed one stays until --prune), same doc_ids, current metadata and PDF.
    const links = await w.server.apiLinks(LIB);
    expect(links.map((l) => l.zotero_key).sort()).toEqual([...keys].sort());
    expect(w.server.db().duplicateKeys()).toEqual([]);
    expect(w.server.db().counts()).toMatchObject({ papers: 20, links: 20 });
    const now = await linksByKey(w.server);
    for (const k of keys) expect(now.get(k)!.doc_id, k).toBe(docIds.get(k));
    for (const k of keys) {
      if (k === trashed) continue;
      expect(now.get(k)!.title, k).toBe(String(w.library.getItem(k)!.data.title));
    }
    expect(md5(await w.server.download(docIds.get(replaced.parent!.key)!))).toBe(md5(body));

    const markLast = w.proxy.log.length;
    const last = await runCli(["--json"], w.sandbox);
    expect(last.code, out(last)).toBe(0);
    expect(parseJson<RunJson>(last)).toMatchObject({ imported: 0, updated: 0, replaced: 0 });
    expect(proxyWrites(w.proxy, markLast)).toEqual([]);

    // Each run left a snapshot of where every item stands (the runs after the first read it and
    // only the records appended since): it is of this journal and says what all its records say.
    const scope = scopeOf(w.proxy.url, "user", LIB);
    const snap = loadState(w.sandbox.checkpoint, scope);
    expect(snap.fromSnapshot).toBe(true);
    expect(statSync(snapshotPath(w.sandbox.checkpoint)).mode & 0o777).toBe(0o600);
    expect(snap.state).toEqual(reduceJournal(readJournal(w.sandbox.checkpoint).records, scope));
    expect(snap.state.runs).toBe(4);
  });
});

describe("regressions found while writing these tests", () => {
  it("an item restored in Zotero after --prune removed it is imported again", async () => {
    let trashed = "";
    const w = await realWorld((lib) => {
      for (let i = 0; i < 3; i++) lib.addParentWithPdf();
      trashed = lib.pdfPairs()[1]!.parent!.key;
    });
    expect((await runCli(["--json"], w.sandbox)).code).toBe(0);
    w.library.trash(trashed);
    const prune = await runCli(["--prune"], w.sandbox);
    expect(prune.code, out(prune)).toBe(0);
    expect((await linksByKey(w.server)).has(trashed)).toBe(false);
    w.library.restore(trashed);
    const again = await runCli([], w.sandbox);
    expect(again.code, out(again)).toBe(0);
    expect(reportOf(again)).toMatchObject({ imported: 1, skipped: {} });
    expect((await linksByKey(w.server)).has(trashed)).toBe(true);
  });

  it("an author whose name holds a comma stays one author on refserver-lite after the metadata call", async () => {
    let key = "";
    const w = await realWorld((lib) => {
      key = lib.addParentWithPdf({ title: "Institutional", creators: [{ creatorType: "author", name: "Ministry of Health, Labour and Welfare" }, author("Ada", "Lovelace")] }).parentKey;
    });
    const r = await runCli(["--json"], w.sandbox);
    expect(r.code, out(r)).toBe(0);
    const doc = await getDocument(w.server, (await linksByKey(w.server)).get(key)!.doc_id);
    expect(doc.metadata.authors).toEqual(["Ministry of Health, Labour and Welfare", "Ada Lovelace"]);
  });

  it("a metadata edit for a paper the server answers 'Document not found' to is not counted as updated: it is reported lost", async () => {
    let key = "";
    const w = await fakeWorld((lib) => {
      for (let i = 0; i < 2; i++) lib.addParentWithPdf();
      key = lib.pdfPairs()[0]!.parent!.key;
    });
    expect((await runCli(["--json"], w.sandbox)).code).toBe(0);
    // Gone from the server's database (the original has no DELETE and no links endpoint).
    const p = w.refserver.papers.get(key)!;
    w.refserver.papers.delete(key);
    w.refserver.allPapers.splice(w.refserver.allPapers.indexOf(p), 1);
    w.library.update(key, { title: "Edited after the server lost it" });
    const r = await runCli([], w.sandbox);
    expect(r.stdout).toContain("1 paper imported earlier is no longer on the server");
    expect(reportOf(r)).toMatchObject({ updated: 0, lost: [{ key }] });
  });

  it("the uploaded PDF moved to the trash, another PDF of the item now its own: the incremental run replaces it", async () => {
    let key = "";
    let first = "";
    let second = "";
    const w = await realWorld((lib) => {
      const p = lib.addParent({ title: "Two PDFs" });
      key = p.key;
      first = lib.addStoredAttachment(p.key, { body: newPdf("first") }).key;
      second = lib.addStoredAttachment(p.key, { body: newPdf("second one") }).key;
    });
    expect((await runCli(["--json"], w.sandbox)).code).toBe(0);
    const docId = (await linksByKey(w.server)).get(key)!.doc_id;
    expect(md5(await w.server.download(docId))).toBe(md5(w.library.files.get(first)!));
    w.library.trash(first);
    const r = await runCli([], w.sandbox);
    expect(r.code, out(r)).toBe(0);
    expect(reportOf(r)).toMatchObject({ replaced: 1 });
    expect(md5(await w.server.download(docId))).toBe(md5(w.library.files.get(second)!));
  });
});

