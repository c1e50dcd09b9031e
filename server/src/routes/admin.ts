import type { FastifyPluginAsync } from "fastify";
import type { RouteOptions } from "../context.js";
import { stepsOf } from "./jobs.js";
import { stepSchema } from "./schemas.js";

export const adminRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  app.get(
    "/api/v1/admin/progress",
    {
      schema: {
        response: {
          200: {
            type: "object",
            properties: {
              documents: {
                type: "array",
                items: {
                  type: "object",
                  properties: {
                    doc_id: { type: "string" },
                    job_id: { type: ["string", "null"] },
                    status: { type: "string" },
                    current_step: { type: ["string", "null"] },
                    progress_percentage: { type: "integer" },
                    error_message: { type: ["string", "null"] },
                    steps: { type: "object", additionalProperties: stepSchema },
                  },
                },
              },
            },
            required: ["documents"],
          },
        },
      },
    },
    async () => ({
      documents: (await ctx.repo.progress(50)).map(({ doc_id, job }) =>
        job
          ? {
              doc_id,
              job_id: job.job_id,
              status: job.status,
              current_step: job.current_step,
              progress_percentage: job.progress_percentage,
              error_message: job.error_message,
              steps: stepsOf(job),
            }
          : {
              doc_id,
              job_id: null,
              status: "unknown",
              current_step: null,
              progress_percentage: 0,
              error_message: null,
              steps: {
                text: { status: "pending", error: null, completed_at: null },
                chunking: { status: "pending", error: null, completed_at: null },
              },
            },
      ),
    }),
  );
};
