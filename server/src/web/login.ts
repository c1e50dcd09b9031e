/**
 * The public part of the web interface: the login form, the login, the logout.
 *
 * CSRF: every POST form carries a token in a hidden field, checked in constant time.
 * - The login form's token is a double submit: GET /login sets it in an HttpOnly,
 *   SameSite=Strict cookie scoped to /login and in the form; POST /login needs both, equal.
 *   (This stops a "login CSRF": another site logging a visitor into an account of its choice.)
 * - Signed-in forms (logout) carry the session's own token, stored with the session.
 * Both POSTs are also refused when the browser says the request is cross-site
 * (`Sec-Fetch-Site`) or names another `Origin`.
 *
 * The session cookie: a random 256-bit id (only its SHA-256 is stored), HttpOnly, SameSite=Lax
 * (a link from another site to a paper opens it signed in; a cross-site POST carries no
 * cookie), Path=/, Max-Age the token lifetime (480 minutes), Secure when the request came over
 * https. A new id at every login (no fixation); logout deletes the row and the cookie.
 */
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from "fastify";
import type { RouteOptions } from "../context.js";
import { randomToken } from "../db/sessions.js";
import { attemptLogin, LOGIN_BODY_LIMIT } from "../routes/auth.js";
import { LOGIN_CSRF_COOKIE, overHttps, readCookie, serializeCookie, SESSION_COOKIE } from "./cookies.js";
import { html } from "./html.js";
import { layout, sendPage } from "./layout.js";
import { sameOriginPost, sameToken, sessionOf } from "./session.js";

const LOGIN_CSRF_MAX_AGE = 60 * 60;
const MAX_FIELD = 4096;

/** A local path to return to after the login; anything else (another site, `//host`, `/\host`) is `/`. */
export function safeNext(next: unknown): string {
  if (typeof next !== "string" || next.length > 2000) return "/";
  if (!/^\/(?![/\\])/.test(next) || /[\s\\]/.test(next) || next.startsWith("/login") || next.startsWith("/logout")) return "/";
  return next;
}

function field(body: unknown, name: string): string | undefined {
  const v = (body as Record<string, unknown> | null | undefined)?.[name];
  return typeof v === "string" && v.length <= MAX_FIELD ? v : undefined;
}

interface LoginForm {
  next: string;
  username?: string;
  error?: string;
}

/** Render the login form with a fresh double-submit token (set as a cookie too). */
function sendLoginForm(request: FastifyRequest, reply: FastifyReply, status: number, form: LoginForm): FastifyReply {
  const csrf = randomToken();
  reply.header(
    "set-cookie",
    serializeCookie(LOGIN_CSRF_COOKIE, csrf, { maxAge: LOGIN_CSRF_MAX_AGE, path: "/login", sameSite: "Strict", secure: overHttps(request) }),
  );
  const body = html`<section class="login">
<h1>Sign in to refserver-lite</h1>
${form.error ? html`<p class="error" role="alert">${form.error}</p>` : ""}
<form method="post" action="/login">
<input type="hidden" name="csrf" value="${csrf}">
<input type="hidden" name="next" value="${form.next}">
<label for="username">Username</label>
<input type="text" id="username" name="username" autocomplete="username" required value="${form.username ?? ""}">
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required>
<button type="submit">Sign in</button>
</form>
</section>`;
  return sendPage(reply, status, layout({ title: "Sign in", request, bare: true }, body));
}

export const loginRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  app.get<{ Querystring: { next?: string } }>("/login", async (request, reply) => {
    const next = safeNext(request.query.next);
    if (await sessionOf(ctx, request)) return reply.code(303).header("location", next).header("cache-control", "no-store").send();
    return sendLoginForm(request, reply, 200, { next });
  });

  app.post("/login", { bodyLimit: LOGIN_BODY_LIMIT }, async (request, reply) => {
    const body = request.body;
    const next = safeNext(field(body, "next"));
    const username = field(body, "username") ?? "";
    const password = field(body, "password") ?? "";
    if (!sameOriginPost(request) || !sameToken(readCookie(request, LOGIN_CSRF_COOKIE), field(body, "csrf"))) {
      return sendLoginForm(request, reply, 403, {
        next,
        username,
        error: "This form expired or did not come from this site. Please sign in again.",
      });
    }
    if (username === "" || password === "") {
      return sendLoginForm(request, reply, 422, { next, username, error: "Enter a username and a password." });
    }
    const outcome = await attemptLogin(ctx, request.ip, username, password);
    if (outcome.result === "blocked") {
      reply.header("retry-after", String(outcome.retryAfterSeconds));
      return sendLoginForm(request, reply, 429, { next, username, error: outcome.message });
    }
    if (outcome.result === "invalid") {
      return sendLoginForm(request, reply, 401, { next, username, error: "Invalid username or password." });
    }
    // A fresh session id at every login; a session the browser still held is ended.
    const previous = readCookie(request, SESSION_COOKIE);
    if (previous !== undefined) await ctx.sessions.delete(previous);
    const session = await ctx.sessions.create(username);
    const secure = overHttps(request);
    return reply
      .code(303)
      .header("set-cookie", [
        serializeCookie(SESSION_COOKIE, session.id, { maxAge: ctx.sessions.ttlSeconds, path: "/", sameSite: "Lax", secure }),
        serializeCookie(LOGIN_CSRF_COOKIE, "", { maxAge: 0, path: "/login", sameSite: "Strict", secure }),
      ])
      .header("location", next)
      .header("cache-control", "no-store")
      .send();
  });

  app.post("/logout", { bodyLimit: LOGIN_BODY_LIMIT }, async (request, reply) => {
    const session = await sessionOf(ctx, request);
    if (session) {
      // A valid session is ended only by its own form: the session's CSRF token, same origin.
      if (!sameOriginPost(request) || !sameToken(session.csrfToken, field(request.body, "csrf"))) {
        request.webSession = session;
        request.username = session.username;
        const body = html`<h1>Not logged out</h1>
<p class="error" role="alert">This request did not come from this site's logout button. You are still signed in.</p>
<form method="post" action="/logout"><input type="hidden" name="csrf" value="${session.csrfToken}"><button type="submit">Log out</button></form>`;
        return sendPage(reply, 403, layout({ title: "Not logged out", request }, body));
      }
      await ctx.sessions.delete(session.id);
    }
    return reply
      .code(303)
      .header(
        "set-cookie",
        serializeCookie(SESSION_COOKIE, "", { maxAge: 0, path: "/", sameSite: "Lax", secure: overHttps(request) }),
      )
      .header("location", "/login")
      .header("cache-control", "no-store")
      .send();
  });
};
