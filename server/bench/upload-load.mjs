#!/usr/bin/env node
// Concurrent upload load against refserver-lite with the worker busy, compared with a "before"
// configuration: bench/before-server.mjs, a small stand-in that models a rollback journal,
// autocommit statements and a worker holding one long transaction across documents, on the
// same schema and data directory. Run: npm run bench:server
// Options (env): BENCH_UPLOADS (32), BENCH_CONCURRENCY (8), BENCH_BACKLOG (8),
// BENCH_BACKLOG_PAGES (60), BENCH_NO_WRITE=1 to skip appending to BENCHMARKS.md.
import { spawn, execSync } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { makeSamplePdf } from "../../bench/out/fixtures/pdf.js";
import { ADMIN, login, percentile, stop, upload } from "./load-client.mjs";

const here = fileURLToPath(new URL(".", import.meta.url));
const BIN = join(here, "..", "bin", "refserver-lite.js");
const BEFORE = join(here, "before-server.mjs");
const BENCHMARKS = join(here, "..", "..", "BENCHMARKS.md");
const UPLOADS = Number(process.env.BENCH_UPLOADS ?? 32);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 8);
const BACKLOG = Number(process.env.BENCH_BACKLOG ?? 8);
const BACKLOG_PAGES = Number(process.env.BENCH_BACKLOG_PAGES ?? 60);

function startServer(dataDir, extra, before = false) {
  const env = { ...process.env, ...ADMIN };
  const args = before ? [BEFORE, "--data", dataDir, "--port", "0", ...extra] : [BIN, "--data", dataDir, "--host", "127.0.0.1", "--port", "0", "--log-level", "silent", ...extra];
  const child = spawn(process.execPath, args, { env });
  let out = "";
  const url = new Promise((resolve, reject) => {
    child.stdout.on("data", (d) => {
      out += d;
      const m = /^(?:refserver-lite|before-server) listening on (http:\/\/127\.0\.0\.1:\d+)$/m.exec(out);
      if (m) resolve(m[1]);
    });
    child.on("exit", (code) => reject(new Error(`server exited ${code}`)));
  });
  const exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, url, exited };
}

async function runConfig(name, before) {
  const dataDir = await mkdtemp(join(tmpdir(), "refserver-bench-"));
  try {
    // 1. Queue a backlog with refserver-lite's worker off, so the worker is busy from its first second.
    const seed = startServer(dataDir, ["--no-worker"]);
    const seedUrl = await seed.url;
    const seedToken = await login(seedUrl);
    const big = makeSamplePdf(BACKLOG_PAGES, 4, "Backlog");
    for (let i = 0; i < BACKLOG; i++) {
      const r = await upload(seedUrl, seedToken, big, i, "BK");
      if (r.status !== 200) throw new Error(`backlog upload answered ${r.status}`);
    }
    await stop(seed);

    // 2. Start with the worker, fire the load at once.
    const server = startServer(dataDir, [], before);
    const url = await server.url;
    // The token from the seeding run stays valid (the secret lives in the data dir); the
    // before-server checks no token.
    const token = seedToken;
    const pdf = makeSamplePdf(3, 3, "Load");
    const results = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < UPLOADS) {
          const i = next++;
          results.push(await upload(url, token, pdf, i, "LD"));
        }
      }),
    );
    const wallS = (performance.now() - t0) / 1000;
    await stop(server);

    const ok = results.filter((r) => r.status === 200).length;
    const lat = results.map((r) => r.ms).sort((a, b) => a - b);
    const statuses = {};
    for (const r of results) statuses[r.status] = (statuses[r.status] ?? 0) + 1;
    return {
      name,
      uploads: UPLOADS,
      ok,
      failed: UPLOADS - ok,
      locked: results.filter((r) => r.locked).length,
      statuses,
      wallS,
      rate: ok / wallS,
      p50: percentile(lat, 50),
      p99: percentile(lat, 99),
    };
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

function table(rows) {
  const head = "| configuration | uploads | 200 | failed | 'database is locked' | successful uploads/s | p50 latency | p99 latency | wall time | answers |";
  const sep = "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|";
  const lines = rows.map(
    (r) =>
      `| ${r.name} | ${r.uploads} | ${r.ok} | ${r.failed} | ${r.locked} | ${r.rate.toFixed(2)} | ${r.p50.toFixed(0)} ms | ${r.p99.toFixed(0)} ms | ${r.wallS.toFixed(1)} s | ${Object.entries(r.statuses).map(([s, n]) => `${n}x${s}`).join(", ")} |`,
  );
  return [head, sep, ...lines].join("\n");
}

async function appendToBenchmarks(text) {
  let current = "";
  try {
    current = await readFile(BENCHMARKS, "utf8");
  } catch {
    current = "# Benchmarks\n";
  }
  const header = "## refserver-lite";
  const at = current.indexOf(`\n${header}\n`);
  if (at === -1) {
    const sep = current.endsWith("\n") ? "\n" : "\n\n";
    await writeFile(BENCHMARKS, `${current}${sep}${header}\n\n${text}\n`);
    return;
  }
  const after = at + header.length + 2;
  const nextSection = current.indexOf("\n## ", after);
  const insertAt = nextSection === -1 ? current.length : nextSection + 1;
  const before = current.slice(0, insertAt);
  await writeFile(BENCHMARKS, `${before}${before.endsWith("\n\n") ? "" : "\n"}${text}\n${nextSection === -1 ? "" : "\n"}${current.slice(insertAt)}`);
}

const rows = [];
rows.push(await runConfig("refserver-lite (WAL, immediate txns)", false));
console.error(`done: ${rows[0].name}`);
rows.push(await runConfig("before: rollback journal, long worker transaction (bench/before-server.mjs)", true));
const out = table(rows);
console.log(out);

if (process.env.BENCH_NO_WRITE !== "1") {
  const date = execSync("date", { encoding: "utf8" }).trim();
  const machine = `${cpus().length} cores (${cpus()[0]?.model ?? "unknown CPU"}), Node ${process.version}, ${process.platform}`;
  const block = [
    `### Upload load with the worker busy (${date})`,
    "",
    "Command: `npm run bench:server` (builds, then `node server/bench/upload-load.mjs`)",
    `Machine: ${machine}`,
    `Load: ${UPLOADS} uploads of a 3-page PDF, ${CONCURRENCY} at a time, over HTTP from a separate process, while the worker works through a backlog of ${BACKLOG} PDFs of ${BACKLOG_PAGES} pages queued beforehand. "successful uploads/s" = 200 answers / wall time of the load.`,
    "",
    out,
    "",
  ].join("\n");
  await appendToBenchmarks(block);
  console.error(`appended to ${BENCHMARKS}`);
}
