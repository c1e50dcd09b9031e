import { redact } from "../util/redact.js";
import type { ProgressEvent } from "./events.js";
import { formatBytes, formatDuration, truncate } from "./format.js";
import type { Renderer, Verbosity } from "./renderer.js";

/** Plain timestamped lines for cron and logs: no colours, no cursor tricks, never a prompt. */
export class LineRenderer implements Renderer {
  constructor(
    private readonly out: NodeJS.WritableStream,
    private readonly verbosity: Verbosity,
    private readonly now: () => Date = () => new Date(),
  ) {}

  private line(text: string): void {
    this.out.write(`${this.now().toISOString().replace(/\.\d{3}Z$/, "Z")} ${redact(text)}\n`);
  }

  onEvent(e: ProgressEvent): void {
    const v = this.verbosity;
    switch (e.type) {
      case "log":
        if (e.level === "warn" || (e.level === "info" && v !== "quiet") || (e.level === "debug" && v === "verbose")) {
          this.line(`${e.level === "warn" ? "warning: " : ""}${e.message}`);
        }
        break;
      case "listed":
        if (v !== "quiet") this.line(`listed ${e.items} Zotero items${e.requests > 0 ? ` in ${e.requests} request${e.requests === 1 ? "" : "s"}` : ""} (library version ${e.libraryVersion}${e.since !== null ? `, changes since ${e.since}` : ""})`);
        break;
      case "planned":
        if (v !== "quiet") {
          this.line(`to import: ${e.toImport}${e.limitedTo !== null ? ` (--limit ${e.limitedTo})` : ""}, already done: ${e.alreadyDone}, skipped: ${e.skipped}`);
        }
        break;
      case "item-start":
        if (v === "verbose") this.line(`start ${e.key} "${truncate(e.title, 60)}"`);
        break;
      case "retry":
        if (v !== "quiet") this.line(`retry ${e.what}${e.key && !e.what.includes(e.key) ? ` ${e.key}` : ""} in ${formatDuration(e.delayMs)} (attempt ${e.attempt}): ${e.message}`);
        break;
      case "item-done":
        if (v !== "quiet") {
          this.line(`${e.outcome === "imported" ? "imported" : "already on server"} ${e.key} "${truncate(e.title, 60)}" (${formatBytes(e.bytes)})`);
        }
        break;
      case "item-failed":
        this.line(`FAILED ${e.key} "${truncate(e.title, 60)}": ${e.message}${e.permanent ? "" : " (will retry next run)"}`);
        break;
      case "item-skipped":
        if (v === "verbose" || e.reason === "not_synced") this.line(`skipped ${e.key} "${truncate(e.title, 60)}": ${e.detail ?? e.reason}`);
        break;
      case "pause":
        if (v === "verbose") this.line(`pause ${formatDuration(e.delayMs)} (${e.reason})`);
        break;
      case "bytes":
        break;
    }
  }

  finish(): void {}
}
