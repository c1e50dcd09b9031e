import { appendFileSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { makeSandbox, removeSandbox, runCli, startCli, waitFor } from "../helpers/cli.js";
import { closedPort } from "../../fixtures/util.js";
import { makeWorld, type World } from "../helpers/world.js";

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

interface Line {
  t: string;
  key?: string;
  status?: string;
}
const journal = (w: World): Line[] =>
  readFileSync(w.sandbox.checkpoint, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Line];
      } catch {
        return [];
      }
    });


describe("crash safety and resumption", () => {
  it("resumes after SIGKILL mid-run: done items are not uploaded again, none is duplicated or lost", async () => {
    world = await makeWorld({ library: { items: 20 }, sandbox: { batchSize: 2 }, refserver: { delayMs: 30 } });
    const w = world;
    const run = startCli([], w.sandbox);
    await waitFor(() => w.refserver.papers.size >= 6, 50_000, "six papers");
    run.child.kill("SIGKILL");
    const killed = await run.done;
    expect(killed.signal).toBe("SIGKILL");
    const doneBefore = new Set(journal(w).flatMap((l) => (l.status === "done" && l.key ? [l.key] : [])));
    expect(doneBefore.size).toBeGreaterThan(0);

    const again = await runCli([], w.sandbox);
    expect(again.code, again.stderr).toBe(0);
    expect(w.refserver.papers.size).toBe(20);
    expect(w.refserver.duplicateKeys()).toEqual([]);
    // Items the journal had as done were never sent again.
    for (const key of doneBefore) expect(w.refserver.uploadsPerKey.get(key)).toBe(1);
    const done = new Set(journal(w).filter((l) => l.status === "done").map((l) => l.key));
    expect(done.size).toBe(20);
  });

  it("ignores a torn last journal line and uploads nothing twice", async () => {
    world = await makeWorld({ library: { items: 4 } });
    expect((await runCli([], world.sandbox)).code).toBe(0);
    appendFileSync(world.sandbox.checkpoint, '{"t":"item","ts":"2026-01-01T00:00:00Z","run":"x","sco');
    const before = world.refserver.uploads.length;
    const again = await runCli(["--since", "0"], world.sandbox);
    expect(again.code, again.stderr).toBe(0);
    expect(world.refserver.uploads.length).toBe(before);
    expect(again.stdout).toMatch(/Imported 0, already on the server 4/);
    // The torn tail was cut: every line of the journal parses again.
    for (const line of readFileSync(world.sandbox.checkpoint, "utf8").trim().split("\n")) expect(() => JSON.parse(line)).not.toThrow();
  });

  it("lets only one run hold a checkpoint: the second exits 75 at once", async () => {
    world = await makeWorld({ library: { items: 6 }, sandbox: { batchSize: 1 } });
    const w = world;
    // The first run's upload is held at the server until the second run has finished.
    const release = w.refserver.holdUploads();
    const first = startCli([], w.sandbox);
    await waitFor(() => w.refserver.uploads.length >= 1, 50_000, "first upload");
    const second = await runCli([], w.sandbox);
    release();
    expect(second.code, second.stderr).toBe(75);
    expect(second.stderr).toMatch(/another import \(pid \d+/);
    expect((await first.done).code).toBe(0);
  });

  it("stops on SIGTERM without starting new work, exits 130, and the next run finishes the rest", async () => {
    world = await makeWorld({ library: { items: 12 }, sandbox: { batchSize: 1 }, refserver: { delayMs: 60 } });
    const w = world;
    const run = startCli([], w.sandbox);
    await waitFor(() => w.refserver.papers.size >= 2, 50_000, "two papers");
    run.child.kill("SIGTERM");
    const stopped = await run.done;
    expect(stopped.code).toBe(130);
    expect(w.refserver.papers.size).toBeLessThan(12);
    const lines = journal(w);
    expect(lines.at(-1)).toMatchObject({ t: "run" });
    const again = await runCli([], w.sandbox);
    expect(again.code, again.stderr).toBe(0);
    expect(w.refserver.papers.size).toBe(12);
    expect(w.refserver.duplicateKeys()).toEqual([]);
  });

  it("asks Zotero only for changes on the next run (incremental from the saved library version)", async () => {
    world = await makeWorld({ library: { items: 5 } });
    expect((await runCli([], world.sandbox)).code).toBe(0);
    world.library.addParentWithPdf({ title: "New since last run" });
    world.zotero.resetObservations();
    const again = await runCli(["--verbose"], world.sandbox);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/Imported 1/);
    const status = await runCli(["status"], world.sandbox);
    expect(status.stdout).toMatch(/next run: changes since library version \d+/);
    const listing = world.zotero.requestsTo("items");
    expect(listing.length).toBeGreaterThan(0);
    expect(listing.every((r) => r.query.since !== undefined)).toBe(true);
    expect(world.refserver.papers.size).toBe(6);
  });

  it("picks up a PDF added later to an old item: the incremental listing fetches its parent", async () => {
    world = await makeWorld({ library: { items: 3 }, build: (lib) => void lib.addItemWithoutAttachment({ title: "PDF comes later" }) });
    expect((await runCli([], world.sandbox)).code).toBe(0);
    const parent = world.library.items.find((i) => i.data.title === "PDF comes later")!;
    world.library.addStoredAttachment(parent.key, {});
    world.zotero.resetObservations();
    const again = await runCli([], world.sandbox);
    expect(again.code, again.stderr).toBe(0);
    expect(world.refserver.papers.get(parent.key)?.title).toBe("PDF comes later");
    expect(world.zotero.requestsTo("items").some((r) => r.query.itemKey === parent.key)).toBe(true);
  });

  it("imports one collection by name, subcollections included", async () => {
    world = await makeWorld({
      library: { items: 0 },
      build: (lib) => {
        const top = lib.addCollection("Antarctica").key;
        const sub = lib.addCollection("Glaciers", top).key;
        lib.addParentWithPdf({ title: "In top", collections: [top] });
        lib.addParentWithPdf({ title: "In sub", collections: [sub] });
        lib.addParentWithPdf({ title: "Elsewhere" });
      },
    });
    const r = await runCli(["--collection", "antarctica"], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect([...world.refserver.papers.values()].map((p) => p.title).sort()).toEqual(["In sub", "In top"]);
    const unknown = await runCli(["--collection", "Nowhere"], world.sandbox);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/collection 'Nowhere' not found/);
  });

  it("honours Retry-After on 429 and Backoff from Zotero", async () => {
    world = await makeWorld({ library: { items: 3 } });
    world.zotero.rateLimitNext(1, 1);
    world.zotero.backoffOn(1, 1);
    const r = await runCli([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/Zotero answered 429: waiting 1 s/);
    expect(r.stderr).toMatch(/Zotero asked to back off: waiting 1 s/);
    expect(world.refserver.papers.size).toBe(3);
  });

  it("reads a group library", async () => {
    world = await makeWorld({ library: { items: 2, libraryType: "group", libraryId: 777 }, sandbox: { libraryType: "group" } });
    const r = await runCli([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(world.refserver.papers.size).toBe(2);
    expect(world.zotero.requestsTo("items")[0]!.path).toMatch(/^\/groups\/777\//);
  });
});

describe("exit codes", () => {
  it("2 for a bad config, naming the key", async () => {
    world = await makeWorld({ library: { items: 1 } });
    writeFileSync(world.sandbox.configPath, readFileSync(world.sandbox.configPath, "utf8").replace(/batch_size: \d+/, "batch_size: lots"));
    const r = await runCli([], world.sandbox);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect(r.stderr).toMatch(/import_options\.batch_size: expected/);
    expect(world.zotero.log).toHaveLength(0);
  });

  it("3 for a Zotero key that is refused (403)", async () => {
    world = await makeWorld({ library: { items: 1 } });
    const r = await runCli([], world.sandbox, { ZOTERO_API_KEY: "wrong-key-000" });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/Zotero refused the API key \(403\)/);
  });

  it("3 for a RefServer password that is refused", async () => {
    world = await makeWorld({ library: { items: 1 } });
    const r = await runCli([], world.sandbox, { REFSERVER_PASSWORD: "not-the-password" });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/refused the login of 'admin'/);
    expect(r.stderr).not.toContain("not-the-password");
  });

  it("75 when the RefServer cannot be reached, with nothing recorded as done", async () => {
    world = await makeWorld({ library: { items: 2 } });
    const port = await closedPort();
    const sandbox = makeSandbox({ zoteroUrl: world.zoteroUrl, refserverUrl: `http://127.0.0.1:${port}`, libraryId: String(world.library.libraryId), apiKey: world.library.apiKey, retries: 2, giveUpAfterSeconds: 0.3 });
    const r = await runCli([], sandbox).finally(() => removeSandbox(sandbox));
    expect(r.code).toBe(75);
    expect(r.stderr).toMatch(/unreachable for over 0.3 s \(retry.give_up_after_seconds\)/);
  });
});

describe("adaptive pacing", () => {
  const report = (w: World): { pacing: { ceiling: number; finalLimit: number; decreases: number; peakInFlight: number } } => {
    const dir = join(w.sandbox.stateDir, "import-from-zotero", "reports");
    const files = readdirSync(dir).sort();
    return JSON.parse(readFileSync(join(dir, files.at(-1)!), "utf8")) as { pacing: { ceiling: number; finalLimit: number; decreases: number; peakInFlight: number } };
  };

  it("lowers the uploads in flight when the server answers 'database is locked', and still imports everything", async () => {
    world = await makeWorld({ library: { items: 24 }, sandbox: { batchSize: 8 }, refserver: { delayMs: 20 } });
    world.refserver.lockNextUploads(12);
    const r = await runCli([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(world.refserver.papers.size).toBe(24);
    const { pacing } = report(world);
    expect(pacing.ceiling).toBe(8);
    expect(pacing.decreases).toBeGreaterThan(0);
    expect(world.refserver.peakConcurrentUploads).toBeLessThanOrEqual(8);
  });

  it("keeps batch_size uploads in flight when adaptive_pacing is off", async () => {
    world = await makeWorld({ library: { items: 12 }, sandbox: { batchSize: 4 }, refserver: { delayMs: 20 } });
    writeFileSync(world.sandbox.configPath, readFileSync(world.sandbox.configPath, "utf8").replace("  delay_seconds: 0", "  delay_seconds: 0\n  adaptive_pacing: false"));
    world.refserver.lockNextUploads(6);
    const r = await runCli([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(report(world).pacing).toMatchObject({ decreases: 0, finalLimit: 4 });
  });
});
