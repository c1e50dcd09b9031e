/**
 * Minimal, valid, deterministic PDF generator for tests.
 *
 * The produced file has a correct cross-reference table (every xref entry
 * points at the byte offset of its `N 0 obj` line), a correct `startxref`,
 * one Helvetica text page per entry of `pages`, an Info dictionary holding
 * the title, and ends with `%%EOF\n`. No timestamps, no randomness: the same
 * input always yields the same bytes.
 */
import { createHash } from "node:crypto";

export interface MakePdfOptions {
  /** Stored in the Info dictionary and used as default page text. */
  title: string;
  /** Text of each page (`\n` separates lines). Default: one page with the title. */
  pages?: string[];
  /**
   * Grow the file to exactly this many bytes with an unreferenced binary
   * stream object placed before the xref table. Ignored when the unpadded
   * file is already at least this large.
   */
  padToBytes?: number;
}

export function md5(buf: Buffer | Uint8Array | string): string {
  return createHash("md5").update(buf).digest("hex");
}

export function sha256(buf: Buffer | Uint8Array | string): string {
  return createHash("sha256").update(buf).digest("hex");
}

/** PDF literal string for Helvetica text: ASCII only, escaped. */
function pdfLiteral(text: string): string {
  let out = "";
  for (const ch of text) {
    const code = ch.codePointAt(0) ?? 63;
    if (ch === "\\" || ch === "(" || ch === ")") out += `\\${ch}`;
    else if (code >= 0x20 && code < 0x7f) out += ch;
    else out += "?";
  }
  return `(${out})`;
}

/** PDF text string usable in the Info dictionary (UTF-16BE hex when non-ASCII). */
function pdfTextString(text: string): string {
  if (/^[\x20-\x7e]*$/.test(text)) return pdfLiteral(text);
  const utf16 = Buffer.from(text, "utf16le");
  utf16.swap16();
  return `<FEFF${utf16.toString("hex").toUpperCase()}>`;
}

/** Deterministic byte filler (xorshift32 seeded from the title). */
function filler(len: number, seedText: string): Buffer {
  const digest = createHash("sha256").update(seedText).digest();
  let x = digest.readUInt32BE(0) || 0x9e3779b9;
  const out = Buffer.allocUnsafe(len);
  for (let i = 0; i < len; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

function contentStream(text: string): string {
  const lines = text.split("\n");
  const ops: string[] = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"];
  lines.forEach((line, i) => {
    if (i > 0) ops.push("T*");
    ops.push(`${pdfLiteral(line)} Tj`);
  });
  ops.push("ET");
  return ops.join("\n");
}

export function makePdf(opts: MakePdfOptions): Buffer {
  const pages = opts.pages && opts.pages.length > 0 ? opts.pages : [opts.title];
  // Object numbering: 1 catalog, 2 pages, 3 font, 4 info, then (page, content) pairs, then optional pad.
  const objects: Buffer[] = [];
  const pageObjNums = pages.map((_, i) => 5 + i * 2);
  objects.push(Buffer.from("<< /Type /Catalog /Pages 2 0 R >>", "latin1"));
  objects.push(
    Buffer.from(
      `<< /Type /Pages /Kids [${pageObjNums.map((n) => `${n} 0 R`).join(" ")}] /Count ${pages.length} >>`,
      "latin1",
    ),
  );
  objects.push(Buffer.from("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>", "latin1"));
  objects.push(Buffer.from(`<< /Title ${pdfTextString(opts.title)} /Producer (import-from-zotero test helper) >>`, "latin1"));
  pages.forEach((text, i) => {
    const contentNum = 6 + i * 2;
    objects.push(
      Buffer.from(
        `<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents ${contentNum} 0 R >>`,
        "latin1",
      ),
    );
    const stream = Buffer.from(contentStream(text), "latin1");
    objects.push(
      Buffer.concat([
        Buffer.from(`<< /Length ${stream.length} >>\nstream\n`, "latin1"),
        stream,
        Buffer.from("\nendstream", "latin1"),
      ]),
    );
  });

  const header = Buffer.from("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "latin1");

  const serialize = (objs: Buffer[]): { body: Buffer; offsets: number[] } => {
    const parts: Buffer[] = [header];
    const offsets: number[] = [];
    let pos = header.length;
    objs.forEach((obj, i) => {
      offsets.push(pos);
      const chunk = Buffer.concat([Buffer.from(`${i + 1} 0 obj\n`, "latin1"), obj, Buffer.from("\nendobj\n", "latin1")]);
      parts.push(chunk);
      pos += chunk.length;
    });
    return { body: Buffer.concat(parts), offsets };
  };

  const tail = (count: number, offsets: number[], xrefOffset: number): Buffer => {
    let s = `xref\n0 ${count + 1}\n0000000000 65535 f \n`;
    for (const off of offsets) s += `${String(off).padStart(10, "0")} 00000 n \n`;
    s += `trailer\n<< /Size ${count + 1} /Root 1 0 R /Info 4 0 R >>\nstartxref\n${xrefOffset}\n%%EOF\n`;
    return Buffer.from(s, "latin1");
  };

  const plain = serialize(objects);
  const plainFile = Buffer.concat([plain.body, tail(objects.length, plain.offsets, plain.body.length)]);
  const target = opts.padToBytes;
  if (target === undefined || target <= plainFile.length) return plainFile;

  // Add a padding stream object: `N 0 obj\n<< /Length LLLLLLLLLL >>\nstream\n<fill>\nendstream\nendobj\n`.
  // /Length is space-padded to a fixed width so the object overhead is constant.
  const padNum = objects.length + 1;
  const count = objects.length + 1;
  const padHead = (len: number): string => `<< /Length ${String(len).padEnd(12, " ")}>>\nstream\n`;
  const overhead =
    Buffer.byteLength(`${padNum} 0 obj\n`, "latin1") +
    Buffer.byteLength(padHead(0), "latin1") +
    Buffer.byteLength("\nendstream", "latin1") +
    Buffer.byteLength("\nendobj\n", "latin1");
  for (let digits = 1; digits <= 15; digits++) {
    const tailLen = tail(count, [...plain.offsets, 0], 10 ** (digits - 1)).length; // tail length with a `digits`-digit startxref
    const xrefOffset = target - tailLen;
    if (String(xrefOffset).length !== digits) continue;
    const fillLen = xrefOffset - plain.body.length - overhead;
    if (fillLen < 0) break;
    const padObj = Buffer.concat([
      Buffer.from(padHead(fillLen), "latin1"),
      filler(fillLen, opts.title),
      Buffer.from("\nendstream", "latin1"),
    ]);
    const full = serialize([...objects, padObj]);
    const out = Buffer.concat([full.body, tail(count, full.offsets, full.body.length)]);
    if (out.length === target) return out;
  }
  return plainFile;
}

export interface PdfCheck {
  ok: boolean;
  problems: string[];
  objectCount: number;
}

/**
 * Structural check of a PDF produced by makePdf (or any PDF with a classic xref
 * table): header, `%%EOF`, `startxref` pointing at `xref`, and every in-use xref
 * entry pointing at `N G obj`.
 */
export function checkPdf(buf: Buffer): PdfCheck {
  const problems: string[] = [];
  if (!buf.subarray(0, 5).equals(Buffer.from("%PDF-"))) problems.push("missing %PDF- header");
  const tailText = buf.subarray(Math.max(0, buf.length - 1024)).toString("latin1");
  if (!/%%EOF\s*$/.test(tailText)) problems.push("missing trailing %%EOF");
  const m = /startxref\s+(\d+)\s+%%EOF\s*$/.exec(tailText);
  let objectCount = 0;
  if (!m || m[1] === undefined) {
    problems.push("missing startxref");
    return { ok: false, problems, objectCount };
  }
  const xrefOffset = Number(m[1]);
  if (buf.subarray(xrefOffset, xrefOffset + 4).toString("latin1") !== "xref") {
    problems.push(`startxref ${xrefOffset} does not point at 'xref'`);
    return { ok: false, problems, objectCount };
  }
  const xrefText = buf.subarray(xrefOffset).toString("latin1");
  const sub = /^xref\s+(\d+)\s+(\d+)\s+/.exec(xrefText);
  if (!sub || sub[1] === undefined || sub[2] === undefined) {
    problems.push("bad xref subsection header");
    return { ok: false, problems, objectCount };
  }
  const first = Number(sub[1]);
  const n = Number(sub[2]);
  let pos = sub[0].length;
  for (let i = 0; i < n; i++) {
    const entry = xrefText.slice(pos, pos + 20);
    pos += 20;
    const em = /^(\d{10}) (\d{5}) ([nf])(?: \n| \r|\r\n)$/.exec(entry);
    if (!em || em[1] === undefined || em[2] === undefined) {
      problems.push(`bad xref entry ${first + i}: ${JSON.stringify(entry)}`);
      continue;
    }
    if (em[3] !== "n") continue;
    objectCount++;
    const off = Number(em[1]);
    const expect = `${first + i} ${Number(em[2])} obj`;
    if (buf.subarray(off, off + expect.length).toString("latin1") !== expect) {
      problems.push(`xref entry ${first + i} offset ${off} does not point at '${expect}'`);
    }
  }
  return { ok: problems.length === 0, problems, objectCount };
}
