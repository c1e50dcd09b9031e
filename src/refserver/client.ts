import { openAsBlob } from "node:fs";
import { FormData, request, type Dispatcher } from "undici";
import { ImportError } from "../errors.js";
import { USER_AGENT } from "../http/agent.js";
import { firstHeader } from "../http/headers.js";
import { classifyNetworkError, classifyRefServerAnswer, detailOf, safeJson, type UploadVerdict } from "../retry/classify.js";
import { withRetry, type RetryPolicy } from "../retry/policy.js";
import type { Sleep } from "../util/time.js";
import type { AnswerKind, Pacer } from "../retry/pacer.js";
import { registerSecret } from "../util/redact.js";

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

/** What goes with the PDF: the multipart fields of upload_with_metadata. */
export interface UploadMetadata {
  title: string;
  authors: string[];
  year: number | null;
  zoteroKey: string;
  libraryId: string;
  version: number;
  collectionKeys: string[];
  tags: string[];
}

export type UploadOutcome = { kind: "imported"; docId: string | null; jobId: string | null } | { kind: "already"; docId: string | null };

export interface KnownLink {
  key: string;
  docId: string | null;
  version: number | null;
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
    const slot = await this.options.pacer?.acquire(stop && signal ? AbortSignal.any([signal, stop]) : (stop ?? signal));
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
        const attempt = async (): Promise<UploadVerdict> => {
          const token = await this.bearer(signal);
          return this.paced(signal, () => this.uploadOnce(meta, filePath, filename, token, signal), answerKind);
        };
        let verdict = await attempt();
        if (verdict.kind === "reauth") {
          const stale = this.token;
          await this.renew(stale, signal);
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

  private async uploadOnce(meta: UploadMetadata, filePath: string, filename: string, token: string, signal?: AbortSignal): Promise<UploadVerdict> {
    const form = new FormData();
    // Metadata first, the file last: the server can reject before reading megabytes.
    form.append("title", meta.title);
    form.append("authors", JSON.stringify(meta.authors));
    if (meta.year !== null) form.append("year", String(meta.year));
    form.append("zotero_key", meta.zoteroKey);
    form.append("zotero_library_id", meta.libraryId);
    form.append("zotero_version", String(meta.version));
    form.append("collection_keys", JSON.stringify(meta.collectionKeys));
    form.append("tags", JSON.stringify(meta.tags));
    let blob: Blob;
    try {
      blob = await openAsBlob(filePath, { type: "application/pdf" });
    } catch (error) {
      throw new ImportError("FILE_IO", `cannot read ${filePath} (${(error as NodeJS.ErrnoException).code}): the download cache changed under us`, { retriable: true });
    }
    form.append("file", blob, filename);
    let res: Dispatcher.ResponseData;
    try {
      res = await request(this.url("/api/v1/papers/upload_with_metadata"), {
        method: "POST",
        dispatcher: this.options.dispatcher,
        headers: { authorization: `Bearer ${token}`, "user-agent": USER_AGENT },
        body: form,
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      throw classifyNetworkError(error, `upload of ${meta.zoteroKey}`);
    }
    let text: string;
    try {
      text = await res.body.text();
    } catch (error) {
      throw classifyNetworkError(error, `upload of ${meta.zoteroKey}`);
    }
    return classifyRefServerAnswer(res.statusCode, text, firstHeader(res.headers["retry-after"]));
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
    const out = new Map<string, KnownLink>();
    for (const entry of list) {
      if (!entry || typeof entry !== "object") continue;
      const e = entry as Record<string, unknown>;
      const key = typeof e.zotero_key === "string" ? e.zotero_key : typeof e.key === "string" ? e.key : null;
      if (!key) continue;
      out.set(key, { key, docId: typeof e.doc_id === "string" ? e.doc_id : null, version: typeof e.zotero_version === "number" ? e.zotero_version : null });
    }
    return out;
  }
}
