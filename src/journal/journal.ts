import { closeSync, existsSync, fdatasync, fdatasyncSync, fstatSync, ftruncateSync, mkdirSync, openSync, readSync, writeSync, readFileSync } from "node:fs";
import { dirname } from "node:path";
import { ImportError } from "../errors.js";
import type { JournalRecord } from "./records.js";

export interface ReadResult {
  records: JournalRecord[];
  /** Lines that could not be parsed (a torn last line is expected after a crash). */
  badLines: number;
  tornTail: boolean;
}

/** Read every record; a torn (partial) last line is ignored, other bad lines are counted. */
export function readJournal(path: string): ReadResult {
  if (!existsSync(path)) return { records: [], badLines: 0, tornTail: false };
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    throw new ImportError("CHECKPOINT_INVALID", `checkpoint ${path} cannot be read (${(error as NodeJS.ErrnoException).code}): check its permissions or pass --checkpoint`);
  }
  const lines = text.split("\n");
  const tornTail = lines.length > 0 && lines[lines.length - 1] !== "";
  const records: JournalRecord[] = [];
  let badLines = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line === "") continue;
    try {
      const r = JSON.parse(line) as JournalRecord;
      if (r && typeof r === "object" && typeof r.t === "string") records.push(r);
      else badLines++;
    } catch {
      if (!(i === lines.length - 1 && tornTail)) badLines++;
    }
  }
  return { records, badLines, tornTail };
}

/**
 * The append-only journal: one JSON line per outcome, fsynced before we go on,
 * so a SIGKILL at any instant leaves at most one torn last line.
 */
export class Journal {
  private fd: number | null;

  private constructor(readonly path: string, fd: number) {
    this.fd = fd;
  }

  static open(path: string): Journal {
    mkdirSync(dirname(path), { recursive: true });
    let fd: number;
    try {
      fd = openSync(path, "a+", 0o600);
    } catch (error) {
      throw new ImportError("CHECKPOINT_INVALID", `checkpoint ${path} cannot be opened (${(error as NodeJS.ErrnoException).code}): check the directory or pass --checkpoint`);
    }
    // Cut a torn last line so the next record starts on a line of its own.
    const size = fstatSync(fd).size;
    if (size > 0) {
      const tail = Buffer.alloc(Math.min(size, 64 * 1024));
      readSync(fd, tail, 0, tail.length, size - tail.length);
      if (tail[tail.length - 1] !== 0x0a) {
        const lastNewline = tail.lastIndexOf(0x0a);
        const keep = lastNewline === -1 ? (size > tail.length ? size : 0) : size - tail.length + lastNewline + 1;
        ftruncateSync(fd, keep);
        fdatasyncSync(fd);
      }
    }
    return new Journal(path, fd);
  }

  /** Append and fsync before returning (for the few records outside the transfer pipeline). */
  append(record: JournalRecord): void {
    if (this.fd === null) throw new Error("journal is closed");
    writeSync(this.fd, JSON.stringify(record) + "\n");
    fdatasyncSync(this.fd);
  }

  /** The sync under way, and the one queued for records written after it started. */
  private syncing: Promise<void> | null = null;
  private queued: { promise: Promise<void>; resolve: () => void; reject: (e: unknown) => void } | null = null;

  /**
   * Append, and resolve once the record is on disk. Records written while a sync runs
   * share the next one (group commit), off the main thread: workers wait for durability
   * without stalling each other's transfers.
   */
  appendDurable(record: JournalRecord): Promise<void> {
    if (this.fd === null) return Promise.reject(new Error("journal is closed"));
    writeSync(this.fd, JSON.stringify(record) + "\n");
    if (!this.syncing) return this.startSync();
    if (!this.queued) {
      let resolve!: () => void;
      let reject!: (e: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.queued = { promise, resolve, reject };
    }
    return this.queued.promise;
  }

  private startSync(): Promise<void> {
    const fd = this.fd;
    if (fd === null) return Promise.reject(new Error("journal is closed"));
    this.syncing = new Promise<void>((resolve, reject) => {
      fdatasync(fd, (error) => {
        this.syncing = null;
        const waiting = this.queued;
        this.queued = null;
        if (waiting) this.startSync().then(waiting.resolve, waiting.reject);
        if (error) reject(error);
        else resolve();
      });
    });
    return this.syncing;
  }

  close(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
  }
}
