/**
 * One contract for every Zotero source: the same sample library, served by the fake Web API,
 * written as a Zotero data directory (zotero.sqlite + storage/), and served by a fake of
 * Zotero 7's local API, must give the same items, metadata, collections and files (by MD5).
 * Every source is made the way the CLI makes it: config → validateConfig → makeSource.
 */
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { validateConfig } from "../../src/config/schema.js";
import { ImportError } from "../../src/errors.js";
import { realSleep } from "../../src/util/time.js";
import { makeSource, type ConfiguredSource } from "../../src/zotero/factory.js";
import type { Attachment, Item } from "../../src/zotero/types.js";
import { FakeLocalApi } from "../helpers/fake-local-api.js";
import { FakeZotero, type ZoteroCollection, type ZoteroItem, type ZoteroLibraryData } from "../../fixtures/fake-zotero.js";
import { expectedItems, fileMd5s, makeSampleLibrary, toZoteroJson, writeZoteroDataDir, type DataDirLayout, type SampleLibrary } from "../../scripts/sample-library.js";

const API_KEY = "zk-CONTRACT-0123456789";
const REFSERVER = { api_url: "http://127.0.0.1:9", username: "admin", password: "unused-pw" };

interface SourceCase {
  name: "web" | "local" | "local-api";
  /** Whether the source can read linked files on this computer. */
  readsLinkedFiles: boolean;
  start(lib: SampleLibrary, layout: DataDirLayout, dispatcher: Agent): Promise<{ source: ConfiguredSource; stop(): Promise<void> }>;
}

function configFor(zotero: Record<string, unknown>) {
  const { config, problems } = validateConfig({ zotero, refserver: REFSERVER });
  if (!config) throw new Error(`bad config: ${JSON.stringify(problems)}`);
  return config;
}

const deps = (dispatcher: Agent, layout: DataDirLayout) => ({
  dispatcher,
  retry: { retries: 2, minDelayMs: 1, maxDelayMs: 5 },
  sleep: realSleep,
  platform: { platform: process.platform, home: layout.home, env: {} },
});

const cases: SourceCase[] = [
  {
    name: "web",
    readsLinkedFiles: false,
    async start(lib, layout, dispatcher) {
      const json = toZoteroJson(lib);
      const library: ZoteroLibraryData = {
        libraryType: "user",
        libraryId: lib.userId,
        libraryName: "testuser",
        apiKey: API_KEY,
        version: lib.libraryVersion,
        items: json.items as unknown as ZoteroItem[],
        collections: json.collections as unknown as ZoteroCollection[],
        files: json.files,
        deleted: { items: new Map(), collections: new Map() },
      };
      const zotero = new FakeZotero({ library, storage: "separate" });
      const { url, close } = await zotero.start();
      const config = configFor({ source: "web", library_id: String(lib.userId), api_key: API_KEY, api_url: url });
      return { source: makeSource(config, deps(dispatcher, layout)), stop: close };
    },
  },
  {
    name: "local",
    readsLinkedFiles: true,
    async start(_lib, layout, dispatcher) {
      const config = configFor({ source: "local", data_dir: layout.dataDir });
      const source = makeSource(config, deps(dispatcher, layout));
      return { source, stop: async () => void (await source.close?.()) };
    },
  },
  {
    name: "local-api",
    readsLinkedFiles: true,
    async start(lib, layout, dispatcher) {
      const json = toZoteroJson(lib, layout);
      const api = new FakeLocalApi({ libraryVersion: lib.libraryVersion, items: json.items, collections: json.collections, paths: json.paths });
      const url = await api.start();
      const config = configFor({ source: "local-api", api_url: `${url}/api` });
      return { source: makeSource(config, deps(dispatcher, layout)), stop: () => api.close() };
    },
  },
];

/** A source's item in comparable form: collections and tags sorted, size left out (only some sources know it). */
function comparable(item: Item) {
  const att = (a: Attachment) => ({ key: a.key, version: a.version, parentKey: a.parentKey, title: a.title, linkMode: a.linkMode, contentType: a.contentType, filename: a.filename, md5: a.md5 });
  return {
    key: item.key,
    version: item.version,
    itemType: item.itemType,
    title: item.title,
    creators: item.creators,
    date: item.date,
    year: item.year,
    doi: item.doi,
    collections: [...item.collections].sort(),
    tags: [...item.tags].sort(),
    standalone: item.standalone,
    attachments: item.attachments.map(att),
  };
}

async function md5Of(source: ConfiguredSource, attachment: Attachment): Promise<string> {
  const { body } = await source.openFile(attachment);
  const hash = createHash("md5");
  for await (const chunk of body as unknown as AsyncIterable<Uint8Array>) hash.update(chunk);
  return hash.digest("hex");
}

const lib = makeSampleLibrary();
let root: string;
let layout: DataDirLayout;

beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "ifz-contract-"));
  layout = writeZoteroDataDir(lib, root);
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe.each(cases)("Zotero source contract: $name", (c) => {
  let source: ConfiguredSource;
  let stop: () => Promise<void>;
  const dispatcher = new Agent({ connections: 4 });

  beforeAll(async () => {
    ({ source, stop } = await c.start(lib, layout, dispatcher));
  });
  afterAll(async () => {
    await stop?.();
    await dispatcher.close();
  });

  it("lists exactly the library's items (no trash, no child notes) with the same metadata", async () => {
    const listing = await source.list({});
    const got = listing.items.map(comparable).sort((a, b) => (a.key < b.key ? -1 : 1));
    expect(got).toEqual(expectedItems(lib));
    expect(listing.invalid).toEqual([]);
    expect(got.length).toBeGreaterThanOrEqual(18);
  });

  it("reports the library version, for incremental runs", async () => {
    expect((await source.list({})).libraryVersion).toBe(lib.libraryVersion);
  });

  it("keeps creators in their order, two-field and single-field names alike", async () => {
    const items = (await source.list({})).items;
    const phylo = items.find((i) => i.title.startsWith("Bayesian Phylogeny"));
    expect(phylo?.creators.map((cr) => cr.lastName)).toEqual(["Núñez", "O'Brien", "Þórsson"]);
    const who = items.find((i) => i.title === "World Report on Examples");
    expect(who?.creators).toEqual([
      { creatorType: "author", name: "World Health Organization" },
      { creatorType: "contributor", firstName: "Tim", lastName: "Berners-Lee" },
    ]);
  });

  it("lists the collections with their nesting", async () => {
    const got = (await source.listCollections()).map((col) => ({ key: col.key, name: col.name, parentKey: col.parentKey })).sort((a, b) => (a.key < b.key ? -1 : 1));
    const want = lib.collections.map((col) => ({ key: col.key, name: col.name, parentKey: col.parentKey })).sort((a, b) => (a.key < b.key ? -1 : 1));
    expect(got).toEqual(want);
    expect(got.some((col) => col.parentKey !== null && want.some((p) => p.key === col.parentKey && p.parentKey !== null))).toBe(true);
  });

  it("opens every stored file with the same bytes (by MD5)", async () => {
    const items = (await source.list({})).items;
    const files = fileMd5s(lib);
    let checked = 0;
    for (const item of items) {
      for (const a of item.attachments) {
        const want = files.get(a.key);
        if (!want || want.linked) continue;
        expect(await md5Of(source, a), `${item.title} / ${a.filename}`).toBe(want.md5);
        checked++;
      }
    }
    // Every stored file of the library was listed and opened (PDFs and the HTML snapshots).
    expect(checked).toBe([...files.values()].filter((f) => !f.linked).length);
    expect(checked).toBeGreaterThanOrEqual(14);
  });

  it(c.readsLinkedFiles ? "reads linked files (absolute and attachments:-relative) from this computer" : "says a linked file is not in its storage", async () => {
    const items = (await source.list({})).items;
    const linked = items.flatMap((i) => i.attachments).filter((a) => a.linkMode === "linked_file");
    expect(linked).toHaveLength(2);
    const files = fileMd5s(lib);
    for (const a of linked) {
      if (c.readsLinkedFiles) expect(await md5Of(source, a)).toBe(files.get(a.key)!.md5);
      else await expect(source.openFile(a)).rejects.toMatchObject({ code: "ZOTERO_FILE_MISSING" });
    }
  });

  it("says ZOTERO_FILE_MISSING for a stored PDF whose file is not there", async () => {
    const items = (await source.list({})).items;
    const missing = items.find((i) => i.title === "A PDF Zotero Never Downloaded")!.attachments[0]!;
    const error = await source.openFile(missing).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ImportError);
    expect((error as ImportError).code).toBe("ZOTERO_FILE_MISSING");
  });

  it("lists only what changed after a library version (plus the keys asked for)", async () => {
    const sorted = lib.items.filter((i) => !i.trashed).sort((a, b) => a.version - b.version);
    const since = sorted[Math.floor(sorted.length / 2)]!.version;
    const asked = sorted[0]!;
    const listing = await source.list({ since, alsoKeys: [asked.key] });
    const want = lib.items
      .filter((i) => !i.trashed && (i.version > since || i.attachments.some((a) => !a.trashed && a.version > since) || i.key === asked.key))
      .map((i) => i.key)
      .sort();
    expect(listing.items.map((i) => i.key).sort()).toEqual(want);
    expect(want.length).toBeLessThan(expectedItems(lib).length);
  });
});
