import { loadConfig } from "../../config/load.js";
import type { Config } from "../../config/schema.js";
import { messageOf } from "../../errors.js";
import { exitCodeFor } from "../../failure/policy.js";
import { Journal } from "../../journal/journal.js";
import { acquireLock } from "../../journal/lock.js";
import { scopeOf } from "../../journal/records.js";
import { loadState } from "../../journal/snapshot.js";
import type { JournalState } from "../../journal/state.js";
import { metadataFor } from "../../plan/metadata.js";
import type { Candidate } from "../../plan/select.js";
import { truncate } from "../../progress/format.js";
import { LineRenderer } from "../../progress/lines.js";
import type { KnownLink } from "../../refserver/client.js";
import { redact } from "../../util/redact.js";
import { ExitCode } from "../exit-codes.js";
import { checkpointPath, connect, goneStage, Held, listStage, runImport, type CliIo, type ImportFlags } from "./import.js";

export interface VerifyFlags {
  config?: string | undefined;
  checkpoint?: string | undefined;
  collection?: string[] | undefined;
  deep?: boolean | undefined;
  repair?: boolean | undefined;
  json?: boolean | undefined;
  quiet?: boolean | undefined;
}

/** One disagreement between Zotero, the checkpoint and the server. */
export interface Finding {
  kind: "lost" | "not-in-zotero" | "metadata" | "pdf-changed" | "pdf-differs";
  key: string;
  title: string;
  docId: string | null;
  detail: string;
}

export interface VerifyReport {
  library: { type: string; id: string };
  server: string;
  papers: number;
  findings: Finding[];
  /** Checks that could not be made, and why. */
  cannot: string[];
}

const KIND_TEXT: Record<Finding["kind"], string> = {
  lost: "lost (done here, not on the server)",
  "not-in-zotero": "on the server, not in Zotero",
  metadata: "metadata differs",
  "pdf-changed": "PDF changed in Zotero",
  "pdf-differs": "stored PDF differs (--deep)",
};

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Pure: the metadata fields where the server's link and Zotero disagree. */
function metadataDrift(link: KnownLink, c: Candidate, libraryId: string): string[] {
  if (link.title === undefined) return [];
  const m = metadataFor(c.item, libraryId, c.attachment);
  const out: string[] = [];
  if ((link.title ?? "") !== m.title) out.push(`title "${truncate(link.title ?? "", 40)}" ≠ "${truncate(m.title, 40)}"`);
  if (!sameList(link.authors ?? [], m.authors)) out.push("authors");
  if ((link.year ?? null) !== m.year) out.push(`year ${link.year ?? "—"} ≠ ${m.year ?? "—"}`);
  if ((link.doi ?? null) !== m.doi) out.push(`DOI ${link.doi ?? "—"} ≠ ${m.doi ?? "—"}`);
  return out;
}

/**
 * `import-from-zotero verify`: reconcile Zotero, the checkpoint and the server for the library.
 * Changes nothing; exit 0 when all agree, 1 when anything differs. With --repair, the lost
 * papers are imported again and drifted metadata and changed PDFs are sent (an import run over
 * the whole library), then it verifies again.
 */
export async function runVerify(flags: VerifyFlags, io: CliIo): Promise<number> {
  const emitter = new LineRenderer(io.stderr, flags.quiet ? "quiet" : "normal");
  const emit = (e: Parameters<LineRenderer["onEvent"]>[0]): void => emitter.onEvent(e);
  let report: VerifyReport;
  let config: Config;
  let journalPath: string;
  try {
    ({ config } = loadConfig(flags.config, {}, io.env, io.cwd));
    journalPath = checkpointPath(config, flags as ImportFlags, io);
    report = await verifyOnce(config, flags, io, journalPath, emit);
    if (flags.repair && report.findings.length > 0) {
      await markForRepair(report, config, journalPath);
      const code = await runImport({ config: flags.config, checkpoint: flags.checkpoint, collection: flags.collection, since: 0, quiet: true, json: false }, { ...io, stdout: io.stderr });
      if (code !== ExitCode.Ok && code !== ExitCode.SomeFailed) return code;
      report = await verifyOnce(config, flags, io, journalPath, emit);
    }
  } catch (error) {
    io.stderr.write(`${redact(`import-from-zotero verify: ${messageOf(error)}`)}\n`);
    return exitCodeFor(error);
  }
  io.stdout.write(`${redact(flags.json ? JSON.stringify(report, null, 2) : formatVerify(report, Boolean(flags.repair)))}\n`);
  return report.findings.length === 0 ? ExitCode.Ok : ExitCode.SomeFailed;
}

async function verifyOnce(config: Config, flags: VerifyFlags, io: CliIo, journalPath: string, emit: (e: Parameters<LineRenderer["onEvent"]>[0]) => void): Promise<VerifyReport> {
  const library = { type: config.zotero.library_type, id: config.zotero.library_id };
  const scope = scopeOf(config.refserver.api_url, library.type, library.id);
  const state: JournalState = loadState(journalPath, scope).state;
  const held = new Held();
  try {
    const { source, client } = connect(config, io, emit, held);
    // The whole library, whatever the last sync point: verify trusts no earlier run.
    const listed = await listStage(config, { collection: flags.collection, since: undefined }, io, source, { ...state, syncVersions: new Map() }, emit);
    await client.login(io.hardStop);
    const known = await client.knownKeys(library.id, io.hardStop);
    const { gone } = await goneStage(source, state, io, emit);
    const findings: Finding[] = [];
    const cannot: string[] = [];
    const byKey = new Map(listed.candidates.map((c) => [c.item.key, c]));
    const inZotero = new Set(listed.listing.items.map((i) => i.key));

    if (known === null) {
      cannot.push("the server cannot list the papers it holds (no GET /api/v1/zotero/links, as on the original RefServerLite): lost papers, papers Zotero no longer has and metadata drift cannot be checked");
    }
    for (const s of state.items.values()) {
      if (s.status !== "done") continue;
      const c = byKey.get(s.key);
      if (known && !known.has(s.key)) findings.push({ kind: "lost", key: s.key, title: s.title ?? "", docId: s.docId ?? null, detail: "the checkpoint says done; the server does not have it" });
      if (c && ((s.md5 && c.attachment.md5 && s.md5 !== c.attachment.md5) || (s.att && s.att !== c.attachment.key && !c.attachments.some((a) => a.key === s.att)))) {
        findings.push({ kind: "pdf-changed", key: s.key, title: c.item.title, docId: s.docId ?? null, detail: s.stalePdf === c.attachment.md5 ? "the server cannot replace PDFs" : "the server has the PDF sent earlier" });
      }
    }
    if (known) {
      for (const link of known.values()) {
        const c = byKey.get(link.key);
        if (!c) {
          if (!inZotero.has(link.key) || gone?.trash.has(link.key) || gone?.deleted.has(link.key)) {
            findings.push({ kind: "not-in-zotero", key: link.key, title: link.title ?? "", docId: link.docId, detail: gone?.trash.has(link.key) ? "in Zotero's trash" : "not in the Zotero library (or outside this selection)" });
          }
          continue;
        }
        const drift = metadataDrift(link, c, library.id);
        if (drift.length > 0) findings.push({ kind: "metadata", key: link.key, title: c.item.title, docId: link.docId, detail: drift.join("; ") });
      }
      if (known.size > 0 && [...known.values()].every((l) => l.title === undefined)) cannot.push("the server's links carry no metadata: metadata drift cannot be checked");
    }
    if (flags.deep) {
      if (known === null) cannot.push("--deep needs the server's list of papers");
      else {
        for (const link of known.values()) {
          const c = byKey.get(link.key);
          if (!c || !link.docId || !c.attachment.md5) continue;
          const md5 = await client.storedMd5(link.docId, io.hardStop);
          if (md5 !== null && md5 !== c.attachment.md5 && !findings.some((f) => f.key === link.key && f.kind === "pdf-changed")) {
            findings.push({ kind: "pdf-differs", key: link.key, title: c.item.title, docId: link.docId, detail: `server ${md5} ≠ Zotero ${c.attachment.md5}` });
          }
        }
      }
    }
    const order = Object.keys(KIND_TEXT);
    findings.sort((a, b) => order.indexOf(a.kind) - order.indexOf(b.kind) || a.key.localeCompare(b.key));
    return { library, server: config.refserver.api_url, papers: listed.candidates.length, findings, cannot };
  } finally {
    await held.close();
  }
}

/**
 * --repair, step one: tell the checkpoint what verify found, so the import run that follows
 * does the rest: lost papers become importable again; drifted metadata becomes "pending";
 * a stored PDF that differs forgets its md5 (the run then replaces it).
 */
async function markForRepair(report: VerifyReport, config: Config, journalPath: string): Promise<void> {
  const scope = scopeOf(config.refserver.api_url, config.zotero.library_type, config.zotero.library_id);
  const release = acquireLock(`${journalPath}.lock`);
  const journal = Journal.open(journalPath);
  try {
    const ts = new Date().toISOString();
    for (const f of report.findings) {
      const base = { t: "item", ts, run: "verify-repair", scope, key: f.key, version: 0 } as const;
      if (f.kind === "lost") journal.append({ ...base, status: "removed", error: "lost on the server (verify)" });
      else if (f.kind === "metadata") journal.append({ ...base, status: "done", metaPending: true });
      else if (f.kind === "pdf-differs") journal.append({ ...base, status: "done", md5: "0".repeat(32), stalePdf: null });
    }
  } finally {
    journal.close();
    release();
  }
}

function formatVerify(r: VerifyReport, repaired: boolean): string {
  const lines: string[] = [];
  if (r.findings.length > 0) {
    const w = Math.max(...r.findings.map((f) => KIND_TEXT[f.kind].length));
    for (const f of r.findings) lines.push(`${KIND_TEXT[f.kind].padEnd(w)}  ${f.key}  ${truncate(f.title || "(untitled)", 50)}  ${f.detail}`);
    lines.push("");
  }
  for (const c of r.cannot) lines.push(`cannot check: ${c}`);
  const counts = new Map<Finding["kind"], number>();
  for (const kind of Object.keys(KIND_TEXT) as Finding["kind"][]) {
    const n = r.findings.filter((f) => f.kind === kind).length;
    if (n > 0) counts.set(kind, n);
  }
  lines.push(
    r.findings.length === 0
      ? `verify: Zotero, the checkpoint and ${r.server} agree (${r.papers} papers${r.cannot.length ? `; ${r.cannot.length} check${r.cannot.length === 1 ? "" : "s"} not possible` : ""}).`
      : `verify: ${r.findings.length} difference${r.findings.length === 1 ? "" : "s"} (${[...counts].map(([k, n]) => `${n} ${KIND_TEXT[k]}`).join(", ")})${repaired ? " remain after the repair" : ": import-from-zotero verify --repair fixes what the server allows"}.`,
  );
  return lines.join("\n");
}

