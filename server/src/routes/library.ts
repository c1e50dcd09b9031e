/**
 * The library as JSON for scripts (refserver-lite additions): the paper list with an optional
 * full-text filter, and ranked search with snippets. Read routes: registered in the read scope
 * (bearer token or browser session; anonymous only with --public-read). Text is returned as
 * stored (JSON needs no HTML escaping).
 */
import type { FastifyPluginAsync } from "fastify";
import type { RouteOptions } from "../context.js";
import type { LibraryRow } from "../db/library.js";
import { errorResponses } from "./schemas.js";

const MAX_QUERY = 500;

function authorsOf(json: string | null): string[] {
  try {
    const parsed: unknown = JSON.parse(json ?? "[]");
    return Array.isArray(parsed) ? parsed.map(String) : [];
  } catch {
    return [];
  }
}

const metadataSchema = {
  type: "object",
  properties: {
    title: { type: ["string", "null"] },
    authors: { type: "array", items: { type: "string" } },
    year: { type: ["integer", "null"] },
    journal: { type: ["string", "null"] },
    doi: { type: ["string", "null"] },
  },
  required: ["title", "authors", "year", "journal", "doi"],
} as const;

const documentSchema = {
  type: "object",
  properties: {
    doc_id: { type: "string" },
    filename: { type: "string" },
    metadata: metadataSchema,
    zotero_key: { type: ["string", "null"] },
    zotero_library_id: { type: ["string", "null"] },
    status: { type: ["string", "null"] },
    current_step: { type: ["string", "null"] },
    progress_percentage: { type: ["integer", "null"] },
    page_count: { type: ["integer", "null"] },
    file_size: { type: "integer" },
    created_at: { type: "string" },
  },
  required: ["doc_id", "filename", "metadata", "zotero_key", "status", "page_count", "created_at"],
} as const;

function documentView(r: LibraryRow): Record<string, unknown> {
  return {
    doc_id: r.doc_id,
    filename: r.filename,
    metadata: { title: r.title, authors: authorsOf(r.authors), year: r.year, journal: r.journal, doi: r.doi },
    zotero_key: r.zotero_key,
    zotero_library_id: r.zotero_library_id,
    status: r.job_status,
    current_step: r.current_step,
    progress_percentage: r.progress_percentage,
    page_count: r.page_count,
    file_size: r.file_size,
    created_at: r.created_at,
  };
}

export const libraryRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  app.get<{ Querystring: { q?: string; limit: number; offset: number } }>(
    "/api/v1/documents",
    {
      schema: {
        querystring: {
          type: "object",
          properties: {
            q: { type: "string", maxLength: MAX_QUERY },
            limit: { type: "integer", minimum: 1, maximum: 500, default: 50 },
            offset: { type: "integer", minimum: 0, default: 0 },
          },
        },
        response: {
          200: {
            type: "object",
            properties: {
              documents: { type: "array", items: documentSchema },
              total: { type: "integer" },
              limit: { type: "integer" },
              offset: { type: "integer" },
            },
            required: ["documents", "total", "limit", "offset"],
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { q, limit, offset } = request.query;
      const { rows, total } = await ctx.library.list({ q, limit, offset });
      return { documents: rows.map(documentView), total, limit, offset };
    },
  );

  app.get<{ Querystring: { q: string; limit: number; offset: number } }>(
    "/api/v1/search",
    {
      schema: {
        querystring: {
          type: "object",
          properties: {
            q: { type: "string", minLength: 1, maxLength: MAX_QUERY, pattern: "\\S" },
            limit: { type: "integer", minimum: 1, maximum: 100, default: 20 },
            offset: { type: "integer", minimum: 0, default: 0 },
          },
          required: ["q"],
        },
        response: {
          200: {
            type: "object",
            properties: {
              query: { type: "string" },
              matches: {
                type: "array",
                items: {
                  type: "object",
                  properties: {
                    doc_id: { type: "string" },
                    metadata: metadataSchema,
                    zotero_key: { type: ["string", "null"] },
                    snippet: { type: "string" },
                    page: { type: ["integer", "null"] },
                  },
                  required: ["doc_id", "metadata", "zotero_key", "snippet", "page"],
                },
              },
              total: { type: "integer" },
              limit: { type: "integer" },
              offset: { type: "integer" },
            },
            required: ["query", "matches", "total", "limit", "offset"],
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { q, limit, offset } = request.query;
      const { matches, total } = await ctx.library.search({ q, limit, offset });
      return {
        query: q,
        matches: matches.map((m) => ({
          doc_id: m.doc_id,
          metadata: { title: m.title, authors: authorsOf(m.authors), year: m.year, journal: m.journal, doi: m.doi },
          zotero_key: m.zotero_key,
          snippet: m.snippet,
          page: m.page,
        })),
        total,
        limit,
        offset,
      };
    },
  );
};
