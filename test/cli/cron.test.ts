/**
 * What a cron user and a full disk meet: clean stderr, a report and one JSON document for
 * every run (also one that ends in 2, 3 or 75), timestamps on summary lines, a named URL for
 * an unreachable service, and a checkpoint that cannot be written stopping the run cleanly.
 */
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { runCli, runCliProcess, type Sandbox } from "../helpers/cli.js";
import { closedPort } from "../../fixtures/util.js";
import { makeWorld, type World } from "../helpers/world.js";

let world: World | undefined;
const cleanups: (() => void)[] = [];
afterEach(async () => {
  await world?.close();
  world = undefined;
  for (const c of cleanups.splice(0)) c();
});

interface Report {
  exitCode: number;
  fatal: string | null;
  stoppedBy: string | null;
}
function reports(s: Sandbox): Report[] {
  const dir = join(s.stateDir, "import-from-zotero", "reports");
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .sort()
    .map((f) => JSON.parse(readFileSync(join(dir, f), "utf8")) as Report);
}


const TIMESTAMP = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ /;

describe("cron-friendly output", () => {
  it("a 200-item run with batch_size 8 prints no Node.js warning, and its summary lines carry timestamps", async () => {
    world = await makeWorld({ library: { items: 200 }, sandbox: { batchSize: 8 } });
    const r = await runCliProcess([], world.sandbox);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/\(node:\d+\)|Warning:/);
    const summary = r.stdout.split("\n").find((l) => l.includes("Imported 200"));
    expect(summary).toMatch(TIMESTAMP);
    expect(r.stdout.split("\n").find((l) => l.includes("Report:"))).toMatch(TIMESTAMP);
  });

  it("a config error (exit 2) still writes its report and, with --json, one JSON document", async () => {
    world = await makeWorld({ library: { items: 1 } });
    writeFileSync(world.sandbox.configPath, `${readFileSync(world.sandbox.configPath, "utf8")}\nbatchsize: 4\n`);
    const r = await runCli(["--json"], world.sandbox);
    expect(r.code).toBe(2);
    const doc = JSON.parse(r.stdout) as { exitCode: number; error: string; report: string };
    expect(doc.exitCode).toBe(2);
    expect(doc.error).toMatch(/batchsize/);
    expect(existsSync(doc.report)).toBe(true);
    expect(reports(world.sandbox).at(-1)).toMatchObject({ exitCode: 2, fatal: expect.stringMatching(/batchsize/) });
    expect(world.zotero.log).toHaveLength(0);
  });

  it("refused credentials (exit 3) and a busy lock (exit 75) write reports and one JSON document each", async () => {
    world = await makeWorld({ library: { items: 1 }, sandbox: { password: "wrong-password" } });
    const denied = await runCli(["--json"], world.sandbox);
    expect(denied.code).toBe(3);
    expect((JSON.parse(denied.stdout) as { exitCode: number }).exitCode).toBe(3);
    expect(denied.stdout).not.toContain("wrong-password");

    // A lock held by a live process (this test's own).
    mkdirSync(join(world.sandbox.stateDir, "import-from-zotero"), { recursive: true });
    writeFileSync(`${world.sandbox.checkpoint}.lock`, JSON.stringify({ pid: process.pid, host: (await import("node:os")).hostname(), since: new Date().toISOString(), token: "test" }));
    const busy = await runCli(["--json"], world.sandbox);
    expect(busy.code).toBe(75);
    expect((JSON.parse(busy.stdout) as { exitCode: number; error: string }).error).toMatch(/another import \(pid \d+/);
    expect(reports(world.sandbox).map((r) => r.exitCode)).toEqual([3, 75]);
    expect(existsSync(`${world.sandbox.checkpoint}.lock`)).toBe(true); // not ours: left alone
  });

  it("an unreachable Zotero: its retries are shown, and the last line names its URL (exit 75)", async () => {
    world = await makeWorld({ library: { items: 1 }, sandbox: { retries: 2 } });
    const port = await closedPort();
    writeFileSync(world.sandbox.configPath, readFileSync(world.sandbox.configPath, "utf8").replace(world.zoteroUrl, `http://127.0.0.1:${port}`));
    const r = await runCli([], world.sandbox);
    expect(r.code).toBe(75);
    expect(r.stderr).toMatch(/retry Zotero listing .* in .*: .*ECONNREFUSED/);
    const last = r.stderr.trim().split("\n").at(-1)!;
    expect(last).toContain(`http://127.0.0.1:${port}/users/`);
    expect(reports(world.sandbox).at(-1)).toMatchObject({ exitCode: 75 });
  });
});

const isRoot = process.getuid?.() === 0;

describe("a full disk under the checkpoint", () => {
  // A small tmpfs needs root; CI runs as root. The same path is covered without root by the
  // pipeline's in-process test with a journal that fails to write.
  it.runIf(isRoot)("stops promptly with one line naming the file and ENOSPC (exit 1), settles what is in flight, and the next run finishes exactly once", async () => {
    world = await makeWorld({ library: { items: 80 }, sandbox: { batchSize: 4 } });
    const w = world;
    const mount = join(w.sandbox.dir, "small");
    mkdirSync(mount);
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=24k", "tmpfs", mount]);
    cleanups.push(() => {
      try {
        execFileSync("umount", [mount]);
      } catch {
        /* already unmounted */
      }
    });
    const checkpoint = join(mount, "checkpoint.ndjson");
    const r = await runCli(["--checkpoint", checkpoint], w.sandbox);
    expect(r.code, r.stderr).toBe(1);
    const lines = r.stderr.split("\n").filter((l) => l.includes("cannot write the checkpoint"));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(checkpoint);
    expect(lines[0]).toContain("ENOSPC");
    expect(existsSync(`${checkpoint}.lock`)).toBe(false);
    expect(w.refserver.papers.size).toBeLessThan(80);
    // Nothing goes on after the process is gone: no upload was left running.
    expect(w.refserver.uploadsInFlight).toBe(0);
    const uploadsAtExit = w.refserver.uploads.length;
    expect(reports(w.sandbox).at(-1)).toMatchObject({ exitCode: 1, stoppedBy: "checkpoint" });

    // Space again: the journal moves to a roomier place and the next run carries on.
    const roomy = join(w.sandbox.dir, "roomy.ndjson");
    copyFileSync(checkpoint, roomy);
    execFileSync("umount", [mount]);
    const again = await runCli(["--checkpoint", roomy], w.sandbox);
    expect(again.code, again.stderr).toBe(0);
    expect(w.refserver.papers.size).toBe(80);
    expect(w.refserver.duplicateKeys()).toEqual([]);
    expect(w.refserver.uploads.length).toBeGreaterThan(uploadsAtExit);
    rmSync(roomy, { force: true });
  });
});
