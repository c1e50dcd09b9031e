import pLimit, { type LimitFunction } from "p-limit";
import { request, type Dispatcher } from "undici";
import { ImportError } from "../errors.js";
import { firstHeader } from "../http/headers.js";
import { classifyNetworkError } from "../retry/classify.js";
import { withRetry, type RetryPolicy } from "../retry/policy.js";
import { parseRetryAfter, realClock, realSleep, type Clock, type Sleep } from "../util/time.js";
import { ListingBuilder, type RawZoteroObject } from "./normalise.js";
import type { Attachment, Collection, FileBody, LibraryRef, Listing, ListOptions, ZoteroSource } from "./types.js";

export interface WebApiOptions {
  baseUrl: string;
  library: LibraryRef;
  apiKey: string;
  dispatcher?: Dispatcher | undefined;
  retry: RetryPolicy;
  /** Most requests in flight to Zotero at once (Zotero asks clients to be polite). */
  maxConcurrent?: number;
  sleep?: Sleep;
  clock?: Clock;
  onWait?: (info: { reason: string; delayMs: number }) => void;
}

const PAGE = 100;
/** Zotero caps itemKey= at 50 keys a request. */
const KEYS_PER_REQUEST = 50;

/** Zotero Web API v3 client: paging, since, Backoff / Retry-After, bounded concurrency. */
export class ZoteroWebApi implements ZoteroSource {
  readonly library: LibraryRef;
  private readonly base: string;
  private readonly limit: LimitFunction;
  private readonly sleep: Sleep;
  private readonly clock: Clock;
  /** Shared gate: no request starts before this time (set by Backoff and Retry-After). */
  private notBefore = 0;
  requests = 0;

  constructor(private readonly options: WebApiOptions) {
    this.library = options.library;
    this.base = `${options.baseUrl.replace(/\/+$/, "")}/${options.library.type === "group" ? "groups" : "users"}/${options.library.id}`;
    this.limit = pLimit(options.maxConcurrent ?? 4);
    this.sleep = options.sleep ?? realSleep;
    this.clock = options.clock ?? realClock;
  }

  private libraryLabel(): string {
    return `${this.library.type} library ${this.library.id}`;
  }

  private async waitForGate(signal?: AbortSignal): Promise<void> {
    for (;;) {
      const wait = this.notBefore - this.clock();
      if (wait <= 0) return;
      await this.sleep(wait, signal);
    }
  }

  private pushGate(ms: number, reason: string): void {
    const until = this.clock() + ms;
    if (until > this.notBefore) {
      this.notBefore = until;
      this.options.onWait?.({ reason, delayMs: ms });
    }
  }

  /** One API request with retries, under the concurrency limit and the shared gate. */
  private async request(url: string, what: string, signal?: AbortSignal): Promise<Response> {
    return withRetry(
      () =>
        this.limit(async () => {
          await this.waitForGate(signal);
          this.requests++;
          let response: Response;
          try {
            const init: RequestInit = {
              headers: { "Zotero-API-Version": "3", "Zotero-API-Key": this.options.apiKey },
              ...(signal ? { signal } : {}),
              // undici 7's Agent drives Node 20's bundled fetch; only their type packages differ.
              ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher as unknown as RequestInit["dispatcher"] } : {}),
            };
            response = await fetch(url, init);
          } catch (error) {
            throw classifyNetworkError(error, `Zotero ${what}`);
          }
          const backoff = parseRetryAfter(response.headers.get("backoff"), this.clock());
          if (backoff) this.pushGate(backoff, "Zotero asked to back off");
          if (response.ok) return response;
          await response.text().catch(() => "");
          throw this.httpError(response, what);
        }),
      this.options.retry,
      { sleep: this.sleep, signal },
    );
  }

  private httpError(response: { status: number; headers: { get(name: string): string | null } }, what: string): ImportError {
    const status = response.status;
    if (status === 403 || status === 401) {
      return new ImportError(
        "ZOTERO_AUTH",
        `Zotero refused the API key (${status}) for ${this.libraryLabel()}: check zotero.api_key (or ZOTERO_API_KEY) has read access to it, and zotero.library_id/library_type`,
        { status },
      );
    }
    if (status === 404) return new ImportError("ZOTERO_NOT_FOUND", `Zotero ${what}: not found (404)`, { status });
    const retryAfter = parseRetryAfter(response.headers.get("retry-after"), this.clock());
    if (status === 429 || status === 503) {
      const wait = retryAfter ?? 5000;
      this.pushGate(wait, `Zotero answered ${status}`);
      return new ImportError("ZOTERO_HTTP", `Zotero ${what}: ${status}, retrying after ${Math.round(wait / 1000)} s`, { status, retriable: true, retryAfterMs: 0 });
    }
    if (status >= 500) return new ImportError("ZOTERO_HTTP", `Zotero ${what}: server error ${status}`, { status, retriable: true });
    return new ImportError("ZOTERO_HTTP", `Zotero ${what}: unexpected answer ${status}`, { status });
  }

  /** Every page of a listing, following Link rel="next" (or Total-Results). */
  private async fetchAll(
    path: string,
    query: Record<string, string>,
    signal?: AbortSignal,
    onPage?: (objects: RawZoteroObject[]) => void,
  ): Promise<{ objects: RawZoteroObject[]; version: number }> {
    const params = new URLSearchParams({ format: "json", limit: String(PAGE), ...query });
    let url: string | null = `${this.base}${path}?${params}`;
    const objects: RawZoteroObject[] = [];
    let version = 0;
    while (url) {
      const response = await this.request(url, `listing ${path}`, signal);
      const body: unknown = await response.json().catch(() => {
        throw new ImportError("ZOTERO_BAD_DATA", `Zotero listing ${path}: the answer is not JSON: check zotero.api_url points at the Zotero API`);
      });
      if (!Array.isArray(body)) throw new ImportError("ZOTERO_BAD_DATA", `Zotero listing ${path}: expected a JSON array: check zotero.api_url`);
      if (onPage) onPage(body as RawZoteroObject[]);
      else objects.push(...(body as RawZoteroObject[]));
      version = Math.max(version, Number(response.headers.get("last-modified-version") ?? 0) || 0);
      const next = nextLink(response.headers.get("link"));
      if (next) {
        url = next;
      } else {
        // No Link header (some proxies drop it): page on by Total-Results.
        const start = Number(new URL(url).searchParams.get("start") ?? 0) + body.length;
        const total = Number(response.headers.get("total-results"));
        if (Number.isFinite(total) && start < total && body.length > 0) {
          params.set("start", String(start));
          url = `${this.base}${path}?${params}`;
        } else {
          url = null;
        }
      }
    }
    return { objects, version };
  }

  async listCollections(signal?: AbortSignal): Promise<Collection[]> {
    const { objects } = await this.fetchAll("/collections", {}, signal);
    return objects
      .filter((o) => o && typeof o === "object" && o.data && typeof o.data.key === "string")
      .map((o) => ({
        key: String(o.data!.key),
        name: typeof o.data!.name === "string" ? o.data!.name : "",
        parentKey: typeof o.data!.parentCollection === "string" ? o.data!.parentCollection : null,
      }));
  }

  async list(options: ListOptions = {}): Promise<Listing> {
    const before = this.requests;
    const since = options.since;
    const sinceQuery: Record<string, string> = since !== undefined ? { since: String(since) } : {};
    // Each page is folded into items as it arrives; no raw page is kept.
    const builder = new ListingBuilder();
    const add = (objects: RawZoteroObject[]): void => builder.add(objects);
    // Top-level items and all attachments: every object we need, and none of the child notes
    // (often as many as the papers), so fewer pages. Both listings run at once.
    const [top, attachments] = await Promise.all([
      this.fetchAll("/items/top", sinceQuery, options.signal, add),
      this.fetchAll("/items", { ...sinceQuery, itemType: "attachment" }, options.signal, add),
    ]);
    let version = Math.max(top.version, attachments.version);
    if (since !== undefined) {
      // Incremental: bring in the parents of changed attachments (a changed parent's new
      // attachments changed too), and the unfinished keys of earlier runs with their parents.
      let wanted = [...new Set([...builder.missingParents(), ...(options.alsoKeys ?? []).filter((k) => !builder.has(k))])];
      for (let round = 0; wanted.length > 0 && round < 3; round++) {
        for (let i = 0; i < wanted.length; i += KEYS_PER_REQUEST) {
          const extra = await this.fetchAll("/items", { itemKey: wanted.slice(i, i + KEYS_PER_REQUEST).join(",") }, options.signal, add);
          version = Math.max(version, extra.version);
        }
        wanted = builder.missingParents().filter((k) => !wanted.includes(k));
      }
    }
    const listing = builder.build(this.library, version);
    return { ...listing, collections: [], requests: this.requests - before };
  }

  async openFile(attachment: Attachment, signal?: AbortSignal): Promise<FileBody> {
    const what = `file of ${attachment.key}`;
    let target = `${this.base}/items/${encodeURIComponent(attachment.key)}/file`;
    let next = await this.download(target, what, true, signal, "file not in Zotero storage (404): it was never synced to zotero.org (WebDAV or file sync off)");
    for (let hops = 1; !("body" in next); hops++) {
      if (hops > 5) throw new ImportError("ZOTERO_HTTP", `Zotero ${what}: too many redirects`);
      target = new URL(next.location, target).toString();
      // The storage host gets no API key: only Zotero's own API sees it.
      const ours = new URL(target).origin === new URL(this.options.baseUrl).origin && new URL(target).pathname.startsWith(new URL(this.base).pathname);
      next = await this.download(target, what, ours, signal, `Zotero ${what}: the storage host has no such file (404)`);
    }
    return next;
  }

  /**
   * GET a file (or its redirect) through undici.request: the bytes of a PDF come as a Node
   * stream, never through fetch's web streams (a third more CPU here). Retried, limited and
   * gated like every other request; a redirect is handed back, not followed.
   */
  private async download(url: string, what: string, withKey: boolean, signal: AbortSignal | undefined, notFound: string): Promise<FileBody | { location: string }> {
    return withRetry(
      () =>
        this.limit(async () => {
          await this.waitForGate(signal);
          this.requests++;
          let res: Dispatcher.ResponseData;
          try {
            res = await request(url, {
              method: "GET",
              headers: withKey ? { "Zotero-API-Version": "3", "Zotero-API-Key": this.options.apiKey } : {},
              ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher } : {}),
              ...(signal ? { signal } : {}),
            });
          } catch (error) {
            throw classifyNetworkError(error, `Zotero ${what}`);
          }
          const header = (name: string): string | null => firstHeader(res.headers[name]);
          if (res.statusCode >= 200 && res.statusCode < 300) return { body: res.body, size: sizeOf(header("content-length")) };
          await res.body.dump().catch(() => undefined);
          const location = header("location");
          if (res.statusCode >= 300 && res.statusCode < 400 && location) return { location };
          if (res.statusCode === 404) throw new ImportError("ZOTERO_FILE_MISSING", notFound, { status: 404 });
          throw this.httpError({ status: res.statusCode, headers: { get: header } }, what);
        }),
      this.options.retry,
      { sleep: this.sleep, signal },
    );
  }
}

function sizeOf(contentLength: string | null): number | null {
  const n = Number(contentLength);
  return contentLength !== null && Number.isFinite(n) && n >= 0 ? n : null;
}

/** Pure: the URL of rel="next" in a Link header, if any. */
export function nextLink(header: string | null): string | null {
  if (!header) return null;
  for (const part of header.split(",")) {
    const m = /<([^>]+)>\s*;\s*rel="?next"?/i.exec(part.trim());
    if (m) return m[1]!;
  }
  return null;
}
