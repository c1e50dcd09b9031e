import type { ProgressEvent } from "./events.js";

export type Verbosity = "quiet" | "normal" | "verbose";

export interface Renderer {
  onEvent(event: ProgressEvent): void;
  /** Called once the pipeline ends, before the summary is printed. */
  finish(): void;
}

/** The renderer for --json: nothing while running; the summary is printed as JSON at the end. */
export class SilentRenderer implements Renderer {
  onEvent(): void {}
  finish(): void {}
}
