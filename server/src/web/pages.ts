/**
 * The pages of the web interface, server-rendered (no script, no build step): the library
 * (`/`, paged, with full-text search), one paper (`/paper/:doc_id`), the jobs (`/jobs`,
 * refreshing itself). Registered in the pages scope of `routes/protected.ts`, whose hook sends
 * an anonymous visitor to `/login` (unless `--public-read`). All text goes through `html`.
 */
import type { FastifyPluginAsync, FastifyRequest } from "fastify";
import type { RouteOptions } from "../context.js";
import { queryTerms } from "../db/library.js";
import type { JobRow, LibraryRow } from "../db/types.js";
import { html, type HtmlValue, type SafeHtml } from "./html.js";
import { layout, sendPage } from "./layout.js";

export const PAGE_SIZE = 25;
export const JOBS_PAGE_SIZE = 50;
export const JOBS_REFRESH_SECONDS = 5;
const MAX_QUERY = 500;

export function authorsText(json: string | null): string {
  try {
    const parsed: unknown = JSON.parse(json ?? "[]");
    return Array.isArray(parsed) ? parsed.map(String).join(", ") : String(parsed);
  } catch {
    return json ?? "";
  }
}

/** `?page=`: a positive integer, anything else is page 1. */
function pageNumber(raw: unknown): number {
  const n = typeof raw === "string" && /^\d{1,6}$/.test(raw) ? Number(raw) : 1;
  return n >= 1 ? n : 1;
}

function queryText(raw: unknown): string {
  return typeof raw === "string" ? raw.slice(0, MAX_QUERY).trim() : "";
}

function paperHref(docId: string): string {
  return `/paper/${encodeURIComponent(docId)}`;
}

function libraryHref(q: string, page: number): string {
  const params = new URLSearchParams();
  if (q !== "") params.set("q", q);
  if (page > 1) params.set("page", String(page));
  const s = params.toString();
  return s === "" ? "/" : `/?${s}`;
}

function statusCell(status: string | null, step: string | null, progress: number | null, error: string | null): SafeHtml {
  if (status === null) return html`<span class="muted">no job</span>`;
  if (status === "completed") return html`<span class="status-completed">completed</span>`;
  if (status === "failed") return html`<span class="status-failed" title="${error ?? ""}">failed</span>`;
  return html`<span class="status-${status}">${status}</span> <span class="muted">${step ?? ""} ${progress ?? 0}%</span>`;
}

/** Plain text with each occurrence of a term (case-insensitive) in `<mark>`, all escaped. */
function highlighted(text: string, terms: readonly string[]): HtmlValue {
  const usable = terms.filter((t) => t !== "");
  if (usable.length === 0 || text === "") return text;
  const pattern = new RegExp(usable.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"), "giu");
  const out: HtmlValue[] = [];
  let last = 0;
  for (const m of text.matchAll(pattern)) {
    const at = m.index ?? 0;
    if (m[0] === "") continue;
    out.push(text.slice(last, at), html`<mark>${m[0]}</mark>`);
    last = at + m[0].length;
  }
  out.push(text.slice(last));
  return out;
}

/** A link to doi.org (a fixed https origin, so no other scheme can get in), or the bare text. */
function doiLink(doi: string): HtmlValue {
  try {
    return html`<a href="https://doi.org/${encodeURI(doi)}" rel="noreferrer">${doi}</a>`;
  } catch {
    return doi; // a lone surrogate: encodeURI throws
  }
}

function formatDate(iso: string | null): string {
  return iso ? iso.replace("T", " ").replace(/\.\d+Z$/, " UTC").replace(/Z$/, " UTC") : "";
}

function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / (1024 * 1024)).toFixed(1)} MiB`;
}

function libraryRow(r: LibraryRow & { snippet?: string }, terms: readonly string[]): SafeHtml {
  const title = r.title !== null && r.title !== "" ? r.title : r.filename;
  return html`<tr data-doc-id="${r.doc_id}">
<td><a class="title" href="${paperHref(r.doc_id)}">${highlighted(title, terms)}</a>
${r.snippet ? html`<p class="snippet muted">${highlighted(r.snippet, terms)}</p>` : ""}</td>
<td class="authors">${highlighted(authorsText(r.authors), terms)}</td>
<td>${r.year ?? ""}</td>
<td><code>${r.zotero_key ?? ""}</code></td>
<td>${statusCell(r.job_status, r.current_step, r.progress_percentage, r.error_message)}</td>
</tr>`;
}

function notFound(request: FastifyRequest, what: string): SafeHtml {
  return layout({ title: "Not found", request }, html`<h1>Not found</h1><p>${what}</p><p><a href="/">Back to the library</a></p>`);
}

function stepRows(job: JobRow): SafeHtml {
  const steps: Array<[string, string, string | null, string | null]> = [
    ["text", job.text_status, job.text_error, job.text_completed_at],
    ["chunking", job.chunking_status, job.chunking_error, job.chunking_completed_at],
  ];
  return html`${steps.map(
    ([name, status, error, at]) =>
      html`<tr><td>${name}</td><td class="status-${status}">${status}</td><td>${formatDate(at)}</td><td>${error ?? ""}</td></tr>`,
  )}`;
}

export const pageRoutes: FastifyPluginAsync<RouteOptions> = async (app, { ctx }) => {
  app.get<{ Querystring: Record<string, unknown> }>("/", async (request, reply) => {
    const q = queryText(request.query.q);
    const page = pageNumber(request.query.page);
    const terms = queryTerms(q);
    const offset = (page - 1) * PAGE_SIZE;
    let rows: Array<LibraryRow & { snippet?: string }>;
    let total: number;
    if (terms.length > 0) {
      const listed = await ctx.library.list({ q, limit: PAGE_SIZE, offset });
      rows = await Promise.all(listed.rows.map(async (r) => ({ ...r, snippet: (await ctx.library.snippet(r.doc_id, terms)).snippet })));
      total = listed.total;
    } else {
      ({ rows, total } = await ctx.library.list({ limit: PAGE_SIZE, offset }));
    }
    const first = total === 0 ? 0 : offset + 1;
    const last = Math.min(offset + rows.length, total);
    const summary =
      terms.length > 0
        ? html`${total} ${total === 1 ? "paper matches" : "papers match"} <q>${q}</q>${total > 0 ? html` (showing ${first}–${last})` : ""} · <a href="/">show all</a>`
        : html`${total} ${total === 1 ? "paper" : "papers"}${total > 0 ? html` (showing ${first}–${last}, newest first)` : ""}`;
    const body = html`<h1>Library</h1>
<form class="search" method="get" action="/" role="search">
<input type="search" name="q" value="${q}" placeholder="Search titles, authors and full text" aria-label="Search" maxlength="${MAX_QUERY}">
<button type="submit">Search</button>
</form>
<p class="muted" id="summary">${summary}</p>
${
  rows.length > 0
    ? html`<table id="papers">
<thead><tr><th>Title</th><th>Authors</th><th>Year</th><th>Zotero key</th><th>Status</th></tr></thead>
<tbody>
${rows.map((r) => libraryRow(r, terms))}
</tbody>
</table>`
    : html`<p>${terms.length > 0 ? "No paper matches." : "No papers yet."}</p>`
}
<nav class="pager">
${page > 1 ? html`<a rel="prev" href="${libraryHref(q, page - 1)}">← Newer</a>` : ""}
${offset + rows.length < total ? html`<a rel="next" href="${libraryHref(q, page + 1)}">Older →</a>` : ""}
</nav>`;
    return sendPage(reply, 200, layout({ title: q !== "" ? `Search: ${q}` : "Library", request, current: "library" }, body));
  });

  app.get<{ Params: { doc_id: string } }>("/paper/:doc_id", async (request, reply) => {
    const docId = request.params.doc_id;
    const row = await ctx.library.get(docId);
    if (!row) return sendPage(reply, 404, notFound(request, "No paper has this id."));
    const title = row.title !== null && row.title !== "" ? row.title : row.filename;
    const jobs = await ctx.library.jobsOf(docId);
    const latest = jobs[0];
    const firstPage = await ctx.library.pageText(docId, 1);
    const extras = await ctx.library.zoteroExtras(docId);
    const body = html`<h1 id="title">${title}</h1>
<p><a id="download" href="/download/pdf/${encodeURIComponent(docId)}" download>Download the PDF</a> <span class="muted">(${row.filename}, ${formatSize(row.file_size)})</span></p>
<h2>Metadata</h2>
<dl>
<dt>Authors</dt><dd id="authors">${authorsText(row.authors)}</dd>
<dt>Year</dt><dd>${row.year ?? ""}</dd>
<dt>Journal</dt><dd>${row.journal ?? ""}</dd>
<dt>DOI</dt><dd>${row.doi ? doiLink(row.doi) : ""}</dd>
<dt>Abstract</dt><dd>${row.abstract ?? ""}</dd>
<dt>Zotero</dt><dd>${row.zotero_key ? html`<code>${row.zotero_key}</code> in library ${row.zotero_library_id ?? ""}, version ${row.zotero_version ?? 0}` : html`<span class="muted">no link</span>`}</dd>
${extras?.tags ? html`<dt>Tags</dt><dd>${authorsText(extras.tags)}</dd>` : ""}
<dt>Pages</dt><dd>${row.page_count ?? html`<span class="muted">not yet counted</span>`}</dd>
<dt>Added</dt><dd>${formatDate(row.created_at)}</dd>
<dt>Document id</dt><dd><code>${docId}</code></dd>
</dl>
<h2>Processing</h2>
${
  latest
    ? html`<p>Status: ${statusCell(latest.status, latest.current_step, latest.progress_percentage, latest.error_message)}${latest.error_message ? html` <span class="error">${latest.error_message}</span>` : ""}</p>
<table id="steps"><thead><tr><th>Step</th><th>Status</th><th>Completed</th><th>Note</th></tr></thead><tbody>${stepRows(latest)}</tbody></table>
${jobs.length > 1 ? html`<p class="muted">${jobs.length - 1} earlier ${jobs.length === 2 ? "job" : "jobs"} (replaced PDFs).</p>` : ""}`
    : html`<p class="muted">No processing job.</p>`
}
<h2>First page</h2>
${firstPage !== undefined ? html`<pre class="page" id="first-page">${firstPage}</pre>` : html`<p class="muted">The text is not extracted yet.</p>`}`;
    return sendPage(reply, 200, layout({ title, request, current: "library" }, body));
  });

  app.get<{ Querystring: Record<string, unknown> }>("/jobs", async (request, reply) => {
    const page = pageNumber(request.query.page);
    const offset = (page - 1) * JOBS_PAGE_SIZE;
    const { jobs, total, open } = await ctx.library.jobs(JOBS_PAGE_SIZE, offset);
    const body = html`<h1>Jobs</h1>
<p class="muted" id="summary">${open > 0 ? `${open} running or queued, ` : "none running, "}${total} in all · this page reloads every ${JOBS_REFRESH_SECONDS} seconds</p>
${
  jobs.length > 0
    ? html`<table id="jobs">
<thead><tr><th>Paper</th><th>Status</th><th>Progress</th><th>Started</th><th>Updated</th><th>Error</th></tr></thead>
<tbody>
${jobs.map(
  (j) => html`<tr data-job-id="${j.job_id}">
<td><a href="${paperHref(j.paper_id)}">${j.title !== null && j.title !== "" ? j.title : j.filename}</a></td>
<td>${statusCell(j.status, j.current_step, j.progress_percentage, j.error_message)}</td>
<td><progress max="100" value="${j.progress_percentage}">${j.progress_percentage}%</progress> ${j.progress_percentage}%</td>
<td>${formatDate(j.created_at)}</td>
<td>${formatDate(j.updated_at)}</td>
<td>${j.error_message ?? ""}</td>
</tr>`,
)}
</tbody>
</table>`
    : html`<p>No jobs yet.</p>`
}
<nav class="pager">
${page > 1 ? html`<a rel="prev" href="/jobs?page=${page - 1}">← Newer</a>` : ""}
${offset + jobs.length < total ? html`<a rel="next" href="/jobs?page=${page + 1}">Older →</a>` : ""}
</nav>`;
    return sendPage(reply, 200, layout({ title: "Jobs", request, current: "jobs", refreshSeconds: JOBS_REFRESH_SECONDS }, body));
  });
};
