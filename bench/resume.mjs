// resume: start-up time to the first upload with a 100 000-record checkpoint journal
// (target ≤ 1 s). A synthetic journal in the real format (src/journal/records.ts) for the same
// scope (`${refserverUrl}|user:${libraryId}`) is written before the run; the time is from spawn
// of the importer to the first upload request arriving at the server (seen by a transparent
// proxy in front of refserver-lite, real process, --no-worker). Lean fake Zotero, small PDFs.
//   A  after earlier complete runs: 50 000 items done (started + done = 100 000 item records) and
//      a sync record, so the run lists only what changed since (the 20 new items); the last run
//      left its state snapshot (<checkpoint>.state, made here by the importer's own code).
//   A' the same journal without a snapshot (the first run after an upgrade, or a snapshot lost):
//      every record is read.
//   0  the same 20 new items with an empty journal (the baseline: process start, listing, login).
//   B  a first run SIGKILLed after 50 000 items: the same 100 000 item records, no sync record,
//      so the run lists the whole library again (50 020 items = 100 040 Zotero objects).
import { randomUUID } from "node:crypto";
import { mkdirSync, statSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { pathToFileURL } from "node:url";
import { FakeZotero, FaultProxy, diskLibrary, listingRequests, makeRng, makeZoteroKey, writePdfFile } from "./lib/library.mjs";
import { BINS, argValue, fmt, itemRecord, machine, makeSandbox, mb, report, rmrf, runImporter, startRefServer, table, tempDir } from "./lib/common.mjs";

const LIB_ID = 475425;

function journalLines({ scope, doneKeys, sync }) {
  const run = randomUUID();
  const lines = [JSON.stringify({ t: "run", ts: new Date(Date.UTC(2026, 0, 1)).toISOString(), run, scope, event: "start" })];
  let ms = Date.UTC(2026, 0, 1);
  for (const { key, att, version, i } of doneKeys) {
    const title = `Sparse Structures in Something Rather Long ${i + 1}`;
    lines.push(itemRecord({ ts: new Date((ms += 7)).toISOString(), run, scope, key, att, version, status: "started", title }));
    lines.push(itemRecord({ ts: new Date((ms += 311)).toISOString(), run, scope, key, att, version, status: "done", title, docId: randomUUID(), via: "uploaded", bytes: 150_000 }));
  }
  if (sync !== undefined) {
    lines.push(JSON.stringify({ t: "sync", ts: new Date(ms).toISOString(), run, scope, filter: JSON.stringify({ c: [], t: [], x: [] }), version: sync }));
    lines.push(JSON.stringify({ t: "run", ts: new Date(ms).toISOString(), run, scope, event: "end", exitCode: 0 }));
  }
  return lines;
}

async function once(work, variant, { records, newItems, file }) {
  const half = records / 2;
  // Library: variant B holds the done items too (full listing); A, A' and 0 only the new ones.
  const inLibrary = variant === "B" ? half + newItems : newItems;
  const startVersion = 100_000;
  const { lib, parents } = diskLibrary({ items: inLibrary, file: () => file, libraryId: LIB_ID, startVersion, seed: variant === "B" ? 1 : 2 });
  const zot = new FakeZotero({ library: lib });
  await zot.start();
  const srv = await startRefServer({ dataDir: join(work, `srv-${variant}-${randomUUID().slice(0, 8)}`) });
  const proxy = new FaultProxy({ target: srv.url });
  await proxy.start();
  try {
    const sb = makeSandbox({ zoteroUrl: zot.url, libraryId: LIB_ID, apiKey: lib.apiKey, refserverUrl: proxy.url });
    const scope = `${proxy.url}|user:${LIB_ID}`;
    let journalBytes = 0;
    if (variant !== "0") {
      const doneKeys = [];
      const rng = makeRng(99);
      for (let i = 0; i < half; i++) {
        // B: the library's first `half` parents; A: keys that are not in this listing at all.
        if (variant === "B") doneKeys.push({ key: parents[i].key, att: parents[i].att, version: parents[i].version, i });
        else doneKeys.push({ key: makeZoteroKey(rng), att: makeZoteroKey(rng), version: startVersion - half + i, i });
      }
      const lines = journalLines({ scope, doneKeys, sync: variant.startsWith("A") ? startVersion - 1 : undefined });
      mkdirSync(dirname(sb.checkpoint), { recursive: true });
      writeFileSync(sb.checkpoint, lines.join("\n") + "\n", { mode: 0o600 });
      journalBytes = statSync(sb.checkpoint).size;
      if (variant === "A") {
        // What the run that wrote these records leaves at its end: the importer's own snapshot code.
        const { loadState, saveState } = await import(pathToFileURL(join(dirname(BINS.importer), "..", "dist", "journal", "snapshot.js")).href);
        saveState(sb.checkpoint, loadState(sb.checkpoint, scope));
      }
    }
    const res = await runImporter(sb, ["--quiet"], { timeoutMs: 300_000 });
    // Exit 1 is expected for A and B: the synthetic journal's done papers are not on this fresh
    // server, and the importer (which asks refserver-lite for its links) reports them lost.
    if (res.code !== 0 && !(res.code === 1 && variant !== "0")) console.error(`resume ${variant}: importer exit ${res.code}: ${res.stderr.slice(-2000)}`);
    const firstUploadS = proxy.firstMatchAt === null ? NaN : (proxy.firstMatchAt - res.t0) / 1000;
    rmrf(sb.dir);
    return { firstUploadS, wallS: res.wallMs / 1000, code: res.code, peakRss: res.peakRss, uploads: proxy.counters.matched, listing: listingRequests(zot), journalBytes };
  } finally {
    await proxy.close();
    await zot.close();
    await srv.stop();
  }
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};

export async function run(args) {
  const records = Number(argValue(args, "--records", 100_000));
  const newItems = Number(argValue(args, "--new", 20));
  const repeats = Number(argValue(args, "--repeats", 3));
  const m = machine();
  const work = tempDir("resume");
  try {
    const file = await writePdfFile(join(work, "paper.pdf"), 150_000, "Resume paper");
    const rows = [];
    const variants = [
      ["0", `empty journal, ${newItems} new items (baseline)`],
      ["A", `${records.toLocaleString("en")} item records + sync record + the last run's state snapshot, ${newItems} new items (incremental listing)`],
      ["A'", `the same without the snapshot (every record read)`],
      ["B", `${records.toLocaleString("en")} item records, no sync record (killed first run): full listing of ${(records / 2 + newItems).toLocaleString("en")} items`],
    ];
    for (const [v, label] of variants) {
      const runs = [];
      for (let r = 0; r < repeats; r++) runs.push(await once(work, v, { records, newItems, file }));
      const first = runs.map((x) => x.firstUploadS);
      rows.push([
        `${v}: ${label}`,
        runs[0].journalBytes ? mb(runs[0].journalBytes, 1) : "0",
        runs[0].listing,
        `**${fmt(median(first), 3)}**`,
        first.map((x) => fmt(x, 3)).join(", "),
        `${runs.map((x) => x.uploads).join("/")} (exit ${[...new Set(runs.map((x) => x.code))].join(",")})`,
        fmt(median(runs.map((x) => x.wallS)), 2),
        mb(Math.max(...runs.map((x) => x.peakRss)), 0),
      ]);
    }
    const text = [
      `Time from spawn of the importer to the first upload request arriving at the server (timestamped by a transparent proxy in front of refserver-lite, real process, \`--no-worker\`), with a synthetic checkpoint in the real NDJSON format for the same scope (\`<refserver url>|user:${LIB_ID}\`): per item one "started" and one "done" record (title, docId, bytes), ${repeats} runs each, median first. Fake Zotero (fixtures/fake-zotero.ts, files streamed from disk), 150 kB PDFs, batch_size 4.`,
      "",
      table(["journal", "journal MiB", "listing requests", "spawn → first upload s, median (target ≤ 1 s)", "all runs s", "uploads", "wall s, median", "peak RSS MiB"], rows),
    ].join("\n");
    report({ name: "resume", title: "import-from-zotero: resume start-up with a 100 000-record journal", command: `npm run bench -- resume ${args.join(" ")}`.trim(), m, text });
  } finally {
    rmrf(work);
  }
}
