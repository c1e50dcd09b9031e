import { createHash } from "node:crypto";
import type { Dispatcher } from "undici";
import { request } from "../http/undici.js";
import { ImportError } from "../errors.js";
import type { PaperMetadata } from "../plan/metadata.js";
import { USER_AGENT } from "../http/agent.js";
import { firstHeader } from "../http/headers.js";
import { classifyNetworkError, classifyRefServerAnswer, detailOf, safeJson, type UploadVerdict } from "../retry/classify.js";
import { withRetry, type RetryPolicy } from "../retry/policy.js";
import type { Sleep } from "../util/time.js";
import type { AnswerKind, Pacer } from "../retry/pacer.js";
import { registerSecret } from "../util/redact.js";
import { multipartBody, type MultipartBody } from "./multipart.js";

export interface RefServerOptions {
  baseUrl: string;
  username: string;
  password: string;
  dispatcher: Dispatcher;
  retry: RetryPolicy;
  sleep: Sleep;
  onRetry?: (info: { what: string; error: ImportError; attempt: number; delayMs: number }) => void;
  /** Shared pacing of uploads and login: adaptive in-flight limit, Retry-After gate, breaker. */
  pacer?: Pacer;
  /** The first SIGINT/SIGTERM: no more retries or waits; the attempt in flight finishes. */
  stop?: AbortSignal | undefined;
}

/** How an attempt went, for the pacer. */
function answerKind(outcome: UploadVerdict | ImportError): AnswerKind {
  if (outcome instanceof ImportError) {
    if (outcome.connection) return "unreachable";
    if (outcome.congestion) return "congested";
    return "other";
  }
  if (outcome.kind === "imported" || outcome.kind === "already") return "clean";
  if (outcome.kind === "error") return answerKind(outcome.error);
  return "other";
}

/** What goes with the PDF: the multipart fields of upload_with_metadata, and the metadata call's. */
export type UploadMetadata = PaperMetadata;

export type UploadOutcome = { kind: "imported"; docId: string | null; jobId: string | null } | { kind: "already"; docId: string | null };

export interface KnownLink {
  key: string;
  docId: string | null;
  version: number | null;
  /** The server's metadata for the paper, when its links endpoint tells it (refserver-lite does). */
  title?: string | null;
  authors?: string[] | null;
  year?: number | null;
  doi?: string | null;
  journal?: string | null;
}

/**
 * The answer to a call on an endpoint not every server has (metadata, PDF replacement,
 * deletion): done; the document is not there; or the server has no such route (the original
 * RefServerLite has no PUT …/pdf or DELETE; FastAPI answers an unknown route 404 "Not Found" or
 * 405, a known route with a missing document 404 "Document not found").
 */
export type OptionalCallOutcome = { kind: "ok"; jobId?: string | null } | { kind: "missing-doc" } | { kind: "unsupported"; status: number };

function multipartHeaders(m: MultipartBody): Record<string, string> {
  return { "content-type": m.contentType, "content-length": String(m.length) };
}

/** A filename the server accepts: no path, ends in .pdf. */
export function uploadFilename(name: string | null, fallbackKey: string): string {
  const base = (name ?? "").split(/[\\/]/).pop()!.replace(/[\u0000-\u001f"]/g, "").trim();
  const clean = base === "" || base === "." || base === ".." ? fallbackKey : base;
  // The real server checks the name ends in ".pdf" (lower case) before anything else.
  return /\.pdf$/i.test(clean) ? `${clean.slice(0, -4)}.pdf` : `${clean}.pdf`;
}

/** RefServerLite client: login (with retries), upload_with_metadata, known Zotero keys. */
export class RefServerClient {
  private token: string | null = null;
  /** The server answered GET /api/v1/zotero/links: it is refserver-lite (or speaks its extensions). */
  private listsLinks = false;
  private loginInFlight: Promise<string> | null = null;

  constructor(private readonly options: RefServerOptions) {}

  private url(path: string): string {
    return `${this.options.baseUrl}${path}`;
  }

  /** Log in, retrying "database is locked" (login writes last_login on the real server). */
  async login(signal?: AbortSignal): Promise<string> {
    this.loginInFlight ??= withRetry(
      () => this.paced(signal, () => this.loginOnce(signal)),
      this.options.retry,
      { sleep: this.options.sleep, signal, stop: this.options.stop, consumesRetry: (e) => !this.options.pacer || !e.connection, onRetry: (i) => this.options.onRetry?.({ what: "login", ...i }) },
    )
      .then((token) => {
        this.token = token;
        return token;
      })
      .finally(() => {
        this.loginInFlight = null;
      });
    return this.loginInFlight;
  }

  /** Run one attempt in a pacer slot, telling the pacer how it went. */
  private async paced<T>(signal: AbortSignal | undefined, attempt: () => Promise<T>, kindOf: (value: T) => AnswerKind = () => "clean"): Promise<T> {
    // Waiting for a slot (or a Retry-After) ends at a stop: nothing new is sent then.
    const stop = this.options.stop;
    const slot = await this.options.pacer?.acquire(signal, stop);
    try {
      const value = await attempt();
      const answered = value as { kind?: string; error?: ImportError };
      slot?.release(kindOf(value), answered.kind === "error" ? answered.error?.retryAfterMs : undefined);
      return value;
    } catch (error) {
      const e = error instanceof ImportError ? error : undefined;
      slot?.release(e ? answerKind(e) : "other", e?.retryAfterMs);
      throw error;
    }
  }

  private async loginOnce(signal?: AbortSignal): Promise<string> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.url("/api/v1/auth/login"), {
        method: "POST",
        dispatcher: this.options.dispatcher,
        headers: { "content-type": "application/x-www-form-urlencoded", "user-agent": USER_AGENT },
        body: new URLSearchParams({ username: this.options.username, password: this.options.password }).toString(),
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      throw classifyNetworkError(error, `login to ${this.options.baseUrl}`);
    }
    const text = await res.body.text();
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new ImportError(
        "REFSERVER_AUTH",
        `RefServer refused the login of '${this.options.username}' (${res.statusCode} ${detailOf(text)}): check refserver.username and refserver.password (or REFSERVER_PASSWORD); the user must be an admin`,
        { status: res.statusCode },
      );
    }
    const verdict = classifyRefServerAnswer(res.statusCode, text, firstHeader(res.headers["retry-after"]));
    if (verdict.kind === "error") throw verdict.error;
    const body = safeJson(text) as { access_token?: unknown } | undefined;
    if (!body || typeof body.access_token !== "string") {
      throw new ImportError("REFSERVER_BAD_ANSWER", `login answered ${res.statusCode} without an access_token: check refserver.api_url points at RefServerLite`);
    }
    registerSecret(body.access_token);
    return body.access_token;
  }

  /** A fresh token unless another worker already renewed the one that failed. */
  private async renew(stale: string | null, signal?: AbortSignal): Promise<string> {
    if (this.token !== null && this.token !== stale) return this.token;
    return this.login(signal);
  }

  private async bearer(signal?: AbortSignal): Promise<string> {
    return this.token ?? this.login(signal);
  }

  /**
   * Upload one PDF with its metadata. Retries locks, 5xx, 429 and connection failures;
   * a 409 is success (the key is there); a 401 logs in again once.
   */
  async upload(meta: UploadMetadata, filePath: string, filename: string, signal?: AbortSignal, onRetry?: RefServerOptions["onRetry"]): Promise<UploadOutcome> {
    return withRetry(
      async () => {
        let sentWith: string | null = null;
        const attempt = async (): Promise<UploadVerdict> => {
          const token = await this.bearer(signal);
          sentWith = token;
          return this.paced(signal, () => this.uploadOnce(meta, filePath, filename, token, signal), answerKind);
        };
        let verdict = await attempt();
        if (verdict.kind === "reauth") {
          // The token this request carried is the stale one: if another worker has renewed it
          // meanwhile, use theirs instead of logging in again.
          await this.renew(sentWith, signal);
          verdict = await attempt();
          if (verdict.kind === "reauth") {
            throw new ImportError("REFSERVER_AUTH", "RefServer answered 401 right after a fresh login: check the RefServer user is an admin and its clock", { status: 401 });
          }
        }
        if (verdict.kind === "error") throw verdict.error;
        return verdict;
      },
      this.options.retry,
      {
        sleep: this.options.sleep,
        signal,
        stop: this.options.stop,
        consumesRetry: (e) => !this.options.pacer || !e.connection,
        onRetry: (i) => (onRetry ?? this.options.onRetry)?.({ what: `upload ${meta.zoteroKey}`, ...i }),
      },
    );
  }

  /** The multipart fields of upload_with_metadata, in the order sent (metadata before the file). */
  private uploadFields(meta: UploadMetadata): [string, string][] {
    const fields: [string, string][] = [["title", meta.title], ["authors", JSON.stringify(meta.authors)]];
    if (meta.year !== null) fields.push(["year", String(meta.year)]);
    fields.push(
      ["zotero_key", meta.zoteroKey],
      ["zotero_library_id", meta.libraryId],
      ["zotero_version", String(meta.version)],
      ["collection_keys", JSON.stringify(meta.collectionKeys)],
      ["tags", JSON.stringify(meta.tags)],
    );
    return fields;
  }

  private async uploadOnce(meta: UploadMetadata, filePath: string, filename: string, token: string, signal?: AbortSignal): Promise<UploadVerdict> {
    const multipart = await multipartBody(this.uploadFields(meta), { name: "file", path: filePath, filename, contentType: "application/pdf" });
    return this.sendUpload(meta, multipart, token, signal);
  }

  private async sendUpload(meta: UploadMetadata, multipart: MultipartBody, token: string, signal?: AbortSignal): Promise<UploadVerdict> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.url("/api/v1/papers/upload_with_metadata"), {
        method: "POST",
        dispatcher: this.options.dispatcher,
        headers: { authorization: `Bearer ${token}`, "user-agent": USER_AGENT, ...multipartHeaders(multipart) },
        body: multipart.body,
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      multipart.dispose();
      throw classifyNetworkError(error, `upload of ${meta.zoteroKey}`);
    }
    let text: string;
    try {
      text = await res.body.text();
    } catch (error) {
      throw classifyNetworkError(error, `upload of ${meta.zoteroKey}`);
    } finally {
      // Once the answer is read the request is over; an early answer (a 4xx before the file
      // was read) leaves the file open until here.
      multipart.dispose();
    }
    return classifyRefServerAnswer(res.statusCode, text, firstHeader(res.headers["retry-after"]));
  }

  /**
   * One call of an endpoint beyond the upload, retried and paced like an upload (locks, 5xx,
   * 429, connection failures; one re-login on 401). 404/405 say whether the document or the
   * route is missing; every other status is the failure policy's (src/failure/policy.ts).
   */
  private async call(what: string, send: (token: string) => Promise<{ status: number; text: string; retryAfter: string | null }>, signal?: AbortSignal, onRetry?: RefServerOptions["onRetry"]): Promise<OptionalCallOutcome> {
    let sentWith: string | null = null;
    const once = async (): Promise<OptionalCallOutcome | "reauth"> => {
      const token = await this.bearer(signal);
      sentWith = token;
      return this.paced(
        signal,
        async () => {
          const { status, text, retryAfter } = await send(token);
          if (status >= 200 && status < 300) {
            const body = safeJson(text) as { job_id?: unknown } | undefined;
            return { kind: "ok", jobId: body && typeof body.job_id === "string" ? body.job_id : null } as const;
          }
          if (status === 405) return { kind: "unsupported", status } as const;
          if (status === 404) return /document not found/i.test(detailOf(text)) ? ({ kind: "missing-doc" } as const) : ({ kind: "unsupported", status } as const);
          const verdict = classifyRefServerAnswer(status, text, retryAfter);
          if (verdict.kind === "reauth") return "reauth" as const;
          if (verdict.kind === "error") throw new ImportError(verdict.error.code, `${what}: ${verdict.error.message}`, { status, retriable: verdict.error.retriable, congestion: verdict.error.congestion, ...(verdict.error.retryAfterMs !== undefined ? { retryAfterMs: verdict.error.retryAfterMs } : {}) });
          return { kind: "ok" } as const;
        },
        () => "clean",
      );
    };
    return withRetry(
      async () => {
        let outcome = await once();
        if (outcome === "reauth") {
          await this.renew(sentWith, signal);
          outcome = await once();
          if (outcome === "reauth") throw new ImportError("REFSERVER_AUTH", `${what}: RefServer answered 401 right after a fresh login`, { status: 401 });
        }
        return outcome;
      },
      this.options.retry,
      { sleep: this.options.sleep, signal, stop: this.options.stop, consumesRetry: (e) => !this.options.pacer || !e.connection, onRetry: (i) => (onRetry ?? this.options.onRetry)?.({ what, ...i }) },
    );
  }

  private async send(method: "POST" | "PUT" | "DELETE", path: string, token: string, what: string, body: { form?: URLSearchParams; multipart?: MultipartBody }, signal?: AbortSignal): Promise<{ status: number; text: string; retryAfter: string | null }> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.url(path), {
        method,
        dispatcher: this.options.dispatcher,
        headers: {
          authorization: `Bearer ${token}`,
          "user-agent": USER_AGENT,
          ...(body.form ? { "content-type": "application/x-www-form-urlencoded" } : {}),
          ...(body.multipart ? multipartHeaders(body.multipart) : {}),
        },
        ...(body.form ? { body: body.form.toString() } : body.multipart ? { body: body.multipart.body } : {}),
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      body.multipart?.dispose();
      throw classifyNetworkError(error, what);
    }
    let text: string;
    try {
      text = await res.body.text();
    } catch (error) {
      throw classifyNetworkError(error, what);
    } finally {
      body.multipart?.dispose();
    }
    return { status: res.statusCode, text, retryAfter: firstHeader(res.headers["retry-after"]) };
  }

  /**
   * Whether a fresh upload_with_metadata already told the server all `meta` says, so the
   * metadata call after it would change nothing: refserver-lite (it lists its links) stores the
   * upload's title, authors (the same JSON array), year, Zotero version, tags and collections,
   * and the paper has no journal, DOI or abstract. The original RefServerLite always gets the
   * call (it takes authors in its own format there).
   */
  uploadCarriesAll(meta: UploadMetadata): boolean {
    return this.listsLinks && !meta.journal && !meta.doi && !meta.abstract;
  }

  /**
   * POST /api/v1/document/{doc_id}/metadata: the fields upload_with_metadata has no room for
   * (journal, DOI, abstract), and later edits. Authors go as one comma-separated string of
   * "First Last" names (the original RefServerLite's format); refserver-lite also takes the
   * Zotero version, tags and collections, so its Zotero link stays current.
   */
  async updateMetadata(docId: string, meta: UploadMetadata, signal?: AbortSignal, onRetry?: RefServerOptions["onRetry"]): Promise<OptionalCallOutcome> {
    const form = new URLSearchParams();
    form.set("title", meta.title);
    // The original takes one comma-separated string; refserver-lite (which lists its links)
    // also takes a JSON array, which keeps a name with a comma in it whole.
    form.set("authors", this.listsLinks ? JSON.stringify(meta.authors) : meta.authors.join(", "));
    form.set("journal", meta.journal ?? "");
    if (meta.year !== null) form.set("year", String(meta.year));
    form.set("abstract", meta.abstract ?? "");
    form.set("doi", meta.doi ?? "");
    form.set("zotero_version", String(meta.version));
    form.set("tags", JSON.stringify(meta.tags));
    form.set("collection_keys", JSON.stringify(meta.collectionKeys));
    const what = `metadata of ${meta.zoteroKey}`;
    return this.call(what, (token) => this.send("POST", `/api/v1/document/${encodeURIComponent(docId)}/metadata`, token, what, { form }, signal), signal, onRetry);
  }

  /** PUT /api/v1/document/{doc_id}/pdf (refserver-lite): replace the stored PDF, same doc_id. */
  async replacePdf(docId: string, meta: UploadMetadata, filePath: string, filename: string, signal?: AbortSignal, onRetry?: RefServerOptions["onRetry"]): Promise<OptionalCallOutcome> {
    const what = `PDF replacement of ${meta.zoteroKey}`;
    return this.call(
      what,
      async (token) => {
        const multipart = await multipartBody([["zotero_version", String(meta.version)]], { name: "file", path: filePath, filename, contentType: "application/pdf" });
        return this.send("PUT", `/api/v1/document/${encodeURIComponent(docId)}/pdf`, token, what, { multipart }, signal);
      },
      signal,
      onRetry,
    );
  }

  /** DELETE /api/v1/document/{doc_id} (refserver-lite): remove a paper gone from Zotero (--prune). */
  async deleteDocument(docId: string, key: string, signal?: AbortSignal, onRetry?: RefServerOptions["onRetry"]): Promise<OptionalCallOutcome> {
    const what = `removal of ${key}`;
    return this.call(what, (token) => this.send("DELETE", `/api/v1/document/${encodeURIComponent(docId)}`, token, what, {}, signal), signal, onRetry);
  }

  /**
   * The MD5 of the PDF the server stores for a document (GET /download/pdf/{doc_id}, streamed
   * through the hash, never held whole); null when the server has no such document.
   */
  async storedMd5(docId: string, signal?: AbortSignal): Promise<string | null> {
    const what = `download of ${docId}`;
    return withRetry(
      async () => {
        const token = await this.bearer(signal);
        let res: Dispatcher.ResponseData;
        try {
          res = await request(this.url(`/download/pdf/${encodeURIComponent(docId)}`), {
            method: "GET",
            dispatcher: this.options.dispatcher,
            headers: { authorization: `Bearer ${token}`, "user-agent": USER_AGENT },
            ...(signal ? { signal } : {}),
          });
        } catch (error) {
          throw classifyNetworkError(error, what);
        }
        if (res.statusCode === 404) {
          await res.body.dump().catch(() => undefined);
          return null;
        }
        if (res.statusCode !== 200) {
          const text = await res.body.text().catch(() => "");
          const verdict = classifyRefServerAnswer(res.statusCode, text, firstHeader(res.headers["retry-after"]));
          if (verdict.kind === "error") throw verdict.error;
          throw new ImportError("REFSERVER_AUTH", `${what}: the RefServer refused the token (${res.statusCode})`, { status: res.statusCode });
        }
        const hash = createHash("md5");
        try {
          for await (const chunk of res.body) hash.update(chunk as Buffer);
        } catch (error) {
          throw classifyNetworkError(error, what);
        }
        return hash.digest("hex");
      },
      this.options.retry,
      { sleep: this.options.sleep, signal, stop: this.options.stop },
    );
  }

  /**
   * The Zotero keys the server already holds for a library, when it can tell
   * (the companion server's GET /api/v1/zotero/links); null when it cannot.
   */
  async knownKeys(libraryId: string, signal?: AbortSignal): Promise<Map<string, KnownLink> | null> {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.url(`/api/v1/zotero/links?library_id=${encodeURIComponent(libraryId)}`), {
        method: "GET",
        dispatcher: this.options.dispatcher,
        headers: { authorization: `Bearer ${await this.bearer(signal)}`, "user-agent": USER_AGENT },
        ...(signal ? { signal } : {}),
      });
    } catch {
      return null;
    }
    const text = await res.body.text().catch(() => "");
    if (res.statusCode !== 200) return null;
    const body = safeJson(text) as { links?: unknown } | unknown[] | undefined;
    const list = Array.isArray(body) ? body : body && typeof body === "object" && Array.isArray((body as { links?: unknown }).links) ? ((body as { links: unknown[] }).links) : null;
    if (!list) return null;
    this.listsLinks = true;
    const out = new Map<string, KnownLink>();
    for (const entry of list) {
      if (!entry || typeof entry !== "object") continue;
      const e = entry as Record<string, unknown>;
      const key = typeof e.zotero_key === "string" ? e.zotero_key : typeof e.key === "string" ? e.key : null;
      if (!key) continue;
      const str = (v: unknown): string | null | undefined => (typeof v === "string" ? v : v === null ? null : undefined);
      out.set(key, {
        key,
        docId: typeof e.doc_id === "string" ? e.doc_id : null,
        version: typeof e.zotero_version === "number" ? e.zotero_version : null,
        ...("title" in e ? { title: str(e.title) ?? null } : {}),
        ...("authors" in e ? { authors: Array.isArray(e.authors) ? e.authors.filter((a): a is string => typeof a === "string") : null } : {}),
        ...("year" in e ? { year: typeof e.year === "number" ? e.year : null } : {}),
        ...("doi" in e ? { doi: str(e.doi) ?? null } : {}),
        ...("journal" in e ? { journal: str(e.journal) ?? null } : {}),
      });
    }
    return out;
  }
}
