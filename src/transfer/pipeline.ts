import { rm } from "node:fs/promises";
import pLimit from "p-limit";
import { ImportError, messageOf } from "../errors.js";
import type { Journal } from "../journal/journal.js";
import type { ItemRecord } from "../journal/records.js";
import type { Candidate } from "../plan/select.js";
import type { Emit } from "../progress/events.js";
import { uploadFilename, type RefServerClient, type UploadMetadata } from "../refserver/client.js";
import type { RetryPolicy } from "../retry/policy.js";
import type { Sleep } from "../util/time.js";
import { creatorName, type ZoteroSource } from "../zotero/types.js";
import { downloadAttachment } from "./download.js";

export interface PipelineOptions {
  candidates: Candidate[];
  source: ZoteroSource;
  client: RefServerClient;
  journal: Journal;
  scope: string;
  runId: string;
  libraryId: string;
  cacheDir: string;
  useCache: boolean;
  batchSize: number;
  delayMs: number;
  retry: RetryPolicy;
  sleep: Sleep;
  emit: Emit;
  /** Stop starting new items (SIGINT/SIGTERM); in-flight ones finish. */
  stop: AbortSignal;
  /** Abort in-flight work too (a second signal). */
  hardStop: AbortSignal;
  /** At most this many Zotero downloads at once (Zotero's politeness limit). */
  maxZoteroConcurrent?: number;
  /** Items that may download ahead of the uploads in flight (default min(4, batchSize)). */
  prefetch?: number;
}

export interface ItemResult {
  candidate: Candidate;
  outcome: "imported" | "already" | "failed" | "skipped" | "interrupted";
  docId?: string | null;
  code?: string;
  message?: string;
  permanent?: boolean;
  bytes?: number;
}

export interface PipelineResult {
  results: ItemResult[];
  /** Why the run stopped early, if it did. */
  stoppedBy: "signal" | "server-unavailable" | "auth" | null;
  fatal: ImportError | null;
  retries: number;
}

/** The metadata we send for a candidate; an empty title falls back to the attachment's. */
export function metadataFor(candidate: Candidate, libraryId: string): UploadMetadata {
  const { item, attachment } = candidate;
  const title = item.title.trim() || attachment.title.trim() || (attachment.filename ?? "").trim() || item.key;
  return {
    title,
    authors: item.creators.filter((c) => c.creatorType === "author" || item.creators.every((x) => x.creatorType !== "author")).map(creatorName).filter((n) => n !== ""),
    year: item.year,
    zoteroKey: item.key,
    libraryId,
    version: item.version,
    collectionKeys: item.collections,
    tags: item.tags,
  };
}

const PERMANENT = new Set(["REFSERVER_REJECTED", "ZOTERO_BAD_DATA", "ZOTERO_FILE_MISSING"]);

/**
 * The transfer pipeline: for each candidate, journal "started" → download → verify →
 * upload → journal the outcome. batch_size items in flight; delay_seconds between batches.
 */
export async function runPipeline(o: PipelineOptions): Promise<PipelineResult> {
  const results: ItemResult[] = [];
  let stoppedBy: PipelineResult["stoppedBy"] = null;
  let fatal: ImportError | null = null;
  let retries = 0;
  // runStop: start nothing new. fatalStop: also abort what is in flight (auth lost, server gone).
  const runStop = new AbortController();
  const fatalStop = new AbortController();
  const stopAll = (why: NonNullable<PipelineResult["stoppedBy"]>, error: ImportError | null): void => {
    if (stoppedBy === null) {
      stoppedBy = why;
      fatal = error;
    }
    runStop.abort();
    if (why !== "signal") fatalStop.abort();
  };
  if (o.stop.aborted) stopAll("signal", null);
  o.stop.addEventListener("abort", () => stopAll("signal", null), { once: true });
  const hard = AbortSignal.any([o.hardStop, fatalStop.signal]);
  const downloads = pLimit(o.maxZoteroConcurrent ?? 4);

  const record = (c: Candidate, fields: Partial<ItemRecord> & Pick<ItemRecord, "status">): Promise<void> =>
    o.journal.appendDurable({
      t: "item",
      ts: new Date().toISOString(),
      run: o.runId,
      scope: o.scope,
      key: c.item.key,
      att: c.attachment.key,
      version: c.item.version,
      title: c.item.title.slice(0, 200),
      ...fields,
    });

  const processOne = async (c: Candidate): Promise<ItemResult> => {
    const title = c.item.title || c.attachment.title || c.item.key;
    await record(c, { status: "started" });
    o.emit({ type: "item-start", key: c.item.key, title });
    const onRetry = (what: string) => (info: { error: ImportError; attempt: number; delayMs: number }): void => {
      retries++;
      o.emit({ type: "retry", key: c.item.key, what, attempt: info.attempt, delayMs: info.delayMs, code: info.error.code, message: info.error.message });
    };
    try {
      const file = await downloads(() =>
        downloadAttachment({
          source: o.source,
          attachment: c.attachment,
          cacheDir: o.cacheDir,
          useCache: o.useCache,
          retry: o.retry,
          sleep: o.sleep,
          signal: hard,
          onBytes: (bytes) => o.emit({ type: "bytes", key: c.item.key, bytes }),
          onRetry: onRetry("download"),
        }),
      );
      const meta = metadataFor(c, o.libraryId);
      const outcome = await o.client.upload(meta, file.path, uploadFilename(c.attachment.filename ?? c.attachment.title, c.attachment.key), hard, onRetry("upload"));
      const via = outcome.kind === "imported" ? "uploaded" : "already";
      await record(c, { status: "done", via, docId: outcome.docId, bytes: file.size });
      await rm(file.path, { force: true });
      o.emit({ type: "item-done", key: c.item.key, title, outcome: outcome.kind, docId: outcome.docId, bytes: file.size });
      return { candidate: c, outcome: outcome.kind, docId: outcome.docId, bytes: file.size };
    } catch (raw) {
      const error = raw instanceof ImportError ? raw : new ImportError("NETWORK", messageOf(raw), { cause: raw });
      if (hard.aborted && (error.code === "INTERRUPTED" || (raw as { name?: string })?.name === "AbortError" || error.retriable)) {
        // Left as "started" in the journal: the next run picks it up (a 409 closes it if it landed).
        return { candidate: c, outcome: "interrupted" };
      }
      if (error.code === "ZOTERO_FILE_MISSING") {
        await record(c, { status: "skipped", code: error.code, error: error.message, permanent: true });
        o.emit({ type: "item-skipped", key: c.item.key, title, reason: "file_missing", detail: error.message });
        return { candidate: c, outcome: "skipped", code: error.code, message: error.message };
      }
      const permanent = PERMANENT.has(error.code);
      await record(c, { status: "failed", code: error.code, error: error.message, permanent });
      o.emit({ type: "item-failed", key: c.item.key, title, code: error.code, message: error.message, permanent });
      if (error.code === "REFSERVER_AUTH" || error.code === "ZOTERO_AUTH") stopAll("auth", error);
      else if (error.connection) stopAll("server-unavailable", error);
      return { candidate: c, outcome: "failed", code: error.code, message: error.message, permanent };
    }
  };

  // Uploads in flight are bounded by the client's pacer (batch_size at most). Without a pause
  // between batches, up to `prefetch` more items download meanwhile, so no upload slot waits
  // for a download; with a pause, a batch is exactly batch_size items.
  const prefetch = o.delayMs > 0 ? 0 : (o.prefetch ?? Math.min(4, o.batchSize));
  const slots = pLimit(o.batchSize + prefetch);
  const batches: Candidate[][] = [];
  if (o.delayMs > 0) {
    for (let i = 0; i < o.candidates.length; i += o.batchSize) batches.push(o.candidates.slice(i, i + o.batchSize));
  } else {
    batches.push(o.candidates);
  }
  for (let b = 0; b < batches.length; b++) {
    if (runStop.signal.aborted) break;
    const batch = batches[b]!;
    const settled = await Promise.all(
      batch.map((c) =>
        slots(async () => {
          if (runStop.signal.aborted) return null;
          return processOne(c);
        }),
      ),
    );
    for (const r of settled) if (r) results.push(r);
    if (b < batches.length - 1 && o.delayMs > 0 && !runStop.signal.aborted) {
      o.emit({ type: "pause", delayMs: o.delayMs, reason: "delay_seconds between batches" });
      await o.sleep(o.delayMs, runStop.signal).catch(() => undefined);
    }
  }
  return { results, stoppedBy, fatal, retries };
}
