import { mkdtempSync, readdirSync, readlinkSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ImportError } from "../../src/errors.js";
import { RefServerClient } from "../../src/refserver/client.js";
import { multipartBody } from "../../src/refserver/multipart.js";
import { boundaryOf, parseMultipart } from "../helpers/multipart.js";
import { makePdf, md5 } from "../../fixtures/pdf.js";
import { startRefServer, type RefServerProcess } from "../helpers/refserver-process.js";

// The upload body the importer builds by hand (a Node stream, no FormData): what a strict
// multipart parser and the real refserver-lite read from it.
let dir: string;
let pdfPath: string;
let pdf: Buffer;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "ifz-multipart-"));
  pdf = makePdf({ title: "Multipart", pages: ["one", "two", "three"] });
  pdfPath = join(dir, "a.pdf");
  writeFileSync(pdfPath, pdf);
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function drain(body: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of body) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** File descriptors of this process open on `path`. */
function openOn(path: string): number {
  return readdirSync("/proc/self/fd").filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === path;
    } catch {
      return false;
    }
  }).length;
}

describe("the hand-built multipart upload body", () => {
  it("holds the fields in order, then the file, with line breaks as CRLF and quotes escaped, and announces its exact length", async () => {
    const m = await multipartBody(
      [
        ["title", 'A "quoted"\ntitle'],
        ["authors", '["Åsa Ölund"]'],
        ["zotero_key", "ABCD2345"],
      ],
      { name: "file", path: pdfPath, filename: 'Über "x".pdf', contentType: "application/pdf" },
    );
    const bytes = await drain(m.body);
    expect(bytes.length).toBe(m.length);
    const boundary = boundaryOf(m.contentType);
    expect(boundary).toBeDefined();
    const parts = parseMultipart(bytes, boundary!);
    expect(parts.map((p) => p.name)).toEqual(["title", "authors", "zotero_key", "file"]);
    expect(parts[0]!.data.toString("utf8")).toBe('A "quoted"\r\ntitle');
    expect(parts[1]!.data.toString("utf8")).toBe('["Åsa Ölund"]');
    expect(parts[0]!.filename).toBeUndefined();
    const file = parts[3]!;
    expect(file.filename).toBe("Über %22x%22.pdf");
    expect(file.contentType).toBe("application/pdf");
    expect(md5(file.data)).toBe(md5(pdf));
    expect(openOn(pdfPath)).toBe(0);
  });

  it("says which cache file is gone, as a retriable FILE_IO error", async () => {
    const missing = join(dir, "gone.pdf");
    const error = await multipartBody([], { name: "file", path: missing, filename: "gone.pdf", contentType: "application/pdf" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImportError);
    expect((error as ImportError).code).toBe("FILE_IO");
    expect((error as ImportError).retriable).toBe(true);
    expect((error as ImportError).message).toContain(missing);
  });

  it("fails the body rather than send fewer bytes than its Content-Length when the file shrinks", async () => {
    const path = join(dir, "shrinks.pdf");
    writeFileSync(path, pdf);
    const m = await multipartBody([["title", "t"]], { name: "file", path, filename: "s.pdf", contentType: "application/pdf" });
    truncateSync(path, 100);
    const error = await drain(m.body).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImportError);
    expect((error as ImportError).message).toMatch(/changed size/);
    expect(openOn(path)).toBe(0);
  });

  it("closes the file when the request never reads the body", async () => {
    const m = await multipartBody([["title", "t"]], { name: "file", path: pdfPath, filename: "a.pdf", contentType: "application/pdf" });
    expect(openOn(pdfPath)).toBe(1);
    m.dispose();
    // FileHandle.close() is asynchronous: wait for the descriptor to go, bounded.
    for (let i = 0; i < 100 && openOn(pdfPath) > 0; i++) await new Promise<void>((resolve) => setTimeout(resolve, 10));
    expect(openOn(pdfPath)).toBe(0);
  });
});

describe("an upload through the hand-built body to the real refserver-lite", () => {
  let server: RefServerProcess;
  let agent: Agent;
  beforeAll(async () => {
    server = await startRefServer({ args: ["--no-worker"] });
    agent = new Agent({ connections: 2 });
  });
  afterAll(async () => {
    await agent.close();
    await server.close();
  });

  it("stores the bytes, the non-ASCII filename and the title with its line break; a repeat is a 409", async () => {
    const client = new RefServerClient({
      baseUrl: server.url,
      username: server.adminUser,
      password: server.adminPassword,
      dispatcher: agent,
      retry: { retries: 0, minDelayMs: 1, maxDelayMs: 1 },
      sleep: async () => undefined,
    });
    const meta = { title: "Über Graphen\nund Netze", authors: ["Åsa Ölund", "Li, Wei"], year: 2001, journal: null, doi: null, abstract: null, zoteroKey: "MPRT2345", libraryId: "77", version: 9, collectionKeys: [], tags: ["t"] };
    const first = await client.upload(meta, pdfPath, "Übersicht.pdf");
    expect(first.kind).toBe("imported");
    const docId = first.docId!;
    expect(md5(await server.download(docId))).toBe(md5(pdf));
    const row = server.db().papers().find((p) => p.doc_id === docId)!;
    expect(row.filename).toBe("Übersicht.pdf");
    expect(row.file_size).toBe(pdf.length);
    expect(server.db().titles().get(docId)).toBe("Über Graphen\r\nund Netze");
    expect(server.db().links("77").map((l) => [l.zotero_key, l.zotero_version])).toEqual([["MPRT2345", 9]]);
    const again = await client.upload(meta, pdfPath, "Übersicht.pdf");
    expect(again).toEqual({ kind: "already", docId });
  });
});
