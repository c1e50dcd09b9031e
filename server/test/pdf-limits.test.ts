/**
 * The PDF limits, unit by unit: the PDF thread (PdfExtractor, which runs the built
 * dist/worker/pdf-thread.js: build first) with tiny limits, and the helpers they rest on.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { deflateRepeated, makeInflatingPdf, makeSamplePdf, makeTestPdf } from "./helpers/pdf.js";
import { ExtractionStopped, PdfExtractor, PdfLimitError } from "../src/worker/extractor.js";
import { DEFAULT_PDF_LIMITS, formatBytes, resolvePdfLimits, type PdfLimits } from "../src/worker/limits.js";
import { cutUtf8, decodeGuardInstalled, extractPages, guardWorkerSource } from "../src/worker/pdf.js";
import { removeTempDirs, tempDataDir } from "./helpers/app.js";

const MB = 1024 * 1024;
const extractors: PdfExtractor[] = [];

function extractor(limits: Partial<PdfLimits>): PdfExtractor {
  const e = new PdfExtractor({ limits });
  extractors.push(e);
  return e;
}

async function pdfFile(name: string, bytes: Buffer): Promise<string> {
  const path = join(await tempDataDir(), name);
  await writeFile(path, bytes);
  return path;
}

afterAll(async () => {
  await Promise.all(extractors.map((e) => e.close()));
  await removeTempDirs();
});

const bytesOf = (pages: string[]): number => pages.reduce((n, p) => n + Buffer.byteLength(p), 0);

describe("limit helpers", () => {
  it("pdfjs's stream decoding is guarded (fails when a pdfjs-dist upgrade changes DecodeStream.ensureBuffer)", async () => {
    expect(await decodeGuardInstalled()).toBe(true);
    expect(guardWorkerSource("class X { ensureBuffer(requested) { return 1; } }")).toBeUndefined();
  });

  it("cuts UTF-8 text at a byte limit without splitting a character", () => {
    expect(cutUtf8("abc", 10)).toBe("abc");
    expect(cutUtf8("abcdef", 3)).toBe("abc");
    expect(cutUtf8("a€b", 3)).toBe("a"); // € is 3 bytes
    expect(cutUtf8("a€b", 4)).toBe("a€");
    expect(cutUtf8("😀x", 3)).toBe(""); // a surrogate pair is 4 bytes
    expect(cutUtf8("😀x", 5)).toBe("😀x");
    expect(cutUtf8("abc", 0)).toBe("");
  });

  it("defaults, overrides and sizes", () => {
    expect(DEFAULT_PDF_LIMITS).toEqual({ timeLimitMs: 60_000, maxDecodedBytes: 20 * MB, maxTextBytes: 5 * MB, memoryMb: 256 });
    expect(resolvePdfLimits({ maxTextBytes: 10 })).toMatchObject({ maxTextBytes: 10, timeLimitMs: 60_000 });
    expect(() => resolvePdfLimits({ timeLimitMs: 0 })).toThrow(/timeLimitMs must be a positive number/);
    expect([formatBytes(5 * MB), formatBytes(1.5 * MB), formatBytes(2048), formatBytes(300)]).toEqual(["5 MB", "1.5 MB", "2 KB", "300 bytes"]);
  });
});

describe("the PDF thread", () => {
  it("reads a normal PDF as the in-thread reader does, with chunks and no notes", async () => {
    const path = await pdfFile("normal.pdf", makeSamplePdf(3, 2));
    const result = await extractor({}).extract(path);
    expect(result.pages).toEqual(await extractPages(path));
    expect(result.pages).toHaveLength(3);
    expect(result.chunks).toHaveLength(6);
    expect(result.notes).toEqual([]);
    expect(result.guarded).toBe(true);
  });

  it("cuts the text AT the stored-text limit, says so, and reads no further page", async () => {
    const path = await pdfFile("four.pdf", makeSamplePdf(4, 2));
    const full = (await extractPages(path)) ?? [];
    const page1 = Buffer.byteLength(full[0] ?? "");
    const limit = page1 + 50; // page 1 whole, page 2 cut after 50 bytes
    const result = await extractor({ maxTextBytes: limit }).extract(path);
    expect(result.pages).toEqual([full[0], (full[1] ?? "").slice(0, 50), "", ""]);
    expect(bytesOf(result.pages)).toBe(limit);
    expect(result.notes).toEqual([`text cut at ${limit} bytes (the stored-text limit) on page 2; pages 3-4 not read`]);
    expect(result.chunks.map((c) => c.pageNumber)).toEqual([1, 1, 2]);
  });

  it("cuts a page of 200 MB of text at 1 MB, reading only about as much as it keeps", async () => {
    const path = await pdfFile("text-bomb.pdf", await makeInflatingPdf(300 * MB, "text"));
    const started = Date.now();
    const result = await extractor({ maxTextBytes: MB }).extract(path);
    expect(result.pages).toHaveLength(1);
    expect(bytesOf(result.pages)).toBe(MB);
    expect(result.pages[0]).toMatch(/^The quick brown fox jumps over the lazy dog\./);
    expect(result.notes).toEqual(["text cut at 1 MB (the stored-text limit) on page 1"]);
    expect(Date.now() - started).toBeLessThan(20_000);
  });

  it("skips a page whose content decodes past the decoded-bytes limit; the other pages are read", async () => {
    const bomb = await deflateRepeated("72 72 m 540 720 l S\n", 8 * MB);
    const path = await pdfFile("paths-bomb.pdf", makeTestPdf({ pages: [[["unused"]], [["Second page, read."]]], flateContent: [bomb] }));
    const result = await extractor({ maxDecodedBytes: MB }).extract(path);
    expect(result.pages).toEqual(["", "Second page, read."]);
    expect(result.notes).toEqual(["page 1 skipped: its content decodes to more than 1 MB (the decoded-bytes limit)"]);
    // Under the limit the same page is read (it has no text).
    const roomy = await extractor({ maxDecodedBytes: 9 * MB }).extract(path);
    expect(roomy.pages).toEqual(["", "Second page, read."]);
    expect(roomy.notes).toEqual([]);
  });

  it("ends a document at a tiny time limit, at once", async () => {
    const bomb = await pdfFile("slow.pdf", await makeInflatingPdf(300 * MB, "text"));
    const e = extractor({ timeLimitMs: 300, maxTextBytes: 1024 * MB, maxDecodedBytes: 1024 * MB });
    const started = Date.now();
    const err = await e.extract(bomb).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(PdfLimitError);
    expect((err as Error).message).toBe("PDF processing exceeded the 0.3 s time limit");
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it("after a time-out the same extractor reads the next document in a fresh thread", async () => {
    const bomb = await pdfFile("slow2.pdf", await makeInflatingPdf(300 * MB, "text"));
    const normal = await pdfFile("next2.pdf", makeSamplePdf(2, 1));
    // The bomb needs 50 s or more with these caps; the next document gets the same limit, which
    // must cover a fresh thread loading pdfjs on a busy machine (0.6 s idle, seconds under load).
    const e = extractor({ timeLimitMs: 6000, maxTextBytes: 1024 * MB, maxDecodedBytes: 1024 * MB });
    await expect(e.extract(bomb)).rejects.toThrow("PDF processing exceeded the 6 s time limit");
    expect((await e.extract(normal)).pages).toHaveLength(2);
    expect(e.threadsStarted).toBe(2);
  });

  it("a thread that runs out of memory is ended; the job's message names the memory limit", async () => {
    const bomb = await pdfFile("heavy.pdf", await makeInflatingPdf(300 * MB, "text"));
    const normal = await pdfFile("after.pdf", makeSamplePdf(1, 1));
    // 48 MB: a normal PDF still reads in such a thread (checked below; at 40 MB it no longer does),
    // and the bomb fills it in ~9 s (64 MB took 15-20 s); a time limit far past that, so a busy
    // machine meets the memory limit first.
    const e = extractor({ memoryMb: 48, timeLimitMs: 170_000, maxTextBytes: 1024 * MB, maxDecodedBytes: 1024 * MB });
    await expect(e.extract(bomb)).rejects.toThrow("PDF processing exceeded the memory limit (48 MB)");
    expect((await e.extract(normal)).pages).toHaveLength(1);
    expect(e.threadsStarted).toBe(2);
  }, 180_000); // only a hang guard: pdfjs reads about 3 MB of operators a second

  it("stop() abandons the document at once (ExtractionStopped), and the extractor still works", async () => {
    const bomb = await pdfFile("long.pdf", await makeInflatingPdf(300 * MB, "text"));
    const normal = await pdfFile("later.pdf", makeSamplePdf(1, 1));
    const e = extractor({ maxTextBytes: 1024 * MB, maxDecodedBytes: 1024 * MB });
    const running = e.extract(bomb).catch((x: unknown) => x);
    await new Promise((r) => setTimeout(r, 500));
    const stoppedAt = Date.now();
    e.stop();
    expect(await running).toBeInstanceOf(ExtractionStopped);
    expect(Date.now() - stoppedAt).toBeLessThan(5000);
    expect((await e.extract(normal)).pages).toHaveLength(1);
  });

  it("a file that is not a PDF is a read error, not a crash", async () => {
    const path = await pdfFile("broken.pdf", Buffer.from("%PDF-1.4\nnot a pdf\n%%EOF\n"));
    await expect(extractor({}).extract(path)).rejects.toThrow(/^Could not read the PDF/);
  });
});
