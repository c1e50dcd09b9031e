import { unlink } from "node:fs/promises";
import pLimit from "p-limit";
import { ImportError, messageOf } from "../errors.js";
import { stopsRun } from "../failure/policy.js";
import type { Journal } from "../journal/journal.js";
import type { ItemRecord } from "../journal/records.js";
import type { Plan, Update } from "../plan/plan.js";
import type { Emit } from "../progress/events.js";
import { uploadFilename, type RefServerClient } from "../refserver/client.js";
import type { RetryPolicy } from "../retry/policy.js";
import type { Sleep } from "../util/time.js";
import type { ZoteroSource } from "../zotero/types.js";
import { downloadAttachment } from "./download.js";
import { sendMetadata } from "./pipeline.js";

export interface UpdateOptions {
  updates: Update[];
  source: ZoteroSource;
  client: RefServerClient;
  journal: Journal;
  scope: string;
  runId: string;
  cacheDir: string;
  useCache: boolean;
  batchSize: number;
  retry: RetryPolicy;
  sleep: Sleep;
  emit: Emit;
  stop: AbortSignal;
  hardStop: AbortSignal;
}

export interface UpdateResult {
  /** Papers whose metadata the server now has as Zotero does. */
  updated: string[];
  /** Papers whose PDF the server replaced (same doc_id). */
  replaced: string[];
  /** Papers whose PDF changed in Zotero while the server cannot take a replacement (reported once per change). */
  staleNow: { key: string; title: string }[];
  /** Papers whose update failed (left for the next run; the paper stays on the server). */
  failed: { key: string; title: string; message: string }[];
  /** The server answered "document not found": lost (verify --repair re-imports). */
  lost: string[];
  interrupted: number;
  fatal: ImportError | null;
}

/**
 * Bring papers already on the server in step with Zotero: a replaced PDF through
 * PUT …/pdf (refserver-lite; the doc_id stays), then the metadata through the metadata
 * endpoint. Never uploads a paper twice; a server without PUT …/pdf gets the change reported
 * once. Each outcome is journaled as a "done" line that updates what the checkpoint knows.
 */
export async function runUpdates(o: UpdateOptions): Promise<UpdateResult> {
  const result: UpdateResult = { updated: [], replaced: [], staleNow: [], failed: [], lost: [], interrupted: 0, fatal: null };
  const slots = pLimit(Math.max(1, o.batchSize));
  const stopNew = new AbortController();
  const record = (u: Update, fields: Partial<ItemRecord>): Promise<void> =>
    o.journal.appendDurable({ t: "item", ts: new Date().toISOString(), run: o.runId, scope: o.scope, key: u.item.key, version: u.item.version, title: u.item.title.slice(0, 200), status: "done", docId: u.docId, ...fields });

  const one = async (u: Update): Promise<void> => {
    if (o.stop.aborted || stopNew.signal.aborted) {
      result.interrupted++;
      return;
    }
    const onRetry = (what: string) => (info: { error: ImportError; attempt: number; delayMs: number }): void =>
      o.emit({ type: "retry", key: u.item.key, what, attempt: info.attempt, delayMs: info.delayMs, code: info.error.code, message: info.error.message });
    try {
      if (u.pdf && u.candidate) {
        const att = u.candidate.attachment;
        const file = await downloadAttachment({ source: o.source, attachment: att, cacheDir: o.cacheDir, useCache: o.useCache, retry: o.retry, sleep: o.sleep, signal: o.hardStop, stop: o.stop, onRetry: onRetry("download") });
        if (o.stop.aborted) throw new ImportError("INTERRUPTED", "stopped before the replacement");
        const put = await o.client.replacePdf(u.docId, u.meta, file.path, uploadFilename(att.filename ?? att.title, att.key), o.hardStop, onRetry("PDF replacement"));
        await unlink(file.path).catch(() => undefined);
        if (put.kind === "missing-doc") {
          result.lost.push(u.item.key);
          return;
        }
        if (put.kind === "unsupported") {
          // Reported once per change: the md5 is remembered until Zotero's changes again.
          await record(u, { stalePdf: file.md5 });
          result.staleNow.push({ key: u.item.key, title: u.item.title });
          o.emit({ type: "log", level: "warn", message: `${u.item.key} "${u.item.title.slice(0, 60)}": PDF changed in Zotero, the server keeps the older file (it cannot replace PDFs)` });
        } else {
          await record(u, { att: att.key, md5: file.md5, stalePdf: null, bytes: file.size });
          result.replaced.push(u.item.key);
          o.emit({ type: "log", level: "info", message: `replaced the PDF of ${u.item.key} "${u.item.title.slice(0, 60)}"` });
        }
      }
      if (u.metadata) {
        if (o.stop.aborted) throw new ImportError("INTERRUPTED", "stopped before the metadata update");
        const sent = await sendMetadata(o, u.candidate ?? u, u.docId, u.meta, o.hardStop, onRetry("metadata"));
        if (sent.missingDoc) {
          // Against a server that cannot list its papers, this 404 is the one sign of a lost paper.
          result.lost.push(u.item.key);
          return;
        }
        await record(u, { ...(sent.meta ? { meta: sent.meta } : {}), ...(sent.metaPending !== undefined ? { metaPending: sent.metaPending } : {}) });
        if (sent.metaPending) result.failed.push({ key: u.item.key, title: u.item.title, message: "metadata pending" });
        else result.updated.push(u.item.key);
      }
    } catch (raw) {
      const error = raw instanceof ImportError ? raw : new ImportError("NETWORK", messageOf(raw), { cause: raw });
      if (error.code === "INTERRUPTED" || o.hardStop.aborted) {
        result.interrupted++;
        return;
      }
      if (error.code === "CHECKPOINT_WRITE" || stopsRun(error)) {
        result.fatal ??= error;
        stopNew.abort();
        return;
      }
      // The paper stays on the server as it was; the next run compares and tries again.
      result.failed.push({ key: u.item.key, title: u.item.title, message: error.message });
      o.emit({ type: "log", level: "warn", message: `${u.item.key}: update failed (${error.message}); the next run tries again` });
    }
  };
  await Promise.all(o.updates.map((u) => slots(() => one(u))));
  return result;
}

/** Journal what the plan found about papers gone from Zotero (and back again), so `status` can tell. */
export function recordGone(journal: Journal, plan: Pick<Plan, "gone" | "restored">, state: { items: Map<string, { gone?: "trash" | "deleted" | null | undefined; version: number; docId?: string | null | undefined }> }, scope: string, runId: string): void {
  const ts = new Date().toISOString();
  for (const g of plan.gone) {
    const s = state.items.get(g.key);
    if (s?.gone === g.where) continue;
    journal.append({ t: "item", ts, run: runId, scope, key: g.key, version: s?.version ?? 0, status: "done", gone: g.where });
  }
  for (const key of plan.restored) {
    const s = state.items.get(key);
    journal.append({ t: "item", ts, run: runId, scope, key, version: s?.version ?? 0, status: "done", gone: null });
  }
}

export interface PruneResult {
  removed: string[];
  /** The server has no DELETE route (the original RefServerLite): nothing removed. */
  unsupported: boolean;
  failed: { key: string; message: string }[];
}

/**
 * --prune: remove papers gone from Zotero from a server that can (refserver-lite's
 * DELETE /api/v1/document/{doc_id}). Journaled as "removed": a paper restored in Zotero later
 * is imported again.
 */
export async function runPrune(gone: Plan["gone"], client: RefServerClient, journal: Journal, scope: string, runId: string, signal: AbortSignal, emit: Emit): Promise<PruneResult> {
  const result: PruneResult = { removed: [], unsupported: false, failed: [] };
  for (const g of gone) {
    if (signal.aborted || result.unsupported) break;
    if (g.docId === null) {
      result.failed.push({ key: g.key, message: "the server's doc_id is unknown" });
      continue;
    }
    try {
      const outcome = await client.deleteDocument(g.docId, g.key, signal);
      if (outcome.kind === "unsupported") {
        result.unsupported = true;
        emit({ type: "log", level: "warn", message: `the RefServer cannot remove papers (${outcome.status}): --prune needs refserver-lite; nothing was removed` });
        break;
      }
      journal.append({ t: "item", ts: new Date().toISOString(), run: runId, scope, key: g.key, version: 0, title: g.title.slice(0, 200), status: "removed", docId: g.docId });
      result.removed.push(g.key);
      emit({ type: "log", level: "info", message: `removed ${g.key} "${g.title.slice(0, 60)}" from the server (${g.where === "trash" ? "in Zotero's trash" : "deleted in Zotero"})` });
    } catch (error) {
      if (error instanceof ImportError && (error.code === "INTERRUPTED" || stopsRun(error) || error.code === "CHECKPOINT_WRITE")) throw error;
      result.failed.push({ key: g.key, message: messageOf(error) });
    }
  }
  return result;
}
