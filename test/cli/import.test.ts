import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { runCli } from "../helpers/cli.js";
import { md5 } from "../../fixtures/pdf.js";
import { API_KEY, PASSWORD, makeWorld, type World } from "../helpers/world.js";

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

/** Parent key, attachment key and PDF bytes of every stored PDF in the fake library. */
interface Pair {
  parentKey: string;
  attachmentKey: string;
  body: Buffer;
}
function pairs(w: World): Pair[] {
  return w.library.pdfPairs().map((p) => ({ parentKey: p.parent?.key ?? p.attachment.key, attachmentKey: p.attachment.key, body: p.body }));
}

function journalLines(w: World): Record<string, unknown>[] {
  return readFileSync(w.sandbox.checkpoint, "utf8")
    .trim()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe("import-from-zotero against real HTTP servers on 127.0.0.1", () => {
  it("reads every page of a 250-item library and imports each PDF once, intact", async () => {
    world = await makeWorld({ library: { items: 250 }, sandbox: { batchSize: 8 } });
    const r = await runCli(["--quiet"], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(world.refserver.papers.size).toBe(250);
    expect(world.refserver.duplicateKeys()).toEqual([]);
    for (const { parentKey, body } of pairs(world)) {
      expect(world.refserver.papers.get(parentKey)?.md5).toBe(md5(body));
    }
    // 250 parents and 250 attachments, listed apart at 100 a page: 3 + 3 requests, not one per item.
    expect(world.zotero.listingRequestCount(), world.zotero.log.filter((l) => l.route !== "item/file" && l.route !== "storage").map((l) => `${l.route}?${l.rawQuery}`).join(" ")).toBe(6);
    expect(world.zotero.peakInFlight).toBeLessThanOrEqual(4);
    expect(world.zotero.storageKeyLeaks).toHaveLength(0);
    expect(r.stdout).toMatch(/Imported 250, already on the server 0/);
  });

  it("sends the metadata fields before the file, with the item key and library id", async () => {
    world = await makeWorld({ library: { items: 1 } });
    const r = await runCli([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    const upload = world.refserver.uploads.find((u) => u.outcome === 200)!;
    expect(upload.fieldNames.at(-1)).toBe("file");
    expect(upload.fieldNames.slice(0, -1)).toEqual(expect.arrayContaining(["title", "authors", "zotero_key", "zotero_library_id", "zotero_version"]));
    const { parentKey } = pairs(world)[0]!;
    expect(upload.fields.zotero_key).toBe(parentKey);
    expect(upload.fields.zotero_library_id).toBe(String(world.library.libraryId));
    expect(JSON.parse(upload.fields.authors!)).toBeInstanceOf(Array);
    expect(upload.file!.filename).toMatch(/\.pdf$/);
  });

  it("--dry-run previews and writes nothing: no upload, download, cache, journal or report (it logs in to read the server's state)", async () => {
    world = await makeWorld({ library: { items: 3 }, build: (lib) => lib.addItemWithoutAttachment({ title: "Bare item" }) });
    const r = await runCli(["--dry-run", "--json"], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    const preview = JSON.parse(r.stdout) as { counts: { import: number; skipped: number; bytes: number }; items: { key: string; action: string; reason?: string; title: string; size: number | null }[] };
    expect(preview.counts).toMatchObject({ import: 3, skipped: 1 });
    // Sizes come from the listing (links.enclosure.length), without downloading anything.
    const sizes = pairs(world).map((p) => p.body.length);
    expect(preview.counts.bytes).toBe(sizes.reduce((a, b) => a + b, 0));
    for (const p of pairs(world)) expect(preview.items.find((i) => i.key === p.parentKey)?.size).toBe(p.body.length);
    expect(preview.items.find((i) => i.title === "Bare item")).toMatchObject({ action: "skip", reason: "no attachment" });
    expect(world.refserver.uploads).toHaveLength(0);
    expect(world.refserver.loginCalls).toBe(1);
    expect(world.zotero.requestsTo("item/file")).toHaveLength(0);
    expect(existsSync(world.sandbox.checkpoint)).toBe(false);
    expect(existsSync(world.sandbox.cacheDir)).toBe(false);
    expect(existsSync(join(world.sandbox.stateDir, "import-from-zotero", "reports"))).toBe(false);

    const table = await runCli(["--dry-run"], world.sandbox);
    expect(table.stdout).toMatch(/ACTION\s+KEY\s+YEAR\s+TITLE\s+AUTHORS\s+PDF\s+SIZE\s+NOTE/);
    expect(table.stdout).toMatch(/would import 3 \(\d+(\.\d)? KB\), already done 0, skip 1/);
  });

  it("--limit counts importable papers not yet done, not raw items", async () => {
    world = await makeWorld({
      library: { items: 0 },
      build: (lib) => {
        for (let i = 0; i < 4; i++) lib.addItemWithoutAttachment({ title: `No PDF ${i}` });
        lib.addNote(undefined);
        lib.addLinkedFile(undefined);
        for (let i = 0; i < 8; i++) lib.addParentWithPdf();
      },
    });
    const first = await runCli(["--limit", "5"], world.sandbox);
    expect(first.code, first.stderr).toBe(0);
    expect(world.refserver.papers.size).toBe(5);
    expect(first.stdout).toMatch(/3 more papers wait for the next run/);
    const second = await runCli(["--limit", "5"], world.sandbox);
    expect(second.code).toBe(0);
    expect(world.refserver.papers.size).toBe(8);
    expect(world.refserver.duplicateKeys()).toEqual([]);
  });

  it("survives 'database is locked' five times in a row, then imports", async () => {
    world = await makeWorld({ library: { items: 2 }, sandbox: { batchSize: 1 } });
    world.refserver.lockNextUploads(5);
    const r = await runCli(["--verbose"], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(world.refserver.statusCount(500)).toBe(5);
    expect(world.refserver.papers.size).toBe(2);
    expect(r.stderr).toMatch(/retry upload .*database is locked/);
  });

  it("retries login itself when it answers 'database is locked'", async () => {
    world = await makeWorld({ library: { items: 1 } });
    world.refserver.lockNextLogins(2);
    const r = await runCli([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(world.refserver.loginCalls).toBe(3);
    expect(world.refserver.papers.size).toBe(1);
  });

  it("treats 409 as already imported, with the server's doc_id in the journal", async () => {
    world = await makeWorld({ library: { items: 3 } });
    const { parentKey } = pairs(world)[0]!;
    const seeded = world.refserver.seedPaper({ zoteroKey: parentKey, libraryId: String(world.library.libraryId) });
    const r = await runCli([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Imported 2, already on the server 1/);
    const done = journalLines(world).find((l) => l.key === parentKey && l.status === "done");
    expect(done).toMatchObject({ via: "already", docId: seeded.docId });
  });

  it("logs in again once on a 401 mid-run", async () => {
    world = await makeWorld({ library: { items: 6 }, sandbox: { batchSize: 1 }, refserver: { delayMs: 50 } });
    const run = runCli([], world.sandbox);
    const w = world;
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        if (w.refserver.papers.size >= 2) {
          clearInterval(timer);
          w.refserver.invalidateTokens();
          resolve();
        }
      }, 5);
    });
    const r = await run;
    expect(r.code, r.stderr).toBe(0);
    expect(world.refserver.papers.size).toBe(6);
    expect(world.refserver.loginCalls).toBe(2);
    expect(world.refserver.statusCount(401)).toBeGreaterThanOrEqual(1);
  });

  it("closes an upload whose answer was lost after commit with the 409 of its retry: no duplicate", async () => {
    world = await makeWorld({ library: { items: 3 } });
    world.refserver.loseAnswerAfterCommit({ next: 2 });
    const r = await runCli([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(world.refserver.papers.size).toBe(3);
    expect(world.refserver.duplicateKeys()).toEqual([]);
    expect(world.refserver.statusCount(409)).toBe(2);
  });

  it("records a 422 as a permanent failure with the server's message, exits 1, and retries it next run", async () => {
    world = await makeWorld({ library: { items: 3 } });
    const { parentKey } = pairs(world)[0]!;
    world.refserver.failKeys([parentKey], 422, { times: 1 });
    const first = await runCli([], world.sandbox);
    expect(first.code).toBe(1);
    expect(first.stdout).toMatch(/failed 1/);
    expect(world.refserver.uploadsPerKey.get(parentKey)).toBe(1); // not retried within the run
    const status = await runCli(["status"], world.sandbox);
    expect(status.stdout).toMatch(/failed 1/);
    expect(status.stdout).toContain(parentKey);
    const second = await runCli(["--retry-failed"], world.sandbox);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/Imported 1/);
    expect(world.refserver.papers.size).toBe(3);
  });

  it("skips a PDF never uploaded to Zotero storage without asking for its file, and a WebDAV one after one 404, once", async () => {
    world = await makeWorld({
      library: { items: 1 },
      build: (lib) => {
        lib.addStoredAttachment(lib.addParent({ title: "Unsynced paper" }).key, { stored: false });
        lib.addStoredAttachment(lib.addParent({ title: "WebDAV paper" }).key, { webdav: true });
      },
    });
    const r = await runCli(["--verbose"], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/skipped .*WebDAV paper.*not synced to Zotero storage/);
    expect(r.stdout).toMatch(/PDF not synced to Zotero storage: 2/);
    // md5 null and no links.enclosure: never asked for; the WebDAV md5 without an enclosure: asked once.
    expect(world.zotero.requestsTo("item/file")).toHaveLength(2);
    const again = await runCli(["--since", "0"], world.sandbox);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/PDF not synced to Zotero storage: 2/);
    expect(world.zotero.requestsTo("item/file")).toHaveLength(2);
  });

  it("re-downloads a file whose MD5 does not match Zotero's", async () => {
    world = await makeWorld({ library: { items: 1 } });
    const { attachmentKey, parentKey, body } = pairs(world)[0]!;
    world.zotero.corruptFile(attachmentKey, 2, "flip");
    const r = await runCli([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(world.zotero.downloadsByKey.get(attachmentKey)).toBe(3);
    expect(world.refserver.papers.get(parentKey)?.md5).toBe(md5(body));
  });

  it("keeps every secret out of output, reports and the journal", async () => {
    world = await makeWorld({ library: { items: 2 } });
    world.refserver.lockNextUploads(1);
    const r = await runCli(["--verbose"], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    const reportsDir = join(world.sandbox.stateDir, "import-from-zotero", "reports");
    const reports = readdirSync(reportsDir).map((f) => readFileSync(join(reportsDir, f), "utf8"));
    expect(reports).toHaveLength(1);
    const token = world.refserver.uploads[0]!.authorization!.replace(/^Bearer /, "");
    for (const text of [r.stdout, r.stderr, readFileSync(world.sandbox.checkpoint, "utf8"), ...reports]) {
      expect(text).not.toContain(API_KEY);
      expect(text).not.toContain(PASSWORD);
      expect(text).not.toContain(token);
    }
    expect(JSON.parse(reports[0]!)).toMatchObject({ exitCode: 0, summary: { imported: 2 } });
  });

  it("imports a standalone PDF under its own key and an untitled item under its attachment's title", async () => {
    world = await makeWorld({
      library: { items: 0 },
      build: (lib) => {
        lib.addStandalonePdf({ title: "Loose scan.pdf" });
        lib.addParentWithPdf({ title: "", attachment: { title: "Attachment title" } });
      },
    });
    const r = await runCli([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    const standalone = world.library.items.find((i) => i.data.itemType === "attachment" && !i.data.parentItem)!;
    expect(world.refserver.papers.get(standalone.key)?.title).toBe("Loose scan.pdf");
    expect([...world.refserver.papers.values()].map((p) => p.title)).toContain("Attachment title");
  });

  it("reuses a verified cached PDF on the next run, and --no-cache downloads afresh", async () => {
    world = await makeWorld({ library: { items: 1 } });
    const { parentKey, attachmentKey } = pairs(world)[0]!;
    world.refserver.failKeys([parentKey], 422, { times: 2 });
    expect((await runCli([], world.sandbox)).code).toBe(1);
    expect(world.zotero.downloadsByKey.get(attachmentKey)).toBe(1);
    expect((await runCli([], world.sandbox)).code).toBe(1);
    expect(world.zotero.downloadsByKey.get(attachmentKey)).toBe(1); // served from the cache
    const fresh = await runCli(["--no-cache"], world.sandbox);
    expect(fresh.code, fresh.stderr).toBe(0);
    expect(world.zotero.downloadsByKey.get(attachmentKey)).toBe(2);
    expect(world.refserver.papers.has(parentKey)).toBe(true);
  });

  it("does not page through child notes: they cost no listing request", async () => {
    world = await makeWorld({
      library: { items: 0 },
      build: (lib) => {
        for (let i = 0; i < 99; i++) lib.addNote(lib.addParentWithPdf().parentKey);
      },
    });
    const r = await runCli(["--dry-run", "--json"], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { counts: { import: number } }).counts.import).toBe(99);
    // 297 objects, but only the 99 parents and 99 attachments are listed: one (short) page each.
    expect(world.zotero.listingRequestCount()).toBe(2);
  });

  it("paces by batch_size and delay_seconds (--batch-size, --delay), and prints the summary as JSON with --json", async () => {
    world = await makeWorld({ library: { items: 5 }, refserver: { delayMs: 30 } });
    const r = await runCli(["--batch-size", "2", "--delay", "0.2", "--json"], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as { exitCode: number; imported: number; report: string };
    expect(summary).toMatchObject({ exitCode: 0, imported: 5 });
    expect(world.refserver.peakConcurrentUploads).toBeLessThanOrEqual(2);
    // Three new papers at two a batch: two batches, one pause between them.
    world.library.addParentWithPdf();
    world.library.addParentWithPdf();
    world.library.addParentWithPdf();
    const more = await runCli(["--batch-size", "2", "--delay", "0.2", "--verbose"], world.sandbox);
    expect(more.code, more.stderr).toBe(0);
    expect(more.stderr.match(/pause 200 ms \(delay_seconds between batches\)/g)).toHaveLength(1);
  });
});
