/**
 * The suite leaves nothing in the temp directory.
 *
 * How: this vitest globalSetup runs in the main vitest process before any test worker is
 * created. It makes one fresh directory under the real os.tmpdir() (`ifz-test-run-*`) and points
 * TMPDIR (and TMP/TEMP, which Windows and Python also read) at it. os.tmpdir() reads TMPDIR on
 * every call, and the forked workers, and every process they spawn with the inherited
 * environment, get it too; the CLI sandboxes pass it on explicitly (test/helpers/cli.ts). So
 * every temp file of the run lands in that one directory, and a temp file made by some other
 * process on the machine at the same time cannot be mistaken for a leak.
 *
 * At teardown (after the last test file) the directory must be empty: every test removes what it
 * made (World.close(), removeSandbox, afterEach/afterAll with rmSync). If it is not, the entries
 * left are named, the directory is removed all the same, and the run fails. vitest 4.1 only
 * logs an error thrown by a globalSetup teardown ("error during close") and still exits 0, so the
 * teardown also sets process.exitCode = 1 itself.
 */
import { mkdtempSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const VARS = ["TMPDIR", "TMP", "TEMP"] as const;

export default function setup(): () => void {
  const runDir = mkdtempSync(join(tmpdir(), "ifz-test-run-"));
  const saved = VARS.map((name) => [name, process.env[name]] as const);
  for (const name of VARS) process.env[name] = runDir;

  return function teardown(): void {
    for (const [name, value] of saved) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    const left = readdirSync(runDir).sort();
    const described = left.map((name) => describeEntry(runDir, name));
    rmSync(runDir, { recursive: true, force: true, maxRetries: 5 });
    if (left.length === 0) return;
    process.exitCode = 1;
    throw new Error(
      `The tests left ${left.length} entr${left.length === 1 ? "y" : "ies"} in TMPDIR (${runDir}, now removed); ` +
        `remove what a test makes in its afterEach/afterAll (rmSync(dir, { recursive: true, force: true })):\n` +
        described.map((d) => `  ${d}`).join("\n"),
    );
  };
}

/** "name/ (a, b, c…)" for a directory, "name" for anything else: enough to tell which test made it. */
function describeEntry(dir: string, name: string): string {
  const path = join(dir, name);
  try {
    if (!statSync(path).isDirectory()) return name;
    const inside = readdirSync(path).sort();
    const shown = inside.slice(0, 5).join(", ") + (inside.length > 5 ? `, … (${inside.length} in all)` : "");
    return `${name}/ (${inside.length === 0 ? "empty" : shown})`;
  } catch {
    return name;
  }
}
