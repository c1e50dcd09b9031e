import type { FastifyInstance } from "fastify";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { buildApp } from "../src/app.js";
import { ADMIN, injectUpload, login, removeTempDirs, tempDataDir, testApp, uploadParts } from "./helpers/app.js";
import { makeSamplePdf } from "./helpers/pdf.js";
import { spawnServer, type ServerProcess } from "./helpers/process.js";
import { registeredRoutes, type RegisteredRoute } from "./helpers/routes.js";

const pdf = makeSamplePdf(1, 2, "Private");
const TITLE = "Confidential ice sheets";
/** The only routes a client without a token may use (the web login form, login and logout included). */
const PUBLIC = new Set([
  "GET /health",
  "HEAD /health",
  "POST /api/v1/auth/login",
  "GET /login",
  "HEAD /login",
  "POST /login",
  "POST /logout",
]);
/** The web pages: without a token or session they send the visitor to /login (303, empty body) instead of a 401. */
const PAGES = new Set(["GET /", "HEAD /", "GET /paper/:doc_id", "HEAD /paper/:doc_id", "GET /jobs", "HEAD /jobs"]);
const READ_METHODS = new Set(["GET", "HEAD"]);

const apps: FastifyInstance[] = [];
const servers: ServerProcess[] = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
  for (const s of servers.splice(0)) {
    if (s.child.exitCode === null) s.child.kill("SIGTERM");
    await s.exited;
  }
});
afterAll(removeTempDirs);

interface Paper {
  doc_id: string;
  job_id: string;
}

/** An app holding one paper with a Zotero link, and an admin token. */
async function appWithPaper(overrides: Parameters<typeof testApp>[0] = {}): Promise<{ app: FastifyInstance; token: string; paper: Paper }> {
  const app = await testApp(overrides);
  apps.push(app);
  const token = await login(app);
  const res = await injectUpload(app, token, uploadParts(pdf, { title: TITLE, zotero_key: "PRIV0001", zotero_library_id: "7" }));
  expect(res.statusCode, res.body).toBe(200);
  return { app, token, paper: res.json() as Paper };
}

/** A concrete URL for a route: its parameters filled with the paper's ids, required queries added. */
function concrete(route: RegisteredRoute, paper: Paper): string {
  const url = route.url.replace(":doc_id", paper.doc_id).replace(":job_id", paper.job_id);
  expect(url, `a parameter of ${route.url} is not filled`).not.toMatch(/:/);
  if (url === "/api/v1/zotero/links") return `${url}?library_id=7`;
  return url === "/api/v1/search" ? `${url}?q=Confidential` : url;
}

/** The routes (other than the public ones) that answer anything but a bare 401 without a token. */
async function answeringWithoutToken(app: FastifyInstance, paper: Paper, routes: RegisteredRoute[]): Promise<string[]> {
  const leaks: string[] = [];
  for (const route of routes) {
    const res = await app.inject({ method: route.method as "GET", url: concrete(route, paper) });
    if (PAGES.has(`${route.method} ${route.url}`)) {
      const location = String(res.headers.location ?? "");
      if (res.statusCode !== 303 || !location.startsWith("/login?next=") || res.body !== "") {
        leaks.push(`${route.method} ${route.url} -> ${res.statusCode}`);
      }
      continue;
    }
    // A HEAD answer has no body; any other holds exactly the detail.
    const body = route.method === "HEAD" ? "" : JSON.stringify({ detail: "Authentication required" });
    const bare = res.statusCode === 401 && res.headers["www-authenticate"] === "Bearer" && res.body === body;
    if (!bare) leaks.push(`${route.method} ${route.url} -> ${res.statusCode}`);
  }
  return leaks;
}

describe("private by default: every route but /health and the login needs a token", () => {
  it("each registered route (found from the router, so a new one is checked too) answers a bare 401 without a token", async () => {
    const { app, token, paper } = await appWithPaper();
    const routes = registeredRoutes(app);
    const keys = routes.map((r) => `${r.method} ${r.url}`);
    // The enumeration sees the routes known today (and whatever is added later).
    for (const known of [
      "GET /api/v1/document/:doc_id",
      "HEAD /download/pdf/:doc_id",
      "GET /api/v1/admin/progress",
      "GET /api/v1/jobs",
      "GET /api/v1/job/:job_id",
      "GET /api/v1/zotero/links",
      "POST /api/v1/papers/upload_with_metadata",
      "POST /api/v1/document/:doc_id/metadata",
      "PUT /api/v1/document/:doc_id/pdf",
      "DELETE /api/v1/document/:doc_id",
      "GET /api/v1/documents",
      "GET /api/v1/search",
      ...PAGES,
      ...PUBLIC,
    ]) {
      expect(keys).toContain(known);
    }
    const guarded = routes.filter((r) => !PUBLIC.has(`${r.method} ${r.url}`));
    expect(await answeringWithoutToken(app, paper, guarded)).toEqual([]);
    // A bad token is no better than none.
    for (const route of guarded) {
      const res = await app.inject({ method: route.method as "GET", url: concrete(route, paper), headers: { authorization: "Bearer not-a-jwt" } });
      expect(res.statusCode, `${route.method} ${route.url}`).toBe(401);
      expect(res.body).not.toContain(paper.doc_id);
      expect(res.body).not.toContain(TITLE);
    }
    // With the token, each read route answers with the paper's data: the URLs above were real.
    for (const route of guarded.filter((r) => r.method === "GET")) {
      const res = await app.inject({ method: "GET", url: concrete(route, paper), headers: { authorization: `Bearer ${token}` } });
      expect(res.statusCode, `${route.method} ${route.url}`).toBe(200);
    }
  });

  it("the check catches a route registered outside the authenticated scope", async () => {
    const dataDir = await tempDataDir();
    const raw = await buildApp({ dataDir, adminUser: ADMIN.user, adminPassword: ADMIN.password, worker: false });
    apps.push(raw);
    raw.get("/api/v1/leak/:doc_id", async () => ({ title: TITLE }));
    await raw.ready();
    const paper = { doc_id: "d", job_id: "j" };
    const leaks = await answeringWithoutToken(raw, paper, registeredRoutes(raw).filter((r) => !PUBLIC.has(`${r.method} ${r.url}`)));
    expect(leaks).toEqual(["GET /api/v1/leak/:doc_id -> 200", "HEAD /api/v1/leak/:doc_id -> 200"]);
  });

  it("/health is public and holds no document data", async () => {
    const { app, paper } = await appWithPaper();
    const res = await app.inject({ method: "GET", url: "/health" });
    expect(res.statusCode).toBe(200);
    const body = res.json() as Record<string, unknown>;
    expect(Object.keys(body).sort()).toEqual(["database", "status", "version", "worker"]);
    expect(res.body).not.toContain(paper.doc_id);
    expect(res.body).not.toContain(TITLE);
  });
});

describe("--public-read opens the read routes, never the writes", () => {
  it("anonymous reads answer the data; anonymous writes 401 and change nothing; a bad token is still refused", async () => {
    const { app, paper } = await appWithPaper({ publicRead: true });
    const routes = registeredRoutes(app).filter((r) => !PUBLIC.has(`${r.method} ${r.url}`));
    const reads = routes.filter((r) => READ_METHODS.has(r.method));
    const writes = routes.filter((r) => !READ_METHODS.has(r.method));
    expect(reads.length).toBeGreaterThanOrEqual(12); // 6 GET routes and their HEADs
    expect(writes.map((r) => `${r.method} ${r.url}`).sort()).toEqual([
      "DELETE /api/v1/document/:doc_id",
      "POST /api/v1/document/:doc_id/metadata",
      "POST /api/v1/papers/upload_with_metadata",
      "PUT /api/v1/document/:doc_id/pdf",
    ]);
    for (const route of reads) {
      const res = await app.inject({ method: route.method as "GET", url: concrete(route, paper) });
      expect(res.statusCode, `${route.method} ${route.url}`).toBe(200);
    }
    const doc = await app.inject({ method: "GET", url: `/api/v1/document/${paper.doc_id}` });
    expect(doc.json()).toMatchObject({ doc_id: paper.doc_id, metadata: { title: TITLE } });
    expect(await answeringWithoutToken(app, paper, writes)).toEqual([]);
    expect((await app.refserver.repo.counts()).papers).toBe(1);
    expect((await app.refserver.repo.getDocument(paper.doc_id))?.metadata?.title).toBe(TITLE);
    // A client that sends a token has it checked (it learns that the token expired).
    const stale = await app.inject({ method: "GET", url: `/api/v1/document/${paper.doc_id}`, headers: { authorization: "Bearer stale" } });
    expect(stale.statusCode).toBe(401);
  });
});

describe("the CLI: --public-read and REFSERVER_PUBLIC_READ=1, off by default", () => {
  const env = { REFSERVER_ADMIN_USER: ADMIN.user, REFSERVER_ADMIN_PASSWORD: ADMIN.password };

  async function progressWithoutToken(args: string[], extraEnv: Record<string, string> = {}): Promise<number> {
    const server = spawnServer(["--data", await tempDataDir(), "--no-worker", ...args], { ...env, ...extraEnv });
    servers.push(server);
    const url = await server.url;
    const res = await fetch(`${url}/api/v1/admin/progress`);
    await res.arrayBuffer();
    const upload = await fetch(`${url}/api/v1/papers/upload_with_metadata`, { method: "POST", body: new FormData() });
    expect(upload.status, "uploads always need a token").toBe(401);
    return res.status;
  }

  it("401 by default, 200 with the flag or the variable", async () => {
    expect(await progressWithoutToken([])).toBe(401);
    expect(await progressWithoutToken([], { REFSERVER_PUBLIC_READ: "0" })).toBe(401);
    expect(await progressWithoutToken(["--public-read"])).toBe(200);
    expect(await progressWithoutToken([], { REFSERVER_PUBLIC_READ: "1" })).toBe(200);
  });
});
