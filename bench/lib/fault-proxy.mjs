// A fault-injecting HTTP proxy in front of refserver-lite (127.0.0.1 only): a given share of
// uploads (POST .../upload_with_metadata) is answered 500 {"detail":"Database error: database is
// locked"} AFTER the whole body has been read (as the real server does); everything else is
// forwarded untouched. Deterministic (seeded PRNG). Counts answers and uploads in flight.
import { request as httpRequest } from "node:http";
import { listenLoopback } from "./loopback.mjs";

function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class FaultProxy {
  /**
   * lockShare: the share of uploads answered "locked"; or a function of the uploads in flight
   * (this one included) returning that share, for a server whose contention grows with load.
   */
  constructor(upstream, { lockShare = 0.3, seed = 7 } = {}) {
    this.upstream = new URL(upstream);
    this.lockShare = typeof lockShare === "function" ? lockShare : () => lockShare;
    this.rand = rng(seed);
    this.uploads = 0;
    this.locked = 0;
    this.forwarded = 0;
    this.statuses = new Map();
    this.uploadsInFlight = 0;
    this.peakUploadsInFlight = 0;
    this.inFlightSamples = []; // [t, inFlight] on every change
    this.firstUploadAt = null;
  }

  async start() {
    this.listening = await listenLoopback((req, res) => this.handle(req, res));
    this.server = this.listening.server;
    this.url = this.listening.url;
    return this.url;
  }

  async close() {
    await this.listening.close();
  }

  count(status) {
    this.statuses.set(status, (this.statuses.get(status) ?? 0) + 1);
  }

  handle(req, res) {
    const isUpload = req.method === "POST" && req.url.includes("/papers/upload_with_metadata");
    if (isUpload) {
      this.uploads++;
      if (this.firstUploadAt === null) this.firstUploadAt = performance.now();
      this.uploadsInFlight++;
      this.peakUploadsInFlight = Math.max(this.peakUploadsInFlight, this.uploadsInFlight);
      this.inFlightSamples.push([performance.now(), this.uploadsInFlight]);
      let done = false;
      res.on("close", () => {
        if (done) return;
        done = true;
        this.uploadsInFlight--;
        this.inFlightSamples.push([performance.now(), this.uploadsInFlight]);
      });
      if (this.rand() < this.lockShare(this.uploadsInFlight)) {
        this.locked++;
        req.resume();
        req.on("end", () => {
          const body = JSON.stringify({ detail: "Database error: database is locked" });
          this.count(500);
          res.writeHead(500, { "content-type": "application/json", "content-length": Buffer.byteLength(body) });
          res.end(body);
        });
        req.on("error", () => res.destroy());
        return;
      }
    }
    this.forward(req, res);
  }

  forward(req, res) {
    const up = httpRequest(
      { host: this.upstream.hostname, port: this.upstream.port, method: req.method, path: req.url, headers: req.headers },
      (ur) => {
        this.count(ur.statusCode);
        this.forwarded++;
        res.writeHead(ur.statusCode, ur.headers);
        ur.pipe(res);
      },
    );
    up.on("error", () => res.destroy());
    req.on("error", () => up.destroy());
    res.on("close", () => {
      if (!res.writableFinished) up.destroy();
    });
    req.pipe(up);
  }
}

/** A transparent proxy (no faults) that records when the first upload request arrives. */
export function observingProxy(upstream) {
  return new FaultProxy(upstream, { lockShare: 0 });
}
