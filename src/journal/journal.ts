import { closeSync, fdatasync, fdatasyncSync, fstatSync, ftruncateSync, mkdirSync, openSync, readSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { ImportError } from "../errors.js";
import type { JournalRecord } from "./records.js";

export interface ScanResult {
  /** Lines that could not be parsed (a torn last line is expected after a crash). */
  badLines: number;
  tornTail: boolean;
  /** Byte offset just past the last whole line read: where a later scan carries on. */
  end: number;
}

export interface ReadResult extends ScanResult {
  records: JournalRecord[];
}

/**
 * Read into `buf` from `position` until it is full or the file ends: the bytes read. (One
 * readSync may return fewer bytes than asked for.)
 */
export function readFully(fd: number, buf: Buffer, position: number): number {
  let read = 0;
  while (read < buf.length) {
    const n = readSync(fd, buf, read, buf.length - read, position + read);
    if (n === 0) break;
    read += n;
  }
  return read;
}

/**
 * Hand every record from byte `from` on to `onRecord`, one line at a time, keeping none: a
 * torn last line (no newline yet: a write cut short) is ignored, other bad lines are counted.
 */
export function scanJournal(path: string, onRecord: (record: JournalRecord) => void, from = 0): ScanResult {
  let bytes: Buffer;
  try {
    const fd = openSync(path, "r");
    try {
      const buf = Buffer.allocUnsafe(Math.max(0, fstatSync(fd).size - from));
      bytes = buf.subarray(0, readFully(fd, buf, from));
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return { badLines: 0, tornTail: false, end: 0 };
    throw new ImportError("CHECKPOINT_INVALID", `checkpoint ${path} cannot be read (${code}): check its permissions or pass --checkpoint`);
  }
  // A line is whole with its newline: what follows the last one is torn (cut by the next run).
  const whole = bytes.lastIndexOf(0x0a) + 1;
  const text = bytes.toString("utf8", 0, whole);
  const tornTail = whole < bytes.length;
  let badLines = 0;
  let start = 0;
  while (start < text.length) {
    const end = text.indexOf("\n", start);
    const line = text.slice(start, end);
    start = end + 1;
    if (line === "") continue;
    try {
      const r = JSON.parse(line) as JournalRecord;
      if (r && typeof r === "object" && typeof r.t === "string") onRecord(r);
      else badLines++;
    } catch {
      badLines++;
    }
  }
  return { badLines, tornTail, end: from + whole };
}

/** Read every record (for `status`, which looks at every scope). */
export function readJournal(path: string): ReadResult {
  const records: JournalRecord[] = [];
  const scan = scanJournal(path, (r) => records.push(r));
  return { records, ...scan };
}

/**
 * The append-only journal: one JSON line per outcome, fsynced before we go on,
 * so a SIGKILL at any instant leaves at most one torn last line.
 */
export class Journal {
  private fd: number | null;
  /** Set by the first failed write or sync: nothing more is written after it. */
  private broken: ImportError | null = null;

  private constructor(readonly path: string, fd: number) {
    this.fd = fd;
  }

  /** The write failure that stopped this journal, if any. */
  get failure(): ImportError | null {
    return this.broken;
  }

  private fail(error: unknown): ImportError {
    if (this.broken) return this.broken;
    const e = error as NodeJS.ErrnoException;
    const why = e.code === "ENOSPC" ? "no space left on the device" : e.code === "EDQUOT" ? "disk quota exceeded" : (e.message ?? String(error));
    this.broken = new ImportError(
      "CHECKPOINT_WRITE",
      `cannot write the checkpoint ${this.path} (${e.code ?? "error"}: ${why}): free some space or set paths.checkpoint elsewhere, then run again; what was recorded is kept`,
      { cause: error },
    );
    return this.broken;
  }

  private write(record: JournalRecord): void {
    if (this.broken) throw this.broken;
    if (this.fd === null) throw new Error("journal is closed");
    try {
      writeSync(this.fd, JSON.stringify(record) + "\n");
    } catch (error) {
      throw this.fail(error);
    }
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
      readFully(fd, tail, size - tail.length);
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
    this.write(record);
    try {
      fdatasyncSync(this.fd!);
    } catch (error) {
      throw this.fail(error);
    }
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
    try {
      this.write(record);
    } catch (error) {
      return Promise.reject(error);
    }
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
    if (this.broken) return Promise.reject(this.broken);
    const fd = this.fd;
    if (fd === null) return Promise.reject(new Error("journal is closed"));
    this.syncing = new Promise<void>((resolve, reject) => {
      fdatasync(fd, (error) => {
        this.syncing = null;
        const waiting = this.queued;
        this.queued = null;
        if (waiting) this.startSync().then(waiting.resolve, waiting.reject);
        if (error) reject(this.fail(error));
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
