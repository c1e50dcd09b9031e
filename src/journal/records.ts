/** One line of the checkpoint journal (NDJSON). Append-only; never rewritten in place. */
export type ItemStatus = "started" | "done" | "failed" | "skipped";

export interface ItemRecord {
  t: "item";
  ts: string;
  run: string;
  /** Server URL + library: the same key on another server or library is another item. */
  scope: string;
  key: string;
  /** The attachment uploaded for this item. */
  att?: string;
  version: number;
  status: ItemStatus;
  title?: string;
  docId?: string | null;
  /** How a done item got there: uploaded now, or the server already had it (409 / known keys). */
  via?: "uploaded" | "already";
  code?: string;
  error?: string;
  /** A failure retrying cannot fix without a change (422, 413, a missing file). */
  permanent?: boolean;
  /**
   * The item's PDF attachments with their versions when it was skipped for having no file
   * ("KEY:version,…"): it is not asked for again until one of them changes.
   */
  atts?: string;
  bytes?: number;
}

export interface SyncRecord {
  t: "sync";
  ts: string;
  run: string;
  scope: string;
  /** Which selection the version belongs to (collections, types, tags). */
  filter: string;
  version: number;
}

export interface RunRecord {
  t: "run";
  ts: string;
  run: string;
  scope: string;
  event: "start" | "end";
  exitCode?: number;
}

export type JournalRecord = ItemRecord | SyncRecord | RunRecord;

export function scopeOf(serverUrl: string, libraryType: string, libraryId: string): string {
  return `${serverUrl.replace(/\/+$/, "")}|${libraryType}:${libraryId}`;
}
