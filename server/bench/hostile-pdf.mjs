#!/usr/bin/env node
// /health latency and server RSS while refserver-lite reads hostile PDFs: one page whose ~1 MB
// content stream inflates to 300 MB of operators (text: the same sentence shown again and again;
// paths: line drawing). Run: npm run build -w server && node server/bench/hostile-pdf.mjs
// Options (env): BENCH_ROUNDS (3: text + drawing bombs queued per round), BENCH_IDLE_WAIT_S (35:
// wait after the jobs for the idle PDF thread to end, 0 to skip), BENCH_SKIP_LIFTED=1 (skip the
// run with the text and decoding caps lifted), BENCH_NO_WRITE=1 (only print).
// Linux only (reads /proc/<pid>/status).
import { execSync, spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { makeSamplePdf } from "../../bench/out/fixtures/pdf.js";
import { makeInflatingPdf } from "../../bench/out/fixtures/pdf.js";

const here = fileURLToPath(new URL(".", import.meta.url));
const BIN = join(here, "..", "bin", "refserver-lite.js");
const BENCHMARKS = join(here, "..", "..", "BENCHMARKS.md");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const IDLE_WAIT_S = Number(process.env.BENCH_IDLE_WAIT_S ?? 35);
const ADMIN = { REFSERVER_ADMIN_USER: "bench", REFSERVER_ADMIN_PASSWORD: "bench-password" };
const MB = 1024 * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function startServer(dataDir, extra) {
  const env = { ...process.env, ...ADMIN };
  for (const k of Object.keys(env)) if (k.startsWith("REFSERVER_") && !(k in ADMIN)) delete env[k];
  const child = spawn(process.execPath, [BIN, "--data", dataDir, "--host", "127.0.0.1", "--port", "0", "--log-level", "silent", ...extra], { env });
  let out = "";
  const url = new Promise((resolve, reject) => {
    child.stdout.on("data", (d) => {
      out += d;
      const m = /^refserver-lite listening on (http:\/\/127\.0\.0\.1:\d+)$/m.exec(out);
      if (m) resolve(m[1]);
    });
    child.on("exit", (code) => reject(new Error(`server exited ${code}`)));
  });
  const exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, url, exited };
}

/** VmRSS and VmHWM (the kernel's peak) of a process, in MB. */
function memory(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (name) => Number(new RegExp(`^${name}:\\s+(\\d+) kB$`, "m").exec(status)?.[1] ?? NaN);
  return { rss: kb("VmRSS") / 1024, hwm: kb("VmHWM") / 1024 };
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.max(0, Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1))];
}

async function login(url) {
  const res = await fetch(`${url}/api/v1/auth/login`, {
    method: "POST",
    body: new URLSearchParams({ username: ADMIN.REFSERVER_ADMIN_USER, password: ADMIN.REFSERVER_ADMIN_PASSWORD }),
  });
  if (res.status !== 200) throw new Error(`login: ${res.status}`);
  return (await res.json()).access_token;
}

async function upload(url, token, pdf, key) {
  const form = new FormData();
  form.append("title", key);
  form.append("authors", '["Bench Author"]');
  form.append("file", new Blob([pdf], { type: "application/pdf" }), `${key}.pdf`);
  const t0 = performance.now();
  const res = await fetch(`${url}/api/v1/papers/upload_with_metadata`, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: form });
  const body = await res.json();
  if (res.status !== 200) throw new Error(`upload ${key}: ${res.status} ${JSON.stringify(body)}`);
  return { ...body, ms: performance.now() - t0 };
}

async function timedGet(url, token) {
  const t0 = performance.now();
  const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
  const body = await res.json();
  return { status: res.status, body, ms: performance.now() - t0 };
}

async function jobs(url, token) {
  return (await timedGet(`${url}/api/v1/jobs?limit=500`, token)).body.jobs;
}

async function healthSeries(url, token, n) {
  const ms = [];
  for (let i = 0; i < n; i++) {
    const r = await timedGet(`${url}/health`, token);
    if (r.status !== 200) throw new Error(`/health answered ${r.status}`);
    ms.push(r.ms);
    await sleep(10);
  }
  return ms.sort((a, b) => a - b);
}

async function scenario(name, flags, pdfs) {
  const dataDir = await mkdtemp(join(tmpdir(), "refserver-bench-hostile-"));
  const server = startServer(dataDir, flags);
  try {
    const url = await server.url;
    const pid = server.child.pid;
    const token = await login(url);
    const idle = await healthSeries(url, token, 100);
    const idleRss = memory(pid).rss;

    let peakSampled = idleRss;
    const sampler = setInterval(() => {
      try {
        peakSampled = Math.max(peakSampled, memory(pid).rss);
      } catch {}
    }, 50);
    const t0 = performance.now();
    const hostile = [];
    for (const [i, { kind, pdf }] of pdfs.entries()) hostile.push({ kind, ...(await upload(url, token, pdf, `hostile-${kind}-${i}`)) });
    const ids = new Set(hostile.map((h) => h.job_id));
    const during = [];
    let normal;
    for (;;) {
      const open = (await jobs(url, token)).filter((j) => ids.has(j.job_id) && j.status === "processing");
      if (open.length === 0) break;
      const r = await timedGet(`${url}/health`, token);
      if (r.status !== 200) throw new Error(`/health answered ${r.status}`);
      during.push(r.ms);
      if (during.length === 5) normal = await upload(url, token, makeSamplePdf(3, 2, "Normal"), "normal");
      await sleep(20);
    }
    const wallS = (performance.now() - t0) / 1000;
    clearInterval(sampler);
    for (;;) {
      const j = (await jobs(url, token)).find((x) => x.job_id === normal?.job_id);
      if (!normal || j.status !== "processing") break;
      await sleep(50);
    }
    const afterJobs = memory(pid);
    const all = await jobs(url, token);
    const outcomes = {};
    let maxText = 0;
    for (const h of hostile) {
      const j = all.find((x) => x.job_id === h.job_id);
      const why = j.status === "failed" ? j.error_message : (j.steps.text.error ?? "no note");
      const key = `${h.kind}: ${j.status} (${why})`;
      outcomes[key] = (outcomes[key] ?? 0) + 1;
      const doc = await timedGet(`${url}/api/v1/document/${h.doc_id}`, token);
      maxText = Math.max(maxText, Buffer.byteLength(doc.body.text ?? ""));
    }
    const normalJob = all.find((x) => x.job_id === normal?.job_id);
    let retired = NaN;
    if (IDLE_WAIT_S > 0) {
      await sleep(IDLE_WAIT_S * 1000);
      retired = memory(pid).rss;
    }
    during.sort((a, b) => a - b);
    return {
      name,
      jobs: hostile.length,
      outcomes,
      maxText,
      idle,
      during,
      normalMs: normal?.ms ?? NaN,
      normalStatus: normalJob?.status ?? "not uploaded",
      wallS,
      rss: { idle: idleRss, peakSampled, hwm: afterJobs.hwm, afterJobs: afterJobs.rss, retired },
    };
  } finally {
    server.child.kill("SIGTERM");
    await server.exited;
    await rm(dataDir, { recursive: true, force: true });
  }
}

const f = (x) => (Number.isFinite(x) ? x.toFixed(1) : "–");
const fi = (x) => (Number.isFinite(x) ? x.toFixed(0) : "–");

function table(rows) {
  const head =
    "| run | hostile jobs | /health idle p50 / p99 | /health while processing: probes, p50 / p99 / max | upload during | RSS idle → peak (VmHWM) → after jobs → thread ended | wall | stored text max |";
  const sep = "|---|---:|---:|---:|---:|---:|---:|---:|";
  const lines = rows.map(
    (r) =>
      `| ${r.name} | ${r.jobs} | ${f(percentile(r.idle, 50))} / ${f(percentile(r.idle, 99))} ms | ${r.during.length}: ${f(percentile(r.during, 50))} / ${f(percentile(r.during, 99))} / ${f(r.during.at(-1))} ms | ${fi(r.normalMs)} ms, ${r.normalStatus} | ${fi(r.rss.idle)} → ${fi(r.rss.hwm)} → ${fi(r.rss.afterJobs)} → ${fi(r.rss.retired)} MiB | ${r.wallS.toFixed(1)} s | ${(r.maxText / MB).toFixed(2)} MiB |`,
  );
  const outcomes = rows.map((r) => `- ${r.name}: ${Object.entries(r.outcomes).map(([k, n]) => `${n} × ${k}`).join("; ")}`);
  return [head, sep, ...lines, "", "Outcomes:", ...outcomes].join("\n");
}

/** Insert `text` right under the "## refserver-lite" heading (the newest server section first). */
async function insertAtTopOfServerPart(text) {
  const current = await readFile(BENCHMARKS, "utf8");
  const header = "\n## refserver-lite\n";
  const at = current.indexOf(header);
  if (at === -1) throw new Error(`no "## refserver-lite" section in ${BENCHMARKS}`);
  const insertAt = at + header.length;
  await writeFile(BENCHMARKS, `${current.slice(0, insertAt)}\n${text}\n${current.slice(insertAt).replace(/^\n/, "")}`);
}

const textBomb = await makeInflatingPdf(300 * MB, "text");
const pathBomb = await makeInflatingPdf(300 * MB, "paths");
console.error(`hostile PDFs: text ${(textBomb.length / 1024).toFixed(0)} KiB, paths ${(pathBomb.length / 1024).toFixed(0)} KiB, each inflating to 300 MiB`);
const rows = [];
const defaults = [];
for (let i = 0; i < ROUNDS; i++) defaults.push({ kind: "text", pdf: textBomb }, { kind: "paths", pdf: pathBomb });
rows.push(await scenario("default limits", [], defaults));
console.error(`done: ${rows.at(-1).name}`);
if (process.env.BENCH_SKIP_LIFTED !== "1") {
  rows.push(
    await scenario("text and decoding caps lifted (1000 MB): only the 60 s / 256 MB thread limits", ["--max-text-mb", "1000", "--pdf-max-decoded-mb", "1000"], [
      { kind: "text", pdf: textBomb },
    ]),
  );
  console.error(`done: ${rows.at(-1).name}`);
}
const out = table(rows);
console.log(out);

if (process.env.BENCH_NO_WRITE !== "1") {
  const date = execSync("date -u", { encoding: "utf8" }).trim();
  const commit = execSync("git rev-parse --short HEAD", { encoding: "utf8", cwd: here }).trim();
  const changed = execSync("git status --porcelain -- src bench", { encoding: "utf8", cwd: join(here, "..") })
    .split("\n")
    .map((l) => l.slice(3).trim())
    .filter(Boolean);
  const dirty = changed.length > 0 ? ` (built with uncommitted changes in ${changed.join(", ")})` : "";
  const machine = `${cpus().length} cores (${cpus()[0]?.model ?? "unknown CPU"}), ${(totalmem() / 1024 ** 3).toFixed(1)} GiB, Node ${process.version}, ${process.platform}`;
  const block = [
    `### Hostile PDF: /health and RSS while it is read (${date})`,
    "",
    "Command: `npm run build -w server && node server/bench/hostile-pdf.mjs`",
    `Machine: ${machine}; commit ${commit}${dirty}`,
    `Load: ${ROUNDS} × (text bomb + drawing bomb) queued at once on a real server process: one page whose content stream (${(textBomb.length / 1024).toFixed(0)} / ${(pathBomb.length / 1024).toFixed(0)} KiB) inflates to 300 MiB of operators. /health probed one at a time (20 ms apart) while any of them was processing; a 3-page PDF uploaded at the 5th probe. RSS from /proc/<pid>/status of the server process (the PDF thread included); "thread ended" is ${IDLE_WAIT_S} s after the jobs, when the idle PDF thread has been ended.`,
    "",
    out,
    "",
  ].join("\n");
  await insertAtTopOfServerPart(block);
  console.error(`written to ${BENCHMARKS}`);
}
