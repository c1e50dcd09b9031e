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
import { HttpError, intParsing, type ValidationIssue } from "../errors.js";
import type { StagedFile } from "../storage.js";

/** Largest value of one form field (bytes): @fastify/multipart's `fieldSize` for every route. */
export const MAX_FIELD_BYTES = 1024 * 1024;

/** The @fastify/multipart options of every route plugin that reads multipart bodies. */
export function multipartOptions(maxUploadBytes: number): FastifyMultipartOptions {
  return {
    throwFileSizeLimit: true,
    limits: { fileSize: maxUploadBytes, files: 4, fields: 64, fieldSize: MAX_FIELD_BYTES, parts: 80 },
  };
}

export async function drain(stream: Readable): Promise<void> {
  for await (const chunk of stream) void chunk;
}

/** What a form body held. The caller owns `staged` (commit or discard it). */
export interface ParsedForm {
  /** Field values; the first of a repeated multipart field wins. */
  fields: Map<string, string>;
  /** Multipart fields whose value was cut at MAX_FIELD_BYTES. */
  truncated: Set<string>;
  /** The `file` part, streamed to a temp file (only with `file: "stage"`). */
  staged: StagedFile | undefined;
  /** The `file` part's client filename, when there was one. */
  clientName: string | undefined;
  /** The `file` part's name does not end in `.pdf`. */
  badName: boolean;
  /** The `file` part does not begin with `%PDF-` (400). */
  notPdf: HttpError | undefined;
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
            if (err instanceof HttpError && err.statusCode === 400) form.notPdf = err;
            else throw err;
          }
          if (part.file.truncated) {
            throw new HttpError(413, `File too large: the limit is ${ctx.maxUploadBytes} bytes`);
          }
        } else if (!form.fields.has(part.fieldname)) {
          form.fields.set(part.fieldname, typeof part.value === "string" ? part.value : String(part.value));
          if (part.valueTruncated) form.truncated.add(part.fieldname);
        }
      }
    } else if (request.body && typeof request.body === "object") {
      for (const [k, v] of Object.entries(request.body as Record<string, unknown>)) {
        if (typeof v === "string") form.fields.set(k, v);
      }
    }
    return form;
  } catch (err) {
    if (form.staged) await ctx.files.discard(form.staged.tempPath);
    throw err;
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
  const input = fields.get(name)?.trim();
  if (value < min) {
    issues.push({
      type: "greater_than_equal",
      loc: ["body", name],
      msg: `Input should be greater than or equal to ${min}`,
      input,
    });
    return null;
  }
  if (value > max) {
    issues.push({ type: "less_than_equal", loc: ["body", name], msg: `Input should be less than or equal to ${max}`, input });
    return null;
  }
  return value;
}

export function optionalString(fields: Map<string, string>, name: string): string | null {
  const raw = fields.get(name);
  return raw === undefined || raw.trim() === "" ? null : raw.trim();
}
