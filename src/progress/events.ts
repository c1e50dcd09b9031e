import type { SkipReason } from "../plan/select.js";

/** What the pipeline tells the renderers. Renderers only show; they decide nothing. */
export type ProgressEvent =
  | { type: "log"; level: "info" | "warn" | "debug"; message: string }
  | { type: "listed"; items: number; requests: number; libraryVersion: number; since: number | null }
  | { type: "planned"; toImport: number; alreadyDone: number; skipped: number; limitedTo: number | null }
  | { type: "item-start"; key: string; title: string }
  | { type: "bytes"; key: string; bytes: number }
  | { type: "retry"; key: string | null; what: string; attempt: number; delayMs: number; code: string; message: string }
  | { type: "item-done"; key: string; title: string; outcome: "imported" | "already"; docId: string | null; bytes: number }
  | { type: "item-failed"; key: string; title: string; code: string; message: string; permanent: boolean }
  | { type: "item-skipped"; key: string; title: string; reason: SkipReason; detail?: string }
  | { type: "pause"; delayMs: number; reason: string };

export type Emit = (event: ProgressEvent) => void;
