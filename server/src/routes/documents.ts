import { open } from "node:fs/promises";
import type { FastifyPluginAsync } from "fastify";
import type { RouteOptions } from "../context.js";
import { HttpError } from "../errors.js";
import { errorResponses } from "./schemas.js";

function parseAuthors(json: string): string[] {
  try {
    const parsed: unknown = JSON.parse(json);
    return Array.isArray(parsed) ? parsed.map(String) : [];
  } catch {
    return [];
  }
}

/** A Content-Disposition safe for any filename: ASCII fallback plus RFC 5987 UTF-8. */
function contentDisposition(filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]/g, "_").replace(/["\\]/g, "_");
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename)}`;
}

export const documentRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  const params = { type: "object", properties: { doc_id: { type: "string" } }, required: ["doc_id"] } as const;

  app.get<{ Params: { doc_id: string } }>(
    "/api/v1/document/:doc_id",
    {
      schema: {
        params,
        response: {
          200: {
            type: "object",
            properties: {
              doc_id: { type: "string" },
              filename: { type: "string" },
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
              },
              text: { type: "string" },
              page_count: { type: ["integer", "null"] },
              created_at: { type: "string" },
            },
            required: ["doc_id", "filename", "metadata", "text", "created_at"],
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const doc = await ctx.repo.getDocument(request.params.doc_id);
      if (!doc) throw new HttpError(404, "Document not found");
      const m = doc.metadata;
      return {
        doc_id: doc.paper.doc_id,
        filename: doc.paper.filename,
        metadata: m
          ? {
              title: m.title,
              authors: parseAuthors(m.authors),
              journal: m.journal,
              year: m.year,
              abstract: m.abstract,
              doi: m.doi,
            }
          : {},
        text: doc.paper.ocr_text ?? "",
        page_count: doc.paper.page_count,
        created_at: doc.paper.created_at,
      };
    },
  );

  app.get<{ Params: { doc_id: string } }>(
    "/download/pdf/:doc_id",
    { schema: { params, response: { ...errorResponses } } },
    async (request, reply) => {
      const paper = await ctx.repo.getPaper(request.params.doc_id);
      if (!paper) throw new HttpError(404, "Document not found");
      // Open first, then stat the handle: a PDF replaced or deleted right after this read is
      // still served whole from the open file.
      const fh = await open(ctx.files.absolute(paper.file_path), "r").catch(() => undefined);
      if (!fh) throw new HttpError(404, "PDF file not found on server");
      let size: number;
      try {
        size = (await fh.stat()).size;
      } catch (err) {
        await fh.close();
        throw err;
      }
      return reply
        .header("content-type", "application/pdf")
        .header("content-length", String(size))
        .header("content-disposition", contentDisposition(paper.filename))
        .header("cache-control", "no-cache")
        .send(fh.createReadStream());
    },
  );
};
