/**
 * `npm run demo` end to end, non-interactive: the demo script (compiled as `npm run demo`
 * compiles it) builds the sample library, starts refserver-lite, runs the real CLI, and
 * stops the server when done.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { importablePdfs, makeSampleLibrary } from "../../scripts/sample-library.js";

const ROOT = resolve(import.meta.dirname, "..", "..");
const dir = mkdtempSync(join(tmpdir(), "ifz-demo-test-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("close", (code) => done({ code, stdout, stderr }));
  });
}

describe("npm run demo", () => {
  it("imports the sample library into a fresh refserver-lite, says where to look, and stops the server", async () => {
    const build = await run("npm", ["run", "-s", "demo:build"]);
    expect(build.code, build.stdout + build.stderr).toBe(0);
    const r = await run(process.execPath, [join(ROOT, ".tmp", "demo", "scripts", "demo.js"), "--exit", "--dir", dir], { DEMO_EXIT: "1" });
    expect(r.code, r.stdout + r.stderr).toBe(0);

    const expected = importablePdfs(makeSampleLibrary(), { linkedFiles: true }).length;
    const result = JSON.parse(readFileSync(join(dir, "demo-result.json"), "utf8")) as { exitCode: number; papers: number; expected: number; jobsCompleted: number; report: string };
    expect(result).toMatchObject({ exitCode: 0, papers: expected, expected, jobsCompleted: expected });
    const report = JSON.parse(readFileSync(result.report, "utf8")) as { exitCode: number; summary: { imported: number; failed: unknown[] } };
    expect(report.exitCode).toBe(0);
    expect(report.summary.imported).toBe(expected);
    expect(report.summary.failed).toEqual([]);

    expect(r.stdout).toMatch(/refserver-lite listening on http:\/\/127\.0\.0\.1:\d+/);
    expect(r.stdout).toMatch(/generated password: \S+/);
    expect(r.stdout).toContain("/api/v1/jobs");
    expect(r.stdout).toContain(`Report: ${result.report}`);
    expect(r.stdout).toMatch(/Stopping the server \(the demo is done/);
    // The server's own data is on disk where the demo said.
    expect(existsSync(join(dir, "refserver", "refserver.db"))).toBe(true);
  });
});
