import pLimit, { type LimitFunction } from "p-limit";
import type { Dispatcher } from "undici";
import { request } from "../http/undici.js";
import { ImportError } from "../errors.js";
import { firstHeader } from "../http/headers.js";
import { AnySignal } from "../util/signals.js";
import { statusError, type Service } from "../failure/policy.js";
import { NotBeforeGate } from "../retry/gate.js";
import { classifyNetworkError } from "../retry/classify.js";
import { withRetry, type RetryPolicy } from "../retry/policy.js";
import { parseRetryAfter, realClock, realSleep, type Clock, type Sleep } from "../util/time.js";
import { ListingBuilder, type FileEvidence, type RawZoteroObject } from "./normalise.js";
import type { Attachment, Collection, FileBody, GoneKeys, LibraryRef, Listing, ListOptions, ZoteroSource } from "./types.js";

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
  /** Each retry of a listing request, before its wait (shown like upload retries). */
  onRetry?: (info: { what: string; error: ImportError; attempt: number; delayMs: number }) => void;
  /** A warning worth one line (Zotero's counts disagreeing with what arrived). */
  onWarning?: (message: string) => void;
  /** The first SIGINT/SIGTERM: no more retries; the attempt in flight finishes. */
  stop?: AbortSignal | undefined;
  /** What a missing links.enclosure means (see normalise.ts). Default "web". */
  fileEvidence?: FileEvidence;
}

/** Zotero asks clients to keep at most this many requests in flight. */
export const ZOTERO_MAX_CONCURRENT = 4;
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
  /** The one politeness gate: Backoff and Retry-After from any Zotero answer hold every request. */
  readonly gate: NotBeforeGate;
  private readonly stop: AbortSignal | undefined;
  requests = 0;

  constructor(private readonly options: WebApiOptions) {
    this.library = options.library;
    this.base = `${options.baseUrl.replace(/\/+$/, "")}/${options.library.type === "group" ? "groups" : "users"}/${options.library.id}`;
    this.limit = pLimit(options.maxConcurrent ?? ZOTERO_MAX_CONCURRENT);
    this.sleep = options.sleep ?? realSleep;
    this.clock = options.clock ?? realClock;
    this.gate = new NotBeforeGate(this.clock, this.sleep, options.onWait);
    this.stop = options.stop;
  }

  private libraryLabel(): string {
    return `${this.library.type} library ${this.library.id}`;
  }

  /** Backoff (and Retry-After on a 429/503) from any Zotero or storage answer pause every request. */
  private heed(status: number, header: (name: string) => string | null, who: string): void {
    const backoff = parseRetryAfter(header("backoff"), this.clock());
    if (backoff) this.gate.push(backoff, `${who} asked to back off`);
    if (status === 429 || status === 503) this.gate.push(parseRetryAfter(header("retry-after"), this.clock()) ?? 5000, `${who} answered ${status}`);
  }

  /** Where a request went, without its query (never holds the key: that travels in a header). */
  private where(url: string): string {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  }

  /** One API request with retries, under the concurrency limit and the shared gate. */
  private async request(url: string, what: string, signal?: AbortSignal): Promise<Response> {
    return withRetry(
      () =>
        this.limit(async () => {
          await this.gate.wait(new AnySignal(signal, this.stop).signal);
          // After a stop no new request starts (a listing's next page, a collection page).
          if (this.stop?.aborted) throw new ImportError("INTERRUPTED", `Zotero ${what}: stopped before this request`);
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
            throw classifyNetworkError(error, `Zotero ${what} (${this.where(url)})`);
          }
          this.heed(response.status, (n) => response.headers.get(n), "Zotero");
          if (response.ok) return response;
          await response.text().catch(() => "");
          throw this.httpError("zotero", response.status, what);
        }),
      this.options.retry,
      { sleep: this.sleep, signal, stop: this.options.stop, onRetry: (i) => this.options.onRetry?.({ what: `Zotero ${what}`, ...i }) },
    );
  }

  private httpError(service: Service, status: number, what: string): ImportError {
    if (service !== "storage" && (status === 403 || status === 401)) {
      return statusError(
        service,
        status,
        `Zotero refused the API key (${status}) for ${this.libraryLabel()}: check zotero.api_key (or ZOTERO_API_KEY) has read access to it, and zotero.library_id/library_type`,
      );
    }
    if (service === "zotero-file" && status === 404) {
      return statusError(service, status, "PDF not synced to Zotero storage (Zotero answered 404 for its file)");
    }
    if (service === "storage") {
      const hint = status === 403 ? " (a signed link that expired or was refused; not Zotero's verdict on the key)" : status === 404 ? " (not Zotero's verdict: Zotero lists the file)" : "";
      return statusError(service, status, `Zotero ${what}: the storage host answered ${status}${hint}`);
    }
    if (status === 404) return statusError(service, status, `Zotero ${what}: not found (404)`);
    if (status === 429 || status === 503) return statusError(service, status, `Zotero ${what}: ${status}, retrying after the wait Zotero asked for`, { retryAfterMs: 0 });
    if (status >= 500) return statusError(service, status, `Zotero ${what}: server error ${status}`);
    return statusError(service, status, `Zotero ${what}: unexpected answer ${status}`);
  }

  /**
   * Every page of a listing. Counts are never trusted for completeness: paging goes on until
   * a page comes back shorter than asked (or empty), whatever Total-Results and Link say;
   * when they disagree with what arrived, one warning says so.
   */
  private async fetchAll(
    path: string,
    query: Record<string, string>,
    signal?: AbortSignal,
    onPage?: (objects: RawZoteroObject[]) => void,
  ): Promise<{ objects: RawZoteroObject[]; version: number }> {
    const params = new URLSearchParams({ format: "json", limit: String(PAGE), ...query });
    let url: string | null = `${this.base}${path}?${params}`;
    const objects: RawZoteroObject[] = [];
    let version: number | null = null;
    let received = 0;
    let announced: number | null = null;
    let linkEnded = false;
    while (url) {
      const response = await this.request(url, `listing ${path}`, signal);
      const body: unknown = await response.json().catch(() => {
        throw new ImportError("ZOTERO_BAD_DATA", `Zotero listing ${path}: the answer is not JSON: check zotero.api_url points at the Zotero API`);
      });
      if (!Array.isArray(body)) throw new ImportError("ZOTERO_BAD_DATA", `Zotero listing ${path}: expected a JSON array: check zotero.api_url`);
      if (onPage) onPage(body as RawZoteroObject[]);
      else objects.push(...(body as RawZoteroObject[]));
      received += body.length;
      // The sync point is the version when the listing began: anything changed while we page
      // has a higher version and is listed again by the next run.
      const pageVersion = Number(response.headers.get("last-modified-version") ?? 0) || 0;
      version = version === null ? pageVersion : Math.min(version, pageVersion);
      const total = Number(response.headers.get("total-results"));
      if (response.headers.get("total-results") !== null && Number.isFinite(total)) announced = total;
      const asked = Number(new URL(url).searchParams.get("limit") ?? PAGE) || PAGE;
      const next = nextLink(response.headers.get("link"));
      if (body.length === 0 || (body.length < asked && !next)) {
        url = null;
      } else if (next) {
        url = next;
      } else {
        linkEnded = true;
        const start = Number(new URL(url).searchParams.get("start") ?? 0) + body.length;
        params.set("start", String(start));
        url = `${this.base}${path}?${params}`;
      }
    }
    if (announced !== null && announced !== received) {
      this.options.onWarning?.(`Zotero listing ${path}: Total-Results said ${announced}, ${received} arrived; paged until a short page, trusting what arrived`);
    } else if (linkEnded && announced === null) {
      this.options.onWarning?.(`Zotero listing ${path}: no Link header on a full page; paged on until a short page`);
    }
    return { objects, version: version ?? 0 };
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
    const builder = new ListingBuilder(this.options.fileEvidence ?? "web");
    const add = (objects: RawZoteroObject[]): void => builder.add(objects);
    // Top-level items and all attachments: every object we need, and none of the child notes
    // (often as many as the papers), so fewer pages. Both listings run at once.
    const [top, attachments] = await Promise.all([
      this.fetchAll("/items/top", sinceQuery, options.signal, add),
      this.fetchAll("/items", { ...sinceQuery, itemType: "attachment" }, options.signal, add),
    ]);
    // The sync point is the older of the two: whatever changed meanwhile is listed again next time.
    const version = Math.min(top.version, attachments.version);
    if (since !== undefined) {
      // Incremental: bring in the parents of changed attachments (a changed parent's new
      // attachments changed too), and the unfinished keys of earlier runs with their parents.
      let wanted = [...new Set([...builder.missingParents(), ...(options.alsoKeys ?? []).filter((k) => !builder.has(k))])];
      for (let round = 0; wanted.length > 0 && round < 3; round++) {
        for (let i = 0; i < wanted.length; i += KEYS_PER_REQUEST) {
          await this.fetchAll("/items", { itemKey: wanted.slice(i, i + KEYS_PER_REQUEST).join(",") }, options.signal, add);
        }
        wanted = builder.missingParents().filter((k) => !wanted.includes(k));
      }
      // Items whose uploaded PDF went away: their other attachments, unchanged, are not in a
      // `since` listing, yet one of them may be the PDF now.
      for (const key of options.withChildren ?? []) {
        try {
          if (!builder.has(key)) await this.fetchAll("/items", { itemKey: key }, options.signal, add);
          await this.fetchAll(`/items/${encodeURIComponent(key)}/children`, {}, options.signal, add);
        } catch (error) {
          // Deleted meanwhile: the next run's trash/deletion check tells.
          if (!(error instanceof ImportError && error.code === "ZOTERO_NOT_FOUND")) throw error;
        }
      }
    }
    const listing = builder.build(this.library, version);
    return { ...listing, collections: [], requests: this.requests - before };
  }

  /**
   * Which of `keys` are in the trash (`/items/trash?format=keys`) or deleted (`/deleted?since=0`:
   * every deletion Zotero still remembers). Two requests, keys only.
   */
  async goneKeys(keys: readonly string[], signal?: AbortSignal): Promise<GoneKeys> {
    const trash = new Set<string>();
    const deleted = new Set<string>();
    if (keys.length === 0) return { trash, deleted };
    const wanted = new Set(keys);
    const trashText = await (await this.request(`${this.base}/items/trash?format=keys`, "trash", signal)).text();
    for (const k of trashText.split(/\s+/)) if (wanted.has(k)) trash.add(k);
    const body: unknown = await (await this.request(`${this.base}/deleted?since=0`, "deletions", signal)).json().catch(() => null);
    const items = body && typeof body === "object" && Array.isArray((body as { items?: unknown }).items) ? (body as { items: unknown[] }).items : [];
    for (const k of items) if (typeof k === "string" && wanted.has(k)) deleted.add(k);
    return { trash, deleted };
  }

  /**
   * One attempt at opening an attachment's file: `/items/KEY/file` on Zotero's API, then the
   * redirect to the storage host, followed by hand so the API key never leaves Zotero's API.
   * Not retried here: the download retries the whole thing, so a retry gets a fresh redirect
   * (an expired pre-signed URL is not asked again). Zotero's own 404 means "no file"; the
   * storage host's answers never do (see the failure policy).
   */
  async openFile(attachment: Attachment, signal?: AbortSignal): Promise<FileBody> {
    const what = `file of ${attachment.key}`;
    let target = `${this.base}/items/${encodeURIComponent(attachment.key)}/file`;
    let next = await this.limit(() => this.fetchFile(target, what, "zotero-file", signal));
    for (let hops = 1; !("body" in next); hops++) {
      if (hops > 5) throw new ImportError("ZOTERO_STORAGE", `Zotero ${what}: too many redirects`, { retriable: true });
      target = new URL(next.location, target).toString();
      // The storage host gets no API key: only Zotero's own API sees it.
      const ours = new URL(target).origin === new URL(this.options.baseUrl).origin && new URL(target).pathname.startsWith(new URL(this.base).pathname);
      const hop = target;
      next = await this.limit(() => this.fetchFile(hop, what, ours ? "zotero-file" : "storage", signal));
    }
    return next;
  }

  /**
   * GET a file (or its redirect) through undici.request: the bytes of a PDF come as a Node
   * stream, never through fetch's web streams (a third more CPU here). Gated like every other
   * request; a redirect is handed back, not followed.
   */
  private async fetchFile(url: string, what: string, service: "zotero-file" | "storage", signal: AbortSignal | undefined): Promise<FileBody | { location: string }> {
    await this.gate.wait(signal);
    this.requests++;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        method: "GET",
        headers: service === "zotero-file" ? { "Zotero-API-Version": "3", "Zotero-API-Key": this.options.apiKey } : {},
        ...(this.options.dispatcher ? { dispatcher: this.options.dispatcher } : {}),
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      const e = classifyNetworkError(error, service === "storage" ? `Zotero ${what} from the storage host ${new URL(url).origin}` : `Zotero ${what} (${this.where(url)})`);
      // A storage host that cannot be reached is one paper's failure, not the run's.
      throw e.code === "NETWORK" && service === "storage" ? new ImportError("ZOTERO_STORAGE", e.message, { retriable: e.retriable, cause: error }) : e;
    }
    const header = (name: string): string | null => firstHeader(res.headers[name]);
    this.heed(res.statusCode, header, service === "storage" ? "Zotero's storage host" : "Zotero");
    if (res.statusCode >= 200 && res.statusCode < 300) return { body: res.body, size: sizeOf(header("content-length")) };
    await res.body.dump().catch(() => undefined);
    const location = header("location");
    if (res.statusCode >= 300 && res.statusCode < 400 && location) return { location };
    throw this.httpError(service, res.statusCode, what);
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
