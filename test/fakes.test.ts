import { afterEach, describe, expect, it } from "vitest";
import { checkPdf, makePdf, md5 } from "../fixtures/pdf.js";
import { FakeZotero, makeLibrary, ZOTERO_KEY_RE, type ZoteroItem, type ZoteroCollection } from "../fixtures/fake-zotero.js";
import { FakeRefServer, loginToRefServer } from "./helpers/fake-refserver.js";

const closers: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (closers.length) await closers.pop()?.();
});

async function startZotero(lib = makeLibrary({ items: 3 }), opts: Partial<ConstructorParameters<typeof FakeZotero>[0]> = {}) {
  const zot = new FakeZotero({ library: lib, ...opts });
  const started = await zot.start();
  closers.push(started.close);
  return { zot, lib, base: zot.libraryUrl, headers: { "Zotero-API-Key": lib.apiKey, "Zotero-API-Version": "3" } };
}

async function startRef(opts: ConstructorParameters<typeof FakeRefServer>[0] = {}) {
  const rs = new FakeRefServer({ username: "admin", password: "pw", ...opts });
  const started = await rs.start();
  closers.push(started.close);
  return { rs, url: started.url };
}

function parseLink(header: string | null): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of (header ?? "").split(",")) {
    const m = /<([^>]+)>;\s*rel="([^"]+)"/.exec(part.trim());
    if (m?.[1] && m[2]) out[m[2]] = m[1];
  }
  return out;
}

function uploadForm(fields: Record<string, string>, file?: { name: string; body: Buffer }): FormData {
  const fd = new FormData();
  if (file) fd.append("file", new Blob([file.body], { type: "application/pdf" }), file.name);
  for (const [k, v] of Object.entries(fields)) fd.append(k, v);
  return fd;
}

describe("makePdf", () => {
  it("produces a valid, deterministic PDF with correct xref offsets", () => {
    const a = makePdf({ title: "Graph Methods (2nd ed.) – Ünïcode", pages: ["page one\nline two", "page two"] });
    const b = makePdf({ title: "Graph Methods (2nd ed.) – Ünïcode", pages: ["page one\nline two", "page two"] });
    expect(a.subarray(0, 8).toString("latin1")).toBe("%PDF-1.4");
    expect(a.equals(b)).toBe(true);
    const check = checkPdf(a);
    expect(check.problems).toEqual([]);
    expect(check.objectCount).toBe(8);
    expect(a.toString("latin1")).toContain("/BaseFont /Helvetica");
    expect(md5(a)).toMatch(/^[0-9a-f]{32}$/);
    expect(makePdf({ title: "other" }).equals(a)).toBe(false);
  });

  it("pads to an exact size and stays valid", () => {
    for (const size of [2_000, 9_999, 10_000, 123_457, 1_048_576]) {
      const pdf = makePdf({ title: `padded ${size}`, padToBytes: size });
      expect(pdf.length).toBe(size);
      expect(checkPdf(pdf).problems).toEqual([]);
    }
  });
});

describe("FakeZotero", () => {
  it("paginates 250 items with Total-Results and absolute Link headers", async () => {
    const { zot, lib, base, headers } = await startZotero(makeLibrary({ items: 250, seed: 7 }));
    expect(lib.items).toHaveLength(500);
    expect(lib.items.every((i) => ZOTERO_KEY_RE.test(i.key))).toBe(true);

    const first = await fetch(`${base}/items/top?limit=100&format=json`, { headers });
    expect(first.status).toBe(200);
    expect(first.headers.get("total-results")).toBe("250");
    expect(first.headers.get("last-modified-version")).toBe(String(lib.version));
    expect(first.headers.get("zotero-api-version")).toBe("3");
    const links = parseLink(first.headers.get("link"));
    expect(links.next).toBe(`${base}/items/top?limit=100&format=json&start=100`);
    expect(new URL(links.last ?? "").searchParams.get("start")).toBe("200");
    expect(links.prev).toBeUndefined();

    const keys: string[] = [];
    let next: string | undefined = `${base}/items/top?limit=100`;
    let pages = 0;
    while (next) {
      const r = await fetch(next, { headers });
      const page = (await r.json()) as ZoteroItem[];
      keys.push(...page.map((i) => i.key));
      const l = parseLink(r.headers.get("link"));
      if (pages > 0) expect(l.first).toBeDefined();
      next = l.next;
      pages++;
    }
    expect(pages).toBe(3);
    expect(new Set(keys).size).toBe(250);

    // default limit 25, max 100
    const def = await fetch(`${base}/items`, { headers });
    expect(((await def.json()) as unknown[]).length).toBe(25);
    expect(def.headers.get("total-results")).toBe("500");
    const big = await fetch(`${base}/items?limit=500`, { headers });
    expect(((await big.json()) as unknown[]).length).toBe(100);

    const att = await fetch(`${base}/items?itemType=attachment&limit=1`, { headers });
    expect(att.headers.get("total-results")).toBe("250");
    const notAtt = await fetch(`${base}/items?itemType=-attachment&limit=1`, { headers });
    expect(notAtt.headers.get("total-results")).toBe("250");
    expect(zot.listingRequestCount()).toBe(8);
    expect(zot.counters["items/top"]).toBe(4);
  });

  it("filters by since, itemType ||, itemKey, tag, children and collections", async () => {
    const lib = makeLibrary({ items: 2 });
    const root = lib.addCollection("Root");
    const sub = lib.addCollection("Sub", root.key);
    const p = lib.addParentWithPdf({ tags: ["important"], collections: [sub.key] });
    lib.addNote(p.parentKey);
    lib.addLinkedFile(p.parentKey);
    lib.addLinkedUrl(p.parentKey);
    lib.addNonPdfAttachment(p.parentKey);
    const standalone = lib.addStandalonePdf();
    const bare = lib.addItemWithoutAttachment({ title: "No attachment" });
    const { base, headers } = await startZotero(lib);
    const get = async <T>(path: string): Promise<{ body: T; total: string | null }> => {
      const r = await fetch(`${base}${path}`, { headers });
      expect(r.status).toBe(200);
      return { body: (await r.json()) as T, total: r.headers.get("total-results") };
    };
    expect((await get<ZoteroItem[]>(`/items/${p.parentKey}/children`)).body).toHaveLength(5);
    expect((await get<ZoteroItem[]>(`/items?itemType=${encodeURIComponent("note || attachment")}`)).total).toBe("8");
    expect((await get<ZoteroItem[]>(`/items/top`)).total).toBe("5");
    expect((await get<ZoteroItem[]>(`/items?since=${bare.version - 1}`)).body.map((i) => i.key)).toEqual([bare.key]);
    expect((await get<ZoteroItem[]>(`/items?itemKey=${standalone.key},${bare.key}`)).total).toBe("2");
    expect((await get<ZoteroItem[]>(`/items?tag=important`)).body.map((i) => i.key)).toEqual([p.parentKey]);
    const colls = (await get<ZoteroCollection[]>(`/collections`)).body;
    expect(colls.find((c) => c.key === sub.key)?.data.parentCollection).toBe(root.key);
    expect((await get<ZoteroItem[]>(`/collections/${sub.key}/items/top`)).body.map((i) => i.key)).toEqual([p.parentKey]);
    const versions = await get<Record<string, number>>(`/items?format=versions`);
    expect(Object.keys(versions.body)).toHaveLength(lib.items.length);
  });

  it("a listing sees every change made between its requests (pages are served from a cache kept per library version)", async () => {
    const lib = makeLibrary({ items: 3 });
    const { base, headers } = await startZotero(lib);
    const get = async (path: string): Promise<{ keys: string[]; titles: string[]; children: Array<number | undefined>; total: string | null }> => {
      const r = await fetch(`${base}${path}`, { headers });
      expect(r.status).toBe(200);
      const body = (await r.json()) as ZoteroItem[];
      return { keys: body.map((i) => i.key), titles: body.map((i) => String(i.data.title)), children: body.map((i) => i.meta?.numChildren), total: r.headers.get("total-results") };
    };
    const before = await get("/items/top?limit=2&start=0");
    expect(before.total).toBe("3");
    const first = lib.items.find((i) => i.key === before.keys[0])!;
    // Each kind of change between two pages of the same query: edit, new child, new item, trash.
    lib.update(first.key, { title: "Edited between pages" });
    lib.addNote(first.key);
    const added = lib.addItemWithoutAttachment({ title: "Added between pages" });
    const again = await get("/items/top?limit=2&start=0&sort=version");
    expect(again.total).toBe("4");
    const all = await get("/items/top?limit=10&start=0");
    expect(all.keys).toContain(added.key);
    expect(all.titles).toContain("Edited between pages");
    expect(all.children[all.keys.indexOf(first.key)]).toBe((before.children[0] ?? 0) + 1);
    lib.trash(added.key);
    expect((await get("/items/top?limit=10&start=0")).keys).not.toContain(added.key);
    expect((await get("/items/top?limit=10&start=0&includeTrashed=1")).keys).toContain(added.key);
  });

  it("redirects /file to a key-less storage route serving the right bytes; 404 without a stored file", async () => {
    const lib = makeLibrary({ items: 2, padToBytes: 50_000 });
    const linked = lib.addLinkedFile(lib.items[0]?.key);
    const { zot, base, headers } = await startZotero(lib);
    const att = lib.items.find((i) => i.data.itemType === "attachment" && i.data.linkMode === "imported_file");
    if (!att) throw new Error("no attachment");

    const redirect = await fetch(`${base}/items/${att.key}/file`, { headers, redirect: "manual" });
    expect(redirect.status).toBe(302);
    const location = redirect.headers.get("location") ?? "";
    expect(location).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/_storage\/[0-9a-f]+\//);
    const file = await fetch(location);
    const body = Buffer.from(await file.arrayBuffer());
    expect(body.length).toBe(50_000);
    expect(md5(body)).toBe(att.data.md5);
    expect(checkPdf(body).ok).toBe(true);
    expect(zot.storageKeyLeaks).toHaveLength(0);

    // A naive client that follows the redirect keeps its custom header: the fake records the leak.
    await (await fetch(`${base}/items/${att.key}/file`, { headers })).arrayBuffer();
    expect(zot.storageKeyLeaks).toHaveLength(1);
    expect(zot.log.at(-1)?.headers["zotero-api-key"]).toBeUndefined();

    expect((await fetch(`${base}/items/${linked.key}/file`, { headers, redirect: "manual" })).status).toBe(404);

    // Corruption: first download has a wrong md5, the second is right.
    zot.corruptFile(att.key, 1);
    const loc1 = (await fetch(`${base}/items/${att.key}/file`, { headers, redirect: "manual" })).headers.get("location") ?? "";
    expect(md5(Buffer.from(await (await fetch(loc1)).arrayBuffer()))).not.toBe(att.data.md5);
    const loc2 = (await fetch(`${base}/items/${att.key}/file`, { headers, redirect: "manual" })).headers.get("location") ?? "";
    expect(md5(Buffer.from(await (await fetch(loc2)).arrayBuffer()))).toBe(att.data.md5);
  });

  it("authenticates: 403 Forbidden on a bad key, bearer accepted, faults injectable", async () => {
    const { zot, lib, base, headers } = await startZotero(makeLibrary({ items: 1, libraryType: "group", libraryId: 4242 }));
    expect(base.endsWith("/groups/4242")).toBe(true);
    const bad = await fetch(`${base}/items`, { headers: { "Zotero-API-Key": "wrong" } });
    expect(bad.status).toBe(403);
    expect(await bad.text()).toBe("Forbidden");
    expect((await fetch(`${base}/items`)).status).toBe(403);
    expect((await fetch(`${base}/items`, { headers: { Authorization: `Bearer ${lib.apiKey}` } })).status).toBe(200);
    expect((await fetch(`${zot.url}/users/1/items`, { headers })).status).toBe(403);
    expect(zot.secrets.some((s) => s.apiKeyHeader === "wrong")).toBe(true);
    expect(zot.log.every((r) => !("zotero-api-key" in r.headers))).toBe(true);

    zot.rateLimitNext(2, 3);
    zot.backoffOn(1, 5, "items/top");
    const r1 = await fetch(`${base}/items`, { headers });
    expect(r1.status).toBe(429);
    expect(r1.headers.get("retry-after")).toBe("3");
    expect((await fetch(`${base}/items`, { headers })).status).toBe(429);
    const r3 = await fetch(`${base}/items/top`, { headers });
    expect(r3.status).toBe(200);
    expect(r3.headers.get("backoff")).toBe("5");
    expect((await fetch(`${base}/items/top`, { headers })).headers.get("backoff")).toBeNull();
    zot.unavailableNext(1, 2);
    const r5 = await fetch(`${base}/collections`, { headers });
    expect(r5.status).toBe(503);
    expect(r5.headers.get("retry-after")).toBe("2");
    expect(zot.peakInFlight).toBeGreaterThanOrEqual(1);
  });
});

describe("FakeZotero extras", () => {
  it("separate storage origin, truncated downloads, revoked keys, /keys/current", async () => {
    const { zot, lib, base, headers } = await startZotero(makeLibrary({ items: 1 }), { storage: "separate" });
    const att = lib.items[1];
    if (!att) throw new Error("no attachment");
    const loc = (await fetch(`${base}/items/${att.key}/file`, { headers, redirect: "manual" })).headers.get("location") ?? "";
    expect(new URL(loc).origin).not.toBe(zot.url);
    // Following a cross-origin redirect: fetch drops Authorization but keeps the custom Zotero-API-Key header.
    await (await fetch(`${base}/items/${att.key}/file`, { headers })).arrayBuffer();
    expect(zot.storageKeyLeaks.map((l) => l.apiKeyHeader)).toEqual([lib.apiKey]);
    await (await fetch(`${base}/items/${att.key}/file`, { headers: { Authorization: `Bearer ${lib.apiKey}` } })).arrayBuffer();
    expect(zot.storageKeyLeaks).toHaveLength(1);

    zot.corruptFile(att.key, 1, "truncate");
    const loc2 = (await fetch(`${base}/items/${att.key}/file`, { headers, redirect: "manual" })).headers.get("location") ?? "";
    await expect(fetch(loc2).then((r) => r.arrayBuffer())).rejects.toThrow();
    expect(zot.downloadsByKey.get(att.key)).toBe(3);

    const me = (await (await fetch(`${zot.url}/keys/current`, { headers })).json()) as { userID: number };
    expect(me.userID).toBe(lib.libraryId);
    zot.revokeApiKey();
    expect((await fetch(`${base}/items`, { headers })).status).toBe(403);
  });
});

describe("FakeRefServer", () => {
  it("logs in, uploads, records multipart fields, answers 409 for a known key", async () => {
    const { rs, url } = await startRef({ supportsLinks: true });
    expect((await fetch(`${url}/health`)).status).toBe(200);
    const bad = await fetch(`${url}/api/v1/auth/login`, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: "username=admin&password=nope",
    });
    expect(bad.status).toBe(401);
    expect(await bad.json()).toEqual({ detail: "Invalid credentials" });
    const token = await loginToRefServer(url, "admin", "pw");
    const auth = { Authorization: `Bearer ${token}` };
    const pdf = makePdf({ title: "Paper" });
    const fields = { title: "Paper", authors: '["Ada Lovelace"]', year: "2020", zotero_key: "ABCD2345", zotero_library_id: "475425", zotero_version: "12" };

    const noAuth = await fetch(`${url}/api/v1/papers/upload_with_metadata`, { method: "POST", body: uploadForm(fields, { name: "p.pdf", body: pdf }) });
    expect(noAuth.status).toBe(401);
    expect(await noAuth.json()).toEqual({ detail: "Authentication required" });

    const ok = await fetch(`${url}/api/v1/papers/upload_with_metadata`, { method: "POST", headers: auth, body: uploadForm(fields, { name: "p.pdf", body: pdf }) });
    expect(ok.status).toBe(200);
    const okBody = (await ok.json()) as { job_id: string; doc_id: string; status: string };
    expect(okBody.status).toBe("processing");
    const rec = rs.uploads.at(-1);
    expect(rec?.fieldNames).toEqual(["file", "title", "authors", "year", "zotero_key", "zotero_library_id", "zotero_version"]);
    expect(rec?.file).toMatchObject({ filename: "p.pdf", size: pdf.length, md5: md5(pdf) });
    expect(rec?.authorization).toBe(`Bearer ${token}`);
    expect(rs.papers.get("ABCD2345")).toMatchObject({ docId: okBody.doc_id, md5: md5(pdf), authors: ["Ada Lovelace"], year: 2020, zoteroVersion: 12 });

    const dup = await fetch(`${url}/api/v1/papers/upload_with_metadata`, { method: "POST", headers: auth, body: uploadForm(fields, { name: "p.pdf", body: pdf }) });
    expect(dup.status).toBe(409);
    expect(await dup.json()).toEqual({ detail: `Document with Zotero key 'ABCD2345' already exists (doc_id: ${okBody.doc_id})` });
    expect(rs.uploadsPerKey.get("ABCD2345")).toBe(3);
    expect(rs.commitsPerKey.get("ABCD2345")).toBe(1);

    const job = (await (await fetch(`${url}/api/v1/job/${okBody.job_id}`, { headers: auth })).json()) as { status: string; result?: { doc_id: string } };
    expect(job).toMatchObject({ status: "completed", result: { doc_id: okBody.doc_id } });
    const links = (await (await fetch(`${url}/api/v1/zotero/links?library_id=475425`, { headers: auth })).json()) as { links: unknown[] };
    expect(links.links).toEqual([{ zotero_key: "ABCD2345", doc_id: okBody.doc_id, zotero_version: 12 }]);

    const missing = await fetch(`${url}/api/v1/papers/upload_with_metadata`, {
      method: "POST",
      headers: auth,
      body: uploadForm({ title: "", authors: "[]", zotero_key: "WXYZ2345" }, { name: "p.pdf", body: pdf }),
    });
    expect(missing.status).toBe(422);
    expect(await missing.json()).toEqual({ detail: [{ type: "missing", loc: ["body", "title"], msg: "Field required", input: null }] });
    const notPdf = await fetch(`${url}/api/v1/papers/upload_with_metadata`, { method: "POST", headers: auth, body: uploadForm({ title: "x", authors: "[]" }, { name: "p.html", body: pdf }) });
    expect(notPdf.status).toBe(400);
    expect(await notPdf.json()).toEqual({ detail: "Only PDF files are allowed" });

    rs.invalidateTokens();
    expect((await fetch(`${url}/api/v1/job/${okBody.job_id}`, { headers: auth })).status).toBe(401);
    const token2 = await loginToRefServer(url, "admin", "pw");
    expect((await fetch(`${url}/api/v1/job/${okBody.job_id}`, { headers: { Authorization: `Bearer ${token2}` } })).status).toBe(200);
    expect(rs.loginCalls).toBe(3);
    expect(rs.statusCount(409)).toBe(1);
  });

  it("answers 'database is locked' after reading the body, loses answers after commit, resets mid-body", async () => {
    const { rs, url } = await startRef();
    rs.lockNextLogins(1);
    await expect(loginToRefServer(url, "admin", "pw")).rejects.toThrow(/500/);
    const token = await loginToRefServer(url, "admin", "pw");
    const auth = { Authorization: `Bearer ${token}` };
    const post = (key: string, size = 0) =>
      fetch(`${url}/api/v1/papers/upload_with_metadata`, {
        method: "POST",
        headers: auth,
        body: uploadForm(
          { title: `T ${key}`, authors: '["A B"]', zotero_key: key, zotero_library_id: "1" },
          { name: `${key}.pdf`, body: makePdf({ title: key, padToBytes: size || undefined }) },
        ),
      });

    rs.lockNextUploads(2);
    const l1 = await post("LCKD2345");
    expect(l1.status).toBe(500);
    expect(await l1.json()).toEqual({ detail: "Database error: database is locked" });
    expect(rs.uploads.at(-1)?.file?.size).toBeGreaterThan(0); // body was read
    expect((await post("LCKD2345")).status).toBe(500);
    expect((await post("LCKD2345")).status).toBe(200);
    expect(rs.statusCount(500)).toBe(3);

    rs.loseAnswerAfterCommit({ keys: ["LQST2345"] });
    await expect(post("LQST2345")).rejects.toThrow();
    expect(rs.papers.has("LQST2345")).toBe(true);
    expect(rs.statusCount("lost")).toBe(1);
    const retry = await post("LQST2345");
    expect(retry.status).toBe(409);

    rs.resetMidBody({ next: 1 });
    await expect(post("RSET2345", 2_000_000)).rejects.toThrow();
    expect(rs.papers.has("RSET2345")).toBe(false);
    expect((await post("RSET2345", 2_000_000)).status).toBe(200);

    rs.failKeys(["BIGG2345"], 413, { times: 1 });
    expect((await post("BIGG2345")).status).toBe(413);
    rs.unavailableNext(1, 7);
    const u = await post("BIGG2345");
    expect(u.status).toBe(503);
    expect(u.headers.get("retry-after")).toBe("7");
    expect((await post("BIGG2345")).status).toBe(200);

    rs.resetMidBody({ keys: ["KRST2345"] });
    await expect(post("KRST2345")).rejects.toThrow();
    expect(rs.uploadsPerKey.get("KRST2345")).toBe(1);
    expect((await post("KRST2345")).status).toBe(200);

    rs.stall(20, { keys: ["STLL2345"] });
    expect((await post("STLL2345")).status).toBe(200);
    expect(rs.uploads.at(-1)?.fault).toBe("stall");

    await Promise.all(["CNC22345", "CNC32345", "CNC42345"].map((k) => post(k).then((r) => r.arrayBuffer())));
    expect(rs.peakConcurrentUploads).toBeGreaterThanOrEqual(1);
    expect(rs.duplicateKeys()).toEqual([]);
  });

  it("reproduces the select-then-insert race: concurrent uploads of one key -> one 200, one 500 UNIQUE + orphan", async () => {
    const { rs, url } = await startRef();
    rs.barrierBeforeInsert(2);
    const token = await loginToRefServer(url, "admin", "pw");
    const body = makePdf({ title: "race" });
    const send = () =>
      fetch(`${url}/api/v1/papers/upload_with_metadata`, {
        method: "POST",
        headers: { Authorization: `Bearer ${token}` },
        body: uploadForm({ title: "race", authors: "[]", zotero_key: "RACE2345", zotero_library_id: "1" }, { name: "r.pdf", body }),
      }).then((r) => r.status);
    const statuses = (await Promise.all([send(), send()])).sort();
    expect(statuses).toEqual([200, 500]);
    expect(rs.commitsPerKey.get("RACE2345")).toBe(1);
    expect(rs.allPapers.filter((p) => p.orphan)).toHaveLength(1);
    expect(rs.peakConcurrentUploads).toBe(2);
  });
});
