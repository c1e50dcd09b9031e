/**
 * A small fake of Zotero 7's local API on 127.0.0.1: `/api/users/0/items` (and `/items/top`, `itemType=`), `/collections`
 * (paged with limit/start, Link and Total-Results, Last-Modified-Version), and
 * `/items/KEY/file`, which answers 302 to a `file://` URL as Zotero does.
 * Requests for another user than 0 get 400 as in Zotero; every request is logged.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { pathToFileURL } from "node:url";
import type { ZoteroJsonCollection, ZoteroJsonItem } from "../../scripts/sample-library.js";

export interface FakeLocalApiData {
  libraryVersion: number;
  items: ZoteroJsonItem[];
  collections: ZoteroJsonCollection[];
  /** Where each file attachment's file is on this computer. */
  paths: Map<string, string>;
}

export interface FakeLocalApiOptions {
  /** Answer 403 "Local API is not enabled" (the setting is off). */
  disabled?: boolean;
}

export class FakeLocalApi {
  readonly log: { method: string; path: string; status: number; headers: Record<string, string | string[] | undefined> }[] = [];
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  url = "";

  constructor(
    private readonly data: FakeLocalApiData,
    private readonly options: FakeLocalApiOptions = {},
  ) {}

  async start(): Promise<string> {
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://127.0.0.1");
      const send = (status: number, body: string, headers: Record<string, string> = {}) => {
        this.log.push({ method: req.method ?? "GET", path: url.pathname, status, headers: req.headers });
        res.writeHead(status, { "Zotero-API-Version": "3", "Zotero-Schema-Version": "29", "Content-Type": "text/plain", ...headers });
        res.end(body);
      };
      if (this.options.disabled) return send(403, "Local API is not enabled");
      const m = /^\/api\/users\/(\d+)(\/.*)$/.exec(url.pathname);
      if (!m) return send(404, "Not found");
      if (m[1] !== "0") return send(400, "Only data for the logged-in user is available locally -- use userID 0");
      const rest = m[2]!;
      const file = /^\/items\/([23456789A-Z]{8})\/file(?:\/view)?$/.exec(rest);
      if (file) {
        const item = this.data.items.find((i) => i.key === file[1]);
        if (!item) return send(404, "Not found");
        const path = this.data.paths.get(item.key);
        const linkMode = item.data.linkMode;
        if (item.data.itemType !== "attachment" || linkMode === "linked_url" || !path) return send(400, `Not a file attachment: ${item.key}`);
        return send(302, "", { Location: pathToFileURL(path).href });
      }
      let objects: { key: string; version: number; data: Record<string, unknown> }[];
      if (rest === "/items" || rest === "/items/top") {
        objects = this.data.items.filter((i) => !i.data.deleted || url.searchParams.get("includeTrashed") === "1");
        if (rest === "/items/top") objects = objects.filter((o) => typeof o.data.parentItem !== "string");
        const since = url.searchParams.get("since");
        if (since !== null && Number(since) !== 0) objects = objects.filter((o) => o.version > Number(since));
        const keys = url.searchParams.get("itemKey");
        if (keys) objects = objects.filter((o) => keys.split(",").includes(o.key));
        // itemType=attachment, or its negation -attachment (the two forms the importer and tests use).
        const type = url.searchParams.get("itemType");
        if (type) objects = objects.filter((o) => (type.startsWith("-") ? o.data.itemType !== type.slice(1) : o.data.itemType === type));
      } else if (rest === "/collections") {
        objects = this.data.collections;
      } else {
        return send(404, "Not found");
      }
      const total = objects.length;
      const start = Math.max(0, Number(url.searchParams.get("start") ?? 0) || 0);
      const limit = Number(url.searchParams.get("limit") ?? 0) || total - start;
      const page = objects.slice(start, start + limit);
      const links: string[] = [];
      if (start + limit < total) {
        const next = new URL(url.pathname + url.search, this.url);
        next.searchParams.set("start", String(start + limit));
        links.push(`<${next.href}>; rel="next"`);
      }
      return send(200, JSON.stringify(page), {
        "Content-Type": "application/json",
        "Total-Results": String(total),
        "Last-Modified-Version": String(this.data.libraryVersion),
        ...(links.length ? { Link: links.join(", ") } : {}),
      });
    });
    server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    this.server = server;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this.url;
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
