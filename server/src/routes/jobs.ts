import type { FastifyPluginAsync } from "fastify";
import type { RouteOptions } from "../context.js";
import type { JobRow } from "../db/types.js";
import { HttpError } from "../errors.js";
import { errorResponses, stepSchema } from "./schemas.js";

export function stepsOf(job: JobRow): Record<string, { status: string; error: string | null; completed_at: string | null }> {
  return {
    text: { status: job.text_status, error: job.text_error, completed_at: job.text_completed_at },
    chunking: { status: job.chunking_status, error: job.chunking_error, completed_at: job.chunking_completed_at },
  };
}

/** The original's job answer: result.doc_id when completed, error when failed. */
export function jobView(job: JobRow): Record<string, unknown> {
  const view: Record<string, unknown> = {
    job_id: job.job_id,
    filename: job.filename,
    status: job.status,
    current_step: job.current_step,
    progress_percentage: job.progress_percentage,
  };
  if (job.status === "completed") view.result = { doc_id: job.paper_id };
  else if (job.status === "failed") view.error = job.error_message;
  return view;
}

const jobSchema = {
  type: "object",
  properties: {
    job_id: { type: "string" },
    filename: { type: "string" },
    status: { type: "string" },
    current_step: { type: ["string", "null"] },
    progress_percentage: { type: "integer" },
    result: { type: "object", properties: { doc_id: { type: "string" } } },
    error: { type: ["string", "null"] },
  },
  required: ["job_id", "filename", "status", "current_step", "progress_percentage"],
} as const;

const jobListItemSchema = {
  type: "object",
  properties: {
    job_id: { type: "string" },
    doc_id: { type: "string" },
    filename: { type: "string" },
    status: { type: "string" },
    current_step: { type: ["string", "null"] },
    progress_percentage: { type: "integer" },
    error_message: { type: ["string", "null"] },
    created_at: { type: "string" },
    updated_at: { type: "string" },
    completed_at: { type: ["string", "null"] },
    steps: { type: "object", additionalProperties: stepSchema },
  },
} as const;

export const jobRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  app.get<{ Params: { job_id: string } }>(
    "/api/v1/job/:job_id",
    {
      schema: {
        params: { type: "object", properties: { job_id: { type: "string" } }, required: ["job_id"] },
        response: { 200: jobSchema, ...errorResponses },
      },
    },
    async (request) => {
      const job = await ctx.repo.getJob(request.params.job_id);
      if (!job) throw new HttpError(404, "Job not found");
      return jobView(job);
    },
  );

  app.get<{ Querystring: { status?: string; limit: number; offset: number } }>(
    "/api/v1/jobs",
    {
      schema: {
        querystring: {
          type: "object",
          properties: {
            status: { type: "string" },
            limit: { type: "integer", minimum: 1, maximum: 500, default: 50 },
            offset: { type: "integer", minimum: 0, default: 0 },
          },
        },
        response: {
          200: {
            type: "object",
            properties: {
              jobs: { type: "array", items: jobListItemSchema },
              total: { type: "integer" },
              limit: { type: "integer" },
              offset: { type: "integer" },
            },
            required: ["jobs", "total", "limit", "offset"],
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const { status, limit, offset } = request.query;
      const statusFilter = status !== undefined && status !== "" ? status : undefined;
      const { jobs, total } = await ctx.repo.listJobs({ status: statusFilter, limit, offset });
      return {
        jobs: jobs.map((j) => ({
          job_id: j.job_id,
          doc_id: j.paper_id,
          filename: j.filename,
          status: j.status,
          current_step: j.current_step,
          progress_percentage: j.progress_percentage,
          error_message: j.error_message,
          created_at: j.created_at,
          updated_at: j.updated_at,
          completed_at: j.completed_at,
          steps: stepsOf(j),
        })),
        total,
        limit,
        offset,
      };
    },
  );
};
