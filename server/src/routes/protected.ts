/**
 * Private by default: every route that reads or changes papers, text, files, jobs or links lives
 * in one of two encapsulated scopes below, each adding the bearer-token `onRequest` hook once.
 * A route plugin registered here is protected without saying so; one registered outside (only
 * `/health` and the login are) is public. `publicRead` opens the read scope to anonymous
 * clients; the write scope always needs a token.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import type { RouteOptions } from "../context.js";
import { adminRoutes } from "./admin.js";
import { documentWriteRoutes } from "./document-write.js";
import { documentRoutes } from "./documents.js";
import { jobRoutes } from "./jobs.js";
import { uploadRoutes } from "./upload.js";
import { zoteroRoutes } from "./zotero.js";

export interface ProtectedRouteOptions extends RouteOptions {
  /** Let anonymous clients use the read routes (`--public-read`). Default false. */
  publicRead?: boolean;
}

type Hook = (request: FastifyRequest, reply: FastifyReply) => Promise<void>;

/**
 * With `--public-read`: a request without an `Authorization` header passes; one with a header
 * still has it checked (a client learns that its token expired rather than being served as
 * anonymous).
 */
function anonymousOrAuthenticated(authenticate: Hook): Hook {
  return async (request, reply) => {
    if (request.headers.authorization === undefined) return;
    await authenticate(request, reply);
  };
}

export const protectedRoutes: FastifyPluginAsync<ProtectedRouteOptions> = async (app, { ctx, publicRead = false }) => {
  const routeOptions = { ctx };

  // Reads: papers, text, files, jobs, progress, links.
  await app.register(async (reads) => {
    reads.addHook("onRequest", publicRead ? anonymousOrAuthenticated(ctx.authenticate) : ctx.authenticate);
    await reads.register(jobRoutes, routeOptions);
    await reads.register(documentRoutes, routeOptions);
    await reads.register(adminRoutes, routeOptions);
    await reads.register(zoteroRoutes, routeOptions);
  });

  // Writes: uploads, metadata, PDF replacement, deletion.
  await app.register(async (writes) => {
    writes.addHook("onRequest", ctx.authenticate);
    await writes.register(uploadRoutes, routeOptions);
    await writes.register(documentWriteRoutes, routeOptions);
  });
};
