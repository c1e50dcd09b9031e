/**
 * A fake Zotero Web API v3 server for tests: a real HTTP server on 127.0.0.1,
 * serving one user or group library from memory, with pagination headers,
 * file redirects to a key-less storage route, and fault injection.
 * Like zotero.org it gives regular items `links.attachment` (their best stored
 * attachment), and it can lie in `Total-Results` or leave out `Link`.
 *
 *   const lib = makeLibrary({ items: 250 });
 *   const zot = new FakeZotero({ library: lib });
 *   const { url, close } = await zot.start();
 *   // url + lib.prefix  ->  http://127.0.0.1:PORT/users/123456
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { randomBytes } from "node:crypto";
import { makePdf, md5 } from "./pdf.js";
import { makeRng, trackedSleep as sleep } from "./util.js";

// ---------------------------------------------------------------------------
// Zotero JSON shapes
// ---------------------------------------------------------------------------

export type LibraryType = "user" | "group";
export type LinkMode = "imported_file" | "imported_url" | "linked_file" | "linked_url" | "embedded_image";

export type ZoteroCreator =
  | { creatorType: string; firstName: string; lastName: string }
  | { creatorType: string; name: string };

export interface ZoteroTag {
  tag: string;
  type?: number;
}

export interface ZoteroItemData {
  key: string;
  version: number;
  itemType: string;
  title?: string;
  creators?: ZoteroCreator[];
  date?: string;
  collections?: string[];
  tags: ZoteroTag[];
  relations?: Record<string, string | string[]>;
  parentItem?: string;
  linkMode?: LinkMode;
  contentType?: string;
  charset?: string;
  filename?: string;
  md5?: string | null;
  mtime?: number | null;
  path?: string;
  url?: string;
  note?: string;
  deleted?: 1 | true;
  dateAdded?: string;
  dateModified?: string;
  [field: string]: unknown;
}

export interface ZoteroLibraryRef {
  type: LibraryType;
  id: number;
  name: string;
  links: { alternate: { href: string; type: string } };
}

export interface ZoteroItem {
  key: string;
  version: number;
  library: ZoteroLibraryRef;
  links?: Record<string, { href: string; type: string; title?: string; length?: number; attachmentSize?: number; attachmentType?: string }>;
  meta?: { creatorSummary?: string; parsedDate?: string; numChildren?: number };
  data: ZoteroItemData;
}

export interface ZoteroCollectionData {
  key: string;
  version: number;
  name: string;
  parentCollection: false | string;
  relations?: Record<string, string | string[]>;
}

export interface ZoteroCollection {
  key: string;
  version: number;
  library?: ZoteroLibraryRef;
  meta?: { numCollections?: number; numItems?: number };
  data: ZoteroCollectionData;
}

/** Everything FakeZotero needs; `FakeLibrary` (from makeLibrary) implements it. */
export interface ZoteroLibraryData {
  libraryType: LibraryType;
  libraryId: number;
  libraryName: string;
  apiKey: string;
  /** Library version (`Last-Modified-Version`). */
  version: number;
  items: ZoteroItem[];
  collections: ZoteroCollection[];
  /** Stored file bodies by attachment key (absent: 404 on /file). */
  files: Map<string, Buffer>;
  /** Deleted object keys with the library version at deletion (for /deleted?since=). */
  deleted: { items: Map<string, number>; collections: Map<string, number> };
}

// ---------------------------------------------------------------------------
// Keys and deterministic randomness
// ---------------------------------------------------------------------------

export const ZOTERO_KEY_ALPHABET = "23456789ABCDEFGHIJKLMNPQRSTUVWXYZ";
export const ZOTERO_KEY_RE = /^[23456789ABCDEFGHIJKLMNPQRSTUVWXYZ]{8}$/;

export { makeRng };

export function makeZoteroKey(rng: () => number = Math.random): string {
  let k = "";
  for (let i = 0; i < 8; i++) k += ZOTERO_KEY_ALPHABET[Math.floor(rng() * ZOTERO_KEY_ALPHABET.length)] ?? "2";
  return k;
}

const FIRST_NAMES = ["Ada", "Alan", "Grace", "Claude", "Barbara", "Donald", "Edsger", "Frances", "John", "Radia", "Tim", "Hedy"];
const LAST_NAMES = ["Lovelace", "Turing", "Hopper", "Shannon", "Liskov", "Knuth", "Dijkstra", "Allen", "McCarthy", "Perlman", "Berners-Lee", "Lamarr"];
const TOPICS = ["Graph", "Entropy", "Lattice", "Sparse", "Quantum", "Fossil", "Protein", "Neural", "Tectonic", "Stochastic", "Bayesian", "Cellular"];
const NOUNS = ["Methods", "Dynamics", "Networks", "Inference", "Structures", "Models", "Records", "Phylogeny", "Sampling", "Automata"];
const JOURNALS = ["Journal of Examples", "Proceedings of Tests", "Annals of Fakes", "Letters in Fixtures"];

function pick<T>(arr: readonly T[], rng: () => number): T {
  const v = arr[Math.floor(rng() * arr.length)];
  if (v === undefined) throw new Error("pick from empty array");
  return v;
}

function safeFilenamePart(s: string): string {
  return s.replace(/[\\/:*?"<>|]/g, "").slice(0, 60).trim();
}

// ---------------------------------------------------------------------------
// Library builder
// ---------------------------------------------------------------------------

export interface MakeLibraryOptions {
  /** Number of parent items, each with one stored PDF attachment (imported_file). Default 0. */
  items?: number;
  libraryType?: LibraryType;
  libraryId?: number;
  libraryName?: string;
  apiKey?: string;
  /** Seed for keys, names and titles (deterministic output). Default 1. */
  seed?: number;
  /** Starting library version. Default 100. */
  startVersion?: number;
  /** Pad every generated PDF to this size in bytes. */
  padToBytes?: number;
  /** Item type of generated parents. Default "journalArticle". */
  itemType?: string;
}

export interface AddParentOptions {
  title?: string;
  itemType?: string;
  creators?: ZoteroCreator[];
  date?: string;
  tags?: string[];
  collections?: string[];
  /** Extra/overriding data fields. */
  extra?: Partial<ZoteroItemData>;
  key?: string;
}

export interface AddAttachmentOptions {
  title?: string;
  filename?: string;
  contentType?: string;
  /** File body; default: a generated PDF (for PDF content types) or text. */
  body?: Buffer;
  /**
   * When false: the attachment was never uploaded to Zotero storage (file sync off, or
   * not yet synced): `md5: null`, `mtime: null`, no `links.enclosure`, 404 on /file,
   * never Zotero's best attachment. Default true.
   */
  stored?: boolean;
  /**
   * The file is synced by WebDAV: `md5` and `mtime` are set as by a sync, but no file is
   * in Zotero storage (no `links.enclosure`, 404 on /file, never Zotero's best
   * attachment). Wins over `stored`. Default false.
   */
  webdav?: boolean;
  linkMode?: "imported_file" | "imported_url";
  padToBytes?: number;
  key?: string;
  tags?: string[];
  collections?: string[];
  extra?: Partial<ZoteroItemData>;
}

export interface AddedItem {
  key: string;
  item: ZoteroItem;
}

export interface AddedParentWithPdf {
  parent: ZoteroItem;
  attachment: ZoteroItem;
  parentKey: string;
  attachmentKey: string;
  body: Buffer;
  md5: string;
}

export class FakeLibrary implements ZoteroLibraryData {
  libraryType: LibraryType;
  libraryId: number;
  libraryName: string;
  apiKey: string;
  version: number;
  items: ZoteroItem[] = [];
  collections: ZoteroCollection[] = [];
  files = new Map<string, Buffer>();
  deleted = { items: new Map<string, number>(), collections: new Map<string, number>() };
  readonly rng: () => number;
  readonly padToBytes: number | undefined;
  private readonly usedKeys = new Set<string>();
  private clock = Date.UTC(2020, 0, 1);

  constructor(opts: MakeLibraryOptions = {}) {
    this.libraryType = opts.libraryType ?? "user";
    this.libraryId = opts.libraryId ?? (this.libraryType === "user" ? 475425 : 2_000_123);
    this.libraryName = opts.libraryName ?? (this.libraryType === "user" ? "testuser" : "Test Group");
    this.apiKey = opts.apiKey ?? "P9NiFoyLeZu2bZNvvuQPDWsd";
    this.version = opts.startVersion ?? 100;
    this.rng = makeRng(opts.seed ?? 1);
    this.padToBytes = opts.padToBytes;
  }

  /** `/users/ID` or `/groups/ID`. */
  get prefix(): string {
    return `/${this.libraryType === "user" ? "users" : "groups"}/${this.libraryId}`;
  }

  get libraryRef(): ZoteroLibraryRef {
    return {
      type: this.libraryType,
      id: this.libraryId,
      name: this.libraryName,
      links: {
        alternate: {
          href: `https://www.zotero.org/${this.libraryType === "user" ? this.libraryName : `groups/${this.libraryId}`}`,
          type: "text/html",
        },
      },
    };
  }

  newKey(): string {
    for (;;) {
      const k = makeZoteroKey(this.rng);
      if (!this.usedKeys.has(k)) {
        this.usedKeys.add(k);
        return k;
      }
    }
  }

  private claimKey(key: string | undefined): string {
    if (key === undefined) return this.newKey();
    if (this.usedKeys.has(key)) throw new Error(`duplicate key ${key}`);
    this.usedKeys.add(key);
    return key;
  }

  /** Increment the library version and return it. */
  bump(): number {
    this.version += 1;
    return this.version;
  }

  private stamp(): string {
    this.clock += 61_000;
    return new Date(this.clock).toISOString().replace(/\.\d{3}Z$/, "Z");
  }

  getItem(key: string): ZoteroItem | undefined {
    return this.items.find((i) => i.key === key);
  }

  getCollection(key: string): ZoteroCollection | undefined {
    return this.collections.find((c) => c.key === key);
  }

  children(parentKey: string): ZoteroItem[] {
    return this.items.filter((i) => i.data.parentItem === parentKey);
  }

  /** Low-level: add an item with the given data (key/version filled in). */
  addItem(data: Partial<ZoteroItemData> & { itemType: string }): ZoteroItem {
    const key = this.claimKey(data.key);
    const version = this.bump();
    const now = this.stamp();
    const fullData: ZoteroItemData = {
      ...data,
      itemType: data.itemType,
      key,
      version,
      tags: data.tags ?? [],
      relations: data.relations ?? {},
      dateAdded: data.dateAdded ?? now,
      dateModified: data.dateModified ?? now,
    };
    if (fullData.parentItem === undefined && fullData.collections === undefined) fullData.collections = [];
    if (fullData.parentItem !== undefined) delete fullData.collections;
    const item: ZoteroItem = { key, version, library: this.libraryRef, data: fullData };
    this.items.push(item);
    return item;
  }

  /** A regular (non-attachment, non-note) item with no children. */
  addParent(opts: AddParentOptions = {}): ZoteroItem {
    const creators: ZoteroCreator[] = opts.creators ?? [
      { creatorType: "author", firstName: pick(FIRST_NAMES, this.rng), lastName: pick(LAST_NAMES, this.rng) },
      ...(this.rng() < 0.5 ? [{ creatorType: "author", firstName: pick(FIRST_NAMES, this.rng), lastName: pick(LAST_NAMES, this.rng) }] : []),
    ];
    const year = 1990 + Math.floor(this.rng() * 35);
    const title = opts.title ?? `${pick(TOPICS, this.rng)} ${pick(NOUNS, this.rng)} ${this.items.length + 1}`;
    return this.addItem({
      key: opts.key,
      itemType: opts.itemType ?? "journalArticle",
      title,
      creators,
      abstractNote: "",
      publicationTitle: pick(JOURNALS, this.rng),
      volume: String(1 + Math.floor(this.rng() * 40)),
      pages: "",
      date: opts.date ?? `${year}-${String(1 + Math.floor(this.rng() * 12)).padStart(2, "0")}`,
      DOI: `10.5555/test.${this.items.length + 1}`,
      url: "",
      accessDate: "",
      extra: "",
      tags: (opts.tags ?? []).map((tag) => ({ tag })),
      collections: opts.collections ?? [],
      ...opts.extra,
    });
  }

  /**
   * Add an attachment (stored file) under `parentKey`, or standalone when parentKey is undefined.
   * `body` is the file as in Zotero storage (undefined unless stored); `md5` is the data's md5
   * (set for stored and WebDAV files, undefined for never-synced ones).
   */
  addStoredAttachment(parentKey: string | undefined, opts: AddAttachmentOptions = {}): AddedItem & { body: Buffer | undefined; md5: string | undefined } {
    const parent = parentKey ? this.getItem(parentKey) : undefined;
    if (parentKey && !parent) throw new Error(`no parent ${parentKey}`);
    const contentType = opts.contentType ?? "application/pdf";
    const isPdf = contentType === "application/pdf";
    const baseTitle = (parent?.data.title as string | undefined) ?? opts.title ?? "Standalone";
    const filename =
      opts.filename ??
      `${safeFilenamePart(creatorLabel(parent?.data.creators ?? []) || "Unknown")} - ${safeFilenamePart(baseTitle)}.${isPdf ? "pdf" : extFor(contentType)}`;
    const body =
      opts.body ??
      (isPdf
        ? makePdf({ title: baseTitle, pages: [`${baseTitle}\nAttachment of ${parentKey ?? "none"}`], padToBytes: opts.padToBytes ?? this.padToBytes })
        : Buffer.from(`<html><body>${baseTitle}</body></html>\n`));
    const webdav = opts.webdav === true;
    const stored = !webdav && (opts.stored ?? true);
    const synced = stored || webdav;
    const item = this.addItem({
      key: opts.key,
      itemType: "attachment",
      ...(parentKey ? { parentItem: parentKey } : { collections: opts.collections ?? [] }),
      linkMode: opts.linkMode ?? "imported_file",
      title: opts.title ?? (isPdf ? "Full Text PDF" : "Snapshot"),
      accessDate: "",
      url: opts.linkMode === "imported_url" ? "https://example.org/paper" : "",
      note: "",
      contentType,
      charset: isPdf ? "" : "utf-8",
      filename,
      md5: synced ? md5(body) : null,
      mtime: synced ? 1_600_000_000_000 + this.items.length * 1000 : null,
      tags: (opts.tags ?? []).map((tag) => ({ tag })),
      ...opts.extra,
    });
    if (stored) this.files.set(item.key, body);
    return { key: item.key, item, body: stored ? body : undefined, md5: synced ? md5(body) : undefined };
  }

  /** A parent item with one stored PDF attachment (imported_file). */
  addParentWithPdf(opts: AddParentOptions & { attachment?: AddAttachmentOptions } = {}): AddedParentWithPdf {
    const parent = this.addParent(opts);
    const att = this.addStoredAttachment(parent.key, opts.attachment);
    if (!att.body || !att.md5) throw new Error("attachment not stored");
    return { parent, attachment: att.item, parentKey: parent.key, attachmentKey: att.key, body: att.body, md5: att.md5 };
  }

  /** A top-level PDF attachment with no parent item. */
  addStandalonePdf(opts: AddAttachmentOptions = {}): AddedItem & { body: Buffer; md5: string } {
    const r = this.addStoredAttachment(undefined, { title: opts.title ?? `Standalone ${this.items.length + 1}.pdf`, ...opts });
    if (!r.body || !r.md5) throw new Error("standalone not stored");
    return { key: r.key, item: r.item, body: r.body, md5: r.md5 };
  }

  /** A linked_file PDF attachment (no stored file: /file answers 404). */
  addLinkedFile(parentKey: string | undefined, opts: { title?: string; path?: string; contentType?: string } = {}): ZoteroItem {
    return this.addItem({
      itemType: "attachment",
      ...(parentKey ? { parentItem: parentKey } : { collections: [] }),
      linkMode: "linked_file",
      title: opts.title ?? "Linked PDF",
      accessDate: "",
      url: "",
      note: "",
      contentType: opts.contentType ?? "application/pdf",
      charset: "",
      path: opts.path ?? "/home/user/papers/linked.pdf",
    });
  }

  /** A linked_url attachment (web link, no file). */
  addLinkedUrl(parentKey: string | undefined, opts: { title?: string; url?: string } = {}): ZoteroItem {
    return this.addItem({
      itemType: "attachment",
      ...(parentKey ? { parentItem: parentKey } : { collections: [] }),
      linkMode: "linked_url",
      title: opts.title ?? "Publisher page",
      accessDate: "2021-01-01T00:00:00Z",
      url: opts.url ?? "https://example.org/landing",
      note: "",
      contentType: "",
      charset: "",
    });
  }

  /** A stored non-PDF attachment (HTML snapshot by default). */
  addNonPdfAttachment(parentKey: string | undefined, opts: AddAttachmentOptions = {}): AddedItem & { body: Buffer | undefined } {
    const r = this.addStoredAttachment(parentKey, { contentType: "text/html", linkMode: "imported_url", ...opts });
    return { key: r.key, item: r.item, body: r.body };
  }

  /** A child note (or standalone note when parentKey is undefined). */
  addNote(parentKey: string | undefined, html = "<p>A note</p>"): ZoteroItem {
    return this.addItem({ itemType: "note", ...(parentKey ? { parentItem: parentKey } : { collections: [] }), note: html });
  }

  /** A regular item with no attachment at all. */
  addItemWithoutAttachment(opts: AddParentOptions = {}): ZoteroItem {
    return this.addParent(opts);
  }

  /** A collection; `parent` makes it a subcollection. */
  addCollection(name: string, parent?: string, key?: string): ZoteroCollection {
    if (parent && !this.getCollection(parent)) throw new Error(`no collection ${parent}`);
    const k = this.claimKey(key);
    const version = this.bump();
    const coll: ZoteroCollection = {
      key: k,
      version,
      library: this.libraryRef,
      data: { key: k, version, name, parentCollection: parent ?? false, relations: {} },
    };
    this.collections.push(coll);
    return coll;
  }

  /** Put a top-level item into a collection (bumps versions). */
  addToCollection(itemKey: string, collectionKey: string): void {
    const item = this.getItem(itemKey);
    if (!item) throw new Error(`no item ${itemKey}`);
    if (!this.getCollection(collectionKey)) throw new Error(`no collection ${collectionKey}`);
    const colls = item.data.collections ?? [];
    if (!colls.includes(collectionKey)) item.data.collections = [...colls, collectionKey];
    this.touch(itemKey);
  }

  /** Modify an item's data fields and bump its version. */
  update(itemKey: string, patch: Partial<ZoteroItemData>): ZoteroItem {
    const item = this.getItem(itemKey);
    if (!item) throw new Error(`no item ${itemKey}`);
    Object.assign(item.data, patch);
    this.touch(itemKey);
    return item;
  }

  /** Bump an item's version to a new library version (as an edit would). */
  touch(itemKey: string): number {
    const item = this.getItem(itemKey);
    if (!item) throw new Error(`no item ${itemKey}`);
    const v = this.bump();
    item.version = v;
    item.data.version = v;
    item.data.dateModified = this.stamp();
    return v;
  }

  /** Move an item to the trash (excluded from listings unless includeTrashed=1). */
  trash(itemKey: string): void {
    this.update(itemKey, { deleted: 1 });
  }

  /** Delete an item for good (appears in /deleted?since=). */
  deleteItem(itemKey: string): void {
    const idx = this.items.findIndex((i) => i.key === itemKey);
    if (idx < 0) throw new Error(`no item ${itemKey}`);
    this.items.splice(idx, 1);
    this.files.delete(itemKey);
    this.deleted.items.set(itemKey, this.bump());
  }

  /** Restore an item from the trash (bumps its version and the library's, as Zotero does). */
  restore(itemKey: string): void {
    const item = this.getItem(itemKey);
    if (!item) throw new Error(`no item ${itemKey}`);
    delete item.data.deleted;
    this.touch(itemKey);
  }

  /** Delete an item for good with its child items, as Zotero does (each appears in /deleted?since=). */
  deleteWithChildren(itemKey: string): void {
    for (const child of this.children(itemKey)) this.deleteItem(child.key);
    this.deleteItem(itemKey);
  }

  /** Replace an attachment's stored file (updates md5/mtime and version). */
  setFile(attachmentKey: string, body: Buffer): void {
    this.files.set(attachmentKey, body);
    this.update(attachmentKey, { md5: md5(body), mtime: 1_700_000_000_000 });
  }

  /** Parent items that have a stored PDF attachment, with that attachment. */
  pdfPairs(): Array<{ parent: ZoteroItem | undefined; attachment: ZoteroItem; body: Buffer }> {
    const out: Array<{ parent: ZoteroItem | undefined; attachment: ZoteroItem; body: Buffer }> = [];
    for (const it of this.items) {
      const body = this.files.get(it.key);
      if (it.data.itemType !== "attachment" || it.data.contentType !== "application/pdf" || !body) continue;
      const parent = it.data.parentItem ? this.getItem(it.data.parentItem) : undefined;
      out.push({ parent, attachment: it, body });
    }
    return out;
  }
}

function creatorLabel(creators: readonly ZoteroCreator[]): string {
  const first = creators[0];
  if (!first) return "";
  return "lastName" in first ? first.lastName : first.name;
}

function extFor(contentType: string): string {
  if (contentType === "text/html") return "html";
  if (contentType.startsWith("image/")) return contentType.slice(6);
  if (contentType === "application/epub+zip") return "epub";
  return "bin";
}

/** n parent items, each with one stored PDF attachment. Use the FakeLibrary methods to add more. */
export function makeLibrary(opts: MakeLibraryOptions = {}): FakeLibrary {
  const lib = new FakeLibrary(opts);
  for (let i = 0; i < (opts.items ?? 0); i++) lib.addParentWithPdf({ itemType: opts.itemType });
  return lib;
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

export type ZoteroRoute =
  | "items"
  | "items/top"
  | "items/trash"
  | "item"
  | "item/children"
  | "item/file"
  | "collections"
  | "collections/top"
  | "collection"
  | "collection/collections"
  | "collection/items"
  | "collection/items/top"
  | "deleted"
  | "keys"
  | "storage"
  | "unknown";

export const ZOTERO_ROUTES: readonly ZoteroRoute[] = [
  "items",
  "items/top",
  "items/trash",
  "item",
  "item/children",
  "item/file",
  "collections",
  "collections/top",
  "collection",
  "collection/collections",
  "collection/items",
  "collection/items/top",
  "deleted",
  "keys",
  "storage",
  "unknown",
];

/** Routes that return a (paginated) list of objects. */
export const ZOTERO_LISTING_ROUTES: readonly ZoteroRoute[] = [
  "items",
  "items/top",
  "items/trash",
  "item/children",
  "collections",
  "collections/top",
  "collection/collections",
  "collection/items",
  "collection/items/top",
];

export interface ZoteroRequestInfo {
  seq: number;
  method: string;
  /** Path without query string. */
  path: string;
  route: ZoteroRoute;
  /** Object key in the path (item/collection key), if any. For storage: the attachment key. */
  objectKey: string | undefined;
  /** Query parameters (the `key` parameter is removed; see secrets). Repeated params joined with "," ... use rawQuery for exact. */
  query: Record<string, string>;
  /** Raw query string with `key=` redacted. */
  rawQuery: string;
  /** Request headers minus zotero-api-key, authorization, cookie. */
  headers: Record<string, string>;
  /** Final status sent (0 while in flight or if the socket was destroyed). */
  status: number;
  /** Which fault (if any) produced the answer. */
  fault: string | undefined;
}

export interface ZoteroSecretRecord {
  seq: number;
  route: ZoteroRoute;
  apiKeyHeader: string | undefined;
  authorization: string | undefined;
  keyParam: string | undefined;
}

export type ZoteroMatcher = ZoteroRoute | readonly ZoteroRoute[] | ((req: ZoteroRequestInfo) => boolean);

/**
 * What a fault rule does to a matching request. "status", "destroy" and "short-body" decide
 * the answer; "delay" and "backoff" modify an otherwise normal one (and combine with the others):
 * - status: answer `status` with `body` (Content-Type text/plain, or application/xml on the
 *   storage route when the body looks like XML, e.g. S3's `<Error>...</Error>`) and `headers`;
 * - delay: wait `ms` before answering;
 * - backoff: add `Backoff: seconds` to the answer (API, /file redirects and storage alike);
 * - destroy: reset the connection without an answer;
 * - short-body: the normal answer's headers with the full Content-Length, then half the body
 *   bytes, then the socket destroyed (any route; meant for storage downloads).
 */
export type ZoteroFaultAction =
  | { kind: "status"; status: number; headers?: Record<string, string>; body?: string }
  | { kind: "delay"; ms: number }
  | { kind: "backoff"; seconds: number }
  | { kind: "destroy" }
  | { kind: "short-body" };

interface FaultRule {
  id: number;
  label: string;
  match: ZoteroMatcher | undefined;
  remaining: number;
  action: ZoteroFaultAction;
}

export interface FakeZoteroOptions {
  library: ZoteroLibraryData;
  /** Max `limit` (Zotero: 100). */
  maxLimit?: number;
  /** Default `limit` (Zotero: 25). */
  defaultLimit?: number;
  /**
   * Where `/items/KEY/file` redirects: "same" (this server, `/_storage/...`) or
   * "separate" (a second 127.0.0.1 server = another origin, like S3). Default "same".
   */
  storage?: "same" | "separate";
  /** Storage answers 400 when a Zotero key or Authorization reaches it (S3 rejects extra auth). Default false. */
  storageRejectsAuth?: boolean;
  /** Additional accepted API keys (e.g. a second valid key). */
  extraApiKeys?: string[];
  /**
   * Give regular top-level items `links.attachment` (Zotero's best attachment: a child
   * imported_file/imported_url attachment with a file in Zotero storage; PDF before EPUB
   * before HTML before anything else; then `url` equal to the parent's non-empty `url`;
   * then oldest `dateAdded`; then library order), as zotero.org does. Default true.
   * Also a public mutable field (`bestAttachmentLinks`).
   */
  bestAttachmentLinks?: boolean;
  /**
   * Make listings lie: the `Total-Results` header says `totalResults(realTotal, route)`
   * instead of the real count (e.g. `(n) => n - 28`). Pagination and the `Link` header
   * still follow the real count. Default: the truth. Also a public mutable field.
   */
  totalResults?: (realTotal: number, route: ZoteroRoute) => number;
  /** Send the `Link` header on listings. false omits it entirely. Default true. Also a public mutable field. */
  linkHeader?: boolean;
}

export interface StartedServer {
  url: string;
  close(): Promise<void>;
}

export interface CorruptionRule {
  remaining: number;
  mode: "flip" | "truncate";
}

function tokenFor(): string {
  return randomBytes(12).toString("hex");
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const addr = server.address() as AddressInfo;
  return `http://127.0.0.1:${addr.port}`;
}


export class FakeZotero {
  readonly library: ZoteroLibraryData;
  readonly log: ZoteroRequestInfo[] = [];
  readonly secrets: ZoteroSecretRecord[] = [];
  readonly counters: Record<ZoteroRoute, number>;
  /** Requests to the storage route that carried a Zotero key (header, bearer or param). Must stay empty. */
  readonly storageKeyLeaks: ZoteroSecretRecord[] = [];
  /** Completed storage downloads per attachment key (including corrupted ones). */
  readonly downloadsByKey = new Map<string, number>();
  /** Requests in flight (API + storage). */
  inFlight = 0;
  peakInFlight = 0;
  /** Storage downloads in flight (subset of inFlight). */
  storageInFlight = 0;
  peakStorageInFlight = 0;
  /** See FakeZoteroOptions.bestAttachmentLinks; may be changed while running. */
  bestAttachmentLinks: boolean;
  /** See FakeZoteroOptions.totalResults; set to undefined to heal. */
  totalResults: ((realTotal: number, route: ZoteroRoute) => number) | undefined;
  /** See FakeZoteroOptions.linkHeader; set to true to heal. */
  linkHeader: boolean;

  private readonly opts: Required<Pick<FakeZoteroOptions, "maxLimit" | "defaultLimit" | "storage" | "storageRejectsAuth">>;
  private readonly extraApiKeys: Set<string>;
  private readonly revokedKeys = new Set<string>();
  private server: Server | undefined;
  private storageServer: Server | undefined;
  private baseUrl = "";
  private storageUrl = "";
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private rules: FaultRule[] = [];
  private ruleSeq = 0;
  private seq = 0;
  private readonly tokens = new Map<string, string>();
  private readonly corruptions = new Map<string, CorruptionRule>();
  /** Answers a "short-body" fault picked: full Content-Length, half the bytes, then a reset. */
  private readonly shortBodies = new WeakSet<ServerResponse>();

  constructor(opts: FakeZoteroOptions) {
    this.library = opts.library;
    this.opts = {
      maxLimit: opts.maxLimit ?? 100,
      defaultLimit: opts.defaultLimit ?? 25,
      storage: opts.storage ?? "same",
      storageRejectsAuth: opts.storageRejectsAuth ?? false,
    };
    this.extraApiKeys = new Set(opts.extraApiKeys ?? []);
    this.bestAttachmentLinks = opts.bestAttachmentLinks ?? true;
    this.totalResults = opts.totalResults;
    this.linkHeader = opts.linkHeader ?? true;
    this.counters = Object.fromEntries(ZOTERO_ROUTES.map((r) => [r, 0])) as Record<ZoteroRoute, number>;
  }

  /** Base URL (`http://127.0.0.1:PORT`) once started. */
  get url(): string {
    if (!this.baseUrl) throw new Error("FakeZotero not started");
    return this.baseUrl;
  }

  /** `http://127.0.0.1:PORT/users/ID` (or groups). */
  get libraryUrl(): string {
    return `${this.url}/${this.library.libraryType === "user" ? "users" : "groups"}/${this.library.libraryId}`;
  }

  async start(): Promise<StartedServer> {
    const server = createServer((req, res) => void this.handle(req, res, "api"));
    server.on("connection", (s: Socket) => {
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    this.server = server;
    this.baseUrl = await listen(server);
    this.storageUrl = this.baseUrl;
    if (this.opts.storage === "separate") {
      const storage = createServer((req, res) => void this.handle(req, res, "storage"));
      storage.on("connection", (s: Socket) => {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
      });
      this.storageServer = storage;
      this.storageUrl = await listen(storage);
    }
    return { url: this.baseUrl, close: () => this.close() };
  }

  async close(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const s of this.sockets) s.destroy();
    const closeOne = (srv: Server | undefined): Promise<void> =>
      srv ? new Promise<void>((resolve) => srv.close(() => resolve())) : Promise.resolve();
    await Promise.all([closeOne(this.server), closeOne(this.storageServer)]);
    this.server = undefined;
    this.storageServer = undefined;
  }

  private keyValid(k: string | undefined): boolean {
    if (!k || this.revokedKeys.has(k)) return false;
    return k === this.library.apiKey || this.extraApiKeys.has(k);
  }

  // ---- fault injection ----------------------------------------------------

  /** From now on the key (default: the library key) answers 403 Forbidden (revoked mid-run). */
  revokeApiKey(key: string = this.library.apiKey): void {
    this.revokedKeys.add(key);
  }

  restoreApiKey(key: string = this.library.apiKey): void {
    this.revokedKeys.delete(key);
  }

  /** Generic rule: the next `count` matching requests get `action`. Returns a rule id. */
  addFault(action: ZoteroFaultAction, opts: { count?: number; match?: ZoteroMatcher; label?: string } = {}): number {
    const id = ++this.ruleSeq;
    this.rules.push({ id, label: opts.label ?? action.kind, match: opts.match, remaining: opts.count ?? 1, action });
    return id;
  }

  removeFault(id: number): void {
    this.rules = this.rules.filter((r) => r.id !== id);
  }

  clearFaults(): void {
    this.rules = [];
    this.corruptions.clear();
  }

  /** 429 Too Many Requests with `Retry-After: seconds` for the next `count` matching requests. */
  rateLimitNext(count: number, retryAfterSeconds = 1, match?: ZoteroMatcher): number {
    return this.addFault(
      { kind: "status", status: 429, headers: { "Retry-After": String(retryAfterSeconds) }, body: "Too Many Requests" },
      { count, match, label: "429" },
    );
  }

  /** 503 Service Unavailable with `Retry-After` for the next `count` matching requests. */
  unavailableNext(count: number, retryAfterSeconds = 1, match?: ZoteroMatcher): number {
    return this.addFault(
      { kind: "status", status: 503, headers: { "Retry-After": String(retryAfterSeconds) }, body: "Service Unavailable" },
      { count, match, label: "503" },
    );
  }

  /** Arbitrary status for the next `count` matching requests. */
  failNext(count: number, status: number, match?: ZoteroMatcher, body = "Error", headers?: Record<string, string>): number {
    return this.addFault({ kind: "status", status, body, headers }, { count, match, label: String(status) });
  }

  /** Add `Backoff: seconds` to the next `count` matching (otherwise normal) answers. */
  backoffOn(count: number, seconds: number, match?: ZoteroMatcher): number {
    return this.addFault({ kind: "backoff", seconds }, { count, match, label: "backoff" });
  }

  /** Delay the next `count` matching requests by `ms` (Infinity count = all). */
  delay(ms: number, match?: ZoteroMatcher, count = Number.POSITIVE_INFINITY): number {
    return this.addFault({ kind: "delay", ms }, { count, match, label: "delay" });
  }

  /** Destroy the socket without answering for the next `count` matching requests. */
  resetNext(count: number, match?: ZoteroMatcher): number {
    return this.addFault({ kind: "destroy" }, { count, match, label: "reset" });
  }

  /**
   * Serve a corrupted body for attachment `key` on the next `times` storage downloads:
   * "flip" = same length, different bytes (md5 mismatch); "truncate" = full Content-Length
   * announced, half sent, socket destroyed.
   */
  corruptFile(key: string, times = 1, mode: "flip" | "truncate" = "flip"): void {
    this.corruptions.set(key, { remaining: times, mode });
  }

  // ---- observability --------------------------------------------------------

  /** Number of requests made to listing routes (items, top, children, collections...). */
  listingRequestCount(opts: { includeFaulted?: boolean } = {}): number {
    return this.log.filter(
      (r) => ZOTERO_LISTING_ROUTES.includes(r.route) && (opts.includeFaulted !== false || r.fault === undefined),
    ).length;
  }

  requestsTo(route: ZoteroRoute): ZoteroRequestInfo[] {
    return this.log.filter((r) => r.route === route);
  }

  resetObservations(): void {
    this.log.length = 0;
    this.secrets.length = 0;
    this.storageKeyLeaks.length = 0;
    this.downloadsByKey.clear();
    for (const r of ZOTERO_ROUTES) this.counters[r] = 0;
    this.peakInFlight = this.inFlight;
    this.peakStorageInFlight = this.storageInFlight;
  }

  // ---- request handling -----------------------------------------------------

  private classify(path: string, listener: "api" | "storage"): { route: ZoteroRoute; objectKey?: string; libType?: string; libId?: string } {
    const sm = /^\/_storage\/([0-9a-f]+)\/[^/]+$/.exec(path);
    if (sm) return { route: "storage", objectKey: sm[1] ? this.tokens.get(sm[1]) : undefined };
    if (listener === "storage") return { route: "unknown" };
    const km = /^\/keys\/([^/]+)$/.exec(path);
    if (km) return { route: "keys" };
    const m = /^\/(users|groups)\/(\d+)(\/.*)?$/.exec(path);
    if (!m) return { route: "unknown" };
    const libType = m[1];
    const libId = m[2];
    const rest = m[3] ?? "";
    const K = "([23456789A-Z]{8})";
    const table: Array<[RegExp, ZoteroRoute]> = [
      [/^\/items\/?$/, "items"],
      [/^\/items\/top\/?$/, "items/top"],
      [/^\/items\/trash\/?$/, "items/trash"],
      [new RegExp(`^/items/${K}/?$`), "item"],
      [new RegExp(`^/items/${K}/children/?$`), "item/children"],
      [new RegExp(`^/items/${K}/file(?:/view)?/?$`), "item/file"],
      [/^\/collections\/?$/, "collections"],
      [/^\/collections\/top\/?$/, "collections/top"],
      [new RegExp(`^/collections/${K}/?$`), "collection"],
      [new RegExp(`^/collections/${K}/collections/?$`), "collection/collections"],
      [new RegExp(`^/collections/${K}/items/?$`), "collection/items"],
      [new RegExp(`^/collections/${K}/items/top/?$`), "collection/items/top"],
      [/^\/deleted\/?$/, "deleted"],
    ];
    for (const [re, route] of table) {
      const mm = re.exec(rest);
      if (mm) return { route, objectKey: mm[1], libType, libId };
    }
    return { route: "unknown", libType, libId };
  }

  private matches(rule: FaultRule, info: ZoteroRequestInfo): boolean {
    const m = rule.match;
    if (m === undefined) return info.route !== "storage";
    if (typeof m === "function") return m(info);
    if (typeof m === "string") return info.route === m;
    return m.includes(info.route);
  }

  private async handle(req: IncomingMessage, res: ServerResponse, listener: "api" | "storage"): Promise<void> {
    this.inFlight++;
    this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
    let done = false;
    const finish = (): void => {
      if (!done) {
        done = true;
        this.inFlight--;
      }
    };
    const isStorage = req.url?.startsWith("/_storage/") ?? false;
    if (isStorage) {
      this.storageInFlight++;
      this.peakStorageInFlight = Math.max(this.peakStorageInFlight, this.storageInFlight);
    }
    res.on("close", () => {
      if (!done && isStorage) this.storageInFlight--;
      finish();
    });
    try {
      await this.route(req, res, listener);
    } catch (err) {
      if (!res.headersSent && !res.destroyed) {
        res.writeHead(500, { "Content-Type": "text/plain" });
        res.end(`fake zotero error: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }

  private async route(req: IncomingMessage, res: ServerResponse, listener: "api" | "storage"): Promise<void> {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const path = url.pathname;
    const cls = this.classify(path, listener);
    const seq = ++this.seq;
    const keyParam = url.searchParams.get("key") ?? undefined;
    const redacted = new URLSearchParams(url.searchParams);
    redacted.delete("key");
    const query: Record<string, string> = {};
    for (const [k, v] of redacted) query[k] = k in query ? `${query[k]},${v}` : v;
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (k === "zotero-api-key" || k === "authorization" || k === "cookie" || v === undefined) continue;
      headers[k] = Array.isArray(v) ? v.join(", ") : v;
    }
    const apiKeyHeader = typeof req.headers["zotero-api-key"] === "string" ? req.headers["zotero-api-key"] : undefined;
    const authorization = typeof req.headers.authorization === "string" ? req.headers.authorization : undefined;
    const info: ZoteroRequestInfo = {
      seq,
      method: req.method ?? "GET",
      path,
      route: cls.route,
      objectKey: cls.objectKey,
      query,
      rawQuery: redacted.toString(),
      headers,
      status: 0,
      fault: undefined,
    };
    this.log.push(info);
    this.counters[cls.route]++;
    const secret: ZoteroSecretRecord = { seq, route: cls.route, apiKeyHeader, authorization, keyParam };
    this.secrets.push(secret);
    res.on("finish", () => {
      info.status = res.statusCode;
    });

    // Faults (modifiers first-come, terminators stop).
    const extraHeaders: Record<string, string> = {};
    for (const rule of [...this.rules]) {
      if (rule.remaining <= 0 || !this.matches(rule, info)) continue;
      rule.remaining--;
      if (rule.remaining <= 0) this.rules = this.rules.filter((r) => r !== rule);
      const a = rule.action;
      if (a.kind === "delay") {
        await sleep(a.ms, this.timers);
        if (res.destroyed) return;
      } else if (a.kind === "backoff") {
        extraHeaders.Backoff = String(a.seconds);
        info.fault = info.fault ?? `backoff`;
      } else if (a.kind === "destroy") {
        info.fault = rule.label;
        req.socket.destroy();
        return;
      } else if (a.kind === "short-body") {
        info.fault = rule.label;
        this.shortBodies.add(res);
      } else {
        info.fault = rule.label;
        const body = a.body ?? "";
        const xml = cls.route === "storage" && body.trimStart().startsWith("<");
        this.send(res, a.status, body, { "Content-Type": xml ? "application/xml" : "text/plain", ...a.headers, ...extraHeaders });
        return;
      }
    }

    if (cls.route === "storage") {
      await this.serveStorage(req, res, info, secret, path, extraHeaders);
      return;
    }
    if (cls.route === "unknown" && !cls.libType) {
      this.send(res, 404, "Not found", extraHeaders);
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      this.send(res, 405, "Method not allowed (fake Zotero is read-only)", extraHeaders);
      return;
    }

    // Authentication.
    let presented: string | undefined = apiKeyHeader ?? keyParam;
    if (presented === undefined && authorization) {
      const bm = /^Bearer\s+(.+)$/i.exec(authorization);
      presented = bm?.[1]?.trim();
    }
    if (cls.route === "keys") {
      const which = path.slice("/keys/".length);
      const k = which === "current" ? presented : which;
      if (!this.keyValid(k)) {
        this.send(res, 403, "Forbidden", extraHeaders);
        return;
      }
      this.sendJson(res, 200, this.keyInfo(k ?? ""), extraHeaders);
      return;
    }
    if (!this.keyValid(presented)) {
      this.send(res, 403, "Forbidden", extraHeaders);
      return;
    }
    const lib = this.library;
    const libTypeWanted = lib.libraryType === "user" ? "users" : "groups";
    if (cls.libType !== libTypeWanted || cls.libId !== String(lib.libraryId)) {
      this.send(res, 403, "Forbidden", extraHeaders);
      return;
    }
    if (cls.route === "unknown") {
      this.send(res, 404, "Not found", extraHeaders);
      return;
    }

    const common: Record<string, string> = {
      "Zotero-API-Version": "3",
      "Zotero-Schema-Version": "29",
      ...extraHeaders,
    };

    if (cls.route === "item/file") {
      const item = cls.objectKey ? this.findItem(cls.objectKey) : undefined;
      const body = cls.objectKey ? lib.files.get(cls.objectKey) : undefined;
      if (!item) {
        this.send(res, 404, "Item not found", common);
        return;
      }
      const lm = item.data.linkMode;
      if (item.data.itemType !== "attachment" || (lm !== "imported_file" && lm !== "imported_url") || !body) {
        this.send(res, 404, "Not found", common);
        return;
      }
      const token = tokenFor();
      this.tokens.set(token, item.key);
      const filename = String(item.data.filename ?? `${item.key}.pdf`);
      res.writeHead(302, { ...common, Location: `${this.storageUrl}/_storage/${token}/${encodeURIComponent(filename)}`, "Content-Length": "0" });
      res.end();
      return;
    }

    // If-Modified-Since-Version on multi-object requests.
    const imsv = req.headers["if-modified-since-version"];
    if (typeof imsv === "string" && ZOTERO_LISTING_ROUTES.includes(cls.route) && Number(imsv) >= lib.version) {
      res.writeHead(304, { ...common, "Last-Modified-Version": String(lib.version) });
      res.end();
      return;
    }

    if (cls.route === "item") {
      const item = cls.objectKey ? this.findItem(cls.objectKey) : undefined;
      if (!item) {
        this.send(res, 404, "Item not found", common);
        return;
      }
      this.sendJson(res, 200, this.renderItem(item), { ...common, "Last-Modified-Version": String(item.version) });
      return;
    }
    if (cls.route === "collection") {
      const coll = cls.objectKey ? lib.collections.find((c) => c.key === cls.objectKey) : undefined;
      if (!coll) {
        this.send(res, 404, "Collection not found", common);
        return;
      }
      this.sendJson(res, 200, this.renderCollection(coll), { ...common, "Last-Modified-Version": String(coll.version) });
      return;
    }
    if (cls.route === "deleted") {
      const sinceRaw = url.searchParams.get("since");
      if (sinceRaw === null) {
        this.send(res, 400, "'since' parameter must be provided", common);
        return;
      }
      const since = Number(sinceRaw);
      const pickKeys = (m: Map<string, number>): string[] => [...m].filter(([, v]) => v > since).map(([k]) => k);
      this.sendJson(
        res,
        200,
        { collections: pickKeys(lib.deleted.collections), items: pickKeys(lib.deleted.items), searches: [], tags: [], settings: [] },
        { ...common, "Last-Modified-Version": String(lib.version) },
      );
      return;
    }

    // Listings.
    const format = url.searchParams.get("format") ?? "json";
    if (!["json", "keys", "versions"].includes(format)) {
      this.send(res, 400, `Invalid 'format' value '${format}'`, common);
      return;
    }
    let objects: Array<ZoteroItem | ZoteroCollection>;
    const isCollectionListing = cls.route === "collections" || cls.route === "collections/top" || cls.route === "collection/collections";
    if (cls.objectKey && cls.route.startsWith("collection/") && !lib.collections.some((c) => c.key === cls.objectKey)) {
      this.send(res, 404, "Collection not found", common);
      return;
    }
    if (cls.route === "item/children" && !(cls.objectKey && this.findItem(cls.objectKey))) {
      this.send(res, 404, "Item not found", common);
      return;
    }
    if (isCollectionListing) {
      let colls = lib.collections;
      if (cls.route === "collections/top") colls = colls.filter((c) => c.data.parentCollection === false);
      if (cls.route === "collection/collections") colls = colls.filter((c) => c.data.parentCollection === cls.objectKey);
      objects = this.filterCollections(colls, url.searchParams);
    } else {
      const filtered = this.filterItems(cls.route, cls.objectKey, url.searchParams);
      if (typeof filtered === "string") {
        this.send(res, 400, filtered, common);
        return;
      }
      objects = filtered;
    }

    const headersOut: Record<string, string> = { ...common, "Last-Modified-Version": String(lib.version) };
    if (format === "keys") {
      this.send(res, 200, objects.map((o) => o.key).join("\n") + (objects.length ? "\n" : ""), headersOut);
      return;
    }
    if (format === "versions") {
      this.sendJson(res, 200, Object.fromEntries(objects.map((o) => [o.key, o.version])), headersOut);
      return;
    }

    const total = objects.length;
    const limitRaw = url.searchParams.get("limit");
    let limit = limitRaw === null ? this.opts.defaultLimit : Math.floor(Number(limitRaw));
    if (!Number.isFinite(limit) || limit <= 0) limit = this.opts.defaultLimit;
    limit = Math.min(limit, this.opts.maxLimit);
    let start = Math.floor(Number(url.searchParams.get("start") ?? "0"));
    if (!Number.isFinite(start) || start < 0) start = 0;
    const page = objects.slice(start, start + limit);
    headersOut["Total-Results"] = String(this.totalResults ? this.totalResults(total, cls.route) : total);
    if (this.linkHeader) {
      const link = this.makeLinkHeader(url, start, limit, total);
      if (link) headersOut.Link = link;
    }
    const rendered = page.map((o) => ("itemType" in o.data ? this.renderItem(o as ZoteroItem) : this.renderCollection(o as ZoteroCollection)));
    this.sendJson(res, 200, rendered, headersOut);
  }

  private makeLinkHeader(url: URL, start: number, limit: number, total: number): string {
    const make = (s: number): string => {
      const u = new URL(url.pathname + url.search, this.baseUrl);
      u.searchParams.set("limit", String(limit));
      if (s > 0) u.searchParams.set("start", String(s));
      else u.searchParams.delete("start");
      return u.toString();
    };
    const parts: string[] = [];
    if (start > 0) {
      parts.push(`<${make(0)}>; rel="first"`);
      parts.push(`<${make(Math.max(0, start - limit))}>; rel="prev"`);
    }
    if (start + limit < total) {
      parts.push(`<${make(start + limit)}>; rel="next"`);
      parts.push(`<${make(Math.floor((total - 1) / limit) * limit)}>; rel="last"`);
    }
    const lib = this.library;
    parts.push(
      `<https://www.zotero.org/${lib.libraryType === "user" ? lib.libraryName : `groups/${lib.libraryId}`}/items>; rel="alternate"`,
    );
    return parts.join(", ");
  }

  private findItem(key: string): ZoteroItem | undefined {
    return this.library.items.find((i) => i.key === key);
  }

  private filterCollections(colls: ZoteroCollection[], q: URLSearchParams): ZoteroCollection[] {
    let out = colls;
    const since = q.get("since");
    if (since !== null) out = out.filter((c) => c.version > Number(since));
    const keys = q.get("collectionKey");
    if (keys) {
      const set = new Set(keys.split(","));
      out = out.filter((c) => set.has(c.key));
    }
    return out;
  }

  /** Returns the filtered items, or an error message for 400. */
  private filterItems(route: ZoteroRoute, objectKey: string | undefined, q: URLSearchParams): ZoteroItem[] | string {
    const lib = this.library;
    let out: ZoteroItem[] = lib.items;
    const includeTrashed = q.get("includeTrashed") === "1" || route === "items/trash";
    if (route === "items/trash") out = out.filter((i) => i.data.deleted);
    else if (!includeTrashed) out = out.filter((i) => !i.data.deleted);
    if (route === "items/top" || route === "collection/items/top") out = out.filter((i) => !i.data.parentItem);
    if (route === "collection/items" || route === "collection/items/top") out = out.filter((i) => (i.data.collections ?? []).includes(objectKey ?? ""));
    if (route === "item/children") out = out.filter((i) => i.data.parentItem === objectKey);

    const itemType = q.get("itemType");
    if (itemType) {
      const neg = itemType.startsWith("-");
      const types = (neg ? itemType.slice(1) : itemType).split("||").map((s) => s.trim());
      out = out.filter((i) => types.includes(i.data.itemType) !== neg);
    }
    const since = q.get("since");
    if (since !== null) {
      if (!/^\d+$/.test(since)) return "Invalid 'since' value";
      out = out.filter((i) => i.version > Number(since));
    }
    const itemKey = q.get("itemKey");
    if (itemKey) {
      const keys = itemKey.split(",").map((s) => s.trim());
      if (keys.length > 50) return "Cannot specify more than 50 item keys";
      const set = new Set(keys);
      out = out.filter((i) => set.has(i.key));
    }
    for (const tagExpr of q.getAll("tag")) {
      const neg = tagExpr.startsWith("-");
      const tags = (neg ? tagExpr.slice(1) : tagExpr).split("||").map((s) => s.trim());
      out = out.filter((i) => i.data.tags.some((t) => tags.includes(t.tag)) !== neg);
    }
    const qs = q.get("q");
    if (qs) {
      const needle = qs.toLowerCase();
      out = out.filter((i) => String(i.data.title ?? "").toLowerCase().includes(needle));
    }
    const sort = q.get("sort");
    if (sort) {
      const dir = q.get("direction") === "desc" ? -1 : 1;
      const keyOf = (i: ZoteroItem): string | number => {
        if (sort === "version") return i.version;
        if (sort === "title") return String(i.data.title ?? "");
        if (sort === "dateAdded") return String(i.data.dateAdded ?? "");
        if (sort === "dateModified") return String(i.data.dateModified ?? "");
        if (sort === "itemType") return i.data.itemType;
        if (sort === "date") return String(i.data.date ?? "");
        return 0; // tolerated, unsorted
      };
      out = [...out].sort((a, b) => {
        const ka = keyOf(a);
        const kb = keyOf(b);
        return ka < kb ? -dir : ka > kb ? dir : 0;
      });
    }
    return out;
  }

  private renderItem(item: ZoteroItem): ZoteroItem {
    const lib = this.library;
    const prefix = `${this.baseUrl}/${lib.libraryType === "user" ? "users" : "groups"}/${lib.libraryId}`;
    const links: NonNullable<ZoteroItem["links"]> = {
      self: { href: `${prefix}/items/${item.key}`, type: "application/json" },
      alternate: { href: `https://www.zotero.org/${lib.libraryName}/items/${item.key}`, type: "text/html" },
    };
    const regularTopLevel =
      !item.data.parentItem && item.data.itemType !== "attachment" && item.data.itemType !== "note" && item.data.itemType !== "annotation";
    const children = regularTopLevel ? lib.items.filter((i) => i.data.parentItem === item.key) : [];
    if (regularTopLevel && this.bestAttachmentLinks) {
      const best = this.bestAttachment(item, children);
      if (best) {
        links.attachment = {
          href: `${prefix}/items/${best.item.key}`,
          type: "application/json",
          attachmentType: String(best.item.data.contentType ?? ""),
          attachmentSize: best.size,
        };
      }
    }
    if (item.data.parentItem) links.up = { href: `${prefix}/items/${item.data.parentItem}`, type: "application/json" };
    const body = lib.files.get(item.key);
    if (item.data.itemType === "attachment" && body) {
      links.enclosure = {
        href: `${prefix}/items/${item.key}/file/view`,
        type: String(item.data.contentType ?? "application/octet-stream"),
        title: String(item.data.filename ?? ""),
        length: body.length,
      };
    }
    const meta: NonNullable<ZoteroItem["meta"]> = {};
    const creators = item.data.creators ?? [];
    if (creators.length) {
      const last = (c: ZoteroCreator): string => ("lastName" in c ? c.lastName : c.name);
      const first = creators[0];
      const second = creators[1];
      meta.creatorSummary =
        first === undefined ? "" : creators.length === 1 ? last(first) : creators.length === 2 && second ? `${last(first)} and ${last(second)}` : `${last(first)} et al.`;
    }
    if (item.data.date) meta.parsedDate = String(item.data.date);
    if (!item.data.parentItem && item.data.itemType !== "attachment" && item.data.itemType !== "note") {
      meta.numChildren = regularTopLevel ? children.length : lib.items.filter((i) => i.data.parentItem === item.key).length;
    }
    return { key: item.key, version: item.version, library: item.library, links, meta, data: item.data };
  }

  /**
   * Zotero's best attachment of a regular item (what zotero.org puts in `links.attachment`):
   * among its non-trashed imported_file/imported_url child attachments with a file in Zotero
   * storage, PDF first, then EPUB, then HTML snapshots, then the rest; among equals, the one
   * whose `url` is the parent's (non-empty) `url`, then the oldest `dateAdded`, then library order.
   */
  private bestAttachment(parent: ZoteroItem, children: readonly ZoteroItem[]): { item: ZoteroItem; size: number } | undefined {
    const files = this.library.files;
    const parentUrl = typeof parent.data.url === "string" ? parent.data.url : "";
    const typeRank = (ct: unknown): number =>
      ct === "application/pdf" ? 0 : ct === "application/epub+zip" ? 1 : ct === "text/html" ? 2 : 3;
    const candidates = children
      .map((item, order) => ({ item, order, body: files.get(item.key) }))
      .filter(
        (c): c is { item: ZoteroItem; order: number; body: Buffer } =>
          c.body !== undefined &&
          c.item.data.itemType === "attachment" &&
          !c.item.data.deleted &&
          (c.item.data.linkMode === "imported_file" || c.item.data.linkMode === "imported_url"),
      );
    candidates.sort((a, b) => {
      const t = typeRank(a.item.data.contentType) - typeRank(b.item.data.contentType);
      if (t !== 0) return t;
      const ua = parentUrl !== "" && a.item.data.url === parentUrl ? 0 : 1;
      const ub = parentUrl !== "" && b.item.data.url === parentUrl ? 0 : 1;
      if (ua !== ub) return ua - ub;
      const da = String(a.item.data.dateAdded ?? "");
      const db = String(b.item.data.dateAdded ?? "");
      if (da !== db) return da < db ? -1 : 1;
      return a.order - b.order;
    });
    const best = candidates[0];
    return best ? { item: best.item, size: best.body.length } : undefined;
  }

  private renderCollection(coll: ZoteroCollection): ZoteroCollection {
    const lib = this.library;
    return {
      key: coll.key,
      version: coll.version,
      library: coll.library,
      meta: {
        numCollections: lib.collections.filter((c) => c.data.parentCollection === coll.key).length,
        numItems: lib.items.filter((i) => (i.data.collections ?? []).includes(coll.key)).length,
      },
      data: coll.data,
    };
  }

  private keyInfo(key: string): Record<string, unknown> {
    const lib = this.library;
    if (lib.libraryType === "user") {
      return {
        key,
        userID: lib.libraryId,
        username: lib.libraryName,
        displayName: lib.libraryName,
        access: { user: { library: true, files: true, notes: true, write: false } },
      };
    }
    return {
      key,
      userID: 111111,
      username: "groupmember",
      displayName: "groupmember",
      access: { groups: { [String(lib.libraryId)]: { library: true, write: false } } },
    };
  }

  private async serveStorage(
    req: IncomingMessage,
    res: ServerResponse,
    info: ZoteroRequestInfo,
    secret: ZoteroSecretRecord,
    path: string,
    extraHeaders: Record<string, string> = {},
  ): Promise<void> {
    const leaked = secret.apiKeyHeader !== undefined || secret.keyParam !== undefined || secret.authorization !== undefined;
    if (leaked) this.storageKeyLeaks.push(secret);
    if (leaked && this.opts.storageRejectsAuth) {
      this.send(res, 400, "<Error><Code>InvalidArgument</Code><Message>Only one auth mechanism allowed</Message></Error>", {
        "Content-Type": "application/xml",
        ...extraHeaders,
      });
      return;
    }
    const token = path.split("/")[2] ?? "";
    const key = this.tokens.get(token);
    const body = key ? this.library.files.get(key) : undefined;
    if (!key || !body) {
      this.send(res, 404, "<Error><Code>NoSuchKey</Code></Error>", { "Content-Type": "application/xml", ...extraHeaders });
      return;
    }
    const item = this.findItem(key);
    this.downloadsByKey.set(key, (this.downloadsByKey.get(key) ?? 0) + 1);
    const headers: Record<string, string> = {
      ...extraHeaders,
      "Content-Type": String(item?.data.contentType || "application/octet-stream"),
      "Content-Length": String(body.length),
      ETag: `"${md5(body)}"`,
    };
    const corr = this.corruptions.get(key);
    if (corr && corr.remaining > 0) {
      corr.remaining--;
      if (corr.remaining <= 0) this.corruptions.delete(key);
      info.fault = `corrupt-${corr.mode}`;
      if (corr.mode === "flip") {
        const bad = Buffer.from(body);
        const pos = Math.floor(bad.length / 2);
        bad[pos] = (bad[pos] ?? 0) ^ 0xff;
        res.writeHead(200, headers);
        res.end(req.method === "HEAD" ? undefined : bad);
      } else {
        this.writeShort(res, 200, headers, body);
      }
      return;
    }
    this.writeBody(res, 200, headers, req.method === "HEAD" ? undefined : body);
  }

  /** Write an answer, or (for a "short-body" fault) only half of its bytes before a reset. */
  private writeBody(res: ServerResponse, status: number, headers: Record<string, string>, body: Buffer | undefined): void {
    if (body !== undefined && body.length > 0 && res.req.method !== "HEAD" && this.shortBodies.has(res)) {
      this.writeShort(res, status, headers, body);
      return;
    }
    res.writeHead(status, headers);
    res.end(body);
  }

  /** Headers with the full Content-Length, half the body, then the socket destroyed. */
  private writeShort(res: ServerResponse, status: number, headers: Record<string, string>, body: Buffer): void {
    const socket = res.socket;
    res.writeHead(status, { ...headers, "Content-Length": String(body.length) });
    res.write(body.subarray(0, Math.floor(body.length / 2)), () => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        socket?.destroy();
      }, 5);
      this.timers.add(t);
    });
  }

  private send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
    if (res.headersSent || res.destroyed) return;
    const buf = Buffer.from(body);
    this.writeBody(res, status, { "Content-Type": "text/plain; charset=utf-8", "Zotero-API-Version": "3", ...headers, "Content-Length": String(buf.length) }, buf);
  }

  private sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void {
    if (res.headersSent || res.destroyed) return;
    const buf = Buffer.from(JSON.stringify(value));
    this.writeBody(res, status, { "Zotero-API-Version": "3", ...headers, "Content-Type": "application/json", "Content-Length": String(buf.length) }, buf);
  }
}

/** Convenience: build, start and return a fake Zotero plus its library. */
export async function startFakeZotero(
  opts: Omit<FakeZoteroOptions, "library"> & { library?: ZoteroLibraryData; make?: MakeLibraryOptions } = {},
): Promise<{ zotero: FakeZotero; library: ZoteroLibraryData; url: string; libraryUrl: string; close(): Promise<void> }> {
  const library = opts.library ?? makeLibrary(opts.make);
  const zotero = new FakeZotero({ ...opts, library });
  const { url, close } = await zotero.start();
  return { zotero, library, url, libraryUrl: zotero.libraryUrl, close };
}
