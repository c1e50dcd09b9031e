/**
 * A fault-injecting HTTP proxy on 127.0.0.1, put between the importer and a real
 * refserver-lite. Requests that match (by default: uploads, POST
 * /api/v1/papers/upload_with_metadata) get a fault drawn from seeded shares, or one
 * queued with forceNext(); every other request is forwarded untouched.
 *
 *   const proxy = new FaultProxy({ target: server.url, seed: 7, shares: { lock: 0.3, lostAfterCommit: 0.05, reset: 0.05 } });
 *   const url = await proxy.start();
 *   proxy.forceNext("lock", 7);               // the next 7 uploads answer "database is locked"
 *   proxy.counters.lock                       // how many lock answers were given
 *
 * Faults:
 * - "lock": read the WHOLE body (as the real server does before its commit fails), never
 *   forward it, answer 500 {"detail":"Database error: database is locked"}.
 * - "lost-after-commit": forward, wait for the server's whole answer (it has committed when
 *   it says 200), then destroy the client connection without answering.
 * - "reset": forward the first part of the body, then destroy both connections mid-body.
 * - "stall": forward (by default), read the server's answer, then hold it until the client
 *   gives up (its timeout) or `stallMs` passes, whichever comes first.
 * When the server is down (refused/reset), the proxy answers 502 {"detail": ...}.
 */
import { createServer, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { makeRng } from "./util.js";

export type FaultKind = "lock" | "lost-after-commit" | "reset" | "stall";
export type FaultChoice = FaultKind | "pass";

export interface FaultShares {
  /** Share of matching requests answered 500 "database is locked" (after reading the body). */
  lock?: number;
  /** Share forwarded, committed by the server, then cut before the answer. */
  lostAfterCommit?: number;
  /** Share whose connection is reset mid-body. */
  reset?: number;
  /** Share whose answer is held past the client's timeout. */
  stall?: number;
}

export interface ProxyRequestInfo {
  seq: number;
  method: string;
  path: string;
  /** Index among matching requests (0-based), or -1 when the request does not match. */
  matchIndex: number;
}

export interface ProxyLogEntry extends ProxyRequestInfo {
  fault: FaultChoice | "upstream-error" | "not-matched";
  /** The zotero_key form field, when seen in the first 64 KiB of an upload body. */
  zoteroKey: string | undefined;
  /** The server's status (0 when it never answered). */
  upstreamStatus: number;
  /** What the client got (0 when the connection was cut). */
  clientStatus: number;
  /** Body bytes the proxy read from the client. */
  bodyBytes: number;
}

export interface FaultCounters {
  requests: number;
  /** Requests that matched (uploads by default). */
  matched: number;
  /** Matching requests forwarded without a fault. */
  passed: number;
  lock: number;
  lostAfterCommit: number;
  /** Of the lost-after-commit ones: how many the server had answered 200 (a committed upload). */
  lostCommitted: number;
  reset: number;
  stall: number;
  /** Stalled answers the client gave up on before the proxy let them go. */
  stallAbandoned: number;
  /** Requests answered 502 because the server could not be reached. */
  upstreamErrors: number;
}

export interface FaultProxyOptions {
  /** The server's base URL (http://127.0.0.1:PORT). Changeable later with setTarget(). */
  target: string;
  shares?: FaultShares;
  /** Seed of the fault draws (mulberry32). Default 1. */
  seed?: number;
  /** Which requests can get a fault. Default: POST /api/v1/papers/upload_with_metadata. */
  match?: (req: IncomingMessage) => boolean;
  /** Full control per request: return a choice, or undefined to fall back to the queue and shares. */
  decide?: (info: ProxyRequestInfo) => FaultChoice | undefined;
  /** Longest hold of a stalled answer. Default 30 000 ms. */
  stallMs?: number;
  /** Forward a stalled upload to the server (it commits) before holding the answer. Default true. */
  stallForwards?: boolean;
  /** A reset happens once this many body bytes went through. Default: half the Content-Length (at least 1). */
  resetAfterBytes?: number;
}

export const LOCKED_BODY = JSON.stringify({ detail: "Database error: database is locked" });

const HOP_BY_HOP = new Set(["connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer", "proxy-authenticate", "proxy-authorization"]);

function isUpload(req: IncomingMessage): boolean {
  return req.method === "POST" && (req.url ?? "").split("?")[0] === "/api/v1/papers/upload_with_metadata";
}

function copyHeaders(raw: IncomingMessage["headers"]): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(raw)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
  return out;
}

export class FaultProxy {
  readonly counters: FaultCounters = {
    requests: 0,
    matched: 0,
    passed: 0,
    lock: 0,
    lostAfterCommit: 0,
    lostCommitted: 0,
    reset: 0,
    stall: 0,
    stallAbandoned: 0,
    upstreamErrors: 0,
  };
  readonly log: ProxyLogEntry[] = [];
  /** Matching requests in flight now, and the most at once. */
  inFlight = 0;
  peakInFlight = 0;

  private target: URL;
  private shares: Required<FaultShares>;
  private readonly rng: () => number;
  private readonly opts: FaultProxyOptions;
  private readonly queue: FaultChoice[] = [];
  private server: Server | undefined;
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private seq = 0;
  private matchSeq = 0;
  private baseUrl = "";

  constructor(opts: FaultProxyOptions) {
    this.opts = opts;
    this.target = new URL(opts.target);
    this.shares = FaultProxy.normalise(opts.shares ?? {});
    this.rng = makeRng(opts.seed ?? 1);
  }

  private static normalise(s: FaultShares): Required<FaultShares> {
    const out = { lock: s.lock ?? 0, lostAfterCommit: s.lostAfterCommit ?? 0, reset: s.reset ?? 0, stall: s.stall ?? 0 };
    const total = out.lock + out.lostAfterCommit + out.reset + out.stall;
    if (Object.values(out).some((v) => v < 0) || total > 1) throw new Error(`fault shares must be ≥ 0 and sum to ≤ 1, got ${JSON.stringify(s)}`);
    return out;
  }

  get url(): string {
    if (!this.baseUrl) throw new Error("FaultProxy not started");
    return this.baseUrl;
  }

  setTarget(target: string): void {
    this.target = new URL(target);
  }

  setShares(shares: FaultShares): void {
    this.shares = FaultProxy.normalise(shares);
  }

  /** The next `count` matching requests get `choice` (before any share is drawn). */
  forceNext(choice: FaultChoice, count = 1): void {
    for (let i = 0; i < count; i++) this.queue.push(choice);
  }

  /** Total faults injected so far. */
  get faults(): number {
    const c = this.counters;
    return c.lock + c.lostAfterCommit + c.reset + c.stall;
  }

  async start(port = 0): Promise<string> {
    const server = createServer((req, res) => this.handle(req, res));
    server.keepAliveTimeout = 5_000;
    server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
    this.server = server;
    this.baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this.baseUrl;
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const s of this.sockets) s.destroy();
    const server = this.server;
    this.server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  private choose(info: ProxyRequestInfo): FaultChoice {
    // Always draw, so the sequence of draws depends only on the number of matching requests.
    const r = this.rng();
    const decided = this.opts.decide?.(info);
    if (decided !== undefined) return decided;
    const queued = this.queue.shift();
    if (queued !== undefined) return queued;
    const s = this.shares;
    if (r < s.lock) return "lock";
    if (r < s.lock + s.lostAfterCommit) return "lost-after-commit";
    if (r < s.lock + s.lostAfterCommit + s.reset) return "reset";
    if (r < s.lock + s.lostAfterCommit + s.reset + s.stall) return "stall";
    return "pass";
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.counters.requests++;
    const matches = (this.opts.match ?? isUpload)(req);
    const info: ProxyRequestInfo = { seq: ++this.seq, method: req.method ?? "GET", path: (req.url ?? "/").split("?")[0] ?? "/", matchIndex: matches ? this.matchSeq++ : -1 };
    const entry: ProxyLogEntry = { ...info, fault: "not-matched", zoteroKey: undefined, upstreamStatus: 0, clientStatus: 0, bodyBytes: 0 };
    this.log.push(entry);
    res.on("finish", () => {
      entry.clientStatus = res.statusCode;
    });
    // Peek at the start of the body for the zotero_key field (the importer sends fields first).
    let head = Buffer.alloc(0);
    req.on("data", (chunk: Buffer) => {
      entry.bodyBytes += chunk.length;
      if (head.length < 65_536) {
        head = Buffer.concat([head, chunk.subarray(0, 65_536 - head.length)]);
        if (entry.zoteroKey === undefined) {
          const m = /name="zotero_key"\r\n(?:[^\r\n]*\r\n)*\r\n([^\r\n]*)\r\n/.exec(head.toString("latin1"));
          if (m) entry.zoteroKey = m[1];
        }
      }
    });
    if (!matches) {
      this.forward(req, res, entry, "pipe");
      return;
    }
    this.counters.matched++;
    this.inFlight++;
    this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
    res.on("close", () => this.inFlight--);
    const fault = this.choose(info);
    entry.fault = fault;
    switch (fault) {
      case "pass":
        this.counters.passed++;
        this.forward(req, res, entry, "pipe");
        return;
      case "lock":
        this.counters.lock++;
        req.on("end", () => {
          if (res.destroyed) return;
          const body = Buffer.from(LOCKED_BODY);
          res.writeHead(500, { "content-type": "application/json", "content-length": String(body.length) });
          res.end(body);
        });
        req.on("error", () => undefined);
        req.resume();
        return;
      case "lost-after-commit":
        this.counters.lostAfterCommit++;
        this.forward(req, res, entry, "cut-after-answer");
        return;
      case "reset":
        this.counters.reset++;
        this.forward(req, res, entry, "reset-mid-body");
        return;
      case "stall":
        this.counters.stall++;
        if (this.opts.stallForwards === false) {
          req.resume();
          this.hold(res, () => {
            const body = Buffer.from(JSON.stringify({ detail: "stalled by the fault proxy" }));
            res.writeHead(504, { "content-type": "application/json", "content-length": String(body.length) });
            res.end(body);
          });
          return;
        }
        this.forward(req, res, entry, "stall");
        return;
    }
  }

  /** Keep `res` unanswered until the client leaves or stallMs passes, then call `answer`. */
  private hold(res: ServerResponse, answer: () => void): void {
    let released = false;
    res.on("close", () => {
      if (!released) {
        released = true;
        this.counters.stallAbandoned++;
      }
    });
    this.later(this.opts.stallMs ?? 30_000, () => {
      if (released || res.destroyed) return;
      released = true;
      answer();
    });
  }

  private forward(req: IncomingMessage, res: ServerResponse, entry: ProxyLogEntry, mode: "pipe" | "cut-after-answer" | "reset-mid-body" | "stall"): void {
    const headers = copyHeaders(req.headers);
    headers.host = this.target.host;
    const upstream = httpRequest({
      host: this.target.hostname,
      port: this.target.port,
      method: req.method,
      path: req.url,
      headers,
      agent: false,
    });
    let clientGone = false;
    const cutClient = (): void => {
      clientGone = true;
      req.socket.destroy();
    };
    // The client left (timeout, SIGKILL): drop the upstream request unless we cut it ourselves after the answer.
    res.on("close", () => {
      if (!res.writableFinished && mode !== "cut-after-answer") upstream.destroy();
    });
    req.on("error", () => upstream.destroy());

    upstream.on("error", () => {
      if (entry.upstreamStatus !== 0 || clientGone || mode === "reset-mid-body") return;
      this.counters.upstreamErrors++;
      entry.fault = "upstream-error";
      if (mode === "cut-after-answer") this.counters.lostAfterCommit--;
      if (mode === "stall") this.counters.stall--;
      if (res.headersSent || res.destroyed) {
        cutClient();
        return;
      }
      req.resume();
      const body = Buffer.from(JSON.stringify({ detail: "Bad Gateway: the fault proxy could not reach the server" }));
      res.writeHead(502, { "content-type": "application/json", "content-length": String(body.length), connection: "close" });
      res.end(body);
    });

    if (mode === "reset-mid-body") {
      const declared = Number(req.headers["content-length"] ?? "NaN");
      const threshold = this.opts.resetAfterBytes ?? (Number.isFinite(declared) && declared > 1 ? Math.floor(declared / 2) : 1);
      let sent = 0;
      let done = false;
      const reset = (): void => {
        if (done) return;
        done = true;
        upstream.destroy();
        cutClient();
      };
      req.on("data", (chunk: Buffer) => {
        if (done) return;
        const room = threshold - sent;
        if (chunk.length >= room) {
          upstream.write(chunk.subarray(0, Math.max(0, room)));
          reset();
          return;
        }
        sent += chunk.length;
        upstream.write(chunk);
      });
      req.on("end", reset);
      return;
    }

    req.pipe(upstream);
    upstream.on("response", (up: IncomingMessage) => {
      entry.upstreamStatus = up.statusCode ?? 0;
      if (mode === "pipe") {
        if (res.destroyed) {
          up.resume();
          return;
        }
        res.writeHead(up.statusCode ?? 502, copyHeaders(up.headers));
        up.pipe(res);
        up.on("error", () => cutClient());
        return;
      }
      // Read the server's whole answer first: by then it has committed (or refused).
      const chunks: Buffer[] = [];
      up.on("data", (c: Buffer) => chunks.push(c));
      up.on("error", () => cutClient());
      up.on("end", () => {
        if (mode === "cut-after-answer") {
          if (up.statusCode === 200) this.counters.lostCommitted++;
          cutClient();
          return;
        }
        // stall
        const body = Buffer.concat(chunks);
        this.hold(res, () => {
          const h = copyHeaders(up.headers);
          h["content-length"] = String(body.length);
          res.writeHead(up.statusCode ?? 502, h);
          res.end(body);
        });
      });
    });
  }
}
