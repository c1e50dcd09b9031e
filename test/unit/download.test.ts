import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ImportError } from "../../src/errors.js";
import { downloadAttachment } from "../../src/transfer/download.js";
import type { Attachment, FileBody, Listing, ZoteroSource } from "../../src/zotero/types.js";
import { makePdf, md5 } from "../../fixtures/pdf.js";

// The download to the cache: the PDF check on the bytes as they stream by (no second read).
let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "ifz-download-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function sourceOf(chunks: Buffer[]): ZoteroSource {
  return {
    library: { type: "user", id: "7" },
    async list(): Promise<Listing> {
      throw new Error("not used");
    },
    async openFile(): Promise<FileBody> {
      return { body: Readable.from(chunks), size: chunks.reduce((n, c) => n + c.length, 0) };
    },
  };
}

const attachment = (body: Buffer): Attachment => ({ key: "DLTEST23", version: 1, parentKey: null, title: "t", linkMode: "imported_file", contentType: "application/pdf", filename: "t.pdf", md5: md5(body), size: null, hasFile: null });

const download = (chunks: Buffer[], body: Buffer) =>
  downloadAttachment({ source: sourceOf(chunks), attachment: attachment(body), cacheDir: join(dir, "cache"), useCache: false, retry: { retries: 0, minDelayMs: 1, maxDelayMs: 1 }, sleep: async () => undefined });

describe("downloadAttachment", () => {
  it("keeps a PDF whose header arrives split over tiny chunks, byte for byte", async () => {
    const pdf = makePdf({ title: "Split", pages: ["a"] });
    const chunks = [pdf.subarray(0, 2), pdf.subarray(2, 3), pdf.subarray(3, 700), pdf.subarray(700)];
    const got = await download(chunks, pdf);
    expect(got.md5).toBe(md5(pdf));
    expect(md5(readFileSync(got.path))).toBe(md5(pdf));
  });

  it("refuses bytes without a %PDF- header in the first KiB, and leaves nothing in the cache", async () => {
    const html = Buffer.from(`<html>${"x".repeat(2000)}%PDF-1.4 too late</html>`);
    const error = await download([html.subarray(0, 500), html.subarray(500)], html).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ImportError);
    expect((error as ImportError).code).toBe("ZOTERO_BAD_DATA");
    expect((error as ImportError).message).toContain("DLTEST23");
    expect(readdirSync(join(dir, "cache"))).toEqual([]);
  });
});
