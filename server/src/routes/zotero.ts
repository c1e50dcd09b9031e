import type { FastifyPluginAsync } from "fastify";
import type { RouteOptions } from "../context.js";
import type { ZoteroLinkRow } from "../db/types.js";
import { errorResponses } from "./schemas.js";

/** A stored JSON list of strings, or undefined when absent or not one (upload stores it as given). */
function stringList(json: string | null): string[] | undefined {
  if (json === null) return undefined;
  try {
    const parsed: unknown = JSON.parse(json);
    return Array.isArray(parsed) && parsed.every((v) => typeof v === "string") ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One link entry: key, doc id and version always; the paper's metadata when it has a metadata
 * row (null where unset); tags and collection keys when stored as a JSON list of strings.
 */
function linkView(row: ZoteroLinkRow): Record<string, unknown> {
  const entry: Record<string, unknown> = {
    zotero_key: row.zotero_key,
    doc_id: row.doc_id,
    zotero_version: row.zotero_version,
  };
  if (row.has_metadata) {
    entry.title = row.title;
    entry.authors = stringList(row.authors) ?? [];
    entry.year = row.year;
    entry.doi = row.doi;
    entry.journal = row.journal;
  }
  const tags = stringList(row.tags);
  if (tags) entry.tags = tags;
  const collections = stringList(row.collection_keys);
  if (collections) entry.collection_keys = collections;
  return entry;
}

/** Addition to the original API: the Zotero keys this server already holds for a library. */
export const zoteroRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  app.get<{ Querystring: { library_id: string } }>(
    "/api/v1/zotero/links",
    {
      schema: {
        querystring: {
          type: "object",
          properties: { library_id: { type: "string", minLength: 1 } },
          required: ["library_id"],
        },
        response: {
          200: {
            type: "object",
            properties: {
              library_id: { type: "string" },
              links: {
                type: "array",
                items: {
                  type: "object",
                  properties: {
                    zotero_key: { type: "string" },
                    doc_id: { type: "string" },
                    zotero_version: { type: "integer" },
                    title: { type: ["string", "null"] },
                    authors: { type: "array", items: { type: "string" } },
                    year: { type: ["integer", "null"] },
                    doi: { type: ["string", "null"] },
                    journal: { type: ["string", "null"] },
                    tags: { type: "array", items: { type: "string" } },
                    collection_keys: { type: "array", items: { type: "string" } },
                  },
                  required: ["zotero_key", "doc_id", "zotero_version"],
                },
              },
            },
            required: ["library_id", "links"],
          },
          ...errorResponses,
        },
      },
    },
    async (request) => ({
      library_id: request.query.library_id,
      links: (await ctx.repo.zoteroLinks(request.query.library_id)).map(linkView),
    }),
  );
};
