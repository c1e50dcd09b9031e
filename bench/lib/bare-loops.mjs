// The throughput benchmark's baselines, each run as its own process (node bare-loops.mjs MODE ...):
//
//   upload    (a): upload the PDFs from disk: undici.request with a multipart body built by hand
//                  as a Node stream (fields, then fs.createReadStream of the file, then the closing
//                  boundary; Content-Length known). No Zotero, no MD5, no cache, no journal, no retry.
//   transfer  (b): per item GET Zotero's /items/KEY/file, follow the 302 to storage, and pipe the
//                  download's bytes straight into the upload's file part (Content-Length from the
//                  storage answer). No MD5, no cache file, no journal, no retry.
//   transfer+meta: (b), then the metadata call the importer sends per paper
//                  (POST /api/v1/document/{doc_id}/metadata, form-encoded).
//
// Same multipart fields as the importer, `concurrency` items at a time. Prints one JSON line:
// { loopMs, statuses, bytes, cpuUserMs, cpuSystemMs } (CPU = process.cpuUsage() of the whole process).
// Usage: node bare-loops.mjs MODE MANIFEST.json SERVER_URL CONCURRENCY USER PASSWORD [ZOTERO_URL API_KEY]
import { createReadStream, readFileSync } from "node:fs";
import { Agent, request } from "undici";

const [mode, manifestPath, url, concurrencyRaw, user, password, zoteroUrl, apiKey] = process.argv.slice(2);
if (!["upload", "transfer", "transfer+meta"].includes(mode)) throw new Error(`bare-loops: unknown mode ${mode}`);
// [{ path, key, attKey, libraryId, title, filename, size }]
const files = JSON.parse(readFileSync(manifestPath, "utf8"));
const concurrency = Number(concurrencyRaw);
const dispatcher = new Agent({ connections: Math.max(4, concurrency), headersTimeout: 120_000, bodyTimeout: 120_000 });
const zoteroAgent = new Agent({ connections: 8 });

const login = await request(`${url}/api/v1/auth/login`, {
  method: "POST",
  dispatcher,
  headers: { "content-type": "application/x-www-form-urlencoded" },
  body: new URLSearchParams({ username: user, password }).toString(),
});
const token = JSON.parse(await login.body.text()).access_token;
if (!token) throw new Error("bare loop: login failed");

function fieldsOf(f) {
  return [
    ["title", f.title],
    ["authors", JSON.stringify(["Bench Author"])],
    ["year", "2020"],
    ["zotero_key", f.key],
    ["zotero_library_id", f.libraryId],
    ["zotero_version", "1"],
    ["collection_keys", "[]"],
    ["tags", "[]"],
  ];
}

async function upload(f, source, size) {
  const boundary = `----bare${Math.random().toString(16).slice(2)}`;
  let head = "";
  for (const [k, v] of fieldsOf(f)) head += `--${boundary}\r\nContent-Disposition: form-data; name="${k}"\r\n\r\n${v}\r\n`;
  head += `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${f.filename}"\r\nContent-Type: application/pdf\r\n\r\n`;
  const headBuf = Buffer.from(head);
  const tail = Buffer.from(`\r\n--${boundary}--\r\n`);
  async function* body() {
    yield headBuf;
    for await (const chunk of source) yield chunk;
    yield tail;
  }
  const res = await request(`${url}/api/v1/papers/upload_with_metadata`, {
    method: "POST",
    dispatcher,
    headers: { authorization: `Bearer ${token}`, "content-type": `multipart/form-data; boundary=${boundary}`, "content-length": String(headBuf.length + size + tail.length) },
    body: body(),
  });
  const text = await res.body.text();
  return { status: res.statusCode, docId: res.statusCode === 200 ? JSON.parse(text).doc_id : null };
}

async function download(f) {
  const headers = { "zotero-api-key": apiKey, "zotero-api-version": "3" };
  const first = await request(`${zoteroUrl}/users/${f.libraryId}/items/${f.attKey}/file`, { dispatcher: zoteroAgent, headers });
  await first.body.dump();
  if (first.statusCode !== 302) throw new Error(`bare loop: /file answered ${first.statusCode}`);
  const res = await request(new URL(first.headers.location, zoteroUrl).href, { dispatcher: zoteroAgent });
  if (res.statusCode !== 200) throw new Error(`bare loop: storage answered ${res.statusCode}`);
  return { body: res.body, size: Number(res.headers["content-length"]) };
}

async function metadata(docId, f) {
  const form = new URLSearchParams({ title: f.title, authors: "Bench Author", journal: "", year: "2020", abstract: "", doi: "", zotero_version: "1", tags: "[]", collection_keys: "[]" });
  const res = await request(`${url}/api/v1/document/${docId}/metadata`, {
    method: "POST",
    dispatcher,
    headers: { authorization: `Bearer ${token}`, "content-type": "application/x-www-form-urlencoded" },
    body: form.toString(),
  });
  await res.body.text();
  return res.statusCode;
}

const statuses = {};
let bytes = 0;
let next = 0;
const tLoop = performance.now();
async function worker() {
  for (;;) {
    const i = next++;
    if (i >= files.length) return;
    const f = files[i];
    let out;
    if (mode === "upload") {
      out = await upload(f, createReadStream(f.path, { highWaterMark: 256 * 1024 }), f.size);
      bytes += f.size;
    } else {
      const d = await download(f);
      out = await upload(f, d.body, d.size);
      bytes += d.size;
      if (mode === "transfer+meta" && out.docId) {
        const s = await metadata(out.docId, f);
        statuses[`meta ${s}`] = (statuses[`meta ${s}`] ?? 0) + 1;
      }
    }
    statuses[out.status] = (statuses[out.status] ?? 0) + 1;
  }
}
await Promise.all(Array.from({ length: concurrency }, worker));
const loopMs = performance.now() - tLoop;
await dispatcher.close();
await zoteroAgent.close();
const cpu = process.cpuUsage();
process.stdout.write(JSON.stringify({ loopMs, bytes, statuses, cpuUserMs: cpu.user / 1000, cpuSystemMs: cpu.system / 1000 }) + "\n");
