import type { FastifyInstance } from "fastify";

export interface RegisteredRoute {
  method: string;
  url: string;
}

/**
 * Every route the app registered (HEAD routes Fastify adds for GET included), read from
 * `app.printRoutes({ commonPrefix: false })`: a tree whose lines are `├── /segment (GET, HEAD)`,
 * nested by four-character indents, a child's segment continuing its parent's path.
 */
export function registeredRoutes(app: FastifyInstance): RegisteredRoute[] {
  const routes: RegisteredRoute[] = [];
  const paths: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split("\n")) {
    const m = /^((?:│ {3}| {4})*)[├└]── (.+?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!m) continue;
    const depth = (m[1] ?? "").length / 4;
    paths.length = depth;
    const url = (paths[depth - 1] ?? "") + (m[2] ?? "");
    paths[depth] = url;
    for (const method of m[3]?.split(", ") ?? []) routes.push({ method, url });
  }
  // The parse is checked against the router itself: a misread tree fails here, not silently.
  for (const r of routes) {
    if (!app.hasRoute({ method: r.method as "GET", url: r.url })) throw new Error(`misread route ${r.method} ${r.url}`);
  }
  return routes;
}
