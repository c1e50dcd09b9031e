import { randomBytes } from "node:crypto";
import type { ReadStream } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { Readable } from "node:stream";
import { ImportError } from "../errors.js";

/**
 * A multipart/form-data body built by hand as a Node stream: the text fields first, then one
 * file part read from disk with fs.createReadStream, then the closing boundary. No Blob,
 * FormData or web stream on the way (they cost about twice the CPU per upload), and the
 * length is known up front, so the request carries Content-Length rather than chunks.
 *
 * The wire format is what browsers and undici's FormData send (RFC 7578 as the WHATWG
 * "multipart/form-data encoding algorithm" applies it), which FastAPI/python-multipart parses:
 * names and filenames in double quotes with `"`, CR and LF percent-encoded; field values
 * with every line break as CRLF; the file part with its Content-Type.
 */
export interface MultipartBody {
  body: Readable;
  /** Bytes of the whole body (the Content-Length header). */
  length: number;
  /** The Content-Type header, with the boundary. */
  contentType: string;
  /** Close the file if the request never read the body to its end (idempotent). */
  dispose(): void;
}

export interface MultipartFile {
  /** The field name, `file` for RefServerLite. */
  name: string;
  path: string;
  filename: string;
  contentType: string;
}

const CRLF = "\r\n";

/** A quoted-string value in a Content-Disposition header, as the WHATWG algorithm encodes it. */
function quoted(value: string): string {
  return value.replace(/\r/g, "%0D").replace(/\n/g, "%0A").replace(/"/g, "%22");
}

/** Every line break of a field value (CR, LF or CRLF) as CRLF. */
function crlf(value: string): string {
  return value.replace(/\r\n|\r|\n/g, CRLF);
}

/** Read chunk size for the file: fewer, larger writes to the socket cost less CPU. */
const CHUNK = 1024 * 1024;

/**
 * Boundaries: random per process, then a counter (no random bytes per upload). A PDF cannot
 * hold one by chance: it would have to guess 96 random bits drawn after it was written.
 */
const BOUNDARY_PREFIX = `----import-from-zotero-${randomBytes(12).toString("hex")}-`;
let boundaries = 0;

/** The bytes around the file's: the fields and the file part's headers, and the closing boundary. */
function frame(fields: ReadonlyArray<readonly [string, string]>, file: Omit<MultipartFile, "path">): { head: Buffer; tail: Buffer; contentType: string } {
  const boundary = `${BOUNDARY_PREFIX}${(boundaries++).toString(36)}`;
  let text = "";
  for (const [name, value] of fields) {
    text += `--${boundary}${CRLF}Content-Disposition: form-data; name="${quoted(crlf(name))}"${CRLF}${CRLF}${crlf(value)}${CRLF}`;
  }
  text += `--${boundary}${CRLF}Content-Disposition: form-data; name="${quoted(crlf(file.name))}"; filename="${quoted(file.filename)}"${CRLF}`;
  text += `Content-Type: ${file.contentType}${CRLF}${CRLF}`;
  return { head: Buffer.from(text, "utf8"), tail: Buffer.from(`${CRLF}--${boundary}--${CRLF}`, "utf8"), contentType: `multipart/form-data; boundary=${boundary}` };
}

/**
 * Open `file.path` (a clear FILE_IO error when it is gone) and build the body around it.
 * `fields` keep their order: the server can reject before reading the megabytes after them.
 */
export async function multipartBody(fields: ReadonlyArray<readonly [string, string]>, file: MultipartFile): Promise<MultipartBody> {
  let opened: FileHandle | undefined;
  let size: number;
  try {
    opened = await open(file.path, "r");
    size = (await opened.stat()).size;
  } catch (error) {
    await opened?.close().catch(() => undefined);
    throw new ImportError("FILE_IO", `cannot read ${file.path} (${(error as NodeJS.ErrnoException).code}): the download cache changed under us`, { retriable: true });
  }
  const handle = opened;
  const { head, tail, contentType } = frame(fields, file);

  let stream: ReadStream | null = null;
  let closed = false;
  const dispose = (): void => {
    if (closed) return;
    closed = true;
    if (stream) stream.destroy();
    else void handle.close().catch(() => undefined);
  };
  async function* parts(): AsyncGenerator<Buffer> {
    yield head;
    if (closed) throw new Error("multipart body disposed");
    const reading = handle.createReadStream({ start: 0, highWaterMark: CHUNK });
    stream = reading;
    let read = 0;
    for await (const chunk of reading) {
      read += (chunk as Buffer).length;
      yield chunk as Buffer;
    }
    // A file that changed size under us would make the Content-Length a lie.
    if (read !== size) throw new ImportError("FILE_IO", `${file.path} changed size while it was uploaded (${read} of ${size} bytes): the download cache changed under us`, { retriable: true });
    closed = true;
    yield tail;
  }
  const body = Readable.from(parts(), { objectMode: false, highWaterMark: CHUNK });
  body.once("close", dispose);
  return { body, length: head.length + size + tail.length, contentType, dispose };
}
