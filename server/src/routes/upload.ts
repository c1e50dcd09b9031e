import { randomUUID } from "node:crypto";
import type { FastifyPluginAsync } from "fastify";
import multipart from "@fastify/multipart";
import type { RouteOptions } from "../context.js";
import type { NewUpload } from "../db/types.js";
import { HttpError, missingField, validationError, type ValidationIssue } from "../errors.js";
import { sanitizeFilename, saveFailure, type StagedFile } from "../storage.js";
import { boundedInt, MAX_YEAR, MIN_YEAR, multipartOptions, optionalString, readForm, tooLongFields } from "./form.js";
import { errorResponses } from "./schemas.js";

/** `authors` is a JSON array of strings; be lenient with a bare name or a non-array. */
function parseAuthors(raw: string): string[] {
  const trimmed = raw.trim();
  if (trimmed === "") return [];
  try {
    const parsed: unknown = JSON.parse(trimmed);
    if (Array.isArray(parsed)) return parsed.map((a) => (typeof a === "string" ? a : JSON.stringify(a)));
    if (typeof parsed === "string") return [parsed];
  } catch {
    // not JSON: a single author name
  }
  return [trimmed];
}

/** The upload's form fields; each is refused by name when longer than the field limit. */
const UPLOAD_FIELDS = [
  "title",
  "authors",
  "year",
  "zotero_key",
  "zotero_library_id",
  "zotero_version",
  "collection_keys",
  "tags",
] as const;

export const uploadRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  await app.register(multipart, multipartOptions(ctx));

  app.post(
    "/api/v1/papers/upload_with_metadata",
    {
      schema: {
        response: {
          200: {
            type: "object",
            properties: {
              job_id: { type: "string" },
              doc_id: { type: "string" },
              filename: { type: "string" },
              message: { type: "string" },
              status: { type: "string" },
            },
            required: ["job_id", "doc_id", "filename", "message", "status"],
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      let staged: StagedFile | undefined;
      let committedPath: string | undefined;
      try {
        const form = await readForm(request, ctx, { file: "stage" });
        const { fields, clientName, badName, notPdf } = form;
        staged = form.staged;

        const issues: ValidationIssue[] = [];
        if (clientName === undefined) issues.push(missingField("body", "file"));
        // Over-long values are refused by name, never stored cut.
        tooLongFields(form, UPLOAD_FIELDS, ctx.maxFieldBytes, issues);
        const rawTitle = fields.get("title");
        if (rawTitle === undefined && !form.truncated.has("title")) issues.push(missingField("body", "title"));
        const rawAuthors = fields.get("authors");
        if (rawAuthors === undefined && !form.truncated.has("authors")) issues.push(missingField("body", "authors"));
        const year = boundedInt(fields, "year", MIN_YEAR, MAX_YEAR, issues);
        const zoteroVersion = boundedInt(fields, "zotero_version", 0, Number.MAX_SAFE_INTEGER, issues);
        if (issues.length > 0) throw validationError(issues);
        if (badName) throw new HttpError(400, "Only PDF files are allowed");
        if (notPdf) throw notPdf;
        if (!staged || clientName === undefined) throw new HttpError(400, "Only PDF files are allowed");

        const filename = sanitizeFilename(clientName);
        const title = rawTitle !== undefined && rawTitle.trim() !== "" ? rawTitle.trim() : filename;
        const zoteroKey = optionalString(fields, "zotero_key");
        const libraryId = optionalString(fields, "zotero_library_id");
        const docId = randomUUID();
        const jobId = randomUUID();
        const upload: NewUpload = {
          docId,
          jobId,
          filename,
          filePath: ctx.files.relativePathFor(docId),
          fileSize: staged.size,
          title,
          authors: parseAuthors(rawAuthors ?? ""),
          year,
          zotero:
            zoteroKey !== null && libraryId !== null
              ? {
                  key: zoteroKey,
                  libraryId,
                  version: zoteroVersion ?? 0,
                  collectionKeys: optionalString(fields, "collection_keys"),
                  tags: optionalString(fields, "tags"),
                }
              : null,
        };

        // File first (fsynced, renamed), then the rows; the file goes when the rows fail.
        try {
          await ctx.files.commit(staged, upload.filePath);
        } catch (err) {
          throw saveFailure(err);
        }
        committedPath = ctx.files.absolute(upload.filePath);
        staged = undefined;
        const result = await ctx.repo.createUpload(upload);
        if (!result.ok) {
          throw new HttpError(
            409,
            `Document with Zotero key '${result.zoteroKey}' already exists (doc_id: ${result.existingDocId})`,
          );
        }
        committedPath = undefined;
        request.log.info({ event: "paper.uploaded", doc_id: docId, zotero_key: zoteroKey, title, bytes: upload.fileSize }, "paper uploaded");
        ctx.worker?.notify();
        return {
          job_id: jobId,
          doc_id: docId,
          filename,
          message: "File uploaded successfully with metadata. Processing started.",
          status: "processing",
        };
      } finally {
        if (staged) await ctx.files.discard(staged.tempPath);
        if (committedPath) await ctx.files.discard(committedPath);
      }
    },
  );
};
