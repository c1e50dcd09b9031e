/**
 * Private by default: every route that reads or changes papers, text, files, jobs or links lives
 * in one of the encapsulated scopes below (reads, writes, pages), each adding its `onRequest`
 * hook once.
 * A route plugin registered here is protected without saying so; one registered outside (only
 * `/health` and the login are) is public. `publicRead` opens the read scope to anonymous
 * clients; the write scope always needs a token. Reads and pages also accept the web pages'
 * session cookie (web/session.ts); the pages send an anonymous visitor to `/login` instead of
 * answering 401.
 */
import type { FastifyPluginAsync } from "fastify";
import type { RouteOptions } from "../context.js";
import { adminRoutes } from "./admin.js";
import { documentWriteRoutes } from "./document-write.js";
import { documentRoutes } from "./documents.js";
import { jobRoutes } from "./jobs.js";
import { libraryRoutes } from "./library.js";
import { uploadRoutes } from "./upload.js";
import { zoteroRoutes } from "./zotero.js";
import { pageRoutes } from "../web/pages.js";
import { pageAuthenticate, readAuthenticate } from "../web/session.js";

export interface ProtectedRouteOptions extends RouteOptions {
  /** Let anonymous clients use the read routes (`--public-read`). Default false. */
  publicRead?: boolean;
}

export const protectedRoutes: FastifyPluginAsync<ProtectedRouteOptions> = async (app, { ctx, publicRead = false }) => {
  const routeOptions = { ctx };

  // Reads: papers, text, files, jobs, progress, links, the library listing and search. A bearer
  // token or a browser session (web/session.ts; the bearer check as before when a header is sent).
  await app.register(async (reads) => {
    reads.addHook("onRequest", readAuthenticate(ctx, publicRead));
    await reads.register(jobRoutes, routeOptions);
    await reads.register(documentRoutes, routeOptions);
    await reads.register(adminRoutes, routeOptions);
    await reads.register(zoteroRoutes, routeOptions);
    await reads.register(libraryRoutes, routeOptions);
  });

  // Pages: the web interface (HTML). As reads, but an anonymous visitor is sent to /login.
  await app.register(async (pages) => {
    pages.addHook("onRequest", pageAuthenticate(ctx, publicRead));
    await pages.register(pageRoutes, routeOptions);
  });

  // Writes: uploads, metadata, PDF replacement, deletion.
  await app.register(async (writes) => {
    writes.addHook("onRequest", ctx.authenticate);
    await writes.register(uploadRoutes, routeOptions);
    await writes.register(documentWriteRoutes, routeOptions);
  });
};
