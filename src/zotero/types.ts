import type { Readable } from "node:stream";

/**
 * The normalised Zotero model every source produces. No transport fields:
 * the planner and pipeline never see HTTP or SQLite details.
 */
export interface LibraryRef {
  type: "user" | "group";
  id: string;
}

export interface Creator {
  creatorType: string;
  firstName?: string;
  lastName?: string;
  /** Single-field names (institutions). */
  name?: string;
}

export type LinkMode = "imported_file" | "imported_url" | "linked_file" | "linked_url" | "embedded_image" | (string & {});

export interface Attachment {
  key: string;
  version: number;
  /** The parent item, or null for a standalone (top-level) attachment. */
  parentKey: string | null;
  title: string;
  linkMode: LinkMode;
  contentType: string | null;
  filename: string | null;
  md5: string | null;
  /** Size when known (the Web API tells it in links.enclosure.length; local sources stat the file). */
  size: number | null;
  /**
   * Does the source hold this attachment's file? true: known present (links.enclosure, the
   * file on disk); false: known absent (never uploaded: no md5 and no enclosure, or no file on
   * disk); null: cannot tell without asking (a WebDAV user's md5 without an enclosure).
   */
  hasFile: boolean | null;
}

export interface Item {
  key: string;
  version: number;
  itemType: string;
  title: string;
  creators: Creator[];
  date: string;
  year: number | null;
  doi: string | null;
  /** The publication: publicationTitle, else bookTitle, proceedingsTitle, websiteTitle, … */
  journal?: string | null;
  abstract?: string | null;
  collections: string[];
  tags: string[];
  /** Children attachments, in the order Zotero lists them. A standalone PDF lists itself. */
  attachments: Attachment[];
  /** True for a top-level attachment item (a PDF dragged into Zotero without a parent). */
  standalone: boolean;
  /** Zotero's own best attachment for this item (the Web API's links.attachment), when it names one. */
  bestAttachment?: string | null;
}

export interface Collection {
  key: string;
  name: string;
  parentKey: string | null;
}

export interface Listing {
  library: LibraryRef;
  /** The library version the listing reflects (Last-Modified-Version). */
  libraryVersion: number;
  items: Item[];
  collections: Collection[];
  /** Items the source dropped as unreadable, with why. */
  invalid: { key: string; reason: string }[];
  /** API requests the listing took (for the politeness figures). */
  requests: number;
}

export interface ListOptions {
  /** Only items modified after this library version. */
  since?: number | undefined;
  /** Item keys to include whatever their version (unfinished from earlier runs). */
  alsoKeys?: string[] | undefined;
  /** Items to list with all their attachments, changed or not (their uploaded PDF went away). */
  withChildren?: readonly string[] | undefined;
  signal?: AbortSignal | undefined;
}

export interface FileBody {
  /** The PDF bytes as a stream; never buffered whole. */
  body: Readable;
  size: number | null;
}

/** What every Zotero source implements. */
export interface ZoteroSource {
  readonly library: LibraryRef;
  list(options: ListOptions): Promise<Listing>;
  /** Open an attachment's stored file for reading. Throws ZOTERO_FILE_MISSING when absent. */
  openFile(attachment: Attachment, signal?: AbortSignal): Promise<FileBody>;
  /**
   * Of these item keys, which are in Zotero's trash and which were deleted (or are no longer
   * in the library at all). Absent when the source cannot tell.
   */
  goneKeys?(keys: readonly string[], signal?: AbortSignal): Promise<GoneKeys>;
}

export interface GoneKeys {
  trash: Set<string>;
  deleted: Set<string>;
}

export function creatorName(c: Creator): string {
  if (c.name) return c.name.trim();
  return [c.firstName, c.lastName].filter((p) => p && p.trim()).join(" ").trim();
}

export function yearOf(date: string | undefined | null): number | null {
  if (!date) return null;
  const m = /(?:^|\D)(\d{4})(?:\D|$)/.exec(date);
  if (!m) return null;
  const y = Number(m[1]);
  return y >= 1000 && y <= 2999 ? y : null;
}
