/**
 * Who a request is, for the read routes and the pages: a bearer token when the request sends
 * an `Authorization` header (checked as before: a bad one is a 401), else a browser session
 * cookie, else anonymous, which only `--public-read` lets through. The session cookie
 * authenticates reads only (pages, JSON reads, PDF downloads): every write route still needs a
 * bearer token, so no form on another site can change anything with a visitor's cookie.
 */
import { timingSafeEqual } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import type { AppContext } from "../context.js";
import type { WebSession } from "../db/types.js";
import { readCookie, SESSION_COOKIE } from "./cookies.js";

declare module "fastify" {
  interface FastifyRequest {
    /** The browser session the request came with, when valid (set by the read and page hooks). */
    webSession?: WebSession & { id: string };
  }
}

type Hook = (request: FastifyRequest, reply: FastifyReply) => Promise<void>;

/** The request's valid session (not expired, user still an admin), or undefined. */
export async function sessionOf(ctx: AppContext, request: FastifyRequest): Promise<(WebSession & { id: string }) | undefined> {
  const id = readCookie(request, SESSION_COOKIE);
  if (id === undefined) return undefined;
  const session = await ctx.sessions.find(id);
  return session ? { ...session, id } : undefined;
}

/** Bearer token, or session cookie; true when the request is authenticated (401 on a bad token). */
async function identify(ctx: AppContext, request: FastifyRequest, reply: FastifyReply): Promise<boolean> {
  if (request.headers.authorization !== undefined) {
    await ctx.authenticate(request, reply);
    return true;
  }
  const session = await sessionOf(ctx, request);
  if (!session) return false;
  request.webSession = session;
  request.username = session.username;
  return true;
}

/**
 * The read scope's hook: a bearer token or a session; otherwise 401 (`Authentication
 * required`), unless `publicRead`. A request that sends an `Authorization` header has it
 * checked even with `publicRead` (a client learns that its token expired).
 */
export function readAuthenticate(ctx: AppContext, publicRead: boolean): Hook {
  return async (request, reply) => {
    if (await identify(ctx, request, reply)) return;
    if (publicRead) return;
    await ctx.authenticate(request, reply); // throws the bare 401
  };
}

/** The pages' hook: as for reads, but an anonymous visitor is sent to the login page. */
export function pageAuthenticate(ctx: AppContext, publicRead: boolean): Hook {
  return async (request, reply) => {
    if (await identify(ctx, request, reply)) return;
    if (publicRead) return;
    const next = request.method === "GET" ? request.url : "/";
    await reply.code(303).header("location", `/login?next=${encodeURIComponent(next)}`).header("cache-control", "no-store").send();
  };
}

/** Constant-time comparison of two tokens (false when either is missing or they differ in length). */
export function sameToken(a: string | undefined, b: string | undefined): boolean {
  if (typeof a !== "string" || typeof b !== "string" || a === "" || b === "") return false;
  const x = Buffer.from(a, "utf8");
  const y = Buffer.from(b, "utf8");
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * A POST from one of our forms: no `Sec-Fetch-Site: cross-site`/`same-site`, and an `Origin`,
 * when sent, naming this host. Browsers send both on form posts; their absence (an old
 * browser, a script) leaves the CSRF token as the check.
 */
export function sameOriginPost(request: FastifyRequest): boolean {
  const site = request.headers["sec-fetch-site"];
  if (site === "cross-site" || site === "same-site") return false;
  const origin = request.headers.origin;
  if (origin === undefined) return true;
  if (origin === "null") return false;
  try {
    const from = new URL(origin);
    // The Host we were reached by, read with the Origin's scheme so default ports compare equal.
    return new URL(`${from.protocol}//${request.host}`).host === from.host;
  } catch {
    return false;
  }
}
