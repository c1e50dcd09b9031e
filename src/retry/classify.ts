import { ImportError } from "../errors.js";
import { CONNECTION_ERROR_CODES, statusError, statusVerdict } from "../failure/policy.js";
import { parseRetryAfter } from "../util/time.js";

function errorCodes(error: unknown): string[] {
  const codes: string[] = [];
  let current: unknown = error;
  for (let depth = 0; depth < 5 && current; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === "string") codes.push(code);
    current = (current as { cause?: unknown }).cause;
  }
  return codes;
}

/** Pure: a thrown transport error → an ImportError (retriable when the connection failed). */
export function classifyNetworkError(error: unknown, what: string): ImportError {
  if (error instanceof ImportError) return error;
  const codes = errorCodes(error);
  const code = codes.find((c) => CONNECTION_ERROR_CODES.has(c));
  if (code) {
    return new ImportError("NETWORK", `${what}: connection failed (${code})`, { retriable: true, connection: true, cause: error });
  }
  if ((error as { name?: string } | null)?.name === "AbortError") {
    return new ImportError("INTERRUPTED", `${what}: interrupted`, { cause: error });
  }
  const message = error instanceof Error ? error.message : String(error);
  // fetch() wraps every transport failure in "TypeError: fetch failed".
  if (message === "fetch failed" || codes.length > 0) {
    return new ImportError("NETWORK", `${what}: ${codes[0] ?? message}`, { retriable: true, connection: true, cause: error });
  }
  return new ImportError("NETWORK", `${what}: ${message}`, { retriable: false, cause: error });
}

export type UploadVerdict =
  | { kind: "imported"; docId: string | null; jobId: string | null }
  | { kind: "already"; docId: string | null }
  | { kind: "reauth" }
  | { kind: "error"; error: ImportError };

/** Pure: the RefServer's answer to an upload (or login) → what to do. */
export function classifyRefServerAnswer(status: number, bodyText: string, retryAfter: string | null | undefined): UploadVerdict {
  const detail = detailOf(bodyText);
  if (status >= 200 && status < 300) {
    const body = safeJson(bodyText) as { doc_id?: unknown; job_id?: unknown } | undefined;
    if (!body || typeof body !== "object") {
      return { kind: "error", error: new ImportError("REFSERVER_BAD_ANSWER", `server answered ${status} without JSON: is refserver.api_url a RefServerLite?`) };
    }
    return { kind: "imported", docId: typeof body.doc_id === "string" ? body.doc_id : null, jobId: typeof body.job_id === "string" ? body.job_id : null };
  }
  if (status === 409) {
    const m = /doc_id:\s*([0-9a-fA-F-]{8,})/.exec(detail);
    return { kind: "already", docId: m?.[1] ?? null };
  }
  const retryAfterMs = parseRetryAfter(retryAfter);
  // Every other status: what it means is the failure policy's call (src/failure/policy.ts).
  const rule = statusVerdict("refserver", status, detail);
  if (rule.disposition === "reauth") return { kind: "reauth" };
  const words: Record<string, string> = {
    REFSERVER_AUTH: `server refused access (${status} ${detail || "Forbidden"}): the RefServer user must be an admin`,
    REFSERVER_LOCKED: `server error ${status}${detail ? `: ${detail}` : ""}`,
    REFSERVER_UNAVAILABLE: status >= 500 && status !== 503 ? `server error ${status}${detail ? `: ${detail}` : ""}` : `server busy (${status}${detail ? ` ${detail}` : ""})`,
    REFSERVER_REJECTED: `server rejected the upload (${status}${detail ? `: ${detail}` : ""})`,
  };
  return { kind: "error", error: statusError("refserver", status, words[rule.code] ?? `server answered ${status}`, { detail, retryAfterMs }) };
}

/** JSON.parse that answers undefined instead of throwing. */
export function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** FastAPI's `detail` as one line: a string, or the validation errors joined. */
export function detailOf(bodyText: string): string {
  const body = safeJson(bodyText) as { detail?: unknown } | undefined;
  const detail = body && typeof body === "object" ? body.detail : undefined;
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d: { loc?: unknown[]; msg?: unknown }) => `${Array.isArray(d.loc) ? d.loc.join(".") : "?"}: ${String(d.msg ?? "invalid")}`)
      .join("; ");
  }
  return bodyText.trim().slice(0, 200).replace(/\s+/g, " ");
}
