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
      database: (await ctx.repo.ping()) ? "ok" : "error",
      worker: ctx.worker ? "running" : "disabled",
    }),
  );
};
