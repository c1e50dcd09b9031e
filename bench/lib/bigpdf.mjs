// Write a valid PDF of exactly `bytes` bytes to disk by streaming (1 MiB chunks; the whole
// file is never in memory): one text page, then a padding stream object, then a correct xref.
// Returns { path, size, md5 }.
import { createWriteStream } from "node:fs";
import { createHash, randomFillSync } from "node:crypto";
import { once } from "node:events";

export async function writeBigPdf(path, bytes, title = "A very large paper") {
  const out = createWriteStream(path);
  const hash = createHash("md5");
  let pos = 0;
  const offsets = [];
  const write = async (buf) => {
    hash.update(buf);
    pos += buf.length;
    if (!out.write(buf)) await once(out, "drain");
  };
  const obj = async (n, body) => {
    offsets[n] = pos;
    await write(Buffer.from(`${n} 0 obj\n${body}\nendobj\n`, "latin1"));
  };
  await write(Buffer.from("%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "latin1"));
  const text = `BT /F1 12 Tf 72 720 Td (${title}) Tj ET`;
  await obj(1, "<< /Type /Catalog /Pages 2 0 R >>");
  await obj(2, "<< /Type /Pages /Kids [5 0 R] /Count 1 >>");
  await obj(3, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>");
  await obj(4, `<< /Title (${title}) /Producer (import-from-zotero bench) >>`);
  await obj(5, "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents 6 0 R >>");
  await obj(6, `<< /Length ${text.length} >>\nstream\n${text}\nendstream`);

  // xref + trailer length is fixed once the startxref digits are known; solve for the pad.
  const count = 8; // objects 0..7
  const tailFor = (xrefOffset) => {
    let s = `xref\n0 ${count}\n0000000000 65535 f \n`;
    for (let n = 1; n < count; n++) s += `${String(offsets[n] ?? 0).padStart(10, "0")} 00000 n \n`;
    s += `trailer\n<< /Size ${count} /Root 1 0 R /Info 4 0 R >>\nstartxref\n${xrefOffset}\n%%EOF\n`;
    return s;
  };
  const padHead = (len) => `7 0 obj\n<< /Length ${String(len).padEnd(12, " ")}>>\nstream\n`;
  const padFoot = "\nendstream\nendobj\n";
  const tailLen = tailFor(String(bytes).padStart(String(bytes).length, "0")).length; // digits of startxref ≈ digits of bytes
  const xrefOffset = bytes - tailLen;
  if (String(xrefOffset).length !== String(bytes).length) throw new Error("pick a size whose xref offset keeps its digit count");
  const fill = xrefOffset - pos - padHead(0).length - padFoot.length;
  if (fill < 0) throw new Error("size too small");
  offsets[7] = pos;
  await write(Buffer.from(padHead(fill), "latin1"));
  const chunk = Buffer.allocUnsafe(1 << 20);
  randomFillSync(chunk);
  let left = fill;
  let i = 0;
  while (left > 0) {
    const n = Math.min(left, chunk.length);
    chunk.writeUInt32LE(i++, 0); // every chunk differs a little
    await write(Buffer.from(chunk.subarray(0, n))); // a copy: the stream may still hold the previous one
    left -= n;
  }
  await write(Buffer.from(padFoot, "latin1"));
  if (pos !== xrefOffset) throw new Error(`xref offset ${pos} != ${xrefOffset}`);
  await write(Buffer.from(tailFor(xrefOffset), "latin1"));
  out.end();
  await once(out, "finish");
  if (pos !== bytes) throw new Error(`wrote ${pos} bytes, wanted ${bytes}`);
  return { path, size: pos, md5: hash.digest("hex") };
}
