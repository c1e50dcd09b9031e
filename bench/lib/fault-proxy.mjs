// A fault-injecting HTTP proxy in front of refserver-lite (127.0.0.1 only): a given share of
// uploads (POST .../upload_with_metadata) is answered 500 {"detail":"Database error: database is
// locked"} AFTER the whole body has been read (as the real server does); everything else is
// forwarded untouched. Deterministic (seeded PRNG). Counts answers and uploads in flight.
import { request as httpRequest } from "node:http";
import { LoopbackService } from "./loopback.mjs";
// The tests' PRNG, compiled by `npm run bench` (bench/tsconfig.json) into bench/out/helpers.
import { makeRng } from "../out/helpers/util.js";

export class FaultProxy extends LoopbackService {
  /**
   * lockShare: the share of uploads answered "locked"; or a function of the uploads in flight
   * (this one included) returning that share, for a server whose contention grows with load.
   */
  constructor(upstream, { lockShare = 0.3, seed = 7 } = {}) {
    super();
    this.upstream = new URL(upstream);
    this.lockShare = typeof lockShare === "function" ? lockShare : () => lockShare;
    this.rand = makeRng(seed);
    this.uploads = 0;
    this.locked = 0;
    this.forwarded = 0;
    this.statuses = new Map();
    this.uploadsInFlight = 0;
    this.peakUploadsInFlight = 0;
    this.inFlightSamples = []; // [t, inFlight] on every change
    this.firstUploadAt = null;
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
