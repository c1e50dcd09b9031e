/**
 * Exactly once, under fire. Real processes only, all on 127.0.0.1:
 *
 *   import-from-zotero (bin, SIGKILLed at 10 random moments, restarted each time)
 *     → fault proxy (30% "database is locked", 5% lost after commit, 5% resets, a few stalls)
 *       → refserver-lite (bin, restarted once mid-run with SIGKILL)
 *   import-from-zotero → fake Zotero Web API (pages of 10, 429 + Retry-After, Backoff,
 *                        /file redirects to a separate storage origin with MD5, one corrupt download)
 *
 * At the end every importable item is on the server exactly once, its file intact by MD5,
 * nothing else is there, and the importer's journal says the same.
 */
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { makeSandbox, removeSandbox, runCli, startCli, type CliResult, type Sandbox } from "../helpers/cli.js";
import { FaultProxy } from "../../fixtures/fault-proxy.js";
import { FakeZotero, makeLibrary, makeRng, type FakeLibrary } from "../../fixtures/fake-zotero.js";
import { md5 } from "../../fixtures/pdf.js";
import { RefServerProcess } from "../helpers/refserver-process.js";

const SEED = Number(process.env.E2E_SEED ?? 20_250_611);
const LIBRARY_ID = 5151;
const API_KEY = "zk-E2E-SECRET-0123456789";
const KILLS = 10;

interface JournalLine {
  t: string;
  scope?: string;
  key?: string;
  status?: string;
  via?: string;
  docId?: string | null;
}

function readJournalLines(path: string): JournalLine[] {
  return readFileSync(path, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as JournalLine];
      } catch {
        return []; // a torn last line after a SIGKILL is allowed
      }
    });
}

interface Expected {
  /** Importable item key → MD5 and title of the PDF that must be on the server. */
  importable: Map<string, { md5: string; title: string }>;
  /** Keys that must never reach the server. */
  notImportable: string[];
  /** The PDF Zotero lists but does not store (404 on /file): skipped, not failed. */
  missingFileKey: string;
}

function buildLibrary(rng: () => number): { library: FakeLibrary; expected: Expected; corruptKey: string } {
  const library = makeLibrary({ apiKey: API_KEY, libraryId: LIBRARY_ID, seed: SEED });
  const importable = new Map<string, { md5: string; title: string }>();
  let corruptKey = "";
  for (let i = 0; i < 56; i++) {
    const added = library.addParentWithPdf({ attachment: { padToBytes: 4_000 + Math.floor(rng() * 60_000) } });
    importable.set(added.parentKey, { md5: added.md5, title: String(added.parent.data.title) });
    if (i === 5) corruptKey = added.attachmentKey;
  }
  for (let i = 0; i < 2; i++) {
    const s = library.addStandalonePdf({ title: `Standalone scan ${i + 1}.pdf` });
    importable.set(s.key, { md5: s.md5, title: `Standalone scan ${i + 1}.pdf` });
  }
  // Not importable, each for its own reason.
  const notImportable: string[] = [];
  notImportable.push(library.addNote(undefined, "<p>standalone note</p>").key);
  notImportable.push(library.addItemWithoutAttachment({ title: "Book without a file" }).key);
  const linked = library.addParent({ title: "Only a linked file" });
  library.addLinkedFile(linked.key);
  notImportable.push(linked.key);
  const web = library.addParent({ title: "Only a web link" });
  library.addLinkedUrl(web.key);
  notImportable.push(web.key);
  const html = library.addParent({ title: "Only a snapshot" });
  library.addNonPdfAttachment(html.key);
  notImportable.push(html.key);
  // A WebDAV user's PDF: md5 set but no file in Zotero storage, so /file answers 404.
  const missing = library.addParent({ title: "PDF never synced" });
  library.addStoredAttachment(missing.key, { webdav: true });
  notImportable.push(missing.key);
  // A note child on an importable item changes nothing.
  const first = [...importable.keys()][0]!;
  library.addNote(first, "<p>child note</p>");
  return { library, expected: { importable, notImportable, missingFileKey: missing.key }, corruptKey };
}

const cleanups: Array<() => Promise<void> | void> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

describe("exactly once under fire (real importer, real refserver-lite, fault proxy)", () => {
  it("imports every importable item exactly once, files intact, journal agreeing, through 10 SIGKILLs, a server crash and injected faults", { timeout: 150_000 }, async () => {
    const rng = makeRng(SEED);
    const { library, expected, corruptKey } = buildLibrary(rng);

    const zotero = new FakeZotero({ library, maxLimit: 10, storage: "separate" });
    const z = await zotero.start();
    cleanups.push(() => z.close());
    zotero.rateLimitNext(1, 1, "items");
    zotero.backoffOn(1, 1, "items");
    zotero.corruptFile(corruptKey, 1, "flip");

    const server = new RefServerProcess();
    cleanups.push(() => server.close());
    await server.start();

    const proxy = new FaultProxy({
      target: server.url,
      seed: SEED,
      shares: { lock: 0.3, lostAfterCommit: 0.05, reset: 0.05, stall: 0.01 },
      stallMs: 15_000,
    });
    await proxy.start();
    cleanups.push(() => proxy.close());
    // The first uploads meet one of each fault for sure; the shares do the rest.
    proxy.forceNext("lost-after-commit");
    proxy.forceNext("lock");
    proxy.forceNext("reset");

    const sandbox: Sandbox = makeSandbox({
      zoteroUrl: z.url,
      refserverUrl: proxy.url,
      libraryId: String(LIBRARY_ID),
      apiKey: API_KEY,
      username: server.adminUser,
      password: server.adminPassword,
      batchSize: 4,
      retries: 30,
      timeoutSeconds: 2,
    });
    cleanups.unshift(() => removeSandbox(sandbox)); // runs last, after the servers stop
    writeFileSync(sandbox.configPath, readFileSync(sandbox.configPath, "utf8").replace(/max_delay_seconds: [\d.]+/, "max_delay_seconds: 0.2"), { mode: 0o600 });

    // ---- 10 SIGKILLs at random moments, one server crash + restart in the middle of a run ----
    const runs: Array<CliResult & { killedAt: string; onServer: number }> = [];
    let kills = 0;
    let serverRestarted = false;
    for (let attempt = 0; attempt < 30 && kills < KILLS; attempt++) {
      const run = startCli([], sandbox);
      let exited = false;
      let killed = false;
      void run.done.then(() => (exited = true));
      const start = proxy.counters.matched;
      const untilExitOr = async (cond: () => boolean, limitMs: number): Promise<void> => {
        const t0 = Date.now();
        while (!exited && !cond() && Date.now() - t0 < limitMs) await new Promise((r) => setTimeout(r, 5));
      };
      let moment: string;
      if (kills === 5 && !serverRestarted) {
        // Crash the server while this run uploads, bring it back on the same port, then kill the importer later.
        await untilExitOr(() => proxy.counters.matched >= start + 2, 30_000);
        await server.restart("SIGKILL");
        serverRestarted = true;
        const after = proxy.counters.matched;
        await untilExitOr(() => proxy.counters.matched >= after + 2, 30_000);
        moment = "after a server restart";
      } else if (rng() < 0.3) {
        // By time: often during start-up, listing or downloads.
        const ms = 100 + Math.floor(rng() * 400);
        await untilExitOr(() => false, ms);
        moment = `${ms} ms after start`;
      } else {
        const uploads = 1 + Math.floor(rng() * 4);
        await untilExitOr(() => proxy.counters.matched >= start + uploads, 30_000);
        const extra = Math.floor(rng() * 60);
        await untilExitOr(() => false, extra);
        moment = `after ${uploads} upload requests + ${extra} ms`;
      }
      if (!exited) {
        run.child.kill("SIGKILL");
        killed = true;
        kills++;
      }
      const r = await run.done;
      const onServer = server.db().counts().links;
      runs.push({ ...r, killedAt: killed ? moment : "exited by itself", onServer });
    }
    const story = runs.map((r, i) => `run ${i + 1}: ${r.killedAt} → code ${r.code} signal ${r.signal}, ${r.onServer} on the server`).join("\n");
    expect(kills, story).toBe(KILLS);
    // Every kill hit a run with work left: the last one still found papers missing on the server.
    expect(runs.every((r) => r.signal === "SIGKILL"), story).toBe(true);
    expect(runs.at(-1)!.onServer, story).toBeLessThan(expected.importable.size);
    expect(serverRestarted).toBe(true);
    expect(server.starts).toBe(2);

    // ---- Let it finish: the first run that is not killed must end with exit 0 ----
    // Its first upload is committed but the answer held past the importer's 2 s timeout.
    proxy.forceNext("stall");
    const final = await runCli([], sandbox);
    const finalOut = `${story}\nfinal stdout:\n${final.stdout}\nfinal stderr (tail):\n${final.stderr.slice(-4000)}\nproxy ${JSON.stringify(proxy.counters)}`;
    expect(final.code, finalOut).toBe(0);
    expect(final.stdout, finalOut).toMatch(/failed 0\./);

    // A second run has nothing left to send.
    const matchedBefore = proxy.counters.matched;
    const again = await runCli(["--since", "0"], sandbox);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/Imported 0, already on the server 58,/);
    expect(proxy.counters.matched).toBe(matchedBefore);

    if (process.env.E2E_VERBOSE) {
      console.log(`${story}\nproxy ${JSON.stringify(proxy.counters)} peak in flight ${proxy.peakInFlight}\nfinal: ${final.stdout}\nzotero ${JSON.stringify(zotero.counters)}\nserver stderr:\n${server.stderr}`);
    }

    // ---- The faults really happened ----
    const c = proxy.counters;
    expect(c.lock, JSON.stringify(c)).toBeGreaterThanOrEqual(5);
    expect(c.lostCommitted, JSON.stringify(c)).toBeGreaterThanOrEqual(1);
    expect(c.reset, JSON.stringify(c)).toBeGreaterThanOrEqual(1);
    expect(c.stallAbandoned, JSON.stringify(c)).toBeGreaterThanOrEqual(1);
    expect(zotero.counters["item/file"]).toBeGreaterThanOrEqual(58);
    expect(zotero.storageKeyLeaks).toEqual([]);

    // ---- The server: each importable key exactly once, nothing else ----
    const db = server.db();
    expect(db.duplicateKeys()).toEqual([]);
    const links = db.links(String(LIBRARY_ID));
    const linkedKeys = links.map((l) => l.zotero_key).sort();
    expect(linkedKeys).toEqual([...expected.importable.keys()].sort());
    for (const key of expected.notImportable) expect(linkedKeys).not.toContain(key);
    const counts = db.counts();
    expect(counts.papers).toBe(expected.importable.size);
    expect(counts.links).toBe(expected.importable.size);
    expect(counts.metadata).toBe(expected.importable.size);
    expect(counts.jobs).toBe(expected.importable.size);
    // What the API says agrees with the database.
    const apiLinks = await server.apiLinks(String(LIBRARY_ID));
    expect(apiLinks.map((l) => [l.zotero_key, l.doc_id])).toEqual(links.map((l) => [l.zotero_key, l.paper_id]));

    // Files intact: through the download API, and on disk (one file per paper, no orphan, no temp left).
    const titles = db.titles();
    for (const link of links) {
      const want = expected.importable.get(link.zotero_key)!;
      const body = await server.download(link.paper_id);
      expect(md5(body), `PDF of ${link.zotero_key}`).toBe(want.md5);
      expect(titles.get(link.paper_id), `title of ${link.zotero_key}`).toBe(want.title);
    }
    const onDisk = server.storedFiles();
    expect([...onDisk.keys()].sort()).toEqual(db.papers().map((p) => `${p.doc_id}.pdf`).sort());
    expect(readdirSync(join(server.dataDir, "tmp"))).toEqual([]);

    // ---- The journal agrees ----
    const status = await runCli(["status", "--json"], sandbox);
    expect(status.code, status.stderr).toBe(0);
    const report = JSON.parse(status.stdout) as { scopes: Array<{ server: string; counts: { done: number; failed: number; unfinished: number; skipped: number } }> };
    expect(report.scopes).toHaveLength(1);
    expect(report.scopes[0]!.server).toBe(proxy.url);
    expect(report.scopes[0]!.counts).toMatchObject({ done: expected.importable.size, failed: 0, unfinished: 0, skipped: 1 });

    // Item by item: the first "done" of each key names the doc the server holds for it.
    const serverDoc = new Map(links.map((l) => [l.zotero_key, l.paper_id]));
    const firstDone = new Map<string, JournalLine>();
    const lastStatus = new Map<string, string>();
    for (const line of readJournalLines(sandbox.checkpoint)) {
      if (line.t !== "item" || !line.key) continue;
      if (line.status === "done" && !firstDone.has(line.key)) firstDone.set(line.key, line);
      lastStatus.set(line.key, line.status ?? "");
    }
    expect([...firstDone.keys()].sort()).toEqual([...expected.importable.keys()].sort());
    for (const [key, line] of firstDone) expect(line.docId, `journal doc_id of ${key}`).toBe(serverDoc.get(key));
    expect(lastStatus.get(expected.missingFileKey)).toBe("skipped");
    // Some papers landed on the server without their answer reaching the importer: the journal knows them as "already".
    expect([...firstDone.values()].filter((l) => l.via === "already").length).toBeGreaterThanOrEqual(1);
  });
});
