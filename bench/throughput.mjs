// throughput: N items × SIZE through the fake Zotero Web API (fixtures/fake-zotero.ts, compiled
// to bench/out/fixtures; files streamed from disk) and refserver-lite (real process, --no-worker),
// side by side with the baselines of bench/lib/bare-loops.mjs in the same run:
//   (a) bare upload loop from disk (hand-built Node-stream multipart body, undici.request),
//   (b) bare download-then-upload loop (Zotero's bytes piped straight into the upload),
//   (b+m) (b) plus the metadata call the importer sends per paper.
// Every client runs as its own process against a fresh server; the order of the clients rotates
// per repeat. Client CPU = process.cpuUsage() of the client process at its exit; server CPU from
// /proc/PID/stat; the fake Zotero runs in the benchmark process. Median of the repeats.
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { ADMIN, ROOT, machineBusySeconds, cpuSeconds, pollPeakRss, argValue, fmt, machine, makeSandbox, mb, report, rmrf, runImporter, serverLinks, startRefServer, table, tempDir } from "./lib/common.mjs";
import { FakeZotero, diskLibrary, writePdfFile } from "./lib/library.mjs";

const CLIENTS = ["importer", "b", "b+m", "a"];
const LABEL = {
  importer: "import-from-zotero",
  a: "(a) bare upload loop from disk",
  b: "(b) bare download→upload loop",
  "b+m": "(b+m) (b) + metadata call",
};

function runBare(mode, manifest, url, concurrency, zoteroUrl, apiKey) {
  const t0 = performance.now();
  const child = spawn(process.execPath, [join(ROOT, "bench", "lib", "bare-loops.mjs"), mode, manifest, url, String(concurrency), ADMIN.user, ADMIN.password, zoteroUrl, apiKey], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const poll = pollPeakRss(child.pid, 20);
  let out = "";
  let err = "";
  child.stdout.on("data", (d) => (out += d));
  child.stderr.on("data", (d) => (err += d));
  const killer = setTimeout(() => child.kill("SIGKILL"), 600_000);
  return new Promise((resolve, reject) =>
    child.on("close", (code) => {
      clearTimeout(killer);
      const { peak } = poll.stop();
      if (code !== 0) return reject(new Error(`bare loop ${mode} exited ${code}: ${err}`));
      const r = JSON.parse(out.trim().split("\n").pop());
      resolve({ ...r, wallMs: performance.now() - t0, cpuS: (r.cpuUserMs + r.cpuSystemMs) / 1000, peakRss: peak });
    }),
  );
}

const median = (xs) => {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

export async function run(args) {
  const items = Number(argValue(args, "--items", 500));
  const size = Number(argValue(args, "--size", 1024 * 1024));
  const concurrencies = String(argValue(args, "--concurrency", "4,8")).split(",").map(Number);
  const repeats = Number(argValue(args, "--repeats", 3));
  const clients = String(argValue(args, "--clients", CLIENTS.join(","))).split(",");
  // "empty": items without journal, DOI or abstract, so the importer has no metadata call to make
  // (like the bare loops (a) and (b)); "full": items with both, the importer makes the call ((b+m)).
  const metadata = String(argValue(args, "--metadata", "empty"));
  const m = machine();
  const work = tempDir("throughput");
  try {
    // One PDF file per item on disk (distinct bytes, so the server never sees two alike).
    const filesDir = join(work, "files");
    mkdirSync(filesDir, { recursive: true });
    const tGen = performance.now();
    const pdfs = [];
    for (let i = 0; i < items; i++) pdfs.push(await writePdfFile(join(filesDir, `p${i}.pdf`), size, `Throughput paper ${i + 1}`));
    const { lib, parents } = diskLibrary({ items, file: (i) => pdfs[i], seed: 11, metadata });
    const manifest = parents.map((p, i) => ({
      path: pdfs[i].path,
      size: pdfs[i].size,
      key: p.key,
      attKey: p.att,
      libraryId: String(lib.libraryId),
      title: p.title,
      filename: `paper-${i + 1}.pdf`,
    }));
    const manifestPath = join(work, "manifest.json");
    writeFileSync(manifestPath, JSON.stringify(manifest));
    console.error(`throughput: ${items} items × ${size} B written in ${fmt((performance.now() - tGen) / 1000, 1)} s`);

    const runs = [];
    for (const c of concurrencies) {
      for (let r = 0; r < repeats; r++) {
        const order = clients.map((_, i) => clients[(i + r) % clients.length]);
        for (const client of order) {
          const srv = await startRefServer({ dataDir: join(work, `srv-${client}-${c}-${r}`) });
          const zot = new FakeZotero({ library: lib });
          await zot.start();
          const load1 = loadavg()[0];
          let rec;
          try {
            const srvBefore = cpuSeconds(srv.pid);
            const benchBefore = process.cpuUsage();
            const busyBefore = machineBusySeconds();
            let res;
            let onServer;
            if (client === "importer") {
              const sb = makeSandbox({ zoteroUrl: zot.url, libraryId: lib.libraryId, apiKey: lib.apiKey, refserverUrl: srv.url, importOptions: { batch_size: c } });
              res = await runImporter(sb, ["--quiet"]);
              if (res.code !== 0) console.error(`importer exit ${res.code}: ${res.stderr.slice(-3000)}`);
              rmrf(sb.dir);
            } else {
              res = await runBare(client === "a" ? "upload" : client === "b" ? "transfer" : "transfer+meta", manifestPath, srv.url, c, zot.url, lib.apiKey);
            }
            const serverCpu = cpuSeconds(srv.pid) - srvBefore;
            const u = process.cpuUsage(benchBefore);
            const fakeCpu = (u.user + u.system) / 1e6;
            const busy = machineBusySeconds() - busyBefore;
            onServer = (await serverLinks(srv.url, lib.libraryId)).length;
            const wall = res.wallMs / 1000;
            rec = {
              client,
              concurrency: c,
              repeat: r + 1,
              onServer,
              exit: res.code ?? 0,
              wallS: wall,
              itemsPerS: onServer / wall,
              clientCpuS: res.cpuS,
              clientCpuMsPerPaper: (res.cpuS / onServer) * 1000,
              serverCpuMsPerPaper: (serverCpu / onServer) * 1000,
              fakeZoteroCpuS: client === "a" ? null : fakeCpu,
              otherCpuS: busy - serverCpu - res.cpuS - fakeCpu,
              peakRssMiB: res.peakRss / 2 ** 20,
              loadavg1Before: load1,
              loadavg1After: loadavg()[0],
            };
          } finally {
            await zot.close();
            await srv.stop();
          }
          runs.push(rec);
          console.error(
            `c=${c} run ${r + 1} ${client}: ${rec.onServer}/${items} in ${fmt(rec.wallS, 2)} s = ${fmt(rec.itemsPerS, 1)} items/s, client ${fmt(rec.clientCpuMsPerPaper, 2)} ms/paper, server ${fmt(rec.serverCpuMsPerPaper, 2)} ms/paper, other CPU ${fmt(rec.otherCpuS, 1)} s, load ${fmt(rec.loadavg1Before, 2)}→${fmt(rec.loadavg1After, 2)}`,
          );
        }
      }
    }

    // Ratios per pair: the importer against each baseline of the same repeat.
    const pairs = [];
    for (const c of concurrencies) {
      for (let r = 1; r <= repeats; r++) {
        const get = (client) => runs.find((x) => x.client === client && x.concurrency === c && x.repeat === r);
        const imp = get("importer");
        if (!imp) continue;
        const pair = { concurrency: c, repeat: r };
        for (const base of ["a", "b", "b+m"]) {
          const b = get(base);
          if (!b) continue;
          pair[base] = { speed: imp.itemsPerS / b.itemsPerS, cpu: imp.clientCpuMsPerPaper / b.clientCpuMsPerPaper, serverCpu: imp.serverCpuMsPerPaper / b.serverCpuMsPerPaper };
        }
        pairs.push(pair);
      }
    }
    const summary = [];
    for (const c of concurrencies) {
      for (const client of clients) {
        const xs = runs.filter((x) => x.client === client && x.concurrency === c);
        summary.push({
          concurrency: c,
          client,
          runs: xs.length,
          allOnServer: xs.every((x) => x.onServer === items),
          itemsPerS: median(xs.map((x) => x.itemsPerS)),
          clientCpuMsPerPaper: median(xs.map((x) => x.clientCpuMsPerPaper)),
          serverCpuMsPerPaper: median(xs.map((x) => x.serverCpuMsPerPaper)),
          peakRssMiB: median(xs.map((x) => x.peakRssMiB)),
        });
      }
    }
    const ratios = concurrencies.map((c) => {
      const ps = pairs.filter((p) => p.concurrency === c);
      const med = (base, k) => median(ps.filter((p) => p[base]).map((p) => p[base][k]));
      return {
        concurrency: c,
        perPair: ps,
        vsB: { speed: med("b", "speed"), cpu: med("b", "cpu"), serverCpu: med("b", "serverCpu") },
        vsBM: { speed: med("b+m", "speed"), cpu: med("b+m", "cpu"), serverCpu: med("b+m", "serverCpu") },
        vsA: { speed: med("a", "speed"), cpu: med("a", "cpu"), serverCpu: med("a", "serverCpu") },
      };
    });

    const sumRows = summary.map((s) => [
      `${LABEL[s.client]}, batch ${s.concurrency}`,
      `${s.runs}${s.allOnServer ? "" : " (not all on server!)"}`,
      fmt(s.itemsPerS, 1),
      fmt(s.clientCpuMsPerPaper, 2),
      fmt(s.serverCpuMsPerPaper, 2),
      fmt(s.peakRssMiB, 0),
    ]);
    const ratioRows = ratios.map((q) => [
      `batch ${q.concurrency}`,
      q.perPair.map((p) => (p.b ? fmt(p.b.speed, 2) : "–")).join(", "),
      `**${fmt(q.vsB.speed, 2)}**`,
      q.perPair.map((p) => (p.b ? fmt(p.b.cpu, 2) : "–")).join(", "),
      `**${fmt(q.vsB.cpu, 2)}**`,
      `${fmt(q.vsBM.speed, 2)} / ${fmt(q.vsBM.cpu, 2)}`,
      `${fmt(q.vsA.speed, 2)} / ${fmt(q.vsA.cpu, 2)}`,
    ]);
    const text = [
      `${items} items × ${size} B, items ${metadata === "empty" ? "without journal, DOI or abstract (no metadata call)" : "with a journal and a DOI (the importer sends the metadata call)"}, fake Zotero (in the benchmark process, files streamed from disk) and refserver-lite`,
      "`--no-worker` (a real process, fresh data directory per run), all on 127.0.0.1. items/s = papers on the server ÷ wall time",
      "of the client process (spawn to exit). CPU = the client process's own user + system time. Medians of the repeats.",
      "",
      table(["client", "runs", "items/s", "client CPU ms/paper", "server CPU ms/paper", "peak RSS MiB"], sumRows),
      "",
      "Importer ÷ baseline, per pair (same repeat), and the median (targets vs (b): speed ≥ 0.9, CPU ≤ 1.3):",
      "",
      table(["batch_size", "speed vs (b) per pair", "median", "CPU vs (b) per pair", "median", "vs (b+m): speed / CPU", "vs (a): speed / CPU"], ratioRows),
    ].join("\n");
    report({ name: "throughput", title: "import-from-zotero: throughput against bare loops", command: `npm run bench -- throughput ${args.join(" ")}`.trim(), m, text, data: { items, size, metadata, summary, ratios, runs } });
  } finally {
    rmrf(work);
  }
}
