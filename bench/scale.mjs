// scale: how time and memory grow with the library, 1 000 → 5 000 → 20 000 items (each a
// parent with one stored PDF = 2 Zotero objects), for listing + planning (--dry-run) with
//   - an empty journal,
//   - a journal where every item is done (2 records per item: started, done; no sync record,
//     so the whole library is listed again, as after a killed first run),
//   - a journal where every item failed (started, failed) — the unfinished items of earlier runs.
// Wall time (spawn → exit) and peak RSS (VmHWM) of the importer; lean fake Zotero.
import { randomUUID } from "node:crypto";
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { writeBigPdf } from "./lib/bigpdf.mjs";
import { LiteZotero, makeLiteLibrary, zoteroKey } from "./lib/zotero-lite.mjs";
import { argValue, fmt, itemRecord, machine, makeSandbox, mb, report, rmrf, runImporter, table, tempDir } from "./lib/common.mjs";

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const REFSERVER = "http://127.0.0.1:9"; // never contacted by a dry run; only part of the scope

function writeJournal(path, scope, n, outcome) {
  const run = randomUUID();
  const lines = [JSON.stringify({ t: "run", ts: "2026-01-01T00:00:00.000Z", run, scope, event: "start" })];
  for (let i = 0; i < n; i++) {
    const key = zoteroKey(2 * i);
    const att = zoteroKey(2 * i + 1);
    const version = 100 + 2 * i + 1;
    const title = `Graph Methods ${i + 1}`;
    lines.push(itemRecord({ ts: "2026-01-01T00:00:01.000Z", run, scope, key, att, version, status: "started", title }));
    if (outcome === "done") lines.push(itemRecord({ ts: "2026-01-01T00:00:02.000Z", run, scope, key, att, version, status: "done", title, docId: randomUUID(), via: "uploaded", bytes: 150_000 }));
    else lines.push(JSON.stringify({ t: "item", ts: "2026-01-01T00:00:02.000Z", run, scope, key, att, version, status: "failed", title, code: "REFSERVER_LOCKED", error: "RefServer answered 500 database is locked (8 retries)", permanent: false }));
  }
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, lines.join("\n") + "\n", { mode: 0o600 });
}

export async function run(args) {
  const sizes = String(argValue(args, "--sizes", "1000,5000,20000")).split(",").map(Number);
  const repeats = Number(argValue(args, "--repeats", 3));
  const m = machine();
  const work = tempDir("scale");
  const rows = [];
  const perItem = new Map();
  try {
    const file = await writeBigPdf(join(work, "paper.pdf"), 150_000, "Scale paper");
    for (const journal of ["empty", "done", "failed"]) {
      for (const n of sizes) {
        const lib = makeLiteLibrary({ items: n, file: () => file });
        const zot = new LiteZotero(lib);
        await zot.start();
        const runs = [];
        let listing = 0;
        let summary = "";
        try {
          for (let r = 0; r < repeats; r++) {
            const sb = makeSandbox({ zoteroUrl: zot.url, libraryId: lib.libraryId, apiKey: lib.apiKey, refserverUrl: REFSERVER });
            if (journal !== "empty") writeJournal(sb.checkpoint, `${REFSERVER}|user:${lib.libraryId}`, n, journal);
            const before = zot.listingRequests;
            const res = await runImporter(sb, ["--dry-run"], { timeoutMs: 900_000 });
            listing = zot.listingRequests - before;
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
      `Dry runs (\`--dry-run\`: listing + planning + the preview table; no server contacted) against the lean fake Zotero (bench/lib/zotero-lite.mjs), every item a parent with one stored PDF (2 Zotero objects, 100 per page). Time = spawn to exit of the importer (includes Node start-up), median of ${repeats} runs; peak RSS = VmHWM, median. Journals are synthetic, in the real format, for the same scope; no sync record, so the whole library is listed each time.`,
      "",
      table(["library / journal", "exit", "listing requests", "wall s (median)", "all runs s", "µs per item", "peak RSS MiB (median)", "dry-run verdict"], rows),
      "",
      `Growth (marginal cost between sizes; linear = the same slope at both ends, i.e. "high ÷ low" ≈ 1):`,
      "",
      table(["journal", `µs per item ${lo}→${hi}`, `slope ${lo}→${sizes[1]} µs/item`, `slope ${sizes[1]}→${hi} µs/item`, "high ÷ low", `RSS KiB per extra item ${lo}→${hi}`], growth),
    ].join("\n");
    report({ title: "import-from-zotero: scale, 1 000 → 20 000 items (dry run)", command: `npm run bench -- scale ${args.join(" ")}`.trim(), m, text });
  } finally {
    rmrf(work);
  }
}
