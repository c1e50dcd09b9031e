import { createServer, request, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { FaultProxy, LOCKED_BODY, type FaultChoice } from "../fixtures/fault-proxy.js";

/** A stand-in server: reads the whole body, "commits" it, answers 200 with the byte count. */
class Upstream {
  committed: number[] = [];
  /** Bodies that ended early (the connection was cut mid-body). */
  aborted = 0;
  private server: Server | undefined;
  url = "";

  async start(port = 0): Promise<string> {
    const server = createServer((req, res) => {
      let n = 0;
      let ended = false;
      req.on("data", (c: Buffer) => (n += c.length));
      req.on("end", () => {
        ended = true;
        this.committed.push(n);
        const body = JSON.stringify({ doc_id: `doc-${this.committed.length}`, bytes: n });
        res.writeHead(200, { "content-type": "application/json", "x-upstream": "yes" });
        res.end(body);
      });
      req.on("close", () => {
        if (!ended) this.aborted++;
      });
    });
    await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
    this.server = server;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this.url;
  }

  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
}

type Answer = { status: number; body: string; headers: IncomingMessage["headers"] } | { error: string };

/** One request with a fresh connection; never rejects. */
function send(url: string, path: string, body: Buffer | null, timeoutMs = 5_000): Promise<Answer> {
  return new Promise((resolve) => {
    const req = request(`${url}${path}`, {
      method: body ? "POST" : "GET",
      agent: false,
      headers: body ? { "content-type": "application/octet-stream", "content-length": String(body.length) } : {},
      timeout: timeoutMs,
    });
    req.on("timeout", () => req.destroy(new Error("client timeout")));
    req.on("error", (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (text += c));
      res.on("error", (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }));
    });
    // Write the body in pieces so "mid-body" means something.
    if (body) {
      const half = Math.floor(body.length / 2);
      req.write(body.subarray(0, half));
      setTimeout(() => req.end(body.subarray(half)), 20);
    } else req.end();
  });
}

const UPLOAD = "/api/v1/papers/upload_with_metadata";
const BODY = Buffer.alloc(200_000, 7);

let upstream: Upstream | undefined;
let proxy: FaultProxy | undefined;
afterEach(async () => {
  await proxy?.close();
  await upstream?.close();
  proxy = undefined;
  upstream = undefined;
});

async function setup(opts: Partial<ConstructorParameters<typeof FaultProxy>[0]> = {}): Promise<{ up: Upstream; px: FaultProxy; url: string }> {
  upstream = new Upstream();
  await upstream.start();
  proxy = new FaultProxy({ target: upstream.url, ...opts });
  const url = await proxy.start();
  return { up: upstream, px: proxy, url };
}

describe("FaultProxy", () => {
  it("forwards requests untouched when no fault is drawn, and leaves non-upload requests alone", async () => {
    const { up, px, url } = await setup({ shares: { lock: 1 } });
    const get = await send(url, "/health", null);
    expect(get).toMatchObject({ status: 200, headers: { "x-upstream": "yes" } });
    px.setShares({});
    const post = await send(url, UPLOAD, BODY);
    expect(post).toMatchObject({ status: 200 });
    expect(JSON.parse((post as { body: string }).body)).toEqual({ doc_id: "doc-2", bytes: BODY.length });
    expect(up.committed).toEqual([0, BODY.length]);
    expect(px.counters).toMatchObject({ requests: 2, matched: 1, passed: 1, lock: 0 });
  });

  it("answers 500 database is locked after reading the whole body, without forwarding it", async () => {
    const { up, px, url } = await setup();
    px.forceNext("lock");
    const a = await send(url, UPLOAD, BODY);
    expect(a).toMatchObject({ status: 500, body: LOCKED_BODY });
    expect(up.committed).toEqual([]);
    expect(px.counters.lock).toBe(1);
    expect(px.log[0]).toMatchObject({ fault: "lock", bodyBytes: BODY.length, clientStatus: 500, upstreamStatus: 0 });
  });

  it("lost after commit: the server commits and answers, the client sees only a cut connection", async () => {
    const { up, px, url } = await setup();
    px.forceNext("lost-after-commit");
    const a = await send(url, UPLOAD, BODY);
    expect(a).toHaveProperty("error");
    expect(up.committed).toEqual([BODY.length]);
    expect(px.counters).toMatchObject({ lostAfterCommit: 1, lostCommitted: 1 });
    expect(px.log[0]).toMatchObject({ upstreamStatus: 200, clientStatus: 0 });
  });

  it("resets the connection mid-body: the server never gets a whole upload", async () => {
    const { up, px, url } = await setup();
    px.forceNext("reset");
    const a = await send(url, UPLOAD, BODY);
    expect(a).toHaveProperty("error");
    await new Promise((r) => setTimeout(r, 50));
    expect(up.committed).toEqual([]);
    expect(px.counters.reset).toBe(1);
    expect(px.log[0]!.bodyBytes).toBeLessThan(BODY.length);
  });

  it("stalls an answer past the client's timeout after the server committed", async () => {
    const { up, px, url } = await setup({ stallMs: 20_000 });
    px.forceNext("stall");
    const a = await send(url, UPLOAD, BODY, 300);
    expect(a).toEqual({ error: "client timeout" });
    expect(up.committed).toEqual([BODY.length]);
    await new Promise((r) => setTimeout(r, 50));
    expect(px.counters).toMatchObject({ stall: 1, stallAbandoned: 1 });
  });

  it("lets a stalled answer go after stallMs when the client waits that long", async () => {
    const { px, url } = await setup({ stallMs: 100 });
    px.forceNext("stall");
    const a = await send(url, UPLOAD, BODY, 5_000);
    expect(a).toMatchObject({ status: 200 });
    expect(px.counters).toMatchObject({ stall: 1, stallAbandoned: 0 });
  });

  it("answers 502 while the server is down and forwards again once it is back on the same port", async () => {
    const { up, px, url } = await setup();
    const port = Number(new URL(up.url).port);
    await up.close();
    const down = await send(url, UPLOAD, BODY);
    expect(down).toMatchObject({ status: 502 });
    expect(px.counters.upstreamErrors).toBe(1);
    await up.start(port);
    expect(await send(url, UPLOAD, BODY)).toMatchObject({ status: 200 });
  });

  it("draws faults by share from a seed: the same seed gives the same sequence", async () => {
    const draw = (seed: number): FaultChoice[] => {
      const p = new FaultProxy({ target: "http://127.0.0.1:9", seed, shares: { lock: 0.3, lostAfterCommit: 0.05, reset: 0.05 } });
      const choose = (p as unknown as { choose(i: { seq: number; method: string; path: string; matchIndex: number }): FaultChoice }).choose.bind(p);
      return Array.from({ length: 1000 }, (_, i) => choose({ seq: i, method: "POST", path: UPLOAD, matchIndex: i }));
    };
    const a = draw(42);
    expect(draw(42)).toEqual(a);
    expect(draw(43)).not.toEqual(a);
    const share = (k: FaultChoice): number => a.filter((x) => x === k).length / a.length;
    expect(share("lock")).toBeGreaterThan(0.25);
    expect(share("lock")).toBeLessThan(0.35);
    expect(share("lost-after-commit")).toBeGreaterThan(0.02);
    expect(share("lost-after-commit")).toBeLessThan(0.08);
    expect(share("reset")).toBeGreaterThan(0.02);
    expect(share("reset")).toBeLessThan(0.08);
    expect(share("stall")).toBe(0);
  });

  it("applies queued faults in order before the shares, and counts each", async () => {
    const { up, px, url } = await setup({ shares: {} });
    px.forceNext("lock", 2);
    px.forceNext("pass");
    const answers = [];
    for (let i = 0; i < 4; i++) answers.push(await send(url, UPLOAD, BODY));
    expect(answers.map((a) => ("status" in a ? a.status : a.error))).toEqual([500, 500, 200, 200]);
    expect(up.committed).toHaveLength(2);
    expect(px.counters).toMatchObject({ matched: 4, lock: 2, passed: 2 });
    expect(px.faults).toBe(2);
  });
});
