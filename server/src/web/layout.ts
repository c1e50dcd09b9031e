/**
 * The frame every page shares (head, navigation, logout form) and how a page is sent: HTML
 * with a Content-Security-Policy that allows no script at all and only this file's inline
 * style (by hash), no caching of private pages, no framing.
 */
import { createHash } from "node:crypto";
import type { FastifyReply, FastifyRequest } from "fastify";
import { escapeHtml, html, toText, type HtmlValue, type SafeHtml } from "./html.js";

/** The pages' only style. It holds no character `escapeHtml` changes (checked below). */
const STYLE = `
:root { color-scheme: light dark; --muted: #6b7280; --line: #d1d5db; --accent: #2563eb; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, sans-serif; margin: 0; }
header { display: flex; gap: 1rem; align-items: center; padding: .6rem 1.2rem; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
header .brand { font-weight: 600; }
header nav { display: flex; gap: 1rem; flex: 1; }
header form { margin: 0; }
main { padding: 1rem 1.2rem; max-width: 72rem; }
a { color: var(--accent); }
h1 { font-size: 1.35rem; margin: .2rem 0 1rem; }
h2 { font-size: 1.1rem; margin: 1.4rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: .35rem .5rem; border-bottom: 1px solid var(--line); }
th { font-weight: 600; white-space: nowrap; }
.muted { color: var(--muted); }
.status-completed { color: #15803d; }
.status-failed { color: #b91c1c; }
.status-processing, .status-uploaded { color: #b45309; }
.search { display: flex; gap: .5rem; margin-bottom: 1rem; }
.search input[type=search] { flex: 1; max-width: 32rem; padding: .35rem .5rem; }
.pager { display: flex; gap: 1rem; margin-top: 1rem; align-items: center; }
.snippet { margin: .2rem 0 0; font-size: .9rem; }
mark { padding: 0 .1rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .3rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; }
pre.page { white-space: pre-wrap; font: inherit; border: 1px solid var(--line); padding: .8rem; max-height: 40rem; overflow: auto; }
.login { max-width: 22rem; margin: 3rem auto; }
.login label { display: block; margin: .6rem 0 .2rem; }
.login input[type=text], .login input[type=password] { width: 100%; padding: .4rem; }
.login button { margin-top: 1rem; padding: .4rem 1rem; }
.error { color: #b91c1c; }
progress { width: 8rem; }
`;

if (escapeHtml(STYLE) !== STYLE) throw new Error("the page style must not hold characters that HTML-escaping changes");

const STYLE_HASH = createHash("sha256").update(STYLE, "utf8").digest("base64");

/** No script may run on any page; styles only from the one inline block above. */
export const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  `style-src 'sha256-${STYLE_HASH}'`,
  "img-src 'self' data:",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join("; ");

export interface LayoutOptions {
  /** The browser tab's title (escaped). */
  title: string;
  request: FastifyRequest;
  /** Reload the page every N seconds (`<meta http-equiv="refresh">`). */
  refreshSeconds?: number;
  /** Which navigation entry is current. */
  current?: "library" | "jobs";
  /** Hide the navigation (the login page). */
  bare?: boolean;
}

function nav(o: LayoutOptions): SafeHtml {
  const session = o.request.webSession;
  const who = o.request.username;
  const account = session
    ? html`<span class="muted">${session.username}</span>
        <form method="post" action="/logout"><input type="hidden" name="csrf" value="${session.csrfToken}"><button type="submit">Log out</button></form>`
    : who
      ? html`<span class="muted">${who} (token)</span>`
      : html`<a href="/login">Log in</a>`;
  const link = (href: string, label: string, key: LayoutOptions["current"]): SafeHtml =>
    html`<a href="${href}"${o.current === key ? html` aria-current="page"` : ""}>${label}</a>`;
  return html`<header><span class="brand">refserver-lite</span><nav>${link("/", "Library", "library")}${link("/jobs", "Jobs", "jobs")}</nav>${account}</header>`;
}

export function layout(o: LayoutOptions, body: HtmlValue): SafeHtml {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
${o.refreshSeconds !== undefined ? html`<meta http-equiv="refresh" content="${o.refreshSeconds}">` : ""}
<title>${o.title} · refserver-lite</title>
<link rel="icon" href="data:,">
<style>${STYLE}</style>
</head>
<body>
${o.bare ? "" : nav(o)}
<main>
${body}
</main>
</body>
</html>
`;
}

/** Send a page with the security headers. */
export function sendPage(reply: FastifyReply, statusCode: number, page: SafeHtml): FastifyReply {
  return reply
    .code(statusCode)
    .header("content-type", "text/html; charset=utf-8")
    .header("content-security-policy", CONTENT_SECURITY_POLICY)
    .header("x-content-type-options", "nosniff")
    .header("x-frame-options", "DENY")
    .header("referrer-policy", "same-origin")
    .header("cache-control", "no-store")
    .send(toText(page));
}
