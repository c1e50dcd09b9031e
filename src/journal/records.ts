/** One line of the checkpoint journal (NDJSON). Append-only; never rewritten in place. */
/**
 * started → done | failed | skipped; a done item stays done (later "done" lines update what the
 * server holds: metadata sent, the PDF's md5, where it went in Zotero) until it is "removed"
 * from the server (--prune) or found lost (verify --repair).
 */
export type ItemStatus = "started" | "done" | "failed" | "skipped" | "removed";

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
  /** The MD5 of the PDF the server holds for this item (what was uploaded or put). */
  md5?: string | null;
  /** A digest of the metadata last sent to the server (see metadataDigest). */
  meta?: string;
  /** The metadata call failed after the upload: the next run sends it again. */
  metaPending?: boolean;
  /** The PDF changed in Zotero to this MD5, and the server cannot take a replacement: reported once. */
  stalePdf?: string | null;
  /** Gone from Zotero after it was imported: in the trash, or deleted; null when it came back. */
  gone?: "trash" | "deleted" | null;
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
