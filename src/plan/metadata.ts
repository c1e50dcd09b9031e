import { createHash } from "node:crypto";
import { creatorName, type Attachment, type Item } from "../zotero/types.js";

/** What the server should hold about a paper: the upload's fields and the metadata call's. */
export interface PaperMetadata {
  title: string;
  authors: string[];
  year: number | null;
  /** Sent through the metadata endpoint (upload_with_metadata has no field for them). */
  journal: string | null;
  doi: string | null;
  abstract: string | null;
  zoteroKey: string;
  libraryId: string;
  version: number;
  collectionKeys: string[];
  tags: string[];
}

/**
 * Pure: the metadata of an item. An empty title falls back to the attachment's, then its
 * filename, then the key (RefServerLite answers 422 to an empty title). Authors are the
 * creators of type author, or every creator when none is an author (an edited book).
 */
export function metadataFor(item: Item, libraryId: string, attachment: Attachment | null): PaperMetadata {
  const title = item.title.trim() || attachment?.title.trim() || (attachment?.filename ?? "").trim() || item.key;
  return {
    title,
    authors: item.creators.filter((c) => c.creatorType === "author" || item.creators.every((x) => x.creatorType !== "author")).map(creatorName).filter((n) => n !== ""),
    year: item.year,
    journal: item.journal ?? null,
    doi: item.doi,
    abstract: item.abstract ?? null,
    zoteroKey: item.key,
    libraryId,
    version: item.version,
    collectionKeys: item.collections,
    tags: item.tags,
  };
}

/**
 * Pure: a digest of what the metadata says, kept in the checkpoint with each paper. A run
 * compares it with the digest of what Zotero says now: different → the server is updated.
 * The version is left out: it moves on any edit, also of an attachment or a note.
 */
export function metadataDigest(m: PaperMetadata): string {
  const canonical = JSON.stringify([m.title, m.authors, m.year, m.journal, m.doi, m.abstract, [...m.tags].sort(), [...m.collectionKeys].sort()]);
  return createHash("sha256").update(canonical).digest("base64url").slice(0, 22);
}
