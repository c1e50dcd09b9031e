import type { FastifyPluginAsync } from "fastify";
import type { RouteOptions } from "../context.js";
import { errorResponses } from "./schemas.js";

/** Addition to the original API: the Zotero keys this server already holds for a library. */
export const zoteroRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  app.get<{ Querystring: { library_id: string } }>(
    "/api/v1/zotero/links",
    {
      onRequest: ctx.authenticate,
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
      links: ctx.repo.zoteroLinks(request.query.library_id),
    }),
  );
};
