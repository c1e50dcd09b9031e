/**
 * The seeds' own failure, replayed with real processes: 8 papers uploaded while the server's
 * background worker is busy with large documents, and "database is locked" answered to 7 of
 * the first 8 upload attempts (the 7 of 8 the seed lost). The importer must end with 8 of 8
 * imported, exit 0, and no 500 left in its summary as a failure.
 */
import { afterEach, describe, expect, it } from "vitest";
import { makeSandbox, removeSandbox, runCli, waitFor } from "../helpers/cli.js";
import { FaultProxy } from "../../fixtures/fault-proxy.js";
import { FakeZotero, makeLibrary } from "../../fixtures/fake-zotero.js";
import { makePdf, md5 } from "../../fixtures/pdf.js";
import { RefServerProcess } from "../helpers/refserver-process.js";

const API_KEY = "zk-SEED-SECRET-0123456789";
const BUSY_DOCS = 6;
const BUSY_PAGES = 1500;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function bigPdf(n: number): Buffer {
  const line = "The pipeline reads every page of this document while uploads arrive. ";
  const pages = Array.from({ length: BUSY_PAGES }, (_, i) => `Busy document ${n}, page ${i + 1}\n${line.repeat(12).match(/.{1,80}/g)!.join("\n")}`);
  return makePdf({ title: `Busy document ${n}`, pages });
}

interface Scenario {
  server: RefServerProcess;
  proxy: FaultProxy;
  want: Map<string, string>;
  run: Awaited<ReturnType<typeof runCli>>;
  context: string;
}

/** A fresh server made busy with large documents, a proxy in front, 8 Zotero papers, one import run. */
async function seedScenario(libraryId: number, prepareProxy: (proxy: FaultProxy) => void): Promise<Scenario> {
  const library = makeLibrary({ apiKey: API_KEY, libraryId, items: 8, seed: libraryId });
  const pdfs = library.pdfPairs();
  expect(pdfs).toHaveLength(8);
  const want = new Map(pdfs.map((p) => [p.parent!.key, md5(p.body)]));

  const zotero = new FakeZotero({ library });
  const z = await zotero.start();
  cleanups.push(() => z.close());
  const server = new RefServerProcess();
  cleanups.push(() => server.close());
  await server.start();

  // Make the worker busy: large multi-page PDFs straight to the server, and wait until it works on them.
  const token = await server.login();
  for (let i = 0; i < BUSY_DOCS; i++) {
    const r = await server.upload(token, bigPdf(i), { title: `Busy document ${i}`, filename: `busy-${i}.pdf` });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
  }
  await waitFor(() => server.db().jobs().some((j) => j.current_step === "text" || j.current_step === "chunking" || j.status === "completed"), 50_000, "the worker to start");
  expect(server.db().counts().jobsByStatus.processing ?? 0).toBeGreaterThanOrEqual(BUSY_DOCS - 1);

  const proxy = new FaultProxy({ target: server.url, seed: libraryId });
  await proxy.start();
  cleanups.push(() => proxy.close());
  prepareProxy(proxy);

  const sandbox = makeSandbox({
    zoteroUrl: z.url,
    refserverUrl: proxy.url,
    libraryId: String(libraryId),
    apiKey: API_KEY,
    username: server.adminUser,
    password: server.adminPassword,
    batchSize: 4,
    retries: 8,
    timeoutSeconds: 10,
  });
  cleanups.unshift(() => removeSandbox(sandbox)); // runs last, after the servers stop
  const run = await runCli(["--json"], sandbox);
  const context = `stdout:\n${run.stdout}\nstderr:\n${run.stderr.slice(-3000)}\nproxy ${JSON.stringify(proxy.counters)}`;
  return { server, proxy, want, run, context };
}

/** The server holds the 8 papers once each with the right bytes, and its worker was busy when they landed. */
async function expectEightOnBusyServer(s: Scenario, libraryId: number): Promise<void> {
  const db = s.server.db();
  const links = db.links(String(libraryId));
  expect(links.map((l) => l.zotero_key).sort()).toEqual([...s.want.keys()].sort());
  expect(db.duplicateKeys()).toEqual([]);
  for (const l of links) expect(md5(await s.server.download(l.paper_id)), l.zotero_key).toBe(s.want.get(l.zotero_key));
  const jobs = db.jobs();
  const ours = new Set(links.map((l) => l.paper_id));
  const firstOurs = jobs.filter((j) => ours.has(j.paper_id)).map((j) => j.created_at).sort()[0]!;
  const busy = jobs.filter((j) => !ours.has(j.paper_id));
  expect(busy).toHaveLength(BUSY_DOCS);
  expect(busy.some((j) => j.completed_at === null || j.completed_at > firstOurs), JSON.stringify(jobs)).toBe(true);
}

interface JsonSummary {
  exitCode: number;
  imported: number;
  alreadyPresent: number;
  failed: unknown[];
  retries: number;
}

describe("the seed scenario", () => {
  it("imports 8 of 8 while the server's worker is busy and 7 of the first 8 uploads are answered 'database is locked'", { timeout: 90_000 }, async () => {
    const s = await seedScenario(8888, (proxy) => proxy.forceNext("lock", 7));
    expect(s.run.code, s.context).toBe(0);
    const summary = JSON.parse(s.run.stdout) as JsonSummary;
    expect(summary).toMatchObject({ exitCode: 0, imported: 8, alreadyPresent: 0, failed: [] });
    expect(summary.retries).toBeGreaterThanOrEqual(7);
    expect(s.proxy.counters.lock).toBe(7);
    expect(s.proxy.counters.matched).toBe(15);
    await expectEightOnBusyServer(s, 8888);
  });

  it("refserver-lite itself answers no upload with 500 while its worker is busy: 8 of 8 at the first attempt", { timeout: 90_000 }, async () => {
    const s = await seedScenario(8889, () => undefined);
    expect(s.run.code, s.context).toBe(0);
    expect(JSON.parse(s.run.stdout) as JsonSummary).toMatchObject({ exitCode: 0, imported: 8, failed: [], retries: 0 });
    const uploads = s.proxy.log.filter((e) => e.matchIndex >= 0);
    expect(uploads.map((e) => e.upstreamStatus)).toEqual(Array(8).fill(200));
    await expectEightOnBusyServer(s, 8889);
  });
});
