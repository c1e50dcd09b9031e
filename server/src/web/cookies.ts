/**
 * The few cookie bits the web pages need, written here rather than taken from
 * `@fastify/cookie`: its current release depends on `cookie` 2, which declares Node >= 22 (the
 * EBADENGINE this package avoids, see README), and the pages need only to read two cookies and
 * set them with fixed attributes. Values are always our own base64url tokens.
 */
import type { FastifyRequest } from "fastify";

/** The session cookie: a random id, looked up (hashed) in the `session` table. */
export const SESSION_COOKIE = "refserver_session";
/** The login form's CSRF token (double submit: this cookie and the form's hidden field). */
export const LOGIN_CSRF_COOKIE = "refserver_login_csrf";

/** A cookie's value from the request's `Cookie` header (the first one of that name), or undefined. */
export function readCookie(request: FastifyRequest, name: string): string | undefined {
  const header = request.headers.cookie;
  if (typeof header !== "string") return undefined;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() !== name) continue;
    let value = part.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    return value;
  }
  return undefined;
}

/**
 * Whether the client reached us over https: the connection itself, or a proxy saying so in
 * `X-Forwarded-Proto`. The header is not otherwise trusted; believing it can only add the
 * `Secure` attribute, which makes a client's own cookie stricter, never weaker.
 */
export function overHttps(request: FastifyRequest): boolean {
  if (request.protocol === "https") return true;
  const forwarded = request.headers["x-forwarded-proto"];
  const first = (Array.isArray(forwarded) ? forwarded[0] : forwarded)?.split(",")[0]?.trim().toLowerCase();
  return first === "https";
}

export interface CookieOptions {
  /** Max-Age in seconds; 0 deletes the cookie. */
  maxAge: number;
  path: string;
  sameSite: "Strict" | "Lax";
  secure: boolean;
}

/** A `Set-Cookie` value: always HttpOnly. */
export function serializeCookie(name: string, value: string, o: CookieOptions): string {
  if (!/^[A-Za-z0-9_-]+$/.test(name) || !/^[A-Za-z0-9_-]*$/.test(value)) throw new Error("cookie name or value out of range");
  const parts = [`${name}=${value}`, `Path=${o.path}`, `Max-Age=${Math.max(0, Math.floor(o.maxAge))}`, "HttpOnly", `SameSite=${o.sameSite}`];
  if (o.maxAge <= 0) parts.push("Expires=Thu, 01 Jan 1970 00:00:00 GMT");
  if (o.secure) parts.push("Secure");
  return parts.join("; ");
}
