/**
 * A stand-in for the ORIGINAL RefServerLite (the Python/FastAPI server, whose API contract
 * server/README.md writes down), not for refserver-lite: the importer must work against the
 * original as it is, and the original cannot be installed here. A real HTTP server on 127.0.0.1
 * that parses multipart uploads for real, answers as the FastAPI server does (its 422 shapes,
 * comma-separated authors on its metadata endpoint, no links endpoint unless asked, no PUT …/pdf
 * or DELETE), and can be scripted to fail in the ways the original fails ("database is locked"
 * after reading the body, answers lost after commit, logins locked, tokens expiring), which
 * refserver-lite by design does not. Tests of the importer against refserver-lite itself use the
 * real server (test/helpers/refserver-process.ts, in-process or as a process).
 *
 *   const rs = new FakeRefServer({ username: "admin", password: "pw" });
 *   const { url, close } = await rs.start();
 *   rs.lockNextUploads(3);          // 500 "database is locked" x3 (after reading the body)
 *   rs.loseAnswerAfterCommit({ keys: ["ABCD2345"] });
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { createHmac, randomUUID } from "node:crypto";
import { md5 } from "../../fixtures/pdf.js";
import { boundaryOf, MultipartError, parseMultipart, type MultipartPart } from "./multipart.js";
import { trackedSleep as sleep } from "../../fixtures/util.js";

export type RefRoute =
  | "login"
  | "upload"
  | "job"
  | "jobs"
  | "document"
  | "metadata"
  | "download"
  | "links"
  | "health"
  | "progress"
  | "unknown";

/** How a request ended: an HTTP status, or a socket destroyed by a fault. */
export type RefOutcome = number | "lost" | "reset" | "aborted";

export interface UploadFile {
  filename: string;
  contentType: string | undefined;
  size: number;
  md5: string;
}

export interface UploadRecord {
  seq: number;
  /** Field names in the order they appeared in the body (file part included). */
  fieldNames: string[];
  /** Text field values (last value wins for repeats). */
  fields: Record<string, string>;
  file: UploadFile | undefined;
  zoteroKey: string | undefined;
  authorization: string | undefined;
  contentType: string | undefined;
  bodyBytes: number;
  outcome: RefOutcome | undefined;
  /** Label of the fault that decided the outcome, if any. */
  fault: string | undefined;
  docId: string | undefined;
}

export interface StoredPaper {
  docId: string;
  jobId: string;
  filename: string;
  md5: string;
  size: number;
  body: Buffer;
  title: string;
  authors: string[];
  year: number | undefined;
  zoteroKey: string | undefined;
  libraryId: string | undefined;
  zoteroVersion: number | undefined;
  collectionKeys: string[];
  tags: string[];
  fields: Record<string, string>;
  /** Set by the metadata endpoint (the original RefServerLite's POST /api/v1/document/{doc_id}/metadata). */
  journal?: string | null;
  abstract?: string | null;
  doi?: string | null;
  /** True for a Paper row left behind by a failed upload (no ZoteroLink). */
  orphan: boolean;
  createdAt: string;
}

export interface JobRecord {
  jobId: string;
  docId: string;
  filename: string;
  polls: number;
}

export type RefFaultAction =
  | { kind: "status"; status: number; body: unknown; headers?: Record<string, string> }
  /** Commit the paper, then destroy the socket without answering. */
  | { kind: "lost" }
  /** Destroy the socket while the request body is still arriving. */
  | { kind: "reset" }
  /** Hold the request `ms` milliseconds, then carry on normally (commit + answer if the socket lives). */
  | { kind: "stall"; ms: number };

export interface RefFaultSelector {
  /**
   * Route the rule applies to. Default "upload". "any" is uploads and logins; "metadata"
   * (POST /api/v1/document/{doc_id}/metadata) is only ever matched by name.
   */
  route?: "upload" | "login" | "metadata" | "any";
  /** Only uploads carrying one of these zotero_key values. */
  keys?: readonly string[];
  /** How many matching requests the rule applies to. Default 1 (or Infinity when keys are given). */
  count?: number;
  /**
   * "received": right after the body is read (before auth/validation).
   * "write": at the DB write (after auth, validation, the PDF check and the duplicate check).
   */
  stage?: "received" | "write";
  label?: string;
}

interface RefFaultRule {
  id: number;
  label: string;
  route: "upload" | "login" | "metadata" | "any";
  keys: Set<string> | undefined;
  remaining: number;
  stage: "received" | "write";
  action: RefFaultAction;
}

export interface FakeRefServerOptions {
  username?: string;
  password?: string;
  /** Serve `GET /api/v1/zotero/links?library_id=ID`. Default false (like the real server). */
  supportsLinks?: boolean;
  /** Delay (ms) between the duplicate check and the insert of every upload. Default 0. */
  delayMs?: number;
  /** Job polls answering "processing" before "completed". Default 0. */
  jobPollsUntilComplete?: number;
  /** Keep uploaded file bodies (for /download/pdf). Default true. */
  keepBodies?: boolean;
}

export interface StartedServer {
  url: string;
  close(): Promise<void>;
}

const LOCKED = { detail: "Database error: database is locked" };


function b64url(s: string | Buffer): string {
  return Buffer.from(s).toString("base64url");
}

export class FakeRefServer {
  readonly options: Required<FakeRefServerOptions>;
  /** Stored papers with a Zotero link, by zotero key. */
  readonly papers = new Map<string, StoredPaper>();
  /** Every Paper row, including keyless uploads and orphans. */
  readonly allPapers: StoredPaper[] = [];
  readonly jobs = new Map<string, JobRecord>();
  readonly uploads: UploadRecord[] = [];
  /** Upload requests that reached the server with this zotero_key (any outcome). */
  readonly uploadsPerKey = new Map<string, number>();
  /** Successful inserts per zotero key (must never exceed 1). */
  readonly commitsPerKey = new Map<string, number>();
  readonly statusCounts = new Map<RefOutcome, number>();
  readonly requestLog: Array<{ seq: number; method: string; path: string; route: RefRoute; outcome: RefOutcome | undefined }> = [];
  loginCalls = 0;
  uploadsInFlight = 0;
  peakConcurrentUploads = 0;
  requestsInFlight = 0;
  peakConcurrentRequests = 0;

  private server: Server | undefined;
  private baseUrl = "";
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly validTokens = new Set<string>();
  private rules: RefFaultRule[] = [];
  private ruleSeq = 0;
  private seq = 0;
  private readonly secret = "fake-refserver-secret";
  private barrier: { size: number; waiting: Array<() => void> } | undefined;
  private hold: Promise<void> | undefined;

  constructor(opts: FakeRefServerOptions = {}) {
    this.options = {
      username: opts.username ?? "admin",
      password: opts.password ?? "admin123",
      supportsLinks: opts.supportsLinks ?? false,
      delayMs: opts.delayMs ?? 0,
      jobPollsUntilComplete: opts.jobPollsUntilComplete ?? 0,
      keepBodies: opts.keepBodies ?? true,
    };
  }

  get url(): string {
    if (!this.baseUrl) throw new Error("FakeRefServer not started");
    return this.baseUrl;
  }

  async start(): Promise<StartedServer> {
    const server = createServer((req, res) => void this.handle(req, res));
    server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.server = server;
    this.baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return { url: this.baseUrl, close: () => this.close() };
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const s of this.sockets) s.destroy();
    const srv = this.server;
    this.server = undefined;
    if (srv) await new Promise<void>((resolve) => srv.close(() => resolve()));
  }

  // ---- fault injection ------------------------------------------------------

  addFault(action: RefFaultAction, sel: RefFaultSelector = {}): number {
    const id = ++this.ruleSeq;
    this.rules.push({
      id,
      label: sel.label ?? (action.kind === "status" ? String(action.status) : action.kind),
      route: sel.route ?? "upload",
      keys: sel.keys ? new Set(sel.keys) : undefined,
      remaining: sel.count ?? (sel.keys ? Number.POSITIVE_INFINITY : 1),
      stage: sel.stage ?? "received",
      action,
    });
    return id;
  }

  removeFault(id: number): void {
    this.rules = this.rules.filter((r) => r.id !== id);
  }

  clearFaults(): void {
    this.rules = [];
  }

  /** 500 "Database error: database is locked" for the next n uploads that reach the DB write (body read first). */
  lockNextUploads(n: number, keys?: readonly string[]): number {
    return this.addFault({ kind: "status", status: 500, body: LOCKED }, { count: n, keys, stage: "write", label: "locked" });
  }

  /**
   * `status` (default 500 "Database error: database is locked") for the next n metadata calls
   * (POST /api/v1/document/{doc_id}/metadata), answered before anything is written; such calls
   * are not in `metadataCalls`. Remove the rule (removeFault) to heal early.
   */
  failMetadataNext(n: number, status = 500, detail: unknown = LOCKED.detail): number {
    return this.addFault({ kind: "status", status, body: { detail } }, { count: n, route: "metadata", label: `metadata-${status}` });
  }

  /** 500 "database is locked" for the next n logins with valid credentials. */
  lockNextLogins(n: number): number {
    return this.addFault({ kind: "status", status: 500, body: LOCKED }, { count: n, route: "login", stage: "write", label: "locked" });
  }

  /**
   * Deterministic race: the next `size` uploads that pass the duplicate check wait
   * there until all `size` have arrived, then all proceed to insert (so concurrent
   * uploads of one key both pass the "select" and the later one fails on UNIQUE).
   */
  /** Uploads wait before their insert until the returned function is called (a synchronisation point for tests). */
  holdUploads(): () => void {
    let release!: () => void;
    this.hold = new Promise<void>((resolve) => (release = resolve));
    return () => {
      this.hold = undefined;
      release();
    };
  }

  barrierBeforeInsert(size: number): void {
    this.barrier = { size, waiting: [] };
  }

  /** Every token issued so far becomes invalid (next request: 401); a new login works. */
  invalidateTokens(): void {
    this.validTokens.clear();
  }

  /** Store the paper, then destroy the socket without answering: for `keys`, and/or the next `next` uploads. */
  loseAnswerAfterCommit(sel: { keys?: readonly string[]; next?: number }): void {
    if (sel.keys) this.addFault({ kind: "lost" }, { keys: sel.keys, count: sel.next ?? 1, stage: "write", label: "lost" });
    else this.addFault({ kind: "lost" }, { count: sel.next ?? 1, stage: "write", label: "lost" });
  }

  /** Destroy the connection while the upload body is arriving: next `next` uploads, or uploads carrying `keys` (once each by default). */
  resetMidBody(sel: { keys?: readonly string[]; next?: number }): void {
    if (sel.keys) for (const k of sel.keys) this.addFault({ kind: "reset" }, { keys: [k], count: sel.next ?? 1, label: "reset" });
    else this.addFault({ kind: "reset" }, { count: sel.next ?? 1, label: "reset" });
  }

  /** Hold matching uploads for `ms` (after the body), then carry on (commit + answer if the client is still there). */
  stall(ms: number, sel: { keys?: readonly string[]; next?: number; route?: "upload" | "login" | "any" } = {}): number {
    return this.addFault({ kind: "stall", ms }, { keys: sel.keys, count: sel.next, route: sel.route, label: "stall" });
  }

  /** Answer `status` (e.g. 413, 415, 422, 500) to uploads of `keys` (every time unless `times`). */
  failKeys(keys: readonly string[], status: number, opts: { times?: number; detail?: unknown; headers?: Record<string, string> } = {}): number {
    return this.addFault(
      { kind: "status", status, body: { detail: opts.detail ?? defaultDetail(status) }, headers: opts.headers },
      { keys, count: opts.times, label: String(status) },
    );
  }

  /** Answer `status` to the next n uploads (or logins with route "login"). */
  failNext(n: number, status: number, opts: { detail?: unknown; headers?: Record<string, string>; route?: "upload" | "login" | "any" } = {}): number {
    return this.addFault(
      { kind: "status", status, body: { detail: opts.detail ?? defaultDetail(status) }, headers: opts.headers },
      { count: n, route: opts.route, label: String(status) },
    );
  }

  /** 503 with Retry-After for the next n requests of `route` (default upload). */
  unavailableNext(n: number, retryAfterSeconds = 1, route: "upload" | "login" | "any" = "upload"): number {
    return this.failNext(n, 503, { detail: "Service Unavailable", headers: { "Retry-After": String(retryAfterSeconds) }, route });
  }

  // ---- observability ----------------------------------------------------------

  statusCount(outcome: RefOutcome): number {
    return this.statusCounts.get(outcome) ?? 0;
  }

  /** Keys with more than one successful insert (must be empty). */
  duplicateKeys(): string[] {
    return [...this.commitsPerKey].filter(([, n]) => n > 1).map(([k]) => k);
  }

  /** Seed a paper as already imported (for 409 / links tests). */
  seedPaper(p: { zoteroKey: string; libraryId?: string; zoteroVersion?: number; title?: string; body?: Buffer }): StoredPaper {
    const body = p.body ?? Buffer.from("%PDF-1.4\n%%EOF\n");
    return this.commit(
      {
        title: p.title ?? "Seeded",
        authors: [],
        year: undefined,
        zoteroKey: p.zoteroKey,
        libraryId: p.libraryId,
        zoteroVersion: p.zoteroVersion,
        collectionKeys: [],
        tags: [],
        fields: {},
      },
      { filename: `${p.zoteroKey}.pdf`, body },
      false,
    );
  }

  // ---- handling -----------------------------------------------------------------

  private classify(method: string, path: string): { route: RefRoute; id?: string; allowed: boolean } {
    const table: Array<[string, RegExp, RefRoute]> = [
      ["POST", /^\/api\/v1\/auth\/login\/?$/, "login"],
      ["POST", /^\/api\/v1\/papers\/upload_with_metadata\/?$/, "upload"],
      ["GET", /^\/api\/v1\/job\/([^/]+)$/, "job"],
      ["GET", /^\/api\/v1\/jobs\/?$/, "jobs"],
      ["GET", /^\/api\/v1\/document\/([^/]+)$/, "document"],
      ["POST", /^\/api\/v1\/document\/([^/]+)\/metadata$/, "metadata"],
      ["GET", /^\/download\/pdf\/([^/]+)$/, "download"],
      ["GET", /^\/api\/v1\/zotero\/links\/?$/, "links"],
      ["GET", /^\/health\/?$/, "health"],
      ["GET", /^\/api\/v1\/admin\/progress\/?$/, "progress"],
    ];
    for (const [m, re, route] of table) {
      const mm = re.exec(path);
      if (mm) {
        if (route === "links" && !this.options.supportsLinks) return { route: "unknown", allowed: true };
        return { route, id: mm[1], allowed: m === method || (m === "GET" && method === "HEAD") };
      }
    }
    return { route: "unknown", allowed: true };
  }

  private count(outcome: RefOutcome): void {
    this.statusCounts.set(outcome, (this.statusCounts.get(outcome) ?? 0) + 1);
  }

  private takeRule(route: "upload" | "login" | "metadata", stage: "received" | "write", key: string | undefined, kinds: ReadonlyArray<RefFaultAction["kind"]>): RefFaultRule | undefined {
    for (const r of this.rules) {
      if (r.remaining <= 0 || r.stage !== stage || !kinds.includes(r.action.kind)) continue;
      if (route === "metadata" ? r.route !== "metadata" : r.route !== "any" && r.route !== route) continue;
      if (r.keys && (key === undefined || !r.keys.has(key))) continue;
      r.remaining--;
      if (r.remaining <= 0) this.rules = this.rules.filter((x) => x !== r);
      return r;
    }
    return undefined;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const method = req.method ?? "GET";
    const cls = this.classify(method, url.pathname);
    const entry: { seq: number; method: string; path: string; route: RefRoute; outcome: RefOutcome | undefined } = {
      seq: ++this.seq,
      method,
      path: url.pathname,
      route: cls.route,
      outcome: undefined,
    };
    this.requestLog.push(entry);
    this.requestsInFlight++;
    this.peakConcurrentRequests = Math.max(this.peakConcurrentRequests, this.requestsInFlight);
    const isUpload = cls.route === "upload" && cls.allowed;
    if (isUpload) {
      this.uploadsInFlight++;
      this.peakConcurrentUploads = Math.max(this.peakConcurrentUploads, this.uploadsInFlight);
    }
    let closed = false;
    res.on("close", () => {
      if (closed) return;
      closed = true;
      this.requestsInFlight--;
      if (isUpload) this.uploadsInFlight--;
      if (entry.outcome === undefined) {
        entry.outcome = res.writableFinished ? res.statusCode : "aborted";
        this.count(entry.outcome);
      }
    });
    const setOutcome = (o: RefOutcome): void => {
      if (entry.outcome === undefined) {
        entry.outcome = o;
        this.count(o);
      }
    };
    try {
      if (!cls.allowed) {
        await this.readBody(req);
        this.json(res, 405, { detail: "Method Not Allowed" });
        return;
      }
      switch (cls.route) {
        case "login":
          await this.login(req, res);
          return;
        case "upload":
          await this.upload(req, res, setOutcome);
          return;
        case "health":
          this.json(res, 200, { status: "healthy" });
          return;
        case "metadata":
          await this.metadata(req, res, cls.id);
          return;
        case "unknown":
          await this.readBody(req);
          this.json(res, 404, { detail: "Not Found" });
          return;
        default:
          await this.readBody(req);
          if (!this.authorized(req)) {
            this.json(res, 401, { detail: "Authentication required" }, { "WWW-Authenticate": "Bearer" });
            return;
          }
          this.readRoutes(cls.route, cls.id, url, res);
      }
    } catch (err) {
      if (!res.headersSent && !res.destroyed) this.json(res, 500, { detail: `fake refserver error: ${err instanceof Error ? err.message : String(err)}` });
    }
  }

  private readBody(req: IncomingMessage, onChunk?: (acc: Buffer[], total: number) => boolean): Promise<Buffer | undefined> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let total = 0;
      let stopped = false;
      req.on("data", (c: Buffer) => {
        if (stopped) return;
        chunks.push(c);
        total += c.length;
        if (onChunk && onChunk(chunks, total)) {
          stopped = true;
          resolve(undefined);
        }
      });
      req.on("end", () => {
        if (!stopped) resolve(Buffer.concat(chunks));
      });
      req.on("error", (e) => {
        if (!stopped) reject(e);
      });
      req.on("close", () => {
        if (!stopped && !req.complete) resolve(undefined);
      });
    });
  }

  private authorized(req: IncomingMessage): boolean {
    const h = req.headers.authorization;
    if (typeof h !== "string") return false;
    const m = /^Bearer\s+(\S+)$/i.exec(h);
    return !!m?.[1] && this.validTokens.has(m[1]);
  }

  private issueToken(): string {
    const header = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
    const now = Math.floor(Date.now() / 1000);
    const payload = b64url(JSON.stringify({ sub: this.options.username, exp: now + 480 * 60, jti: randomUUID() }));
    const sig = createHmac("sha256", this.secret).update(`${header}.${payload}`).digest("base64url");
    const token = `${header}.${payload}.${sig}`;
    this.validTokens.add(token);
    return token;
  }

  private async login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.loginCalls++;
    const body = (await this.readBody(req)) ?? Buffer.alloc(0);
    const ct = req.headers["content-type"] ?? "";
    const pre = this.takeRule("login", "received", undefined, ["status", "stall"]);
    if (pre) {
      if (pre.action.kind === "stall") await sleep(pre.action.ms, this.timers);
      else if (pre.action.kind === "status") {
        this.json(res, pre.action.status, pre.action.body, pre.action.headers);
        return;
      }
      if (res.destroyed) return;
    }
    let username: string | null = null;
    let password: string | null = null;
    if (/^application\/x-www-form-urlencoded/i.test(ct)) {
      const form = new URLSearchParams(body.toString("utf8"));
      username = form.get("username");
      password = form.get("password");
    } else if (/^multipart\/form-data/i.test(ct)) {
      const b = boundaryOf(ct);
      try {
        const parts = b ? parseMultipart(body, b) : [];
        username = parts.find((p) => p.name === "username")?.data.toString("utf8") ?? null;
        password = parts.find((p) => p.name === "password")?.data.toString("utf8") ?? null;
      } catch {
        /* fall through to 422 */
      }
    }
    const missing: string[] = [];
    if (!username) missing.push("username");
    if (!password) missing.push("password");
    if (missing.length) {
      this.json(res, 422, { detail: missing.map((f) => ({ type: "missing", loc: ["body", f], msg: "Field required", input: null })) });
      return;
    }
    if (username !== this.options.username || password !== this.options.password) {
      this.json(res, 401, { detail: "Invalid credentials" });
      return;
    }
    const w = this.takeRule("login", "write", undefined, ["status", "lost"]);
    if (w?.action.kind === "status") {
      this.json(res, w.action.status, w.action.body, w.action.headers);
      return;
    }
    const token = this.issueToken();
    if (w?.action.kind === "lost") {
      req.socket.destroy();
      return;
    }
    this.json(res, 200, { access_token: token, token_type: "bearer" });
  }

  private async upload(req: IncomingMessage, res: ServerResponse, setOutcome: (o: RefOutcome) => void): Promise<void> {
    const ct = req.headers["content-type"];
    const record: UploadRecord = {
      seq: this.uploads.length + 1,
      fieldNames: [],
      fields: {},
      file: undefined,
      zoteroKey: undefined,
      authorization: typeof req.headers.authorization === "string" ? req.headers.authorization : undefined,
      contentType: ct,
      bodyBytes: 0,
      outcome: undefined,
      fault: undefined,
      docId: undefined,
    };
    this.uploads.push(record);
    res.on("close", () => {
      if (record.outcome === undefined) record.outcome = res.writableFinished ? res.statusCode : "aborted";
    });
    const answer = (status: number, body: unknown, headers?: Record<string, string>): void => {
      record.outcome = status;
      this.json(res, status, body, headers);
    };
    const kill = (o: "lost" | "reset", label: string): void => {
      record.outcome = o;
      record.fault = label;
      setOutcome(o);
      req.socket.destroy();
    };

    // Mid-body resets: count-based ones apply at the first chunk; key-based ones once the key is seen.
    const countReset = this.rules.find((r) => r.action.kind === "reset" && !r.keys && r.remaining > 0 && r.route !== "login");
    if (countReset) {
      countReset.remaining--;
      if (countReset.remaining <= 0) this.rules = this.rules.filter((x) => x !== countReset);
    }
    const keyResets = this.rules.filter((r) => r.action.kind === "reset" && r.keys && r.remaining > 0);
    let resetBy: RefFaultRule | undefined;
    const body = await this.readBody(req, (chunks, total) => {
      record.bodyBytes = total;
      if (countReset) {
        resetBy = countReset;
        return true;
      }
      if (keyResets.length) {
        const text = Buffer.concat(chunks).toString("latin1");
        for (const r of keyResets) {
          for (const k of r.keys ?? []) {
            if (r.remaining > 0 && new RegExp(`name="?zotero_key"?[^\\r]*\\r\\n(?:[^\\r]+\\r\\n)*\\r\\n${k}\\r\\n`).test(text)) {
              r.remaining--;
              if (r.remaining <= 0) this.rules = this.rules.filter((x) => x !== r);
              record.zoteroKey = k;
              this.uploadsPerKey.set(k, (this.uploadsPerKey.get(k) ?? 0) + 1);
              resetBy = r;
              return true;
            }
          }
        }
      }
      return false;
    });
    if (resetBy) {
      kill("reset", resetBy.label);
      return;
    }
    if (!body) return; // client went away
    record.bodyBytes = body.length;

    // Parse.
    const boundary = boundaryOf(ct);
    let parts: MultipartPart[] = [];
    if (boundary) {
      try {
        parts = parseMultipart(body, boundary);
      } catch (e) {
        if (e instanceof MultipartError) {
          answer(400, { detail: "There was an error parsing the body" });
          return;
        }
        throw e;
      }
    }
    for (const p of parts) {
      record.fieldNames.push(p.name);
      if (p.filename !== undefined) {
        if (p.name === "file") record.file = { filename: p.filename, contentType: p.contentType, size: p.data.length, md5: md5(p.data) };
      } else record.fields[p.name] = p.data.toString("utf8");
    }
    const filePart = parts.find((p) => p.name === "file" && p.filename !== undefined);
    const key = record.fields.zotero_key || undefined;
    record.zoteroKey = key;
    if (key) this.uploadsPerKey.set(key, (this.uploadsPerKey.get(key) ?? 0) + 1);

    // Faults at "received".
    const pre = this.takeRule("upload", "received", key, ["status", "stall"]);
    if (pre) {
      if (pre.action.kind === "stall") {
        record.fault = pre.label;
        await sleep(pre.action.ms, this.timers);
      } else if (pre.action.kind === "status") {
        record.fault = pre.label;
        answer(pre.action.status, pre.action.body, pre.action.headers);
        return;
      }
    }

    if (!this.authorized(req)) {
      answer(401, { detail: "Authentication required" }, { "WWW-Authenticate": "Bearer" });
      return;
    }

    // FastAPI validation.
    const errors: Array<{ type: string; loc: string[]; msg: string; input: string | null }> = [];
    if (!filePart) errors.push({ type: "missing", loc: ["body", "file"], msg: "Field required", input: null });
    for (const f of ["title", "authors"]) {
      if (!record.fields[f]) errors.push({ type: "missing", loc: ["body", f], msg: "Field required", input: null });
    }
    const intField = (f: string): number | undefined => {
      const v = record.fields[f];
      if (v === undefined || v === "") return undefined;
      if (!/^\s*[-+]?\d+\s*$/.test(v)) {
        errors.push({ type: "int_parsing", loc: ["body", f], msg: "Input should be a valid integer, unable to parse string as an integer", input: v });
        return undefined;
      }
      return Number(v);
    };
    const year = intField("year");
    const zoteroVersion = intField("zotero_version");
    if (errors.length) {
      answer(422, { detail: errors });
      return;
    }
    if (!filePart) return;
    const filename = filePart.filename ?? "";
    if (!filename.toLowerCase().endsWith(".pdf")) {
      answer(400, { detail: "Only PDF files are allowed" });
      return;
    }
    let authors: string[] = [];
    try {
      const parsed: unknown = JSON.parse(record.fields.authors ?? "[]");
      authors = Array.isArray(parsed) ? parsed.map(String) : [String(parsed)];
    } catch {
      authors = (record.fields.authors ?? "").split(",").map((s) => s.trim()).filter(Boolean);
    }
    const jsonList = (f: string): string[] => {
      const v = record.fields[f];
      if (!v) return [];
      try {
        const parsed: unknown = JSON.parse(v);
        return Array.isArray(parsed) ? parsed.map(String) : [];
      } catch {
        return [];
      }
    };

    // Duplicate check ("select").
    const libraryId = record.fields.zotero_library_id || undefined;
    const linked = key !== undefined && libraryId !== undefined;
    if (linked) {
      const existing = this.papers.get(key);
      if (existing) {
        answer(409, { detail: `Document with Zotero key '${key}' already exists (doc_id: ${existing.docId})` });
        return;
      }
    }

    // Faults at the DB write.
    const w = this.takeRule("upload", "write", key, ["status", "lost"]);
    if (w?.action.kind === "status") {
      record.fault = w.label;
      answer(w.action.status, w.action.body, w.action.headers);
      return;
    }
    if (this.options.delayMs > 0) await sleep(this.options.delayMs, this.timers);
    if (this.hold) await this.hold;
    const barrier = this.barrier;
    if (barrier) {
      await new Promise<void>((resolve) => {
        barrier.waiting.push(resolve);
        if (barrier.waiting.length >= barrier.size) {
          if (this.barrier === barrier) this.barrier = undefined;
          for (const r of barrier.waiting) r();
        }
      });
    }

    // "insert": a concurrent upload may have won the race since the select.
    const meta = {
      title: record.fields.title ?? "",
      authors,
      year,
      zoteroKey: linked ? key : undefined,
      libraryId,
      zoteroVersion,
      collectionKeys: jsonList("collection_keys"),
      tags: jsonList("tags"),
      fields: { ...record.fields },
    };
    if (linked && this.papers.has(key)) {
      this.commit({ ...meta, zoteroKey: undefined }, { filename, body: filePart.data }, true);
      answer(500, { detail: "Database error: UNIQUE constraint failed: zoterolink.zotero_key" });
      return;
    }
    const paper = this.commit(meta, { filename, body: filePart.data }, false);
    record.docId = paper.docId;
    if (w?.action.kind === "lost") {
      kill("lost", w.label);
      return;
    }
    answer(200, {
      job_id: paper.jobId,
      doc_id: paper.docId,
      filename,
      message: "File uploaded successfully with metadata. Processing started.",
      status: "processing",
    });
  }

  private commit(
    meta: Omit<StoredPaper, "docId" | "jobId" | "filename" | "md5" | "size" | "body" | "orphan" | "createdAt">,
    file: { filename: string; body: Buffer },
    orphan: boolean,
  ): StoredPaper {
    const paper: StoredPaper = {
      ...meta,
      docId: randomUUID(),
      jobId: randomUUID(),
      filename: file.filename,
      md5: md5(file.body),
      size: file.body.length,
      body: this.options.keepBodies ? Buffer.from(file.body) : Buffer.alloc(0),
      orphan,
      createdAt: new Date().toISOString(),
    };
    this.allPapers.push(paper);
    this.jobs.set(paper.jobId, { jobId: paper.jobId, docId: paper.docId, filename: paper.filename, polls: 0 });
    if (!orphan && meta.zoteroKey) {
      this.papers.set(meta.zoteroKey, paper);
      this.commitsPerKey.set(meta.zoteroKey, (this.commitsPerKey.get(meta.zoteroKey) ?? 0) + 1);
    }
    return paper;
  }

  /** Metadata calls, in order (doc_id and the form fields sent). */
  readonly metadataCalls: { docId: string; fields: Record<string, string> }[] = [];

  /**
   * Like the original RefServerLite: form fields, all optional, no token asked; `authors` one
   * comma-separated string; only the fields sent change; 404 for an unknown document.
   */
  private async metadata(req: IncomingMessage, res: ServerResponse, docId: string | undefined): Promise<void> {
    const body = (await this.readBody(req)) ?? Buffer.alloc(0);
    const fault = this.takeRule("metadata", "received", undefined, ["status"]);
    if (fault?.action.kind === "status") {
      this.json(res, fault.action.status, fault.action.body, fault.action.headers);
      return;
    }
    const fields = Object.fromEntries(new URLSearchParams(body.toString("utf8")));
    const p = this.allPapers.find((x) => x.docId === docId);
    if (!p) {
      this.json(res, 404, { detail: "Document not found" });
      return;
    }
    if (fields.year !== undefined && fields.year !== "" && !/^-?\d+$/.test(fields.year)) {
      this.json(res, 400, { detail: "Invalid year" });
      return;
    }
    this.metadataCalls.push({ docId: p.docId, fields });
    if (fields.title !== undefined) p.title = fields.title;
    if (fields.authors !== undefined) p.authors = fields.authors.split(",").map((a) => a.trim()).filter(Boolean);
    if (fields.year !== undefined && fields.year !== "") p.year = Number(fields.year);
    if (fields.journal !== undefined) p.journal = fields.journal || null;
    if (fields.abstract !== undefined) p.abstract = fields.abstract || null;
    if (fields.doi !== undefined) p.doi = fields.doi || null;
    this.json(res, 200, { status: "success", message: "Metadata updated successfully", metadata: { title: p.title, authors: p.authors, journal: p.journal ?? null, year: p.year ?? null, abstract: p.abstract ?? null, doi: p.doi ?? null } });
  }

  private readRoutes(route: RefRoute, id: string | undefined, url: URL, res: ServerResponse): void {
    const byDoc = (docId: string | undefined): StoredPaper | undefined => this.allPapers.find((p) => p.docId === docId);
    switch (route) {
      case "job": {
        const job = id ? this.jobs.get(id) : undefined;
        if (!job) {
          this.json(res, 404, { detail: "Job not found" });
          return;
        }
        job.polls++;
        const done = job.polls > this.options.jobPollsUntilComplete;
        this.json(res, 200, {
          job_id: job.jobId,
          filename: job.filename,
          status: done ? "completed" : "processing",
          current_step: done ? "completed" : "ocr",
          progress_percentage: done ? 100 : 25,
          ...(done ? { result: { doc_id: job.docId } } : {}),
        });
        return;
      }
      case "jobs": {
        const limit = Number(url.searchParams.get("limit") ?? "50");
        const offset = Number(url.searchParams.get("offset") ?? "0");
        const all = [...this.jobs.values()].map((j) => ({ job_id: j.jobId, filename: j.filename, status: "completed", doc_id: j.docId }));
        this.json(res, 200, { jobs: all.slice(offset, offset + limit), total: all.length });
        return;
      }
      case "document": {
        const p = byDoc(id);
        if (!p) {
          this.json(res, 404, { detail: "Document not found" });
          return;
        }
        this.json(res, 200, {
          doc_id: p.docId,
          filename: p.filename,
          created_at: p.createdAt,
          metadata: { title: p.title, authors: p.authors, year: p.year ?? null, source: "user_api" },
          zotero: p.zoteroKey
            ? { zotero_key: p.zoteroKey, library_id: p.libraryId, zotero_version: p.zoteroVersion ?? null, collection_keys: p.collectionKeys, tags: p.tags }
            : null,
        });
        return;
      }
      case "download": {
        const p = byDoc(id);
        if (!p) {
          this.json(res, 404, { detail: "Document not found" });
          return;
        }
        res.writeHead(200, { "Content-Type": "application/pdf", "Content-Length": String(p.body.length) });
        res.end(p.body);
        return;
      }
      case "links": {
        const lib = url.searchParams.get("library_id");
        const links = [...this.papers.values()]
          .filter((p) => lib === null || p.libraryId === lib)
          .map((p) => ({ zotero_key: p.zoteroKey, doc_id: p.docId, zotero_version: p.zoteroVersion ?? null }));
        this.json(res, 200, { links });
        return;
      }
      case "progress": {
        const documents = [...this.allPapers].slice(-50).reverse().map((p) => ({ doc_id: p.docId, filename: p.filename, title: p.title }));
        this.json(res, 200, { documents });
        return;
      }
      default:
        this.json(res, 404, { detail: "Not Found" });
    }
  }

  private json(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
    if (res.headersSent || res.destroyed) return;
    const buf = Buffer.from(JSON.stringify(value));
    res.writeHead(status, { ...headers, "Content-Type": "application/json", "Content-Length": String(buf.length) });
    res.end(buf);
  }
}

function defaultDetail(status: number): unknown {
  switch (status) {
    case 413:
      return "Request Entity Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return [{ type: "missing", loc: ["body", "title"], msg: "Field required", input: null }];
    case 500:
      return "Database error: database is locked";
    case 503:
      return "Service Unavailable";
    default:
      return `Error ${status}`;
  }
}

/** Convenience: construct and start. */
export async function startFakeRefServer(opts: FakeRefServerOptions = {}): Promise<{ refserver: FakeRefServer; url: string; close(): Promise<void> }> {
  const refserver = new FakeRefServer(opts);
  const { url, close } = await refserver.start();
  return { refserver, url, close };
}

/** Client-side helper for tests: log in to a fake (or real) RefServer and return the bearer token. */
export async function loginToRefServer(url: string, username: string, password: string): Promise<string> {
  const r = await fetch(`${url}/api/v1/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ username, password }).toString(),
  });
  if (r.status !== 200) throw new Error(`login failed: ${r.status}`);
  const j = (await r.json()) as { access_token: string };
  return j.access_token;
}
