import type { ItemRecord, JournalRecord } from "./records.js";

export interface ItemState {
  key: string;
  status: ItemRecord["status"];
  version: number;
  title?: string | undefined;
  docId?: string | null | undefined;
  via?: ItemRecord["via"];
  code?: string | undefined;
  error?: string | undefined;
  permanent?: boolean | undefined;
  attempts: number;
  ts: string;
}

export interface JournalState {
  items: Map<string, ItemState>;
  /** Library version of the last complete run, per selection filter. */
  syncVersions: Map<string, number>;
  runs: number;
}

/** Pure reducer: the records of one scope → where each item stands. Done is final. */
export function reduceJournal(records: Iterable<JournalRecord>, scope: string): JournalState {
  const items = new Map<string, ItemState>();
  const syncVersions = new Map<string, number>();
  let runs = 0;
  for (const r of records) {
    if (r.scope !== scope) continue;
    if (r.t === "run") {
      if (r.event === "start") runs++;
      continue;
    }
    if (r.t === "sync") {
      syncVersions.set(r.filter, r.version);
      continue;
    }
    if (r.t !== "item" || typeof r.key !== "string") continue;
    const prev = items.get(r.key);
    if (prev?.status === "done") continue; // a key once on the server stays there
    items.set(r.key, {
      key: r.key,
      status: r.status,
      version: r.version,
      title: r.title ?? prev?.title,
      docId: r.docId ?? prev?.docId,
      via: r.via,
      code: r.code,
      error: r.error,
      permanent: r.permanent,
      attempts: (prev?.attempts ?? 0) + (r.status === "started" ? 1 : 0),
      ts: r.ts,
    });
  }
  return { items, syncVersions, runs };
}

export interface StateCounts {
  done: number;
  uploaded: number;
  already: number;
  failed: number;
  unfinished: number;
  skipped: number;
}

export function countStates(state: JournalState): StateCounts {
  const c: StateCounts = { done: 0, uploaded: 0, already: 0, failed: 0, unfinished: 0, skipped: 0 };
  for (const s of state.items.values()) {
    if (s.status === "done") {
      c.done++;
      if (s.via === "already") c.already++;
      else c.uploaded++;
    } else if (s.status === "failed") c.failed++;
    else if (s.status === "started") c.unfinished++;
    else c.skipped++;
  }
  return c;
}
