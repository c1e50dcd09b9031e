import { yearOf, type Attachment, type Creator, type Item, type LibraryRef, type Listing } from "./types.js";

/** A Zotero Web API object as it comes off the wire: trust nothing. */
export interface RawZoteroObject {
  key?: unknown;
  version?: unknown;
  /** The Web API tells a stored file's size in links.enclosure.length. */
  links?: { enclosure?: { length?: unknown } | undefined; attachment?: { href?: unknown } | undefined } | undefined;
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

/**
 * One copy of each short value that repeats across a library (item types, link modes, content
 * types, creator types, attachment titles, publications, collection keys, tags): JSON.parse makes
 * a new string for every occurrence, and a 20 000-item listing is held until the run ends.
 * Long values (titles, abstracts) are unique and kept as they come.
 */
class Interner {
  private readonly pool = new Map<string, string>();

  of(value: string): string {
    if (value.length > 64) return value;
    const known = this.pool.get(value);
    if (known !== undefined) return known;
    this.pool.set(value, value);
    return value;
  }

  orNull(value: string | null): string | null {
    return value === null ? null : this.of(value);
  }
}

function creatorsOf(v: unknown, intern: Interner): Creator[] {
  if (!Array.isArray(v)) return [];
  const out: Creator[] = [];
  for (const c of v) {
    if (!c || typeof c !== "object") continue;
    const r = c as Record<string, unknown>;
    const creator: Creator = { creatorType: intern.of(str(r.creatorType) || "author") };
    if (typeof r.name === "string") creator.name = r.name;
    if (typeof r.firstName === "string") creator.firstName = r.firstName;
    if (typeof r.lastName === "string") creator.lastName = r.lastName;
    out.push(creator);
  }
  return out;
}

function tagsOf(v: unknown, intern: Interner): string[] {
  if (!Array.isArray(v)) return [];
  return v.map((t) => intern.of(t && typeof t === "object" ? str((t as { tag?: unknown }).tag) : str(t))).filter((t) => t !== "");
}

/**
 * How a listing tells whether a file is stored: the Web API gives links.enclosure for every
 * file in Zotero storage (no enclosure and no md5: never uploaded); Zotero's local API may
 * leave both out for files that are on disk, so there only an enclosure is evidence.
 */
export type FileEvidence = "web" | "local-api";

function hasFileOf(links: RawZoteroObject["links"], md5: string | null, evidence: FileEvidence): boolean | null {
  if (links?.enclosure && typeof links.enclosure === "object") return true;
  if (evidence === "local-api") return null;
  return md5 ? null : false;
}

function bestAttachmentOf(links: RawZoteroObject["links"]): string | null {
  const href = links?.attachment?.href;
  if (typeof href !== "string") return null;
  const key = href.replace(/[?#].*$/, "").split("/").filter(Boolean).pop() ?? "";
  return KEY.test(key) ? key : null;
}

function attachmentOf(key: string, data: NonNullable<RawZoteroObject["data"]>, version: number, links: RawZoteroObject["links"], evidence: FileEvidence, intern: Interner): Attachment {
  const size = links?.enclosure?.length;
  const md5 = strOrNull(data.md5)?.toLowerCase() ?? null;
  return {
    key,
    version,
    parentKey: strOrNull(data.parentItem),
    title: intern.of(str(data.title)),
    linkMode: intern.of(str(data.linkMode)),
    contentType: intern.orNull(strOrNull(data.contentType)),
    filename: strOrNull(data.filename),
    md5,
    size: typeof size === "number" && Number.isFinite(size) && size >= 0 ? size : null,
    hasFile: hasFileOf(links, md5, evidence),
  };
}

const KEY = /^[A-Z0-9]{8}$/;

/** Where Zotero keeps the name of the publication, by item type; the first present wins. */
const PUBLICATION_FIELDS = ["publicationTitle", "bookTitle", "proceedingsTitle", "websiteTitle", "blogTitle", "forumTitle", "encyclopediaTitle", "dictionaryTitle", "programTitle", "seriesTitle", "series", "university", "institution", "publisher"] as const;

/** Pure: a DOI as Zotero users write it (the DOI field, or "DOI: 10.…" in Extra), normalised. */
export function doiOf(field: unknown, extra: unknown): string | null {
  const find = (text: string): string | null => {
    const m = /\b(10\.\d{4,9}\/[^\s"<>]+)/i.exec(text);
    return m ? m[1]!.replace(/[.,;)\]]+$/, "") : null;
  };
  if (typeof field === "string" && field.trim() !== "") return find(field) ?? field.trim();
  if (typeof extra === "string") {
    for (const line of extra.split(/\r?\n/)) {
      if (/^\s*doi\s*:/i.test(line)) {
        const doi = find(line);
        if (doi) return doi;
      }
    }
  }
  return null;
}

/** Pure: the publication's name from an item's fields (any source: `get` reads one field). */
export function journalOf(get: (field: string) => unknown): string | null {
  for (const field of PUBLICATION_FIELDS) {
    const v = get(field);
    if (typeof v === "string" && v.trim() !== "") return v.trim();
  }
  return null;
}

/**
 * Folds raw objects (parents, attachments, notes, in any order, page by page) into
 * normalised items, so no raw page outlives its parsing. Malformed objects are reported,
 * not thrown.
 */
export class ListingBuilder {
  private readonly items = new Map<string, Item>();
  private readonly children: Attachment[] = [];
  private readonly seen = new Set<string>();
  readonly invalid: { key: string; reason: string }[] = [];
  private readonly intern = new Interner();

  constructor(private readonly evidence: FileEvidence = "web") {}

  has(key: string): boolean {
    return this.seen.has(key);
  }

  /** Parents that attachments point at but that have not been seen yet. */
  missingParents(): string[] {
    const missing = new Set<string>();
    for (const att of this.children) if (!this.seen.has(att.parentKey!)) missing.add(att.parentKey!);
    return [...missing];
  }

  add(objects: RawZoteroObject[]): void {
    for (const o of objects) this.addOne(o);
  }

  private addOne(o: RawZoteroObject): void {
    const data = o && typeof o === "object" ? o.data : undefined;
    const key = str(data?.key ?? o?.key);
    if (!data || typeof data !== "object" || !KEY.test(key)) {
      this.invalid.push({ key: key || "(no key)", reason: "not a Zotero item (no data or no 8-character key)" });
      return;
    }
    if (this.seen.has(key)) return;
    this.seen.add(key);
    if (data.deleted === true || data.deleted === 1) return;
    const version = num(data.version ?? o.version);
    const intern = this.intern;
    const itemType = intern.of(str(data.itemType));
    if (!itemType) {
      this.invalid.push({ key, reason: "no itemType" });
      return;
    }
    const collections = Array.isArray(data.collections) ? data.collections.filter((c): c is string => typeof c === "string").map((c) => intern.of(c)) : [];
    if (itemType === "attachment") {
      const att = attachmentOf(key, data, version, o.links, this.evidence, intern);
      if (att.parentKey) {
        this.children.push(att);
        return;
      }
      this.items.set(key, { key, version, itemType, title: att.title, creators: [], date: str(data.date), year: yearOf(str(data.date)), doi: null, collections, tags: tagsOf(data.tags, intern), attachments: [att], standalone: true });
      return;
    }
    if (itemType === "note" && typeof data.parentItem === "string") return; // child notes are nothing to import
    this.items.set(key, {
      key,
      version,
      itemType,
      title: str(data.title) || str(data.caseName) || str(data.nameOfAct) || str(data.subject),
      creators: creatorsOf(data.creators, intern),
      date: str(data.date),
      year: yearOf(str(data.date)),
      doi: doiOf(data.DOI, data.extra),
      journal: intern.orNull(journalOf((f) => data[f])),
      abstract: strOrNull(data.abstractNote),
      collections,
      tags: tagsOf(data.tags, intern),
      attachments: [],
      standalone: false,
      bestAttachment: bestAttachmentOf(o.links),
    });
  }

  /** Join attachments to their parents, in the order Zotero listed them. */
  build(library: LibraryRef, libraryVersion: number): Omit<Listing, "collections" | "requests"> {
    for (const att of this.children) this.items.get(att.parentKey!)?.attachments.push(att);
    this.children.length = 0;
    return { library, libraryVersion, items: [...this.items.values()], invalid: this.invalid };
  }
}
