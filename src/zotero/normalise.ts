import { yearOf, type Attachment, type Creator, type Item, type LibraryRef, type Listing } from "./types.js";

/** A Zotero Web API object as it comes off the wire: trust nothing. */
export interface RawZoteroObject {
  key?: unknown;
  version?: unknown;
  data?: {
    key?: unknown;
    version?: unknown;
    itemType?: unknown;
    title?: unknown;
    creators?: unknown;
    date?: unknown;
    DOI?: unknown;
    collections?: unknown;
    tags?: unknown;
    parentItem?: unknown;
    linkMode?: unknown;
    contentType?: unknown;
    filename?: unknown;
    md5?: unknown;
    name?: unknown;
    parentCollection?: unknown;
    deleted?: unknown;
    [field: string]: unknown;
  };
}

const str = (v: unknown): string => (typeof v === "string" ? v : "");
const strOrNull = (v: unknown): string | null => (typeof v === "string" && v !== "" ? v : null);
const num = (v: unknown): number => (typeof v === "number" && Number.isFinite(v) ? v : Number(v) || 0);

function creatorsOf(v: unknown): Creator[] {
  if (!Array.isArray(v)) return [];
  const out: Creator[] = [];
  for (const c of v) {
    if (!c || typeof c !== "object") continue;
    const r = c as Record<string, unknown>;
    const creator: Creator = { creatorType: str(r.creatorType) || "author" };
    if (typeof r.name === "string") creator.name = r.name;
    if (typeof r.firstName === "string") creator.firstName = r.firstName;
    if (typeof r.lastName === "string") creator.lastName = r.lastName;
    out.push(creator);
  }
  return out;
}

function tagsOf(v: unknown): string[] {
  if (!Array.isArray(v)) return [];
  return v.map((t) => (t && typeof t === "object" ? str((t as { tag?: unknown }).tag) : str(t))).filter((t) => t !== "");
}

function attachmentOf(key: string, data: NonNullable<RawZoteroObject["data"]>, version: number): Attachment {
  return {
    key,
    version,
    parentKey: strOrNull(data.parentItem),
    title: str(data.title),
    linkMode: str(data.linkMode),
    contentType: strOrNull(data.contentType),
    filename: strOrNull(data.filename),
    md5: strOrNull(data.md5)?.toLowerCase() ?? null,
    size: null,
  };
}

const KEY = /^[A-Z0-9]{8}$/;

/**
 * Pure: raw objects (parents, attachments, notes in any order) → items with their
 * attachments joined. Malformed objects are reported, not thrown.
 */
export function normaliseListing(objects: RawZoteroObject[], library: LibraryRef, libraryVersion: number): Omit<Listing, "collections" | "requests"> {
  const invalid: { key: string; reason: string }[] = [];
  const items = new Map<string, Item>();
  const children: Attachment[] = [];
  const seen = new Set<string>();

  for (const o of objects) {
    const data = o && typeof o === "object" ? o.data : undefined;
    const key = str(data?.key ?? o?.key);
    if (!data || typeof data !== "object" || !KEY.test(key)) {
      invalid.push({ key: key || "(no key)", reason: "not a Zotero item (no data or no 8-character key)" });
      continue;
    }
    if (seen.has(key)) continue;
    seen.add(key);
    if (data.deleted === true || data.deleted === 1) continue;
    const version = num(data.version ?? o.version);
    const itemType = str(data.itemType);
    if (!itemType) {
      invalid.push({ key, reason: "no itemType" });
      continue;
    }
    if (itemType === "attachment") {
      const att = attachmentOf(key, data, version);
      if (att.parentKey) {
        children.push(att);
        continue;
      }
      items.set(key, {
        key,
        version,
        itemType,
        title: att.title,
        creators: [],
        date: str(data.date),
        year: yearOf(str(data.date)),
        doi: null,
        collections: Array.isArray(data.collections) ? data.collections.filter((c): c is string => typeof c === "string") : [],
        tags: tagsOf(data.tags),
        attachments: [att],
        standalone: true,
      });
      continue;
    }
    if (itemType === "note" && typeof data.parentItem === "string") continue; // child notes are nothing to import
    items.set(key, {
      key,
      version,
      itemType,
      title: str(data.title) || str(data.caseName) || str(data.nameOfAct) || str(data.subject),
      creators: creatorsOf(data.creators),
      date: str(data.date),
      year: yearOf(str(data.date)),
      doi: strOrNull(data.DOI),
      collections: Array.isArray(data.collections) ? data.collections.filter((c): c is string => typeof c === "string") : [],
      tags: tagsOf(data.tags),
      attachments: [],
      standalone: false,
    });
  }
  for (const att of children) {
    const parent = items.get(att.parentKey!);
    if (parent) parent.attachments.push(att);
  }
  return { library, libraryVersion, items: [...items.values()], invalid };
}
