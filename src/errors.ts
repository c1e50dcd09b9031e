/**
 * Every failure the importer can meet, with a stable code and whether trying
 * again can help. Callers branch on `code` and `retriable`, never on message text.
 */
export type ErrorCode =
  | "USAGE"
  | "CONFIG_INVALID"
  | "CONFIG_MISSING"
  | "ZOTERO_AUTH"
  | "ZOTERO_NOT_FOUND"
  | "ZOTERO_HTTP"
  | "ZOTERO_BAD_DATA"
  | "ZOTERO_FILE_MISSING"
  | "ZOTERO_STORAGE"
  | "DOWNLOAD_MD5_MISMATCH"
  | "FILE_IO"
  | "REFSERVER_AUTH"
  | "REFSERVER_LOCKED"
  | "REFSERVER_UNAVAILABLE"
  | "REFSERVER_REJECTED"
  | "REFSERVER_BAD_ANSWER"
  | "NETWORK"
  | "LOCK_BUSY"
  | "CHECKPOINT_INVALID"
  | "CHECKPOINT_WRITE"
  | "INTERRUPTED";

export interface ImportErrorOptions {
  retriable?: boolean;
  status?: number;
  /** Server-requested wait (Retry-After), in milliseconds. */
  retryAfterMs?: number;
  cause?: unknown;
  /** True when the failure is about reaching the server at all (refused, reset, timeout). */
  connection?: boolean;
  /** The server asked us to slow down (429, 503, "database is locked"): feeds the pacer. */
  congestion?: boolean;
  /** The pacer's circuit breaker opened: the server stayed unreachable past give_up_after_seconds. */
  breaker?: boolean;
}

export class ImportError extends Error {
  readonly code: ErrorCode;
  readonly retriable: boolean;
  readonly status: number | undefined;
  readonly retryAfterMs: number | undefined;
  readonly connection: boolean;
  readonly congestion: boolean;
  readonly breaker: boolean;

  constructor(code: ErrorCode, message: string, options: ImportErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "ImportError";
    this.code = code;
    this.retriable = options.retriable ?? false;
    this.status = options.status;
    this.retryAfterMs = options.retryAfterMs;
    this.connection = options.connection ?? false;
    this.congestion = options.congestion ?? false;
    this.breaker = options.breaker ?? false;
  }
}

/** The message of anything thrown, without a stack. */
export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
