/**
 * The transfer pipeline in-process: an in-memory Zotero source (files as Node streams), the
 * real upload client against a loopback RefServer, a real journal on disk. Time is injected.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { Agent } from "undici";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ImportError } from "../../src/errors.js";
import { Journal } from "../../src/journal/journal.js";
import type { JournalRecord } from "../../src/journal/records.js";
import type { Candidate } from "../../src/plan/select.js";
import type { ProgressEvent } from "../../src/progress/events.js";
import { RefServerClient } from "../../src/refserver/client.js";
import { runPipeline, type PipelineOptions } from "../../src/transfer/pipeline.js";
import type { Attachment, FileBody, Item, Listing, ZoteroSource } from "../../src/zotero/types.js";
import { FakeRefServer } from "../helpers/fake-refserver.js";
import { startRefServer } from "../helpers/refserver-process.js";
import { FaultProxy } from "../../fixtures/fault-proxy.js";
import { makePdf, md5 } from "../../fixtures/pdf.js";

let dir: string;
let refserver: FakeRefServer;
let closeServer: () => Promise<void>;
let agent: Agent;
let url: string;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "ifz-pipeline-"));
  refserver = new FakeRefServer({ username: "admin", password: "pw-123456" });
  ({ url, close: closeServer } = await refserver.start());
  agent = new Agent({ connections: 8 });
});
afterEach(async () => {
  await agent.close();
  await closeServer();
  rmSync(dir, { recursive: true, force: true });
});

let seq = 0;
const ALPHABET = "23456789ABCDEFGHIJKLMNPQRSTUVWXYZ";
/** Unique Zotero-shaped keys: P + seq in Zotero's key alphabet. */
const key = (): string => {
  let n = ++seq;
  let k = "";
  for (let i = 0; i < 7; i++, n = Math.floor(n / ALPHABET.length)) k = ALPHABET[n % ALPHABET.length]! + k;
  return `P${k}`;
};

/** An in-memory source: attachments with a body serve it; the others answer Zotero's "no file". */
class MemorySource implements ZoteroSource {
  readonly library = { type: "user", id: "7" } as const;
  readonly opened: string[] = [];
  constructor(private readonly files: Map<string, Buffer>) {}
  async list(): Promise<Listing> {
    throw new Error("not used");
  }
  async openFile(attachment: Attachment): Promise<FileBody> {
    this.opened.push(attachment.key);
    const body = this.files.get(attachment.key);
    if (!body) throw new ImportError("ZOTERO_FILE_MISSING", "PDF not synced to Zotero storage (Zotero answered 404 for its file)", { status: 404 });
    return { body: Readable.from([body]), size: body.length };
  }
}

function candidate(files: Map<string, Buffer>, pdfs: ("file" | "none")[], title = "Paper"): Candidate {
  const attachments: Attachment[] = pdfs.map((kind, i) => {
    const k = key();
    const body = makePdf({ title: `${title} ${i}`, pages: ["page"] });
    if (kind === "file") files.set(k, body);
    return { key: k, version: 1, parentKey: null, title: `${title} ${i}`, linkMode: "imported_file", contentType: "application/pdf", filename: `${k}.pdf`, md5: kind === "file" ? md5(body) : null, size: null, hasFile: null };
  });
  const item: Item = { key: key(), version: 5, itemType: "journalArticle", title, creators: [], date: "2020", year: 2020, doi: null, collections: [], tags: [], attachments, standalone: false };
  return { item, attachment: attachments[0]!, attachments, unsynced: 0 };
}

function options(source: ZoteroSource, journal: Journal, candidates: Candidate[], over: Partial<PipelineOptions> = {}): PipelineOptions & { events: ProgressEvent[] } {
  const events: ProgressEvent[] = [];
  const sleep = async (): Promise<void> => undefined;
  const retry = { retries: 2, minDelayMs: 1, maxDelayMs: 1 };
  return {
    events,
    candidates,
    limit: null,
    source,
    client: new RefServerClient({ baseUrl: url, username: "admin", password: "pw-123456", dispatcher: agent, retry, sleep }),
    journal,
    scope: "test|user:7",
    runId: "run-1",
    libraryId: "7",
    cacheDir: join(dir, "cache"),
    useCache: false,
    batchSize: 2,
    delayMs: 0,
    retry,
    sleep,
    emit: (e) => events.push(e),
    stop: new AbortController().signal,
    hardStop: new AbortController().signal,
    ...over,
  };
}

const records = (path: string): JournalRecord[] =>
  readFileSync(path, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as JournalRecord);

describe("transfer pipeline (in-process)", () => {
  it("takes the item's next PDF when Zotero has no file for the first, and uploads that one's bytes", async () => {
    const files = new Map<string, Buffer>();
    const c = candidate(files, ["none", "file"]);
    const source = new MemorySource(files);
    const journal = Journal.open(join(dir, "j.ndjson"));
    const result = await runPipeline(options(source, journal, [c]));
    journal.close();
    expect(result.results.map((r) => r.outcome)).toEqual(["imported"]);
    expect(source.opened).toEqual([c.attachments[0]!.key, c.attachments[1]!.key]);
    expect(refserver.uploads.at(-1)!.file).toMatchObject({ md5: md5(files.get(c.attachments[1]!.key)!) });
    const done = records(join(dir, "j.ndjson")).find((r) => r.t === "item" && r.status === "done");
    expect(done).toMatchObject({ key: c.item.key, att: c.attachments[1]!.key });
  });

  it("--limit N imports N: items without a file do not use up a slot, and the rest is left not started", async () => {
    const files = new Map<string, Buffer>();
    const queue = [candidate(files, ["none"]), candidate(files, ["file"]), candidate(files, ["none", "none"]), candidate(files, ["file"]), candidate(files, ["file"]), candidate(files, ["file"])];
    const journal = Journal.open(join(dir, "j.ndjson"));
    const result = await runPipeline(options(new MemorySource(files), journal, queue, { limit: 2 }));
    journal.close();
    expect(result.results.filter((r) => r.outcome === "imported")).toHaveLength(2);
    expect(result.results.filter((r) => r.outcome === "skipped")).toHaveLength(2);
    expect(result.notStarted.map((c) => c.item.key)).toEqual(queue.slice(4).map((c) => c.item.key));
    // The skip is remembered with the attachments' versions.
    const skip = records(join(dir, "j.ndjson")).find((r) => r.t === "item" && r.status === "skipped");
    expect(skip).toMatchObject({ code: "ZOTERO_FILE_MISSING", atts: `${queue[0]!.attachments[0]!.key}:1` });
  });

  it("a checkpoint that cannot be written stops the run: no new item starts, what is in flight settles, the error names the file", async () => {
    const files = new Map<string, Buffer>();
    const queue = Array.from({ length: 12 }, () => candidate(files, ["file"]));
    const path = join(dir, "j.ndjson");
    const journal = Journal.open(path);
    // The disk fills after six records.
    let writes = 0;
    const real = journal.appendDurable.bind(journal);
    journal.appendDurable = (record) => {
      if (++writes > 6) {
        const e = Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
        return Promise.reject(new ImportError("CHECKPOINT_WRITE", `cannot write the checkpoint ${path} (ENOSPC: no space left on the device)`, { cause: e }));
      }
      return real(record);
    };
    const result = await runPipeline(options(new MemorySource(files), journal, queue));
    journal.close();
    expect(result.stoppedBy).toBe("checkpoint");
    expect(result.fatal?.message).toContain(path);
    expect(result.results.filter((r) => r.outcome === "failed").map((r) => r.message)).toEqual([]);
    expect(result.notStarted.length).toBeGreaterThan(0);
    const settledUploads = refserver.uploads.length;
    expect(refserver.uploadsInFlight).toBe(0);
    expect(settledUploads).toBeLessThan(12);
  });

  it("a stop before a retry leaves the paper interrupted, never failed", async () => {
    const files = new Map<string, Buffer>();
    const queue = [candidate(files, ["file"])];
    refserver.lockNextUploads(100);
    const stop = new AbortController();
    const journal = Journal.open(join(dir, "j.ndjson"));
    const o = options(new MemorySource(files), journal, queue, {
      stop: stop.signal,
      retry: { retries: 5, minDelayMs: 1, maxDelayMs: 1 },
    });
    // The stop arrives while the first locked answer is being handled.
    o.emit = (e) => {
      if (e.type === "retry") stop.abort(new DOMException("stopped by SIGTERM", "AbortError"));
    };
    o.client = new RefServerClient({ baseUrl: url, username: "admin", password: "pw-123456", dispatcher: agent, retry: o.retry, sleep: o.sleep, stop: stop.signal });
    const result = await runPipeline(o);
    journal.close();
    expect(result.results.map((r) => r.outcome)).toEqual(["interrupted"]);
    expect(result.stoppedBy).toBe("signal");
    expect(refserver.uploads).toHaveLength(1);
    expect(records(join(dir, "j.ndjson")).filter((r) => r.t === "item").map((r) => (r as { status: string }).status)).toEqual(["started"]);
  });
});

describe("the metadata call after an upload, against the real refserver-lite", () => {
  it("is left out after a fresh upload that carried everything (no journal, DOI or abstract), sent otherwise and after a 409", async () => {
    const server = await startRefServer({ args: ["--no-worker"] });
    const proxy = new FaultProxy({ target: server.url });
    await proxy.start();
    try {
      const files = new Map<string, Buffer>();
      const bare = candidate(files, ["file"], "Bare paper");
      const withDoi = candidate(files, ["file"], "Paper with a DOI");
      withDoi.item.doi = "10.5555/pipeline.1";
      const source = new MemorySource(files);
      const metadataCalls = (): string[] => proxy.log.filter((e) => /^\/api\/v1\/document\/[^/]+\/metadata$/.test(e.path)).map((e) => e.path);
      const run = async (name: string, candidates: Candidate[]) => {
        const journal = Journal.open(join(dir, name));
        const client = new RefServerClient({ baseUrl: proxy.url, username: server.adminUser, password: server.adminPassword, dispatcher: agent, retry: { retries: 2, minDelayMs: 1, maxDelayMs: 1 }, sleep: async () => undefined });
        // As the import command does before planning: refserver-lite answers with its links.
        expect(await client.knownKeys("7")).not.toBeNull();
        try {
          return await runPipeline({ ...options(source, journal, candidates), client });
        } finally {
          journal.close();
        }
      };
      const first = await run("a.ndjson", [bare, withDoi]);
      expect(first.results.map((r) => r.outcome).sort()).toEqual(["imported", "imported"]);
      const docOf = (c: Candidate): string => first.results.find((r) => r.candidate === c)!.docId!;
      // Only the paper with a DOI needed the call; both are recorded with their metadata digest.
      expect(metadataCalls()).toEqual([`/api/v1/document/${docOf(withDoi)}/metadata`]);
      const done = records(join(dir, "a.ndjson")).filter((r) => r.t === "item" && (r as { status: string }).status === "done") as Array<{ key: string; meta?: string; metaPending?: boolean }>;
      expect(done.map((r) => r.key).sort()).toEqual([bare.item.key, withDoi.item.key].sort());
      expect(done.every((r) => typeof r.meta === "string" && r.metaPending === undefined)).toBe(true);
      // The server holds what the upload carried.
      expect(server.db().titles().get(docOf(bare))).toBe("Bare paper");
      // A second import of the bare paper meets a 409: the upload told the server nothing, so the call goes.
      const second = await run("b.ndjson", [bare]);
      expect(second.results.map((r) => r.outcome)).toEqual(["already"]);
      expect(metadataCalls()).toEqual([`/api/v1/document/${docOf(withDoi)}/metadata`, `/api/v1/document/${docOf(bare)}/metadata`]);
    } finally {
      await proxy.close();
      await server.close();
    }
  });
});
