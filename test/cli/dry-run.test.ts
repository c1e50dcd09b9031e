/**
 * The dry run, as a user meets it: the real CLI process against servers on 127.0.0.1.
 * What it says must be what a real run then does: it knows what the server holds (it logs
 * in and reads GET /api/v1/zotero/links), fails on a wrong password as a real run does,
 * says so when the server cannot tell, and its "import" rows are exactly the papers the
 * next real run uploads. Its table lines up by display width (string-width).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import stringWidth from "string-width";
import { afterEach, describe, expect, it } from "vitest";
import { formatBytes } from "../../src/progress/format.js";
import { makeSandbox, runCli, type CliResult } from "../helpers/cli.js";
import { FakeZotero, makeLibrary, type FakeLibrary } from "../../fixtures/fake-zotero.js";
import { startRefServer } from "../helpers/refserver-process.js";
import { API_KEY, makeWorld, type World } from "../helpers/world.js";

// ---- cleanup: every server stopped, every temp dir removed --------------------------

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  // Last registered first: CLI sandboxes and temp dirs go after the servers that used them.
  while (cleanups.length > 0) {
    const fn = cleanups.pop()!;
    try {
      await fn();
    } catch {
      // keep cleaning up
    }
  }
});

function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true, maxRetries: 5 }));
  return dir;
}

async function world(o: Parameters<typeof makeWorld>[0]): Promise<World> {
  const w = await makeWorld(o);
  cleanups.push(() => rmSync(w.sandbox.dir, { recursive: true, force: true, maxRetries: 5 }));
  cleanups.push(() => w.close());
  return w;
}

// ---- the dry run's JSON ---------------------------------------------------------------

interface DryItem {
  key: string;
  title: string;
  authors: string;
  year: number | null;
  pdf: string | null;
  size: number | null;
  action: "import" | "already done" | "skip" | "later (--limit)";
  reason?: string;
  unsynced?: boolean;
}

interface DryJson {
  dryRun: true;
  counts: {
    import: number;
    alreadyDone: number;
    skipped: number;
    skippedByReason: Record<string, number>;
    laterByLimit: number;
    bytes: number | null;
    bytesKnown: number;
    sizesUnknown: number;
    serverKnown: boolean;
  };
  items: DryItem[];
}

interface RunJson {
  exitCode: number;
  imported: number;
  alreadyPresent: number;
  skipped: Record<string, number>;
  failed: unknown[];
  deferredByLimit: number;
  checkpoint: string;
}

function parseJson<T>(r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`stdout is not one JSON document (exit ${r.code}):\n${r.stdout}\nstderr:\n${r.stderr}`);
  }
}

function keysOf(items: DryItem[], action: DryItem["action"]): string[] {
  return items.filter((i) => i.action === action).map((i) => i.key).sort();
}

// ---- the table, by display columns ------------------------------------------------------

const graphemes = new Intl.Segmenter(undefined, { granularity: "grapheme" });

interface Placed {
  col: number;
  width: number;
  text: string;
}

/** Each grapheme of a line with the display column it starts at. */
function place(line: string): Placed[] {
  const out: Placed[] = [];
  let col = 0;
  for (const { segment } of graphemes.segment(line)) {
    const width = stringWidth(segment);
    out.push({ col, width, text: segment });
    col += width;
  }
  return out;
}

/** The text between display columns [from, to); fails when a grapheme straddles either edge. */
function sliceColumns(placed: Placed[], from: number, to: number, what: string): string {
  for (const p of placed) {
    const straddles = (edge: number): boolean => p.col < edge && p.col + p.width > edge;
    if (straddles(from) || (Number.isFinite(to) && straddles(to))) throw new Error(`${what}: "${p.text}" at column ${p.col} straddles a column edge (${from}..${to})`);
  }
  return placed.filter((p) => p.col >= from && p.col < to).map((p) => p.text).join("");
}

interface Table {
  header: string;
  /** Column name → display column where it starts. */
  starts: Map<string, number>;
  rows: Map<string, Record<string, string>>;
  /** Raw data lines. */
  lines: string[];
  /** What follows the table (totals), continuation lines joined. */
  totals: string[];
}

/** Split a dry run's stdout into its table (cells cut by the header's display columns) and its totals. */
function parseTable(stdout: string): Table {
  const all = stdout.replace(/\n$/, "").split("\n");
  const header = all[0]!;
  expect(header).toMatch(/^ACTION\s+KEY\s+YEAR\s+TITLE\s+AUTHORS\s+PDF\s+SIZE\s+NOTE$/);
  const names = [...header.matchAll(/\S+/g)].map((m) => ({ name: m[0], start: m.index }));
  const starts = new Map(names.map((n) => [n.name, n.start]));
  const blank = all.indexOf("");
  expect(blank, "a blank line between the table and the totals").toBeGreaterThan(0);
  const lines = all.slice(1, blank);
  // SIZE is right-aligned (its header too): its right edge is known, its left edge is not,
  // so PDF and SIZE are read as one region split at the separator (cells never hold two spaces).
  const sizeRight = starts.get("SIZE")! + "SIZE".length;
  const rows = new Map<string, Record<string, string>>();
  for (const line of lines) {
    const placed = place(line);
    const width = stringWidth(line);
    const cells: Record<string, string> = {};
    const separatorBefore = (col: number, what: string): void => {
      if (width > col) expect(sliceColumns(placed, col - 2, col, line), `separator before ${what} in "${line}"`).toBe("  ");
    };
    names.forEach((n, i) => {
      if (n.name === "PDF" || n.name === "SIZE") return;
      const next = names[i + 1];
      const text = sliceColumns(placed, n.start, next ? next.start : Infinity, `${n.name} of "${line}"`);
      if (n.start > 0) separatorBefore(n.start, n.name);
      cells[n.name] = text.trim();
    });
    const pdfStart = starts.get("PDF")!;
    separatorBefore(pdfStart, "PDF");
    separatorBefore(starts.get("NOTE")!, "NOTE");
    const region = sliceColumns(placed, pdfStart, sizeRight, `PDF and SIZE of "${line}"`);
    const sizeCell = /\S$/.test(region) ? (/(?:^| {2})([^ ]+(?: [^ ]+)*)$/.exec(region)?.[1] ?? "") : "";
    expect(region.trimEnd().endsWith(sizeCell)).toBe(true);
    cells.SIZE = sizeCell;
    cells.PDF = region.trimEnd().slice(0, region.trimEnd().length - sizeCell.length).trim();
    rows.set(cells.KEY!, cells);
  }
  const totals = all.slice(blank + 1).join("\n").replace(/\n {2}/g, " ").split("\n");
  return { header, starts, rows, lines, totals };
}

/** A cell holds the whole value, or a cut of it ending in "…". */
function expectCell(cell: string | undefined, full: string, what: string): void {
  if (cell === full) return;
  expect(cell, `${what}: "${cell}" is neither "${full}" nor a cut of it`).toMatch(/…$/);
  expect(full.startsWith(cell!.slice(0, -1)), `${what}: "${cell}" is not a cut of "${full}"`).toBe(true);
}

/** The NOTE a row should show, from the dry run's JSON. */
function noteOf(item: DryItem): string {
  if (item.action === "skip") return item.reason ?? "";
  if (item.action === "already done") return item.reason ?? "";
  return [item.reason ?? "", item.unsynced ? "(a PDF not synced)" : ""].filter(Boolean).join(" ");
}

// ---- the tests ------------------------------------------------------------------------------

describe("--dry-run", () => {
  it("knows what the real refserver-lite already holds; uploads nothing, writes no checkpoint, cache or report", async () => {
    const library = makeLibrary({ apiKey: API_KEY, libraryId: 4242 });
    for (let i = 0; i < 6; i++) library.addParentWithPdf();
    library.addItemWithoutAttachment({ title: "No PDF here" });
    library.addNote(undefined);
    const zotero = new FakeZotero({ library });
    const z = await zotero.start();
    cleanups.push(() => z.close());
    const server = await startRefServer({ inProcess: true });
    cleanups.push(() => server.close());
    const sandbox = makeSandbox({ zoteroUrl: z.url, refserverUrl: server.url, libraryId: "4242", apiKey: API_KEY, username: server.adminUser, password: server.adminPassword });
    cleanups.push(() => rmSync(sandbox.dir, { recursive: true, force: true, maxRetries: 5 }));

    // A real run puts 3 of the 6 papers on the server, with its own checkpoint.
    const work = tempDir("ifz-dry-");
    const realCheckpoint = join(work, "real", "checkpoint.ndjson");
    const real = await runCli(["--limit", "3", "--json", "--checkpoint", realCheckpoint], sandbox);
    expect(real.code, real.stderr).toBe(0);
    expect(parseJson<RunJson>(real).imported).toBe(3);
    const onServer = (await server.apiLinks("4242")).map((l) => l.zotero_key).sort();
    expect(onServer).toHaveLength(3);
    const before = { counts: server.db().counts(), files: [...server.storedFiles().keys()].sort(), fileRequests: zotero.requestsTo("item/file").length };

    // The dry run: another, fresh checkpoint, and fresh state and cache homes.
    const dryCheckpoint = join(work, "dry", "checkpoint.ndjson");
    const dryState = join(work, "dry-state");
    const dryCache = join(work, "dry-cache");
    const env = { XDG_STATE_HOME: dryState, XDG_CACHE_HOME: dryCache };
    const dry = await runCli(["--dry-run", "--json", "--checkpoint", dryCheckpoint], sandbox, env);
    expect(dry.code, dry.stderr).toBe(0);
    const preview = parseJson<DryJson>(dry);
    expect(preview.counts.serverKnown).toBe(true);
    expect(preview.counts.alreadyDone).toBe(onServer.length);
    expect(keysOf(preview.items, "already done")).toEqual(onServer);
    for (const item of preview.items.filter((i) => i.action === "already done")) expect(item.reason, item.key).toBe("on server");
    expect(preview.counts.import).toBe(3);
    expect(keysOf(preview.items, "import")).toEqual(library.pdfPairs().map((p) => p.parent!.key).filter((k) => !onServer.includes(k)).sort());
    expect(preview.counts.skipped).toBe(2);

    const table = await runCli(["--dry-run", "--checkpoint", dryCheckpoint], sandbox, env);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/Dry run: would import 3 \([^)]*\), already done 3, skip 2\./);
    expect(table.stdout).not.toContain("cannot tell");
    const rows = parseTable(table.stdout).rows;
    for (const key of onServer) expect(rows.get(key)).toMatchObject({ ACTION: "done", NOTE: "on server" });

    // Nothing uploaded, downloaded or written.
    // (Rows only: the server's worker may finish processing jobs meanwhile.)
    const rowsOf = (c: ReturnType<ReturnType<typeof server.db>["counts"]>): unknown => ({ ...c, jobsByStatus: undefined });
    expect(rowsOf(server.db().counts())).toEqual(rowsOf(before.counts));
    expect([...server.storedFiles().keys()].sort()).toEqual(before.files);
    expect(zotero.requestsTo("item/file")).toHaveLength(before.fileRequests);
    expect(existsSync(dryCheckpoint)).toBe(false);
    expect(existsSync(`${dryCheckpoint}.lock`)).toBe(false);
    expect(existsSync(join(work, "dry"))).toBe(false);
    expect(existsSync(dryState), "no state (report) directory").toBe(false);
    expect(existsSync(dryCache), "no cache directory").toBe(false);
  });

  it("exits 3 with one line naming the RefServer login on a wrong password, exactly as a real run does", async () => {
    const w = await world({ library: { items: 2 }, refserver: { supportsLinks: true } });
    const env = { REFSERVER_PASSWORD: "not-the-password-42" };
    const errorLines = (r: CliResult): string[] =>
      r.stderr
        .split("\n")
        .filter((l) => l.includes("import-from-zotero:"))
        .map((l) => l.replace(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ /, ""));

    const dry = await runCli(["--dry-run"], w.sandbox, env);
    const real = await runCli([], w.sandbox, env);
    expect(dry.code, dry.stderr).toBe(3);
    expect(real.code, real.stderr).toBe(3);
    const dryErrors = errorLines(dry);
    expect(dryErrors).toHaveLength(1);
    expect(dryErrors[0]).toMatch(/^import-from-zotero: RefServer refused the login of 'admin' \(401[^)]*\): check refserver\.username and refserver\.password/);
    expect(dryErrors).toEqual(errorLines(real));
    expect(dry.stderr).not.toContain("not-the-password-42");
    // No table when the server could not be asked.
    expect(dry.stdout).not.toContain("ACTION");
    expect(dry.stdout).not.toContain("Dry run:");

    // --json: the same exit code, the error in the document, the same line on stderr.
    const json = await runCli(["--dry-run", "--json"], w.sandbox, env);
    expect(json.code, json.stderr).toBe(3);
    expect(parseJson<{ dryRun: boolean; exitCode: number; error: string }>(json)).toMatchObject({ dryRun: true, exitCode: 3, error: expect.stringMatching(/RefServer refused the login/) });
    expect(errorLines(json)).toEqual(dryErrors);

    expect(w.refserver.uploads).toHaveLength(0);
    expect(w.refserver.papers.size).toBe(0);
  });

  it("says it cannot know when the server has no links endpoint, and knows once it has", async () => {
    const w = await world({ library: { items: 3 }, refserver: { supportsLinks: false } });
    const seededKey = w.library.pdfPairs()[0]!.parent!.key;
    w.refserver.seedPaper({ zoteroKey: seededKey, libraryId: String(w.library.libraryId) });

    const table = await runCli(["--dry-run"], w.sandbox);
    expect(table.code, table.stderr).toBe(0);
    const lines = parseTable(table.stdout).totals;
    expect(lines).toContain("The server cannot tell which papers it holds: 'already done' counts only this computer's checkpoint.");
    const json = parseJson<DryJson>(await runCli(["--dry-run", "--json"], w.sandbox));
    expect(json.counts.serverKnown).toBe(false);
    // It cannot know the seeded paper is there: the real run will learn it from a 409.
    expect(json.items.find((i) => i.key === seededKey)?.action).toBe("import");
    expect(json.counts.alreadyDone).toBe(0);

    // The same server with the endpoint: it knows, and says nothing of the kind.
    w.refserver.options.supportsLinks = true;
    const knowing = await runCli(["--dry-run"], w.sandbox);
    expect(knowing.code, knowing.stderr).toBe(0);
    expect(knowing.stdout).not.toContain("The server cannot tell");
    const known = parseJson<DryJson>(await runCli(["--dry-run", "--json"], w.sandbox));
    expect(known.counts.serverKnown).toBe(true);
    expect(known.items.find((i) => i.key === seededKey)).toMatchObject({ action: "already done", reason: "on server" });
    expect(w.refserver.uploads).toHaveLength(0);
  });

  /** Stored PDFs, never-synced PDFs, two PDFs with the first unsynced, notes, bare items, linked files, some on the server. */
  function mixedLibrary(lib: FakeLibrary): void {
    for (let i = 0; i < 4; i++) lib.addParentWithPdf();
    lib.addStoredAttachment(lib.addParent({ title: "Never synced A" }).key, { stored: false });
    lib.addNote(undefined);
    const two = lib.addParent({ title: "Two PDFs, the first unsynced" });
    lib.addStoredAttachment(two.key, { stored: false, title: "Unsynced copy" });
    lib.addStoredAttachment(two.key, { title: "Stored copy" });
    lib.addNote(two.key);
    lib.addItemWithoutAttachment({ title: "Bare item 1" });
    lib.addLinkedFile(lib.addParent({ title: "Only a linked file" }).key);
    for (let i = 0; i < 4; i++) lib.addParentWithPdf();
    lib.addStandalonePdf({ title: "Standalone one.pdf" });
    lib.addStoredAttachment(undefined, { stored: false, title: "Never synced standalone.pdf" });
    lib.addLinkedFile(undefined, { title: "Linked standalone" });
    lib.addItemWithoutAttachment({ title: "Bare item 2" });
    lib.addNote(undefined);
    for (let i = 0; i < 5; i++) lib.addParentWithPdf();
    lib.addStandalonePdf({ title: "Standalone two.pdf" });
  }

  it.each([
    { name: "without --limit", args: [] as string[], rounds: [12, 0] },
    { name: "with --limit 7", args: ["--limit", "7"], rounds: [7, 5, 0] },
  ])("'would import' is what the next real run imports, item by item ($name)", async ({ args, rounds }) => {
    const w = await world({ library: { items: 0 }, build: mixedLibrary, refserver: { supportsLinks: true } });
    // 13 stored parents + 1 with two PDFs + 2 standalone = 16 importable; 4 are on the server already.
    const importable = [...new Set(w.library.pdfPairs().map((p) => p.parent?.key ?? p.attachment.key))];
    expect(importable).toHaveLength(16);
    const seeded = [importable[0]!, importable[5]!, importable[9]!, importable[15]!];
    for (const key of seeded) w.refserver.seedPaper({ zoteroKey: key, libraryId: String(w.library.libraryId) });
    const journalLines = (): Array<Record<string, unknown>> =>
      existsSync(w.sandbox.checkpoint) ? readFileSync(w.sandbox.checkpoint, "utf8").trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>) : [];

    const uploadedAll: string[] = [];
    for (const [round, expected] of rounds.entries()) {
      const what = `round ${round + 1}`;
      const dry = await runCli(["--dry-run", "--json", ...args], w.sandbox);
      expect(dry.code, dry.stderr).toBe(0);
      const preview = parseJson<DryJson>(dry);
      const wouldImport = keysOf(preview.items, "import");
      expect(preview.counts.import, what).toBe(expected);
      expect(wouldImport, what).toHaveLength(expected);
      expect(preview.counts.serverKnown).toBe(true);

      const uploadsBefore = w.refserver.uploads.length;
      const journalBefore = journalLines().length;
      const real = await runCli(["--json", ...args], w.sandbox);
      expect(real.code, real.stderr).toBe(0);
      const summary = parseJson<RunJson>(real);
      const uploaded = w.refserver.uploads
        .slice(uploadsBefore)
        .filter((u) => u.outcome === 200)
        .map((u) => u.zoteroKey!)
        .sort();
      const journaled = journalLines()
        .slice(journalBefore)
        .filter((l) => l.t === "item" && l.status === "done" && l.via === "uploaded")
        .map((l) => String(l.key))
        .sort();

      expect(uploaded, `${what}: the server's uploads`).toEqual(wouldImport);
      expect(journaled, `${what}: the checkpoint`).toEqual(wouldImport);
      expect(summary.imported, `${what}: the run's summary`).toBe(preview.counts.import);
      expect(summary.alreadyPresent, what).toBe(preview.counts.alreadyDone);
      expect(summary.deferredByLimit, what).toBe(preview.counts.laterByLimit);
      expect(Object.values(summary.skipped).reduce((a, b) => a + b, 0), what).toBe(preview.counts.skipped);
      expect(summary.failed).toEqual([]);
      // Nothing the dry run called done or skipped was sent.
      for (const key of [...keysOf(preview.items, "already done"), ...keysOf(preview.items, "skip")]) expect(uploaded, what).not.toContain(key);
      uploadedAll.push(...uploaded);
    }
    expect(uploadedAll.sort()).toEqual(importable.filter((k) => !seeded.includes(k)).sort());
    expect(w.refserver.duplicateKeys()).toEqual([]);
    // The never-synced PDFs were never asked for.
    expect(w.zotero.requestsTo("item/file").length).toBe(uploadedAll.length);
  });

  it("lines up CJK, Arabic and emoji rows by display width, within 160 columns, with totals per skip reason and unknown sizes", async () => {
    const creators = (last: string, first: string): Array<{ creatorType: string; firstName: string; lastName: string }> => [{ creatorType: "author", firstName: first, lastName: last }];
    const w = await world({
      library: { items: 0 },
      refserver: { supportsLinks: true },
      build: (lib) => {
        lib.addParentWithPdf({ title: "Plain ASCII title" });
        lib.addParentWithPdf({ title: "量子计算的图论方法：一个关于稀疏网络中随机游走与谱聚类的长篇综述", creators: creators("王", "小明") });
        lib.addParentWithPdf({ title: "دِرَاسَةُ الشَّبَكَاتِ العَصَبِيَّةِ", creators: creators("العربي", "محمد") });
        lib.addParentWithPdf({ title: "Emoji 👩‍🔬🧪🇯🇵 and café ✅ study", creators: creators("Émilie", "Zoë") });
        lib.addParentWithPdf({ title: "東京の化石記録 🦕" });
        lib.addParentWithPdf({ title: "Already on the server" });
        // Unknown sizes: WebDAV files have an md5 but no links.enclosure (no length).
        lib.addStoredAttachment(lib.addParent({ title: "WebDAV 論文" }).key, { webdav: true });
        lib.addStoredAttachment(lib.addParent({ title: "WebDAV دراسة" }).key, { webdav: true });
        // Unsynced: a skip, and an import that has another PDF.
        lib.addStoredAttachment(lib.addParent({ title: "从未同步的论文" }).key, { stored: false });
        const two = lib.addParent({ title: "Two PDFs 📄📄" });
        lib.addStoredAttachment(two.key, { stored: false });
        lib.addStoredAttachment(two.key);
        // Every other skip reason the Web API source can meet.
        lib.addNote(undefined);
        lib.addNote(undefined, "<p>second note</p>");
        lib.addItemWithoutAttachment({ title: "بلا مرفق" });
        lib.addLinkedFile(lib.addParent({ title: "リンクされたファイル" }).key);
        lib.addLinkedUrl(lib.addParent({ title: "Only a link 🔗" }).key);
        lib.addNonPdfAttachment(lib.addParent({ title: "A snapshot only" }).key);
      },
    });
    const done = w.library.items.find((i) => i.data.title === "Already on the server")!.key;
    w.refserver.seedPaper({ zoteroKey: done, libraryId: String(w.library.libraryId) });

    const json = await runCli(["--dry-run", "--json"], w.sandbox);
    expect(json.code, json.stderr).toBe(0);
    const preview = parseJson<DryJson>(json);
    const r = await runCli(["--dry-run"], w.sandbox);
    expect(r.code, r.stderr).toBe(0);

    // No line wider than the default 160 columns (stdout is a pipe: no terminal width).
    for (const line of r.stdout.split("\n")) expect(stringWidth(line), `too wide:\n${line}`).toBeLessThanOrEqual(160);

    const table = parseTable(r.stdout);
    expect(table.rows.size).toBe(preview.items.length);
    const noteStart = table.starts.get("NOTE")!;
    for (const item of preview.items) {
      const row = table.rows.get(item.key);
      expect(row, `row of ${item.key}`).toBeDefined();
      const what = `row ${item.key} "${item.title}"`;
      expect(row!.ACTION, what).toBe(item.action === "already done" ? "done" : item.action);
      expect(row!.YEAR, what).toBe(item.year === null ? "" : String(item.year));
      expectCell(row!.TITLE, item.title || "(untitled)", `${what} TITLE`);
      expectCell(row!.AUTHORS, item.authors, `${what} AUTHORS`);
      expectCell(row!.PDF, item.pdf ?? "", `${what} PDF`);
      expect(row!.SIZE, what).toBe(item.size !== null ? formatBytes(item.size) : item.action === "import" ? "?" : "");
      // NOTE, the last column, starts at the same display column in every row.
      expect(row!.NOTE, what).toBe(noteOf(item));
    }
    for (const line of table.lines) {
      const placed = place(line);
      const note = sliceColumns(placed, noteStart, Infinity, line);
      if (note !== "") expect(sliceColumns(placed, noteStart, noteStart + 1, line), `NOTE starts at column ${noteStart}: "${line}"`).not.toBe(" ");
    }
    // The wide rows really are in the table, cut or not.
    expect(r.stdout).toContain("量子计算的图论方法");
    expect(r.stdout).toContain("👩‍🔬🧪🇯🇵");
    expect(r.stdout).toContain("الشَّبَكَاتِ");

    // Unsynced PDFs are flagged.
    const unsyncedSkip = preview.items.find((i) => i.title === "从未同步的论文")!;
    expect(table.rows.get(unsyncedSkip.key)).toMatchObject({ ACTION: "skip", NOTE: "PDF not synced to Zotero storage" });
    const two = preview.items.find((i) => i.title === "Two PDFs 📄📄")!;
    expect(table.rows.get(two.key)).toMatchObject({ ACTION: "import", NOTE: "(a PDF not synced)" });

    // Totals: sizes with unknowns, each skip reason with its count.
    const c = preview.counts;
    expect(c).toMatchObject({ import: 8, alreadyDone: 1, skipped: 7, bytes: null, sizesUnknown: 2 });
    expect(c.bytesKnown).toBe(preview.items.filter((i) => i.action === "import").reduce((s, i) => s + (i.size ?? 0), 0));
    expect(c.skippedByReason).toEqual({
      "PDF not synced to Zotero storage": 1,
      "a note, nothing to import": 2,
      "no attachment": 1,
      "PDF is a linked file (not in Zotero storage)": 1,
      "only a linked URL": 1,
      "attachment is not a PDF": 1,
    });
    expect(table.totals[0]).toBe(`Dry run: would import 8 (≥ ${formatBytes(c.bytesKnown)}, 2 unknown), already done 1, skip 7. Nothing was downloaded, uploaded or recorded.`);
    let skipLine = table.totals.find((l) => l.startsWith("skip: "));
    expect(skipLine, table.totals.join("\n")).toBeDefined();
    for (const [reason, n] of Object.entries(c.skippedByReason)) {
      expect(skipLine, reason).toContain(`${reason} ${n}`);
      skipLine = skipLine!.replace(`${reason} ${n}`, "");
    }
    expect(skipLine, "nothing but the reasons and their counts").toMatch(/^skip: (, )*$/);
    expect(table.totals.some((l) => l.includes("cannot tell"))).toBe(false);
  });
});
