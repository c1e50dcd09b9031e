// The ceiling for the throughput benchmark, run as its own process: the same PDFs, uploaded
// straight from disk to refserver-lite by a bare parallel loop — undici.request + FormData +
// fs.openAsBlob, `concurrency` at a time, the same multipart fields the importer sends.
// No Zotero, no MD5, no journal, no retries. Prints one JSON line.
// Usage: node ceiling-upload.mjs MANIFEST.json SERVER_URL CONCURRENCY USER PASSWORD
import { openAsBlob, readFileSync } from "node:fs";
import { Agent, FormData, request } from "undici";

const [manifestPath, url, concurrencyRaw, user, password] = process.argv.slice(2);
const files = JSON.parse(readFileSync(manifestPath, "utf8")); // [{ path, key, title, filename }]
const concurrency = Number(concurrencyRaw);
const dispatcher = new Agent({ connections: Math.max(4, concurrency), headersTimeout: 120_000, bodyTimeout: 120_000 });

const t0 = performance.now();
const login = await request(`${url}/api/v1/auth/login`, {
  method: "POST",
  dispatcher,
  headers: { "content-type": "application/x-www-form-urlencoded" },
  body: new URLSearchParams({ username: user, password }).toString(),
});
const token = JSON.parse(await login.body.text()).access_token;
if (!token) throw new Error("ceiling: login failed");

const statuses = {};
let bytes = 0;
let next = 0;
const tLoop = performance.now();
async function worker() {
  for (;;) {
    const i = next++;
    if (i >= files.length) return;
    const f = files[i];
    const form = new FormData();
    form.append("title", f.title);
    form.append("authors", JSON.stringify(["Bench Author"]));
    form.append("year", "2020");
    form.append("zotero_key", f.key);
    form.append("zotero_library_id", f.libraryId);
    form.append("zotero_version", "1");
    form.append("collection_keys", "[]");
    form.append("tags", "[]");
    const blob = await openAsBlob(f.path, { type: "application/pdf" });
    bytes += blob.size;
    form.append("file", blob, f.filename);
    const res = await request(`${url}/api/v1/papers/upload_with_metadata`, { method: "POST", dispatcher, headers: { authorization: `Bearer ${token}` }, body: form });
    await res.body.text();
    statuses[res.statusCode] = (statuses[res.statusCode] ?? 0) + 1;
  }
}
await Promise.all(Array.from({ length: concurrency }, worker));
const tEnd = performance.now();
await dispatcher.close();
process.stdout.write(JSON.stringify({ loopMs: tEnd - tLoop, inProcessMs: tEnd - t0, bytes, statuses }) + "\n");
