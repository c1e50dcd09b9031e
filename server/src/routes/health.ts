import type { FastifyPluginAsync } from "fastify";
import type { RouteOptions } from "../context.js";
import { VERSION } from "../version.js";

export const healthRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  app.get(
    "/health",
    {
      schema: {
        response: {
          200: {
            type: "object",
            properties: {
              status: { type: "string" },
              version: { type: "string" },
              database: { type: "string" },
              worker: { type: "string" },
            },
          },
        },
      },
    },
    async () => ({
      status: "ok",
      version: VERSION,
      // A database that does not answer (PostgreSQL down) is reported, not thrown.
      database: (await ctx.repo.ping().catch(() => false)) ? "ok" : "error",
      worker: ctx.worker ? "running" : "disabled",
    }),
  );
};
