/** An error that maps to an HTTP answer `{"detail": ...}`. Never carries a stack to the client. */
export class HttpError extends Error {
  readonly statusCode: number;
  readonly detail: unknown;
  readonly headers: Record<string, string>;

  constructor(statusCode: number, detail: unknown, headers: Record<string, string> = {}) {
    super(typeof detail === "string" ? detail : `HTTP ${statusCode}`);
    this.name = "HttpError";
    this.statusCode = statusCode;
    this.detail = detail;
    this.headers = headers;
  }
}

/** A stored upload is not a PDF (does not begin with `%PDF-`). */
export class NotPdfError extends Error {
  constructor() {
    super("The file is not a PDF (it must begin with %PDF-)");
    this.name = "NotPdfError";
  }
}

/** The disk (or quota) is full: nothing of the request was kept. */
export class DiskFullError extends Error {
  constructor() {
    super("not enough space on the server's disk");
    this.name = "DiskFullError";
  }
}

/** A file could not be stored (an I/O error other than a full disk), named by its code. */
export class FileSaveError extends Error {
  readonly code: string;
  constructor(code: string) {
    super(`Failed to save file: ${code}`);
    this.name = "FileSaveError";
    this.code = code;
  }
}

const DB_UNAVAILABLE = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "ENOTFOUND", "EHOSTUNREACH", "57P01", "57P02", "57P03", "08006", "08001", "08003"]);

/**
 * The HTTP answer for a domain error of the storage or the database (and an HttpError as it is),
 * with the line to log for server faults; undefined for anything else. The error handler in
 * app.ts is the one caller: no storage or repository code decides an HTTP status.
 */
export function httpErrorOf(err: unknown): { error: HttpError; log?: string } | undefined {
  if (err instanceof HttpError) return { error: err };
  if (err instanceof NotPdfError) return { error: new HttpError(400, err.message) };
  if (err instanceof FileSaveError) return { error: new HttpError(500, err.message), log: "could not save a file" };
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof DiskFullError || code === "SQLITE_FULL" || code === "53100") {
    return { error: new HttpError(507, "not enough space on the server's disk"), log: "disk full" };
  }
  if (typeof code !== "string") return undefined;
  if (code.startsWith("SQLITE_BUSY") || code.startsWith("SQLITE_LOCKED")) {
    return { error: new HttpError(500, "Database error: database is locked"), log: "database is locked" };
  }
  if (code.startsWith("SQLITE")) return { error: new HttpError(500, `Database error: ${message}`), log: "database error" };
  if (DB_UNAVAILABLE.has(code) && (err as { syscall?: unknown }).syscall !== "read") {
    return { error: new HttpError(503, "Database unavailable: try again shortly"), log: "database unavailable" };
  }
  if (/^[0-9A-Z]{5}$/.test(code)) return { error: new HttpError(500, `Database error: ${message}`), log: "database error" };
  return undefined;
}

/** One FastAPI-style validation problem. */
export interface ValidationIssue {
  type: string;
  loc: Array<string | number>;
  msg: string;
  input?: unknown;
  ctx?: Record<string, unknown>;
}

export function validationError(issues: ValidationIssue[]): HttpError {
  return new HttpError(422, issues);
}

export function missingField(where: "body" | "query", name: string): ValidationIssue {
  return { type: "missing", loc: [where, name], msg: "Field required", input: null };
}

export function intParsing(where: "body" | "query", name: string, input: string): ValidationIssue {
  return {
    type: "int_parsing",
    loc: [where, name],
    msg: "Input should be a valid integer, unable to parse string as an integer",
    input,
  };
}
