/**
 * A tiny PDF writer for tests, demos and the benchmark: emits a valid PDF 1.4 file
 * with one page per entry, each page a list of paragraphs set in Helvetica, with a
 * correct cross-reference table. No binary fixtures need to be committed.
 */
import { Readable } from "node:stream";
import { createDeflate } from "node:zlib";

export interface TestPdfOptions {
  /** Pages; each page is a list of paragraphs; each paragraph a list of lines. */
  pages: string[][][];
  /** Document title stored in the Info dictionary. */
  title?: string;
  /** Page index -> that page's content stream, already FlateDecode-compressed (used instead of its paragraphs). */
  flateContent?: ReadonlyArray<Buffer | undefined>;
}

function escapePdfString(s: string): string {
  // Keep to printable ASCII: the standard Helvetica encoding covers it.
  const ascii = s.replace(/[^\x20-\x7e]/g, "?");
  return ascii.replace(/\\/g, "\\\\").replace(/\(/g, "\\(").replace(/\)/g, "\\)");
}

function pageContent(paragraphs: string[][]): string {
  const ops: string[] = ["BT", "/F1 12 Tf", "14 TL", "72 760 Td"];
  paragraphs.forEach((lines, p) => {
    if (p > 0) ops.push("0 -28 Td"); // a blank line and a half between paragraphs
    lines.forEach((line, i) => {
      if (i > 0) ops.push("0 -14 Td");
      ops.push(`(${escapePdfString(line)}) Tj`);
    });
  });
  ops.push("ET");
  return ops.join("\n") + "\n";
}

/** Build a PDF as bytes. */
export function makeTestPdf(options: TestPdfOptions): Buffer {
  const pages = options.pages.length > 0 ? options.pages : [[["(empty page)"]]];
  const objects: string[] = [];
  // 1: catalog, 2: pages, 3: font, 4: info, then per page: page object + content stream.
  const pageIds = pages.map((_, i) => 5 + i * 2);
  objects[1] = "<< /Type /Catalog /Pages 2 0 R >>";
  objects[2] = `<< /Type /Pages /Kids [${pageIds.map((id) => `${id} 0 R`).join(" ")}] /Count ${pages.length} >>`;
  objects[3] = "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>";
  objects[4] = `<< /Title (${escapePdfString(options.title ?? "test document")}) /Producer (refserver-lite test writer) >>`;
  pages.forEach((paragraphs, i) => {
    const pageId = 5 + i * 2;
    const contentId = pageId + 1;
    const flate = options.flateContent?.[i];
    const stream = flate ? flate.toString("latin1") : pageContent(paragraphs);
    objects[pageId] =
      `<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents ${contentId} 0 R >>`;
    objects[contentId] = flate
      ? `<< /Length ${flate.length} /Filter /FlateDecode >>\nstream\n${stream}\nendstream`
      : `<< /Length ${Buffer.byteLength(stream, "latin1")} >>\nstream\n${stream}endstream`;
  });

  let out = "%PDF-1.4\n%\xe2\xe3\xcf\xd3\n";
  const offsets: number[] = [];
  for (let id = 1; id < objects.length; id++) {
    offsets[id] = Buffer.byteLength(out, "latin1");
    out += `${id} 0 obj\n${objects[id] ?? "null"}\nendobj\n`;
  }
  const xrefOffset = Buffer.byteLength(out, "latin1");
  const count = objects.length;
  out += `xref\n0 ${count}\n0000000000 65535 f \n`;
  for (let id = 1; id < count; id++) {
    out += `${String(offsets[id] ?? 0).padStart(10, "0")} 00000 n \n`;
  }
  out += `trailer\n<< /Size ${count} /Root 1 0 R /Info 4 0 R >>\nstartxref\n${xrefOffset}\n%%EOF\n`;
  return Buffer.from(out, "latin1");
}

/** A PDF of `pageCount` pages, each with `paragraphsPerPage` paragraphs of three lines. */
export function makeSamplePdf(pageCount = 3, paragraphsPerPage = 2, label = "Sample"): Buffer {
  const pages: string[][][] = [];
  for (let p = 1; p <= pageCount; p++) {
    const paragraphs: string[][] = [];
    for (let q = 1; q <= paragraphsPerPage; q++) {
      paragraphs.push([
        `${label} page ${p} paragraph ${q} first line of text.`,
        `The glacier advanced across the plateau in stage ${q}.`,
        `End of paragraph ${q} on page ${p}.`,
      ]);
    }
    pages.push(paragraphs);
  }
  return makeTestPdf({ pages, title: `${label} document` });
}

/** `head`, then `unit` repeated up to `decodedBytes`, then `tail`, deflated as it is made (about 1000:1). */
export async function deflateRepeated(unit: string, decodedBytes: number, head = "", tail = ""): Promise<Buffer> {
  const block = Buffer.from(unit.repeat(Math.max(1, Math.floor((1024 * 1024) / unit.length))), "latin1");
  async function* source(): AsyncGenerator<Buffer> {
    yield Buffer.from(head, "latin1");
    for (let n = 0; n < decodedBytes; n += block.length) yield n + block.length <= decodedBytes ? block : block.subarray(0, decodedBytes - n);
    yield Buffer.from(tail, "latin1");
  }
  const out: Buffer[] = [];
  for await (const chunk of Readable.from(source()).pipe(createDeflate({ level: 9 }))) out.push(chunk as Buffer);
  return Buffer.concat(out);
}

/**
 * A hostile PDF: one page whose small content stream inflates to about `decodedBytes` of
 * operators. "text": the same sentence shown again and again at one place, all of it page text
 * (300 MB of operators make about 200 MB of text); "paths": line drawing, no text. About 1 MB
 * for 300 MB.
 */
export async function makeInflatingPdf(decodedBytes: number, kind: "text" | "paths" = "text"): Promise<Buffer> {
  const unit =
    kind === "text" ? "1 0 0 1 72 700 Tm (The quick brown fox jumps over the lazy dog.) Tj\n" : "72 72 m 540 720 l S\n";
  const content =
    kind === "text" ? await deflateRepeated(unit, decodedBytes, "BT /F1 12 Tf\n", "ET\n") : await deflateRepeated(unit, decodedBytes);
  return makeTestPdf({ pages: [[["hostile"]]], title: `inflating ${kind} PDF`, flateContent: [content] });
}
