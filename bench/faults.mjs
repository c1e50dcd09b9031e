// faults: throughput and success with 30% "database is locked" answers, fixed vs adaptive
// pacing (import_options.adaptive_pacing false/true), batch_size 8 as the ceiling.
// The fault proxy (fixtures/fault-proxy.ts) in front of refserver-lite (real process,
// --no-worker) answers 500 {"detail":"Database error: database is locked"} to 30% of uploads
// after reading the whole body, as the real server does; the rest reach the server.
// The importer keeps its real retry defaults (8 retries, full jitter 1 s · 2^n, max 60 s).
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { FakeZotero, FaultProxy, diskLibrary, makeRng, writePdfFile } from "./lib/library.mjs";
import { argValue, fmt, machine, makeSandbox, report, rmrf, runImporter, serverLinks, startRefServer, table, tempDir } from "./lib/common.mjs";

/** Time-weighted mean of uploads in flight between the first and the last change. */
function meanInFlight(samples) {
  if (samples.length < 2) return NaN;
  let area = 0;
  for (let i = 1; i < samples.length; i++) area += samples[i - 1][1] * (samples[i][0] - samples[i - 1][0]);
  return area / (samples[samples.length - 1][0] - samples[0][0]);
}

export async function run(args) {
  const items = Number(argValue(args, "--items", 200));
  const size = Number(argValue(args, "--size", 1024 * 1024));
  const share = Number(argValue(args, "--lock-share", 0.3));
  const batch = Number(argValue(args, "--batch-size", 8));
  const repeats = Number(argValue(args, "--repeats", 3));
  const m = machine();
  const work = tempDir("faults");
  const rows = [];
  const notes = [];
  try {
    const file = await writePdfFile(join(work, "paper.pdf"), size, "Fault paper");
    // "load": contention that grows with concurrent uploads — the given share at 4 uploads in
    // flight, proportionally more or less (share × n / 4, at most 0.9): 7.5% alone, 60% at 8.
    const byLoad = (n) => Math.min(0.9, (share * n) / 4);
    const cases = [
      { lock: 0, adaptive: false },
      { lock: 0, adaptive: true },
      { lock: share, adaptive: false },
      { lock: share, adaptive: true },
      { lock: byLoad, label: `${Math.round(share * 100)}% at 4 in flight, growing with load`, adaptive: false },
      { lock: byLoad, label: `${Math.round(share * 100)}% at 4 in flight, growing with load`, adaptive: true },
    ];
    const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    for (const cs of cases) {
      const runs = [];
      for (let r = 0; r < repeats; r++) {
        const { lib } = diskLibrary({ items, file: () => file });
        const zot = new FakeZotero({ library: lib });
        await zot.start();
        const srv = await startRefServer({ dataDir: join(work, `srv-${rows.length}-${r}`) });
        // A constant share: the proxy's own seeded draws. Growing with load: a seeded draw
        // against the share at the uploads in flight (this one included).
        const draw = makeRng(1234 + r);
        const proxy =
          typeof cs.lock === "function"
            ? new FaultProxy({ target: srv.url, seed: 1234 + r, decide: () => (draw() < cs.lock(proxy.inFlight) ? "lock" : "pass") })
            : new FaultProxy({ target: srv.url, seed: 1234 + r, shares: { lock: cs.lock } });
        await proxy.start();
        try {
          const sb = makeSandbox({ zoteroUrl: zot.url, libraryId: lib.libraryId, apiKey: lib.apiKey, refserverUrl: proxy.url, importOptions: { batch_size: batch, adaptive_pacing: cs.adaptive } });
          const res = await runImporter(sb, ["--quiet"], { timeoutMs: 900_000 });
          if (res.code !== 0) console.error(`faults: importer exit ${res.code}: ${res.stderr.slice(-1500)}`);
          if (res.code === 2) notes.push(`adaptive_pacing=${cs.adaptive}: config refused (exit 2): ${res.stderr.trim().split("\n").pop()}`);
          const links = await serverLinks(srv.url, lib.libraryId);
          const uniq = new Set(links.map((l) => l.zotero_key)).size;
          let pacing = null;
          try {
            const dir = join(sb.dir, "state", "import-from-zotero", "reports");
            const f = readdirSync(dir).find((n) => n.endsWith(".json"));
            if (f) pacing = JSON.parse(readFileSync(join(dir, f), "utf8")).pacing ?? null;
          } catch {
            /* no report */
          }
          runs.push({ code: res.code, secs: res.wallMs / 1000, onServer: links.length, dup: links.length - uniq, uploads: proxy.counters.matched, locked: proxy.counters.lock, peak: proxy.peakInFlight, mean: meanInFlight(proxy.inFlightSamples), pacing });
          rmrf(sb.dir);
        } finally {
          await proxy.close();
          await zot.close();
          await srv.stop();
        }
      }
      const rates = runs.map((x) => x.onServer / x.secs);
      const ok = runs.every((x) => x.onServer === items && x.dup === 0 && x.code === 0);
      rows.push([
        `${cs.label ?? `${Math.round(cs.lock * 100)}% locked`}, ${cs.adaptive ? "adaptive" : "fixed"}`,
        `${ok ? `${items}/${items} in every run` : runs.map((x) => `${x.onServer}/${items}${x.dup ? ` (${x.dup} dup)` : ""} exit ${x.code}`).join("; ")}`,
        fmt(median(runs.map((x) => x.secs)), 1),
        `**${fmt(median(rates), 1)}**`,
        rates.map((x) => fmt(x, 1)).join(", "),
        fmt((median(rates) * size) / 2 ** 20, 1),
        runs.map((x) => x.uploads).join("/"),
        runs.map((x) => x.locked).join("/"),
        Math.max(...runs.map((x) => x.peak)),
        fmt(median(runs.map((x) => x.mean)), 2),
        runs.map((x) => (x.pacing ? `${x.pacing.finalLimit} (${x.pacing.decreases}↓)` : "–")).join(", "),
      ]);
    }
    const text = [
      `${items} items × ${size} B, fake Zotero (fixtures/fake-zotero.ts, files streamed from disk) → importer (batch_size ${batch} = the ceiling; real retry defaults: 8 retries, full jitter from 1 s, max 60 s) → fault proxy → refserver-lite (real process, \`--no-worker\`). The proxy answers 500 {"detail":"Database error: database is locked"} to the given share of upload requests after reading their whole body (seeded per repeat, so both pacing modes meet the same sequence of verdicts per request number); ${repeats} runs per case, fresh server and state each; the rest are forwarded. The last two rows model a server whose lock contention grows with concurrent uploads: the share is ${Math.round(share * 100)}% × (uploads in flight ÷ 4), at most 90%. "uploads in flight" is measured at the proxy; "final limit" comes from the importer's JSON report.`,
      "",
      table(["case", "on server, exactly once", "wall s (median)", "items/s (median)", "items/s, all runs", "MiB/s (median)", "upload requests", "answered locked", "peak uploads in flight", "mean uploads in flight (median)", "final limit (decreases), per run"], rows),
      ...(notes.length ? ["", ...notes.map((n) => `- ${n}`)] : []),
    ].join("\n");
    report({ name: "faults", title: "import-from-zotero: under faults (30% lock answers), fixed vs adaptive pacing", command: `npm run bench -- faults ${args.join(" ")}`.trim(), m, text });
  } finally {
    rmrf(work);
  }
}
