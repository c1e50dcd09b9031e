/**
 * Zotero's edges, end to end: the real `import-from-zotero` process against the fake Zotero
 * (fixtures/fake-zotero.ts) and the fake RefServer on 127.0.0.1.
 *
 * 1. which attachment is uploaded (never-synced, WebDAV, links.attachment, a 404 → the next PDF);
 * 2. the storage host's answers are never Zotero's verdict (403/404/500/reset/short body → retry
 *    with a fresh redirect; one paper's storage refusing for good fails that paper only);
 * 3. listings whose Total-Results lie and that carry no Link header; a listing that breaks
 *    part-way records no sync point;
 * 4. --limit with unsynced PDFs at the head of the library;
 * 5. a WebDAV PDF is not asked for again until its attachment changes;
 * 6. a Backoff on a file answer holds every Zotero request.
 *
 * No sleeps and no races: every assertion is on what the fakes saw. The one bound on time (6) is
 * an ordering bound on one wall clock: a request sent after the importer read a Backoff answer
 * cannot reach the fake sooner than the Backoff asked, however loaded the machine is.
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { afterEach, describe, expect, it } from "vitest";
import { ZoteroWebApi } from "../../src/zotero/web-api.js";
import type { Attachment } from "../../src/zotero/types.js";
import { runCli, waitFor } from "../helpers/cli.js";
import { FakeZotero, makeLibrary, type FakeLibrary, type ZoteroRequestInfo } from "../../fixtures/fake-zotero.js";
import { makePdf, md5 } from "../../fixtures/pdf.js";
import { API_KEY, makeWorld, type World, type WorldOptions } from "../helpers/world.js";

let world: World | undefined;
const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  if (world) {
    await world.close();
    rmSync(world.sandbox.dir, { recursive: true, force: true });
  }
  world = undefined;
  while (closers.length > 0) await closers.pop()!();
});

const LIBRARY_ID = 4242;
const newLibrary = (): FakeLibrary => makeLibrary({ apiKey: API_KEY, libraryId: LIBRARY_ID });

/** makeWorld with a library built by the test and FakeZotero's own options. */
const edgeWorld = (library: FakeLibrary, o: Omit<WorldOptions, "library" | "build"> = {}): Promise<World> => makeWorld({ library, ...o });

interface JournalLine {
  t: string;
  key?: string;
  att?: string;
  status?: string;
  code?: string;
  permanent?: boolean;
  version?: number;
}
function journal(w: World): JournalLine[] {
  if (!existsSync(w.sandbox.checkpoint)) return [];
  return readFileSync(w.sandbox.checkpoint, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l) as JournalLine);
}

/** `/items/KEY/file` requests for one attachment so far. */
const fileRequests = (w: World, attachmentKey: string): ZoteroRequestInfo[] => w.zotero.requestsTo("item/file").filter((r) => r.objectKey === attachmentKey);

/**
 * When each request reached the fake, on `clock`: recorded by a fault rule added first, whose
 * matcher sees every request and never matches (the fake keeps no times of its own).
 */
function recordArrivals(zotero: FakeZotero, clock: () => number): Map<number, number> {
  const arrived = new Map<number, number>();
  const observe = (q: ZoteroRequestInfo): boolean => {
    arrived.set(q.seq, clock());
    return false;
  };
  zotero.addFault({ kind: "delay", ms: 0 }, { match: observe, count: Number.POSITIVE_INFINITY, label: "observer" });
  return arrived;
}

/** A distinct, valid PDF (two attachments of one parent would otherwise get the same bytes). */
const pdf = (title: string, bytes: number): Buffer => makePdf({ title, pages: [title], padToBytes: bytes });

describe("which attachment is uploaded", () => {
  it("without links.attachment: skips a never-uploaded PDF and tries a stored PDF before a WebDAV one, unasked; a 404 moves on to the next PDF in the same run", async () => {
    const lib = newLibrary();
    // 1: first PDF never uploaded (md5 null, no enclosure), second stored.
    const p1 = lib.addParent({ title: "Unsynced first" });
    const p1a = lib.addStoredAttachment(p1.key, { stored: false, body: pdf("p1 never uploaded", 2_000) });
    const p1b = lib.addStoredAttachment(p1.key, { body: pdf("p1 stored", 3_100) });
    // 2: first PDF WebDAV (md5 set, no enclosure, /file 404), second stored.
    const p2 = lib.addParent({ title: "WebDAV first" });
    const p2a = lib.addStoredAttachment(p2.key, { webdav: true, body: pdf("p2 webdav", 2_200) });
    const p2b = lib.addStoredAttachment(p2.key, { body: pdf("p2 stored", 3_300) });
    // 3: two stored PDFs; Zotero answers 404 for the first one's file.
    const p3 = lib.addParent({ title: "First file gone" });
    const p3a = lib.addStoredAttachment(p3.key, { body: pdf("p3 first", 2_400) });
    const p3b = lib.addStoredAttachment(p3.key, { body: pdf("p3 second", 3_500) });
    world = await edgeWorld(lib, { zotero: { bestAttachmentLinks: false } });
    world.zotero.failNext(1, 404, (r) => r.route === "item/file" && r.objectKey === p3a.key, "Not found");

    const r = await runCli(["--verbose"], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/Imported 3, already on the server 0, skipped 0, failed 0/);
    for (const [parent, used] of [[p1, p1b], [p2, p2b], [p3, p3b]] as const) {
      const paper = world.refserver.papers.get(parent.key);
      expect(paper?.md5, parent.data.title).toBe(md5(used.body!));
      expect(paper?.size).toBe(used.body!.length);
    }
    // Never asked: the never-uploaded PDF, and the WebDAV one (a stored PDF comes first).
    expect(fileRequests(world, p1a.key)).toHaveLength(0);
    expect(fileRequests(world, p2a.key)).toHaveLength(0);
    // The 404 was Zotero's "no file" for p3's first PDF: the second was downloaded in the same run.
    expect(fileRequests(world, p3a.key).map((q) => q.status)).toEqual([404]);
    expect(fileRequests(world, p3b.key)).toHaveLength(1);
    expect(journal(world).find((l) => l.key === p3.key && l.status === "done")).toMatchObject({ att: p3b.key });
    expect(world.refserver.duplicateKeys()).toEqual([]);
  });

  it("with links.attachment: uploads the PDF Zotero names as best, not the first one, and still skips a never-uploaded PDF", async () => {
    const lib = newLibrary();
    // Zotero's best: the stored PDF whose url is the parent's url (the second one here).
    const q1 = lib.addParent({ title: "Best is second", extra: { url: "https://example.org/paper" } });
    const q1a = lib.addStoredAttachment(q1.key, { body: pdf("q1 first", 2_000) });
    const q1b = lib.addStoredAttachment(q1.key, { linkMode: "imported_url", body: pdf("q1 best", 3_000) });
    const q2 = lib.addParent({ title: "Unsynced first" });
    const q2a = lib.addStoredAttachment(q2.key, { stored: false, body: pdf("q2 never uploaded", 2_100) });
    const q2b = lib.addStoredAttachment(q2.key, { body: pdf("q2 stored", 3_200) });
    world = await edgeWorld(lib, { zotero: { bestAttachmentLinks: true } });

    const r = await runCli([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(world.refserver.papers.get(q1.key)).toMatchObject({ md5: md5(q1b.body!), size: q1b.body!.length });
    expect(world.refserver.papers.get(q2.key)).toMatchObject({ md5: md5(q2b.body!), size: q2b.body!.length });
    expect(fileRequests(world, q1a.key)).toHaveLength(0);
    expect(fileRequests(world, q2a.key)).toHaveLength(0);
    expect(world.zotero.requestsTo("item/file")).toHaveLength(2);
  });
});

describe("the storage host's answers are not Zotero's verdict", () => {
  const S3_EXPIRED = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";

  it("403 (expired link), 404, 500, a reset and a short body heal with a fresh redirect each: every paper imported, exit 0, no word of the API key", async () => {
    const lib = newLibrary();
    const papers = Array.from({ length: 8 }, () => lib.addParentWithPdf());
    // Ten storage faults in all; retries 12: even one paper meeting every one of them gets through.
    world = await edgeWorld(lib, { zotero: { storage: "separate" }, sandbox: { retries: 12 } });
    const z = world.zotero;
    z.failNext(2, 403, "storage", S3_EXPIRED);
    z.failNext(2, 404, "storage", "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>");
    z.failNext(2, 500, "storage", "<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>");
    z.resetNext(2, "storage");
    z.addFault({ kind: "short-body" }, { match: "storage", count: 2 });

    const r = await runCli(["--verbose"], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(world.refserver.papers.size).toBe(8);
    for (const p of papers) expect(world.refserver.papers.get(p.parentKey)?.md5).toBe(md5(p.body));
    const storage = z.requestsTo("storage");
    expect(storage.filter((q) => q.fault !== undefined)).toHaveLength(10);
    // Each retry asked Zotero for the file again: a fresh redirect (a new signed link) every time.
    const files = z.requestsTo("item/file");
    expect(files.length).toBeGreaterThanOrEqual(papers.length + 10);
    expect(files.length).toBe(storage.length);
    expect(new Set(storage.map((q) => q.path)).size).toBe(storage.length);
    expect(z.storageKeyLeaks).toHaveLength(0);
    // The retries were shown, and none of them blamed the API key.
    expect(r.stderr).toMatch(/storage host answered 403/);
    for (const text of [r.stdout, r.stderr]) {
      expect(text).not.toMatch(/API key/i);
      expect(text).not.toContain(API_KEY);
    }
  });

  it("a storage host that refuses one paper's file every time fails that paper (not skipped, not the run); the next run imports it", async () => {
    const lib = newLibrary();
    const papers = Array.from({ length: 4 }, () => lib.addParentWithPdf());
    const victim = papers[1]!;
    world = await edgeWorld(lib, { zotero: { storage: "separate" }, sandbox: { retries: 3 } });
    const refuse = world.zotero.addFault(
      { kind: "status", status: 403, body: S3_EXPIRED },
      { match: (q) => q.route === "storage" && q.objectKey === victim.attachmentKey, count: Number.POSITIVE_INFINITY, label: "403" },
    );

    const first = await runCli([], world.sandbox);
    expect(first.code, first.stderr).toBe(1);
    expect(first.stdout).toMatch(/Imported 3, already on the server 0, skipped 0, failed 1/);
    expect(world.refserver.papers.size).toBe(3);
    expect(world.refserver.papers.has(victim.parentKey)).toBe(false);
    // Retried (1 + 3 attempts, each with a fresh /file), then failed, retriable next run.
    expect(fileRequests(world, victim.attachmentKey)).toHaveLength(4);
    const failed = journal(world).filter((l) => l.key === victim.parentKey && l.t === "item").at(-1);
    expect(failed).toMatchObject({ status: "failed", code: "ZOTERO_STORAGE", permanent: false });
    for (const text of [first.stdout, first.stderr]) {
      expect(text).not.toMatch(/API key/i);
      expect(text).not.toContain(API_KEY);
    }

    world.zotero.removeFault(refuse);
    const second = await runCli([], world.sandbox);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/Imported 1,/);
    expect(world.refserver.papers.get(victim.parentKey)?.md5).toBe(md5(victim.body));
    expect(world.refserver.duplicateKeys()).toEqual([]);
  });
});

describe("listings", () => {
  it("Total-Results that lie and no Link header: pages until a short page, imports all 100, warns once per listing; the next run imports nothing", async () => {
    const lib = newLibrary();
    // 28 standalone notes first: /items/top holds 128 objects but says 100, so a client that
    // believed Total-Results (or stopped without a Link) would lose the last 28 papers.
    for (let i = 0; i < 28; i++) lib.addNote(undefined, `<p>Loose note ${i}</p>`);
    const papers = Array.from({ length: 100 }, () => lib.addParentWithPdf());
    world = await edgeWorld(lib, { zotero: { totalResults: (n) => n - 28, linkHeader: false } });

    const r = await runCli([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(world.refserver.papers.size).toBe(100);
    for (const p of papers) expect(world.refserver.papers.has(p.parentKey)).toBe(true);
    const warnings = r.stderr.split("\n").filter((l) => /Total-Results/.test(l));
    expect(warnings.filter((l) => l.includes("/items/top"))).toEqual([expect.stringMatching(/warning: Zotero listing \/items\/top: Total-Results said 100, 128 arrived/)]);
    expect(warnings.filter((l) => !l.includes("/items/top"))).toEqual([expect.stringMatching(/warning: Zotero listing \/items: Total-Results said 72, 100 arrived/)]);
    // Paged past the page Total-Results said was the last one.
    expect(world.zotero.requestsTo("items/top").map((q) => q.query.start ?? "0")).toEqual(["0", "100"]);

    const uploads = world.refserver.uploads.length;
    const again = await runCli([], world.sandbox);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/Imported 0,/);
    expect(world.refserver.uploads.length).toBe(uploads);
    expect(world.refserver.papers.size).toBe(100);
  });

  it("a listing that breaks part-way exits non-zero and records no sync point: the healed run lists from where the last complete run was", async () => {
    const lib = newLibrary();
    // Notes make /items/top two pages long without costing downloads.
    const papers = Array.from({ length: 5 }, () => lib.addParentWithPdf());
    for (let i = 0; i < 100; i++) lib.addNote(undefined);
    world = await edgeWorld(lib, { sandbox: { retries: 2 } });
    const z = world.zotero;
    const secondPage = (q: ZoteroRequestInfo): boolean => q.route === "items/top" && q.query.start === "100";
    let fault = z.failNext(Number.POSITIVE_INFINITY, 500, secondPage, "Internal Server Error");

    const broken = await runCli([], world.sandbox);
    expect(broken.code, broken.stderr).toBe(75);
    expect(broken.stderr).toMatch(/server error 500/);
    expect(z.log.filter(secondPage)).toHaveLength(3); // 1 + retries
    expect(world.refserver.uploads).toHaveLength(0);
    expect(journal(world).filter((l) => l.t === "sync")).toEqual([]);

    z.removeFault(fault);
    z.resetObservations();
    const healed = await runCli([], world.sandbox);
    expect(healed.code, healed.stderr).toBe(0);
    const listings = [...z.requestsTo("items/top"), ...z.requestsTo("items")];
    expect(listings.length).toBeGreaterThan(0);
    for (const q of listings) expect(q.query.since, `${q.path}?${q.rawQuery}`).toBeUndefined();
    expect(world.refserver.papers.size).toBe(5);
    for (const p of papers) expect(world.refserver.papers.has(p.parentKey)).toBe(true);
    const syncs = journal(world).filter((l) => l.t === "sync");
    expect(syncs).toHaveLength(1);
    const v1 = syncs[0]!.version!;

    // The same after a complete run: a broken incremental listing leaves the sync point where it was.
    const later = Array.from({ length: 3 }, () => lib.addParentWithPdf());
    for (let i = 0; i < 100; i++) lib.addNote(undefined);
    fault = z.failNext(Number.POSITIVE_INFINITY, 500, secondPage, "Internal Server Error");
    const broken2 = await runCli([], world.sandbox);
    expect(broken2.code, broken2.stderr).toBe(75);
    expect(journal(world).filter((l) => l.t === "sync")).toHaveLength(1);
    z.removeFault(fault);
    z.resetObservations();
    const healed2 = await runCli([], world.sandbox);
    expect(healed2.code, healed2.stderr).toBe(0);
    for (const q of z.requestsTo("items/top")) expect(q.query.since).toBe(String(v1));
    expect(world.refserver.papers.size).toBe(8);
    for (const p of later) expect(world.refserver.papers.has(p.parentKey)).toBe(true);
  });
});

describe("--limit and PDFs Zotero does not hold", () => {
  it("unsynced and WebDAV items at the head of the library: three runs of --limit 5 import 5, 5, 2; the WebDAV file is asked for once, the unsynced ones never", async () => {
    const lib = newLibrary();
    const unsynced = Array.from({ length: 3 }, (_, i) => lib.addStoredAttachment(lib.addParent({ title: `Never synced ${i}` }).key, { stored: false }));
    const webdavParent = lib.addParent({ title: "WebDAV only" });
    const webdav = lib.addStoredAttachment(webdavParent.key, { webdav: true });
    const good = Array.from({ length: 12 }, () => lib.addParentWithPdf());
    world = await edgeWorld(lib);

    const sizes: number[] = [];
    for (const run of [1, 2, 3]) {
      const r = await runCli(["--limit", "5"], world.sandbox);
      expect(r.code, `run ${run}: ${r.stderr}`).toBe(0);
      sizes.push(world.refserver.papers.size);
      expect(r.stdout, `run ${run}`).toMatch(new RegExp(`Imported ${run === 3 ? 2 : 5},`));
    }
    expect(sizes).toEqual([5, 10, 12]);
    for (const g of good) expect(world.refserver.papers.get(g.parentKey)?.md5).toBe(md5(g.body));
    expect(world.refserver.papers.has(webdavParent.key)).toBe(false);
    expect(fileRequests(world, webdav.key)).toHaveLength(1);
    for (const u of unsynced) expect(fileRequests(world, u.key)).toHaveLength(0);
    expect(world.refserver.duplicateKeys()).toEqual([]);
  });

  it("a WebDAV PDF skipped once is not asked for again (even with --since 0) until its attachment changes; then it is imported", async () => {
    const lib = newLibrary();
    lib.addParentWithPdf();
    const parent = lib.addParent({ title: "Synced by WebDAV" });
    const att = lib.addStoredAttachment(parent.key, { webdav: true });
    lib.addParentWithPdf();
    world = await edgeWorld(lib);

    const first = await runCli([], world.sandbox);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/skipped .*Synced by WebDAV.*PDF not synced to Zotero storage/);
    expect(fileRequests(world, att.key)).toHaveLength(1);

    const full = await runCli(["--since", "0"], world.sandbox);
    expect(full.code, full.stderr).toBe(0);
    expect(full.stdout).toMatch(/PDF not synced to Zotero storage: 1/);
    expect(fileRequests(world, att.key)).toHaveLength(1);

    // The user syncs the file to Zotero storage: the attachment's version moves on.
    const body = pdf("Now in Zotero storage", 4_000);
    const before = lib.getItem(att.key)!.version;
    lib.setFile(att.key, body);
    expect(lib.getItem(att.key)!.version).toBeGreaterThan(before);
    const after = await runCli([], world.sandbox);
    expect(after.code, after.stderr).toBe(0);
    expect(after.stdout).toMatch(/Imported 1,/);
    expect(world.refserver.papers.get(parent.key)).toMatchObject({ md5: md5(body), size: body.length });
    expect(fileRequests(world, att.key)).toHaveLength(2);
  });
});

describe("Backoff on file downloads", () => {
  it("a Backoff: 2 on a storage answer or a /file answer: no Zotero request starts within 2 s after it", async () => {
    const lib = newLibrary();
    const papers = Array.from({ length: 4 }, () => lib.addParentWithPdf());
    world = await edgeWorld(lib, { zotero: { storage: "separate" } });
    const z = world.zotero;
    // When each request reached the fake, on this process's clock.
    const arrived = recordArrivals(z, Date.now);
    z.backoffOn(1, 2, (q) => q.route === "storage" && q.objectKey === papers[0]!.attachmentKey);
    z.backoffOn(1, 2, (q) => q.route === "item/file" && q.objectKey === papers[2]!.attachmentKey);

    // One paper at a time (batch of 1, a pause between batches): a request after a Backoff answer
    // was sent after the importer read that answer, so the fake's clock can tell whether it waited.
    const r = await runCli(["--batch-size", "1", "--delay", "0.01"], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(world.refserver.papers.size).toBe(4);
    expect(r.stderr).toMatch(/Zotero's storage host asked to back off: waiting 2 s/);
    expect(r.stderr).toMatch(/Zotero asked to back off: waiting 2 s/);
    const backoffs = z.log.filter((q) => q.fault === "backoff");
    expect(backoffs.map((q) => q.route)).toEqual(["storage", "item/file"]);
    for (const b of backoffs) {
      const after = z.log.filter((q) => q.seq > b.seq);
      expect(after.length).toBeGreaterThan(0);
      for (const q of after) expect(arrived.get(q.seq)! - arrived.get(b.seq)!, `${q.route} ${q.path} after the Backoff on ${b.route}`).toBeGreaterThanOrEqual(2_000);
    }
  });

  it("unit: the client's gate holds every request started after a storage Backoff (files and listings at once), on an injected clock", async () => {
    const lib = newLibrary();
    const papers = Array.from({ length: 3 }, () => lib.addParentWithPdf());
    const zotero = new FakeZotero({ library: lib, storage: "separate" });
    const { url, close } = await zotero.start();
    closers.push(close);
    // A virtual clock: it moves only when a sleep the client asked for is let go by the test.
    let now = 1_000_000;
    let holding = true;
    const held: { ms: number; release: () => void }[] = [];
    const arrived = recordArrivals(zotero, () => now);
    zotero.backoffOn(1, 2, (q) => q.route === "storage" && q.objectKey === papers[0]!.attachmentKey);
    const waits: { reason: string; delayMs: number }[] = [];
    const api = new ZoteroWebApi({
      baseUrl: url,
      library: { type: "user", id: String(LIBRARY_ID) },
      apiKey: API_KEY,
      retry: { retries: 0, minDelayMs: 0, maxDelayMs: 0 },
      clock: () => now,
      sleep: (ms) =>
        new Promise<void>((resolve) => {
          const until = now + ms;
          const release = (): void => {
            now = Math.max(now, until);
            resolve();
          };
          if (holding) held.push({ ms, release });
          else release();
        }),
      onWait: (w) => waits.push(w),
    });
    const attachment = (key: string): Attachment => ({ key, version: 1, parentKey: null, title: "", linkMode: "imported_file", contentType: "application/pdf", filename: null, md5: null, size: null, hasFile: true });
    const drain = async (body: NodeJS.ReadableStream): Promise<number> => {
      let n = 0;
      for await (const chunk of body) n += (chunk as Buffer).length;
      return n;
    };

    const first = await api.openFile(attachment(papers[0]!.attachmentKey));
    expect(await drain(first.body)).toBe(papers[0]!.body.length);
    expect(waits).toEqual([{ reason: "Zotero's storage host asked to back off", delayMs: 2_000 }]);
    const backoff = zotero.log.find((q) => q.fault === "backoff")!;
    const seen = zotero.log.length;
    const started = api.requests;

    // Two files and a listing (two requests) at once: all four wait at the gate, none has started.
    const work = Promise.all([api.openFile(attachment(papers[1]!.attachmentKey)), api.openFile(attachment(papers[2]!.attachmentKey)), api.list({})]);
    await waitFor(() => held.length === 4, 5_000, "four requests held by the Backoff");
    expect(held.map((h) => h.ms)).toEqual([2_000, 2_000, 2_000, 2_000]);
    expect(api.requests).toBe(started);
    expect(zotero.log).toHaveLength(seen);

    holding = false;
    for (const h of held.splice(0)) h.release();
    const [b, c, listing] = await work;
    expect(await drain(b.body)).toBe(papers[1]!.body.length);
    expect(await drain(c.body)).toBe(papers[2]!.body.length);
    expect(listing.items).toHaveLength(3);
    const later = zotero.log.slice(seen);
    expect(later.map((q) => q.route).sort()).toEqual(["item/file", "item/file", "items", "items/top", "storage", "storage"]);
    for (const q of later) expect(arrived.get(q.seq)! - arrived.get(backoff.seq)!, `${q.route} ${q.path}`).toBeGreaterThanOrEqual(2_000);
  });
});
