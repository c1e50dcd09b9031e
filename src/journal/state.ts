import type { ItemRecord, JournalRecord } from "./records.js";

export interface ItemState {
  key: string;
  /** The attachment uploaded (or to upload) for this item. */
  att?: string | undefined;
  status: ItemRecord["status"];
  version: number;
  title?: string | undefined;
  docId?: string | null | undefined;
  via?: ItemRecord["via"];
  code?: string | undefined;
  error?: string | undefined;
  permanent?: boolean | undefined;
  /** For a "not synced" skip: the PDF attachments and versions it was judged on. */
  atts?: string | undefined;
  md5?: string | null | undefined;
  meta?: string | undefined;
  metaPending?: boolean | undefined;
  stalePdf?: string | null | undefined;
  gone?: "trash" | "deleted" | null | undefined;
  attempts: number;
  ts: string;
}

export interface JournalState {
  items: Map<string, ItemState>;
  /** Library version of the last complete run, per selection filter. */
  syncVersions: Map<string, number>;
  runs: number;
}

/** Folds the records of one scope, one at a time, into where each item stands. Done is final. */
export class JournalReducer {
  readonly state: JournalState = { items: new Map(), syncVersions: new Map(), runs: 0 };

  constructor(readonly scope: string) {}

  add(r: JournalRecord): void {
    if (r.scope !== this.scope) return;
    if (r.t === "run") {
      if (r.event === "start") this.state.runs++;
      return;
    }
    if (r.t === "sync") {
      this.state.syncVersions.set(r.filter, r.version);
      return;
    }
    if (r.t !== "item" || typeof r.key !== "string") return;
    const prev = this.state.items.get(r.key);
    if (prev?.status === "done") {
      // A key once on the server stays there; later "done" lines say what changed.
      if (r.status === "done") {
        this.state.items.set(r.key, {
          ...prev,
          att: r.att ?? prev.att,
          version: Math.max(r.version, prev.version),
          title: r.title ?? prev.title,
          docId: r.docId ?? prev.docId,
          md5: r.md5 !== undefined ? r.md5 : prev.md5,
          meta: r.meta ?? prev.meta,
          metaPending: r.metaPending !== undefined ? r.metaPending : prev.metaPending,
          stalePdf: r.stalePdf !== undefined ? r.stalePdf : prev.stalePdf,
          gone: r.gone !== undefined ? r.gone : prev.gone,
          ts: r.ts,
        });
        return;
      }
      if (r.status !== "removed") return;
    }
    this.state.items.set(r.key, {
      key: r.key,
      att: r.att ?? prev?.att,
      status: r.status,
      version: r.version,
      title: r.title ?? prev?.title,
      docId: r.docId ?? prev?.docId,
      via: r.via,
      code: r.code,
      error: r.error,
      permanent: r.permanent,
      atts: r.atts,
      md5: r.md5,
      meta: r.meta,
      metaPending: r.metaPending,
      stalePdf: r.stalePdf,
      gone: r.gone,
      attempts: (prev?.attempts ?? 0) + (r.status === "started" ? 1 : 0),
      ts: r.ts,
    });
  }
}

/** Pure: the records of one scope → where each item stands. */
export function reduceJournal(records: Iterable<JournalRecord>, scope: string): JournalState {
  const reducer = new JournalReducer(scope);
  for (const r of records) reducer.add(r);
  return reducer.state;
}

export interface StateCounts {
  done: number;
  /** Done, but the metadata call is still to be made. */
  metaPending: number;
  /** Done, but the PDF changed in Zotero and the server keeps the older file. */
  stalePdf: number;
  /** Done, but gone from Zotero since (trash, deleted). */
  goneTrash: number;
  goneDeleted: number;
  removed: number;
  uploaded: number;
  already: number;
  failed: number;
  unfinished: number;
  skipped: number;
}

export function countStates(state: JournalState): StateCounts {
  const c: StateCounts = { done: 0, metaPending: 0, stalePdf: 0, goneTrash: 0, goneDeleted: 0, removed: 0, uploaded: 0, already: 0, failed: 0, unfinished: 0, skipped: 0 };
  for (const s of state.items.values()) {
    if (s.status === "removed") {
      c.removed++;
      continue;
    }
    if (s.status === "done") {
      c.done++;
      if (s.metaPending) c.metaPending++;
      if (s.stalePdf) c.stalePdf++;
      if (s.gone === "trash") c.goneTrash++;
      if (s.gone === "deleted") c.goneDeleted++;
      if (s.via === "already") c.already++;
      else c.uploaded++;
    } else if (s.status === "failed") c.failed++;
    else if (s.status === "started") c.unfinished++;
    else c.skipped++;
  }
  return c;
}
