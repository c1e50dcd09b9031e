import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { Agent } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { RefServerClient, type UploadMetadata } from "../../src/refserver/client.js";
import { Pacer } from "../../src/retry/pacer.js";
import { FakeRefServer } from "../helpers/fake-refserver.js";
import { makePdf, md5 } from "../../fixtures/pdf.js";

// The upload client against a real HTTP server on 127.0.0.1; time is injected, nothing waits.
let refserver: FakeRefServer;
let url: string;
let close: () => Promise<void>;
let agent: Agent;
let pdfPath: string;
let pdf: Buffer;
const waits: number[] = [];

beforeEach(async () => {
  refserver = new FakeRefServer({ username: "admin", password: "pw-123456" });
  ({ url, close } = await refserver.start());
  agent = new Agent({ connections: 4 });
  pdf = makePdf({ title: "Client test", pages: ["one", "two"] });
  pdfPath = join(mkdtempSync(join(tmpdir(), "ifz-client-")), "a.pdf");
  writeFileSync(pdfPath, pdf);
  waits.length = 0;
});
afterEach(async () => {
  await agent.close();
  await close();
  rmSync(dirname(pdfPath), { recursive: true, force: true });
});

function client(options: { password?: string; pacer?: Pacer } = {}): RefServerClient {
  return new RefServerClient({
    baseUrl: url,
    username: "admin",
    password: options.password ?? "pw-123456",
    dispatcher: agent,
    retry: { retries: 6, minDelayMs: 100, maxDelayMs: 1000 },
    sleep: async (ms) => {
      waits.push(ms);
    },
    ...(options.pacer ? { pacer: options.pacer } : {}),
  });
}

const meta = (key: string): UploadMetadata => ({ title: "T", authors: ["Ada Lovelace"], year: 1843, journal: null, doi: null, abstract: null, zoteroKey: key, libraryId: "7", version: 3, collectionKeys: ["COLL2345"], tags: ["x"] });

describe("RefServer client", () => {
  it("uploads the file streamed from disk with every metadata field before it", async () => {
    const outcome = await client().upload(meta("ABCD2345"), pdfPath, "a.pdf");
    expect(outcome.kind).toBe("imported");
    const upload = refserver.uploads.at(-1)!;
    expect(upload.fieldNames).toEqual(["title", "authors", "year", "zotero_key", "zotero_library_id", "zotero_version", "collection_keys", "tags", "file"]);
    expect(upload.fields).toMatchObject({ authors: '["Ada Lovelace"]', year: "1843", zotero_version: "3", collection_keys: '["COLL2345"]', tags: '["x"]' });
    expect(upload.file).toMatchObject({ filename: "a.pdf", size: pdf.length, md5: md5(pdf) });
  });

  it("retries 'database is locked' with growing waits, and counts a 409 as done", async () => {
    refserver.lockNextUploads(3);
    expect((await client().upload(meta("ABCD2345"), pdfPath, "a.pdf")).kind).toBe("imported");
    expect(waits).toHaveLength(3);
    expect(refserver.statusCount(500)).toBe(3);
    const again = await client().upload(meta("ABCD2345"), pdfPath, "a.pdf");
    expect(again).toEqual({ kind: "already", docId: refserver.papers.get("ABCD2345")!.docId });
  });

  it("logs in again once on a 401, and says so clearly when the login itself is refused", async () => {
    const c = client();
    await c.upload(meta("AAAA2345"), pdfPath, "a.pdf");
    refserver.invalidateTokens();
    expect((await c.upload(meta("BBBB2345"), pdfPath, "a.pdf")).kind).toBe("imported");
    expect(refserver.loginCalls).toBe(2);
    await expect(client({ password: "wrong-password" }).login()).rejects.toMatchObject({ code: "REFSERVER_AUTH", message: expect.stringMatching(/refused the login of 'admin'/) });
  });

  it("does not retry a 422 and keeps the server's message", async () => {
    refserver.failKeys(["CCCC2345"], 422);
    await expect(client().upload(meta("CCCC2345"), pdfPath, "a.pdf")).rejects.toMatchObject({ code: "REFSERVER_REJECTED", retriable: false });
    expect(refserver.uploadsPerKey.get("CCCC2345")).toBe(1);
  });

  it("retries an upload whose answer was lost after commit; the 409 closes it", async () => {
    refserver.loseAnswerAfterCommit({ next: 1 });
    const outcome = await client().upload(meta("DDDD2345"), pdfPath, "a.pdf");
    expect(outcome.kind).toBe("already");
    expect(refserver.commitsPerKey.get("DDDD2345")).toBe(1);
  });

  it("stops with the breaker once the server stays unreachable, without using up retries", async () => {
    await close();
    let now = 0;
    const pacer = new Pacer({ ceiling: 2, adaptive: true, giveUpAfterMs: 5_000, clock: () => now, sleep: async () => undefined });
    const c = new RefServerClient({
      baseUrl: url,
      username: "admin",
      password: "pw-123456",
      dispatcher: agent,
      retry: { retries: 1, minDelayMs: 1000, maxDelayMs: 1000 },
      sleep: async (ms) => {
        now += ms;
      },
      pacer,
    });
    // One retry allowed, yet it keeps trying (connection failures don't count) until 5 s have passed.
    await expect(c.login()).rejects.toMatchObject({ code: "REFSERVER_UNAVAILABLE", connection: true });
    expect(now).toBeGreaterThanOrEqual(5_000);
    ({ url, close } = await refserver.start());
  });
});
