// politeness: Zotero Web API requests per 100 importable items for listing (target ≤ 3) and
// peak requests in flight (target ≤ 4), from the test fake's counters (listingRequestCount(),
// peakInFlight), on a full import (small PDFs) into refserver-lite (real process, --no-worker).
// Two libraries: "plain" (every parent has one stored PDF) and "mixed" (defined below, fixed
// before measuring). The fake answers with a small latency (API 20 ms, storage 50 ms) so that
// requests overlap as they would against zotero.org; batch_size 4 (default) and 16.
import { join } from "node:path";
import { argValue, fmt, machine, makeSandbox, report, rmrf, runImporter, serverLinks, startRefServer, table, tempDir } from "./lib/common.mjs";

const { makeLibrary, FakeLibrary, FakeZotero } = await import("./out/fixtures/fake-zotero.js");

/**
 * Per block of 10 parents: 8 with a stored PDF (5 of them also with a child note, 2 also with an
 * HTML snapshot), 1 with only a linked URL, 1 with no attachment; plus 1 standalone note.
 * = 27 objects per 8 importable items.
 */
function mixedLibrary(blocks) {
  const lib = new FakeLibrary({ seed: 5 });
  for (let b = 0; b < blocks; b++) {
    for (let i = 0; i < 8; i++) {
      const { parentKey } = lib.addParentWithPdf();
      if (i < 5) lib.addNote(parentKey);
      if (i < 2) lib.addNonPdfAttachment(parentKey);
    }
    const p = lib.addParent();
    lib.addLinkedUrl(p.key);
    lib.addItemWithoutAttachment();
    lib.addNote(undefined);
  }
  return lib;
}

export async function run(args) {
  const parents = Number(argValue(args, "--parents", 1000));
  const batchSizes = String(argValue(args, "--batch-sizes", "4,16")).split(",").map(Number);
  const m = machine();
  const work = tempDir("polite");
  const rows = [];
  try {
    const libs = [
      { name: `plain: ${parents} parents, 1 stored PDF each`, lib: makeLibrary({ items: parents, seed: 3 }), importable: parents },
      { name: `mixed: ${parents} parents (8 in 10 with a PDF; notes, snapshots, links)`, lib: mixedLibrary(Math.round(parents / 10)), importable: Math.round(parents / 10) * 8 },
    ];
    for (const { name, lib, importable } of libs) {
      for (const bs of batchSizes) {
        const srv = await startRefServer({ dataDir: join(work, `srv-${bs}-${name.slice(0, 5)}`) });
        const zot = new FakeZotero({ library: lib });
        await zot.start();
        zot.delay(20, (r) => r.route !== "storage");
        zot.delay(50, "storage");
        try {
          const sb = makeSandbox({ zoteroUrl: zot.url, libraryId: lib.libraryId, apiKey: lib.apiKey, refserverUrl: srv.url, importOptions: { batch_size: bs } });
          const res = await runImporter(sb, ["--quiet"]);
          const onServer = (await serverLinks(srv.url, lib.libraryId)).length;
          const listing = zot.listingRequestCount({ includeFaulted: true });
          const total = zot.log.length;
          rows.push([
            name,
            `${bs}`,
            `${onServer}/${importable} (exit ${res.code})`,
            lib.items.length,
            listing,
            `**${fmt((listing / importable) * 100, 2)}**`,
            total,
            `**${zot.peakInFlight}**`,
            zot.peakStorageInFlight,
            fmt(res.wallMs / 1000, 1),
          ]);
          rmrf(sb.dir);
        } finally {
          await zot.close();
          await srv.stop();
        }
      }
    }
    const text = [
      "Full imports (small generated PDFs) from the fake Zotero Web API (fixtures/fake-zotero.ts) into refserver-lite (real process, `--no-worker`). The fake delays every API answer by 20 ms and every storage download by 50 ms so requests overlap as against zotero.org. Counted by the fake: listing = requests to listing routes (`listingRequestCount()`), in flight = API + storage requests open at once (`peakInFlight`). Mixed library, per 10 parents: 8 with a stored PDF (5 of those with a child note, 2 with an HTML snapshot), 1 with only a linked URL, 1 with nothing; plus 1 standalone note (27 Zotero objects per 8 importable items).",
      "",
      table(["library", "batch_size", "on server", "Zotero objects", "listing requests", "per 100 importable (target ≤ 3)", "all Zotero requests", "peak in flight (target ≤ 4)", "peak storage in flight", "wall s"], rows),
    ].join("\n");
    report({ name: "politeness", title: "import-from-zotero: Zotero politeness", command: `npm run bench -- politeness ${args.join(" ")}`.trim(), m, text });
  } finally {
    rmrf(work);
  }
}
