import { randomUUID } from "node:crypto";
import type { FastifyBaseLogger, FastifyPluginAsync } from "fastify";
import multipart from "@fastify/multipart";
import type { RouteOptions } from "../context.js";
import type { LinkPatch, MetadataPatch, MetadataRow } from "../db/types.js";
import { HttpError, missingField, validationError, type ValidationIssue } from "../errors.js";
import { sanitizeFilename, saveFailure, type StagedFile } from "../storage.js";
import { boundedInt, MAX_YEAR, MIN_YEAR, multipartOptions, readForm, tooLongFields } from "./form.js";
import { errorResponses } from "./schemas.js";

export { MAX_YEAR, MIN_YEAR } from "./form.js";

const TEXT_FIELDS = ["title", "journal", "abstract", "doi"] as const;
const FIELDS: ReadonlySet<string> = new Set([...TEXT_FIELDS, "authors", "year", "zotero_version", "tags", "collection_keys"]);

/**
 * The body limit of the metadata route: room for every field at the field limit, each
 * percent-encoded (3 bytes a byte), plus the names. A longer field inside it is a 422 naming it.
 */
export function metadataBodyLimit(maxFieldBytes: number): number {
  return FIELDS.size * 3 * maxFieldBytes + 64 * 1024;
}

function shortInput(raw: string): string | undefined {
  return raw.length <= 1000 ? raw : undefined;
}

/**
 * A JSON array of strings (`tags`, `collection_keys`, `authors` in JSON form), entries trimmed
 * and empty ones dropped; undefined (with an issue pushed) when it is not one.
 */
function jsonStringArray(name: string, raw: string, issues: ValidationIssue[]): string[] | undefined {
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (err) {
    issues.push({ type: "json_invalid", loc: ["body", name], msg: `Invalid JSON: ${(err as Error).message}`, input: shortInput(raw) });
    return undefined;
  }
  if (!Array.isArray(parsed)) {
    issues.push({ type: "list_type", loc: ["body", name], msg: "Input should be a valid list", input: shortInput(raw) });
    return undefined;
  }
  const out: string[] = [];
  let ok = true;
  parsed.forEach((v, i) => {
    if (typeof v !== "string") {
      issues.push({ type: "string_type", loc: ["body", name, i], msg: "Input should be a valid string", input: v });
      ok = false;
    } else if (v.trim() !== "") {
      out.push(v.trim());
    }
  });
  return ok ? out : undefined;
}

/**
 * `authors`: the original's one comma-separated string ("Ada Lovelace, Alan Turing"), or a
 * JSON array of strings when the value starts with `[`. An empty value clears the authors.
 */
function parseAuthors(raw: string, issues: ValidationIssue[]): string[] | undefined {
  const trimmed = raw.trim();
  if (trimmed.startsWith("[")) return jsonStringArray("authors", trimmed, issues);
  return trimmed
    .split(",")
    .map((a) => a.trim())
    .filter((a) => a !== "");
}

/** Validate the metadata form: what to change, or the FastAPI-shaped issues. */
function parseMetadataForm(
  form: { fields: Map<string, string>; truncated: Set<string> },
  maxFieldBytes: number,
): { patch: MetadataPatch; link: LinkPatch; issues: ValidationIssue[] } {
  const issues: ValidationIssue[] = [];
  const patch: MetadataPatch = {};
  const link: LinkPatch = {};
  // Over-long values are refused by name, never stored cut (multipart cuts them at the limit).
  tooLongFields(form, FIELDS, maxFieldBytes, issues);
  const sent = new Map<string, string>();
  for (const [name, raw] of form.fields) {
    if (FIELDS.has(name)) sent.set(name, raw); // other fields are ignored, as FastAPI does
  }

  for (const name of TEXT_FIELDS) {
    const raw = sent.get(name);
    // Sent: set it; an empty (or blank) value clears it, as the original does.
    if (raw !== undefined) patch[name] = raw.trim() === "" ? null : raw.trim();
  }
  const authors = sent.get("authors");
  if (authors !== undefined) {
    const list = parseAuthors(authors, issues);
    if (list) patch.authors = list;
  }
  // Integers and JSON lists: an empty value counts as absent (as in the upload route).
  const year = boundedInt(sent, "year", MIN_YEAR, MAX_YEAR, issues);
  if (year !== null) patch.year = year;
  const version = boundedInt(sent, "zotero_version", 0, Number.MAX_SAFE_INTEGER, issues);
  if (version !== null) link.version = version;
  const tags = sent.get("tags")?.trim();
  if (tags) {
    const list = jsonStringArray("tags", tags, issues);
    if (list) link.tags = list;
  }
  const collections = sent.get("collection_keys")?.trim();
  if (collections) {
    const list = jsonStringArray("collection_keys", collections, issues);
    if (list) link.collectionKeys = list;
  }
  return { patch, link, issues };
}

function authorsOf(json: string | null): string[] {
  try {
    const parsed: unknown = JSON.parse(json ?? "[]");
    return Array.isArray(parsed) ? parsed.map(String) : [];
  } catch {
    return [];
  }
}

export function metadataView(m: MetadataRow): Record<string, unknown> {
  return {
    title: m.title,
    authors: authorsOf(m.authors),
    journal: m.journal,
    year: m.year,
    abstract: m.abstract,
    doi: m.doi,
  };
}

/** Remove a file the rows no longer name; on failure the next startup sweep removes it. */
async function removeObsolete(
  files: RouteOptions["ctx"]["files"],
  relPath: string,
  log: FastifyBaseLogger,
): Promise<void> {
  try {
    await files.remove(relPath);
  } catch (err) {
    log.warn({ err, path: relPath }, "could not remove an obsolete PDF; the startup sweep will");
  }
}

const params = { type: "object", properties: { doc_id: { type: "string" } }, required: ["doc_id"] } as const;

/**
 * Changes to a stored paper: metadata (the original's route, with a token and Zotero link
 * fields added), and the refserver-lite additions PDF replacement and deletion.
 */
export const documentWriteRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  await app.register(multipart, multipartOptions(ctx));

  app.post<{ Params: { doc_id: string } }>(
    "/api/v1/document/:doc_id/metadata",
    {
      bodyLimit: metadataBodyLimit(ctx.maxFieldBytes),
      schema: {
        params,
        response: {
          200: {
            type: "object",
            properties: {
              status: { type: "string" },
              message: { type: "string" },
              metadata: {
                type: "object",
                properties: {
                  title: { type: ["string", "null"] },
                  authors: { type: "array", items: { type: "string" } },
                  journal: { type: ["string", "null"] },
                  year: { type: ["integer", "null"] },
                  abstract: { type: ["string", "null"] },
                  doi: { type: ["string", "null"] },
                },
                required: ["title", "authors", "journal", "year", "abstract", "doi"],
              },
            },
            required: ["status", "message", "metadata"],
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const form = await readForm(request, ctx, { file: "drain" });
      const { patch, link, issues } = parseMetadataForm(form, ctx.maxFieldBytes);
      if (issues.length > 0) throw validationError(issues);
      const metadata = await ctx.repo.updateMetadata(request.params.doc_id, patch, link);
      if (!metadata) throw new HttpError(404, "Document not found");
      request.log.info(
        { event: "paper.metadata_updated", ...(await ctx.repo.paperLabel(request.params.doc_id)), fields: [...Object.keys(patch), ...Object.keys(link)] },
        "metadata updated",
      );
      return { status: "success", message: "Metadata updated successfully", metadata: metadataView(metadata) };
    },
  );

  app.put<{ Params: { doc_id: string } }>(
    "/api/v1/document/:doc_id/pdf",
    {
      schema: {
        params,
        response: {
          200: {
            type: "object",
            properties: { doc_id: { type: "string" }, job_id: { type: "string" }, status: { type: "string" } },
            required: ["doc_id", "job_id", "status"],
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const docId = request.params.doc_id;
      let staged: StagedFile | undefined;
      let committedPath: string | undefined;
      try {
        // An unknown paper: read the body without keeping the file, then answer 404.
        const known = (await ctx.repo.getPaper(docId)) !== undefined;
        const form = await readForm(request, ctx, { file: known ? "stage" : "drain" });
        staged = form.staged;

        const issues: ValidationIssue[] = [];
        if (form.clientName === undefined) issues.push(missingField("body", "file"));
        tooLongFields(form, ["zotero_version"], ctx.maxFieldBytes, issues);
        const version = boundedInt(form.fields, "zotero_version", 0, Number.MAX_SAFE_INTEGER, issues);
        if (issues.length > 0) throw validationError(issues);
        if (!known) throw new HttpError(404, "Document not found");
        if (form.badName) throw new HttpError(400, "Only PDF files are allowed");
        if (form.notPdf) throw form.notPdf;
        if (!staged || form.clientName === undefined) throw new HttpError(400, "Only PDF files are allowed");

        // File first under a new name (fsynced, renamed), then the rows point at it; the old
        // file is removed only after the commit. A crash anywhere leaves the row on a file that
        // exists, and at most one unreferenced file, which the startup sweep removes.
        const filename = sanitizeFilename(form.clientName);
        const filePath = ctx.files.replacementPathFor(docId);
        try {
          await ctx.files.commit(staged, filePath);
        } catch (err) {
          throw saveFailure(err);
        }
        committedPath = ctx.files.absolute(filePath);
        const fileSize = staged.size;
        staged = undefined;
        const jobId = randomUUID();
        const result = await ctx.repo.replacePdf({
          docId,
          jobId,
          filename,
          filePath,
          fileSize,
          link: version !== null ? { version } : {},
        });
        if (!result.ok) throw new HttpError(404, "Document not found"); // deleted meanwhile
        committedPath = undefined;
        request.log.info({ event: "paper.pdf_replaced", ...(await ctx.repo.paperLabel(docId)), bytes: fileSize }, "PDF replaced");
        await removeObsolete(ctx.files, result.oldFilePath, request.log);
        ctx.worker?.notify();
        return { doc_id: docId, job_id: jobId, status: "replaced" };
      } finally {
        if (staged) await ctx.files.discard(staged.tempPath);
        if (committedPath) await ctx.files.discard(committedPath);
      }
    },
  );

  app.delete<{ Params: { doc_id: string } }>(
    "/api/v1/document/:doc_id",
    {
      schema: {
        params,
        response: {
          200: {
            type: "object",
            properties: { status: { type: "string" }, doc_id: { type: "string" } },
            required: ["status", "doc_id"],
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const docId = request.params.doc_id;
      // Rows first (one transaction), then the file: a crash in between leaves a file no row
      // names, which the startup sweep removes. A job the worker is running for this paper
      // finds it gone and drops its results.
      const label = await ctx.repo.paperLabel(docId);
      const filePath = await ctx.repo.deletePaper(docId);
      if (filePath === undefined) throw new HttpError(404, "Document not found");
      request.log.info({ event: "paper.deleted", doc_id: docId, zotero_key: label?.zotero_key ?? null, title: label?.title ?? null }, "paper deleted");
      await removeObsolete(ctx.files, filePath, request.log);
      return { status: "deleted", doc_id: docId };
    },
  );
};
