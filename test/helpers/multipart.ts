/** A small, strict multipart/form-data parser (buffered) for the fake servers. */

export interface MultipartPart {
  name: string;
  /** Present for file parts (even when empty string). */
  filename: string | undefined;
  contentType: string | undefined;
  headers: Record<string, string>;
  data: Buffer;
}

export class MultipartError extends Error {}

export function boundaryOf(contentType: string | undefined): string | undefined {
  if (!contentType || !/^multipart\/form-data\b/i.test(contentType.trim())) return undefined;
  const m = /;\s*boundary=(?:"([^"]+)"|([^\s;]+))/i.exec(contentType);
  return m?.[1] ?? m?.[2];
}

function parseDisposition(value: string): { name: string | undefined; filename: string | undefined } {
  let name: string | undefined;
  let filename: string | undefined;
  let filenameStar: string | undefined;
  const re = /;\s*([a-zA-Z*]+)=(?:"((?:\\.|[^"\\])*)"|([^;]*))/g;
  for (let m = re.exec(value); m; m = re.exec(value)) {
    const key = (m[1] ?? "").toLowerCase();
    const raw = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : (m[3] ?? "").trim();
    if (key === "name") name = raw;
    else if (key === "filename") filename = raw;
    else if (key === "filename*") {
      const em = /^([^']*)'[^']*'(.*)$/.exec(raw);
      try {
        filenameStar = em ? decodeURIComponent(em[2] ?? "") : raw;
      } catch {
        filenameStar = raw;
      }
    }
  }
  return { name, filename: filenameStar ?? filename };
}

export function parseMultipart(body: Buffer, boundary: string): MultipartPart[] {
  const delim = Buffer.from(`--${boundary}`);
  const parts: MultipartPart[] = [];
  let pos = body.indexOf(delim);
  if (pos < 0) throw new MultipartError("no opening boundary");
  for (;;) {
    pos += delim.length;
    // After a delimiter: "--" (close) or CRLF (next part).
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) return parts;
    // Tolerate transport padding (spaces/tabs) before CRLF.
    while (body[pos] === 0x20 || body[pos] === 0x09) pos++;
    if (body[pos] !== 0x0d || body[pos + 1] !== 0x0a) throw new MultipartError("boundary not followed by CRLF");
    pos += 2;
    const headEnd = body.indexOf("\r\n\r\n", pos);
    if (headEnd < 0) throw new MultipartError("unterminated part headers");
    const headers: Record<string, string> = {};
    for (const line of body.subarray(pos, headEnd).toString("utf8").split("\r\n")) {
      const i = line.indexOf(":");
      if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const dataStart = headEnd + 4;
    const next = body.indexOf(Buffer.concat([Buffer.from("\r\n"), delim]), dataStart);
    if (next < 0) throw new MultipartError("unterminated part body");
    const disp = headers["content-disposition"];
    if (!disp || !/^form-data/i.test(disp)) throw new MultipartError("part without form-data disposition");
    const { name, filename } = parseDisposition(disp);
    if (name === undefined) throw new MultipartError("part without name");
    parts.push({ name, filename, contentType: headers["content-type"], headers, data: body.subarray(dataStart, next) });
    pos = next + 2;
  }
}
