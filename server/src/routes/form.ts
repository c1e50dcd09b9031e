/**
 * Reading form bodies the way the upload route does, shared by the routes that take a PDF
 * (upload, PDF replacement) or form fields (metadata update): multipart parts in any order,
 * the file streamed to a temp file in the data dir (never held whole in memory), or a
 * urlencoded body.
 */
import type { Readable } from "node:stream";
import type { FastifyRequest } from "fastify";
import type { FastifyMultipartOptions } from "@fastify/multipart";
import type { AppContext } from "../context.js";
import { DiskFullError, HttpError, intParsing, NotPdfError, type ValidationIssue } from "../errors.js";
import type { StagedFile } from "../storage.js";

/** Default largest value of one form field (bytes), e.g. a title, the authors, an abstract. */
export const DEFAULT_MAX_FIELD_BYTES = 64 * 1024;

/** Years a paper may carry. */
export const MIN_YEAR = 1;
export const MAX_YEAR = 9999;

/**
 * How many fields, file parts and parts (the two together) one multipart body may hold. Parts
 * stay under fields + files so that each of the three limits can be the one hit.
 */
export const MULTIPART_COUNTS = { fields: 64, files: 4, parts: 66 } as const;

/**
 * The @fastify/multipart options of every route plugin that reads multipart bodies. A field
 * longer than `maxFieldBytes` is cut by busboy and flagged (`valueTruncated`); the routes then
 * refuse it by name, never storing it cut.
 */
export function multipartOptions(ctx: Pick<AppContext, "maxUploadBytes" | "maxFieldBytes">): FastifyMultipartOptions {
  return {
    throwFileSizeLimit: true,
    limits: { fileSize: ctx.maxUploadBytes, fieldSize: ctx.maxFieldBytes, ...MULTIPART_COUNTS },
  };
}

/** A 413 naming the upload limit. */
export function fileTooLarge(maxUploadBytes: number): HttpError {
  return new HttpError(413, `File too large: the limit is ${maxUploadBytes} bytes per file`);
}

/** @fastify/multipart's limit errors, as 413s that name the limit hit; other errors as they are. */
function namedLimitError(err: unknown, ctx: Pick<AppContext, "maxUploadBytes">): unknown {
  switch ((err as { code?: unknown } | null)?.code) {
    case "FST_REQ_FILE_TOO_LARGE":
      return fileTooLarge(ctx.maxUploadBytes);
    case "FST_FIELDS_LIMIT":
      return new HttpError(413, `Too many form fields: the limit is ${MULTIPART_COUNTS.fields} fields`);
    case "FST_FILES_LIMIT":
      return new HttpError(413, `Too many files: the limit is ${MULTIPART_COUNTS.files} file parts`);
    case "FST_PARTS_LIMIT":
      return new HttpError(413, `Too many parts: the limit is ${MULTIPART_COUNTS.parts} parts (fields and files together)`);
    default:
      return err;
  }
}

export async function drain(stream: Readable): Promise<void> {
  for await (const chunk of stream) void chunk;
}

/** What a form body held. The caller owns `staged` (commit or discard it). */
export interface ParsedForm {
  /** Field values; the first of a repeated multipart field wins. */
  fields: Map<string, string>;
  /** Fields whose value is longer than the field limit (multipart cut it; urlencoded: measured). */
  truncated: Set<string>;
  /** The `file` part, streamed to a temp file (only with `file: "stage"`). */
  staged: StagedFile | undefined;
  /** The `file` part's client filename, when there was one. */
  clientName: string | undefined;
  /** The `file` part's name does not end in `.pdf`. */
  badName: boolean;
  /** The `file` part does not begin with `%PDF-` (400). */
  notPdf: NotPdfError | undefined;
}

/**
 * Read a multipart or urlencoded form. `file: "stage"` streams the first `file` part to a temp
 * file (checked for `%PDF-`, fsynced); `"drain"` reads and drops every file part. A file over the
 * upload limit is a 413. On a throw nothing staged is left behind.
 */
export async function readForm(
  request: FastifyRequest,
  ctx: AppContext,
  options: { file: "stage" | "drain" },
): Promise<ParsedForm> {
  let diskFull: DiskFullError | undefined;
  const form: ParsedForm = {
    fields: new Map(),
    truncated: new Set(),
    staged: undefined,
    clientName: undefined,
    badName: false,
    notPdf: undefined,
  };
  try {
    if (request.isMultipart()) {
      // Fields may come in any order, before or after the file.
      for await (const part of request.parts()) {
        if (part.type === "file") {
          if (part.fieldname !== "file" || form.clientName !== undefined) {
            await drain(part.file);
            continue;
          }
          form.clientName = part.filename ?? "";
          if (options.file === "drain") {
            await drain(part.file);
            continue;
          }
          if (!form.clientName.toLowerCase().endsWith(".pdf")) {
            form.badName = true;
            await drain(part.file);
            continue;
          }
          try {
            form.staged = await ctx.files.stage(part.file);
          } catch (err) {
            if (err instanceof NotPdfError) form.notPdf = err;
            // A full disk: the file is gone and its part was read to the end; read the rest of
            // the form too, so the client gets the 507 rather than a reset connection.
            else if (err instanceof DiskFullError) diskFull = err;
            else throw err;
          }
          if (part.file.truncated) throw fileTooLarge(ctx.maxUploadBytes);
        } else if (!form.fields.has(part.fieldname)) {
          form.fields.set(part.fieldname, typeof part.value === "string" ? part.value : String(part.value));
          if (part.valueTruncated) form.truncated.add(part.fieldname);
        }
      }
    } else if (request.body && typeof request.body === "object") {
      for (const [k, v] of Object.entries(request.body as Record<string, unknown>)) {
        if (typeof v !== "string") continue;
        form.fields.set(k, v);
        if (Buffer.byteLength(v, "utf8") > ctx.maxFieldBytes) form.truncated.add(k);
      }
    }
    if (diskFull) throw diskFull;
    return form;
  } catch (err) {
    if (form.staged) await ctx.files.discard(form.staged.tempPath);
    throw namedLimitError(err, ctx);
  }
}

/** FastAPI treats an empty optional form value as absent; so do we. */
export function optionalInt(fields: Map<string, string>, name: string, issues: ValidationIssue[]): number | null {
  const raw = fields.get(name)?.trim();
  if (raw === undefined || raw === "") return null;
  if (!/^[+-]?\d+$/.test(raw)) {
    issues.push(intParsing("body", name, raw));
    return null;
  }
  return Number.parseInt(raw, 10);
}

/** An optional integer that must also lie in [min, max] (pydantic's ge/le errors otherwise). */
export function boundedInt(
  fields: Map<string, string>,
  name: string,
  min: number,
  max: number,
  issues: ValidationIssue[],
): number | null {
  const value = optionalInt(fields, name, issues);
  if (value === null) return null;
  const input = fields.get(name)?.trim() ?? "";
  // Compared exactly (BigInt): "99999999999999999999999" is out of range, not 1e23.
  const exact = BigInt(input);
  if (exact < BigInt(min)) {
    issues.push({
      type: "greater_than_equal",
      loc: ["body", name],
      msg: `Input should be greater than or equal to ${min}`,
      input,
    });
    return null;
  }
  if (exact > BigInt(max)) {
    issues.push({ type: "less_than_equal", loc: ["body", name], msg: `Input should be less than or equal to ${max}`, input });
    return null;
  }
  return value;
}

export function optionalString(fields: Map<string, string>, name: string): string | null {
  const raw = fields.get(name);
  return raw === undefined || raw.trim() === "" ? null : raw.trim();
}

/**
 * The named fields over the field limit, as FastAPI's `string_too_long` issues; their values
 * are dropped from `fields` so nothing reads them cut.
 */
export function tooLongFields(
  form: Pick<ParsedForm, "fields" | "truncated">,
  names: Iterable<string>,
  maxFieldBytes: number,
  issues: ValidationIssue[],
): void {
  for (const name of names) {
    if (!form.truncated.has(name)) continue;
    form.fields.delete(name);
    issues.push({
      type: "string_too_long",
      loc: ["body", name],
      msg: `String should have at most ${maxFieldBytes} bytes`,
      ctx: { max_length: maxFieldBytes },
    });
  }
}
