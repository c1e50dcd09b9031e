#!/usr/bin/env node
// refserver-lite on SQLite (one process) vs PostgreSQL (one process, two processes), in one run:
// uploads/s and latency at 64 concurrent uploads while the workers are busy with a backlog.
// Run: npm run bench:server:pg (PostgreSQL at 127.0.0.1:5432, trust auth, user postgres; a fresh
// database per configuration, dropped after). The raw run is written as JSON to
// server/bench/results/pg-load-<timestamp>.json (BENCH_NO_WRITE=1: print only).
// Options (env): BENCH_UPLOADS (256), BENCH_CONCURRENCY (64), BENCH_BACKLOG (8),
// BENCH_BACKLOG_PAGES (60), BENCH_PG_URL (postgres://postgres@127.0.0.1:5432/postgres).
import { spawn, execSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { makeSamplePdf } from "../../bench/out/fixtures/pdf.js";
import { ADMIN, login, percentile, stop, upload } from "./load-client.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const BIN = join(here, "..", "bin", "refserver-lite.js");
const RESULTS = join(here, "results");
const UPLOADS = Number(process.env.BENCH_UPLOADS ?? 256);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 64);
const BACKLOG = Number(process.env.BENCH_BACKLOG ?? 8);
const BACKLOG_PAGES = Number(process.env.BENCH_BACKLOG_PAGES ?? 60);
const PG_URL = process.env.BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

function startServer(args) {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("REFSERVER_")));
  const child = spawn(process.execPath, [BIN, "--host", "127.0.0.1", "--port", "0", "--log-level", "silent", ...args], { env: { ...clean, ...ADMIN } });
  let out = "";
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  const exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  const url = new Promise((resolve, reject) => {
    child.stdout.on("data", (d) => {
      out += d;
      const m = /^refserver-lite listening on (http:\/\/127\.0\.0\.1:\d+)$/m.exec(out);
      if (m) resolve(m[1]);
    });
    exited.then((code) => reject(new Error(`server exited ${code}: ${err}`)));
  });
  return { child, url, exited };
}

async function withDatabase(fn) {
  const name = `refserver_bench_${process.pid}_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const u = new URL(PG_URL);
  u.pathname = `/${name}`;
  try {
    return await fn(u.toString());
  } finally {
    const a = new pg.Client({ connectionString: PG_URL });
    await a.connect();
    await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await a.end();
  }
}

async function runConfig(name, processes, databaseUrl) {
  const dataDir = await mkdtemp(join(tmpdir(), "refserver-bench-"));
  const db = databaseUrl ? ["--database", databaseUrl] : [];
  try {
    // 1. A backlog queued with the workers off, so every worker is busy from its first second.
    const seed = startServer(["--data", dataDir, ...db, "--no-worker"]);
    const seedUrl = await seed.url;
    const token = await login(seedUrl);
    const big = makeSamplePdf(BACKLOG_PAGES, 4, "Backlog");
    for (let i = 0; i < BACKLOG; i++) {
      const r = await upload(seedUrl, token, big, i, "BK");
      if (r.status !== 200) throw new Error(`backlog upload answered ${r.status}`);
    }
    await stop(seed);

    // 2. The server processes with their workers; the load spread over them round-robin, as a
    //    load balancer would.
    const servers = Array.from({ length: processes }, () => startServer(["--data", dataDir, ...db]));
    const urls = await Promise.all(servers.map((s) => s.url));
    const pdf = makeSamplePdf(3, 3, "Load");
    const results = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < UPLOADS) {
          const i = next++;
          results.push(await upload(urls[i % urls.length], token, pdf, i, "LD"));
        }
      }),
    );
    const wallS = (performance.now() - t0) / 1000;
    await Promise.all(servers.map(stop));
    const ok = results.filter((r) => r.status === 200).length;
    const lat = results.map((r) => r.ms).sort((a, b) => a - b);
    const statuses = {};
    for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    return { name, processes, uploads: UPLOADS, concurrency: CONCURRENCY, ok, statuses, wallS, uploadsPerS: ok / wallS, p50Ms: percentile(lat, 50), p99Ms: percentile(lat, 99) };
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

const loadBefore = loadavg();
const rows = [];
rows.push(await runConfig("SQLite, 1 process", 1, undefined));
console.error(`done: ${rows.at(-1).name}`);
rows.push(await withDatabase((url) => runConfig("PostgreSQL, 1 process", 1, url)));
console.error(`done: ${rows.at(-1).name}`);
rows.push(await withDatabase((url) => runConfig("PostgreSQL, 2 processes", 2, url)));

const head = "| configuration | uploads | concurrent | 200 | uploads/s | p50 | p99 | wall | answers |";
const sep = "|---|---:|---:|---:|---:|---:|---:|---:|---|";
const lines = rows.map((r) => `| ${r.name} | ${r.uploads} | ${r.concurrency} | ${r.ok} | ${r.uploadsPerS.toFixed(1)} | ${r.p50Ms.toFixed(0)} ms | ${r.p99Ms.toFixed(0)} ms | ${r.wallS.toFixed(1)} s | ${Object.entries(r.statuses).map(([s, n]) => `${n}x${s}`).join(", ")} |`);
console.log([head, sep, ...lines].join("\n"));

if (process.env.BENCH_NO_WRITE !== "1") {
  let commit = "unknown";
  try {
    commit = execSync("git rev-parse --short HEAD", { encoding: "utf8" }).trim();
  } catch {
    // not a git checkout
  }
  const pgVersion = await (async () => {
    const c = new pg.Client({ connectionString: PG_URL });
    await c.connect();
    const v = (await c.query("SHOW server_version")).rows[0].server_version;
    await c.end();
    return v;
  })();
  const when = new Date().toISOString();
  const raw = {
    benchmark: "pg-load",
    command: "npm run bench:server:pg",
    date: when,
    commit,
    machine: { cores: cpus().length, cpu: cpus()[0]?.model ?? "unknown", node: process.version, platform: process.platform, postgres: pgVersion },
    // The machine's 1/5/15-minute load averages before and after the run (other work on it skews the figures).
    loadAverage: { before: loadBefore, after: loadavg() },
    load: { uploads: UPLOADS, concurrency: CONCURRENCY, pdfPages: 3, backlog: BACKLOG, backlogPages: BACKLOG_PAGES },
    rows,
  };
  await mkdir(RESULTS, { recursive: true });
  const file = join(RESULTS, `pg-load-${when.replace(/[:.]/g, "-")}.json`);
  await writeFile(file, JSON.stringify(raw, null, 2) + "\n");
  console.error(`wrote ${file}`);
}
