/**
 * What a failure means, as data, in one place (undici keeps its retry policy the same way:
 * status codes and error codes, read by one function).
 *
 * Two tables:
 * - STATUS_POLICY: for each service we talk to, an HTTP status → what it means;
 * - CODE_POLICY: for each error code, whether it is a verdict on one paper or on the run,
 *   and the exit code it gives when it ends the run.
 * Every client (Zotero Web API, Zotero's local API, the storage host files come from, the
 * RefServer) asks `statusVerdict`; the pipeline and the CLI ask `codePolicy` / `exitCodeFor`.
 */
import { ExitCode } from "../cli/exit-codes.js";
import { ImportError, type ErrorCode } from "../errors.js";

/**
 * Who answered:
 * - `zotero`: Zotero's API (listings, collections);
 * - `zotero-file`: Zotero's API answering `/items/KEY/file` (its 404 is Zotero's verdict: no file);
 * - `storage`: the host a file redirect points at (S3 for zotero.org). Its answers are never
 *   Zotero's verdict: a 403 is an expired pre-signed URL, a 404 a hiccup;
 * - `refserver`: the paper server (login, upload, links).
 */
export type Service = "zotero" | "zotero-file" | "storage" | "refserver";

/**
 * - `retry`: try again after a backoff;
 * - `congestion`: try again, and slow down (the pacer halves, the gate holds everyone);
 * - `reauth`: log in again, then try again once;
 * - `no-file`: the source says this attachment has no file: try the item's next PDF;
 * - `permanent`: this paper fails until something changes (the next run tries again);
 * - `fatal`: the whole run stops (credentials refused).
 */
export type Disposition = "retry" | "congestion" | "reauth" | "no-file" | "permanent" | "fatal";

export interface StatusRule {
  /** One status, or an inclusive range. */
  status: number | readonly [number, number];
  disposition: Disposition;
  code: ErrorCode;
  /** Only when the answer's detail matches (FastAPI's "database is locked"). */
  detail?: RegExp;
}

const LOCKED = /database is locked|database is busy|SQLITE_BUSY/i;

/** First matching rule wins; the last rule of each list catches everything else. */
export const STATUS_POLICY: Readonly<Record<Service, readonly StatusRule[]>> = {
  zotero: [
    { status: [401, 403], disposition: "fatal", code: "ZOTERO_AUTH" },
    { status: 404, disposition: "permanent", code: "ZOTERO_NOT_FOUND" },
    { status: 429, disposition: "congestion", code: "ZOTERO_HTTP" },
    { status: 503, disposition: "congestion", code: "ZOTERO_HTTP" },
    { status: [500, 599], disposition: "retry", code: "ZOTERO_HTTP" },
    { status: [0, 999], disposition: "permanent", code: "ZOTERO_HTTP" },
  ],
  "zotero-file": [
    { status: [401, 403], disposition: "fatal", code: "ZOTERO_AUTH" },
    { status: 404, disposition: "no-file", code: "ZOTERO_FILE_MISSING" },
    { status: 429, disposition: "congestion", code: "ZOTERO_HTTP" },
    { status: 503, disposition: "congestion", code: "ZOTERO_HTTP" },
    { status: [500, 599], disposition: "retry", code: "ZOTERO_HTTP" },
    { status: [0, 999], disposition: "permanent", code: "ZOTERO_HTTP" },
  ],
  storage: [
    { status: 429, disposition: "congestion", code: "ZOTERO_STORAGE" },
    { status: 503, disposition: "congestion", code: "ZOTERO_STORAGE" },
    // 403 (expired pre-signed URL), 404 (a hiccup), 5xx, anything else: a fresh redirect may work.
    { status: [0, 999], disposition: "retry", code: "ZOTERO_STORAGE" },
  ],
  refserver: [
    { status: 401, disposition: "reauth", code: "REFSERVER_AUTH" },
    { status: 403, disposition: "fatal", code: "REFSERVER_AUTH" },
    { status: 429, disposition: "congestion", code: "REFSERVER_UNAVAILABLE" },
    { status: 503, disposition: "congestion", code: "REFSERVER_UNAVAILABLE" },
    { status: [500, 599], disposition: "congestion", code: "REFSERVER_LOCKED", detail: LOCKED },
    { status: [500, 599], disposition: "retry", code: "REFSERVER_UNAVAILABLE" },
    // 400, 404, 413, 415, 422…: the request itself is wrong; retrying cannot help.
    { status: [0, 999], disposition: "permanent", code: "REFSERVER_REJECTED" },
  ],
};

function statusMatches(rule: StatusRule, status: number): boolean {
  return typeof rule.status === "number" ? rule.status === status : status >= rule.status[0] && status <= rule.status[1];
}

/** Pure: what a non-2xx answer of `service` means. */
export function statusVerdict(service: Service, status: number, detail = ""): StatusRule {
  for (const rule of STATUS_POLICY[service]) {
    if (statusMatches(rule, status) && (!rule.detail || rule.detail.test(detail))) return rule;
  }
  /* c8 ignore next */
  throw new Error(`no failure policy for ${service} ${status}`);
}

/** The ImportError for a non-2xx answer: code, retriable and congestion from the table; the words from the caller. */
export function statusError(service: Service, status: number, message: string, options: { detail?: string; retryAfterMs?: number | undefined } = {}): ImportError {
  const rule = statusVerdict(service, status, options.detail ?? "");
  const retriable = rule.disposition === "retry" || rule.disposition === "congestion";
  return new ImportError(rule.code, message, {
    status,
    retriable,
    congestion: rule.disposition === "congestion",
    ...(options.retryAfterMs !== undefined ? { retryAfterMs: options.retryAfterMs } : {}),
  });
}

/** Transport error codes (Node, undici) that mean "the connection failed; try again". */
export const CONNECTION_ERROR_CODES: ReadonlySet<string> = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  "ENOTFOUND",
  "UND_ERR_SOCKET",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_CLOSED",
  "UND_ERR_REQ_RETRY",
  "UND_ERR_RES_CONTENT_LENGTH_MISMATCH",
]);

/**
 * - `paper`: a verdict on one paper (recorded as failed or skipped; the run goes on);
 * - `run`: stops the whole run with `exit`;
 * `permanent`: retrying in this run cannot help (the next run still tries again, unless skipped).
 */
export interface CodePolicy {
  scope: "paper" | "run";
  permanent: boolean;
  exit: ExitCode;
}

export const CODE_POLICY: Readonly<Record<ErrorCode, CodePolicy>> = {
  USAGE: { scope: "run", permanent: true, exit: ExitCode.Usage },
  CONFIG_INVALID: { scope: "run", permanent: true, exit: ExitCode.Usage },
  CONFIG_MISSING: { scope: "run", permanent: true, exit: ExitCode.Usage },
  CHECKPOINT_INVALID: { scope: "run", permanent: true, exit: ExitCode.Usage },
  CHECKPOINT_WRITE: { scope: "run", permanent: false, exit: ExitCode.SomeFailed },
  ZOTERO_AUTH: { scope: "run", permanent: true, exit: ExitCode.Auth },
  REFSERVER_AUTH: { scope: "run", permanent: true, exit: ExitCode.Auth },
  LOCK_BUSY: { scope: "run", permanent: false, exit: ExitCode.Unavailable },
  INTERRUPTED: { scope: "run", permanent: false, exit: ExitCode.Interrupted },
  // A listing that fails ends the run; a download that fails is one paper's failure.
  ZOTERO_NOT_FOUND: { scope: "paper", permanent: true, exit: ExitCode.SomeFailed },
  ZOTERO_HTTP: { scope: "paper", permanent: false, exit: ExitCode.Unavailable },
  ZOTERO_BAD_DATA: { scope: "paper", permanent: true, exit: ExitCode.SomeFailed },
  ZOTERO_FILE_MISSING: { scope: "paper", permanent: true, exit: ExitCode.SomeFailed },
  ZOTERO_STORAGE: { scope: "paper", permanent: false, exit: ExitCode.SomeFailed },
  DOWNLOAD_MD5_MISMATCH: { scope: "paper", permanent: false, exit: ExitCode.SomeFailed },
  FILE_IO: { scope: "paper", permanent: false, exit: ExitCode.SomeFailed },
  REFSERVER_LOCKED: { scope: "paper", permanent: false, exit: ExitCode.Unavailable },
  REFSERVER_UNAVAILABLE: { scope: "paper", permanent: false, exit: ExitCode.Unavailable },
  REFSERVER_REJECTED: { scope: "paper", permanent: true, exit: ExitCode.SomeFailed },
  REFSERVER_BAD_ANSWER: { scope: "paper", permanent: true, exit: ExitCode.SomeFailed },
  NETWORK: { scope: "paper", permanent: false, exit: ExitCode.Unavailable },
};

export function codePolicy(code: ErrorCode): CodePolicy {
  return CODE_POLICY[code];
}

/**
 * The exit code of a run that ends with `error` thrown (a listing, a login, the lock):
 * the one place errors become exit codes.
 */
export function exitCodeFor(error: unknown): ExitCode {
  if (error instanceof ImportError) return CODE_POLICY[error.code].exit;
  return ExitCode.SomeFailed;
}

/** A paper failure that must stop the run (the server is gone for good, credentials refused, the checkpoint unwritable). */
export function stopsRun(error: ImportError): boolean {
  return CODE_POLICY[error.code].scope === "run" || error.breaker;
}
