import { randomUUID } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  closeDatabase,
  isBusyError,
  openDatabase,
  writeTransaction,
  type SqliteDatabase,
} from "../src/db/connection.js";
import { migrate } from "../src/db/migrations.js";
import { SqliteRepository, type NewUpload } from "../src/db/repository.js";
import { holdLock } from "./helpers/lock-holder.js";
import { removeTempDirs, tempDataDir } from "./helpers/app.js";

const open: SqliteDatabase[] = [];

async function freshDb(opts: { busyTimeoutMs?: number } = {}) {
  const path = join(await tempDataDir(), "t.db");
  const db = openDatabase({ path, ...opts });
  migrate(db);
  open.push(db);
  return { path, db, repo: new SqliteRepository(db) };
}

function upload(zoteroKey?: string): NewUpload {
  const docId = randomUUID();
  return {
    docId,
    jobId: randomUUID(),
    filename: "a.pdf",
    filePath: `pdfs/${docId}.pdf`,
    fileSize: 10,
    title: "T",
    authors: ["A"],
    year: 2020,
    zotero: zoteroKey ? { key: zoteroKey, libraryId: "1", version: 3, collectionKeys: null, tags: null } : null,
  };
}

afterEach(() => {
  for (const db of open.splice(0)) closeDatabase(db);
});
afterAll(removeTempDirs);

describe("pragmas", () => {
  it("sets WAL, synchronous=NORMAL, busy_timeout 5000 by default, foreign_keys and temp_store=MEMORY", async () => {
    const { db } = await freshDb();
    expect(db.pragma("journal_mode", { simple: true })).toBe("wal");
    expect(db.pragma("synchronous", { simple: true })).toBe(1); // NORMAL
    expect(db.pragma("busy_timeout", { simple: true })).toBe(5000);
    expect(db.pragma("foreign_keys", { simple: true })).toBe(1);
    expect(db.pragma("temp_store", { simple: true })).toBe(2); // MEMORY
  });

  it("takes the busy timeout from the options", async () => {
    const { db } = await freshDb({ busyTimeoutMs: 1234 });
    expect(db.pragma("busy_timeout", { simple: true })).toBe(1234);
  });

  it("foreign keys reject a job or metadata row for a missing paper", async () => {
    const { db } = await freshDb();
    expect(() =>
      db.prepare("INSERT INTO metadata (paper_id, title, source) VALUES ('no-such-paper', 't', 'user_api')").run(),
    ).toThrow(/FOREIGN KEY/);
  });
});

describe("lock behaviour against a second process", () => {
  it("busy_timeout: a write waits for another writer instead of failing", async () => {
    const { path, repo, db } = await freshDb();
    await repo.createUser("someone", "x", true);
    const holder = holdLock(path, "write", 400);
    await holder.ready;
    expect(await repo.recordLogin("someone")).toBe(true); // waited, then wrote
    expect(await holder.done).toBe(0);
    expect(db.prepare("SELECT last_login FROM user WHERE username = 'someone'").get()).toMatchObject({
      last_login: expect.any(String),
    });
  });

  it("control: with busy_timeout 0 the same write fails at once with SQLITE_BUSY", async () => {
    const { path, repo } = await freshDb({ busyTimeoutMs: 0 });
    await repo.createUser("someone", "x", true);
    const holder = holdLock(path, "write", 400);
    await holder.ready;
    let err: unknown;
    try {
      await repo.recordLogin("someone");
    } catch (e) {
      err = e;
    }
    await holder.done;
    expect(isBusyError(err)).toBe(true);
  });

  it("BEGIN IMMEDIATE: a read-then-write transaction (claiming a job) waits out another writer", async () => {
    const { path, repo } = await freshDb();
    expect(await repo.createUpload(upload())).toEqual({ ok: true });
    const holder = holdLock(path, "write", 400);
    await holder.ready;
    const claimed = (await repo.claimNextJob(3)); // SELECT then UPDATE
    await holder.done;
    expect(claimed).not.toBeNull();
    expect(claimed?.attempts).toBe(1);
  });

  it("control: the same read-then-write as a DEFERRED transaction fails at once despite a 5 s busy timeout", async () => {
    const { path, db } = await freshDb();
    const holder = holdLock(path, "write", 400);
    await holder.ready;
    const deferred = db.transaction(() => {
      db.prepare("SELECT COUNT(*) FROM user").get();
      db.prepare("INSERT INTO user (username, password_hash, created_at) VALUES ('x', 'x', 'now')").run();
    });
    let err: unknown;
    try {
      deferred.deferred();
    } catch (e) {
      err = e;
    }
    await holder.done;
    expect(isBusyError(err)).toBe(true);
    // ...while writeTransaction (immediate) succeeds once the holder is gone
    writeTransaction(db, () => {
      db.prepare("SELECT COUNT(*) FROM user").get();
      db.prepare("INSERT INTO user (username, password_hash, created_at) VALUES ('x', 'x', 'now')").run();
    });
  });

  it("WAL: an upload commits while another connection holds a read transaction open", async () => {
    const { path, repo } = await freshDb({ busyTimeoutMs: 200 });
    const reader = holdLock(path, "read", 800);
    await reader.ready;
    expect(await repo.createUpload(upload("WALKEY01"))).toEqual({ ok: true });
    await reader.done;
  });

  it("control: in rollback-journal mode the same commit fails with 'database is locked' behind a reader", async () => {
    const { path, repo, db } = await freshDb();
    db.pragma("journal_mode = DELETE");
    db.pragma("busy_timeout = 200");
    const reader = holdLock(path, "read", 800);
    await reader.ready;
    let err: unknown;
    try {
      await repo.createUpload(upload("WALKEY02"));
    } catch (e) {
      err = e;
    }
    await reader.done;
    expect(isBusyError(err)).toBe(true);
    expect((err as Error).message).toMatch(/database is locked/);
  });
});

describe("uploads are one transaction", () => {
  it("a duplicate (library, key) rolls back every row of the second upload", async () => {
    const { repo, db } = await freshDb();
    const first = upload("DUPKEY01");
    expect(await repo.createUpload(first)).toEqual({ ok: true });
    const second = upload("DUPKEY01");
    expect(await repo.createUpload(second)).toEqual({
      ok: false,
      reason: "duplicate",
      zoteroKey: "DUPKEY01",
      existingDocId: first.docId,
    });
    for (const table of ["paper", "metadata", "zoterolink", "processingjob"]) {
      expect(db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get()).toEqual({ n: 1 });
    }
    const meta = db.prepare("SELECT source FROM metadata").get();
    expect(meta).toEqual({ source: "user_api" });
  });

  it("the same key in another library is a different item", async () => {
    const { repo } = await freshDb();
    expect(await repo.createUpload(upload("SAMEKEY1"))).toEqual({ ok: true });
    const other = upload("SAMEKEY1");
    other.zotero = { key: "SAMEKEY1", libraryId: "2", version: 1, collectionKeys: null, tags: null };
    expect(await repo.createUpload(other)).toEqual({ ok: true });
  });
});

describe("close", () => {
  it("checkpoints the WAL so no -wal file is left behind", async () => {
    const { path, db, repo } = await freshDb();
    for (let i = 0; i < 20; i++) await repo.createUpload(upload());
    expect(existsSync(`${path}-wal`)).toBe(true);
    closeDatabase(db);
    expect(!existsSync(`${path}-wal`) || statSync(`${path}-wal`).size === 0).toBe(true);
  });
});
