import cliProgress from "cli-progress";
import { redact } from "../util/redact.js";
import type { ProgressEvent } from "./events.js";
import { formatBytes, formatDuration, truncate } from "./format.js";
import type { Renderer, Verbosity } from "./renderer.js";

/** Progress bars for a person at a terminal. The only importer of cli-progress. */
export class BarRenderer implements Renderer {
  private readonly multi: cliProgress.MultiBar;
  private items: cliProgress.SingleBar | null = null;
  private bytes = 0;
  private retries = 0;
  private readonly started = Date.now();

  constructor(
    stream: NodeJS.WriteStream,
    private readonly verbosity: Verbosity,
  ) {
    this.multi = new cliProgress.MultiBar(
      {
        stream,
        format: " {bar} {value}/{total} papers | {mb} | {rate} | ETA {eta_formatted} | retries {retries}",
        barCompleteChar: "█",
        barIncompleteChar: "░",
        hideCursor: true,
        clearOnComplete: false,
        stopOnComplete: false,
        etaBuffer: 20,
        fps: 8,
      },
      cliProgress.Presets.shades_grey,
    );
  }

  private log(text: string): void {
    this.multi.log(`${redact(text)}\n`);
  }

  private payload(): Record<string, string | number> {
    const seconds = Math.max(0.001, (Date.now() - this.started) / 1000);
    return { mb: formatBytes(this.bytes), rate: `${formatBytes(this.bytes / seconds)}/s`, retries: this.retries };
  }

  onEvent(e: ProgressEvent): void {
    switch (e.type) {
      case "log":
        if (e.level === "warn" || (e.level === "info" && this.verbosity !== "quiet") || (e.level === "debug" && this.verbosity === "verbose")) {
          this.log(`${e.level === "warn" ? "warning: " : ""}${e.message}`);
        }
        break;
      case "listed":
        if (this.verbosity !== "quiet") this.log(`Listed ${e.items} Zotero items${e.requests > 0 ? ` (${e.requests} request${e.requests === 1 ? "" : "s"})` : ""}.`);
        break;
      case "planned":
        if (this.verbosity !== "quiet") {
          this.log(`To import: ${e.toImport}${e.limitedTo !== null ? ` (--limit ${e.limitedTo})` : ""}; already done: ${e.alreadyDone}; skipped: ${e.skipped}.`);
        }
        this.items = this.multi.create(e.toImport, 0, this.payload());
        break;
      case "bytes":
        this.bytes += e.bytes;
        this.items?.update(this.payload());
        break;
      case "retry":
        this.retries++;
        this.items?.update(this.payload());
        if (this.verbosity === "verbose") this.log(`retry ${e.what} in ${formatDuration(e.delayMs)}: ${e.message}`);
        break;
      case "item-done":
        this.items?.increment(1, this.payload());
        if (this.verbosity === "verbose") this.log(`${e.outcome === "imported" ? "✓ imported" : "✓ already on server"} ${truncate(e.title, 70)}`);
        break;
      case "item-failed":
        this.items?.increment(1, this.payload());
        this.log(`✗ ${truncate(e.title, 60)}: ${e.message}`);
        break;
      case "item-skipped":
        this.items?.increment(1, this.payload());
        if (this.verbosity !== "quiet") this.log(`- skipped ${truncate(e.title, 60)}: ${e.detail ?? e.reason}`);
        break;
      case "item-start":
      case "pause":
        break;
    }
  }

  private finished = false;

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.items?.update(this.payload());
    this.multi.update(); // flush buffered log lines before the final frame
    this.multi.stop();
  }
}
