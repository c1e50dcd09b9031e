import { describe, expect, it } from "vitest";
import { reduceJournal } from "../../src/journal/state.js";
import type { JournalRecord } from "../../src/journal/records.js";
import { makePlan } from "../../src/plan/plan.js";
import { resolveCollections, selectItems } from "../../src/plan/select.js";
import { metadataFor } from "../../src/transfer/pipeline.js";
import type { Attachment, Item } from "../../src/zotero/types.js";

let n = 0;
const key = (): string => `K${String(++n).padStart(7, "0")}`.replace(/0/g, "2");
function att(over: Partial<Attachment> = {}): Attachment {
  return { key: key(), version: 1, parentKey: "PARENT22", title: "Full Text PDF", linkMode: "imported_file", contentType: "application/pdf", filename: "paper.pdf", md5: null, size: null, hasFile: null, ...over };
}
function item(over: Partial<Item> = {}): Item {
  return { key: key(), version: 1, itemType: "journalArticle", title: "A paper", creators: [], date: "2020", year: 2020, doi: null, collections: [], tags: [], attachments: [att()], standalone: false, ...over };
}

describe("selecting importable items", () => {
  it("imports only a stored PDF and says why the rest are skipped", () => {
    const items = [
      item({ title: "stored" }),
      item({ title: "from url", attachments: [att({ linkMode: "imported_url" })] }),
      item({ title: "linked", attachments: [att({ linkMode: "linked_file" })] }),
      item({ title: "link only", attachments: [att({ linkMode: "linked_url", contentType: null, filename: null })] }),
      item({ title: "epub", attachments: [att({ contentType: "application/epub+zip", filename: "b.epub" })] }),
      item({ title: "bare", attachments: [] }),
      item({ title: "note", itemType: "note", attachments: [] }),
    ];
    const { candidates, skipped } = selectItems(items, { itemTypes: [], excludeTags: [], collectionKeys: [] });
    expect(candidates.map((c) => c.item.title)).toEqual(["stored", "from url"]);
    expect(skipped.map((s) => [s.item.title, s.reason])).toEqual([
      ["linked", "linked_file"],
      ["link only", "linked_url"],
      ["epub", "not_pdf"],
      ["bare", "no_attachment"],
      ["note", "note"],
    ]);
  });

  it("imports a linked PDF only from a source that can read this computer's files", () => {
    const items = [item({ attachments: [att({ linkMode: "linked_file" })] })];
    expect(selectItems(items, { itemTypes: [], excludeTags: [], collectionKeys: [] }).skipped[0]!.reason).toBe("linked_file");
    expect(selectItems(items, { itemTypes: [], excludeTags: [], collectionKeys: [], linkedFiles: true }).candidates).toHaveLength(1);
  });

  it("uploads the first stored PDF when an item has several attachments", () => {
    const first = att({ filename: "first.pdf" });
    const { candidates } = selectItems([item({ attachments: [att({ linkMode: "linked_url" }), first, att({ filename: "second.pdf" })] })], { itemTypes: [], excludeTags: [], collectionKeys: [] });
    expect(candidates[0]!.attachment).toBe(first);
  });

  it("filters by item type and excluded tags, case-insensitively for tags", () => {
    const items = [item({ itemType: "book" }), item({ tags: ["To-Read", "Skip"] }), item({})];
    const { candidates, skipped } = selectItems(items, { itemTypes: ["journalArticle"], excludeTags: ["skip"], collectionKeys: [] });
    expect(candidates).toHaveLength(1);
    expect(skipped.map((s) => s.reason)).toEqual(["item_type_filtered", "excluded_tag"]);
  });

  it("resolves collections by key or name, subcollections included", () => {
    const cols = [
      { key: "AAAAAAAA", name: "Antarctica", parentKey: null },
      { key: "BBBBBBBB", name: "Geology", parentKey: "AAAAAAAA" },
      { key: "CCCCCCCC", name: "Ice", parentKey: "BBBBBBBB" },
      { key: "DDDDDDDD", name: "Other", parentKey: null },
    ];
    expect(resolveCollections(["antarctica"], cols).keys.sort()).toEqual(["AAAAAAAA", "BBBBBBBB", "CCCCCCCC"]);
    expect(resolveCollections(["BBBBBBBB"], cols).keys.sort()).toEqual(["BBBBBBBB", "CCCCCCCC"]);
    expect(resolveCollections(["Antarctica/Geology/Ice"], cols).keys).toEqual(["CCCCCCCC"]);
    expect(resolveCollections(["Nope"], cols).unknown).toEqual(["Nope"]);
  });
});

describe("planning", () => {
  const scope = "http://s|user:1";
  const rec = (k: string, status: "started" | "done" | "failed"): JournalRecord => ({ t: "item", ts: "2026-01-01T00:00:00Z", run: "r", scope, key: k, version: 1, status });

  it("--limit counts only items that will really be imported", () => {
    const items = [item(), item(), item(), item(), item({ attachments: [] }), item()];
    const { candidates, skipped } = selectItems(items, { itemTypes: [], excludeTags: [], collectionKeys: [] });
    const state = reduceJournal([rec(items[0]!.key, "done"), rec(items[1]!.key, "started"), rec(items[1]!.key, "done")], scope);
    const plan = makePlan(candidates, skipped, state, null, { limit: 2, retryFailedOnly: false });
    expect(plan.alreadyDone).toBe(2);
    expect(plan.toImport).toBe(2);
    expect(plan.deferred).toBe(1);
    expect(plan.actions.filter((a) => a.kind === "import").map((a) => a.candidate.item.key)).toEqual([items[2]!.key, items[3]!.key]);
  });

  it("--retry-failed plans only failed items; a done key stays done whatever follows", () => {
    const items = [item(), item(), item()];
    const { candidates } = selectItems(items, { itemTypes: [], excludeTags: [], collectionKeys: [] });
    const state = reduceJournal([rec(items[0]!.key, "failed"), rec(items[1]!.key, "done"), rec(items[1]!.key, "failed")], scope);
    const plan = makePlan(candidates, [], state, null, { limit: null, retryFailedOnly: true });
    expect(plan.actions.filter((a) => a.kind === "import").map((a) => a.candidate.item.key)).toEqual([items[0]!.key]);
    expect(plan.alreadyDone).toBe(1);
  });

  it("treats keys the server reports as done", () => {
    const items = [item(), item()];
    const { candidates } = selectItems(items, { itemTypes: [], excludeTags: [], collectionKeys: [] });
    const plan = makePlan(candidates, [], reduceJournal([], scope), new Map([[items[1]!.key, { key: items[1]!.key, docId: "d", version: 1 }]]), { limit: null, retryFailedOnly: false });
    expect(plan.actions.map((a) => a.kind)).toEqual(["import", "done"]);
  });

  it("keeps scopes apart: the same key on another server is another item", () => {
    const state = reduceJournal([{ ...rec("ABCDEFGH", "done"), scope: "http://other|user:1" }], scope);
    expect(state.items.size).toBe(0);
  });
});

describe("upload metadata", () => {
  it("falls back to the attachment title, then the filename, for an untitled item", () => {
    const c = { item: item({ title: "  ", creators: [{ creatorType: "author", firstName: "Ada", lastName: "Lovelace" }, { creatorType: "editor", name: "Ed" }] }), attachment: att({ title: "Scan", filename: "scan.pdf" }), attachments: [], unsynced: 0 };
    const meta = metadataFor(c, "99");
    expect(meta.title).toBe("Scan");
    expect(meta.authors).toEqual(["Ada Lovelace"]);
    expect(metadataFor({ ...c, attachment: att({ title: "", filename: "x.pdf" }) }, "99").title).toBe("x.pdf");
  });
});
