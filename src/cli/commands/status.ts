import { existsSync } from "node:fs";
import { loadConfig } from "../../config/load.js";
import { readJournal } from "../../journal/journal.js";
import { countStates, reduceJournal } from "../../journal/state.js";
import type { JournalRecord } from "../../journal/records.js";
import { truncate } from "../../progress/format.js";
import { redact } from "../../util/redact.js";
import { ExitCode } from "../exit-codes.js";
import { checkpointPath, type CliIo, type ImportFlags } from "./import.js";
import { resolve } from "node:path";
import { ImportError } from "../../errors.js";

export interface StatusFlags {
  config?: string | undefined;
  checkpoint?: string | undefined;
  json?: boolean | undefined;
}

/** `import-from-zotero status`: what the checkpoint holds, per server and library. */
export async function runStatus(flags: StatusFlags, io: CliIo): Promise<number> {
  let path: string;
  if (flags.checkpoint) {
    path = resolve(io.cwd, flags.checkpoint);
  } else {
    const { config } = loadConfig(flags.config, {}, io.env, io.cwd);
    path = checkpointPath(config, flags as ImportFlags, io);
  }
  if (!existsSync(path)) {
    if (flags.checkpoint) throw new ImportError("USAGE", `no checkpoint at ${path}: check --checkpoint`);
    io.stdout.write(flags.json ? `${JSON.stringify({ checkpoint: path, scopes: [] })}\n` : `No checkpoint yet at ${path}: nothing has been imported.\n`);
    return ExitCode.Ok;
  }
  const { records, badLines, tornTail } = readJournal(path);
  const scopes = [...new Set(records.map((r: JournalRecord) => r.scope))];
  const out = scopes.map((scope) => {
    const state = reduceJournal(records, scope);
    const counts = countStates(state);
    const failures = [...state.items.values()]
      .filter((s) => s.status === "failed")
      .sort((a, b) => b.ts.localeCompare(a.ts))
      .slice(0, 10)
      .map((s) => ({ key: s.key, title: s.title ?? "", code: s.code ?? "", error: s.error ?? "", permanent: s.permanent ?? false, at: s.ts }));
    const lastRun = [...records].reverse().find((r) => r.scope === scope && r.t === "run");
    const [server, library] = scope.split("|");
    const done = [...state.items.values()].filter((s) => s.status === "done");
    const gone = done.filter((s) => s.gone).map((s) => ({ key: s.key, title: s.title ?? "", where: s.gone! }));
    const pdfChanged = done.filter((s) => s.stalePdf).map((s) => ({ key: s.key, title: s.title ?? "" }));
    const metadataPending = done.filter((s) => s.metaPending).map((s) => ({ key: s.key, title: s.title ?? "" }));
    return { server, library, runs: state.runs, counts, syncedVersions: Object.fromEntries(state.syncVersions), lastRunAt: lastRun?.ts ?? null, lastFailures: failures, gone, pdfChanged, metadataPending };
  });
  if (flags.json) {
    io.stdout.write(`${redact(JSON.stringify({ checkpoint: path, badLines, tornTail, scopes: out }, null, 2))}\n`);
    return ExitCode.Ok;
  }
  const lines = [`Checkpoint: ${path}${badLines ? ` (${badLines} unreadable lines ignored)` : ""}`];
  for (const s of out) {
    lines.push("", `${s.library} → ${s.server}  (${s.runs} run${s.runs === 1 ? "" : "s"}, last ${s.lastRunAt ?? "never"})`);
    lines.push(`  done ${s.counts.done} (uploaded ${s.counts.uploaded}, already there ${s.counts.already}), failed ${s.counts.failed}, unfinished ${s.counts.unfinished}, skipped ${s.counts.skipped}`);
    const versions = Object.values(s.syncedVersions);
    lines.push(
      versions.length > 0
        ? `  next run: changes since library version ${Math.max(...versions)} (the last complete run), plus the unfinished and failed`
        : "  next run: the whole library (no complete run yet)",
    );
    for (const f of s.lastFailures) lines.push(`  failed ${f.key} "${truncate(f.title, 50)}" [${f.code}]: ${truncate(f.error, 100)}`);
    if (s.metadataPending.length > 0) lines.push(`  metadata pending: ${s.metadataPending.length} (the next run sends it)`);
    for (const p of s.pdfChanged) lines.push(`  PDF changed in Zotero, the server keeps the older file: ${p.key} "${truncate(p.title, 50)}"`);
    if (s.gone.length > 0) {
      const trash = s.gone.filter((g) => g.where === "trash").length;
      lines.push(`  gone from Zotero: ${s.gone.length} (${trash} in the trash, ${s.gone.length - trash} deleted), still on the server (import-from-zotero --prune removes them)`);
      for (const g of s.gone.slice(0, 20)) lines.push(`    ${g.key} "${truncate(g.title, 50)}" (${g.where === "trash" ? "in the trash" : "deleted"})`);
    }
    if (s.counts.removed > 0) lines.push(`  removed from the server (pruned): ${s.counts.removed}`);
  }
  io.stdout.write(`${redact(lines.join("\n"))}\n`);
  return ExitCode.Ok;
}
