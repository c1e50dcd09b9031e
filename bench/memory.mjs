// memory: peak RSS (VmHWM of the importer process, polled from /proc/PID/status every 20 ms)
// while importing one 1 GiB PDF (target ≤ 150 MB). The PDF is generated on disk by streaming;
// the fake Zotero (fixtures/fake-zotero.ts) streams it from disk; refserver-lite runs as a
// real process with --max-upload-mb 2048 --no-worker. A 150 kB PDF through the same setup gives
// the baseline (Node + modules + one small transfer).
import { statSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { FakeZotero, diskLibrary, writePdfFile } from "./lib/library.mjs";
import { argValue, fmt, machine, makeSandbox, mb, report, rmrf, runImporter, serverLinks, startRefServer, table, tempDir } from "./lib/common.mjs";

async function importOne(work, label, file) {
  const { lib } = diskLibrary({ items: 1, file: () => file });
  const zot = new FakeZotero({ library: lib });
  await zot.start();
  const srv = await startRefServer({ dataDir: join(work, `srv-${label}`), extra: ["--max-upload-mb", "2048"] });
  try {
    const sb = makeSandbox({ zoteroUrl: zot.url, libraryId: lib.libraryId, apiKey: lib.apiKey, refserverUrl: srv.url, timeoutSeconds: 600 });
    const res = await runImporter(sb, [], { pollMs: 20, timeoutMs: 900_000 });
    const links = await serverLinks(srv.url, lib.libraryId);
    let storedBytes = null;
    try {
      const dir = join(work, `srv-${label}`, "pdfs");
      storedBytes = readdirSync(dir).reduce((s, f) => s + statSync(join(dir, f)).size, 0);
    } catch {
      /* layout differs: leave unknown */
    }
    if (res.code !== 0) console.error(`importer exit ${res.code}: ${res.stderr.slice(-3000)}\n${res.stdout.slice(-2000)}`);
    rmrf(sb.dir);
    return { res, onServer: links.length, storedBytes, downloads: zot.counters.storage };
  } finally {
    await zot.close();
    await srv.stop();
  }
}

export async function run(args) {
  const bytes = Number(argValue(args, "--bytes", 2 ** 30));
  const m = machine();
  const work = tempDir("memory");
  try {
    const t0 = performance.now();
    const big = await writePdfFile(join(work, "big.pdf"), bytes, "A very large paper");
    const genS = (performance.now() - t0) / 1000;
    console.error(`memory: wrote ${big.size} B in ${fmt(genS, 1)} s (md5 ${big.md5})`);
    const small = await writePdfFile(join(work, "small.pdf"), 150_000, "A small paper");

    const rows = [];
    for (const [label, file] of [
      ["150 kB PDF (baseline)", small],
      [`${fmt(bytes / 2 ** 30, 2)} GiB PDF`, big],
    ]) {
      const r = await importOne(work, label.startsWith("150") ? "small" : "big", file);
      rows.push([
        label,
        `${r.onServer}/1 (exit ${r.res.code})`,
        r.storedBytes === file.size ? "yes" : `no (${r.storedBytes})`,
        fmt(r.res.wallMs / 1000, 1),
        fmt(file.size / 2 ** 20 / (r.res.wallMs / 1000), 0),
        `**${mb(r.res.peakRss, 1)}**`,
        r.res.rssSamples,
      ]);
    }
    const text = [
      `One item whose PDF is ${big.size} bytes, generated on disk by streaming (${fmt(genS, 1)} s), served by the fake Zotero (fixtures/fake-zotero.ts) streaming it from disk, imported into refserver-lite (real process, \`--max-upload-mb 2048 --no-worker\`). Peak RSS = VmHWM of the importer process (\`/proc/PID/status\`, polled every 20 ms; VmHWM is the kernel's high-water mark, so polling cannot miss the peak while the process lives).`,
      "",
      table(["PDF", "on server", "stored file complete", "wall s", "MiB/s end to end", "importer peak RSS MiB (target ≤ 150 MB = 143 MiB)", "RSS samples"], rows),
    ].join("\n");
    report({ name: "memory", title: "import-from-zotero: memory importing one 1 GiB PDF", command: `npm run bench -- memory ${args.join(" ")}`.trim(), m, text });
  } finally {
    rmrf(work);
  }
}
