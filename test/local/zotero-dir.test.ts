/**
 * The real CLI reading a Zotero data directory (--zotero-dir) and uploading to a fake
 * RefServer on 127.0.0.1: what arrives, that the data directory is left exactly as it was,
 * and that it works while another process (as Zotero does) holds an exclusive lock.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { makeSandbox, runCli, type Sandbox } from "../helpers/cli.js";
import { FakeLocalApi } from "../helpers/fake-local-api.js";
import { FakeRefServer } from "../helpers/fake-refserver.js";
import { importablePdfs, makeSampleLibrary, toZoteroJson, writeZoteroDataDir, type DataDirLayout } from "../../scripts/sample-library.js";

const PASSWORD = "pw-LOCAL-SECRET-42";
const lib = makeSampleLibrary();

let root: string;
let layout: DataDirLayout;
let refserver: FakeRefServer;
let close: () => Promise<void>;
let sandbox: Sandbox;
let tmp: string;
const children: ChildProcess[] = [];

beforeEach(async () => {
  root = mkdtempSync(join(tmpdir(), "ifz-local-"));
  layout = writeZoteroDataDir(lib, root);
  refserver = new FakeRefServer({ username: "admin", password: PASSWORD });
  const started = await refserver.start();
  close = started.close;
  // A config made for the Web API: --zotero-dir alone switches it to the data directory.
  sandbox = makeSandbox({ zoteroUrl: "http://127.0.0.1:9", libraryId: String(lib.userId), apiKey: "zk-unused-0123456789", refserverUrl: started.url, password: PASSWORD });
  tmp = join(root, "tmp");
  mkdirSync(tmp);
});

afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill("SIGKILL");
  await close();
  rmSync(root, { recursive: true, force: true });
  rmSync(sandbox.dir, { recursive: true, force: true });
});

/** Every file under dir: relative path → size, mtime and SHA-256. */
function tree(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      const s = statSync(p);
      if (s.isDirectory()) {
        out.set(`${relative(dir, p)}/`, `dir ${s.mtimeMs}`);
        walk(p);
      } else out.set(relative(dir, p), `${s.size} ${s.mtimeMs} ${createHash("sha256").update(readFileSync(p)).digest("hex")}`);
    }
  };
  walk(dir);
  return out;
}

/** The CLI with HOME holding the Zotero profile (prefs.js) and TMPDIR where the snapshot goes. */
const run = (args: string[]) => runCli(["--zotero-dir", layout.dataDir, ...args], sandbox, { HOME: layout.home, TMPDIR: tmp });

function expectAllImported() {
  const want = importablePdfs(lib, { linkedFiles: true });
  expect(want.length).toBeGreaterThanOrEqual(12);
  expect(refserver.papers.size).toBe(want.length);
  for (const p of want) expect(refserver.papers.get(p.itemKey)?.md5, p.itemKey).toBe(p.md5);
  expect(refserver.duplicateKeys()).toEqual([]);
}

/** A second process that opens zotero.sqlite as Zotero does: exclusive locking mode, then a write. */
function holdExclusiveLock(dbPath: string, wal = false): Promise<ChildProcess> {
  const script = `
    const Database = require("better-sqlite3");
    const db = new Database(process.argv[1]);
    db.pragma("locking_mode = EXCLUSIVE");
    if (process.argv[2] === "wal") db.pragma("journal_mode = WAL");
    db.prepare("UPDATE settings SET value = 'testuser-renamed' WHERE setting = 'account' AND key = 'username'").run();
    if (process.argv[2] === "wal") db.prepare("UPDATE itemDataValues SET value = 'Graph Methods (edited while Zotero runs)' WHERE value = 'Graph Methods for Fossil Records'").run();
    process.stdout.write("locked\\n");
    process.stdin.on("end", () => { db.close(); process.exit(0); });
    process.stdin.resume();
  `;
  const child = spawn(process.execPath, ["-e", script, dbPath, wal ? "wal" : "rollback"], { cwd: process.cwd(), stdio: ["pipe", "pipe", "inherit"] });
  children.push(child);
  return new Promise((resolve, reject) => {
    child.stdout!.on("data", (d: Buffer) => {
      if (d.toString().includes("locked")) resolve(child);
    });
    child.on("exit", (code) => reject(new Error(`lock holder exited with ${code}`)));
  });
}

describe("import from a Zotero data directory (--zotero-dir)", () => {
  it("imports each stored PDF once, intact, with its metadata; skips trash, notes, links and non-PDFs", async () => {
    const r = await run([]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expectAllImported();
    const unicode = lib.items.find((i) => i.fields.title?.startsWith("Über"))!;
    const paper = refserver.papers.get(unicode.key)!;
    expect(paper.title).toBe(unicode.fields.title);
    expect(paper.authors).toEqual(["Søren Kierkegaard", "小龍 李"]);
    expect(paper.libraryId).toBe(String(lib.userId));
    expect(paper.zoteroVersion).toBe(unicode.version);
    const trashed = lib.items.find((i) => i.trashed)!;
    expect(refserver.papers.has(trashed.key)).toBe(false);
    // A second run finds everything done and uploads nothing.
    const uploads = refserver.uploads.length;
    const again = await run([]);
    expect(again.code, again.stderr).toBe(0);
    expect(refserver.uploads.length).toBe(uploads);
  });

  it("leaves the data directory byte-for-byte as it was, adds no file there, and removes its snapshot", async () => {
    const before = tree(layout.home);
    const dry = await run(["--dry-run"]);
    expect(dry.code, dry.stderr).toBe(0);
    const r = await run([]);
    expect(r.code, r.stderr).toBe(0);
    expectAllImported();
    expect(tree(layout.home)).toEqual(before);
    expect(existsSync(join(layout.dataDir, "zotero.sqlite-journal"))).toBe(false);
    expect(readdirSync(tmp)).toEqual([]);
  });

  it("works while another process holds an exclusive lock on zotero.sqlite (as Zotero does)", async () => {
    const dbPath = join(layout.dataDir, "zotero.sqlite");
    const holder = await holdExclusiveLock(dbPath);
    // The lock is real: an ordinary reader is refused.
    const reader = new Database(dbPath, { readonly: true, timeout: 0 });
    expect(() => reader.prepare("SELECT count(*) FROM items").get()).toThrow(/locked|busy/i);
    reader.close();
    const r = await run([]);
    expect(r.code, r.stderr + r.stdout).toBe(0);
    expectAllImported();
    expect(holder.exitCode).toBeNull();
    expect(readdirSync(tmp)).toEqual([]);
  });

  it("reads changes Zotero has only in zotero.sqlite-wal while it holds the database", async () => {
    const dbPath = join(layout.dataDir, "zotero.sqlite");
    await holdExclusiveLock(dbPath, true);
    expect(statSync(`${dbPath}-wal`).size).toBeGreaterThan(0);
    const r = await run(["--dry-run", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const preview = JSON.parse(r.stdout) as { items: { key: string; title: string }[] };
    const edited = lib.items.find((i) => i.fields.title === "Graph Methods for Fossil Records")!;
    expect(preview.items.find((row) => row.key === edited.key)?.title).toBe("Graph Methods (edited while Zotero runs)");
  });

  it("after a complete run, asks the database only for what changed since", async () => {
    const first = await run([]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toMatch(/listed 20 Zotero items/);
    // Zotero syncs an edit: the item and the library get a new version.
    const edited = lib.items.find((i) => i.fields.title === "Sparse Lattice Inference")!;
    const db = new Database(join(layout.dataDir, "zotero.sqlite"));
    db.prepare("UPDATE items SET version = ? WHERE key = ?").run(lib.libraryVersion + 1, edited.key);
    db.prepare("UPDATE libraries SET version = ?").run(lib.libraryVersion + 1);
    db.close();
    const second = await run([]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stderr).toMatch(new RegExp(`listed 1 Zotero item.*library version ${lib.libraryVersion + 1}`));
    expect(refserver.duplicateKeys()).toEqual([]);
  });

  it("imports through Zotero 7's local API (source: local-api), reading the file:// paths it points at", async () => {
    const json = toZoteroJson(lib, layout);
    const api = new FakeLocalApi({ libraryVersion: lib.libraryVersion, items: json.items, collections: json.collections, paths: json.paths });
    const url = await api.start();
    try {
      writeFileSync(
        sandbox.configPath,
        `zotero:\n  source: local-api\n  api_url: "${url}/api"\n  library_id: "${lib.userId}"\nrefserver:\n  api_url: "${refserver.url}"\n  username: admin\n  password: "${PASSWORD}"\nretry:\n  min_delay_seconds: 0.01\n  max_delay_seconds: 0.05\n`,
        { mode: 0o600 },
      );
      const r = await runCli([], sandbox);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expectAllImported();
      expect(api.log.filter((l) => l.path.endsWith("/file")).every((l) => l.status === 302)).toBe(true);
      expect(api.log.every((l) => l.path.startsWith("/api/users/0/"))).toBe(true);
    } finally {
      await api.close();
    }
  });

  it("says where it looked when the directory holds no zotero.sqlite (exit 2)", async () => {
    const r = await runCli(["--zotero-dir", join(root, "nowhere")], sandbox, { HOME: layout.home, TMPDIR: tmp });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no zotero\.sqlite in .*nowhere.*--zotero-dir/);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(refserver.uploads).toHaveLength(0);
  });
});
