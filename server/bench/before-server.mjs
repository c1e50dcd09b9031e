#!/usr/bin/env node
// The "before" configuration of the server benchmark (upload-load.mjs): a deliberately small
// stand-in, NOT refserver-lite and not any other project's code. It models the database habits
// that produce "database is locked" under load, on refserver-lite's own schema and files:
//   - rollback journal (journal_mode=DELETE, no WAL): a reader blocks a writer's commit;
//   - a 5 s lock timeout and autocommit statements: one statement per row, a select-then-insert
//     duplicate check (no UNIQUE violation caught, no single transaction per upload);
//   - a worker whose job query opens a DEFERRED transaction and keeps it open while it reads
//     every listed PDF, writing each result inside it, so its lock spans whole documents.
// It serves only what the benchmark calls: POST /api/v1/auth/login (any credentials; no token
// check anywhere: the benchmark measures the database, not authentication) and
// POST /api/v1/papers/upload_with_metadata. It expects a data directory that refserver-lite
// created (the benchmark seeds its backlog with the real server, --no-worker, first).
//
// Usage: node server/bench/before-server.mjs --data DIR [--port 0] [--no-worker]
// Prints "before-server listening on http://127.0.0.1:PORT" once it accepts connections.
import { randomUUID } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import { join } from "node:path";
import { parseArgs } from "node:util";
import Database from "better-sqlite3";
import { PdfExtractor } from "../dist/worker/extractor.js";

const { values } = parseArgs({
  options: { data: { type: "string" }, port: { type: "string", default: "0" }, "no-worker": { type: "boolean" } },
});
if (!values.data) {
  process.stderr.write("before-server: --data DIR is required (a data directory refserver-lite created)\n");
  process.exit(2);
}
const dataDir = values.data;
const LOCK_TIMEOUT_MS = 5000;

function open() {
  const db = new Database(join(dataDir, "refserver.db"), { fileMustExist: true });
  db.pragma("journal_mode = DELETE");
  db.pragma(`busy_timeout = ${LOCK_TIMEOUT_MS}`);
  return db;
}
const db = open();
const workerDb = open();
const now = () => new Date().toISOString();

function json(res, status, body) {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
}

async function upload(req, res) {
  // The whole form in memory: fine for the benchmark's small PDFs.
  const form = await new Request("http://localhost/", { method: "POST", headers: req.headers, body: req, duplex: "half" }).formData();
  const file = form.get("file");
  if (!(file instanceof Blob)) return json(res, 422, { detail: "file missing" });
  const key = form.get("zotero_key");
  const libraryId = form.get("zotero_library_id");
  if (typeof key === "string") {
    const existing = db.prepare("SELECT paper_id FROM zoterolink WHERE zotero_key = ?").get(key);
    if (existing) return json(res, 409, { detail: `Document with Zotero key '${key}' already exists (doc_id: ${existing.paper_id})` });
  }
  const docId = randomUUID();
  const jobId = randomUUID();
  const filePath = `pdfs/${docId}.pdf`;
  await writeFile(join(dataDir, filePath), Buffer.from(await file.arrayBuffer()));
  const t = now();
  const filename = file.name || "paper.pdf";
  db.prepare("INSERT INTO paper (doc_id, filename, file_path, file_size, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)").run(docId, filename, filePath, file.size, t, t);
  db.prepare("INSERT INTO metadata (paper_id, title, authors, source) VALUES (?, ?, ?, 'user_api')").run(docId, String(form.get("title") ?? filename), String(form.get("authors") ?? "[]"));
  if (typeof key === "string" && typeof libraryId === "string") {
    db.prepare("INSERT INTO zoterolink (paper_id, library_id, zotero_key, imported_at) VALUES (?, ?, ?, ?)").run(docId, libraryId, key, t);
  }
  db.prepare("INSERT INTO processingjob (job_id, paper_id, filename, status, current_step, created_at, updated_at) VALUES (?, ?, ?, 'processing', 'queued', ?, ?)").run(jobId, docId, filename, t, t);
  json(res, 200, { job_id: jobId, doc_id: docId, filename, message: "uploaded", status: "processing" });
}

const server = createServer((req, res) => {
  const handle = async () => {
    if (req.method === "POST" && req.url === "/api/v1/auth/login") {
      for await (const _ of req);
      return json(res, 200, { access_token: "before-server", token_type: "bearer" });
    }
    if (req.method === "POST" && req.url === "/api/v1/papers/upload_with_metadata") return upload(req, res);
    return json(res, 404, { detail: "Not Found" });
  };
  handle().catch((err) => {
    if (!res.headersSent) json(res, 500, { detail: `Database error: ${err.message}` });
  });
});

const quiet = { info() {}, warn() {}, error() {}, debug() {}, trace() {}, fatal() {}, child() { return quiet; } };
const extractor = new PdfExtractor({ log: quiet });
let stopping = false;

async function workerLoop() {
  while (!stopping) {
    let processed = 0;
    try {
      workerDb.exec("BEGIN DEFERRED");
      const jobs = workerDb
        .prepare("SELECT j.job_id, j.paper_id, p.file_path FROM processingjob j JOIN paper p ON p.doc_id = j.paper_id WHERE j.status IN ('uploaded', 'processing') ORDER BY j.rowid")
        .all();
      for (const job of jobs) {
        if (stopping) break;
        const doc = await extractor.extract(join(dataDir, job.file_path));
        const t = now();
        workerDb.prepare("DELETE FROM pagetext WHERE paper_id = ?").run(job.paper_id);
        doc.pages.forEach((text, i) => workerDb.prepare("INSERT INTO pagetext (paper_id, page_number, text) VALUES (?, ?, ?)").run(job.paper_id, i + 1, text));
        workerDb.prepare("UPDATE paper SET page_count = ?, ocr_text = ?, updated_at = ? WHERE doc_id = ?").run(doc.pages.length, doc.pages.join("\n\n"), t, job.paper_id);
        workerDb.prepare("UPDATE processingjob SET status = 'completed', current_step = 'completed', progress_percentage = 100, updated_at = ?, completed_at = ? WHERE job_id = ?").run(t, t, job.job_id);
        processed++;
      }
      workerDb.exec("COMMIT");
    } catch {
      if (workerDb.inTransaction) workerDb.exec("ROLLBACK");
    }
    if (processed === 0) await new Promise((r) => setTimeout(r, 200));
  }
}

await mkdir(join(dataDir, "pdfs"), { recursive: true });
server.listen(Number(values.port), "127.0.0.1", () => {
  process.stdout.write(`before-server listening on http://127.0.0.1:${server.address().port}\n`);
});
const worker = values["no-worker"] ? Promise.resolve() : workerLoop();
process.on("SIGTERM", async () => {
  stopping = true;
  extractor.stop();
  server.close();
  await worker.catch(() => undefined);
  await extractor.close();
  db.close();
  workerDb.close();
  process.exit(0);
});
