/**
 * The Zotero desktop's own data: a read-only snapshot of zotero.sqlite, and the files
 * under storage/ (plus linked files). Never writes, locks or leaves a file in the data
 * directory: Zotero holds an exclusive lock on zotero.sqlite while it runs, so we copy the
 * database (and its -wal / -journal) to a private temp directory and read the copy.
 */
import Database from "better-sqlite3";
import { copyFileSync, createReadStream, existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, isAbsolute, join } from "node:path";
import { doiOf, journalOf } from "./normalise.js";
import { ImportError, messageOf } from "../errors.js";
import { yearOf, type Attachment, type Collection, type Creator, type FileBody, type GoneKeys, type Item, type LibraryRef, type Listing, type ListOptions, type ZoteroSource } from "./types.js";

export interface LocalSourceOptions {
  /** Zotero's data directory (holds zotero.sqlite and storage/). */
  dataDir: string;
  /** Which library: the user's own, or a group by its group ID. `id` labels the user library. */
  library: LibraryRef;
  /** `extensions.zotero.baseAttachmentPath` from the profile's prefs.js, for `attachments:` links. */
  baseAttachmentPath?: string | null;
  /** Where snapshots go. Default: the OS temp directory. */
  tmpDir?: string;
}

/** Zotero.Attachments.LINK_MODE_* */
const LINK_MODES = ["imported_file", "imported_url", "linked_file", "linked_url", "embedded_image"] as const;
/** Zotero.Sync.Storage.Local.SYNC_STATE_IN_SYNC: storageHash is the file's MD5. */
const SYNC_STATE_IN_SYNC = 2;
const DB_FILES = ["zotero.sqlite", "zotero.sqlite-wal", "zotero.sqlite-journal"];

interface FileRef {
  /** Where the file is, or why we cannot know. */
  path: string | null;
  why?: string;
}

interface ItemRow {
  itemID: number;
  key: string;
  version: number;
  synced: number;
  typeName: string;
}

interface AttachmentRow {
  itemID: number;
  parentItemID: number | null;
  linkMode: number | null;
  contentType: string | null;
  path: string | null;
  syncState: number | null;
  storageHash: string | null;
}

/** Reads zotero.sqlite through a private snapshot. Create with `new`, call `close()` when done. */
export class ZoteroLocalSource implements ZoteroSource {
  readonly library: LibraryRef;
  /** Linked files are paths on this computer: the local source reads them, so they are importable. */
  readonly readsLinkedFiles = true;
  /** No network requests: the listing comes from a file. */
  readonly requests = 0;
  private snapshotDir: string | null = null;
  private db: Database.Database | null = null;
  private readonly files = new Map<string, FileRef>();
  private readonly cleanupOnExit = () => this.removeSnapshot();

  constructor(private readonly options: LocalSourceOptions) {
    this.library = options.library;
    if (!existsSync(join(options.dataDir, "zotero.sqlite"))) {
      throw new ImportError(
        "CONFIG_INVALID",
        `no zotero.sqlite in ${options.dataDir}: set zotero.data_dir (or --zotero-dir) to Zotero's data directory (Zotero → Settings → Advanced → Files and Folders → Data Directory Location)`,
      );
    }
  }

  /** The snapshot directory while one exists (for tests). */
  get snapshotPath(): string | null {
    return this.snapshotDir;
  }

  /**
   * Copy the database files to a private directory, taking the copy again when Zotero wrote
   * to them while we copied; let SQLite recover the copy (roll back a hot journal, fold in
   * the WAL), then open it read-only.
   */
  private open(): Database.Database {
    if (this.db) return this.db;
    const dir = mkdtempSync(join(this.options.tmpDir ?? tmpdir(), "import-from-zotero-snapshot-"));
    this.snapshotDir = dir;
    process.once("exit", this.cleanupOnExit);
    const stamp = () =>
      DB_FILES.map((name) => {
        try {
          const s = statSync(join(this.options.dataDir, name));
          return `${name}:${s.size}:${s.mtimeMs}`;
        } catch {
          return `${name}:-`;
        }
      }).join("|");
    try {
      for (let attempt = 0; ; attempt++) {
        const before = stamp();
        for (const name of DB_FILES) {
          rmSync(join(dir, name), { force: true });
          const from = join(this.options.dataDir, name);
          if (existsSync(from)) copyFileSync(from, join(dir, name));
        }
        if (stamp() === before || attempt >= 4) break;
      }
      // The copy is ours: recover it read-write (never the original), then reopen read-only.
      const recover = new Database(join(dir, "zotero.sqlite"), { fileMustExist: true });
      try {
        recover.pragma("locking_mode = NORMAL");
        recover.pragma("journal_mode = DELETE");
      } finally {
        recover.close();
      }
      const db = new Database(join(dir, "zotero.sqlite"), { readonly: true, fileMustExist: true });
      db.pragma("query_only = ON");
      this.db = db;
      return db;
    } catch (error) {
      this.removeSnapshot();
      if (error instanceof ImportError) throw error;
      throw new ImportError("ZOTERO_BAD_DATA", `cannot read ${join(this.options.dataDir, "zotero.sqlite")}: ${messageOf(error)}`, { cause: error });
    }
  }

  private removeSnapshot(): void {
    try {
      this.db?.close();
    } catch {
      // already closed
    }
    this.db = null;
    if (this.snapshotDir) rmSync(this.snapshotDir, { recursive: true, force: true });
    this.snapshotDir = null;
    process.removeListener("exit", this.cleanupOnExit);
  }

  close(): void {
    this.removeSnapshot();
  }

  private tables(db: Database.Database): Set<string> {
    return new Set((db.prepare("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')").all() as { name: string }[]).map((r) => r.name));
  }

  private libraryRow(db: Database.Database): { libraryID: number; version: number } {
    const columns = new Set((db.prepare("PRAGMA table_info(libraries)").all() as { name: string }[]).map((c) => c.name));
    if (!columns.has("type") || !columns.has("version")) {
      throw new ImportError("ZOTERO_BAD_DATA", `${join(this.options.dataDir, "zotero.sqlite")} is from a Zotero older than 5: open it once in a current Zotero, then try again`);
    }
    const row =
      this.library.type === "group"
        ? (db.prepare("SELECT l.libraryID, l.version FROM groups g JOIN libraries l ON l.libraryID = g.libraryID WHERE g.groupID = ?").get(Number(this.library.id)) as { libraryID: number; version: number } | undefined)
        : (db.prepare("SELECT libraryID, version FROM libraries WHERE type = 'user' ORDER BY libraryID LIMIT 1").get() as { libraryID: number; version: number } | undefined);
    if (!row) {
      throw new ImportError(
        "CONFIG_INVALID",
        this.library.type === "group"
          ? `group ${this.library.id} is not in ${join(this.options.dataDir, "zotero.sqlite")}: check zotero.library_id (the group's ID) and that Zotero has synced the group`
          : `no user library in ${join(this.options.dataDir, "zotero.sqlite")}`,
      );
    }
    return row;
  }

  /** In the trash: listed in deletedItems; deleted: no longer in the items table at all. */
  async goneKeys(keys: readonly string[]): Promise<GoneKeys> {
    const trash = new Set<string>();
    const deleted = new Set<string>();
    if (keys.length === 0) return { trash, deleted };
    const wanted = new Set(keys);
    this.read((db) => {
      const { libraryID } = this.libraryRow(db);
      const present = new Set<string>();
      const rows = db.prepare(`SELECT i.key, (d.itemID IS NOT NULL) AS trashed FROM items i LEFT JOIN deletedItems d ON d.itemID = i.itemID WHERE i.libraryID = ?`).all(libraryID) as { key: string; trashed: number }[];
      for (const r of rows) {
        if (!wanted.has(r.key)) continue;
        present.add(r.key);
        if (r.trashed) trash.add(r.key);
      }
      for (const k of wanted) if (!present.has(k)) deleted.add(k);
    });
    return { trash, deleted };
  }

  async listCollections(): Promise<Collection[]> {
    return this.read((db) => this.collectionsOf(db, this.libraryRow(db).libraryID));
  }

  private collectionsOf(db: Database.Database, libraryID: number): Collection[] {
    const deleted = this.tables(db).has("deletedCollections") ? "AND c.collectionID NOT IN (SELECT collectionID FROM deletedCollections)" : "";
    const rows = db
      .prepare(`SELECT c.key, c.collectionName AS name, p.key AS parentKey FROM collections c LEFT JOIN collections p ON p.collectionID = c.parentCollectionID WHERE c.libraryID = ? ${deleted} ORDER BY c.collectionID`)
      .all(libraryID) as { key: string; name: string; parentKey: string | null }[];
    return rows.map((r) => ({ key: r.key, name: r.name, parentKey: r.parentKey ?? null }));
  }

  private read<T>(fn: (db: Database.Database) => T): T {
    const db = this.open();
    try {
      return fn(db);
    } catch (error) {
      if (error instanceof ImportError) throw error;
      throw new ImportError("ZOTERO_BAD_DATA", `cannot read ${join(this.options.dataDir, "zotero.sqlite")}: ${messageOf(error)}`, { cause: error });
    }
  }

  async list(options: ListOptions = {}): Promise<Listing> {
    const { listing, changed } = this.read((db) => this.readListing(db, options.since));
    let items = listing.items;
    if (options.since !== undefined) {
      const also = new Set(options.alsoKeys ?? []);
      items = items.filter((item) => changed.has(item.key) || also.has(item.key) || item.attachments.some((a) => changed.has(a.key) || also.has(a.key)));
    }
    // Sizes are known locally, and whether the file is there at all (Zotero may not have
    // downloaded it yet): a PDF without its file is never the one chosen.
    await Promise.all(
      items.flatMap((item) =>
        item.attachments.map(async (a) => {
          const ref = this.files.get(a.key);
          if (!ref?.path) {
            a.hasFile = a.linkMode === "linked_url" ? null : false;
            return;
          }
          a.size = await stat(ref.path).then((s) => (s.isFile() ? s.size : null), () => null);
          a.hasFile = a.size !== null;
        }),
      ),
    );
    return { ...listing, items };
  }

  private readListing(db: Database.Database, since: number | undefined): { listing: Listing; changed: Set<string> } {
    const tables = this.tables(db);
    const itemTypes = tables.has("itemTypesCombined") ? "itemTypesCombined" : "itemTypes";
    const fields = tables.has("fieldsCombined") ? "fieldsCombined" : "fields";
    const { libraryID, version: libraryVersion } = this.libraryRow(db);

    const rows = db
      .prepare(
        `SELECT i.itemID, i.key, i.version, i.synced, t.typeName FROM items i JOIN ${itemTypes} t ON t.itemTypeID = i.itemTypeID
         WHERE i.libraryID = ? AND i.itemID NOT IN (SELECT itemID FROM deletedItems) ORDER BY i.itemID`,
      )
      .all(libraryID) as ItemRow[];
    const byId = new Map(rows.map((r) => [r.itemID, r]));

    const fieldValues = new Map<number, Map<string, string>>();
    for (const r of db
      .prepare(
        `SELECT d.itemID, f.fieldName, v.value FROM itemData d JOIN ${fields} f ON f.fieldID = d.fieldID JOIN itemDataValues v ON v.valueID = d.valueID
         JOIN items i ON i.itemID = d.itemID WHERE i.libraryID = ?`,
      )
      .all(libraryID) as { itemID: number; fieldName: string; value: unknown }[]) {
      let m = fieldValues.get(r.itemID);
      if (!m) fieldValues.set(r.itemID, (m = new Map()));
      m.set(r.fieldName, r.value === null || r.value === undefined ? "" : String(r.value));
    }
    const field = (id: number, name: string): string => fieldValues.get(id)?.get(name) ?? "";

    const creators = new Map<number, Creator[]>();
    for (const r of db
      .prepare(
        `SELECT ic.itemID, c.firstName, c.lastName, c.fieldMode, ct.creatorType FROM itemCreators ic JOIN creators c ON c.creatorID = ic.creatorID
         JOIN creatorTypes ct ON ct.creatorTypeID = ic.creatorTypeID JOIN items i ON i.itemID = ic.itemID
         WHERE i.libraryID = ? ORDER BY ic.itemID, ic.orderIndex`,
      )
      .all(libraryID) as { itemID: number; firstName: string | null; lastName: string | null; fieldMode: number | null; creatorType: string }[]) {
      const creator: Creator = r.fieldMode === 1 ? { creatorType: r.creatorType, name: r.lastName ?? "" } : { creatorType: r.creatorType, firstName: r.firstName ?? "", lastName: r.lastName ?? "" };
      const list = creators.get(r.itemID);
      if (list) list.push(creator);
      else creators.set(r.itemID, [creator]);
    }

    const tags = new Map<number, string[]>();
    for (const r of db
      .prepare(`SELECT it.itemID, t.name FROM itemTags it JOIN tags t ON t.tagID = it.tagID JOIN items i ON i.itemID = it.itemID WHERE i.libraryID = ? ORDER BY t.name`)
      .all(libraryID) as { itemID: number; name: string }[]) {
      const list = tags.get(r.itemID);
      if (list) list.push(r.name);
      else tags.set(r.itemID, [r.name]);
    }

    const deletedCollections = tables.has("deletedCollections") ? "AND c.collectionID NOT IN (SELECT collectionID FROM deletedCollections)" : "";
    const inCollections = new Map<number, string[]>();
    for (const r of db
      .prepare(`SELECT ci.itemID, c.key FROM collectionItems ci JOIN collections c ON c.collectionID = ci.collectionID WHERE c.libraryID = ? ${deletedCollections} ORDER BY c.key`)
      .all(libraryID) as { itemID: number; key: string }[]) {
      const list = inCollections.get(r.itemID);
      if (list) list.push(r.key);
      else inCollections.set(r.itemID, [r.key]);
    }

    const attachments = new Map<number, AttachmentRow>();
    for (const r of db
      .prepare(
        `SELECT a.itemID, a.parentItemID, a.linkMode, a.contentType, a.path, a.syncState, a.storageHash FROM itemAttachments a JOIN items i ON i.itemID = a.itemID WHERE i.libraryID = ?`,
      )
      .all(libraryID) as AttachmentRow[]) {
      attachments.set(r.itemID, r);
    }
    const noteParents = new Map<number, number | null>();
    for (const r of db.prepare(`SELECT n.itemID, n.parentItemID FROM itemNotes n JOIN items i ON i.itemID = n.itemID WHERE i.libraryID = ?`).all(libraryID) as {
      itemID: number;
      parentItemID: number | null;
    }[]) {
      noteParents.set(r.itemID, r.parentItemID);
    }

    const changed = new Set<string>();
    const items = new Map<number, Item>();
    const children: { parentID: number; att: Attachment }[] = [];
    for (const row of rows) {
      if (since !== undefined && (row.version > since || row.synced === 0)) changed.add(row.key);
      if (row.typeName === "annotation") continue; // annotations live inside PDFs' items, nothing to import
      if (row.typeName === "note" && noteParents.get(row.itemID)) continue; // a child note
      const att = attachments.get(row.itemID);
      if (row.typeName === "attachment" && att) {
        const attachment = this.attachmentOf(row, att, field(row.itemID, "title"));
        if (att.parentItemID !== null && att.parentItemID !== undefined) {
          children.push({ parentID: att.parentItemID, att: attachment });
          continue;
        }
        const date = field(row.itemID, "date");
        items.set(row.itemID, {
          key: row.key,
          version: row.version,
          itemType: "attachment",
          title: attachment.title,
          creators: [],
          date: multipartToStr(date),
          year: yearOf(multipartToStr(date)),
          doi: null,
          collections: inCollections.get(row.itemID) ?? [],
          tags: tags.get(row.itemID) ?? [],
          attachments: [attachment],
          standalone: true,
        });
        continue;
      }
      const date = multipartToStr(field(row.itemID, "date"));
      items.set(row.itemID, {
        key: row.key,
        version: row.version,
        itemType: row.typeName,
        title: field(row.itemID, "title") || field(row.itemID, "caseName") || field(row.itemID, "nameOfAct") || field(row.itemID, "subject"),
        creators: creators.get(row.itemID) ?? [],
        date,
        year: yearOf(date),
        doi: doiOf(field(row.itemID, "DOI"), field(row.itemID, "extra")),
        journal: journalOf((f) => field(row.itemID, f)),
        abstract: field(row.itemID, "abstractNote") || null,
        collections: inCollections.get(row.itemID) ?? [],
        tags: tags.get(row.itemID) ?? [],
        attachments: [],
        standalone: false,
      });
    }
    for (const { parentID, att } of children) {
      const parent = items.get(parentID);
      // A child of a trashed (or missing) parent goes with it.
      if (parent) parent.attachments.push({ ...att, parentKey: byId.get(parentID)?.key ?? parent.key });
    }
    return { listing: { library: this.library, libraryVersion, items: [...items.values()], collections: this.collectionsOf(db, libraryID), invalid: [], requests: 0 }, changed };
  }

  private attachmentOf(row: ItemRow, att: AttachmentRow, title: string): Attachment {
    const linkMode = LINK_MODES[att.linkMode ?? -1] ?? `link_mode_${att.linkMode}`;
    const stored = linkMode === "imported_file" || linkMode === "imported_url" || linkMode === "embedded_image";
    let filename: string | null = null;
    if (stored) {
      const name = att.path?.startsWith("storage:") ? att.path.slice("storage:".length) : null;
      filename = name || null;
      this.files.set(row.key, name ? { path: join(this.options.dataDir, "storage", row.key, name) } : { path: null, why: "the attachment names no stored file" });
    } else if (linkMode === "linked_file") {
      this.files.set(row.key, this.linkedPath(att.path));
    }
    return {
      key: row.key,
      version: row.version,
      parentKey: null,
      title,
      linkMode,
      contentType: att.contentType || null,
      filename,
      md5: stored && att.syncState === SYNC_STATE_IN_SYNC && att.storageHash ? att.storageHash.toLowerCase() : null,
      size: null,
      hasFile: null,
    };
  }

  /** A linked file's path: absolute, or `attachments:rel/path` under the base directory. */
  private linkedPath(path: string | null): FileRef {
    if (!path) return { path: null, why: "the linked file has no path" };
    if (path.startsWith("attachments:")) {
      const base = this.options.baseAttachmentPath;
      const rel = path.slice("attachments:".length);
      if (!base) return { path: null, why: `the linked file '${rel}' is relative to Zotero's linked attachment base directory, which no Zotero profile (prefs.js) sets` };
      return { path: join(base, ...rel.split("/")) };
    }
    return isAbsolute(path) ? { path } : { path: null, why: `the linked file path '${path}' is not absolute` };
  }

  async openFile(attachment: Attachment): Promise<FileBody> {
    let ref = this.files.get(attachment.key);
    if (!ref && attachment.filename) ref = { path: join(this.options.dataDir, "storage", attachment.key, basename(attachment.filename)) };
    if (!ref?.path) throw new ImportError("ZOTERO_FILE_MISSING", `file of ${attachment.key} not found: ${ref?.why ?? "not a file attachment"}`);
    const path = ref.path;
    let size: number;
    try {
      const s = await stat(path);
      if (!s.isFile()) throw Object.assign(new Error("not a file"), { code: "ENOENT" });
      size = s.size;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ENOENT" || code === "ENOTDIR") {
        throw new ImportError(
          "ZOTERO_FILE_MISSING",
          attachment.linkMode === "linked_file" ? `linked file not found: ${path}` : `file not in the Zotero data directory: ${path} (not downloaded by Zotero yet?)`,
        );
      }
      throw new ImportError("FILE_IO", `cannot read ${path}: ${code ?? messageOf(error)}`, { cause: error });
    }
    const stream = createReadStream(path);
    return { body: stream, size };
  }
}

/** Zotero stores dates as "YYYY-MM-DD original": the part after the SQL date is what the user typed. */
function multipartToStr(value: string): string {
  return /^\d{4}-\d{2}-\d{2} /.test(value) ? value.slice(11) : value;
}
