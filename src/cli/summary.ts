import type { Plan } from "../plan/plan.js";
import { skipReasonText, type SkipReason } from "../plan/select.js";
import type { PipelineResult } from "../transfer/pipeline.js";
import { creatorName } from "../zotero/types.js";
import { formatBytes, truncate } from "../progress/format.js";

export interface RunSummary {
  imported: number;
  alreadyPresent: number;
  skipped: Partial<Record<SkipReason, number>>;
  failed: { key: string; title: string; code: string; message: string; permanent: boolean }[];
  interrupted: number;
  deferredByLimit: number;
  bytes: number;
  retries: number;
}

export function summarise(plan: Plan, result: PipelineResult | null): RunSummary {
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
  };
  for (const r of result?.results ?? []) {
    summary.bytes += r.bytes ?? 0;
    if (r.outcome === "imported") summary.imported++;
    else if (r.outcome === "already") summary.alreadyPresent++;
    else if (r.outcome === "skipped") skipped.file_missing = (skipped.file_missing ?? 0) + 1;
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
  if (result && plan.toImport > result.results.length) summary.interrupted += plan.toImport - result.results.length - summary.interrupted;
  return summary;
}

export function formatSummary(s: RunSummary): string {
  const skippedTotal = Object.values(s.skipped).reduce((a, b) => a + (b ?? 0), 0);
  const reasons = Object.entries(s.skipped)
    .map(([reason, n]) => `${skipReasonText[reason as SkipReason]}: ${n}`)
    .join("; ");
  const lines = [
    `Imported ${s.imported}, already on the server ${s.alreadyPresent}, skipped ${skippedTotal}${skippedTotal ? ` (${reasons})` : ""}, failed ${s.failed.length}.`,
  ];
  if (s.bytes > 0 || s.retries > 0) lines.push(`Uploaded ${formatBytes(s.bytes)}; ${s.retries} retr${s.retries === 1 ? "y" : "ies"} along the way.`);
  if (s.deferredByLimit > 0) lines.push(`${s.deferredByLimit} more papers wait for the next run (--limit).`);
  if (s.interrupted > 0) lines.push(`${s.interrupted} not finished (interrupted): the next run picks them up.`);
  for (const f of s.failed.slice(0, 20)) lines.push(`  failed ${f.key} "${truncate(f.title, 50)}": ${f.message}`);
  if (s.failed.length > 20) lines.push(`  … and ${s.failed.length - 20} more (see the report)`);
  return lines.join("\n");
}

export interface PreviewRow {
  key: string;
  title: string;
  authors: string;
  year: number | null;
  pdf: string | null;
  size: number | null;
  action: "import" | "already done" | "skip" | "later (--limit)";
  reason?: string;
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
      ...(a.kind === "done" ? { reason: a.via === "journal" ? "in checkpoint" : "on server" } : {}),
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
    });
  }
  return rows;
}

export function formatPreview(rows: PreviewRow[], width: number, showLater = false): string {
  const later = rows.filter((r) => r.action === "later (--limit)").length;
  const shown = showLater ? rows : rows.filter((r) => r.action !== "later (--limit)");
  const hasSize = shown.some((r) => r.size !== null);
  const titleWidth = Math.max(20, Math.min(60, width - 100));
  const header = ["ACTION", "KEY", "YEAR", "TITLE", "AUTHORS", "PDF", ...(hasSize ? ["SIZE"] : []), "NOTE"];
  const table = shown.map((r) => [
    r.action === "already done" ? "done" : r.action === "later (--limit)" ? "later" : r.action,
    r.key,
    r.year === null ? "" : String(r.year),
    truncate(r.title || "(untitled)", titleWidth),
    truncate(r.authors, 28),
    truncate(r.pdf ?? "", 30),
    ...(hasSize ? [r.size === null ? "" : formatBytes(r.size)] : []),
    r.reason ?? (r.action === "later (--limit)" ? "beyond --limit" : ""),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const fmt = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  const lines = [fmt(header), ...table.map(fmt)];
  if (!showLater && later > 0) lines.push(`… and ${later} more to import in later runs (beyond --limit; --verbose lists them)`);
  return lines.join("\n");
}
