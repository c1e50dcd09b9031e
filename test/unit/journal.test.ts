import { appendFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { hostname } from "node:os";
import { afterEach, describe, expect, it } from "vitest";
import { Journal, readJournal } from "../../src/journal/journal.js";
import { acquireLock } from "../../src/journal/lock.js";
import { loadState, saveState, snapshotPath } from "../../src/journal/snapshot.js";
import { reduceJournal } from "../../src/journal/state.js";

const dirs: string[] = [];
const dir = (): string => {
  const d = mkdtempSync(join(tmpdir(), "ifz-journal-"));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("journal", () => {
  it("ignores a torn last line and appends the next record on a line of its own", () => {
    const path = join(dir(), "cp.ndjson");
    const j = Journal.open(path);
    j.append({ t: "item", ts: "t", run: "r", scope: "s", key: "AAAAAAAA", version: 1, status: "done", via: "uploaded" });
    j.close();
    appendFileSync(path, '{"t":"item","ts":"t","run":"r","scope":"s","key":"BBBB'); // SIGKILL mid-write
    expect(readJournal(path)).toMatchObject({ badLines: 0, tornTail: true });
    expect(readJournal(path).records).toHaveLength(1);
    const again = Journal.open(path);
    again.append({ t: "item", ts: "t", run: "r", scope: "s", key: "CCCCCCCC", version: 1, status: "started" });
    again.close();
    const lines = readFileSync(path, "utf8").trim().split("\n");
    expect(lines).toHaveLength(2);
    const state = reduceJournal(readJournal(path).records, "s");
    expect([...state.items.keys()]).toEqual(["AAAAAAAA", "CCCCCCCC"]);
  });

  it("group-commits concurrent durable appends: every record lands, each on its own line", async () => {
    const path = join(dir(), "cp.ndjson");
    const j = Journal.open(path);
    const keys = Array.from({ length: 50 }, (_, i) => `K${String(i).padStart(7, "2")}`);
    await Promise.all(keys.map((key) => j.appendDurable({ t: "item", ts: "t", run: "r", scope: "s", key, version: 1, status: "done" })));
    // And a second wave while nothing is syncing.
    await j.appendDurable({ t: "run", ts: "t", run: "r", scope: "s", event: "end" });
    j.close();
    const { records, badLines } = readJournal(path);
    expect(badLines).toBe(0);
    expect(records).toHaveLength(51);
    expect(new Set(records.flatMap((r) => (r.t === "item" ? [r.key] : [])))).toEqual(new Set(keys));
    await expect(j.appendDurable({ t: "run", ts: "t", run: "r", scope: "s", event: "end" })).rejects.toThrow(/closed/);
  });

  it("counts a corrupt line in the middle instead of failing", () => {
    const path = join(dir(), "cp.ndjson");
    writeFileSync(path, '{"t":"run","ts":"t","run":"r","scope":"s","event":"start"}\nnot json\n{"t":"run","ts":"t","run":"r","scope":"s","event":"end"}\n');
    expect(readJournal(path)).toMatchObject({ badLines: 1, tornTail: false });
  });
});

describe("lock", () => {
  it("refuses a second holder while the first lives, and takes over from a dead one", () => {
    const path = join(dir(), "cp.lock");
    const release = acquireLock(path);
    expect(() => acquireLock(path)).toThrow(expect.objectContaining({ code: "LOCK_BUSY" }));
    release();
    // A lock left by a process that no longer exists (SIGKILL) is taken over at once.
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]).stdout.toString();
    writeFileSync(path, JSON.stringify({ pid: Number(dead), host: hostname(), since: "x" }));
    const again = acquireLock(path);
    again();
  });
});

describe("state snapshot (<checkpoint>.state)", () => {
  const scope = "http://srv|user:1";
  const item = (key: string, status: "started" | "done" | "failed", extra: Record<string, unknown> = {}) => ({ t: "item" as const, ts: `t-${key}-${status}`, run: "r", scope, key, version: 1, status, ...extra });
  const full = (path: string) => {
    const read = readJournal(path);
    return { state: reduceJournal(read.records, scope), badLines: read.badLines };
  };

  it("gives the state of the whole journal: the snapshot, then only what was appended since", () => {
    const path = join(dir(), "cp.ndjson");
    const j = Journal.open(path);
    j.append({ t: "run", ts: "t", run: "r", scope, event: "start" });
    j.append(item("AAAAAAAA", "started"));
    j.append(item("AAAAAAAA", "done", { docId: "d1", via: "uploaded", md5: "m1", title: "A" }));
    j.append(item("BBBBBBBB", "started"));
    j.append(item("BBBBBBBB", "failed", { code: "REFSERVER_LOCKED", error: "locked" }));
    j.append({ t: "item", ts: "t", run: "r", scope: "another|user:2", key: "ZZZZZZZZ", version: 1, status: "done" });
    j.append({ t: "sync", ts: "t", run: "r", scope, filter: "f", version: 7 });
    j.close();
    appendFileSync(path, "not json\n");
    const first = loadState(path, scope);
    expect(first.fromSnapshot).toBe(false);
    saveState(path, first);
    expect(existsSync(snapshotPath(path))).toBe(true);

    // A second run: a retry of B, a metadata update of A, a new C, and a run cut short (torn line).
    const k = Journal.open(path);
    k.append({ t: "run", ts: "t2", run: "r2", scope, event: "start" });
    k.append(item("BBBBBBBB", "started"));
    k.append(item("BBBBBBBB", "done", { docId: "d2", via: "already" }));
    k.append(item("AAAAAAAA", "done", { meta: "digest", metaPending: false }));
    k.append(item("CCCCCCCC", "started"));
    k.close();
    appendFileSync(path, '{"t":"item","ts":"t","run":"r2","scope":"http://srv|user:1","key":"DDDD');

    const second = loadState(path, scope);
    expect(second.fromSnapshot).toBe(true);
    const truth = full(path);
    expect(second.state).toEqual(truth.state);
    expect(second.badLines).toBe(truth.badLines);
    expect(second.badLines).toBe(1);
    expect(second.state.items.get("BBBBBBBB")).toMatchObject({ status: "done", attempts: 2, docId: "d2" });
    expect(second.state.runs).toBe(2);
    expect(second.state.syncVersions.get("f")).toBe(7);

    // Saved again after the next run opened (and cut the torn line) and appended: still exact.
    const l = Journal.open(path);
    l.append(item("CCCCCCCC", "done", { docId: "d3", via: "uploaded" }));
    l.close();
    saveState(path, second);
    const third = loadState(path, scope);
    expect(third.fromSnapshot).toBe(true);
    expect(third.state).toEqual(full(path).state);
    expect(third.state.items.get("CCCCCCCC")).toMatchObject({ status: "done", attempts: 1 });
  });

  it("ignores a snapshot that does not match the journal, another scope's, or a broken one", () => {
    const path = join(dir(), "cp.ndjson");
    const j = Journal.open(path);
    j.append(item("AAAAAAAA", "started"));
    j.append(item("AAAAAAAA", "done", { docId: "d1" }));
    j.close();
    saveState(path, loadState(path, scope));
    expect(loadState(path, scope).fromSnapshot).toBe(true);
    expect(loadState(path, "http://other|user:1").fromSnapshot).toBe(false);

    // The journal rewritten with other bytes of the same length (restored, edited): not trusted.
    const text = readFileSync(path, "utf8");
    writeFileSync(path, text.replace('"docId":"d1"', '"docId":"d9"'));
    const rewritten = loadState(path, scope);
    expect(rewritten.fromSnapshot).toBe(false);
    expect(rewritten.state.items.get("AAAAAAAA")?.docId).toBe("d9");

    // An edit of the same length far before the end (a hand-edited line, 100 records back).
    const k = Journal.open(path);
    for (let i = 0; i < 100; i++) k.append(item(`K${String(i).padStart(7, "0")}`, "started"));
    k.close();
    saveState(path, loadState(path, scope));
    expect(loadState(path, scope).fromSnapshot).toBe(true);
    writeFileSync(path, readFileSync(path, "utf8").replace('"docId":"d9"', '"docId":"d8"'));
    const edited = loadState(path, scope);
    expect(edited.fromSnapshot).toBe(false);
    expect(edited.state.items.get("AAAAAAAA")?.docId).toBe("d8");

    // Truncated below the snapshot's offset.
    saveState(path, loadState(path, scope));
    writeFileSync(path, text.split("\n")[0] + "\n");
    const truncated = loadState(path, scope);
    expect(truncated.fromSnapshot).toBe(false);
    expect(truncated.state.items.get("AAAAAAAA")).toMatchObject({ status: "started", attempts: 1 });

    // A torn snapshot file, or one of the wrong shape.
    saveState(path, loadState(path, scope));
    const good = JSON.parse(readFileSync(snapshotPath(path), "utf8")) as Record<string, unknown>;
    for (const bad of ['{"v":1,"scope":"http://srv|us', JSON.stringify({ ...good, sync: [5] }), JSON.stringify({ ...good, items: [null] }), JSON.stringify({ ...good, items: [{ key: "AAAAAAAA" }] }), JSON.stringify({ ...good, v: 2 })]) {
      writeFileSync(snapshotPath(path), bad);
      expect(loadState(path, scope), bad).toMatchObject({ fromSnapshot: false, badLines: 0 });
    }
    writeFileSync(snapshotPath(path), JSON.stringify(good));
    expect(loadState(path, scope).fromSnapshot).toBe(true);
  });

  it("never fails a run when the snapshot cannot be written, and leaves no temporary file", () => {
    const d = dir();
    const path = join(d, "cp.ndjson");
    const j = Journal.open(path);
    j.append(item("AAAAAAAA", "done"));
    j.close();
    mkdirSync(snapshotPath(path)); // rename onto a directory fails
    expect(() => saveState(path, loadState(path, scope))).not.toThrow();
    expect(readdirSync(d).sort()).toEqual(["cp.ndjson", "cp.ndjson.state"]);
    // A temporary file left by a run killed mid-write is taken over by the next one.
    rmSync(snapshotPath(path), { recursive: true });
    writeFileSync(`${snapshotPath(path)}.tmp`, "half a snap");
    saveState(path, loadState(path, scope));
    expect(readdirSync(d).sort()).toEqual(["cp.ndjson", "cp.ndjson.state"]);
    expect(loadState(path, scope).fromSnapshot).toBe(true);
    expect(loadState(path, scope).state.items.get("AAAAAAAA")?.status).toBe("done");
  });
});
