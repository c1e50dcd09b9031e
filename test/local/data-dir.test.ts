import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { Agent } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/load.js";
import { validateConfig } from "../../src/config/schema.js";
import { realSleep } from "../../src/util/time.js";
import { parsePrefs, resolveDataDir } from "../../src/zotero/data-dir.js";
import { ZoteroLocalApi } from "../../src/zotero/local-api.js";
import { ZoteroLocalSource } from "../../src/zotero/local.js";
import { FakeLocalApi } from "../helpers/fake-local-api.js";
import { makeSampleLibrary, toZoteroJson, writeZoteroDataDir } from "../../scripts/sample-library.js";

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), "ifz-datadir-"));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

describe("Zotero's prefs.js and data directory", () => {
  it("parses user_pref lines, Windows paths with doubled backslashes included", () => {
    const prefs = parsePrefs(
      [
        "// Mozilla User Preferences",
        'user_pref("extensions.zotero.baseAttachmentPath", "C:\\\\Users\\\\me\\\\Dropbox\\\\Papers");',
        'user_pref("extensions.zotero.dataDir", "/home/me/Zotero Data");',
        'user_pref("extensions.zotero.useDataDir", true);',
        'user_pref("extensions.zotero.sync.storage.version", 3);',
      ].join("\n"),
    );
    expect(prefs.get("extensions.zotero.baseAttachmentPath")).toBe("C:\\Users\\me\\Dropbox\\Papers");
    expect(prefs.get("extensions.zotero.dataDir")).toBe("/home/me/Zotero Data");
    expect(prefs.get("extensions.zotero.useDataDir")).toBe(true);
    expect(prefs.get("extensions.zotero.sync.storage.version")).toBe(3);
  });

  it("defaults to ~/Zotero, or the custom data directory the profile names, with its base directory", () => {
    const home = join(root, "home-a");
    mkdirSync(home, { recursive: true });
    const p = { platform: "linux" as const, home, env: {} };
    expect(resolveDataDir(undefined, p)).toEqual({ dataDir: join(home, "Zotero"), prefsFile: null, baseAttachmentPath: null });
    const profile = join(home, ".zotero", "zotero", "ab12cd34.default");
    mkdirSync(profile, { recursive: true });
    writeFileSync(
      join(profile, "prefs.js"),
      `user_pref("extensions.zotero.dataDir", ${JSON.stringify(join(root, "custom"))});\nuser_pref("extensions.zotero.useDataDir", true);\nuser_pref("extensions.zotero.baseAttachmentPath", "/papers");\n`,
    );
    expect(resolveDataDir(undefined, p)).toEqual({ dataDir: join(root, "custom"), prefsFile: join(profile, "prefs.js"), baseAttachmentPath: "/papers" });
    // A configured directory wins; ~ is the home directory.
    expect(resolveDataDir("~/Elsewhere", p).dataDir).toBe(join(home, "Elsewhere"));
  });

  it("finds profiles where macOS and Windows keep them", () => {
    const home = join(root, "home-b");
    const mac = join(home, "Library", "Application Support", "Zotero", "Profiles", "x.default");
    const win = join(home, "AppData", "Roaming", "Zotero", "Zotero", "Profiles", "y.default");
    for (const [dir, base] of [
      [mac, "/mac/base"],
      [win, "D:\\\\base"],
    ] as const) {
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, "prefs.js"), `user_pref("extensions.zotero.baseAttachmentPath", "${base}");\n`);
    }
    expect(resolveDataDir(undefined, { platform: "darwin", home, env: {} }).baseAttachmentPath).toBe("/mac/base");
    expect(resolveDataDir(undefined, { platform: "win32", home, env: { APPDATA: join(home, "AppData", "Roaming") } }).baseAttachmentPath).toBe("D:\\base");
  });
});

describe("config for the local sources", () => {
  const refserver = { api_url: "http://127.0.0.1:9", username: "admin", password: "pw-123456" };

  it("needs no key and no user ID for local and local-api, and knows the local API's address", () => {
    const local = validateConfig({ zotero: { source: "local", data_dir: "/z" }, refserver });
    expect(local.problems).toEqual([]);
    expect(local.config?.zotero).toMatchObject({ source: "local", library_id: "0", api_key: "", data_dir: "/z" });
    const api = validateConfig({ zotero: { source: "local-api" }, refserver });
    expect(api.config?.zotero).toMatchObject({ source: "local-api", library_id: "0", api_url: "http://127.0.0.1:23119/api" });
  });

  it("still names zotero.api_key, in one line, when the web source has none", () => {
    const { problems } = validateConfig({ zotero: { library_id: "12" }, refserver });
    expect(problems[0]).toEqual({ key: "zotero.api_key", message: "expected a Zotero API key (or set ZOTERO_API_KEY)" });
    expect(validateConfig({ zotero: { source: "sqlite" }, refserver }).problems[0]?.key).toBe("zotero.source");
  });

  it("--zotero-dir switches a web config to the data directory, resolved from the working directory", () => {
    const dir = join(root, "cfg");
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "config.yml"), "zotero:\n  library_id: 99\n  api_key: zk-abcdef\nrefserver:\n  api_url: http://127.0.0.1:9\n  username: a\n  password: p-123456\n", { mode: 0o600 });
    const { config } = loadConfig(join(dir, "config.yml"), { zoteroDir: "data/Zotero" }, {}, dir);
    expect(config.zotero).toMatchObject({ source: "local", data_dir: join(dir, "data", "Zotero"), library_id: "99" });
  });
});

describe("local sources, edge cases", () => {
  it("explains a relative linked file when no profile sets the base directory", async () => {
    const lib = makeSampleLibrary();
    const layout = writeZoteroDataDir(lib, join(root, "noprofile"), { noProfile: true });
    const source = new ZoteroLocalSource({ dataDir: layout.dataDir, library: { type: "user", id: "0" }, baseAttachmentPath: null, tmpDir: root });
    try {
      const items = (await source.list({})).items;
      const relative = items.flatMap((i) => i.attachments).find((a) => a.linkMode === "linked_file" && a.title === "Linked PDF" && items.find((i) => i.attachments.includes(a))?.title.includes("Base Directory"))!;
      await expect(source.openFile(relative)).rejects.toMatchObject({ code: "ZOTERO_FILE_MISSING", message: expect.stringMatching(/base directory.*prefs\.js/) });
      expect(source.snapshotPath).not.toBeNull();
    } finally {
      source.close();
    }
    expect(source.snapshotPath).toBeNull();
  });

  it("reads one library of a database that also holds a group library", async () => {
    const lib = makeSampleLibrary();
    const layout = writeZoteroDataDir(lib, join(root, "groups"));
    const db = new Database(join(layout.dataDir, "zotero.sqlite"));
    db.prepare("INSERT INTO libraries (libraryID, type, editable, filesEditable, version) VALUES (7, 'group', 1, 1, 77)").run();
    db.prepare("INSERT INTO groups (groupID, libraryID, name, description, version) VALUES (4242, 7, 'Lab', '', 77)").run();
    const bookType = (db.prepare("SELECT itemTypeID FROM itemTypes WHERE typeName = 'book'").get() as { itemTypeID: number }).itemTypeID;
    db.prepare("INSERT INTO items (itemTypeID, libraryID, key, version, synced) VALUES (?, 7, 'GRP22222', 70, 1)").run(bookType);
    db.close();
    const user = new ZoteroLocalSource({ dataDir: layout.dataDir, library: { type: "user", id: "0" }, tmpDir: root });
    const group = new ZoteroLocalSource({ dataDir: layout.dataDir, library: { type: "group", id: "4242" }, tmpDir: root });
    const missing = new ZoteroLocalSource({ dataDir: layout.dataDir, library: { type: "group", id: "999" }, tmpDir: root });
    try {
      const userKeys = (await user.list({})).items.map((i) => i.key);
      expect(userKeys).not.toContain("GRP22222");
      expect(userKeys.length).toBe(20);
      const groupListing = await group.list({});
      expect(groupListing.items.map((i) => i.key)).toEqual(["GRP22222"]);
      expect(groupListing.libraryVersion).toBe(77);
      await expect(missing.list({})).rejects.toMatchObject({ code: "CONFIG_INVALID", message: expect.stringMatching(/group 999/) });
    } finally {
      for (const s of [user, group, missing]) s.close();
    }
  });

  it("tells how to enable Zotero's local API when it answers 403", async () => {
    const lib = makeSampleLibrary();
    const json = toZoteroJson(lib);
    const api = new FakeLocalApi({ libraryVersion: lib.libraryVersion, items: json.items, collections: json.collections, paths: json.paths }, { disabled: true });
    const url = await api.start();
    const dispatcher = new Agent();
    try {
      const source = new ZoteroLocalApi({ baseUrl: `${url}/api`, dispatcher, retry: { retries: 0, minDelayMs: 0, maxDelayMs: 0 }, sleep: realSleep });
      await expect(source.list({})).rejects.toMatchObject({ code: "ZOTERO_AUTH", message: expect.stringMatching(/Allow other applications/) });
      // No API key header value is ever sent to the local API.
      expect(api.log[0]?.headers["zotero-api-key"] ?? "").toBe("");
    } finally {
      await api.close();
      await dispatcher.close();
    }
  });
});
