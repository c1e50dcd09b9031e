/**
 * A small Zotero library described once, then written out three ways:
 *
 *   - `writeZoteroDataDir()`: a Zotero desktop data directory — zotero.sqlite with Zotero's
 *     real table layout (names and columns from resource/schema/userdata.sql; the numeric
 *     IDs of item types, fields and creator types are ours), storage/<key>/<file> PDFs,
 *     linked files (absolute, and `attachments:` relative to a base directory set in a
 *     profile's prefs.js);
 *   - `toWebLibrary()`: the same library as the fake Zotero Web API serves it (JSON);
 *   - `expectedItems()`: what every source must produce from it (the normalised items).
 *
 * Built by code at test time (and by `npm run demo`); no binary database is committed.
 */
import Database from "better-sqlite3";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makePdf, md5 } from "../fixtures/pdf.js";
import { makeRng } from "../fixtures/util.js";

export type SampleLinkMode = "imported_file" | "imported_url" | "linked_file" | "linked_url";

export type SampleCreator = { creatorType: string; firstName: string; lastName: string } | { creatorType: string; name: string };

export interface SampleAttachment {
  key: string;
  version: number;
  title: string;
  linkMode: SampleLinkMode;
  contentType: string;
  /** Stored files: the name in storage/<key>/. */
  filename?: string;
  /** Linked files: where the file is. */
  link?: { base: "absolute"; name: string } | { base: "attachments"; rel: string };
  /** The file's bytes (stored or linked); absent: the file is missing on disk and on the server. */
  body?: Buffer;
  trashed?: boolean;
  url?: string;
}

export interface SampleItem {
  key: string;
  version: number;
  itemType: string;
  /** Zotero fields as the user typed them (date as typed, e.g. "May 2021"). */
  fields: Record<string, string>;
  creators: SampleCreator[];
  tags: string[];
  collections: string[];
  attachments: SampleAttachment[];
  /** Child notes (HTML). */
  notes: string[];
  /** A top-level attachment: its one attachment is itself (same key). */
  standalone?: boolean;
  /** A standalone note's HTML. */
  note?: string;
  trashed?: boolean;
}

export interface SampleCollection {
  key: string;
  version: number;
  name: string;
  parentKey: string | null;
}

export interface SampleLibrary {
  /** zotero.org user ID (settings 'account'/'userID'), also the fake Web API's library ID. */
  userId: number;
  libraryVersion: number;
  collections: SampleCollection[];
  items: SampleItem[];
}

const ALPHABET = "23456789ABCDEFGHIJKLMNPQRSTUVWXYZ";

/** Deterministic Zotero-style keys (8 characters of Zotero's alphabet). */
function keyMaker(seed: number): () => string {
  const used = new Set<string>();
  const rng = makeRng(seed);
  return () => {
    for (;;) {
      let k = "";
      for (let i = 0; i < 8; i++) k += ALPHABET[Math.floor(rng() * ALPHABET.length)] ?? "2";
      if (!used.has(k)) {
        used.add(k);
        return k;
      }
    }
  };
}

/**
 * About twenty top-level items: journal articles, books, a case, a conference paper, a
 * thesis, a standalone PDF, a standalone note, linked files (absolute and relative), a
 * non-PDF attachment, a linked URL, a child note, a trashed item and a trashed attachment,
 * a missing file, nested collections, tags, Unicode titles and names.
 */
export function makeSampleLibrary(seed = 7): SampleLibrary {
  const key = keyMaker(seed);
  let version = 1000;
  const v = () => ++version;
  const pdf = (title: string, extra = "") => makePdf({ title, pages: [`${title}\n${extra}`.trim(), `Page two of ${title}`] });

  const palaeo: SampleCollection = { key: key(), version: v(), name: "Palaeontology", parentKey: null };
  const computing: SampleCollection = { key: key(), version: v(), name: "Computing", parentKey: null };
  const algorithms: SampleCollection = { key: key(), version: v(), name: "Algorithms", parentKey: computing.key };
  const graphs: SampleCollection = { key: key(), version: v(), name: "Graph Theory", parentKey: algorithms.key };
  const unicode: SampleCollection = { key: key(), version: v(), name: "Ünïcode ✓ 収集", parentKey: null };

  const items: SampleItem[] = [];
  const item = (o: Partial<SampleItem> & { itemType: string; fields: Record<string, string> }): SampleItem => {
    const it: SampleItem = { key: key(), version: v(), creators: [], tags: [], collections: [], attachments: [], notes: [], ...o };
    items.push(it);
    return it;
  };
  const storedPdf = (title: string, filename: string, o: Partial<SampleAttachment> = {}): SampleAttachment => ({
    key: key(),
    version: v(),
    title: "Full Text PDF",
    linkMode: "imported_file",
    contentType: "application/pdf",
    filename,
    body: pdf(title, filename),
    ...o,
  });
  const author = (firstName: string, lastName: string, creatorType = "author"): SampleCreator => ({ creatorType, firstName, lastName });

  item({
    itemType: "journalArticle",
    fields: { title: "Graph Methods for Fossil Records", date: "2019-03-15", DOI: "10.5555/fossil.2019", publicationTitle: "Journal of Examples", volume: "12" },
    creators: [author("Ada", "Lovelace"), author("Alan", "Turing")],
    tags: ["fossils", "graphs"],
    collections: [palaeo.key, graphs.key],
    attachments: [storedPdf("Graph Methods for Fossil Records", "Lovelace - Graph Methods for Fossil Records.pdf")],
  });
  item({
    itemType: "journalArticle",
    fields: { title: "Über die Entstehung der Arten — 進化論 🦕", date: "1859-11-24", publicationTitle: "Zeitschrift für Beispiele" },
    creators: [author("Søren", "Kierkegaard"), author("小龍", "李")],
    tags: ["ünïcode", "進化"],
    collections: [unicode.key],
    attachments: [storedPdf("Uber die Entstehung der Arten", "Über – 進化論.pdf")],
  });
  item({
    itemType: "book",
    fields: { title: "The Art of Computer Programming", date: "1968", publisher: "Addison-Wesley", place: "Reading, MA", ISBN: "0-201-03801-3" },
    creators: [author("Donald", "Knuth"), author("Grace", "Hopper", "editor")],
    tags: ["algorithms"],
    collections: [algorithms.key],
    attachments: [storedPdf("The Art of Computer Programming", "Knuth - TAOCP.pdf", { linkMode: "imported_url", title: "Publisher PDF", url: "https://example.org/taocp.pdf" })],
  });
  item({
    itemType: "book",
    fields: { title: "World Report on Examples", date: "2022-06", publisher: "WHO" },
    creators: [{ creatorType: "author", name: "World Health Organization" }, author("Tim", "Berners-Lee", "contributor")],
    tags: ["reports"],
    attachments: [storedPdf("World Report on Examples", "WHO - World Report.pdf")],
  });
  item({
    itemType: "journalArticle",
    fields: { title: "Snapshot First, Then the PDF", date: "2015-01-02", DOI: "10.5555/snap.2015" },
    creators: [author("Radia", "Perlman")],
    attachments: [
      { key: key(), version: v(), title: "Snapshot", linkMode: "imported_url", contentType: "text/html", filename: "snapshot.html", body: Buffer.from("<html><body>snapshot</body></html>\n"), url: "https://example.org/snap" },
      storedPdf("Snapshot First, Then the PDF", "Perlman - Snapshot First.pdf"),
    ],
  });
  item({
    itemType: "journalArticle",
    fields: { title: "Only an HTML Snapshot", date: "2011" },
    creators: [author("Hedy", "Lamarr")],
    attachments: [{ key: key(), version: v(), title: "Snapshot", linkMode: "imported_url", contentType: "text/html", filename: "page.html", body: Buffer.from("<html><body>only html</body></html>\n"), url: "https://example.org/page" }],
  });
  item({
    itemType: "journalArticle",
    fields: { title: "A Linked File with an Absolute Path", date: "2018-07" },
    creators: [author("Edsger", "Dijkstra")],
    attachments: [{ key: key(), version: v(), title: "Linked PDF", linkMode: "linked_file", contentType: "application/pdf", link: { base: "absolute", name: "Absolute Linked.pdf" }, body: pdf("A Linked File with an Absolute Path") }],
  });
  item({
    itemType: "journalArticle",
    fields: { title: "A Linked File under the Base Directory", date: "2017-02-03" },
    creators: [author("Frances", "Allen")],
    attachments: [{ key: key(), version: v(), title: "Linked PDF", linkMode: "linked_file", contentType: "application/pdf", link: { base: "attachments", rel: "papers/Allen – Relative.pdf" }, body: pdf("A Linked File under the Base Directory") }],
  });
  item({
    itemType: "journalArticle",
    fields: { title: "Only a Web Link", date: "2020" },
    creators: [author("John", "McCarthy")],
    attachments: [{ key: key(), version: v(), title: "Publisher page", linkMode: "linked_url", contentType: "", url: "https://example.org/landing" }],
  });
  item({ itemType: "journalArticle", fields: { title: "No Attachment at All", date: "2001-09" }, creators: [author("Barbara", "Liskov")], tags: ["no-pdf"] });
  const standaloneKey = key();
  items.push({
    key: standaloneKey,
    version: v(),
    itemType: "attachment",
    fields: { title: "Standalone Scan.pdf" },
    creators: [],
    tags: ["scans"],
    collections: [palaeo.key],
    notes: [],
    standalone: true,
    attachments: [{ key: standaloneKey, version: 0, title: "Standalone Scan.pdf", linkMode: "imported_file", contentType: "application/pdf", filename: "Standalone Scan.pdf", body: pdf("Standalone Scan") }],
  });
  item({ itemType: "note", fields: {}, note: "<p>A standalone note, nothing to import</p>", collections: [computing.key] });
  item({
    itemType: "journalArticle",
    fields: { title: "With a Child Note", date: "2010-10-10", DOI: "10.5555/note.2010" },
    creators: [author("Claude", "Shannon")],
    notes: ["<p>Read this again</p>"],
    attachments: [storedPdf("With a Child Note", "Shannon - With a Child Note.pdf")],
  });
  item({
    itemType: "journalArticle",
    fields: { title: "In the Trash", date: "2005" },
    creators: [author("Alan", "Kay")],
    trashed: true,
    attachments: [storedPdf("In the Trash", "Kay - In the Trash.pdf")],
  });
  item({
    itemType: "journalArticle",
    fields: { title: "Its PDF Is in the Trash", date: "2006" },
    creators: [author("Ivan", "Sutherland")],
    attachments: [storedPdf("Its PDF Is in the Trash", "Sutherland.pdf", { trashed: true })],
  });
  item({
    itemType: "case",
    fields: { caseName: "Brown v. Board of Education", dateDecided: "1954-05-17", court: "Supreme Court" },
    creators: [],
    tags: ["law"],
    attachments: [storedPdf("Brown v. Board of Education", "Brown v Board.pdf")],
  });
  item({
    itemType: "conferencePaper",
    fields: { title: "Sparse Lattice Inference", date: "May 2021", proceedingsTitle: "Proceedings of Tests", DOI: "10.5555/sparse.2021" },
    creators: [author("Grace", "Hopper"), author("Ada", "Lovelace"), author("Alan", "Turing")],
    tags: ["graphs", "inference"],
    collections: [graphs.key, algorithms.key],
    attachments: [storedPdf("Sparse Lattice Inference", "Hopper - Sparse Lattice Inference.pdf")],
  });
  item({
    itemType: "thesis",
    fields: { title: "Stochastic Automata and Their Records", date: "2020", university: "Example University", thesisType: "PhD thesis" },
    creators: [author("Tim", "Berners-Lee")],
    collections: [computing.key],
    attachments: [storedPdf("Stochastic Automata and Their Records", "Berners-Lee - Thesis.pdf")],
  });
  item({
    itemType: "report",
    fields: { title: "A PDF Zotero Never Downloaded", date: "2023-01-31", institution: "Example Lab" },
    creators: [author("Donald", "Knuth")],
    attachments: [{ key: key(), version: v(), title: "Full Text PDF", linkMode: "imported_file", contentType: "application/pdf", filename: "Knuth - Missing.pdf" }],
  });
  item({
    itemType: "journalArticle",
    fields: { title: "Bayesian Phylogeny of Ünusual Taxa", date: "2024-02-29", DOI: "10.5555/phylo.2024", publicationTitle: "Annals of Fakes" },
    creators: [author("José", "Núñez"), author("Zoë", "O'Brien"), author("Ólafur", "Þórsson")],
    tags: ["fossils", "bayes"],
    collections: [palaeo.key, unicode.key],
    attachments: [storedPdf("Bayesian Phylogeny of Unusual Taxa", "Núñez - Bayesian Phylogeny.pdf")],
  });
  item({
    itemType: "preprint",
    fields: { title: "Quantum Structures, Revisited", date: "2025-03-01", DOI: "10.5555/quantum.2025" },
    creators: [author("Barbara", "Liskov"), author("Edsger", "Dijkstra")],
    tags: ["quantum"],
    attachments: [storedPdf("Quantum Structures, Revisited", "Liskov - Quantum Structures.pdf")],
  });

  // The standalone attachment's own version.
  for (const it of items) if (it.standalone) it.attachments[0]!.version = it.version;
  return { userId: 475425, libraryVersion: version, collections: [palaeo, computing, algorithms, graphs, unicode], items };
}

// ---------------------------------------------------------------------------
// Zotero data directory
// ---------------------------------------------------------------------------

const LINK_MODE_ID: Record<SampleLinkMode, number> = { imported_file: 0, imported_url: 1, linked_file: 2, linked_url: 3 };
/** Zotero.Sync.Storage.Local.SYNC_STATE_* */
const SYNC_STATE_TO_DOWNLOAD = 1;
const SYNC_STATE_IN_SYNC = 2;

/** Zotero's tables (resource/schema/userdata.sql, and system.sql for the type tables): the ones we fill. */
export const ZOTERO_SCHEMA_SQL = `
CREATE TABLE version (schema TEXT PRIMARY KEY, version INT NOT NULL);
CREATE INDEX schema ON version(schema);
CREATE TABLE settings (setting TEXT, key TEXT, value, PRIMARY KEY (setting, key));
CREATE TABLE itemTypes (itemTypeID INTEGER PRIMARY KEY, typeName TEXT, templateItemTypeID INT, display INT DEFAULT 1);
CREATE TABLE fields (fieldID INTEGER PRIMARY KEY, fieldName TEXT, fieldFormatID INT);
CREATE TABLE creatorTypes (creatorTypeID INTEGER PRIMARY KEY, creatorType TEXT);
CREATE TABLE libraries (
    libraryID INTEGER PRIMARY KEY, type TEXT NOT NULL, editable INT NOT NULL, filesEditable INT NOT NULL,
    version INT NOT NULL DEFAULT 0, storageVersion INT NOT NULL DEFAULT 0, lastSync INT NOT NULL DEFAULT 0, archived INT NOT NULL DEFAULT 0
);
CREATE TABLE users (userID INTEGER PRIMARY KEY, username TEXT NOT NULL);
CREATE TABLE groups (
    groupID INTEGER PRIMARY KEY, libraryID INT NOT NULL UNIQUE, name TEXT NOT NULL, description TEXT NOT NULL, version INT NOT NULL,
    FOREIGN KEY (libraryID) REFERENCES libraries(libraryID) ON DELETE CASCADE
);
CREATE TABLE items (
    itemID INTEGER PRIMARY KEY, itemTypeID INT NOT NULL,
    dateAdded TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, dateModified TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    clientDateModified TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    libraryID INT NOT NULL, key TEXT NOT NULL, version INT NOT NULL DEFAULT 0, synced INT NOT NULL DEFAULT 0,
    UNIQUE (libraryID, key), FOREIGN KEY (libraryID) REFERENCES libraries(libraryID) ON DELETE CASCADE
);
CREATE INDEX items_synced ON items(synced);
CREATE TABLE itemDataValues (valueID INTEGER PRIMARY KEY, value UNIQUE);
CREATE TABLE itemData (
    itemID INT, fieldID INT, valueID, PRIMARY KEY (itemID, fieldID),
    FOREIGN KEY (itemID) REFERENCES items(itemID) ON DELETE CASCADE, FOREIGN KEY (fieldID) REFERENCES fields(fieldID),
    FOREIGN KEY (valueID) REFERENCES itemDataValues(valueID)
);
CREATE INDEX itemData_fieldID ON itemData(fieldID);
CREATE TABLE itemNotes (
    itemID INTEGER PRIMARY KEY, parentItemID INT, note TEXT, title TEXT,
    FOREIGN KEY (itemID) REFERENCES items(itemID) ON DELETE CASCADE, FOREIGN KEY (parentItemID) REFERENCES items(itemID) ON DELETE CASCADE
);
CREATE INDEX itemNotes_parentItemID ON itemNotes(parentItemID);
CREATE TABLE itemAttachments (
    itemID INTEGER PRIMARY KEY, parentItemID INT, linkMode INT, contentType TEXT, charsetID INT, path TEXT,
    syncState INT DEFAULT 0, storageModTime INT, storageHash TEXT,
    FOREIGN KEY (itemID) REFERENCES items(itemID) ON DELETE CASCADE, FOREIGN KEY (parentItemID) REFERENCES items(itemID) ON DELETE CASCADE
);
CREATE INDEX itemAttachments_parentItemID ON itemAttachments(parentItemID);
CREATE INDEX itemAttachments_contentType ON itemAttachments(contentType);
CREATE INDEX itemAttachments_syncState ON itemAttachments(syncState);
CREATE TABLE tags (tagID INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE itemTags (
    itemID INT NOT NULL, tagID INT NOT NULL, type INT NOT NULL, PRIMARY KEY (itemID, tagID),
    FOREIGN KEY (itemID) REFERENCES items(itemID) ON DELETE CASCADE, FOREIGN KEY (tagID) REFERENCES tags(tagID) ON DELETE CASCADE
);
CREATE INDEX itemTags_tagID ON itemTags(tagID);
CREATE TABLE creators (creatorID INTEGER PRIMARY KEY, firstName TEXT, lastName TEXT, fieldMode INT, UNIQUE (lastName, firstName, fieldMode));
CREATE TABLE itemCreators (
    itemID INT NOT NULL, creatorID INT NOT NULL, creatorTypeID INT NOT NULL DEFAULT 1, orderIndex INT NOT NULL DEFAULT 0,
    PRIMARY KEY (itemID, creatorID, creatorTypeID, orderIndex), UNIQUE (itemID, orderIndex),
    FOREIGN KEY (itemID) REFERENCES items(itemID) ON DELETE CASCADE, FOREIGN KEY (creatorID) REFERENCES creators(creatorID) ON DELETE CASCADE,
    FOREIGN KEY (creatorTypeID) REFERENCES creatorTypes(creatorTypeID)
);
CREATE INDEX itemCreators_creatorTypeID ON itemCreators(creatorTypeID);
CREATE TABLE collections (
    collectionID INTEGER PRIMARY KEY, collectionName TEXT NOT NULL, parentCollectionID INT DEFAULT NULL,
    clientDateModified TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, libraryID INT NOT NULL, key TEXT NOT NULL,
    version INT NOT NULL DEFAULT 0, synced INT NOT NULL DEFAULT 0, UNIQUE (libraryID, key),
    FOREIGN KEY (libraryID) REFERENCES libraries(libraryID) ON DELETE CASCADE,
    FOREIGN KEY (parentCollectionID) REFERENCES collections(collectionID) ON DELETE CASCADE
);
CREATE INDEX collections_synced ON collections(synced);
CREATE TABLE collectionItems (
    collectionID INT NOT NULL, itemID INT NOT NULL, orderIndex INT NOT NULL DEFAULT 0, PRIMARY KEY (collectionID, itemID),
    FOREIGN KEY (collectionID) REFERENCES collections(collectionID) ON DELETE CASCADE, FOREIGN KEY (itemID) REFERENCES items(itemID) ON DELETE CASCADE
);
CREATE INDEX collectionItems_itemID ON collectionItems(itemID);
CREATE TABLE deletedItems (itemID INTEGER PRIMARY KEY, dateDeleted DEFAULT CURRENT_TIMESTAMP NOT NULL, FOREIGN KEY (itemID) REFERENCES items(itemID) ON DELETE CASCADE);
CREATE INDEX deletedItems_dateDeleted ON deletedItems(dateDeleted);
`;

const ITEM_TYPES = ["note", "attachment", "book", "case", "conferencePaper", "journalArticle", "preprint", "report", "thesis", "annotation"];
const FIELDS = [
  "title", "date", "DOI", "url", "accessDate", "publicationTitle", "volume", "pages", "publisher", "place", "ISBN",
  "caseName", "dateDecided", "court", "proceedingsTitle", "university", "thesisType", "institution", "extra",
];
const CREATOR_TYPES = ["author", "contributor", "editor"];

/** Zotero's date storage: "YYYY-MM-DD as typed" (multipart), e.g. "2021-05-00 May 2021". */
export function strToMultipart(typed: string): string {
  const months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
  const iso = /^(\d{4})(?:-(\d{1,2}))?(?:-(\d{1,2}))?$/.exec(typed);
  let y = "0000";
  let m = "00";
  let d = "00";
  if (iso) {
    y = iso[1]!;
    m = (iso[2] ?? "0").padStart(2, "0");
    d = (iso[3] ?? "0").padStart(2, "0");
  } else {
    const year = /(\d{4})/.exec(typed);
    if (year) y = year[1]!;
    const month = months.findIndex((name) => typed.toLowerCase().includes(name));
    if (month >= 0) m = String(month + 1).padStart(2, "0");
  }
  return `${y}-${m}-${d} ${typed}`;
}

export interface DataDirLayout {
  /** A home directory holding Zotero/ (the data directory) and a Zotero profile with prefs.js. */
  home: string;
  dataDir: string;
  prefsFile: string;
  /** extensions.zotero.baseAttachmentPath */
  baseDir: string;
  /** Where absolute linked files live. */
  linkedDir: string;
}

/** Where the profile's prefs.js goes for this platform (as src/zotero/data-dir.ts looks for it). */
function profileDir(home: string): string {
  if (process.platform === "darwin") return join(home, "Library", "Application Support", "Zotero", "Profiles", "s4mpl3.default");
  if (process.platform === "win32") return join(home, "AppData", "Roaming", "Zotero", "Zotero", "Profiles", "s4mpl3.default");
  return join(home, ".zotero", "zotero", "s4mpl3.default");
}

export interface WriteOptions {
  /** Write no prefs.js (no base directory for `attachments:` links). */
  noProfile?: boolean;
}

/**
 * Write a Zotero data directory for `lib` under `root`: `root/home/Zotero/zotero.sqlite`,
 * `storage/<key>/<file>`, a profile's prefs.js, and the linked files.
 */
export function writeZoteroDataDir(lib: SampleLibrary, root: string, options: WriteOptions = {}): DataDirLayout {
  const home = join(root, "home");
  const dataDir = join(home, "Zotero");
  const baseDir = join(root, "linked-base");
  const linkedDir = join(root, "elsewhere");
  const profile = profileDir(home);
  const prefsFile = join(profile, "prefs.js");
  for (const d of [dataDir, join(dataDir, "storage"), baseDir, linkedDir]) mkdirSync(d, { recursive: true });
  if (!options.noProfile) {
    mkdirSync(profile, { recursive: true });
    writeFileSync(
      prefsFile,
      [
        "// Mozilla User Preferences",
        `user_pref("extensions.zotero.baseAttachmentPath", ${JSON.stringify(baseDir)});`,
        'user_pref("extensions.zotero.firstRun2", false);',
        'user_pref("extensions.zotero.sync.server.username", "testuser");',
        "",
      ].join("\n"),
    );
  }

  const db = new Database(join(dataDir, "zotero.sqlite"));
  try {
    db.exec(ZOTERO_SCHEMA_SQL);
    const ids = <T extends string>(table: string, idCol: string, nameCol: string, names: readonly T[]) => {
      const insert = db.prepare(`INSERT INTO ${table} (${idCol}, ${nameCol}) VALUES (?, ?)`);
      const map = new Map<string, number>();
      names.forEach((n, i) => {
        insert.run(i + 1, n);
        map.set(n, i + 1);
      });
      return map;
    };
    const write = db.transaction(() => {
      db.prepare("INSERT INTO version (schema, version) VALUES (?, ?)").run("userdata", 120);
      db.prepare("INSERT INTO version (schema, version) VALUES (?, ?)").run("system", 33);
      db.prepare("INSERT INTO settings (setting, key, value) VALUES ('account', 'userID', ?)").run(lib.userId);
      db.prepare("INSERT INTO settings (setting, key, value) VALUES ('account', 'username', 'testuser')").run();
      const itemTypeIds = ids("itemTypes", "itemTypeID", "typeName", ITEM_TYPES);
      const fieldIds = ids("fields", "fieldID", "fieldName", FIELDS);
      const creatorTypeIds = ids("creatorTypes", "creatorTypeID", "creatorType", CREATOR_TYPES);
      db.prepare("INSERT INTO libraries (libraryID, type, editable, filesEditable, version, storageVersion, lastSync) VALUES (1, 'user', 1, 1, ?, ?, 1700000000)").run(
        lib.libraryVersion,
        lib.libraryVersion,
      );
      db.prepare("INSERT INTO users (userID, username) VALUES (?, 'testuser')").run(lib.userId);

      const collectionIds = new Map<string, number>();
      const insertCollection = db.prepare("INSERT INTO collections (collectionName, parentCollectionID, libraryID, key, version, synced) VALUES (?, ?, 1, ?, ?, 1)");
      for (const c of lib.collections) {
        const id = Number(insertCollection.run(c.name, c.parentKey ? (collectionIds.get(c.parentKey) ?? null) : null, c.key, c.version).lastInsertRowid);
        collectionIds.set(c.key, id);
      }

      const insertItem = db.prepare("INSERT INTO items (itemTypeID, libraryID, key, version, synced) VALUES (?, 1, ?, ?, 1)");
      const valueId = db.prepare("SELECT valueID FROM itemDataValues WHERE value = ?").pluck();
      const insertValue = db.prepare("INSERT INTO itemDataValues (value) VALUES (?)");
      const insertData = db.prepare("INSERT INTO itemData (itemID, fieldID, valueID) VALUES (?, ?, ?)");
      const setField = (itemID: number, name: string, value: string) => {
        const fieldID = fieldIds.get(name);
        if (fieldID === undefined) throw new Error(`sample library: unknown field ${name}`);
        const stored = name === "date" || name === "dateDecided" ? strToMultipart(value) : value;
        const vid = (valueId.get(stored) as number | undefined) ?? Number(insertValue.run(stored).lastInsertRowid);
        insertData.run(itemID, fieldID, vid);
      };
      const creatorId = db.prepare("SELECT creatorID FROM creators WHERE firstName IS ? AND lastName IS ? AND fieldMode IS ?").pluck();
      const insertCreator = db.prepare("INSERT INTO creators (firstName, lastName, fieldMode) VALUES (?, ?, ?)");
      const insertItemCreator = db.prepare("INSERT INTO itemCreators (itemID, creatorID, creatorTypeID, orderIndex) VALUES (?, ?, ?, ?)");
      const tagId = db.prepare("SELECT tagID FROM tags WHERE name = ?").pluck();
      const insertTag = db.prepare("INSERT INTO tags (name) VALUES (?)");
      const insertItemTag = db.prepare("INSERT INTO itemTags (itemID, tagID, type) VALUES (?, ?, 0)");
      const insertCollectionItem = db.prepare("INSERT INTO collectionItems (collectionID, itemID, orderIndex) VALUES (?, ?, 0)");
      const insertNote = db.prepare("INSERT INTO itemNotes (itemID, parentItemID, note, title) VALUES (?, ?, ?, ?)");
      const insertAttachment = db.prepare(
        "INSERT INTO itemAttachments (itemID, parentItemID, linkMode, contentType, charsetID, path, syncState, storageModTime, storageHash) VALUES (?, ?, ?, ?, NULL, ?, ?, ?, ?)",
      );
      const trash = db.prepare("INSERT INTO deletedItems (itemID) VALUES (?)");
      const typeId = (name: string) => {
        const id = itemTypeIds.get(name);
        if (id === undefined) throw new Error(`sample library: unknown item type ${name}`);
        return id;
      };

      const addAttachment = (att: SampleAttachment, parentID: number | null, itemID?: number) => {
        const id = itemID ?? Number(insertItem.run(typeId("attachment"), att.key, att.version).lastInsertRowid);
        if (itemID === undefined) setField(id, "title", att.title);
        if (att.url) setField(id, "url", att.url);
        let path: string | null = null;
        if (att.linkMode === "imported_file" || att.linkMode === "imported_url") {
          path = `storage:${att.filename}`;
          if (att.body) {
            mkdirSync(join(dataDir, "storage", att.key), { recursive: true });
            writeFileSync(join(dataDir, "storage", att.key, att.filename!), att.body);
          }
        } else if (att.linkMode === "linked_file" && att.link) {
          if (att.link.base === "absolute") {
            path = join(linkedDir, att.link.name);
            if (att.body) writeFileSync(path, att.body);
          } else {
            path = `attachments:${att.link.rel}`;
            const file = join(baseDir, ...att.link.rel.split("/"));
            mkdirSync(join(file, ".."), { recursive: true });
            if (att.body) writeFileSync(file, att.body);
          }
        }
        const stored = att.linkMode === "imported_file" || att.linkMode === "imported_url";
        insertAttachment.run(
          id,
          parentID,
          LINK_MODE_ID[att.linkMode],
          att.contentType,
          path,
          stored ? (att.body ? SYNC_STATE_IN_SYNC : SYNC_STATE_TO_DOWNLOAD) : 0,
          stored && att.body ? 1_600_000_000_000 : null,
          stored && att.body ? md5(att.body) : null,
        );
        if (att.trashed) trash.run(id);
        return id;
      };

      for (const it of lib.items) {
        const itemID = Number(insertItem.run(typeId(it.itemType), it.key, it.version).lastInsertRowid);
        for (const [name, value] of Object.entries(it.fields)) setField(itemID, name, value);
        it.creators.forEach((c, orderIndex) => {
          const [first, last, mode] = "name" in c ? [null, c.name, 1] : [c.firstName, c.lastName, 0];
          const cid = (creatorId.get(first, last, mode) as number | undefined) ?? Number(insertCreator.run(first, last, mode).lastInsertRowid);
          insertItemCreator.run(itemID, cid, creatorTypeIds.get(c.creatorType) ?? 1, orderIndex);
        });
        for (const t of it.tags) insertItemTag.run(itemID, (tagId.get(t) as number | undefined) ?? Number(insertTag.run(t).lastInsertRowid));
        for (const c of it.collections) insertCollectionItem.run(collectionIds.get(c)!, itemID);
        if (it.itemType === "note") insertNote.run(itemID, null, it.note ?? "", "");
        if (it.standalone) addAttachment(it.attachments[0]!, null, itemID);
        else for (const att of it.attachments) addAttachment(att, itemID);
        for (const html of it.notes) {
          const noteID = Number(insertItem.run(typeId("note"), nextNoteKey(lib, it, html), it.version).lastInsertRowid);
          insertNote.run(noteID, itemID, html, html.replace(/<[^>]+>/g, ""));
        }
        if (it.trashed) trash.run(itemID);
      }
    });
    write();
  } finally {
    db.close();
  }
  return { home, dataDir, prefsFile, baseDir, linkedDir };
}

/** A child note's key: derived from its parent so every rendering agrees. */
function nextNoteKey(_lib: SampleLibrary, parent: SampleItem, html: string): string {
  const index = parent.notes.indexOf(html);
  return `N${parent.key.slice(1, 6)}${ALPHABET[index] ?? "Z"}${ALPHABET[index + 1] ?? "Z"}`;
}

// ---------------------------------------------------------------------------
// The same library as Zotero's JSON (Web API v3, and the local API)
// ---------------------------------------------------------------------------

export interface ZoteroJsonItem {
  key: string;
  version: number;
  library: { type: "user"; id: number; name: string; links: { alternate: { href: string; type: string } } };
  data: Record<string, unknown> & { key: string; version: number; itemType: string; tags: { tag: string }[] };
}

export interface ZoteroJsonCollection {
  key: string;
  version: number;
  data: { key: string; version: number; name: string; parentCollection: false | string; relations: Record<string, never> };
}

/**
 * The library as Zotero's API JSON. `filePath(att)` says where an attachment's file is on
 * this computer (the local API's `file://` redirect), when the caller needs it.
 */
export function toZoteroJson(lib: SampleLibrary, layout?: DataDirLayout): {
  items: ZoteroJsonItem[];
  collections: ZoteroJsonCollection[];
  files: Map<string, Buffer>;
  paths: Map<string, string>;
} {
  const libraryRef = { type: "user" as const, id: lib.userId, name: "testuser", links: { alternate: { href: "https://www.zotero.org/testuser", type: "text/html" } } };
  const items: ZoteroJsonItem[] = [];
  const files = new Map<string, Buffer>();
  const paths = new Map<string, string>();
  const attJson = (att: SampleAttachment, parentKey: string | null, top: SampleItem | null): ZoteroJsonItem => {
    const data: ZoteroJsonItem["data"] = {
      key: att.key,
      version: att.version,
      itemType: "attachment",
      ...(parentKey ? { parentItem: parentKey } : {}),
      linkMode: att.linkMode,
      title: att.title,
      accessDate: "",
      url: att.url ?? "",
      note: "",
      contentType: att.contentType,
      charset: "",
      tags: (top?.tags ?? []).map((tag) => ({ tag })),
      relations: {},
      ...(top ? { collections: top.collections } : {}),
    };
    if (att.linkMode === "imported_file" || att.linkMode === "imported_url") {
      data.filename = att.filename;
      data.md5 = att.body ? md5(att.body) : null;
      data.mtime = att.body ? 1_600_000_000_000 : null;
      if (att.body) files.set(att.key, att.body);
      if (layout) paths.set(att.key, join(layout.dataDir, "storage", att.key, att.filename!));
    } else if (att.linkMode === "linked_file" && att.link) {
      data.path = att.link.base === "absolute" ? (layout ? join(layout.linkedDir, att.link.name) : `/elsewhere/${att.link.name}`) : `attachments:${att.link.rel}`;
      if (layout) paths.set(att.key, att.link.base === "absolute" ? join(layout.linkedDir, att.link.name) : join(layout.baseDir, ...att.link.rel.split("/")));
    }
    if (att.trashed) data.deleted = 1;
    return { key: att.key, version: att.version, library: libraryRef, data };
  };
  for (const it of lib.items) {
    if (it.standalone) {
      const json = attJson(it.attachments[0]!, null, it);
      if (it.trashed) json.data.deleted = 1;
      items.push(json);
      continue;
    }
    const data: ZoteroJsonItem["data"] = {
      key: it.key,
      version: it.version,
      itemType: it.itemType,
      ...it.fields,
      ...(it.itemType === "note" ? { note: it.note ?? "" } : { creators: it.creators }),
      tags: it.tags.map((tag) => ({ tag })),
      collections: it.collections,
      relations: {},
      ...(it.trashed ? { deleted: 1 } : {}),
    };
    items.push({ key: it.key, version: it.version, library: libraryRef, data });
    for (const att of it.attachments) items.push(attJson(att, it.key, null));
    for (const html of it.notes) {
      const key = nextNoteKey(lib, it, html);
      items.push({ key, version: it.version, library: libraryRef, data: { key, version: it.version, itemType: "note", parentItem: it.key, note: html, tags: [], relations: {} } });
    }
  }
  const collections = lib.collections.map((c) => ({ key: c.key, version: c.version, data: { key: c.key, version: c.version, name: c.name, parentCollection: c.parentKey ?? (false as const), relations: {} } }));
  return { items, collections, files, paths };
}

// ---------------------------------------------------------------------------
// What every source must produce
// ---------------------------------------------------------------------------

export interface ExpectedAttachment {
  key: string;
  version: number;
  parentKey: string | null;
  title: string;
  linkMode: string;
  contentType: string | null;
  filename: string | null;
  md5: string | null;
}

export interface ExpectedItem {
  key: string;
  version: number;
  itemType: string;
  title: string;
  creators: SampleCreator[];
  date: string;
  year: number | null;
  doi: string | null;
  collections: string[];
  tags: string[];
  standalone: boolean;
  attachments: ExpectedAttachment[];
}

/** The normalised items, in key order, with collections and tags sorted. */
export function expectedItems(lib: SampleLibrary): ExpectedItem[] {
  const out: ExpectedItem[] = [];
  const att = (a: SampleAttachment, parentKey: string | null): ExpectedAttachment => ({
    key: a.key,
    version: a.version,
    parentKey,
    title: a.title,
    linkMode: a.linkMode,
    contentType: a.contentType || null,
    filename: a.linkMode === "imported_file" || a.linkMode === "imported_url" ? (a.filename ?? null) : null,
    md5: (a.linkMode === "imported_file" || a.linkMode === "imported_url") && a.body ? md5(a.body) : null,
  });
  for (const it of lib.items) {
    if (it.trashed) continue;
    const date = it.fields.date ?? "";
    const y = /(\d{4})/.exec(date);
    out.push({
      key: it.key,
      version: it.version,
      itemType: it.itemType,
      title: it.fields.title ?? it.fields.caseName ?? "",
      creators: it.creators,
      date,
      year: y ? Number(y[1]) : null,
      doi: it.fields.DOI ?? null,
      collections: [...it.collections].sort(),
      tags: [...it.tags].sort(),
      standalone: Boolean(it.standalone),
      attachments: it.standalone ? [att(it.attachments[0]!, null)] : it.attachments.filter((a) => !a.trashed).map((a) => att(a, it.key)),
    });
  }
  return out.sort((a, b) => (a.key < b.key ? -1 : 1));
}

/** MD5 of every file a source should be able to open, by attachment key (linked files included). */
export function fileMd5s(lib: SampleLibrary): Map<string, { md5: string; linked: boolean }> {
  const out = new Map<string, { md5: string; linked: boolean }>();
  for (const it of lib.items) {
    if (it.trashed) continue;
    for (const a of it.attachments) if (a.body && !a.trashed) out.set(a.key, { md5: md5(a.body), linked: a.linkMode === "linked_file" });
  }
  return out;
}

/** Stored PDFs in the library that a run should import (not trashed, file present). */
export function importablePdfs(lib: SampleLibrary, options: { linkedFiles?: boolean } = {}): { itemKey: string; attachmentKey: string; md5: string }[] {
  const out: { itemKey: string; attachmentKey: string; md5: string }[] = [];
  for (const it of lib.items) {
    if (it.trashed) continue;
    const isPdf = (a: SampleAttachment) => !a.trashed && a.contentType === "application/pdf";
    // A stored PDF first; a linked one only for sources that can read this computer's files.
    const pdf =
      it.attachments.find((a) => isPdf(a) && (a.linkMode === "imported_file" || a.linkMode === "imported_url")) ??
      (options.linkedFiles ? it.attachments.find((a) => isPdf(a) && a.linkMode === "linked_file") : undefined);
    if (pdf?.body) out.push({ itemKey: it.key, attachmentKey: pdf.key, md5: md5(pdf.body) });
  }
  return out;
}
