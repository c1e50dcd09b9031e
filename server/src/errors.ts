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
