import type { ItemState, JournalState } from "../journal/state.js";
import type { KnownLink } from "../refserver/client.js";
import type { Item } from "../zotero/types.js";
import { metadataDigest, metadataFor, type PaperMetadata } from "./metadata.js";
import { pdfSignature, type Candidate, type Skipped } from "./select.js";

export type Action =
  | { kind: "import"; candidate: Candidate; retry: boolean }
  | { kind: "done"; candidate: Candidate; via: "journal" | "server"; docId: string | null; /** For "server": the digest of the metadata when the server already holds Zotero's. */ meta?: string }
  | { kind: "later"; candidate: Candidate };

/**
 * A paper already on the server that Zotero changed since: its metadata (title, authors, …,
 * tags, collections) and/or its PDF (another md5, or another attachment is now the one).
 * `candidate` is null when Zotero listed the item without its attachments (only the parent
 * changed): then only the metadata is compared.
 */
export interface Update {
  item: Item;
  candidate: Candidate | null;
  docId: string;
  meta: PaperMetadata;
  digest: string;
  metadata: boolean;
  pdf: boolean;
}

/** A paper the checkpoint says is done, as the plan sees it now. */
export interface PaperRef {
  key: string;
  title: string;
  docId: string | null;
}

export interface PlanOptions {
  limit: number | null;
  retryFailedOnly: boolean;
  /** The library id sent with the metadata (and keyed into the digest's metadata). */
  libraryId?: string;
  /** Keys Zotero has in its trash, and keys it deleted (when the source can tell). */
  gone?: { trash: ReadonlySet<string>; deleted: ReadonlySet<string> } | null;
}

export interface Plan {
  actions: Action[];
  skipped: Skipped[];
  toImport: number;
  alreadyDone: number;
  /** Importable items left for a later run by --limit. */
  deferred: number;
  /** Papers on the server that Zotero changed since they were sent. */
  updates: Update[];
  /** Papers whose PDF changed in Zotero while the server cannot take a replacement (already reported). */
  stale: PaperRef[];
  /** Done in the checkpoint, but the server (which lists its keys) no longer has them. */
  lost: PaperRef[];
  /** Done in the checkpoint, but moved to Zotero's trash or deleted there since. */
  gone: (PaperRef & { where: "trash" | "deleted" })[];
  /** Done items that are back in Zotero after being reported gone (restored from the trash). */
  restored: string[];
}

/** Pure: does the server's link already carry this metadata? (Only when its links endpoint tells.) */
function serverHolds(link: KnownLink, meta: PaperMetadata): boolean {
  if (link.title === undefined) return false;
  const authors = link.authors ?? [];
  return (
    (link.title ?? "") === meta.title &&
    authors.length === meta.authors.length &&
    authors.every((a, i) => a === meta.authors[i]) &&
    (link.year ?? null) === meta.year &&
    (link.doi ?? null) === meta.doi &&
    (link.journal ?? null) === meta.journal
  );
}

function changeOf(state: ItemState, item: Item, candidate: Candidate | null, libraryId: string, docId: string): Update | null {
  const meta = metadataFor(item, libraryId, candidate?.attachment ?? null);
  const digest = metadataDigest(meta);
  // Without the attachment, an untitled item's title cannot be rebuilt as it was sent: leave it.
  const comparable = candidate !== null || item.title.trim() !== "";
  const metadata = comparable && (state.metaPending === true || state.meta !== digest);
  let pdf = false;
  if (candidate) {
    const now = candidate.attachment;
    const otherFile = state.att !== undefined && state.att !== now.key && !candidate.attachments.some((a) => a.key === state.att);
    const newBytes = Boolean(state.md5 && now.md5 && state.md5 !== now.md5);
    pdf = (otherFile || newBytes) && !(state.stalePdf && state.stalePdf === now.md5);
  }
  if (!metadata && !pdf) return null;
  return { item, candidate, docId, meta, digest, metadata, pdf };
}

/**
 * Pure: the candidates, the journal and what the server already holds → what to do.
 * --limit counts items that will be imported now, never items already done or skipped.
 * The pipeline takes the "import" and then the "later" actions in order, so an item that
 * turns out to have no file, or fails, leaves its --limit slot to the next one.
 * An item remembered as "PDF not synced" is skipped without asking Zotero again, until one of
 * its PDF attachments changes version.
 * Papers already imported are compared with what was sent (metadata digest, PDF md5): changes
 * become updates; papers the server lost, and papers gone from Zotero, are reported.
 */
export function makePlan(candidates: Candidate[], skipped: Skipped[], journal: JournalState, known: Map<string, KnownLink> | null, options: PlanOptions): Plan {
  const actions: Action[] = [];
  const updates: Update[] = [];
  const stale: PaperRef[] = [];
  const restored: string[] = [];
  let toImport = 0;
  let alreadyDone = 0;
  let deferred = 0;
  const skippedAll: Skipped[] = [];
  const libraryId = options.libraryId ?? "";
  const listed = new Set<string>();
  const lostKeys = new Set<string>();
  const onServer = (key: string): boolean => known === null || known.has(key);

  const consider = (state: ItemState, item: Item, candidate: Candidate | null): void => {
    listed.add(item.key);
    if (state.gone) restored.push(item.key);
    if (!onServer(item.key)) {
      lostKeys.add(item.key);
      return;
    }
    const docId = state.docId ?? known?.get(item.key)?.docId ?? null;
    if (docId === null) return;
    const change = changeOf(state, item, candidate, libraryId, docId);
    if (change) updates.push(change);
    else if (candidate && state.stalePdf && state.stalePdf === candidate.attachment.md5) stale.push({ key: item.key, title: item.title, docId });
  };

  for (const candidate of candidates) {
    const state = journal.items.get(candidate.item.key);
    if (state?.status === "skipped" && state.code === "ZOTERO_FILE_MISSING" && state.atts === pdfSignature(candidate.item) && !options.retryFailedOnly) {
      skippedAll.push({ item: candidate.item, reason: "not_synced" });
      continue;
    }
    if (state?.status === "done") {
      actions.push({ kind: "done", candidate, via: "journal", docId: state.docId ?? null });
      alreadyDone++;
      if (!options.retryFailedOnly) consider(state, candidate.item, candidate);
      continue;
    }
    const link = known?.get(candidate.item.key);
    if (link) {
      // On the server but not in this checkpoint (an answer lost, another computer's run):
      // its metadata is compared with what the server says it holds, when it says.
      const meta = metadataFor(candidate.item, libraryId, candidate.attachment);
      const digest = metadataDigest(meta);
      const same = serverHolds(link, meta);
      actions.push({ kind: "done", candidate, via: "server", docId: link.docId, ...(same ? { meta: digest } : {}) });
      alreadyDone++;
      if (!same && link.docId !== null && !options.retryFailedOnly) updates.push({ item: candidate.item, candidate, docId: link.docId, meta, digest, metadata: true, pdf: false });
      continue;
    }
    const isRetry = state?.status === "failed" || state?.status === "started";
    if (options.retryFailedOnly && state?.status !== "failed") continue;
    if (options.limit !== null && toImport >= options.limit) {
      actions.push({ kind: "later", candidate });
      deferred++;
      continue;
    }
    actions.push({ kind: "import", candidate, retry: isRetry });
    toImport++;
  }
  for (const s of skipped) {
    const state = journal.items.get(s.item.key);
    // An imported item listed without its attachments (only the parent changed), or whose PDF
    // went away: still the paper on the server, never "skipped".
    if (state?.status === "done") {
      alreadyDone++;
      if (!options.retryFailedOnly) consider(state, s.item, null);
      continue;
    }
    skippedAll.push(s);
  }

  // Papers the server no longer has, and papers gone from Zotero, across the whole checkpoint.
  const lost: PaperRef[] = [];
  const gone: Plan["gone"] = [];
  for (const state of journal.items.values()) {
    if (state.status !== "done") continue;
    const where = options.gone?.deleted.has(state.key) ? "deleted" : options.gone?.trash.has(state.key) ? "trash" : null;
    if (where && !listed.has(state.key)) {
      gone.push({ key: state.key, title: state.title ?? "", docId: state.docId ?? known?.get(state.key)?.docId ?? null, where });
      continue;
    }
    if (lostKeys.has(state.key) || (!listed.has(state.key) && !onServer(state.key))) lost.push({ key: state.key, title: state.title ?? "", docId: state.docId ?? null });
  }
  return { actions, skipped: skippedAll, toImport, alreadyDone, deferred, updates, stale, lost, gone, restored };
}
