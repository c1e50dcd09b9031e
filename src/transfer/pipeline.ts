import { setMaxListeners } from "node:events";
import { unlink } from "node:fs/promises";
import pLimit from "p-limit";
import { ImportError, messageOf } from "../errors.js";
import { codePolicy, stopsRun } from "../failure/policy.js";
import type { Journal } from "../journal/journal.js";
import type { ItemRecord } from "../journal/records.js";
import { metadataDigest, metadataFor as paperMetadata } from "../plan/metadata.js";
import { pdfSignature, type Candidate } from "../plan/select.js";
import type { Emit } from "../progress/events.js";
import { uploadFilename, type RefServerClient, type UploadMetadata } from "../refserver/client.js";
import type { RetryPolicy } from "../retry/policy.js";
import type { Sleep } from "../util/time.js";
import { ZOTERO_MAX_CONCURRENT } from "../zotero/web-api.js";
import type { Attachment, ZoteroSource } from "../zotero/types.js";
import { downloadAttachment } from "./download.js";

export interface PipelineOptions {
  /** In order; taken from the head while --limit has room. */
  candidates: Candidate[];
  /** Import at most this many papers; an item skipped or failed leaves its slot to the next. */
  limit: number | null;
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
  /** The first SIGINT/SIGTERM: start nothing new, retry nothing; requests in flight finish. */
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
  /** Imported, but the metadata call failed: sent by the next run. */
  metaPending?: boolean;
}

export type StoppedBy = "signal" | "server-unavailable" | "auth" | "checkpoint";

export interface PipelineResult {
  results: ItemResult[];
  /** Candidates never started: left by --limit, or by a stop. */
  notStarted: Candidate[];
  /** Why the run stopped early, if it did. */
  stoppedBy: StoppedBy | null;
  fatal: ImportError | null;
  retries: number;
}

/** The metadata we send for a candidate (see plan/metadata.ts). */
export function metadataFor(candidate: Candidate, libraryId: string, attachment: Attachment = candidate.attachment): UploadMetadata {
  return paperMetadata(candidate.item, libraryId, attachment);
}

/** What the checkpoint keeps of a metadata call: the digest sent, or that it is pending. */
export interface MetadataSent {
  meta?: string;
  metaPending?: boolean;
  /** The server answered "document not found": the paper is no longer there. */
  missingDoc?: boolean;
}

/**
 * Send a paper's metadata after its upload (not after a fresh upload to a server that took it
 * all with the upload: RefServerClient.uploadCarriesAll). A server without the endpoint (or a paper the
 * server answered without a doc_id) gets the digest recorded all the same, so it is not asked
 * again every run; a failure after the retries leaves the paper done with "metadata pending".
 * Never throws: after a stop, or a failure of any kind, the paper is "metadata pending".
 */
export async function sendMetadata(o: Pick<PipelineOptions, "client" | "emit">, c: Pick<Candidate, "item">, docId: string | null, meta: UploadMetadata, signal: AbortSignal, onRetry: (info: { error: ImportError; attempt: number; delayMs: number }) => void, freshUpload = false): Promise<MetadataSent> {
  const digest = metadataDigest(meta);
  if (docId === null) return { meta: digest, metaPending: false };
  // The upload that just created the paper carried everything: no call (one request and one
  // server write less per paper).
  if (freshUpload && o.client.uploadCarriesAll(meta)) return { meta: digest, metaPending: false };
  try {
    const outcome = await o.client.updateMetadata(docId, meta, signal, ({ error, attempt, delayMs }) => onRetry({ error, attempt, delayMs }));
    if (outcome.kind === "missing-doc") return { metaPending: true, missingDoc: true };
    if (outcome.kind === "unsupported") warnOnce(o, "metadata", `the RefServer has no metadata endpoint (${outcome.status}): journal, DOI and abstract are not sent`);
    return { meta: digest, metaPending: false };
  } catch (error) {
    // A field the server refuses as too long (refserver-lite takes 64 KiB a field; a Zotero
    // abstract can be longer) would leave the paper "metadata pending" on every run: send the
    // rest without it, once, and say so. The digest is Zotero's, so the next run sends nothing.
    const tooLong = error instanceof ImportError && error.status === 422 ? tooLongFieldsOf(error.message) : [];
    if (tooLong.length > 0 && tooLong.every((f) => DROPPABLE_FIELDS.has(f)) && !signal.aborted) {
      try {
        const without: UploadMetadata = { ...meta, ...Object.fromEntries(tooLong.map((f) => [f, null])) };
        const outcome = await o.client.updateMetadata(docId, without, signal, ({ error: e, attempt, delayMs }) => onRetry({ error: e, attempt, delayMs }));
        if (outcome.kind === "missing-doc") return { metaPending: true, missingDoc: true };
        o.emit({ type: "log", level: "warn", message: `${c.item.key}: the server refuses its ${tooLong.join(" and ")} as longer than its field limit: sent without ${tooLong.length === 1 ? "it" : "them"}` });
        return { meta: digest, metaPending: false };
      } catch (retryError) {
        error = retryError;
      }
    }
    // The paper is on the server whatever happens here: it is recorded done, metadata pending.
    const stopped = error instanceof ImportError && error.code === "INTERRUPTED";
    if (!stopped && !signal.aborted) o.emit({ type: "log", level: "warn", message: `${c.item.key}: imported, metadata pending (${messageOf(error)}); the next run sends it` });
    return { metaPending: true };
  }
}

/** Metadata a paper can do without (title and authors cannot). */
const DROPPABLE_FIELDS: ReadonlySet<string> = new Set(["abstract", "journal", "doi"]);

/** Pure: the fields a FastAPI-style 422 names as `string_too_long` ("body.abstract: String should have at most …"). */
export function tooLongFieldsOf(message: string): string[] {
  return [...message.matchAll(/body\.([a-z_]+): String should have at most/g)].map((m) => m[1] ?? "").filter(Boolean);
}

const warned = new WeakMap<object, Set<string>>();
function warnOnce(o: Pick<PipelineOptions, "client" | "emit">, what: string, message: string): void {
  const seen = warned.get(o.client) ?? new Set<string>();
  warned.set(o.client, seen);
  if (seen.has(what)) return;
  seen.add(what);
  o.emit({ type: "log", level: "warn", message });
}

function stoppedByOf(error: ImportError): StoppedBy {
  if (error.code === "CHECKPOINT_WRITE") return "checkpoint";
  if (error.code === "REFSERVER_AUTH" || error.code === "ZOTERO_AUTH") return "auth";
  return "server-unavailable";
}

/**
 * The transfer pipeline: for each candidate, journal "started" → download (the item's next
 * PDF when Zotero has no file for one) → verify → upload → journal the outcome.
 * batch_size uploads in flight; delay_seconds between batches; --limit papers at most.
 * Never throws: every item settles, then the result says why the run stopped, if it did.
 */
export async function runPipeline(o: PipelineOptions): Promise<PipelineResult> {
  const results: ItemResult[] = [];
  let stoppedBy: StoppedBy | null = null;
  let fatal: ImportError | null = null;
  let retries = 0;
  // runStop: start nothing new. fatalStop: also abort what is in flight (auth lost, server gone).
  const runStop = new AbortController();
  const fatalStop = new AbortController();
  const stopAll = (why: StoppedBy, error: ImportError | null): void => {
    if (stoppedBy === null) {
      stoppedBy = why;
      fatal = error;
    }
    runStop.abort();
    if (why !== "signal" && why !== "checkpoint") fatalStop.abort();
  };
  const onStop = (): void => stopAll("signal", null);
  if (o.stop.aborted) onStop();
  o.stop.addEventListener("abort", onStop, { once: true });
  const hard = AbortSignal.any([o.hardStop, fatalStop.signal]);
  // Every request in flight listens on these: hundreds of papers are not a leak.
  setMaxListeners(0, hard, runStop.signal);
  const downloads = pLimit(o.maxZoteroConcurrent ?? ZOTERO_MAX_CONCURRENT);

  const record = (c: Candidate, att: Attachment, fields: Partial<ItemRecord> & Pick<ItemRecord, "status">): Promise<void> =>
    o.journal.appendDurable({
      t: "item",
      ts: new Date().toISOString(),
      run: o.runId,
      scope: o.scope,
      key: c.item.key,
      att: att.key,
      version: c.item.version,
      title: c.item.title.slice(0, 200),
      ...fields,
    });

  /** No new request once stopped: what was not sent is left for the next run. */
  const checkStopped = (): void => {
    if (o.stop.aborted || runStop.signal.aborted) throw new ImportError("INTERRUPTED", "stopped before this step");
  };

  const processOne = async (c: Candidate): Promise<ItemResult> => {
    const title = c.item.title || c.attachment.title || c.item.key;
    const onRetry = (what: string) => (info: { error: ImportError; attempt: number; delayMs: number }): void => {
      retries++;
      o.emit({ type: "retry", key: c.item.key, what, attempt: info.attempt, delayMs: info.delayMs, code: info.error.code, message: info.error.message });
    };
    try {
      await record(c, c.attachment, { status: "started" });
      o.emit({ type: "item-start", key: c.item.key, title });
      let missing: ImportError | null = null;
      for (const att of c.attachments) {
        checkStopped();
        let file;
        try {
          file = await downloads(() => {
            checkStopped();
            return downloadAttachment({
              source: o.source,
              attachment: att,
              cacheDir: o.cacheDir,
              useCache: o.useCache,
              retry: o.retry,
              sleep: o.sleep,
              signal: hard,
              stop: runStop.signal,
              onBytes: (bytes) => o.emit({ type: "bytes", key: c.item.key, bytes }),
              onRetry: onRetry("download"),
            });
          });
        } catch (error) {
          // Zotero's own "no file" for this PDF: the item's next PDF may have one.
          if (error instanceof ImportError && error.code === "ZOTERO_FILE_MISSING") {
            missing = error;
            o.emit({ type: "log", level: "debug", message: `${c.item.key}: ${att.key} has no file (${error.message}); trying the next PDF` });
            continue;
          }
          throw error;
        }
        checkStopped();
        const meta = metadataFor(c, o.libraryId, att);
        const outcome = await o.client.upload(meta, file.path, uploadFilename(att.filename ?? att.title, att.key), hard, onRetry("upload"));
        const via = outcome.kind === "imported" ? "uploaded" : "already";
        // The fields the upload has no room for (journal, DOI, abstract) go through the
        // metadata endpoint. Its failure never loses the paper: "metadata pending", sent next run.
        const sent = await sendMetadata(o, c, outcome.docId, meta, hard, onRetry("metadata"), outcome.kind === "imported");
        await record(c, att, { status: "done", via, docId: outcome.docId, bytes: file.size, md5: file.md5, ...(sent.meta ? { meta: sent.meta } : {}), ...(sent.metaPending ? { metaPending: true } : {}) });
        await unlink(file.path).catch(() => undefined);
        o.emit({ type: "item-done", key: c.item.key, title, outcome: outcome.kind, docId: outcome.docId, bytes: file.size });
        return { candidate: c, outcome: outcome.kind, docId: outcome.docId, bytes: file.size, ...(sent.metaPending ? { metaPending: true } : {}) };
      }
      // No PDF of the item has a file in Zotero: remembered with the attachments' versions,
      // so it is not asked for again until one of them changes.
      const detail = missing?.message ?? "PDF not synced to Zotero storage";
      await record(c, c.attachment, { status: "skipped", code: "ZOTERO_FILE_MISSING", error: detail, permanent: true, atts: pdfSignature(c.item) });
      o.emit({ type: "item-skipped", key: c.item.key, title, reason: "not_synced", detail });
      return { candidate: c, outcome: "skipped", code: "ZOTERO_FILE_MISSING", message: detail };
    } catch (raw) {
      const error = raw instanceof ImportError ? raw : new ImportError("NETWORK", messageOf(raw), { cause: raw });
      if (error.code === "CHECKPOINT_WRITE") {
        stopAll("checkpoint", error);
        return { candidate: c, outcome: "interrupted" };
      }
      // Stopped (a signal, or the run ending for another paper's reason): left as "started"
      // in the journal, so the next run picks it up (a 409 closes it if the upload landed).
      if (error.code === "INTERRUPTED" || o.hardStop.aborted || (hard.aborted && !stopsRun(error))) {
        return { candidate: c, outcome: "interrupted" };
      }
      const permanent = codePolicy(error.code).permanent;
      o.emit({ type: "item-failed", key: c.item.key, title, code: error.code, message: error.message, permanent });
      if (stopsRun(error)) stopAll(stoppedByOf(error), error);
      try {
        await record(c, c.attachment, { status: "failed", code: error.code, error: error.message, permanent });
      } catch (journalError) {
        if (journalError instanceof ImportError && journalError.code === "CHECKPOINT_WRITE") stopAll("checkpoint", journalError);
      }
      return { candidate: c, outcome: "failed", code: error.code, message: error.message, permanent };
    }
  };

  // The queue: candidates in order, taken while --limit has room. A slot is held from the
  // start of an item to its end; only an import keeps it.
  let next = 0;
  let imported = 0;
  let holding = 0;
  const room = (): boolean => o.limit === null || imported + holding < o.limit;
  const take = (): Candidate | null => {
    if (runStop.signal.aborted || next >= o.candidates.length || !room()) return null;
    holding++;
    return o.candidates[next++]!;
  };
  const settle = (r: ItemResult): void => {
    holding--;
    if (r.outcome === "imported") imported++;
    results.push(r);
  };

  if (o.delayMs > 0) {
    // A batch is batch_size items at once, then the pause; failures leave room in the next batch.
    for (;;) {
      const batch: Candidate[] = [];
      for (let c = take(); c; c = batch.length < o.batchSize ? take() : null) batch.push(c);
      if (batch.length === 0) break;
      (await Promise.all(batch.map(processOne))).forEach(settle);
      if (runStop.signal.aborted || next >= o.candidates.length || !room()) break;
      o.emit({ type: "pause", delayMs: o.delayMs, reason: "delay_seconds between batches" });
      await o.sleep(o.delayMs, runStop.signal).catch(() => undefined);
    }
  } else {
    // Uploads in flight are bounded by the client's pacer (batch_size at most); up to
    // `prefetch` more items download meanwhile, so no upload slot waits for a download.
    const workers = o.batchSize + (o.prefetch ?? Math.min(ZOTERO_MAX_CONCURRENT, o.batchSize));
    const worker = async (): Promise<void> => {
      for (let c = take(); c; c = take()) settle(await processOne(c));
    };
    await Promise.all(Array.from({ length: workers }, worker));
  }
  o.stop.removeEventListener("abort", onStop);
  return { results, notStarted: o.candidates.slice(next), stoppedBy, fatal, retries };
}
