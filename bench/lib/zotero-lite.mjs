// A lean fake Zotero Web API v3 for the benchmarks that need big libraries or big files:
// items are rendered on the fly from compact arrays (no O(n) scans per item), and /file
// redirects to a storage route that STREAMS the body from a file on disk (never a Buffer).
// Same wire shapes as test/helpers/fake-zotero.ts for what the importer reads: paging with
// Link rel="next", Total-Results, Last-Modified-Version, since=, itemKey=, 302 to storage.
// Counters: listing requests, requests in flight (peak), storage downloads.
import { LoopbackService } from "./loopback.mjs";
import { createReadStream } from "node:fs";
import { createHash } from "node:crypto";

const ALPHABET = "23456789ABCDEFGHIJKLMNPQRSTUVWXYZ";

export function zoteroKey(n) {
  // Deterministic, unique for n < 33^8: base-33 digits of n, then a bijective scramble per position.
  let k = "";
  let x = n;
  for (let i = 0; i < 8; i++) {
    k = ALPHABET[(x + i * 7) % 33] + k;
    x = Math.floor(x / 33);
  }
  return k;
}

/**
 * A library of `items` parents, each with one stored PDF attachment. Every attachment's file is
 * `file(i)` → { path, size, md5 } (a file on disk; may be the same file for all).
 * Versions: parent i has version startVersion + 2i + 1, its attachment + 2i + 2.
 */
export function makeLiteLibrary({ items, file, libraryId = 475425, apiKey = "P9NiFoyLeZu2bZNvvuQPDWsd", startVersion = 100, keyOffset = 0 }) {
  const objects = []; // compact: [kind, key, version, i]
  for (let i = 0; i < items; i++) {
    const pk = zoteroKey(2 * (i + keyOffset));
    const ak = zoteroKey(2 * (i + keyOffset) + 1);
    objects.push({ kind: "parent", key: pk, version: startVersion + 2 * i + 1, i });
    objects.push({ kind: "att", key: ak, parent: pk, version: startVersion + 2 * i + 2, i });
  }
  const byKey = new Map(objects.map((o) => [o.key, o]));
  // Precomputed listings, each in version order: all objects, top-level (the parents), attachments.
  const parents = objects.filter((o) => o.kind === "parent");
  const atts = objects.filter((o) => o.kind === "att");
  return { libraryId, apiKey, objects, parents, atts, byKey, file, version: startVersion + 2 * items, prefix: `/users/${libraryId}` };
}

const TOPICS = ["Graph", "Entropy", "Lattice", "Sparse", "Quantum", "Fossil", "Protein", "Neural"];
const NOUNS = ["Methods", "Dynamics", "Networks", "Inference", "Structures", "Models"];
const LAST = ["Lovelace", "Turing", "Hopper", "Shannon", "Liskov", "Knuth", "Dijkstra", "Allen"];

function render(lib, o, base) {
  const library = { type: "user", id: lib.libraryId, name: "benchuser", links: { alternate: { href: "https://www.zotero.org/benchuser", type: "text/html" } } };
  const self = { href: `${base}${lib.prefix}/items/${o.key}`, type: "application/json" };
  if (o.kind === "parent") {
    const i = o.i;
    return {
      key: o.key,
      version: o.version,
      library,
      links: { self },
      meta: { creatorSummary: LAST[i % LAST.length], parsedDate: `${1990 + (i % 35)}`, numChildren: 1 },
      data: {
        key: o.key,
        version: o.version,
        itemType: "journalArticle",
        title: `${TOPICS[i % TOPICS.length]} ${NOUNS[i % NOUNS.length]} ${i + 1}`,
        creators: [{ creatorType: "author", firstName: "Ada", lastName: LAST[i % LAST.length] }],
        abstractNote: "",
        publicationTitle: "Journal of Benchmarks",
        date: `${1990 + (i % 35)}-01`,
        DOI: `10.5555/bench.${i + 1}`,
        collections: [],
        tags: [],
        relations: {},
        dateAdded: "2020-01-01T00:00:00Z",
        dateModified: "2020-01-01T00:00:00Z",
      },
    };
  }
  const f = lib.file(o.i);
  return {
    key: o.key,
    version: o.version,
    library,
    links: { self, up: { href: `${base}${lib.prefix}/items/${o.parent}`, type: "application/json" }, enclosure: { href: `${base}${lib.prefix}/items/${o.key}/file/view`, type: "application/pdf", title: `paper-${o.i + 1}.pdf`, length: f.size } },
    meta: {},
    data: {
      key: o.key,
      version: o.version,
      itemType: "attachment",
      parentItem: o.parent,
      linkMode: "imported_file",
      title: "Full Text PDF",
      accessDate: "",
      url: "",
      note: "",
      contentType: "application/pdf",
      charset: "",
      filename: `paper-${o.i + 1}.pdf`,
      md5: f.md5,
      mtime: 1_600_000_000_000,
      tags: [],
      relations: {},
      dateAdded: "2020-01-01T00:00:00Z",
      dateModified: "2020-01-01T00:00:00Z",
    },
  };
}

export class LiteZotero extends LoopbackService {
  constructor(lib, { maxLimit = 100 } = {}) {
    super();
    this.lib = lib;
    this.maxLimit = maxLimit;
    this.listingRequests = 0;
    this.requests = 0;
    this.inFlight = 0;
    this.peakInFlight = 0;
    this.storageDownloads = 0;
    this.firstFileRequestAt = null; // performance.now() of the first /file request
  }


  send(res, status, body, headers = {}) {
    const buf = Buffer.from(typeof body === "string" ? body : JSON.stringify(body));
    res.writeHead(status, { "Zotero-API-Version": "3", "Content-Length": String(buf.length), ...headers });
    res.end(buf);
  }

  handle(req, res) {
    this.requests++;
    this.inFlight++;
    this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
    let done = false;
    res.on("close", () => {
      if (!done) {
        done = true;
        this.inFlight--;
      }
    });
    const url = new URL(req.url, "http://127.0.0.1");
    const lib = this.lib;
    const p = url.pathname;
    const sm = /^\/_storage\/([23456789A-Z]{8})\//.exec(p);
    if (sm) {
      const o = lib.byKey.get(sm[1]);
      if (!o || o.kind !== "att") return this.send(res, 404, "<Error><Code>NoSuchKey</Code></Error>");
      const f = lib.file(o.i);
      this.storageDownloads++;
      res.writeHead(200, { "Content-Type": "application/pdf", "Content-Length": String(f.size), ETag: `"${f.md5}"` });
      const rs = createReadStream(f.path, { highWaterMark: 1 << 20 });
      rs.on("error", () => res.destroy());
      res.on("close", () => rs.destroy());
      rs.pipe(res);
      return;
    }
    if (req.headers["zotero-api-key"] !== lib.apiKey) return this.send(res, 403, "Forbidden");
    if (!p.startsWith(lib.prefix)) return this.send(res, 403, "Forbidden");
    const rest = p.slice(lib.prefix.length);
    const fm = /^\/items\/([23456789A-Z]{8})\/file(?:\/view)?$/.exec(rest);
    if (fm) {
      if (this.firstFileRequestAt === null) this.firstFileRequestAt = performance.now();
      const o = lib.byKey.get(fm[1]);
      if (!o || o.kind !== "att") return this.send(res, 404, "Not found");
      return this.send(res, 302, "", { Location: `${this.url}/_storage/${o.key}/paper-${o.i + 1}.pdf` });
    }
    const common = { "Content-Type": "application/json", "Last-Modified-Version": String(lib.version) };
    if (rest === "/collections" || rest === "/collections/top") {
      this.listingRequests++;
      return this.send(res, 200, [], { ...common, "Total-Results": "0" });
    }
    const isTop = rest === "/items/top" || rest === "/items/top/";
    if (rest !== "/items" && rest !== "/items/" && !isTop) return this.send(res, 404, "Not found");
    this.listingRequests++;
    let objs = isTop ? lib.parents : lib.objects;
    const itemType = url.searchParams.get("itemType");
    if (itemType) {
      // Zotero syntax: "a || b", or "-a" for "not a". Parents are journalArticle, the rest attachment.
      const neg = itemType.startsWith("-");
      const types = (neg ? itemType.slice(1) : itemType).split("||").map((t) => t.trim());
      const wantAtt = types.includes("attachment") !== neg;
      const wantParent = types.includes("journalArticle") !== neg;
      objs = objs === lib.parents ? (wantParent ? lib.parents : []) : wantAtt && wantParent ? lib.objects : wantAtt ? lib.atts : wantParent ? lib.parents : [];
    }
    const since = url.searchParams.get("since");
    if (since !== null) {
      const v = Number(since);
      // objects are in version order: binary search the first newer one
      let lo = 0;
      let hi = objs.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (objs[mid].version > v) hi = mid;
        else lo = mid + 1;
      }
      objs = objs.slice(lo);
    }
    const itemKey = url.searchParams.get("itemKey");
    if (itemKey) objs = itemKey.split(",").map((k) => lib.byKey.get(k)).filter(Boolean);
    const limit = Math.min(Number(url.searchParams.get("limit") ?? 25) || 25, this.maxLimit);
    const start = Math.max(0, Number(url.searchParams.get("start") ?? 0) || 0);
    const page = objs.slice(start, start + limit);
    const headers = { ...common, "Total-Results": String(objs.length) };
    if (start + limit < objs.length) {
      const next = new URL(url.pathname + url.search, this.url);
      next.searchParams.set("start", String(start + limit));
      next.searchParams.set("limit", String(limit));
      headers.Link = `<${next}>; rel="next"`;
    }
    this.send(res, 200, page.map((o) => render(lib, o, this.url)), headers);
  }
}

export function md5OfFile(path) {
  return new Promise((resolve, reject) => {
    const h = createHash("md5");
    createReadStream(path).on("data", (d) => h.update(d)).on("end", () => resolve(h.digest("hex"))).on("error", reject);
  });
}
