import { createHash } from "node:crypto";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { escapeHtml, html, toText } from "../src/web/html.js";
import { CONTENT_SECURITY_POLICY } from "../src/web/layout.js";
import { safeNext } from "../src/web/login.js";
import { ADMIN, dbRows, injectUpload, login, removeTempDirs, testApp, uploadParts, useDatabase } from "./helpers/app.js";
import { testDatabase } from "./helpers/pg.js";
import { makeSamplePdf } from "./helpers/pdf.js";

const apps: FastifyInstance[] = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
});
const pgdb = await testDatabase("server/test/web-session.test.ts");
afterAll(async () => {
  useDatabase(undefined);
  await pgdb?.drop();
  await removeTempDirs();
});

/** The backend of the suite being run (the login and session suites run on both). */
let backend: "sqlite" | "postgres" = "sqlite";

async function start(overrides: Parameters<typeof testApp>[0] = {}): Promise<FastifyInstance> {
  useDatabase(backend === "postgres" ? await pgdb?.freshSchema() : undefined);
  const app = await testApp(overrides);
  apps.push(app);
  return app;
}

/** Set-Cookie headers as a list. */
function setCookies(res: LightMyRequestResponse): string[] {
  const h = res.headers["set-cookie"];
  return h === undefined ? [] : Array.isArray(h) ? h : [h];
}
function cookieNamed(res: LightMyRequestResponse, name: string): string | undefined {
  return setCookies(res).find((c) => c.startsWith(`${name}=`));
}
function valueOf(setCookie: string | undefined): string {
  return setCookie?.split(";")[0]?.split("=")[1] ?? "";
}
function attributes(setCookie: string | undefined): string[] {
  return (setCookie ?? "").split(";").slice(1).map((a) => a.trim());
}
function hiddenCsrf(body: string): string {
  return /name="csrf" value="([^"]+)"/.exec(body)?.[1] ?? "";
}

/** GET /login: the form's token and the matching cookie. */
async function loginForm(app: FastifyInstance, headers: Record<string, string> = {}): Promise<{ csrf: string; cookie: string; res: LightMyRequestResponse }> {
  const res = await app.inject({ url: "/login", headers });
  expect(res.statusCode).toBe(200);
  const cookie = valueOf(cookieNamed(res, "refserver_login_csrf"));
  return { csrf: hiddenCsrf(res.body), cookie, res };
}

function postLogin(
  app: FastifyInstance,
  fields: Record<string, string>,
  cookie: string | undefined,
  headers: Record<string, string> = {},
): Promise<LightMyRequestResponse> {
  return app.inject({
    method: "POST",
    url: "/login",
    headers: {
      "content-type": "application/x-www-form-urlencoded",
      ...(cookie !== undefined ? { cookie: `refserver_login_csrf=${cookie}` } : {}),
      ...headers,
    },
    payload: new URLSearchParams(fields).toString(),
  });
}

/** Log in through the form; the session cookie's value. */
async function browserLogin(app: FastifyInstance, next?: string): Promise<string> {
  const { csrf, cookie } = await loginForm(app);
  const res = await postLogin(app, { username: ADMIN.user, password: ADMIN.password, csrf, ...(next ? { next } : {}) }, cookie);
  expect(res.statusCode, res.body).toBe(303);
  const session = valueOf(cookieNamed(res, "refserver_session"));
  expect(session).toMatch(/^[A-Za-z0-9_-]{43}$/);
  return session;
}

const withSession = (id: string, extra: Record<string, string> = {}) => ({ cookie: `refserver_session=${id}`, ...extra });

// The login, session and logout suites on both backends (sessions live in the database).
for (const each of ["sqlite", "postgres"] as const) describe.runIf(each === "sqlite" || pgdb !== undefined)(`on ${each}`, () => {
  beforeAll(() => {
    backend = each;
  });
  afterAll(() => {
    backend = "sqlite";
  });
  describe("the login form and the session cookie", () => {
    it("anonymous visitors are sent to /login; the form sets a SameSite=Strict double-submit token", async () => {
      const app = await start();
      for (const url of ["/", "/jobs", "/paper/x", "/?q=ice&page=2"]) {
        const res = await app.inject({ url });
        expect(res.statusCode, url).toBe(303);
        expect(res.headers.location).toBe(`/login?next=${encodeURIComponent(url)}`);
        expect(res.body).toBe("");
      }
      const { csrf, cookie, res } = await loginForm(app);
      expect(res.headers["content-type"]).toBe("text/html; charset=utf-8");
      expect(res.body).toContain('<form method="post" action="/login">');
      expect(csrf).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(cookie).toBe(csrf);
      const set = cookieNamed(res, "refserver_login_csrf");
      expect(attributes(set)).toEqual(expect.arrayContaining(["Path=/login", "HttpOnly", "SameSite=Strict", "Max-Age=3600"]));
      expect(attributes(set)).not.toContain("Secure");
    });

    it("a login sets an HttpOnly, SameSite=Lax, Path=/ session cookie (Secure over https); only its hash is stored", async () => {
      const app = await start();
      const { csrf, cookie } = await loginForm(app);
      const res = await postLogin(app, { username: ADMIN.user, password: ADMIN.password, csrf, next: "/jobs?page=2" }, cookie);
      expect(res.statusCode).toBe(303);
      expect(res.headers.location).toBe("/jobs?page=2");
      const set = cookieNamed(res, "refserver_session");
      expect(attributes(set)).toEqual(["Path=/", `Max-Age=${480 * 60}`, "HttpOnly", "SameSite=Lax"]);
      // The login token is spent.
      expect(attributes(cookieNamed(res, "refserver_login_csrf"))).toContain("Max-Age=0");
      const id = valueOf(set);
      const rows = await dbRows<{ id_hash: string; username: string }>(app, "SELECT id_hash, username FROM session");
      expect(rows).toEqual([{ id_hash: createHash("sha256").update(id).digest("hex"), username: ADMIN.user }]);
      expect(JSON.stringify(rows)).not.toContain(id);

      // Over https (directly, or a proxy saying so), the cookies are Secure.
      const form = await loginForm(app, { "x-forwarded-proto": "https" });
      expect(attributes(cookieNamed(form.res, "refserver_login_csrf"))).toContain("Secure");
      const secure = await postLogin(app, { username: ADMIN.user, password: ADMIN.password, csrf: form.csrf }, form.cookie, {
        "x-forwarded-proto": "https",
      });
      expect(secure.statusCode).toBe(303);
      expect(attributes(cookieNamed(secure, "refserver_session"))).toContain("Secure");
    });

    it("the session reads pages, JSON and the PDF download, never writes", async () => {
      const app = await start();
      const token = await login(app);
      const up = await injectUpload(app, token, uploadParts(makeSamplePdf(1, 1), { title: "Session paper" }));
      const docId = (up.json() as { doc_id: string }).doc_id;
      const session = await browserLogin(app);
      for (const url of ["/", "/jobs", `/paper/${docId}`, "/api/v1/documents", "/api/v1/search?q=session", `/api/v1/document/${docId}`, `/download/pdf/${docId}`]) {
        const res = await app.inject({ url, headers: withSession(session) });
        expect(res.statusCode, url).toBe(200);
      }
      const home = await app.inject({ url: "/", headers: withSession(session) });
      expect(home.body).toContain("Session paper");
      expect(home.body).toContain('action="/logout"');
      // Writes need the bearer token; the cookie is not one.
      const upload = await injectUpload(app, undefined, uploadParts(makeSamplePdf(1, 1), { title: "via cookie" }));
      expect(upload.statusCode).toBe(401);
      const del = await app.inject({ method: "DELETE", url: `/api/v1/document/${docId}`, headers: withSession(session) });
      expect(del.statusCode).toBe(401);
      expect((await app.refserver.repo.counts()).papers).toBe(1);
      // A made-up or tampered cookie is nobody.
      for (const bad of ["x", `${session}x`, session.replace(/^./, (c) => (c === "A" ? "B" : "A"))]) {
        expect((await app.inject({ url: "/", headers: withSession(bad) })).statusCode).toBe(303);
        expect((await app.inject({ url: "/api/v1/documents", headers: withSession(bad) })).statusCode).toBe(401);
      }
    });

    it("a login POST without the form's token, with a wrong one, or from another origin is refused (403) and opens no session", async () => {
      const app = await start();
      const { csrf, cookie } = await loginForm(app);
      const good = { username: ADMIN.user, password: ADMIN.password };
      const refused = [
        await postLogin(app, { ...good }, cookie), // no field
        await postLogin(app, { ...good, csrf }, undefined), // no cookie
        await postLogin(app, { ...good, csrf: `${csrf.slice(0, -1)}A` === csrf ? `${csrf.slice(0, -1)}B` : `${csrf.slice(0, -1)}A` }, cookie),
        await postLogin(app, { ...good, csrf }, cookie, { origin: "https://evil.example" }),
        await postLogin(app, { ...good, csrf }, cookie, { origin: "null" }),
        await postLogin(app, { ...good, csrf }, cookie, { "sec-fetch-site": "cross-site" }),
      ];
      expect(refused.map((r) => r.statusCode)).toEqual([403, 403, 403, 403, 403, 403]);
      for (const r of refused) {
        expect(cookieNamed(r, "refserver_session")).toBeUndefined();
        expect(r.body).toContain("This form expired or did not come from this site");
      }
      // Same origin (the Host the server was reached by) is fine.
      const ok = await postLogin(app, { ...good, csrf }, cookie, { origin: "http://localhost:80", host: "localhost:80", "sec-fetch-site": "same-origin" });
      expect(ok.statusCode).toBe(303);
    });

    it("a wrong password shows the form again (401, escaped username); failures count towards the login limits (429 + Retry-After)", async () => {
      const app = await start({ loginLimits: { maxFailuresPerUser: 2, maxFailuresPerIp: 0 } });
      const { csrf, cookie } = await loginForm(app);
      const bad = await postLogin(app, { username: `<img src=x onerror=alert(1)>`, password: "nope", csrf }, cookie);
      expect(bad.statusCode).toBe(401);
      expect(bad.body).toContain("Invalid username or password.");
      expect(bad.body).toContain('value="&lt;img src=x onerror=alert(1)&gt;"');
      expect(bad.body).not.toContain("<img src=x");
      expect(cookieNamed(bad, "refserver_session")).toBeUndefined();
      await postLogin(app, { username: ADMIN.user, password: "wrong", csrf }, cookie);
      await postLogin(app, { username: ADMIN.user, password: "wrong", csrf }, cookie);
      const blocked = await postLogin(app, { username: ADMIN.user, password: ADMIN.password, csrf }, cookie);
      expect(blocked.statusCode).toBe(429);
      expect(Number(blocked.headers["retry-after"])).toBeGreaterThan(0);
      expect(blocked.body).toContain("Too many failed logins for this username");
      expect(cookieNamed(blocked, "refserver_session")).toBeUndefined();
    });

    it("only local paths are followed after the login", async () => {
      expect(safeNext("/paper/abc?x=1")).toBe("/paper/abc?x=1");
      for (const bad of ["//evil.example/", "/\\evil.example", "https://evil.example", "javascript:alert(1)", "", "/login", "/ spaces", undefined]) {
        expect(safeNext(bad), String(bad)).toBe("/");
      }
      const app = await start();
      const { csrf, cookie } = await loginForm(app);
      const res = await postLogin(app, { username: ADMIN.user, password: ADMIN.password, csrf, next: "//evil.example/x" }, cookie);
      expect(res.headers.location).toBe("/");
    });

    it("GET /login while signed in goes to the library; a new login replaces the old session (no fixation)", async () => {
      const app = await start();
      const first = await browserLogin(app);
      const again = await app.inject({ url: "/login", headers: withSession(first) });
      expect(again.statusCode).toBe(303);
      expect(again.headers.location).toBe("/");
      const { csrf, cookie } = await loginForm(app);
      const res = await app.inject({
        method: "POST",
        url: "/login",
        headers: { "content-type": "application/x-www-form-urlencoded", cookie: `refserver_login_csrf=${cookie}; refserver_session=${first}` },
        payload: new URLSearchParams({ username: ADMIN.user, password: ADMIN.password, csrf }).toString(),
      });
      const second = valueOf(cookieNamed(res, "refserver_session"));
      expect(second).not.toBe(first);
      expect((await app.inject({ url: "/", headers: withSession(first) })).statusCode).toBe(303);
      expect((await app.inject({ url: "/", headers: withSession(second) })).statusCode).toBe(200);
    });

    it("sessions expire with the token lifetime", async () => {
      let clock = Date.now();
      const app = await start({ tokenTtlSeconds: 60, now: () => clock });
      const session = await browserLogin(app);
      expect((await app.inject({ url: "/", headers: withSession(session) })).statusCode).toBe(200);
      clock += 61_000;
      expect((await app.inject({ url: "/", headers: withSession(session) })).statusCode).toBe(303);
      // The next login purges it.
      await browserLogin(app);
      expect(await app.refserver.sessions.count()).toBe(1);
    });
  });

  describe("logout", () => {
    function postLogout(app: FastifyInstance, session: string, csrf: string | undefined, headers: Record<string, string> = {}) {
      return app.inject({
        method: "POST",
        url: "/logout",
        headers: { "content-type": "application/x-www-form-urlencoded", ...withSession(session), ...headers },
        payload: new URLSearchParams(csrf !== undefined ? { csrf } : {}).toString(),
      });
    }

    it("needs the session's own CSRF token: a wrong or missing one, or another origin, is 403 and the session stays", async () => {
      const app = await start();
      const session = await browserLogin(app);
      const page = await app.inject({ url: "/", headers: withSession(session) });
      const csrf = hiddenCsrf(page.body);
      expect(csrf).toMatch(/^[A-Za-z0-9_-]{43}$/);
      const other = await browserLogin(app);
      const otherCsrf = hiddenCsrf((await app.inject({ url: "/", headers: withSession(other) })).body);
      for (const res of [
        await postLogout(app, session, undefined),
        await postLogout(app, session, "wrong"),
        await postLogout(app, session, otherCsrf), // another session's token
        await postLogout(app, session, csrf, { origin: "https://evil.example" }),
        await postLogout(app, session, csrf, { "sec-fetch-site": "cross-site" }),
      ]) {
        expect(res.statusCode).toBe(403);
        expect(res.body).toContain("You are still signed in");
        expect(cookieNamed(res, "refserver_session")).toBeUndefined();
      }
      expect((await app.inject({ url: "/", headers: withSession(session) })).statusCode).toBe(200);
    });

    it("with the right token ends the session: the row is deleted and the cookie cleared", async () => {
      const app = await start();
      const session = await browserLogin(app);
      const csrf = hiddenCsrf((await app.inject({ url: "/", headers: withSession(session) })).body);
      const before = await app.refserver.sessions.count();
      const res = await postLogout(app, session, csrf);
      expect(res.statusCode).toBe(303);
      expect(res.headers.location).toBe("/login");
      const cleared = cookieNamed(res, "refserver_session");
      expect(valueOf(cleared)).toBe("");
      expect(attributes(cleared)).toEqual(expect.arrayContaining(["Max-Age=0", "Path=/", "HttpOnly"]));
      expect(await app.refserver.sessions.count()).toBe(before - 1);
      // The old cookie, replayed, opens nothing.
      expect((await app.inject({ url: "/", headers: withSession(session) })).statusCode).toBe(303);
      expect((await app.inject({ url: "/api/v1/documents", headers: withSession(session) })).statusCode).toBe(401);
      // Logging out again (no session) just clears the cookie.
      expect((await postLogout(app, session, csrf)).statusCode).toBe(303);
    });
  });
});

describe("pages: escaping, headers, --public-read", () => {
  it("every title and text is escaped; the CSP allows no script", async () => {
    const app = await start();
    const token = await login(app);
    const evil = "<script>alert(1)</script>";
    const up = await injectUpload(app, token, uploadParts(makeSamplePdf(1, 1), { title: evil, authors: JSON.stringify([`"><img src=x onerror=alert(2)>`]), zotero_key: "EVIL0001", zotero_library_id: "1" }, `${evil}.pdf`));
    const docId = (up.json() as { doc_id: string }).doc_id;
    const session = await browserLogin(app);
    for (const url of ["/", `/paper/${docId}`, "/jobs", `/?q=${encodeURIComponent(evil)}`]) {
      const res = await app.inject({ url, headers: withSession(session) });
      expect(res.statusCode, url).toBe(200);
      expect(res.body, url).not.toMatch(/<script|<img/i);
      expect(res.body, url).toContain("&lt;script&gt;alert(1)&lt;/script&gt;");
      expect(res.headers["content-security-policy"]).toBe(CONTENT_SECURITY_POLICY);
      expect(res.headers["x-content-type-options"]).toBe("nosniff");
      expect(res.headers["cache-control"]).toBe("no-store");
    }
    expect(CONTENT_SECURITY_POLICY).toMatch(/default-src 'none'/);
    expect(CONTENT_SECURITY_POLICY).not.toMatch(/script-src|unsafe/);
    // An unknown paper is an HTML 404 page.
    const missing = await app.inject({ url: "/paper/%3Cb%3Enope", headers: withSession(session) });
    expect(missing.statusCode).toBe(404);
    expect(missing.body).not.toContain("<b>nope");
  });

  it("the escaping helper: text escaped, html`` kept, lists joined, nothing for null/undefined/false", () => {
    expect(escapeHtml(`<a href="x">'&'</a>`)).toBe("&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    const inner = html`<b>${"<i>"}</b>`;
    expect(toText(html`<p>${inner}${["<", html`<br>`, 3]}${null}${undefined}${false}</p>`)).toBe("<p><b>&lt;i&gt;</b>&lt;<br>3</p>");
    // A string that looks like markup is never trusted, even an object pretending to be SafeHtml.
    expect(toText(html`${{ value: "<x>" } as unknown as string}`)).toBe("[object Object]");
  });

  it("with --public-read anonymous visitors see the pages (and a login link), without it only the login page", async () => {
    const open = await start({ publicRead: true });
    const token = await login(open);
    await injectUpload(open, token, uploadParts(makeSamplePdf(1, 1), { title: "Open paper" }));
    const res = await open.inject({ url: "/" });
    expect(res.statusCode).toBe(200);
    expect(res.body).toContain("Open paper");
    expect(res.body).toContain('<a href="/login">Log in</a>');
    const closed = await start();
    expect((await closed.inject({ url: "/" })).statusCode).toBe(303);
    expect((await closed.inject({ url: "/login" })).statusCode).toBe(200);
  });
});
