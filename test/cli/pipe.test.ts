/**
 * The bin as a Unix command: a reader that closes the pipe early (`import-from-zotero --help |
 * head -1`) ends the output without a stack trace or a non-zero exit.
 */
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { BIN } from "../helpers/cli.js";

describe("stdout closed by its reader", () => {
  it("--help into a pipe its reader has closed: exit 0, nothing on stderr", async () => {
    const child = spawn(process.execPath, [BIN, "--help"], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    // The reader is gone before the help is written (as `head` after its lines): writes meet EPIPE.
    child.stdout.destroy();
    const code = await new Promise<number | null>((resolve) => child.on("close", (c) => resolve(c)));
    expect(stderr).toBe("");
    expect(code).toBe(0);
  });
});
