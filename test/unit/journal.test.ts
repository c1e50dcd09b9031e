import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { hostname } from "node:os";
import { afterEach, describe, expect, it } from "vitest";
import { Journal, readJournal } from "../../src/journal/journal.js";
import { acquireLock } from "../../src/journal/lock.js";
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
