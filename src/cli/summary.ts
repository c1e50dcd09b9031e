import type { Plan } from "../plan/plan.js";
import { skipReasonText, type SkipReason } from "../plan/select.js";
import type { PipelineResult } from "../transfer/pipeline.js";
import { creatorName } from "../zotero/types.js";
import { formatBytes, truncate } from "../progress/format.js";
import type { PreviewRow } from "./preview.js";

export interface RunSummary {
  imported: number;
  alreadyPresent: number;
  skipped: Partial<Record<SkipReason, number>>;
  failed: { key: string; title: string; code: string; message: string; permanent: boolean }[];
  interrupted: number;
  deferredByLimit: number;
  bytes: number;
  retries: number;
  /** Papers already on the server brought in step with Zotero (metadata, PDF or both). */
  updated: number;
  /** Papers whose PDF the server replaced (same doc_id). */
  replaced: number;
  /** PDFs changed in Zotero that the server cannot take (reported once per change). */
  pdfChanged: { key: string; title: string }[];
  /** Imported, but the metadata call is still to be made (the next run does). */
  metadataPending: number;
  /** Updates that failed (the paper stays as it was; the next run tries again). */
  updateFailed: { key: string; title: string; message: string }[];
  /** Done in the checkpoint but gone from Zotero since. */
  gone: { trash: number; deleted: number; items: { key: string; title: string; where: "trash" | "deleted" }[] };
  /** Removed from the server by --prune. */
  removed: number;
  /** Done in the checkpoint but no longer on the server. */
  lost: { key: string; title: string }[];
}

/** Pure: the plan and what the pipeline did → the run's counts. */
export function summarise(plan: Plan, result: PipelineResult | null, limit: number | null = null): RunSummary {
  const skipped: Partial<Record<SkipReason, number>> = {};
  for (const s of plan.skipped) skipped[s.reason] = (skipped[s.reason] ?? 0) + 1;
  const summary: RunSummary = {
    imported: 0,
    alreadyPresent: plan.alreadyDone,
    skipped,
    failed: [],
    interrupted: 0,
    deferredByLimit: plan.deferred,
    bytes: 0,
    retries: result?.retries ?? 0,
    updated: 0,
    replaced: 0,
    pdfChanged: [],
    metadataPending: 0,
    updateFailed: [],
    gone: { trash: plan.gone.filter((g) => g.where === "trash").length, deleted: plan.gone.filter((g) => g.where === "deleted").length, items: plan.gone.map((g) => ({ key: g.key, title: g.title, where: g.where })) },
    removed: 0,
    lost: plan.lost.map((l) => ({ key: l.key, title: l.title })),
  };
  for (const r of result?.results ?? []) {
    summary.bytes += r.bytes ?? 0;
    if (r.outcome === "imported") summary.imported++;
    else if (r.outcome === "already") summary.alreadyPresent++;
    else if (r.outcome === "skipped") skipped.not_synced = (skipped.not_synced ?? 0) + 1;
    else if (r.outcome === "interrupted") summary.interrupted++;
    else {
      summary.failed.push({
        key: r.candidate.item.key,
        title: r.candidate.item.title,
        code: r.code ?? "UNKNOWN",
        message: r.message ?? "",
        permanent: r.permanent ?? false,
      });
    }
  }
  if (result) {
    // Never started: beyond --limit, or cut off by a stop while the limit still had room.
    const room = limit === null ? Infinity : Math.max(0, limit - summary.imported - summary.interrupted);
    const cut = result.stoppedBy === null ? 0 : Math.min(result.notStarted.length, room);
    summary.interrupted += cut;
    summary.deferredByLimit = result.notStarted.length - cut;
  }
  return summary;
}

export function formatSummary(s: RunSummary): string {
  const skippedTotal = Object.values(s.skipped).reduce((a, b) => a + (b ?? 0), 0);
  const reasons = Object.entries(s.skipped)
    .map(([reason, n]) => `${skipReasonText[reason as SkipReason]}: ${n}`)
    .join("; ");
  const lines = [
    `Imported ${s.imported}, ${s.updated > 0 ? `updated ${s.updated}${s.replaced > 0 ? ` (${s.replaced} PDF${s.replaced === 1 ? "" : "s"} replaced)` : ""}, ` : ""}already on the server ${s.alreadyPresent}, skipped ${skippedTotal}${skippedTotal ? ` (${reasons})` : ""}, failed ${s.failed.length}.`,
  ];
  if (s.metadataPending > 0) lines.push(`${s.metadataPending} imported with metadata pending: the next run sends it.`);
  for (const p of s.pdfChanged.slice(0, 20)) lines.push(`  PDF changed in Zotero, the server keeps the older file: ${p.key} "${truncate(p.title, 50)}"`);
  for (const f of s.updateFailed.slice(0, 20)) lines.push(`  update of ${f.key} "${truncate(f.title, 50)}" failed: ${f.message} (the next run tries again)`);
  const goneTotal = s.gone.trash + s.gone.deleted;
  if (goneTotal > 0) {
    lines.push(`Gone from Zotero: ${goneTotal} (${s.gone.trash} in the trash, ${s.gone.deleted} deleted)${s.removed > 0 ? `; removed from the server: ${s.removed}` : "; still on the server (--prune removes them)"}.`);
  }
  if (s.lost.length > 0) {
    lines.push(`${s.lost.length} paper${s.lost.length === 1 ? "" : "s"} imported earlier ${s.lost.length === 1 ? "is" : "are"} no longer on the server: run \`import-from-zotero verify --repair\`.`);
  }
  if (s.bytes > 0 || s.retries > 0) lines.push(`Uploaded ${formatBytes(s.bytes)}; ${s.retries} retr${s.retries === 1 ? "y" : "ies"} along the way.`);
  if (s.deferredByLimit > 0) lines.push(`${s.deferredByLimit} more papers wait for the next run (--limit).`);
  if (s.interrupted > 0) lines.push(`${s.interrupted} not finished (interrupted): the next run picks them up.`);
  for (const f of s.failed.slice(0, 20)) lines.push(`  failed ${f.key} "${truncate(f.title, 50)}": ${f.message}`);
  if (s.failed.length > 20) lines.push(`  … and ${s.failed.length - 20} more (see the report)`);
  return lines.join("\n");
}

export function previewRows(plan: Plan): PreviewRow[] {
  const rows: PreviewRow[] = [];
  const authorsOf = (names: string[]): string => (names.length > 2 ? `${names.slice(0, 2).join(", ")} et al.` : names.join(", "));
  for (const a of plan.actions) {
    const { item, attachment } = a.candidate;
    rows.push({
      key: item.key,
      title: item.title || attachment.title,
      authors: authorsOf(item.creators.map(creatorName).filter(Boolean)),
      year: item.year,
      pdf: attachment.filename,
      size: attachment.size,
      action: a.kind === "import" ? "import" : a.kind === "done" ? "already done" : "later (--limit)",
      unsynced: a.candidate.unsynced > 0,
      ...(a.kind === "done"
        ? { reason: a.via === "journal" ? "in checkpoint" : "on server" }
        : a.kind === "import" && attachment.hasFile === null
          ? { reason: "file not confirmed in Zotero storage (WebDAV?): asked when imported" }
          : {}),
    });
  }
  for (const s of plan.skipped) {
    rows.push({
      key: s.item.key,
      title: s.item.title,
      authors: authorsOf(s.item.creators.map(creatorName).filter(Boolean)),
      year: s.item.year,
      pdf: s.item.attachments[0]?.filename ?? null,
      size: null,
      action: "skip",
      reason: skipReasonText[s.reason],
      unsynced: s.reason === "not_synced",
    });
  }
  return rows;
}
