import type { FastifyReply, FastifyRequest } from "fastify";
import type { TokenService } from "./auth.js";
import type { Repository } from "./db/types.js";
import type { Library, SessionStore } from "./db/types.js";
import type { LoginLimiter } from "./login-limiter.js";
import type { FileStore } from "./storage.js";
import type { JobWorker } from "./worker/worker.js";
import { HttpError } from "./errors.js";

/** What every route plugin receives: the storage, the tokens and the worker. */
export interface AppContext {
  repo: Repository;
  files: FileStore;
  tokens: TokenService;
  /** Undefined when the app was built with `worker: false`. */
  worker: JobWorker | undefined;
  maxUploadBytes: number;
  /** Largest value of one form field (bytes); a longer one is refused, never stored cut. */
  maxFieldBytes: number;
  /** Failed-login rate limiting (per address, per username). */
  loginLimiter: LoginLimiter;
  authenticate: (request: FastifyRequest, reply: FastifyReply) => Promise<void>;
  /** The library's reads for the web pages and the JSON listing/search (db/library.ts). */
  library: Library;
  /** Browser sessions of the web pages (db/sessions.ts). */
  sessions: SessionStore;
}

export interface RouteOptions {
  ctx: AppContext;
}

declare module "fastify" {
  interface FastifyRequest {
    /** The authenticated admin's username (set by `authenticate`). */
    username?: string;
  }
}

const AUTH_REQUIRED = (): HttpError =>
  new HttpError(401, "Authentication required", { "www-authenticate": "Bearer" });

/** Build the bearer-token preHandler: 401 without a valid token, 403 for a non-admin. */
export function makeAuthenticate(
  repo: Repository,
  tokens: TokenService,
): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  return async (request) => {
    const header = request.headers.authorization;
    const match = typeof header === "string" ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
    const token = match?.[1];
    if (!token) throw AUTH_REQUIRED();
    const username = await tokens.verify(token);
    if (!username) throw AUTH_REQUIRED();
    const user = await repo.findUser(username);
    if (!user) throw AUTH_REQUIRED();
    if (user.is_admin !== 1) throw new HttpError(403, "Admin access required");
    request.username = username;
  };
}
