/**
 * Signals the way cron, systemd and a person expect: the first SIGINT/SIGTERM at any moment
 * stops new work and retries; a second one aborts at once; unfinished papers are left for the
 * next run as interrupted, never failed; the lock is released on every exit path.
 * Every test synchronises on what the fakes saw (requests, held uploads) or on the process's
 * own output, never on wall-clock time.
 */
import { spawn } from "node:child_process";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { BIN, runCli, startCli, waitFor, type CliResult, type Sandbox } from "../helpers/cli.js";
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
  error?: string;
}
const journal = (s: Sandbox): Line[] =>
  existsSync(s.checkpoint)
    ? readFileSync(s.checkpoint, "utf8")
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as Line)
    : [];

/** Backoffs long enough that a run which kept retrying after a signal could not pass. */
function slowRetries(s: Sandbox, retries = 8): void {
  const text = readFileSync(s.configPath, "utf8")
    .replace(/retries: \d+/, `retries: ${retries}`)
    .replace("min_delay_seconds: 0.01", "min_delay_seconds: 20")
    .replace("max_delay_seconds: 0.05", "max_delay_seconds: 60");
  writeFileSync(s.configPath, text);
}

function reports(s: Sandbox): { exitCode: number; stoppedBy: string | null; fatal: string | null }[] {
  const dir = join(s.stateDir, "import-from-zotero", "reports");
  if (!existsSync(dir)) return [];
  return readdirSync(dir).map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")) as { exitCode: number; stoppedBy: string | null; fatal: string | null });
}

function expectStoppedCleanly(r: CliResult, s: Sandbox): void {
  expect(r.code, r.stderr).toBe(130);
  expect(existsSync(`${s.checkpoint}.lock`)).toBe(false);
  expect(journal(s).filter((l) => l.status === "failed")).toEqual([]);
  expect(r.stderr).not.toMatch(/still in flight after/);
  expect(reports(s).at(-1)).toMatchObject({ exitCode: 130 });
}

describe("signals", () => {
  it("SIGTERM while the Zotero listing is being retried: exits 130 at once, no more requests", async () => {
    world = await makeWorld({ library: { items: 3 } });
    const w = world;
    slowRetries(w.sandbox);
    w.zotero.addFault({ kind: "status", status: 500 }, { match: "items/top" });
    const run = startCli([], w.sandbox);
    // The retry line is printed before its backoff wait: the run is now waiting to retry.
    await waitFor(() => /retry Zotero listing/.test(run.output().stderr), 60_000, "a retried listing");
    const before = w.zotero.requestsTo("items/top").length;
    run.child.kill("SIGTERM");
    const r = await run.done;
    expectStoppedCleanly(r, w.sandbox);
    expect(w.zotero.requestsTo("items/top").length).toBe(before);
    expect(w.refserver.uploads).toHaveLength(0);
  });

  it("SIGTERM while the login is being retried ('database is locked'): exits 130 at once", async () => {
    world = await makeWorld({ library: { items: 3 } });
    const w = world;
    slowRetries(w.sandbox);
    w.refserver.lockNextLogins(1000);
    const run = startCli([], w.sandbox);
    await waitFor(() => /retry login/.test(run.output().stderr), 60_000, "a retried login");
    run.child.kill("SIGTERM");
    const r = await run.done;
    expectStoppedCleanly(r, w.sandbox);
    expect(w.refserver.loginCalls).toBe(1);
  });

  it("SIGTERM while uploads are being retried: no further attempt, papers left as interrupted (not failed), the next run imports them", async () => {
    world = await makeWorld({ library: { items: 6 }, sandbox: { batchSize: 2 } });
    const w = world;
    slowRetries(w.sandbox, 20);
    w.refserver.lockNextUploads(1000);
    const run = startCli(["--json"], w.sandbox);
    await waitFor(() => w.refserver.uploads.length >= 2, 60_000, "locked uploads");
    run.child.kill("SIGTERM");
    const r = await run.done;
    expectStoppedCleanly(r, w.sandbox);
    const summary = JSON.parse(r.stdout) as { exitCode: number; imported: number; failed: unknown[]; interrupted: number };
    expect(summary).toMatchObject({ exitCode: 130, imported: 0, failed: [] });
    expect(summary.interrupted).toBeGreaterThanOrEqual(2);
    const attempts = w.refserver.uploads.length;
    expect(attempts).toBeLessThanOrEqual(4);

    w.refserver.clearFaults();
    const again = await runCli([], w.sandbox);
    expect(again.code, again.stderr).toBe(0);
    expect(w.refserver.papers.size).toBe(6);
    expect(w.refserver.duplicateKeys()).toEqual([]);
  });

  it("the first signal lets the upload in flight finish and records it done; nothing new starts", async () => {
    world = await makeWorld({ library: { items: 8 }, sandbox: { batchSize: 1 } });
    const w = world;
    const release = w.refserver.holdUploads();
    const run = startCli([], w.sandbox);
    await waitFor(() => w.refserver.uploads.length >= 1, 30_000, "an upload in flight");
    run.child.kill("SIGTERM");
    await waitFor(() => /SIGTERM: stopping/.test(run.output().stderr), 30_000, "the stop message");
    release();
    const r = await run.done;
    expectStoppedCleanly(r, w.sandbox);
    expect(w.refserver.uploads).toHaveLength(1);
    expect(w.refserver.papers.size).toBe(1);
    const done = journal(w.sandbox).filter((l) => l.status === "done");
    expect(done.map((l) => l.key)).toEqual([...w.refserver.papers.keys()]);
  });

  it("a second signal aborts at once, even with an upload hanging; nothing is recorded as failed", async () => {
    world = await makeWorld({ library: { items: 4 }, sandbox: { batchSize: 2 } });
    const w = world;
    const release = w.refserver.holdUploads();
    try {
      const run = startCli([], w.sandbox);
      await waitFor(() => w.refserver.uploads.length >= 1, 30_000, "an upload in flight");
      run.child.kill("SIGTERM");
      await waitFor(() => /SIGTERM: stopping/.test(run.output().stderr), 30_000, "the stop message");
      run.child.kill("SIGINT");
      const r = await run.done;
      expectStoppedCleanly(r, w.sandbox);
      expect(w.refserver.papers.size).toBe(0);
      // Left as "started": the next run picks them up.
      expect(journal(w.sandbox).some((l) => l.status === "started")).toBe(true);
    } finally {
      release();
    }
    const again = await runCli([], w.sandbox);
    expect(again.code, again.stderr).toBe(0);
    expect(w.refserver.papers.size).toBe(4);
    expect(w.refserver.duplicateKeys()).toEqual([]);
  });

  it("SIGTERM to the whole process group (systemd, kill -TERM -PGID) through a wrapper that forwards it (npx): one stop, interrupted not failed", async () => {
    world = await makeWorld({ library: { items: 6 }, sandbox: { batchSize: 2 } });
    const w = world;
    slowRetries(w.sandbox, 20);
    w.refserver.lockNextUploads(1000);
    // A wrapper like npm's: runs the CLI as a child and passes SIGTERM on to it.
    const wrapper = `
      const { spawn } = require("node:child_process");
      const child = spawn(process.execPath, process.argv.slice(1), { stdio: "inherit" });
      for (const s of ["SIGTERM", "SIGINT"]) process.on(s, () => child.kill(s));
      child.on("exit", (code, signal) => process.exit(code ?? 1));
    `;
    const proc = spawn(process.execPath, ["-e", wrapper, BIN, "--config", w.sandbox.configPath], {
      cwd: w.sandbox.dir,
      env: w.sandbox.env,
      detached: true,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    proc.stdout.resume();
    const done = new Promise<number | null>((resolve) => proc.on("close", (code) => resolve(code)));
    await waitFor(() => w.refserver.uploads.length >= 2, 60_000, "locked uploads");
    process.kill(-proc.pid!, "SIGTERM");
    const code = await done;
    expect(code, stderr).toBe(130);
    expect(existsSync(`${w.sandbox.checkpoint}.lock`)).toBe(false);
    expect(journal(w.sandbox).filter((l) => l.status === "failed")).toEqual([]);
    expect(stderr).not.toMatch(/error: .*SIGTERM|FAILED/);
  });
});
