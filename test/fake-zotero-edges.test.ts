/**
 * The fake Zotero at zotero.org's edges, checked with plain fetch / undici.request
 * (no importer code): links.attachment (Zotero's best attachment), never-synced and
 * WebDAV attachments, lying Total-Results, a missing Link header, and storage faults
 * (S3 errors, resets, short bodies, Backoff) that heal after `count`.
 */
import { afterEach, describe, expect, it } from "vitest";
import { request } from "undici";
import { md5 } from "../fixtures/pdf.js";
import { FakeZotero, makeLibrary, type FakeLibrary, type FakeZoteroOptions, type ZoteroItem, type ZoteroRoute } from "../fixtures/fake-zotero.js";

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (closers.length) await closers.pop()?.();
});

async function startZotero(lib: FakeLibrary, opts: Partial<FakeZoteroOptions> = {}) {
  const zot = new FakeZotero({ library: lib, ...opts });
  const started = await zot.start();
  closers.push(started.close);
  return { zot, base: zot.libraryUrl, headers: { "Zotero-API-Key": lib.apiKey, "Zotero-API-Version": "3" } };
}

async function getItem(base: string, headers: Record<string, string>, key: string): Promise<ZoteroItem> {
  const r = await fetch(`${base}/items/${key}`, { headers });
  expect(r.status).toBe(200);
  return (await r.json()) as ZoteroItem;
}

/** The storage URL a /file request redirects to (a fresh token each time). */
async function storageUrl(base: string, headers: Record<string, string>, key: string): Promise<string> {
  const r = await fetch(`${base}/items/${key}/file`, { headers, redirect: "manual" });
  expect(r.status).toBe(302);
  const loc = r.headers.get("location");
  expect(loc).toMatch(/\/_storage\/[0-9a-f]+\//);
  return loc ?? "";
}

/** Read a body chunk by chunk: how many bytes arrived and whether the stream broke. */
async function readAll(url: string): Promise<{ status: number; contentLength: number; received: Buffer; error: unknown }> {
  const { statusCode, headers, body } = await request(url);
  const chunks: Buffer[] = [];
  let error: unknown;
  try {
    for await (const chunk of body) chunks.push(Buffer.from(chunk as Uint8Array));
  } catch (err) {
    error = err;
  }
  return { status: statusCode, contentLength: Number(headers["content-length"]), received: Buffer.concat(chunks), error };
}

describe("links.attachment (Zotero's best attachment)", () => {
  it("picks the stored PDF when the first PDF was never synced, and HTML loses to any stored PDF", async () => {
    const lib = makeLibrary({ seed: 11 });
    const parent = lib.addParent({ title: "Parent" });
    const unsynced = lib.addStoredAttachment(parent.key, { stored: false });
    const webdav = lib.addStoredAttachment(parent.key, { webdav: true });
    lib.addLinkedFile(parent.key);
    lib.addNonPdfAttachment(parent.key);
    const stored = lib.addStoredAttachment(parent.key, { padToBytes: 5_000 });
    lib.addNote(parent.key);
    const { base, headers } = await startZotero(lib);

    const it1 = await getItem(base, headers, parent.key);
    expect(it1.links?.attachment).toEqual({
      href: `${base}/items/${stored.key}`,
      type: "application/json",
      attachmentType: "application/pdf",
      attachmentSize: 5_000,
    });
    expect(it1.links?.attachment?.href).not.toContain(unsynced.key);
    expect(it1.links?.attachment?.href).not.toContain(webdav.key);
    expect(it1.meta?.numChildren).toBe(6);

    // Same in listings.
    const top = await fetch(`${base}/items/top`, { headers });
    const items = (await top.json()) as ZoteroItem[];
    expect(items.find((i) => i.key === parent.key)?.links?.attachment?.href).toBe(`${base}/items/${stored.key}`);
    // Attachments and notes never carry links.attachment.
    const children = (await (await fetch(`${base}/items/${parent.key}/children`, { headers })).json()) as ZoteroItem[];
    expect(children).toHaveLength(6);
    expect(children.every((c) => c.links?.attachment === undefined)).toBe(true);
  });

  it("falls back to EPUB, then HTML; prefers the parent's URL, then the oldest dateAdded, then library order", async () => {
    const lib = makeLibrary({ seed: 12 });
    const htmlOnly = lib.addParent();
    const html = lib.addNonPdfAttachment(htmlOnly.key);
    const epubParent = lib.addParent();
    lib.addNonPdfAttachment(epubParent.key);
    const epub = lib.addStoredAttachment(epubParent.key, { contentType: "application/epub+zip", body: Buffer.from("PK epub") });

    const urlParent = lib.addParent({ extra: { url: "https://example.org/paper" } });
    lib.addStoredAttachment(urlParent.key, { linkMode: "imported_file" });
    const sameUrl = lib.addStoredAttachment(urlParent.key, { linkMode: "imported_url" }); // url https://example.org/paper

    const dated = lib.addParent();
    lib.addStoredAttachment(dated.key);
    const older = lib.addStoredAttachment(dated.key, { extra: { dateAdded: "2001-01-01T00:00:00Z" } });

    const tie = lib.addParent();
    const firstInOrder = lib.addStoredAttachment(tie.key, { extra: { dateAdded: "2005-05-05T00:00:00Z" } });
    lib.addStoredAttachment(tie.key, { extra: { dateAdded: "2005-05-05T00:00:00Z" } });

    const { base, headers } = await startZotero(lib);
    const best = async (k: string) => (await getItem(base, headers, k)).links?.attachment;
    expect(await best(htmlOnly.key)).toMatchObject({ href: `${base}/items/${html.key}`, attachmentType: "text/html" });
    expect(await best(epubParent.key)).toMatchObject({
      href: `${base}/items/${epub.key}`,
      attachmentType: "application/epub+zip",
      attachmentSize: 7,
    });
    expect((await best(urlParent.key))?.href).toBe(`${base}/items/${sameUrl.key}`);
    expect((await best(dated.key))?.href).toBe(`${base}/items/${older.key}`);
    expect((await best(tie.key))?.href).toBe(`${base}/items/${firstInOrder.key}`);
  });

  it("is absent when no child has a file in Zotero storage, and when turned off", async () => {
    const lib = makeLibrary({ seed: 13 });
    const none = lib.addParent();
    lib.addStoredAttachment(none.key, { stored: false });
    lib.addStoredAttachment(none.key, { webdav: true });
    lib.addLinkedFile(none.key);
    lib.addLinkedUrl(none.key);
    lib.addNote(none.key);
    const bare = lib.addItemWithoutAttachment();
    const trashedOnly = lib.addParent();
    const trashedAtt = lib.addStoredAttachment(trashedOnly.key);
    lib.trash(trashedAtt.key);
    const withPdf = lib.addParentWithPdf();
    const standalone = lib.addStandalonePdf();

    const { zot, base, headers } = await startZotero(lib, { bestAttachmentLinks: false });
    expect((await getItem(base, headers, withPdf.parentKey)).links?.attachment).toBeUndefined();

    zot.bestAttachmentLinks = true;
    expect((await getItem(base, headers, none.key)).links?.attachment).toBeUndefined();
    expect((await getItem(base, headers, bare.key)).links?.attachment).toBeUndefined();
    expect((await getItem(base, headers, trashedOnly.key)).links?.attachment).toBeUndefined();
    expect((await getItem(base, headers, standalone.key)).links?.attachment).toBeUndefined();
    expect((await getItem(base, headers, withPdf.parentKey)).links?.attachment?.href).toBe(`${base}/items/${withPdf.attachmentKey}`);
  });
});

describe("never-synced and WebDAV attachments", () => {
  it("stored: false looks never uploaded; webdav: true has md5/mtime but nothing in Zotero storage", async () => {
    const lib = makeLibrary({ seed: 14 });
    const parent = lib.addParent();
    const unsynced = lib.addStoredAttachment(parent.key, { stored: false });
    const webdav = lib.addStoredAttachment(parent.key, { webdav: true });
    const stored = lib.addStoredAttachment(parent.key);
    expect(unsynced.body).toBeUndefined();
    expect(unsynced.md5).toBeUndefined();
    expect(webdav.body).toBeUndefined();
    expect(webdav.md5).toMatch(/^[0-9a-f]{32}$/);
    expect(lib.files.has(unsynced.key) || lib.files.has(webdav.key)).toBe(false);
    const { base, headers } = await startZotero(lib);

    const u = await getItem(base, headers, unsynced.key);
    expect(u.data.md5).toBeNull();
    expect(u.data.mtime).toBeNull();
    expect(u.links?.enclosure).toBeUndefined();
    expect((await fetch(`${base}/items/${unsynced.key}/file`, { headers, redirect: "manual" })).status).toBe(404);

    const w = await getItem(base, headers, webdav.key);
    expect(w.data.md5).toBe(webdav.md5);
    expect(typeof w.data.mtime).toBe("number");
    expect(w.links?.enclosure).toBeUndefined();
    expect((await fetch(`${base}/items/${webdav.key}/file`, { headers, redirect: "manual" })).status).toBe(404);
    expect((await fetch(`${base}/items/${webdav.key}/file/view`, { headers, redirect: "manual" })).status).toBe(404);

    const s = await getItem(base, headers, stored.key);
    expect(s.data.md5).toBe(stored.md5);
    expect(s.links?.enclosure?.length).toBe(stored.body?.length);
  });
});

describe("counts that lie", () => {
  it("Total-Results lies and the Link header goes missing, then both heal", async () => {
    const lib = makeLibrary({ items: 30, seed: 15 });
    const routes: ZoteroRoute[] = [];
    const { zot, base, headers } = await startZotero(lib, {
      totalResults: (n, route) => {
        routes.push(route);
        return n - 28;
      },
      linkHeader: false,
    });

    const r = await fetch(`${base}/items/top?limit=10`, { headers });
    expect(r.status).toBe(200);
    expect(r.headers.get("total-results")).toBe("2");
    expect(r.headers.has("link")).toBe(false);
    expect((await r.json()) as unknown[]).toHaveLength(10); // pages still follow the real count
    expect(routes).toEqual(["items/top"]);

    const all = await fetch(`${base}/items?limit=100`, { headers });
    expect(all.headers.get("total-results")).toBe("32");
    expect(all.headers.has("link")).toBe(false);
    expect((await all.json()) as unknown[]).toHaveLength(60);

    zot.totalResults = undefined;
    zot.linkHeader = true;
    const healed = await fetch(`${base}/items/top?limit=10`, { headers });
    expect(healed.headers.get("total-results")).toBe("30");
    expect(healed.headers.get("link")).toContain('rel="next"');
  });
});

describe("storage faults", () => {
  const s3Expired = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";

  async function setup(storage: "same" | "separate") {
    const lib = makeLibrary({ items: 2, seed: 16, padToBytes: 20_000 });
    const pair = lib.pdfPairs()[0];
    if (!pair) throw new Error("no pdf");
    const z = await startZotero(lib, { storage });
    return { ...z, key: pair.attachment.key, body: pair.body };
  }

  for (const storage of ["same", "separate"] as const) {
    it(`403 (S3 expired), 404 and 500 hit storage only and heal after count (${storage} origin)`, async () => {
      const { zot, base, headers, key, body } = await setup(storage);
      for (const [status, text] of [
        [403, s3Expired],
        [404, "<Error><Code>NoSuchKey</Code></Error>"],
        [500, "Internal Server Error"],
      ] as const) {
        zot.failNext(2, status, "storage", text);
        for (let i = 0; i < 2; i++) {
          // The API (listing, item, /file redirect) is untouched meanwhile.
          expect((await fetch(`${base}/items?limit=1`, { headers })).status).toBe(200);
          const loc = await storageUrl(base, headers, key);
          const r = await fetch(loc);
          expect(r.status).toBe(status);
          expect(await r.text()).toBe(text);
          if (text.startsWith("<")) expect(r.headers.get("content-type")).toBe("application/xml");
        }
        const ok = await fetch(await storageUrl(base, headers, key));
        expect(ok.status).toBe(200);
        expect(md5(Buffer.from(await ok.arrayBuffer()))).toBe(md5(body));
      }
      expect(zot.requestsTo("storage").filter((q) => q.fault !== undefined)).toHaveLength(6);
      expect(zot.requestsTo("item/file").every((q) => q.fault === undefined)).toBe(true);
    });
  }

  it("a connection reset on storage heals after count", async () => {
    const { zot, base, headers, key, body } = await setup("separate");
    zot.resetNext(2, "storage");
    for (let i = 0; i < 2; i++) {
      const loc = await storageUrl(base, headers, key);
      await expect(fetch(loc).then((r) => r.arrayBuffer())).rejects.toThrow();
    }
    const ok = await fetch(await storageUrl(base, headers, key));
    expect(ok.status).toBe(200);
    expect(Buffer.from(await ok.arrayBuffer()).equals(body)).toBe(true);
  });

  it("short-body announces the full Content-Length, sends half, then resets; heals after count", async () => {
    const { zot, base, headers, key, body } = await setup("same");
    zot.addFault({ kind: "short-body" }, { match: "storage", count: 1 });
    // The API is not shortened (the rule matches storage only).
    const list = await readAll(`${base}/items?limit=5&key=${headers["Zotero-API-Key"]}`);
    expect(list.error).toBeUndefined();
    expect(list.received.length).toBe(list.contentLength);

    const short = await readAll(await storageUrl(base, headers, key));
    expect(short.status).toBe(200);
    expect(short.contentLength).toBe(body.length);
    expect(short.received.length).toBe(Math.floor(body.length / 2));
    expect(short.received.equals(body.subarray(0, Math.floor(body.length / 2)))).toBe(true);
    expect(short.error).toBeDefined();
    expect(zot.requestsTo("storage").at(-1)?.fault).toBe("short-body");

    const healed = await readAll(await storageUrl(base, headers, key));
    expect(healed.error).toBeUndefined();
    expect(healed.received.equals(body)).toBe(true);
  });

  it("Backoff rides on /file redirects and storage answers when matched", async () => {
    const { zot, base, headers, key } = await setup("separate");
    zot.backoffOn(1, 7, "item/file");
    zot.backoffOn(1, 9, "storage");
    const redirect = await fetch(`${base}/items/${key}/file`, { headers, redirect: "manual" });
    expect(redirect.status).toBe(302);
    expect(redirect.headers.get("backoff")).toBe("7");
    const r = await fetch(redirect.headers.get("location") ?? "");
    expect(r.status).toBe(200);
    expect(r.headers.get("backoff")).toBe("9");
    await r.arrayBuffer();
    const again = await fetch(await storageUrl(base, headers, key));
    expect(again.headers.get("backoff")).toBeNull();
    await again.arrayBuffer();
    // Backoff also rides on a storage error answer.
    zot.backoffOn(1, 3, "storage");
    zot.failNext(1, 403, "storage", s3Expired);
    const denied = await fetch(await storageUrl(base, headers, key));
    expect(denied.status).toBe(403);
    expect(denied.headers.get("backoff")).toBe("3");
    await denied.text();
  });
});
