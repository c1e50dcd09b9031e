// throughput: N items × SIZE through the fake Zotero Web API (test/helpers/fake-zotero.ts,
// compiled to bench/out/helpers) and refserver-lite (real process, --no-worker), against the
// ceiling measured in the same run: the same files uploaded to a fresh refserver-lite by a
// bare undici.request + FormData/openAsBlob loop at the same concurrency (bench/lib/ceiling-upload.mjs).
// Also reports the Zotero politeness counters of that run.
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ADMIN, ROOT, machineBusySeconds, cpuSeconds, pollPeakRss, argValue, fmt, machine, makeSandbox, mb, report, rmrf, runImporter, serverLinks, startRefServer, table, tempDir } from "./lib/common.mjs";

const { makeLibrary, FakeZotero } = await import("./out/helpers/fake-zotero.js");

function runCeiling(manifest, url, concurrency, admin) {
  const t0 = performance.now();
  const child = spawn(process.execPath, [join(ROOT, "bench", "lib", "ceiling-upload.mjs"), manifest, url, String(concurrency), admin.user, admin.password], { stdio: ["ignore", "pipe", "pipe"] });
  const poll = pollPeakRss(child.pid, 20);
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  const killer = setTimeout(() => child.kill("SIGKILL"), 600_000);
  return new Promise((resolve, reject) =>
    child.on("close", (code) => {
      clearTimeout(killer);
      const { cpu } = poll.stop();
      if (code !== 0) return reject(new Error(`ceiling exited ${code}: ${err}`));
      resolve({ ...JSON.parse(out.trim().split("\n").pop()), wallMs: performance.now() - t0, cpuS: cpu });
    }),
  );
}

export async function run(args) {
  const items = Number(argValue(args, "--items", 500));
  const size = Number(argValue(args, "--size", 1024 * 1024));
  const concurrencies = String(argValue(args, "--concurrency", "4,8")).split(",").map(Number);
  const repeats = Number(argValue(args, "--repeats", 1));
  const m = machine();
  const work = tempDir("throughput");
  try {
    const tGen = performance.now();
    const lib = makeLibrary({ items, padToBytes: size, seed: 11 });
    const genMs = performance.now() - tGen;
    const pairs = lib.pdfPairs();
    const filesDir = join(work, "files");
    mkdirSync(filesDir, { recursive: true });
    const manifest = pairs.map((p, i) => {
      const path = join(filesDir, `${p.attachment.key}.pdf`);
      writeFileSync(path, p.body);
      return { path, key: p.parent.key, libraryId: String(lib.libraryId), title: String(p.parent.data.title), filename: String(p.attachment.data.filename ?? `f${i}.pdf`) };
    });
    const manifestPath = join(work, "manifest.json");
    writeFileSync(manifestPath, JSON.stringify(manifest));
    const totalBytes = pairs.reduce((s, p) => s + p.body.length, 0);
    console.error(`throughput: ${items} items × ${size} B generated in ${fmt(genMs / 1000, 1)} s`);

    const rows = [];
    const polite = [];
    const cpuRows = [];
    const summary = new Map(); // c -> [{ imp, ceil }]
    for (const c of concurrencies) for (let r = 0; r < repeats; r++) {
      const run = repeats > 1 ? `, run ${r + 1}` : "";
      // Ceiling: fresh server, bare loop.
      const sA = await startRefServer({ dataDir: join(work, `srv-ceiling-${c}-${r}`) });
      let ceiling;
      let ceilServerCpu = NaN;
      let ceilOther = NaN;
      try {
        const before = cpuSeconds(sA.pid);
        const mBefore = machineBusySeconds();
        const benchBefore = process.cpuUsage();
        ceiling = await runCeiling(manifestPath, sA.url, c, ADMIN);
        ceilServerCpu = cpuSeconds(sA.pid) - before;
        const u = process.cpuUsage(benchBefore);
        ceilOther = machineBusySeconds() - mBefore - ceilServerCpu - ceiling.cpuS - (u.user + u.system) / 1e6;
      } finally {
        await sA.stop();
      }
      const ceilOk = ceiling.statuses["200"] ?? 0;

      // Importer: fresh server, fresh fake Zotero, fresh sandbox.
      const sB = await startRefServer({ dataDir: join(work, `srv-importer-${c}-${r}`) });
      const zot = new FakeZotero({ library: lib });
      await zot.start();
      let firstFileAt = null;
      const origPush = zot.log.push.bind(zot.log);
      zot.log.push = (info) => {
        if (firstFileAt === null && info.route === "item/file") firstFileAt = performance.now();
        return origPush(info);
      };
      let res;
      let onServer = 0;
      let impServerCpu = NaN;
      let impOther = NaN;
      let fakeCpu = NaN;
      try {
        const sb = makeSandbox({ zoteroUrl: zot.url, libraryId: lib.libraryId, apiKey: lib.apiKey, refserverUrl: sB.url, importOptions: { batch_size: c } });
        const before = cpuSeconds(sB.pid);
        const benchBefore = process.cpuUsage();
        const mBefore = machineBusySeconds();
        res = await runImporter(sb, ["--quiet"]);
        const u = process.cpuUsage(benchBefore);
        fakeCpu = (u.user + u.system) / 1e6;
        impServerCpu = cpuSeconds(sB.pid) - before;
        impOther = machineBusySeconds() - mBefore - impServerCpu - fakeCpu - res.cpuS;
        onServer = (await serverLinks(sB.url, lib.libraryId)).length;
        rmrf(sb.dir);
      } finally {
        await zot.close();
        await sB.stop();
      }
      if (res.code !== 0) console.error(`importer exit ${res.code}: ${res.stderr.slice(-3000)}`);
      const pipelineMs = firstFileAt !== null ? res.t0 + res.wallMs - firstFileAt : NaN;
      const imp = { items: onServer, wall: res.wallMs / 1000, pipe: pipelineMs / 1000 };
      const ceil = { items: ceilOk, wall: ceiling.wallMs / 1000, loop: ceiling.loopMs / 1000 };
      const ratioWall = imp.items / imp.wall / (ceil.items / ceil.wall);
      const ratioPipe = imp.items / imp.pipe / (ceil.items / ceil.loop);
      if (!summary.has(c)) summary.set(c, []);
      summary.get(c).push({ imp: imp.wall, ceil: ceil.wall, ok: imp.items === items && ceil.items === items, ratio: ratioWall });
      rows.push([
        `importer (batch_size ${c}${run})`,
        `${onServer}/${items} (exit ${res.code})`,
        fmt(imp.wall, 2),
        fmt(imp.items / imp.wall, 1),
        fmt(totalBytes / 2 ** 20 / imp.wall, 1),
        `${fmt(imp.pipe, 2)} s → ${fmt(imp.items / imp.pipe, 1)} items/s`,
        mb(res.peakRss, 0),
        `**${fmt(ratioWall, 2)}** (phase: ${fmt(ratioPipe, 2)})`,
      ]);
      rows.push([
        `ceiling: bare undici loop, ${c} at a time${run}`,
        `${ceilOk}/${items}`,
        fmt(ceil.wall, 2),
        fmt(ceil.items / ceil.wall, 1),
        fmt(totalBytes / 2 ** 20 / ceil.wall, 1),
        `${fmt(ceil.loop, 2)} s → ${fmt(ceil.items / ceil.loop, 1)} items/s`,
        "–",
        "1.00",
      ]);
      const ncpu = Number(m.nproc) || 2;
      console.error(`throughput c=${c}: importer ${fmt(imp.wall, 2)} s, ceiling ${fmt(ceil.wall, 2)} s, other CPU ${fmt(impOther, 1)}/${fmt(ceilOther, 1)} s`);
      cpuRows.push([
        `importer (batch_size ${c}${run})`,
        fmt(res.cpuS, 2),
        fmt(impServerCpu, 2),
        fmt(fakeCpu, 2),
        fmt(res.wallMs / 1000, 2),
        `${fmt(((res.cpuS + impServerCpu + fakeCpu) / (ncpu * imp.wall)) * 100, 0)}%`,
        fmt((res.cpuS / onServer) * 1000, 2),
        fmt(impOther, 2),
      ]);
      cpuRows.push([
        `ceiling (${c} at a time${run})`,
        fmt(ceiling.cpuS, 2),
        fmt(ceilServerCpu, 2),
        "–",
        fmt(ceil.wall, 2),
        `${fmt(((ceiling.cpuS + ceilServerCpu) / (ncpu * ceil.wall)) * 100, 0)}%`,
        fmt((ceiling.cpuS / ceilOk) * 1000, 2),
        fmt(ceilOther, 2),
      ]);
      const listing = zot.listingRequestCount({ includeFaulted: true });
      polite.push([
        `${items} parents, 1 stored PDF each (batch_size ${c}${run})`,
        items,
        listing,
        fmt((listing / items) * 100, 2),
        zot.counters["item/file"],
        zot.counters.storage,
        zot.peakInFlight,
        zot.peakStorageInFlight,
      ]);
    }
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const sumRows = [...summary].map(([c, ps]) => {
      const bestImp = Math.min(...ps.map((p) => p.imp));
      const bestCeil = Math.min(...ps.map((p) => p.ceil));
      return [`batch_size ${c}`, ps.length, ps.map((p) => fmt(p.ratio, 2)).join(", "), fmt(median(ps.map((p) => p.ratio)), 2), `${fmt(bestImp, 2)} / ${fmt(bestCeil, 2)}`, `**${fmt(bestCeil / bestImp, 2)}**`];
    });
    const text = [
      `${items} items × ${size} B (${mb(totalBytes, 0)} MiB) through the fake Zotero Web API (test/helpers/fake-zotero.ts, in the benchmark process, files in memory) and refserver-lite as a real process with \`--no-worker\` (this measures the transfer path; no PDF parsing), both on 127.0.0.1. Fresh server data directory and fresh importer state for every row. "wall" = spawn to exit of the process (importer: config, listing, login, downloads with MD5 + fsync to the cache, uploads, journal fsyncs; ceiling: login + uploads). "transfer phase" = importer: first \`/file\` request to exit; ceiling: the upload loop alone. Ratio = importer items/s ÷ ceiling items/s (target ≥ 0.8), on wall time, and in brackets on the transfer phase.`,
      "",
      table(["run", "on server", "wall s", "items/s", "MiB/s", "transfer phase", "peak RSS MiB", "ratio (target ≥ 0.8)"], rows),
      "",
      "Ratio per pair (each pair = one ceiling run, then one importer run), and best of the runs (the least disturbed by other load on the machine: best importer wall vs best ceiling wall):",
      "",
      table(["concurrency", "pairs", "ratio per pair", "median ratio", "best wall s, importer / ceiling", "best-of ratio (target ≥ 0.8)"], sumRows),
      "",
      `CPU time in the same runs (user + system, from /proc/PID/stat; the fake Zotero runs in the benchmark process; ${m.nproc} cores available):`,
      "",
      table(["run", "client CPU s", "server CPU s", "fake Zotero CPU s", "wall s", "CPU used of nproc × wall (ours)", "client CPU ms per item", "other processes' CPU s meanwhile (not ours)"], cpuRows),
      "",
      "Zotero politeness in the same runs (from the fake's counters; listing = requests to listing routes):",
      "",
      table(["library", "importable", "listing requests", "per 100 importable (target ≤ 3)", "/file requests", "storage downloads", "peak in flight, all (target ≤ 4)", "peak storage in flight"], polite),
    ].join("\n");
    report({ title: "import-from-zotero: throughput against the ceiling", command: `npm run bench -- throughput ${args.join(" ")}`.trim(), m, text });
  } finally {
    rmrf(work);
  }
}
