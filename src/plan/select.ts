import type { Attachment, Collection, Item } from "../zotero/types.js";

/** Why an item is not imported: stable codes for reports and scripts. */
export type SkipReason =
  | "note"
  | "no_attachment"
  | "linked_file"
  | "linked_url"
  | "not_pdf"
  | "item_type_filtered"
  | "excluded_tag"
  | "not_synced";

export const skipReasonText: Record<SkipReason, string> = {
  note: "a note, nothing to import",
  no_attachment: "no attachment",
  linked_file: "PDF is a linked file (not in Zotero storage)",
  linked_url: "only a linked URL",
  not_pdf: "attachment is not a PDF",
  item_type_filtered: "item type not in import_options.item_types",
  excluded_tag: "has a tag in import_options.exclude_tags",
  not_synced: "PDF not synced to Zotero storage",
};

export interface Candidate {
  item: Item;
  /** The PDF to upload: the first of `attachments`. */
  attachment: Attachment;
  /**
   * Every PDF of the item that may have a file, best first: Zotero's own best attachment,
   * then stored PDFs known to have a file, then those that cannot be told without asking.
   * When one has no file after all (Zotero answers 404), the next is taken.
   */
  attachments: Attachment[];
  /** PDFs of the item that Zotero holds no file for (shown in the preview). */
  unsynced: number;
}

export interface Skipped {
  item: Item;
  reason: SkipReason;
}

export interface SelectOptions {
  itemTypes: string[];
  excludeTags: string[];
  /** Collection keys in scope (already expanded to subcollections); empty = whole library. */
  collectionKeys: string[];
  /** The source can read linked files (the desktop's own data): import them too. */
  linkedFiles?: boolean;
}

const STORED = new Set(["imported_file", "imported_url"]);

export function isPdf(att: Attachment): boolean {
  if (att.contentType) return att.contentType.toLowerCase() === "application/pdf";
  return /\.pdf$/i.test(att.filename ?? "");
}

/** The PDFs of an item that could be uploaded, best first, and how many have no file. */
export interface Pick {
  attachments: Attachment[];
  unsynced: number;
}

/**
 * Pure: which attachments of an item may be uploaded, in the order to try them, or why none.
 * A PDF the source knows has no file (never uploaded to Zotero storage, not on disk) is never
 * chosen; when no PDF of the item has one, the item is skipped as "not synced" without a request.
 */
function pickAttachment(item: Item, linkedFiles = false): Pick | SkipReason {
  if (item.itemType === "note") return "note";
  if (item.attachments.length === 0) return "no_attachment";
  const storedPdfs = item.attachments.filter((a) => STORED.has(a.linkMode) && isPdf(a));
  const rank = (a: Attachment): number => (a.key === item.bestAttachment ? 0 : a.hasFile === true ? 1 : 2);
  const usable = storedPdfs.filter((a) => a.hasFile !== false);
  // Stable: equal ranks keep Zotero's order.
  const ordered = usable.map((a, i) => ({ a, i })).sort((x, y) => rank(x.a) - rank(y.a) || x.i - y.i).map((x) => x.a);
  const linked = linkedFiles ? item.attachments.filter((a) => a.linkMode === "linked_file" && isPdf(a) && a.hasFile !== false) : [];
  const attachments = [...ordered, ...linked];
  const unsynced = storedPdfs.length - usable.length;
  if (attachments.length > 0) return { attachments, unsynced };
  if (storedPdfs.length > 0) return "not_synced";
  if (item.attachments.some((a) => a.linkMode === "linked_file" && isPdf(a))) return "linked_file";
  if (item.attachments.every((a) => a.linkMode === "linked_url")) return "linked_url";
  return "not_pdf";
}

/**
 * Pure: an item's PDF attachments and their versions, as remembered with a "not synced"
 * skip: when one of them changes (a file uploaded, a PDF added), the item is tried again.
 */
export function pdfSignature(item: Item): string {
  return item.attachments
    .filter((a) => isPdf(a) && a.linkMode !== "linked_url")
    .map((a) => `${a.key}:${a.version}`)
    .sort()
    .join(",");
}

/** Pure: items + options → importable candidates and skips with reasons, in library order. */
export function selectItems(items: Item[], options: SelectOptions): { candidates: Candidate[]; skipped: Skipped[] } {
  const types = new Set(options.itemTypes);
  const excluded = new Set(options.excludeTags.map((t) => t.toLowerCase()));
  const inCollections = new Set(options.collectionKeys);
  const candidates: Candidate[] = [];
  const skipped: Skipped[] = [];
  for (const item of items) {
    if (inCollections.size > 0 && !item.collections.some((c) => inCollections.has(c))) continue;
    if (types.size > 0 && !types.has(item.itemType) && !(item.standalone && types.has("attachment"))) {
      skipped.push({ item, reason: "item_type_filtered" });
      continue;
    }
    if (excluded.size > 0 && item.tags.some((t) => excluded.has(t.toLowerCase()))) {
      skipped.push({ item, reason: "excluded_tag" });
      continue;
    }
    const pick = pickAttachment(item, options.linkedFiles);
    if (typeof pick === "string") skipped.push({ item, reason: pick });
    else candidates.push({ item, attachment: pick.attachments[0]!, attachments: pick.attachments, unsynced: pick.unsynced });
  }
  return { candidates, skipped };
}

/**
 * Pure: --collection / import_options.collections (keys or names, names case-insensitive,
 * matching at any depth) → the keys in scope, subcollections included.
 */
export function resolveCollections(wanted: string[], collections: Collection[]): { keys: string[]; unknown: string[] } {
  const byKey = new Map(collections.map((c) => [c.key, c]));
  const children = new Map<string, string[]>();
  for (const c of collections) {
    if (c.parentKey) children.set(c.parentKey, [...(children.get(c.parentKey) ?? []), c.key]);
  }
  const roots: string[] = [];
  const unknown: string[] = [];
  for (const w of wanted) {
    if (byKey.has(w)) {
      roots.push(w);
      continue;
    }
    const byName = collections.filter((c) => c.name.toLowerCase() === w.toLowerCase() || pathOf(c, byKey).toLowerCase() === w.toLowerCase());
    if (byName.length === 0) unknown.push(w);
    roots.push(...byName.map((c) => c.key));
  }
  const keys = new Set<string>();
  const stack = [...roots];
  while (stack.length > 0) {
    const k = stack.pop()!;
    if (keys.has(k)) continue;
    keys.add(k);
    stack.push(...(children.get(k) ?? []));
  }
  return { keys: [...keys], unknown };
}

function pathOf(c: Collection, byKey: Map<string, Collection>): string {
  const parts = [c.name];
  let parent = c.parentKey ? byKey.get(c.parentKey) : undefined;
  for (let depth = 0; parent && depth < 50; depth++) {
    parts.unshift(parent.name);
    parent = parent.parentKey ? byKey.get(parent.parentKey) : undefined;
  }
  return parts.join("/");
}
