import type { FastifyPluginAsync } from "fastify";
import { verifyPasswordConstantWork } from "../auth.js";
import type { AppContext, RouteOptions } from "../context.js";
import { HttpError, missingField, validationError, type ValidationIssue } from "../errors.js";
import { detailSchema } from "./schemas.js";

/** Largest login body: a username and a password fit many times over. */
export const LOGIN_BODY_LIMIT = 64 * 1024;

export type LoginOutcome =
  | { result: "ok" }
  | { result: "invalid" }
  | { result: "blocked"; message: string; retryAfterSeconds: number };

/**
 * One login attempt, as the API and the login page make it: the failed-login limits first,
 * then the password (an unknown user costs the same hashing), then the limiter told the result.
 */
export async function attemptLogin(ctx: AppContext, ip: string, username: string, password: string): Promise<LoginOutcome> {
  // Too many recent failures from this address or for this username: 429, checked before
  // the password so a guess made while blocked learns nothing and costs no hashing.
  const block = ctx.loginLimiter.check(ip, username);
  if (block) {
    const who = block.scope === "address" ? "from this address" : "for this username";
    return {
      result: "blocked",
      message: `Too many failed logins ${who}: try again in ${block.retryAfterSeconds} seconds`,
      retryAfterSeconds: block.retryAfterSeconds,
    };
  }
  // An unknown user costs the same password hashing as a known one (a dummy hash), so the
  // answer's timing does not tell which usernames exist.
  const user = await ctx.repo.findUser(username);
  const ok = (await verifyPasswordConstantWork(password, user?.password_hash)) && user?.is_admin === 1;
  if (!ok) {
    ctx.loginLimiter.fail(ip, username);
    return { result: "invalid" };
  }
  ctx.loginLimiter.succeed(username);
  await ctx.repo.recordLogin(username);
  return { result: "ok" };
}

export const authRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  app.post(
    "/api/v1/auth/login",
    {
      bodyLimit: LOGIN_BODY_LIMIT,
      schema: {
        response: {
          200: {
            type: "object",
            properties: { access_token: { type: "string" }, token_type: { type: "string" } },
            required: ["access_token", "token_type"],
          },
          401: detailSchema,
          413: detailSchema,
          422: detailSchema,
          429: detailSchema,
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
      const outcome = await attemptLogin(ctx, request.ip, username, password);
      if (outcome.result === "blocked") {
        throw new HttpError(429, outcome.message, { "retry-after": String(outcome.retryAfterSeconds) });
      }
      if (outcome.result === "invalid") throw new HttpError(401, "Invalid credentials");
      const token = await ctx.tokens.issue(username);
      return { access_token: token, token_type: "bearer" };
    },
  );
};
