import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import type { ChunkInput } from "../db/types.js";
import { chunkPages } from "./chunk.js";
import { formatBytes } from "./limits.js";

/** The subset of pdfjs-dist's text item this module reads. */
interface TextItemLike {
  str: string;
  hasEOL: boolean;
  height: number;
  transform: number[];
}

type PdfjsModule = typeof import("pdfjs-dist/legacy/build/pdf.mjs");

// ---- the decoded-bytes guard ----------------------------------------------------------------
//
// pdfjs decodes every filtered stream (FlateDecode, LZW, ASCII85, …, and a page's several content
// streams joined into one) through `DecodeStream.ensureBuffer`, which grows the stream's buffer
// as the decoder writes into it: that is where a 1 MB file becomes 300 MB. pdfjs has no option
// for it, so the worker module is loaded with that one method replaced: before growing, it asks
// the guard below, which throws once a stream would hold more than `maxBytes`, and it never
// grows a buffer past `maxBytes + 1` bytes (pdfjs doubles, so without the clamp a stream could
// decode up to twice the limit before asking again). The text of the method is matched exactly;
// if a pdfjs-dist upgrade changes it, the stock module is used, `guarded` is false, and the
// worker logs that the limit is off (the time and memory limits still hold); a test fails.

const ENSURE_BUFFER = `  ensureBuffer(requested) {
    const buffer = this.buffer;
    if (requested <= buffer.byteLength) {
      return buffer;
    }
    let size = this.minBufferLength;
    while (size < requested) {
      size *= 2;
    }
    const buffer2 = new Uint8Array(size);
    buffer2.set(buffer);
    return this.buffer = buffer2;
  }`;

const GUARDED_ENSURE_BUFFER = `  ensureBuffer(requested) {
    const buffer = this.buffer;
    if (requested <= buffer.byteLength) {
      return buffer;
    }
    const guard = globalThis[Symbol.for("refserver-lite.decodeGuard")];
    if (guard !== undefined && requested > guard.maxBytes) {
      guard.exceeded(requested);
    }
    let size = this.minBufferLength;
    while (size < requested) {
      size *= 2;
    }
    if (guard !== undefined && size > guard.maxBytes) {
      size = guard.maxBytes + 1;
    }
    const buffer2 = new Uint8Array(size);
    buffer2.set(buffer);
    return this.buffer = buffer2;
  }`;

const GUARD_KEY = Symbol.for("refserver-lite.decodeGuard");

/** pdfjs's worker module source with the guarded `ensureBuffer`, or undefined when it does not match. */
export function guardWorkerSource(source: string): string | undefined {
  const at = source.indexOf(ENSURE_BUFFER);
  if (at < 0 || source.indexOf(ENSURE_BUFFER, at + 1) >= 0) return undefined;
  const patched = source.slice(0, at) + GUARDED_ENSURE_BUFFER + source.slice(at + ENSURE_BUFFER.length);
  // A data: URL has no directory for the source map comment to point into.
  return patched.replace(/\n\/\/# sourceMappingURL=\S*\s*$/u, "\n");
}

/** The limit in force while one document is read; `hit` records that a stream reached it. */
class DecodeGuard {
  hit = false;
  constructor(readonly maxBytes: number) {}
  exceeded(requested: number): never {
    this.hit = true;
    throw new Error(`a stream decodes to more than ${this.maxBytes} bytes (asked for ${requested})`);
  }
}

interface LoadedPdfjs {
  lib: PdfjsModule;
  /** True when the decoded-bytes guard is installed. */
  guarded: boolean;
}

let loading: Promise<LoadedPdfjs> | undefined;

/**
 * pdfjs-dist's legacy build (the one meant for Node), loaded on first use. In Node pdfjs runs its
 * "worker" in the calling thread, taking the module from `globalThis.pdfjsWorker` when set: the
 * guarded copy is put there first.
 */
function loadPdfjs(): Promise<LoadedPdfjs> {
  loading ??= (async (): Promise<LoadedPdfjs> => {
    const g = globalThis as { pdfjsWorker?: unknown };
    let guarded = false;
    if (g.pdfjsWorker === undefined) {
      try {
        const path = createRequire(import.meta.url).resolve("pdfjs-dist/legacy/build/pdf.worker.mjs");
        const patched = guardWorkerSource(await readFile(path, "utf8"));
        if (patched !== undefined) {
          g.pdfjsWorker = (await import(`data:text/javascript;base64,${Buffer.from(patched).toString("base64")}`)) as unknown;
          guarded = true;
        }
      } catch {
        guarded = false;
      }
    }
    const lib = await import("pdfjs-dist/legacy/build/pdf.mjs");
    return { lib, guarded };
  })();
  return loading;
}

/** Whether pdfjs's decoding is guarded in this thread (loads pdfjs). */
export async function decodeGuardInstalled(): Promise<boolean> {
  return (await loadPdfjs()).guarded;
}

// ---- page text ------------------------------------------------------------------------------

function isTextItem(item: unknown): item is TextItemLike {
  return typeof item === "object" && item !== null && "str" in item && "transform" in item;
}

/**
 * A page's text, built from its text items as they stream in: lines end at EOL marks, a wide
 * vertical gap starts a paragraph. `bytes` is an upper bound of the UTF-8 size of the result.
 */
export class PageTextBuilder {
  private out = "";
  private line = "";
  private lineY: number | undefined;
  private lineHeight = 12;
  private prevY: number | undefined;
  bytes = 0;

  add(item: unknown): void {
    if (!isTextItem(item)) return;
    if (this.lineY === undefined && item.str.length > 0) {
      this.lineY = item.transform[5];
      if (item.height > 0) this.lineHeight = item.height;
    }
    this.line += item.str;
    this.bytes += Buffer.byteLength(item.str);
    if (item.hasEOL) {
      this.bytes += 2;
      this.flush();
    }
  }

  finish(): string {
    this.flush();
    return this.out.trim();
  }

  private flush(): void {
    const text = this.line.replace(/\s+$/u, "");
    if (this.lineY !== undefined && this.prevY !== undefined && this.out.length > 0) {
      this.out += this.prevY - this.lineY > this.lineHeight * 1.6 ? "\n\n" : "\n";
    }
    if (text.length > 0 || this.lineY !== undefined) {
      this.out += text;
      if (this.lineY !== undefined) this.prevY = this.lineY;
    }
    this.line = "";
    this.lineY = undefined;
  }
}

/** Rebuild a page's text: lines end at EOL marks, a wide vertical gap starts a paragraph. */
export function pageTextFromItems(items: readonly unknown[]): string {
  const builder = new PageTextBuilder();
  for (const item of items) builder.add(item);
  return builder.finish();
}

/** The longest prefix of `text` whose UTF-8 form fits in `maxBytes` (never splits a character). */
export function cutUtf8(text: string, maxBytes: number): string {
  if (maxBytes <= 0) return "";
  if (text.length * 3 <= maxBytes || Buffer.byteLength(text) <= maxBytes) return text;
  const { read } = new TextEncoder().encodeInto(text, new Uint8Array(maxBytes));
  return text.slice(0, read);
}

// ---- extraction -----------------------------------------------------------------------------

export class PdfReadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PdfReadError";
  }
}

export interface TextLimits {
  /** See PdfLimits.maxDecodedBytes. */
  maxDecodedBytes: number;
  /** See PdfLimits.maxTextBytes. */
  maxTextBytes: number;
}

export interface ExtractedText {
  /** One entry per page of the document; empty for a skipped page and for pages after a cut. */
  pages: string[];
  /** What the limits changed, for the job's text step ("text cut at 5 MB …", "page 3 skipped: …"). */
  notes: string[];
  /** False when pdfjs-dist could not be guarded: `maxDecodedBytes` was not enforced. */
  guarded: boolean;
}

export interface ExtractedDocument extends ExtractedText {
  chunks: ChunkInput[];
}

const NO_LIMITS: TextLimits = { maxDecodedBytes: Number.POSITIVE_INFINITY, maxTextBytes: Number.POSITIVE_INFINITY };

/**
 * Page count and the text of every page, within the limits: a page whose content decodes to more
 * than `maxDecodedBytes` is skipped (empty text, a note); text beyond `maxTextBytes` for the
 * document is cut at the limit and the remaining pages are not read (a note). The text of each
 * page is read as a stream, so a page's text is never held whole beyond the limit.
 * `shouldStop` is checked between pages (null: stopped).
 */
export async function extractText(
  path: string,
  limits: TextLimits = NO_LIMITS,
  shouldStop: () => boolean = () => false,
): Promise<ExtractedText | null> {
  const { lib, guarded } = await loadPdfjs();
  const file = await readFile(path);
  const guard = new DecodeGuard(limits.maxDecodedBytes);
  const slot = globalThis as unknown as Record<symbol, DecodeGuard | undefined>;
  slot[GUARD_KEY] = guard;
  const task = lib.getDocument({
    data: new Uint8Array(file.buffer, file.byteOffset, file.byteLength),
    verbosity: 0,
    isEvalSupported: false,
    disableFontFace: true,
    useSystemFonts: false,
    stopAtErrors: true,
  });
  const overLimit = `more than ${formatBytes(limits.maxDecodedBytes)} (the decoded-bytes limit)`;
  try {
    let doc;
    try {
      doc = await task.promise;
    } catch (err) {
      if (guard.hit) throw new PdfReadError(`Could not read the PDF: one of its streams decodes to ${overLimit}`);
      throw new PdfReadError(`Could not read the PDF: ${(err as Error).message}`);
    }
    const pages: string[] = [];
    const notes: string[] = [];
    let budget = limits.maxTextBytes;
    let cut = false;
    for (let i = 1; i <= doc.numPages; i++) {
      if (shouldStop()) return null;
      if (cut) {
        pages.push("");
        continue;
      }
      guard.hit = false;
      const builder = new PageTextBuilder();
      let stoppedEarly = false;
      let page: Awaited<ReturnType<typeof doc.getPage>> | undefined;
      try {
        page = await doc.getPage(i);
        const reader = page.streamTextContent().getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const item of value.items) builder.add(item);
          if (builder.bytes > budget) {
            stoppedEarly = true;
            await reader.cancel(new Error("the stored-text limit was reached")).catch(() => undefined);
            break;
          }
        }
      } catch (err) {
        page?.cleanup();
        if (guard.hit) {
          pages.push("");
          notes.push(`page ${i} skipped: its content decodes to ${overLimit}`);
          continue;
        }
        throw new PdfReadError(`Could not read page ${i} of the PDF: ${(err as Error).message}`);
      }
      page.cleanup();
      let text = builder.finish();
      if (stoppedEarly || Buffer.byteLength(text) > budget) {
        text = cutUtf8(text, budget);
        cut = true;
        const rest = i < doc.numPages ? `; pages ${i + 1}-${doc.numPages} not read` : "";
        notes.push(`text cut at ${formatBytes(limits.maxTextBytes)} (the stored-text limit) on page ${i}${rest}`);
      }
      budget -= Buffer.byteLength(text);
      pages.push(text);
      // Let the stream's cancellation and pdfjs's bookkeeping run between pages.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return { pages, notes, guarded };
  } finally {
    if (slot[GUARD_KEY] === guard) delete slot[GUARD_KEY];
    await task.destroy().catch(() => undefined);
  }
}

/** Text, notes and chunks of a document (what the PDF thread answers). */
export async function extractDocument(path: string, limits: TextLimits): Promise<ExtractedDocument> {
  const text = await extractText(path, limits);
  if (text === null) throw new Error("extraction stopped");
  return { ...text, chunks: chunkPages(text.pages) };
}

/**
 * Page count and the text of every page, with no limits, in this thread. Yields between pages;
 * `shouldStop` is checked between pages so shutdown need not wait for a long document.
 * The server does not call this: its worker reads PDFs in a separate thread (`PdfExtractor`).
 */
export async function extractPages(path: string, shouldStop: () => boolean = () => false): Promise<string[] | null> {
  return (await extractText(path, NO_LIMITS, shouldStop))?.pages ?? null;
}
