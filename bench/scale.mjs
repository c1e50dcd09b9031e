// scale: how time and memory grow with the library, 1 000 → 5 000 → 20 000 items (each a
// parent with one stored PDF = 2 Zotero objects), for listing + planning (--dry-run) with
//   - an empty journal,
//   - a journal where every item is done (2 records per item: started, done; no sync record,
//     so the whole library is listed again, as after a killed first run),
//   - a journal where every item failed (started, failed) — the unfinished items of earlier runs.
// Wall time (spawn → exit) and peak RSS (VmHWM) of the importer; lean fake Zotero.
import { randomUUID } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { FakeZotero, diskLibrary, listingRequests, writePdfFile } from "./lib/library.mjs";
import { LIVE_HEAP, argValue, fmt, itemRecord, machine, makeSandbox, mb, report, rmrf, runImporter, serverLinks, startRefServer, table, tempDir } from "./lib/common.mjs";

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function writeJournal(path, scope, parents, outcome) {
  const run = randomUUID();
  const lines = [JSON.stringify({ t: "run", ts: "2026-01-01T00:00:00.000Z", run, scope, event: "start" })];
  for (const { key, att, version, title } of parents) {
    lines.push(itemRecord({ ts: "2026-01-01T00:00:01.000Z", run, scope, key, att, version, status: "started", title }));
    if (outcome === "done") lines.push(itemRecord({ ts: "2026-01-01T00:00:02.000Z", run, scope, key, att, version, status: "done", title, docId: randomUUID(), via: "uploaded", bytes: 150_000 }));
    else lines.push(JSON.stringify({ t: "item", ts: "2026-01-01T00:00:02.000Z", run, scope, key, att, version, status: "failed", title, code: "REFSERVER_LOCKED", error: "RefServer answered 500 database is locked (8 retries)", permanent: false }));
  }
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, lines.join("\n") + "\n", { mode: 0o600 });
}

/**
 * Full imports of n items with small PDFs (one file on disk served for every item) into
 * refserver-lite (--no-worker): wall time, importer CPU and peak RSS per item, per size.
 * --live-heap: each size imported a second time, into a fresh server, with a full GC once a
 * second and the heap that survives it (bench/lib/live-heap.mjs): what the importer holds per
 * item, apart from the garbage V8 lets pile up between collections (which peak RSS counts).
 */
async function fullImports(work, sizes, pdfBytes, liveHeap) {
  const file = await writePdfFile(join(work, "small.pdf"), pdfBytes, "Scale import paper");
  const out = [];
  for (const n of sizes) {
    const { lib } = diskLibrary({ items: n, file: () => file, seed: 7 });
    const zot = new FakeZotero({ library: lib });
    await zot.start();
    try {
      const { res, onServer } = await importInto(join(work, `srv-import-${n}`), zot.url, lib, `scale import ${n}`);
      out.push({ items: n, onServer, exit: res.code, wallS: res.wallMs / 1000, cpuS: res.cpuS, peakRssMiB: res.peakRss / 2 ** 20, listing: listingRequests(zot), liveHeapMiB: null });
      console.error(`scale import ${n}: ${onServer}/${n} in ${fmt(res.wallMs / 1000, 1)} s, CPU ${fmt(res.cpuS, 1)} s, peak RSS ${mb(res.peakRss, 0)} MiB`);
      if (liveHeap) {
        const heapFile = join(work, `heap-${n}.json`);
        await importInto(join(work, `srv-heap-${n}`), zot.url, lib, `scale import ${n} (live heap)`, { nodeArgs: ["--expose-gc", "--import", LIVE_HEAP], env: { BENCH_HEAP_FILE: heapFile } });
        out.at(-1).liveHeapMiB = JSON.parse(readFileSync(heapFile, "utf8")).maxLiveHeapBytes / 2 ** 20;
        console.error(`scale import ${n}: live heap ${fmt(out.at(-1).liveHeapMiB, 1)} MiB`);
      }
    } finally {
      await zot.close();
    }
  }
  return out;
}

/**
 * One import (batch_size 8) of the fake's library into a fresh refserver-lite in `dataDir`:
 * the importer's result and the papers on the server. `options` go to runImporter.
 */
async function importInto(dataDir, zoteroUrl, lib, label, options = {}) {
  const srv = await startRefServer({ dataDir });
  try {
    const sb = makeSandbox({ zoteroUrl, libraryId: lib.libraryId, apiKey: lib.apiKey, refserverUrl: srv.url, importOptions: { batch_size: 8 } });
    const res = await runImporter(sb, ["--quiet"], { timeoutMs: 1_800_000, ...options });
    if (res.code !== 0) console.error(`${label}: exit ${res.code}: ${res.stderr.slice(-2000)}`);
    const onServer = (await serverLinks(srv.url, lib.libraryId)).length;
    rmrf(sb.dir);
    return { res, onServer };
  } finally {
    await srv.stop();
  }
}

export async function run(args) {
  const liveHeap = args.includes("--live-heap");
  const importSizes = String(argValue(args, "--import-sizes", "500,2000,20000")).split(",").filter(Boolean).map(Number);
  const importBytes = Number(argValue(args, "--import-pdf-bytes", 20_000));
  if (args.includes("--import-only")) {
    const m = machine();
    const work = tempDir("scale");
    try {
      const imports = await fullImports(work, importSizes, importBytes, liveHeap);
      report({ name: "scale-import", title: "import-from-zotero: full imports 500 → 20 000 items", command: `npm run bench -- scale ${args.join(" ")}`.trim(), m, text: importTable(imports, importBytes), data: { imports, pdfBytes: importBytes } });
    } finally {
      rmrf(work);
    }
    return;
  }
  const sizes = String(argValue(args, "--sizes", "1000,5000,20000")).split(",").map(Number);
  const repeats = Number(argValue(args, "--repeats", 3));
  const m = machine();
  const work = tempDir("scale");
  const rows = [];
  const perItem = new Map();
  try {
    const file = await writePdfFile(join(work, "paper.pdf"), 150_000, "Scale paper");
    // A dry run logs in and asks the server which papers it holds: an empty refserver-lite.
    const srv = await startRefServer({ dataDir: join(work, "srv-dry") });
    const REFSERVER = srv.url;
    try {
    for (const journal of ["empty", "done", "failed"]) {
      for (const n of sizes) {
        const { lib, parents } = diskLibrary({ items: n, file: () => file });
        const zot = new FakeZotero({ library: lib });
        await zot.start();
        const runs = [];
        let listing = 0;
        let summary = "";
        try {
          for (let r = 0; r < repeats; r++) {
            const sb = makeSandbox({ zoteroUrl: zot.url, libraryId: lib.libraryId, apiKey: lib.apiKey, refserverUrl: REFSERVER });
            if (journal !== "empty") writeJournal(sb.checkpoint, `${REFSERVER}|user:${lib.libraryId}`, parents, journal);
            const before = listingRequests(zot);
            const res = await runImporter(sb, ["--dry-run"], { timeoutMs: 900_000 });
            listing = listingRequests(zot) - before;
            if (res.code !== 0) console.error(`scale ${n}/${journal}: exit ${res.code}: ${res.stderr.slice(-2000)}`);
            summary = /Dry run: [^\n]*/.exec(res.stdout)?.[0] ?? "";
            runs.push(res);
            rmrf(sb.dir);
          }
        } finally {
          await zot.close();
        }
        const s = median(runs.map((x) => x.wallMs)) / 1000;
        const rss = median(runs.map((x) => x.peakRss));
        perItem.set(`${journal}:${n}`, { s, rss });
        rows.push([
          `${n.toLocaleString("en")} items, journal ${journal === "empty" ? "empty" : `${(2 * n).toLocaleString("en")} records (all ${journal})`}`,
          `exit ${[...new Set(runs.map((x) => x.code))].join(",")}`,
          listing,
          `**${fmt(s, 2)}**`,
          runs.map((x) => fmt(x.wallMs / 1000, 2)).join(", "),
          fmt((s / n) * 1e6, 0),
          mb(rss, 0),
          summary.replace(/^Dry run: /, "").replace(/\. Nothing.*$/, ""),
        ]);
      }
    }
    } finally {
      await srv.stop();
    }
    // Growth from the smallest to the largest size: time and RSS above the smallest run.
    const lo = sizes[0];
    const hi = sizes[sizes.length - 1];
    const growth = ["empty", "done", "failed"].map((j) => {
      const a = perItem.get(`${j}:${lo}`);
      const b = perItem.get(`${j}:${hi}`);
      const dt = b.s - a.s;
      const dn = hi - lo;
      const mid = sizes.length > 2 ? perItem.get(`${j}:${sizes[1]}`) : null;
      const slopeLow = mid ? ((mid.s - a.s) / (sizes[1] - lo)) * 1e6 : NaN; // µs per item
      const slopeHigh = mid ? ((b.s - mid.s) / (hi - sizes[1])) * 1e6 : NaN;
      return [
        j,
        fmt((dt / dn) * 1e6, 0),
        fmt(slopeLow, 0),
        fmt(slopeHigh, 0),
        fmt(slopeHigh / slopeLow, 2),
        fmt(((b.rss - a.rss) / dn) / 1024, 1),
      ];
    });
    const text = [
      `Dry runs (\`--dry-run\`: listing + planning + the preview table; no server contacted) against the fake Zotero (fixtures/fake-zotero.ts), every item a parent with one stored PDF (2 Zotero objects, 100 per page). Time = spawn to exit of the importer (includes Node start-up), median of ${repeats} runs; peak RSS = VmHWM, median. Journals are synthetic, in the real format, for the same scope; no sync record, so the whole library is listed each time.`,
      "",
      table(["library / journal", "exit", "listing requests", "wall s (median)", "all runs s", "µs per item", "peak RSS MiB (median)", "dry-run verdict"], rows),
      "",
      `Growth (marginal cost between sizes; linear = the same slope at both ends, i.e. "high ÷ low" ≈ 1):`,
      "",
      table(["journal", `µs per item ${lo}→${hi}`, `slope ${lo}→${sizes[1]} µs/item`, `slope ${sizes[1]}→${hi} µs/item`, "high ÷ low", `RSS KiB per extra item ${lo}→${hi}`], growth),
    ].join("\n");
    const imports = importSizes.length > 0 ? await fullImports(work, importSizes, importBytes, liveHeap) : [];
    const all = imports.length > 0 ? `${text}\n\n${importTable(imports, importBytes)}` : text;
    report({ name: "scale", title: "import-from-zotero: scale, 1 000 → 20 000 items (dry run and full import)", command: `npm run bench -- scale ${args.join(" ")}`.trim(), m, text: all, data: { dryRuns: rows, growth, imports, pdfBytes: importBytes } });
  } finally {
    rmrf(work);
  }
}

function importTable(imports, pdfBytes) {
  const withLive = imports.some((x) => x.liveHeapMiB !== null);
  const rows = imports.map((x, i) => {
    const prev = imports[i - 1];
    const dRss = prev ? ((x.peakRssMiB - prev.peakRssMiB) * 1024) / (x.items - prev.items) : NaN;
    const dLive = prev && x.liveHeapMiB !== null && prev.liveHeapMiB !== null ? ((x.liveHeapMiB - prev.liveHeapMiB) * 1024) / (x.items - prev.items) : NaN;
    return [
      x.items.toLocaleString("en"),
      `${x.onServer}/${x.items} (exit ${x.exit})`,
      fmt(x.wallS, 1),
      fmt((x.wallS / x.items) * 1000, 2),
      fmt((x.cpuS / x.items) * 1000, 2),
      fmt(x.peakRssMiB, 0),
      prev ? fmt(dRss, 2) : "–",
      ...(withLive ? [x.liveHeapMiB === null ? "–" : fmt(x.liveHeapMiB, 1), Number.isNaN(dLive) ? "–" : fmt(dLive, 2)] : []),
      x.listing,
    ];
  });
  return [
    `Full imports, ${pdfBytes} B PDFs (one file on disk served for every item), batch_size 8, refserver-lite \`--no-worker\`:`,
    "",
    table(["items", "on server", "wall s", "wall ms per item", "importer CPU ms per item", "peak RSS MiB", "RSS KiB per extra item", ...(withLive ? ["live heap MiB (max after a full GC, separate run)", "live KiB per extra item"] : []), "listing requests"], rows),
  ].join("\n");
}
