import type { ChunkInput } from "../db/types.js";

/** Paragraphs as chunks: split each page at blank lines, join a paragraph's lines. */
export function chunkPages(pages: readonly string[]): ChunkInput[] {
  const chunks: ChunkInput[] = [];
  pages.forEach((text, i) => {
    let index = 0;
    for (const para of text.split(/\n\s*\n/u)) {
      const clean = para.replace(/\s+/gu, " ").trim();
      if (clean.length === 0) continue;
      chunks.push({ pageNumber: i + 1, indexOnPage: index++, text: clean });
    }
  });
  return chunks;
}
