import { describe, expect, it } from "vitest";
import { ImportError } from "../../src/errors.js";
import { classifyNetworkError, classifyRefServerAnswer } from "../../src/retry/classify.js";
import { backoffDelay, withRetry } from "../../src/retry/policy.js";

describe("classifying RefServer answers", () => {
  it("treats 409 as already imported and extracts the doc_id", () => {
    const v = classifyRefServerAnswer(409, JSON.stringify({ detail: "Document with Zotero key 'ABCD2345' already exists (doc_id: 0b0f6c1e-1b2c-4d5e-8f90-123456789abc)" }), null);
    expect(v).toEqual({ kind: "already", docId: "0b0f6c1e-1b2c-4d5e-8f90-123456789abc" });
  });

  it("retries 'database is locked' and other 5xx, 429 with Retry-After", () => {
    const locked = classifyRefServerAnswer(500, '{"detail":"Database error: database is locked"}', null);
    expect(locked.kind === "error" && locked.error.code === "REFSERVER_LOCKED" && locked.error.retriable).toBe(true);
    const busy = classifyRefServerAnswer(429, "{}", "7");
    expect(busy.kind === "error" && busy.error.retriable && busy.error.retryAfterMs === 7000).toBe(true);
    const other = classifyRefServerAnswer(502, "bad gateway", null);
    expect(other.kind === "error" && other.error.retriable).toBe(true);
  });

  it.each([400, 413, 415, 422])("does not retry %i and keeps the server's message", (status) => {
    const v = classifyRefServerAnswer(status, JSON.stringify({ detail: [{ loc: ["body", "title"], msg: "Field required", type: "missing" }] }), null);
    expect(v.kind).toBe("error");
    if (v.kind === "error") {
      expect(v.error.retriable).toBe(false);
      expect(v.error.message).toContain("body.title: Field required");
    }
  });

  it("asks for a new login on 401", () => {
    expect(classifyRefServerAnswer(401, '{"detail":"Authentication required"}', null)).toEqual({ kind: "reauth" });
  });

  it("retries connection resets, refusals and timeouts by their codes", () => {
    for (const code of ["ECONNRESET", "ECONNREFUSED", "UND_ERR_SOCKET", "UND_ERR_HEADERS_TIMEOUT"]) {
      const e = classifyNetworkError(Object.assign(new Error("x"), { code }), "upload");
      expect(e.retriable).toBe(true);
      expect(e.connection).toBe(true);
    }
    const wrapped = classifyNetworkError(new TypeError("fetch failed", { cause: Object.assign(new Error("c"), { code: "ECONNREFUSED" }) }), "zotero");
    expect(wrapped.retriable).toBe(true);
  });
});

describe("backoff", () => {
  const policy = { retries: 5, minDelayMs: 1000, maxDelayMs: 8000 };
  it("grows exponentially with full jitter under a ceiling", () => {
    expect(backoffDelay(1, policy, undefined, () => 1)).toBe(1000);
    expect(backoffDelay(3, policy, undefined, () => 1)).toBe(4000);
    expect(backoffDelay(10, policy, undefined, () => 1)).toBe(8000);
    expect(backoffDelay(3, policy, undefined, () => 0)).toBe(0);
  });
  it("never waits less than Retry-After", () => {
    expect(backoffDelay(1, policy, 5000, () => 0)).toBe(5000);
  });
  it("retries a retriable failure and gives up on a permanent one, sleeping through the injected sleep", async () => {
    const waits: number[] = [];
    const sleep = async (ms: number) => {
      waits.push(ms);
    };
    let calls = 0;
    const value = await withRetry(
      async () => {
        calls++;
        if (calls < 4) throw new ImportError("REFSERVER_LOCKED", "locked", { retriable: true });
        return "ok";
      },
      policy,
      { sleep, random: () => 1 },
    );
    expect(value).toBe("ok");
    expect(waits).toEqual([1000, 2000, 4000]);
    let permanentCalls = 0;
    await expect(
      withRetry(
        async () => {
          permanentCalls++;
          throw new ImportError("REFSERVER_REJECTED", "422", { retriable: false });
        },
        policy,
        { sleep },
      ),
    ).rejects.toThrow("422");
    expect(permanentCalls).toBe(1);
  });
});

describe("upload filename", () => {
  it("is a bare name ending in a lower-case .pdf, as the real server demands", async () => {
    const { uploadFilename } = await import("../../src/refserver/client.js");
    expect(uploadFilename("../../etc/Paper.PDF", "KEY12345")).toBe("Paper.pdf");
    expect(uploadFilename("scan", "KEY12345")).toBe("scan.pdf");
    expect(uploadFilename(null, "KEY12345")).toBe("KEY12345.pdf");
    expect(uploadFilename("C:\\Users\\me\\a.pdf", "KEY12345")).toBe("a.pdf");
  });
});
