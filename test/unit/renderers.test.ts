import { PassThrough } from "node:stream";
import { describe, expect, it } from "vitest";
import { BarRenderer } from "../../src/progress/bars.js";
import { LineRenderer } from "../../src/progress/lines.js";
import type { ProgressEvent } from "../../src/progress/events.js";
import { registerSecret, clearSecrets } from "../../src/util/redact.js";

const events: ProgressEvent[] = [
  { type: "planned", toImport: 2, alreadyDone: 1, skipped: 3, limitedTo: null },
  { type: "item-start", key: "AAAAAAAA", title: "First paper" },
  { type: "bytes", key: "AAAAAAAA", bytes: 2048 },
  { type: "retry", key: "AAAAAAAA", what: "upload AAAAAAAA", attempt: 1, delayMs: 1500, code: "REFSERVER_LOCKED", message: "server error 500: Database error: database is locked" },
  { type: "item-done", key: "AAAAAAAA", title: "First paper", outcome: "imported", docId: "d1", bytes: 2048 },
  { type: "item-failed", key: "BBBBBBBB", title: "Second paper", code: "REFSERVER_REJECTED", message: "server rejected the upload (422: body.title: Field required)", permanent: true },
];

function capture(tty: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  const stream = new PassThrough() as unknown as NodeJS.WriteStream & PassThrough;
  let out = "";
  stream.on("data", (d: Buffer) => (out += d.toString()));
  Object.assign(stream, { isTTY: tty, columns: 120, rows: 40, cursorTo: () => true, moveCursor: () => true, clearLine: () => true, clearScreenDown: () => true });
  return { stream, text: () => out };
}

describe("renderers", () => {
  it("prints plain timestamped lines for cron, failures even when quiet", () => {
    const { stream, text } = capture(false);
    const lines = new LineRenderer(stream, "normal", () => new Date("2026-11-22T02:30:00.000Z"));
    for (const e of events) lines.onEvent(e);
    const out = text().trim().split("\n");
    expect(out.every((l) => l.startsWith("2026-11-22T02:30:00Z "))).toBe(true);
    expect(out.join("\n")).toMatch(/retry upload AAAAAAAA in 1.5 s \(attempt 1\): .*database is locked/);
    expect(out.join("\n")).toMatch(/imported AAAAAAAA "First paper" \(2.0 KB\)/);
    const quiet = capture(false);
    const q = new LineRenderer(quiet.stream, "quiet");
    for (const e of events) q.onEvent(e);
    expect(quiet.text().trim().split("\n")).toHaveLength(1);
    expect(quiet.text()).toMatch(/FAILED BBBBBBBB/);
  });

  it("draws a progress bar with papers, bytes and retries on a terminal", () => {
    const { stream, text } = capture(true);
    const bars = new BarRenderer(stream, "normal");
    for (const e of events) bars.onEvent(e);
    bars.finish();
    const out = text();
    expect(out).toMatch(/2\/2 papers/);
    expect(out).toMatch(/retries 1/);
    expect(out).toMatch(/✗ Second paper: server rejected the upload \(422/);
  });

  it("never prints a registered secret", () => {
    registerSecret("s3cr3t-token-value");
    const { stream, text } = capture(false);
    new LineRenderer(stream, "verbose").onEvent({ type: "log", level: "warn", message: "answer mentioned s3cr3t-token-value and Bearer abcdefghijklmnop" });
    expect(text()).not.toContain("s3cr3t-token-value");
    expect(text()).not.toContain("abcdefghijklmnop");
    clearSecrets();
  });
});
