import { createHash } from "node:crypto";
import { closeSync, fstatSync, openSync, readFileSync, readSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { scanJournal, type ScanResult } from "./journal.js";
import { JournalReducer, type ItemState, type JournalState } from "./state.js";

/**
 * Where a scope of the checkpoint stood at a byte offset, kept beside the journal
 * (`<checkpoint>.state`) so a run reads only what was appended since, not every record of
 * every earlier run. A cache and nothing more: the journal stays the one record of what was
 * done, append-only; a snapshot that is missing, unreadable, of another scope, or does not
 * match the journal's bytes (a journal replaced, truncated or rewritten) is ignored, and the
 * whole journal is read as before.
 */
interface Snapshot {
  v: 1;
  scope: string;
  /** The journal's bytes [0, offset) are folded in. */
  offset: number;
  /** The journal file (device and inode) and an MD5 of the bytes just before `offset`. */
  dev: number;
  ino: number;
  tail: string;
  badLines: number;
  runs: number;
  sync: [string, number][];
  items: ItemState[];
}

/** How many bytes before the offset identify the journal a snapshot was taken of. */
const TAIL_BYTES = 4096;

export function snapshotPath(journalPath: string): string {
  return `${journalPath}.state`;
}

export interface LoadedState extends ScanResult {
  reducer: JournalReducer;
  state: JournalState;
  /** Read from a snapshot (then only the bytes after it were scanned). */
  fromSnapshot: boolean;
}

/** The MD5 of the journal's bytes [offset - TAIL_BYTES, offset), with its device and inode; null when it has fewer bytes. */
function fingerprint(journalPath: string, offset: number): { dev: number; ino: number; tail: string } | null {
  let fd: number;
  try {
    fd = openSync(journalPath, "r");
  } catch {
    return null;
  }
  try {
    const st = fstatSync(fd);
    if (st.size < offset) return null;
    const start = Math.max(0, offset - TAIL_BYTES);
    const buf = Buffer.alloc(offset - start);
    let read = 0;
    while (read < buf.length) {
      const n = readSync(fd, buf, read, buf.length - read, start + read);
      if (n === 0) return null;
      read += n;
    }
    return { dev: st.dev, ino: st.ino, tail: createHash("md5").update(buf).digest("hex") };
  } finally {
    closeSync(fd);
  }
}

function readSnapshot(journalPath: string, scope: string): Snapshot | null {
  let snap: Snapshot;
  try {
    snap = JSON.parse(readFileSync(snapshotPath(journalPath), "utf8")) as Snapshot;
  } catch {
    return null;
  }
  const wellFormed =
    snap?.v === 1 &&
    snap.scope === scope &&
    Number.isSafeInteger(snap.offset) &&
    snap.offset >= 0 &&
    Number.isSafeInteger(snap.runs) &&
    Number.isSafeInteger(snap.badLines) &&
    Array.isArray(snap.sync) &&
    snap.sync.every((e) => Array.isArray(e) && typeof e[0] === "string" && typeof e[1] === "number") &&
    Array.isArray(snap.items) &&
    snap.items.every((i) => typeof i === "object" && i !== null && typeof i.key === "string" && typeof i.status === "string" && typeof i.attempts === "number");
  if (!wellFormed) return null;
  const print = fingerprint(journalPath, snap.offset);
  if (!print || print.dev !== snap.dev || print.ino !== snap.ino || print.tail !== snap.tail) return null;
  return snap;
}

/**
 * Where each item of `scope` stands: from the snapshot when it matches the journal, then the
 * records appended after it; else from every record. The same state either way.
 */
export function loadState(journalPath: string, scope: string): LoadedState {
  const snap = readSnapshot(journalPath, scope);
  const reducer = new JournalReducer(scope);
  if (snap) {
    const s = reducer.state;
    for (const item of snap.items) s.items.set(item.key, item);
    for (const [filter, version] of snap.sync) s.syncVersions.set(filter, version);
    s.runs = snap.runs;
  }
  const scan = scanJournal(journalPath, (r) => reducer.add(r), snap?.offset ?? 0);
  return { ...scan, badLines: scan.badLines + (snap?.badLines ?? 0), reducer, state: reducer.state, fromSnapshot: snap !== null };
}

/**
 * After a run (holding the checkpoint's lock): fold in what the run appended since `loaded`
 * was read, and keep the result as the snapshot (written to a temporary file, then renamed:
 * a reader sees the old snapshot or the new one). Best effort: a snapshot that cannot be
 * written is left out (the next run reads the journal), and never fails the run.
 */
export function saveState(journalPath: string, loaded: LoadedState): void {
  const path = snapshotPath(journalPath);
  // One writer at a time (the lock's holder): a fixed name, so one left by a killed run is reused.
  const temporary = `${path}.tmp`;
  try {
    const scan = scanJournal(journalPath, (r) => loaded.reducer.add(r), loaded.end);
    const print = fingerprint(journalPath, scan.end);
    if (!print) return;
    const s = loaded.reducer.state;
    const snap: Snapshot = {
      v: 1,
      scope: loaded.reducer.scope,
      offset: scan.end,
      ...print,
      badLines: loaded.badLines + scan.badLines,
      runs: s.runs,
      sync: [...s.syncVersions],
      items: [...s.items.values()],
    };
    writeFileSync(temporary, JSON.stringify(snap), { mode: 0o600 });
    renameSync(temporary, path);
    loaded.end = scan.end;
    loaded.badLines = snap.badLines;
  } catch {
    rmSync(temporary, { force: true });
  }
}
