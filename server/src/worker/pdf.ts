import { readFile } from "node:fs/promises";

/** The subset of pdfjs-dist's text item this module reads. */
interface TextItemLike {
  str: string;
  hasEOL: boolean;
  height: number;
  transform: number[];
}

type PdfjsModule = typeof import("pdfjs-dist/legacy/build/pdf.mjs");
let pdfjs: Promise<PdfjsModule> | undefined;

/** pdfjs-dist is loaded on first use (the legacy build is the one meant for Node). */
function loadPdfjs(): Promise<PdfjsModule> {
  pdfjs ??= import("pdfjs-dist/legacy/build/pdf.mjs");
  return pdfjs;
}

function isTextItem(item: unknown): item is TextItemLike {
  return typeof item === "object" && item !== null && "str" in item && "transform" in item;
}

/** Rebuild a page's text: lines end at EOL marks, a wide vertical gap starts a paragraph. */
export function pageTextFromItems(items: readonly unknown[]): string {
  let out = "";
  let line = "";
  let lineY: number | undefined;
  let lineHeight = 12;
  let prevY: number | undefined;
  const flush = (): void => {
    const text = line.replace(/\s+$/u, "");
    if (lineY !== undefined && prevY !== undefined && out.length > 0) {
      out += prevY - lineY > lineHeight * 1.6 ? "\n\n" : "\n";
    }
    if (text.length > 0 || lineY !== undefined) {
      out += text;
      if (lineY !== undefined) prevY = lineY;
    }
    line = "";
    lineY = undefined;
  };
  for (const item of items) {
    if (!isTextItem(item)) continue;
    if (lineY === undefined && item.str.length > 0) {
      lineY = item.transform[5];
      if (item.height > 0) lineHeight = item.height;
    }
    line += item.str;
    if (item.hasEOL) flush();
  }
  flush();
  return out.trim();
}

export class PdfReadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PdfReadError";
  }
}

/**
 * Page count and the text of every page. Yields to the event loop between pages.
 * `shouldStop` is checked between pages so shutdown need not wait for a long document.
 */
export async function extractPages(path: string, shouldStop: () => boolean = () => false): Promise<string[] | null> {
  const lib = await loadPdfjs();
  const data = new Uint8Array(await readFile(path));
  const task = lib.getDocument({
    data,
    verbosity: 0,
    isEvalSupported: false,
    disableFontFace: true,
    useSystemFonts: false,
    stopAtErrors: true,
  });
  try {
    let doc;
    try {
      doc = await task.promise;
    } catch (err) {
      throw new PdfReadError(`Could not read the PDF: ${(err as Error).message}`);
    }
    const pages: string[] = [];
    for (let i = 1; i <= doc.numPages; i++) {
      if (shouldStop()) return null;
      try {
        const page = await doc.getPage(i);
        const content = await page.getTextContent();
        pages.push(pageTextFromItems(content.items));
        page.cleanup();
      } catch (err) {
        throw new PdfReadError(`Could not read page ${i} of the PDF: ${(err as Error).message}`);
      }
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return pages;
  } finally {
    await task.destroy().catch(() => undefined);
  }
}
