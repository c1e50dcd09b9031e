import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { http, HttpResponse } from "msw";
import { setupServer } from "msw/node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { nextLink, ZoteroWebApi } from "../../src/zotero/web-api.js";

// msw intercepts the global fetch the Zotero client uses: unit tests of the HTTP layer.
const BASE = "https://zotero.test";
const server = setupServer();
beforeAll(() => server.listen({ onUnhandledRequest: "error" }));
afterEach(() => server.resetHandlers());
afterAll(() => server.close());

function makeClient(sleeps: number[] = []) {
  let now = 1_000_000;
  return new ZoteroWebApi({
    baseUrl: BASE,
    library: { type: "user", id: "7" },
    apiKey: "secret-key-123",
    retry: { retries: 3, minDelayMs: 10, maxDelayMs: 20 },
    sleep: async (ms) => {
      sleeps.push(ms);
      now += ms;
    },
    clock: () => now,
  });
}

const raw = (k: string, extra: Record<string, unknown> = {}) => ({ key: k, version: 3, data: { key: k, version: 3, itemType: "journalArticle", title: `T ${k}`, creators: [], ...extra } });
const ALPHABET = "23456789ABCDEFGHIJKLMNPQRSTUVWXYZ";
const keyOf = (i: number) => `K${Array.from({ length: 7 }, (_, d) => ALPHABET[Math.floor(i / ALPHABET.length ** d) % ALPHABET.length]).join("")}`;

describe("Zotero Web API client", () => {
  it("follows Link rel=next over every page and joins attachments to parents", async () => {
    const all = Array.from({ length: 250 }, (_, i) => raw(keyOf(i)));
    all.push({ key: "ATTACH22", version: 4, data: { key: "ATTACH22", version: 4, itemType: "attachment", parentItem: keyOf(0), linkMode: "imported_file", contentType: "application/pdf", filename: "a.pdf", md5: "ABC" } } as never);
    const seen: string[] = [];
    const page = (request: Request, path: string, objects: typeof all) => {
      const url = new URL(request.url);
      seen.push(`${path}${url.search}`);
      expect(request.headers.get("zotero-api-key")).toBe("secret-key-123");
      expect(request.headers.get("zotero-api-version")).toBe("3");
      const start = Number(url.searchParams.get("start") ?? 0);
      const limit = Number(url.searchParams.get("limit"));
      const headers: Record<string, string> = { "Total-Results": String(objects.length), "Last-Modified-Version": "77" };
      if (start + limit < objects.length) headers.Link = `<${url.origin}${url.pathname}?${new URLSearchParams({ ...Object.fromEntries(url.searchParams), start: String(start + limit) })}>; rel="next", <${BASE}/x?start=200>; rel="last"`;
      return HttpResponse.json(objects.slice(start, start + limit), { headers });
    };
    const isAttachment = (o: (typeof all)[number]) => (o.data as { itemType: string }).itemType === "attachment";
    server.use(
      http.get(`${BASE}/users/7/items/top`, ({ request }) => page(request, "items/top", all.filter((o) => !isAttachment(o)))),
      http.get(`${BASE}/users/7/items`, ({ request }) => {
        expect(new URL(request.url).searchParams.get("itemType")).toBe("attachment");
        return page(request, "items", all.filter(isAttachment));
      }),
    );
    const client = makeClient();
    const listing = await client.list({});
    expect(seen, seen.join(" ")).toHaveLength(4);
    expect(listing.items).toHaveLength(250);
    expect(listing.libraryVersion).toBe(77);
    expect(listing.requests).toBe(4);
    expect(listing.items[0]!.attachments.map((a) => [a.key, a.md5])).toEqual([["ATTACH22", "abc"]]);
  });

  it("waits for Retry-After on 429 and for Backoff before the next request", async () => {
    let calls = 0;
    server.use(
      http.get(`${BASE}/users/7/items`, () => HttpResponse.json([], { headers: { "Total-Results": "0" } })),
      http.get(`${BASE}/users/7/items/top`, () => {
        calls++;
        if (calls === 1) return new HttpResponse(null, { status: 429, headers: { "Retry-After": "5" } });
        if (calls === 2) return HttpResponse.json([raw("AAAAAAAA")], { headers: { Backoff: "3", "Total-Results": "2", Link: `<${BASE}/users/7/items/top?start=1&limit=100>; rel="next"` } });
        return HttpResponse.json([raw("BBBBBBBB")], { headers: { "Total-Results": "2" } });
      }),
    );
    const sleeps: number[] = [];
    const listing = await makeClient(sleeps).list({});
    expect(listing.items.map((i) => i.key)).toEqual(["AAAAAAAA", "BBBBBBBB"]);
    // 5 s for Retry-After before the second request, then 3 s of Backoff before the third.
    expect(sleeps.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(8000);
    expect(sleeps).toContain(3000);
  });

  it("turns a 403 into a clear authentication error without the key in it", async () => {
    server.use(http.get(`${BASE}/users/7/items*`, () => new HttpResponse("Forbidden", { status: 403 })));
    const error = await makeClient().list({}).catch((e: Error) => e);
    expect(error).toMatchObject({ code: "ZOTERO_AUTH" });
    expect((error as Error).message).toMatch(/zotero.api_key/);
    expect((error as Error).message).not.toContain("secret-key-123");
  });

  it("reports a 404 on /file as a missing file, and sends no key to the storage host", async () => {
    // File requests go through undici.request (not fetch): a real Zotero stand-in on 127.0.0.1.
    const seen: { url: string; key: string | undefined }[] = [];
    const zotero = createServer((req, res) => {
      seen.push({ url: req.url ?? "", key: req.headers["zotero-api-key"] as string | undefined });
      if (req.url === "/users/7/items/MISSING2/file") return void res.writeHead(404).end("Not found");
      if (req.url === "/users/7/items/PRESENT2/file") return void res.writeHead(302, { Location: "/storage/abc/file.pdf" }).end();
      if (req.url === "/storage/abc/file.pdf") return void res.writeHead(200, { "Content-Length": "13" }).end("%PDF-1.4 body");
      res.writeHead(500).end();
    });
    await new Promise<void>((r) => zotero.listen(0, "127.0.0.1", r));
    try {
      const client = new ZoteroWebApi({
        baseUrl: `http://127.0.0.1:${(zotero.address() as AddressInfo).port}`,
        library: { type: "user", id: "7" },
        apiKey: "secret-key-123",
        retry: { retries: 1, minDelayMs: 1, maxDelayMs: 1 },
      });
      const a = { key: "MISSING2", version: 1, parentKey: null, title: "", linkMode: "imported_file", contentType: "application/pdf", filename: "x.pdf", md5: null, size: null, hasFile: null };
      await expect(client.openFile(a)).rejects.toMatchObject({ code: "ZOTERO_FILE_MISSING", message: expect.stringMatching(/not synced to Zotero storage/) });
      const file = await client.openFile({ ...a, key: "PRESENT2" });
      let text = "";
      for await (const chunk of file.body) text += String(chunk);
      expect(text).toBe("%PDF-1.4 body");
      expect(file.size).toBe(13);
      // The API saw the key; the storage path it redirected to did not.
      expect(seen.map((r) => [r.url, r.key])).toEqual([
        ["/users/7/items/MISSING2/file", "secret-key-123"],
        ["/users/7/items/PRESENT2/file", "secret-key-123"],
        ["/storage/abc/file.pdf", undefined],
      ]);
    } finally {
      zotero.close();
    }
  });

  it("reads the next page from a Link header", () => {
    expect(nextLink('<https://a/x?start=100>; rel="next", <https://a/x?start=200>; rel="last"')).toBe("https://a/x?start=100");
    expect(nextLink('<https://a/x?start=0>; rel="first"')).toBeNull();
  });
});
