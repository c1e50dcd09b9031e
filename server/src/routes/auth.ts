import type { FastifyPluginAsync } from "fastify";
import { verifyPassword } from "../auth.js";
import type { RouteOptions } from "../context.js";
import { HttpError, missingField, validationError, type ValidationIssue } from "../errors.js";
import { detailSchema } from "./schemas.js";

export const authRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  app.post(
    "/api/v1/auth/login",
    {
      schema: {
        response: {
          200: {
            type: "object",
            properties: { access_token: { type: "string" }, token_type: { type: "string" } },
            required: ["access_token", "token_type"],
          },
          401: detailSchema,
          422: detailSchema,
        },
      },
    },
    async (request) => {
      const body = (request.body ?? {}) as Record<string, unknown>;
      const issues: ValidationIssue[] = [];
      const username = typeof body.username === "string" ? body.username : undefined;
      const password = typeof body.password === "string" ? body.password : undefined;
      if (username === undefined) issues.push(missingField("body", "username"));
      if (password === undefined) issues.push(missingField("body", "password"));
      if (issues.length > 0 || username === undefined || password === undefined) throw validationError(issues);
      const user = ctx.repo.findUser(username);
      const ok = user !== undefined && (await verifyPassword(password, user.password_hash)) && user.is_admin === 1;
      if (!ok) throw new HttpError(401, "Invalid credentials");
      const token = await ctx.tokens.issue(username);
      ctx.repo.recordLogin(username);
      return { access_token: token, token_type: "bearer" };
    },
  );
};
