// floor: what the importer must spend per paper beyond the bare download → upload loop (b) of the
// throughput benchmark, for what it keeps: the parts measured alone on this machine.
//   md5    the MD5 of 1 MiB fed in 64 KiB chunks (as a download arrives): the verification
//          against Zotero's md5, which (b) does not do;
//   cache  1 MiB streamed to a cache file in 64 KiB chunks, renamed into place, opened and read
//          back in one 1 MiB read for the upload, then removed — 4 papers at a time, the
//          thread pool's CPU included: the copy an upload retry and the next run reuse;
//   start  the importer's whole run with one small paper to import (config, checkpoint, listing,
//          login, the paper, report): the fixed cost of a run, spread over the run's papers.
// CPU = process.cpuUsage() (user + system, all threads) of a child process per part.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { FakeZotero, diskLibrary, writePdfFile } from "./lib/library.mjs";
import { argValue, fmt, machine, makeSandbox, report, rmrf, runImporter, startRefServer, table, tempDir } from "./lib/common.mjs";

const PART = {
  md5: `
    const { createHash, randomBytes } = require("node:crypto");
    const chunks = Array.from({ length: 16 }, () => randomBytes(64 * 1024));
    const n = Number(process.argv[1]);
    const t = process.cpuUsage();
    for (let i = 0; i < n; i++) { const h = createHash("md5"); for (const c of chunks) h.update(c); h.digest("hex"); }
    const u = process.cpuUsage(t);
    console.log(JSON.stringify({ msPerMiB: (u.user + u.system) / 1000 / n }));`,
  cache: `
    const { createWriteStream } = require("node:fs");
    const { randomBytes } = require("node:crypto");
    const { open, rename, unlink } = require("node:fs/promises");
    const { Readable } = require("node:stream");
    const { pipeline } = require("node:stream/promises");
    const [n, dir] = [Number(process.argv[1]), process.argv[2]];
    const chunks = Array.from({ length: 16 }, () => randomBytes(64 * 1024));
    async function paper(i) {
      const p = dir + "/" + i + ".pdf";
      await pipeline(Readable.from(chunks), createWriteStream(p + ".partial", { mode: 0o600, highWaterMark: 1 << 20 }));
      await rename(p + ".partial", p);
      const h = await open(p, "r");
      await h.stat();
      for await (const c of h.createReadStream({ start: 0, highWaterMark: 1 << 20 })) void c;
      await unlink(p);
    }
    (async () => {
      await paper(-1);
      const t = process.cpuUsage();
      for (let i = 0; i < n; i += 4) await Promise.all([0, 1, 2, 3].map((j) => paper(i + j)));
      const u = process.cpuUsage(t);
      console.log(JSON.stringify({ msPerMiB: (u.user + u.system) / 1000 / n }));
    })();`,
};

function part(name, n, dir) {
  const r = spawnSync(process.execPath, ["-e", PART[name], String(n), dir ?? ""], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`floor ${name}: ${r.stderr.slice(-1000)}`);
  return JSON.parse(r.stdout).msPerMiB;
}

async function startCost(work) {
  const file = await writePdfFile(join(work, "one.pdf"), 150_000, "Floor paper");
  const { lib } = diskLibrary({ items: 1, file: () => file, seed: 3 });
  const zot = new FakeZotero({ library: lib });
  await zot.start();
  const srv = await startRefServer({ dataDir: join(work, `srv-${Date.now()}`) });
  try {
    const sb = makeSandbox({ zoteroUrl: zot.url, libraryId: lib.libraryId, apiKey: lib.apiKey, refserverUrl: srv.url });
    const res = await runImporter(sb, ["--quiet"]);
    if (res.code !== 0) throw new Error(`floor start: importer exit ${res.code}: ${res.stderr.slice(-1000)}`);
    rmrf(sb.dir);
    return res.cpuS * 1000;
  } finally {
    await zot.close();
    await srv.stop();
  }
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function run(args) {
  const repeats = Number(argValue(args, "--repeats", 3));
  const papers = Number(argValue(args, "--papers", 500));
  const m = machine();
  const work = tempDir("floor");
  try {
    const runs = { md5: [], cache: [], start: [] };
    for (let r = 0; r < repeats; r++) {
      runs.md5.push(part("md5", 1000));
      runs.cache.push(part("cache", 500, work));
      runs.start.push(await startCost(work));
    }
    const md5 = median(runs.md5);
    const cache = median(runs.cache);
    const start = median(runs.start);
    const rows = [
      ["MD5 of the download (1 MiB)", fmt(md5, 2), runs.md5.map((x) => fmt(x, 2)).join(", ")],
      ["cache file: write, rename, read back, remove (1 MiB)", fmt(cache, 2), runs.cache.map((x) => fmt(x, 2)).join(", ")],
      [`a run's fixed cost (one small paper), ÷ ${papers} papers`, fmt(start / papers, 2), runs.start.map((x) => `${fmt(x, 0)} ms`).join(", ")],
      ["**sum**: the least the importer spends per 1 MiB paper beyond (b)", `**${fmt(md5 + cache + start / papers, 2)}**`, ""],
    ];
    const text = [
      `CPU per paper that the importer spends and the bare loop (b) does not, each part measured alone (${repeats} repeats, median; CPU = process.cpuUsage() of a child process, user + system, all threads). The target "≤ 1.3× (b)" leaves 0.3 × (b) for all of it.`,
      "",
      table(["part", "CPU ms per paper, median", "all repeats"], rows),
    ].join("\n");
    report({ name: "floor", title: "import-from-zotero: CPU floor per paper beyond a bare loop", command: `npm run bench -- floor ${args.join(" ")}`.trim(), m, text, data: { runs, papers } });
  } finally {
    rmrf(work);
  }
}
