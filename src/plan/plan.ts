import type { JournalState } from "../journal/state.js";
import type { KnownLink } from "../refserver/client.js";
import { pdfSignature, type Candidate, type Skipped } from "./select.js";

export type Action =
  | { kind: "import"; candidate: Candidate; retry: boolean }
  | { kind: "done"; candidate: Candidate; via: "journal" | "server"; docId: string | null }
  | { kind: "later"; candidate: Candidate };

export interface PlanOptions {
  limit: number | null;
  retryFailedOnly: boolean;
}

export interface Plan {
  actions: Action[];
  skipped: Skipped[];
  toImport: number;
  alreadyDone: number;
  /** Importable items left for a later run by --limit. */
  deferred: number;
}

/**
 * Pure: the candidates, the journal and what the server already holds → what to do.
 * --limit counts items that will be imported now, never items already done or skipped.
 * The pipeline takes the "import" and then the "later" actions in order, so an item that
 * turns out to have no file, or fails, leaves its --limit slot to the next one.
 * An item remembered as "PDF not synced" is skipped without asking Zotero again, until one of
 * its PDF attachments changes version.
 */
export function makePlan(candidates: Candidate[], skipped: Skipped[], journal: JournalState, known: Map<string, KnownLink> | null, options: PlanOptions): Plan {
  const actions: Action[] = [];
  let toImport = 0;
  let alreadyDone = 0;
  let deferred = 0;
  const skippedAll = [...skipped];
  for (const candidate of candidates) {
    const state = journal.items.get(candidate.item.key);
    if (state?.status === "skipped" && state.code === "ZOTERO_FILE_MISSING" && state.atts === pdfSignature(candidate.item) && !options.retryFailedOnly) {
      skippedAll.push({ item: candidate.item, reason: "not_synced" });
      continue;
    }
    if (state?.status === "done") {
      actions.push({ kind: "done", candidate, via: "journal", docId: state.docId ?? null });
      alreadyDone++;
      continue;
    }
    const link = known?.get(candidate.item.key);
    if (link) {
      actions.push({ kind: "done", candidate, via: "server", docId: link.docId });
      alreadyDone++;
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
  return { actions, skipped: skippedAll, toImport, alreadyDone, deferred };
}
