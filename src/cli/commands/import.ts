import { randomUUID } from "node:crypto";
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Agent } from "undici";
import { loadConfig } from "../../config/load.js";
import { cacheRootOf, preparePaths, reportDirOf as configuredReportDir } from "../../config/paths-check.js";
import type { Config } from "../../config/schema.js";
import { ImportError, messageOf } from "../../errors.js";
import { exitCodeFor } from "../../failure/policy.js";
import { makeAgent } from "../../http/agent.js";
import { Journal } from "../../journal/journal.js";
import { acquireLock } from "../../journal/lock.js";
import { scopeOf } from "../../journal/records.js";
import { loadState, saveState } from "../../journal/snapshot.js";
import type { JournalState } from "../../journal/state.js";
import { makePlan, type Plan } from "../../plan/plan.js";
import { resolveCollections, selectItems, skipReasonText, type Candidate, type Skipped } from "../../plan/select.js";
import type { Emit } from "../../progress/events.js";
import { LineRenderer } from "../../progress/lines.js";
import { SilentRenderer, type Renderer, type Verbosity } from "../../progress/renderer.js";
import { RefServerClient, type KnownLink } from "../../refserver/client.js";
import { Pacer } from "../../retry/pacer.js";
import type { RetryPolicy } from "../../retry/policy.js";
import { runPipeline, type PipelineResult } from "../../transfer/pipeline.js";
import { recordGone, runPrune, runUpdates, type UpdateResult } from "../../transfer/update.js";
import { stateDir } from "../../util/paths.js";
import { redact } from "../../util/redact.js";
import { realSleep, type Sleep } from "../../util/time.js";
import { currentPlatform } from "../../zotero/data-dir.js";
import { makeSource, type ConfiguredSource } from "../../zotero/factory.js";
import type { GoneKeys, Listing } from "../../zotero/types.js";
import { ZOTERO_MAX_CONCURRENT } from "../../zotero/web-api.js";
import { ExitCode } from "../exit-codes.js";
import { formatSummary, previewRows, summarise, type RunSummary } from "../summary.js";

export interface ImportFlags {
  config?: string | undefined;
  limit?: number | undefined;
  dryRun?: boolean | undefined;
  collection?: string[] | undefined;
  since?: number | undefined;
  batchSize?: number | undefined;
  delay?: number | undefined;
  checkpoint?: string | undefined;
  retryFailed?: boolean | undefined;
  cache?: boolean | undefined;
  json?: boolean | undefined;
  quiet?: boolean | undefined;
  verbose?: boolean | undefined;
  zoteroDir?: string | undefined;
  prune?: boolean | undefined;
}

export interface CliIo {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Aborted on the first SIGINT/SIGTERM: start nothing new, retry nothing. */
  stop: AbortSignal;
  /** Aborted on a second signal: abandon in-flight work too. */
  hardStop: AbortSignal;
  sleep?: Sleep;
}

function retryPolicyOf(config: Config): RetryPolicy {
  return {
    retries: config.retry.retries,
    minDelayMs: Math.round(config.retry.min_delay_seconds * 1000),
    maxDelayMs: Math.round(config.retry.max_delay_seconds * 1000),
  };
}

export function checkpointPath(config: Config, flags: ImportFlags, io: Pick<CliIo, "env" | "cwd">): string {
  if (flags.checkpoint) return resolve(io.cwd, flags.checkpoint);
  if (config.paths.checkpoint) return resolve(io.cwd, config.paths.checkpoint);
  return join(stateDir(io.env), "checkpoint.ndjson");
}

/** Where a run's report goes: paths.report_dir, else the state directory's (also for a run whose config failed). */
function reportDirsOf(config: Config | null, io: Pick<CliIo, "env" | "cwd">): string[] {
  const fallback = join(stateDir(io.env), "reports");
  const dirs = config ? [configuredReportDir(config, io), fallback] : [fallback];
  return [...new Set(dirs)];
}

/** The selection a saved library version belongs to: a version is only reused for the same filter. */
function filterSignature(config: Config, collections: string[]): string {
  const o = config.import_options;
  return JSON.stringify({ c: [...collections].sort(), t: [...o.item_types].sort(), x: [...o.exclude_tags].sort() });
}

function fsyncWrite(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  const fd = openSync(tmp, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** What a run knows about itself as it goes: everything the report and the JSON say. */
interface RunRecord {
  runId: string;
  dryRun: boolean;
  config: Config | null;
  scope: string | null;
  library: { type: string; id: string } | null;
  checkpoint: string | null;
  since: number | null;
  libraryVersion: number | null;
  summary: RunSummary | null;
  stoppedBy: string | null;
  fatal: string | null;
  warnings: string[];
  pacing: { ceiling: number; adaptive: boolean; finalLimit: number; decreases: number; peakInFlight: number } | null;
}

/** Resources a run holds, released on every exit path. */
export class Held {
  release: () => void = () => undefined;
  journal: Journal | null = null;
  source: ConfiguredSource | null = null;
  agents: Agent[] = [];

  async close(): Promise<void> {
    // The journal is closed before the lock is released: nothing is written after it.
    try {
      this.journal?.close();
    } finally {
      this.release();
    }
    await Promise.allSettled([Promise.resolve().then(() => this.source?.close?.()), ...this.agents.map((a) => a.close())]);
  }
}

/**
 * The default command, as stages: config → list → server state → plan → (preview | transfer)
 * → report. Every run ends with a report and, with --json, one JSON document on stdout,
 * including a run that ends in 2, 3, 75 or 130. Returns the exit code; never throws.
 */
export async function runImport(flags: ImportFlags, io: CliIo): Promise<number> {
  const verbosity: Verbosity = flags.quiet ? "quiet" : flags.verbose ? "verbose" : "normal";
  const isTty = Boolean(io.stderr.isTTY) && !io.env.CI;
  // --json: only the JSON on stdout. Bars only for a real run at a terminal; lines otherwise.
  // The bars (cli-progress) are loaded only for a terminal: a cron or piped run does without them.
  const renderer: Renderer = flags.json ? new SilentRenderer() : isTty && !flags.dryRun ? new (await import("../../progress/bars.js")).BarRenderer(io.stderr, verbosity) : new LineRenderer(io.stderr, verbosity);
  const run: RunRecord = {
    runId: randomUUID(),
    dryRun: Boolean(flags.dryRun),
    config: null,
    scope: null,
    library: null,
    checkpoint: null,
    since: null,
    libraryVersion: null,
    summary: null,
    stoppedBy: null,
    fatal: null,
    warnings: [],
    pacing: null,
  };
  const emit: Emit = (e) => {
    if (e.type === "log" && e.level === "warn") run.warnings.push(e.message);
    renderer.onEvent(e);
  };
  const held = new Held();
  let exit: number;
  let preview: string | null = null;
  try {
    const outcome = await stages(flags, io, run, emit, held);
    exit = outcome.exit;
    preview = outcome.preview;
  } catch (error) {
    exit = exitCodeFor(error);
    run.fatal = messageOf(error);
    if (error instanceof ImportError && error.code === "INTERRUPTED") run.stoppedBy = "signal";
  } finally {
    renderer.finish();
    await held.close();
  }
  return finish(flags, io, run, exit, preview, renderer instanceof LineRenderer || !io.stdout.isTTY);
}

/** Report, then the one JSON document or the summary lines. */
function finish(flags: ImportFlags, io: CliIo, run: RunRecord, exit: number, preview: string | null, stamp: boolean): number {
  let reportPath: string | null = null;
  if (!run.dryRun) {
    try {
      reportPath = writeReport(run.config, io, {
        runId: run.runId,
        scope: run.scope,
        library: run.library,
        since: run.since,
        libraryVersion: run.libraryVersion,
        exitCode: exit,
        summary: run.summary,
        checkpoint: run.checkpoint,
        stoppedBy: run.stoppedBy,
        fatal: run.fatal,
        warnings: run.warnings,
        pacing: run.pacing,
      });
    } catch (error) {
      io.stderr.write(`${redact(`import-from-zotero: warning: no report written (${messageOf(error)})`)}\n`);
    }
  }
  const ts = (): string => (stamp ? `${new Date().toISOString().replace(/\.\d{3}Z$/, "Z")} ` : "");
  if (flags.json) {
    const doc = run.dryRun && preview !== null ? JSON.parse(preview) as object : { exitCode: exit, ...(run.fatal ? { error: run.fatal } : {}), report: reportPath, checkpoint: run.checkpoint, ...(run.summary ?? {}) };
    if (run.dryRun && preview === null) Object.assign(doc, { dryRun: true });
    io.stdout.write(`${redact(JSON.stringify(doc, null, 2))}\n`);
    if (run.fatal) io.stderr.write(`${redact(`import-from-zotero: ${run.fatal}`)}\n`);
    return exit;
  }
  if (preview !== null) io.stdout.write(preview);
  if (run.fatal) io.stderr.write(`${ts()}${redact(`import-from-zotero: ${run.fatal}`)}\n`);
  if (run.summary && !run.dryRun) {
    const lines = redact(formatSummary(run.summary)).split("\n");
    io.stdout.write(lines.map((l) => `${ts()}${l}`).join("\n") + "\n");
  }
  if (reportPath) io.stdout.write(`${ts()}Report: ${reportPath}\n`);
  return exit;
}

async function stages(flags: ImportFlags, io: CliIo, run: RunRecord, emit: Emit, held: Held): Promise<{ exit: number; preview: string | null }> {
  // ---- config: checked before any network contact
  const { config, warnings } = loadConfig(flags.config, { batchSize: flags.batchSize, delaySeconds: flags.delay, zoteroDir: flags.zoteroDir }, io.env, io.cwd);
  run.config = config;
  for (const w of warnings) emit({ type: "log", level: "warn", message: w });
  const sleep = io.sleep ?? realSleep;
  const retry = retryPolicyOf(config);
  const library = { type: config.zotero.library_type, id: config.zotero.library_id } as const;
  run.library = library;
  run.scope = scopeOf(config.refserver.api_url, library.type, library.id);
  const journalPath = checkpointPath(config, flags, io);
  run.checkpoint = journalPath;
  const cacheRoot = cacheRootOf(config, io);

  // A real run holds the lock for its whole life; a dry run writes nothing and takes none.
  // The directories it needs are made and checked first: a full or read-only disk is found
  // now, not after the whole import.
  if (!flags.dryRun) {
    preparePaths(config, { env: io.env, cwd: io.cwd, checkpoint: journalPath, checkpointFromFlag: Boolean(flags.checkpoint), cacheDir: cacheRoot });
    held.release = acquireLock(`${journalPath}.lock`);
  }

  // Where each item stands: the snapshot left by the last run, then the records appended since
  // (or every record, line by line, without one). Only the state is kept, not the records.
  const loaded = loadState(journalPath, run.scope);
  if (loaded.badLines > 0) emit({ type: "log", level: "warn", message: `checkpoint ${journalPath}: ignored ${loaded.badLines} unreadable line(s)` });
  const state: JournalState = loaded.state;

  const { source, pacer, client } = connect(config, io, emit, held);

  // ---- what left Zotero since it was imported (trash, deleted), then the listing
  const { gone, relist } = await goneStage(source, state, io, emit);
  const listed = await listStage(config, flags, io, source, state, emit, relist);
  run.since = listed.since;
  run.libraryVersion = listed.listing.libraryVersion;

  // ---- what the server holds (the dry run too: a preview that does not know the server lies)
  await client.login(io.hardStop);
  const known: Map<string, KnownLink> | null = await client.knownKeys(library.id, io.hardStop);
  if (io.stop.aborted) throw new ImportError("INTERRUPTED", "stopped by a signal before any paper was started; the next run starts over from the listing");

  // ---- plan
  const limit = flags.limit ?? null;
  const plan: Plan = makePlan(listed.candidates, listed.skipped, state, known, { limit, retryFailedOnly: Boolean(flags.retryFailed), libraryId: library.id, gone });
  emit({ type: "planned", toImport: plan.toImport, alreadyDone: plan.alreadyDone, skipped: plan.skipped.length, limitedTo: limit });

  if (flags.dryRun) {
    run.summary = summarise(plan, null);
    return { exit: ExitCode.Ok, preview: await previewText(flags, io, plan, listed.listing, listed.since, library, known !== null) };
  }

  // ---- transfer, then the outcome and the journal's closing records
  const transferred = await transferStage({ config, flags, io, run, emit, held, plan, state, source, client, journalPath, cacheRoot, sleep, retry });
  run.pacing = { ceiling: config.import_options.batch_size, adaptive: config.import_options.adaptive_pacing, finalLimit: pacer.limit, decreases: pacer.decreases, peakInFlight: pacer.peakInFlight };
  const outcome = outcomeOf(plan, transferred, limit);
  run.summary = outcome.summary;
  run.stoppedBy = outcome.stoppedBy;
  if (outcome.fatal) run.fatal = outcome.fatal.message;
  closeRun(transferred.journal, run, listed, transferred, outcome.exit, Boolean(flags.retryFailed));
  if (!transferred.journal.failure) saveState(journalPath, loaded);
  return { exit: outcome.exit, preview: null };
}

/** What the transfer stage did: new papers, updates of papers already there, removals. */
export interface Transferred {
  journal: Journal;
  result: PipelineResult;
  updates: UpdateResult | null;
  pruned: { removed: string[]; failed: { key: string; message: string }[] } | null;
}

interface TransferContext {
  config: Config;
  flags: ImportFlags;
  io: CliIo;
  run: RunRecord;
  emit: Emit;
  held: Held;
  plan: Plan;
  state: JournalState;
  source: ConfiguredSource;
  client: RefServerClient;
  journalPath: string;
  cacheRoot: string;
  sleep: Sleep;
  retry: RetryPolicy;
}

/**
 * The transfer stage: journal what the plan already knows (gone keys, papers the server holds),
 * upload the papers to import, then update papers Zotero changed, then --prune.
 */
async function transferStage(c: TransferContext): Promise<Transferred> {
  const { config, flags, io, run, emit, plan, source, client } = c;
  const scope = run.scope ?? "";
  const library = { type: config.zotero.library_type, id: config.zotero.library_id };
  const journal = Journal.open(c.journalPath);
  c.held.journal = journal;
  const now = (): string => new Date().toISOString();
  journal.append({ t: "run", ts: now(), run: run.runId, scope, event: "start" });
  recordGone(journal, plan, c.state, scope, run.runId);
  // Keys the server reported as present are done: remember that.
  for (const a of plan.actions) {
    if (a.kind === "done" && a.via === "server") {
      journal.append({ t: "item", ts: now(), run: run.runId, scope, key: a.candidate.item.key, att: a.candidate.attachment.key, version: a.candidate.item.version, status: "done", via: "already", docId: a.docId, md5: a.candidate.attachment.md5, ...(a.meta ? { meta: a.meta } : {}) });
    }
  }
  const cacheDir = join(c.cacheRoot, `${library.type}-${library.id}`);
  const useCache = flags.cache !== false;
  const queue: Candidate[] = plan.actions.flatMap((a) => (a.kind === "import" || a.kind === "later" ? [a.candidate] : []));
  const common = { source, client, journal, scope, runId: run.runId, cacheDir, useCache, batchSize: config.import_options.batch_size, retry: c.retry, sleep: c.sleep, emit, stop: io.stop, hardStop: io.hardStop };
  const result = await runPipeline({ ...common, candidates: queue, limit: flags.limit ?? null, libraryId: library.id, delayMs: Math.round(config.import_options.delay_seconds * 1000) });
  // Papers already on the server that Zotero changed since: metadata, replaced PDFs.
  const updates = result.stoppedBy === null && plan.updates.length > 0 ? await runUpdates({ ...common, updates: plan.updates }) : null;
  // --prune: papers gone from Zotero leave the server (never by default).
  const pruned = flags.prune && result.stoppedBy === null && !updates?.fatal && plan.gone.length > 0 && !io.stop.aborted ? await runPrune(plan.gone, client, journal, scope, run.runId, io.hardStop, emit) : null;
  return { journal, result, updates, pruned };
}

/** Pure: the run's summary and exit code from the plan and what the transfer stage did. */
export function outcomeOf(plan: Plan, t: Pick<Transferred, "result" | "updates" | "pruned">, limit: number | null): { summary: RunSummary; exit: number; fatal: ImportError | null; stoppedBy: string | null } {
  const { result, updates, pruned } = t;
  const summary = summarise(plan, result, limit);
  for (const r of result.results) if (r.metaPending) summary.metadataPending++;
  if (updates) {
    summary.updated = new Set([...updates.updated, ...updates.replaced]).size;
    summary.replaced = updates.replaced.length;
    summary.pdfChanged = updates.staleNow;
    summary.updateFailed = updates.failed;
    summary.interrupted += updates.interrupted;
    for (const key of updates.lost) summary.lost.push({ key, title: plan.updates.find((u) => u.item.key === key)?.item.title ?? "" });
  }
  if (pruned) {
    summary.removed = pruned.removed.length;
    for (const f of pruned.failed) summary.updateFailed.push({ key: f.key, title: "", message: `not removed: ${f.message}` });
  }
  const fatal = result.fatal ?? updates?.fatal ?? null;
  let exit: number = ExitCode.Ok;
  if (result.stoppedBy === "signal" || (updates?.interrupted ?? 0) > 0) exit = ExitCode.Interrupted;
  else if (fatal) exit = exitCodeFor(fatal);
  else if (summary.failed.length > 0 || summary.updateFailed.length > 0 || summary.metadataPending > 0 || summary.lost.length > 0) exit = ExitCode.SomeFailed;
  return { summary, exit, fatal, stoppedBy: result.stoppedBy ?? (updates?.fatal ? "checkpoint" : null) };
}

/**
 * The journal's closing records: a sync point after a complete pass over this selection (the
 * next run only asks Zotero for changes; an update that did not go through keeps the sync point
 * where it was, so it is seen again), then the run's end. Nothing once the journal has failed.
 */
function closeRun(journal: Journal, run: RunRecord, listed: Listed, t: Transferred, exit: number, retryFailed: boolean): void {
  if (journal.failure) return;
  const now = new Date().toISOString();
  const scope = run.scope ?? "";
  const { result, updates } = t;
  const updatesComplete = !updates || (updates.failed.length === 0 && updates.interrupted === 0 && updates.fatal === null);
  const complete = result.stoppedBy === null && result.notStarted.length === 0 && !retryFailed && updatesComplete;
  if (complete) journal.append({ t: "sync", ts: now, run: run.runId, scope, filter: listed.filter, version: listed.listing.libraryVersion });
  journal.append({ t: "run", ts: now, run: run.runId, scope, event: "end", exitCode: exit });
}

export interface Connected {
  source: ConfiguredSource;
  pacer: Pacer;
  client: RefServerClient;
}

/** The Zotero source and the RefServer client of a run, with their agents held for closing. */
export function connect(config: Config, io: CliIo, emit: Emit, held: Held): Connected {
  const sleep = io.sleep ?? realSleep;
  const retry = retryPolicyOf(config);
  const zoteroAgent = makeAgent({ timeoutSeconds: 60, connections: ZOTERO_MAX_CONCURRENT });
  const serverAgent = makeAgent({ timeoutSeconds: config.refserver.timeout_seconds, connections: Math.max(4, config.import_options.batch_size) });
  held.agents.push(zoteroAgent, serverAgent);
  const onRetry = ({ what, error, attempt, delayMs }: { what: string; error: ImportError; attempt: number; delayMs: number }): void =>
    emit({ type: "retry", key: null, what, attempt, delayMs, code: error.code, message: error.message });
  const source = makeSource(config, {
    dispatcher: zoteroAgent,
    retry,
    sleep,
    stop: io.stop,
    onRetry,
    onWarning: (message) => emit({ type: "log", level: "warn", message }),
    onWait: ({ reason, delayMs }) => emit({ type: "log", level: "info", message: `${reason}: waiting ${Math.round(delayMs / 1000)} s` }),
    // The run's own environment (HOME, APPDATA) finds Zotero's profile, not whatever process hosts main().
    platform: currentPlatform(io.env),
  });
  held.source = source;
  const pacer = new Pacer({
    ceiling: config.import_options.batch_size,
    adaptive: config.import_options.adaptive_pacing,
    giveUpAfterMs: Math.round(config.retry.give_up_after_seconds * 1000),
    sleep,
    onChange: ({ limit: inFlight, reason }) => emit({ type: "log", level: "debug", message: `pacing: ${inFlight} upload${inFlight === 1 ? "" : "s"} in flight (${reason})` }),
  });
  const client = new RefServerClient({
    pacer,
    baseUrl: config.refserver.api_url,
    username: config.refserver.username,
    password: config.refserver.password,
    dispatcher: serverAgent,
    retry,
    sleep,
    stop: io.stop,
    onRetry,
  });
  return { source, pacer, client };
}

/**
 * Which imported papers (and uploaded attachments) are in Zotero's trash or deleted there; null
 * when the source cannot tell. `relist`: the papers whose uploaded PDF went away, so the listing
 * brings them with their attachments now (another PDF may be the one).
 */
export async function goneStage(source: ConfiguredSource, state: JournalState, io: CliIo, emit: Emit): Promise<{ gone: GoneKeys | null; relist: string[] }> {
  const done = [...state.items.values()].filter((s) => s.status === "done");
  if (!source.goneKeys || done.length === 0) return { gone: null, relist: [] };
  try {
    const gone = await source.goneKeys([...done.map((s) => s.key), ...done.flatMap((s) => (s.att && s.att !== s.key ? [s.att] : []))], io.hardStop);
    const isGone = (k: string): boolean => gone.trash.has(k) || gone.deleted.has(k);
    const relist = done.filter((s) => s.att && s.att !== s.key && isGone(s.att) && !isGone(s.key)).map((s) => s.key);
    return { gone, relist };
  } catch (error) {
    if (error instanceof ImportError && (error.code === "INTERRUPTED" || error.code === "ZOTERO_AUTH")) throw error;
    emit({ type: "log", level: "warn", message: `cannot tell which imported papers left Zotero (${messageOf(error)}); the next run asks again` });
    return { gone: null, relist: [] };
  }
}

interface Listed {
  listing: Listing;
  candidates: Candidate[];
  skipped: Skipped[];
  since: number | null;
  filter: string;
}

/** Collections → since → the listing → importable candidates and skips. */
export async function listStage(config: Config, flags: ImportFlags, io: CliIo, source: ConfiguredSource, state: JournalState, emit: Emit, relist: readonly string[] = []): Promise<Listed> {
  const collectionsWanted = flags.collection && flags.collection.length > 0 ? flags.collection : config.import_options.collections;
  let collectionKeys: string[] = [];
  let collectionRequests = 0;
  if (collectionsWanted.length > 0) {
    const before = source.requests;
    const collections = await source.listCollections(io.hardStop);
    collectionRequests = source.requests - before;
    const resolved = resolveCollections(collectionsWanted, collections);
    if (resolved.unknown.length > 0) {
      throw new ImportError("USAGE", `collection ${resolved.unknown.map((u) => `'${u}'`).join(", ")} not found in the Zotero library: give a collection key or its exact name (known: ${collections.slice(0, 10).map((c) => c.name).join(", ")}${collections.length > 10 ? ", …" : ""})`);
    }
    collectionKeys = resolved.keys;
  }
  const filter = filterSignature(config, collectionKeys);
  // Items not in a final state (failed, interrupted, metadata pending, removed from the server
  // and maybe restored in Zotero, their uploaded PDF gone) and their attachments are listed
  // again whatever the sync point says, so their PDFs come along in incremental listings.
  const also = new Set<string>(relist);
  for (const s of state.items.values()) {
    if (s.status !== "failed" && s.status !== "started" && s.status !== "removed" && !(s.status === "done" && s.metaPending)) continue;
    also.add(s.key);
    if (s.att) also.add(s.att);
  }
  const alsoKeys = [...also];
  // Fetching thousands of unfinished keys 50 at a time costs more than listing everything.
  const saved = alsoKeys.length > 2_000 ? undefined : state.syncVersions.get(filter);
  const since = flags.since ?? saved;

  const listing = await source.list({ since, alsoKeys, withChildren: relist, signal: io.hardStop });
  emit({ type: "listed", items: listing.items.length, requests: listing.requests + collectionRequests, libraryVersion: listing.libraryVersion, since: since ?? null });
  for (const bad of listing.invalid) emit({ type: "log", level: "warn", message: `Zotero item ${bad.key} ignored: ${bad.reason}` });

  const { candidates, skipped } = selectItems(listing.items, {
    itemTypes: config.import_options.item_types,
    excludeTags: config.import_options.exclude_tags,
    collectionKeys,
    linkedFiles: source.readsLinkedFiles ?? false,
  });
  return { listing, candidates, skipped, since: since ?? null, filter };
}

/** The dry run's table or JSON: what a real run started now would do. */
async function previewText(flags: ImportFlags, io: CliIo, plan: Plan, listing: Listing, since: number | null, library: { type: string; id: string }, serverKnown: boolean): Promise<string> {
  // The preview's table (string-width) is loaded for a dry run only.
  const { formatPreview, formatPreviewTotals } = await import("../preview.js");
  const rows = previewRows(plan);
  const importSizes = plan.actions.flatMap((a) => (a.kind === "import" ? [a.candidate.attachment.size] : []));
  const knownBytes = importSizes.reduce<number>((sum, b) => sum + (b ?? 0), 0);
  const sizesUnknown = importSizes.filter((b) => b === null).length;
  const skippedByReason: Record<string, number> = {};
  for (const s of plan.skipped) skippedByReason[skipReasonText[s.reason]] = (skippedByReason[skipReasonText[s.reason]] ?? 0) + 1;
  if (flags.json) {
    const counts = {
      import: plan.toImport,
      alreadyDone: plan.alreadyDone,
      skipped: plan.skipped.length,
      skippedByReason,
      laterByLimit: plan.deferred,
      bytes: sizesUnknown === 0 ? knownBytes : null,
      bytesKnown: knownBytes,
      sizesUnknown,
      serverKnown,
    };
    const sync = {
      update: plan.updates.filter((u) => u.metadata).length,
      replacePdf: plan.updates.filter((u) => u.pdf).length,
      gone: plan.gone.map((g) => ({ key: g.key, title: g.title, where: g.where, docId: g.docId })),
      wouldRemove: flags.prune ? plan.gone.map((g) => g.key) : [],
      lost: plan.lost.map((l) => ({ key: l.key, title: l.title })),
    };
    return JSON.stringify({ dryRun: true, library, libraryVersion: listing.libraryVersion, since, counts: { ...counts, ...sync, gone: sync.gone.length, lost: sync.lost.length }, gone: sync.gone, lost: sync.lost, wouldRemove: sync.wouldRemove, items: rows });
  }
  const width = io.stdout.columns;
  const table = formatPreview(rows, { width, showLater: Boolean(flags.verbose) });
  const totals = formatPreviewTotals({ import: plan.toImport, alreadyDone: plan.alreadyDone, skippedByReason, laterByLimit: plan.deferred, importSizes, serverKnown }, { width });
  const extra: string[] = [];
  const metadata = plan.updates.filter((u) => u.metadata).length;
  const pdfs = plan.updates.filter((u) => u.pdf).length;
  if (metadata > 0 || pdfs > 0) extra.push(`Would update ${metadata} paper${metadata === 1 ? "" : "s"} already on the server${pdfs > 0 ? ` and replace ${pdfs} PDF${pdfs === 1 ? "" : "s"} changed in Zotero` : ""}.`);
  if (plan.gone.length > 0) {
    const trash = plan.gone.filter((g) => g.where === "trash").length;
    extra.push(`Gone from Zotero: ${plan.gone.length} (${trash} in the trash, ${plan.gone.length - trash} deleted)${flags.prune ? "; --prune would remove them from the server:" : "; they stay on the server (--prune removes them)."}`);
    if (flags.prune) for (const g of plan.gone) extra.push(`  remove ${g.key} "${g.title.slice(0, 60)}" (${g.where === "trash" ? "in the trash" : "deleted"})`);
  }
  if (plan.lost.length > 0) extra.push(`${plan.lost.length} paper${plan.lost.length === 1 ? "" : "s"} imported earlier ${plan.lost.length === 1 ? "is" : "are"} no longer on the server: run \`import-from-zotero verify --repair\`.`);
  return `${table}\n\n${totals}\n${extra.map((l) => `${l}\n`).join("")}`;
}

interface ReportBody {
  runId: string;
  scope: string | null;
  library: { type: string; id: string } | null;
  since: number | null;
  libraryVersion: number | null;
  exitCode: number;
  summary: RunSummary | null;
  checkpoint: string | null;
  stoppedBy: string | null;
  fatal: string | null;
  warnings: string[];
  pacing: RunRecord["pacing"];
}

/** One JSON report per run (a run that failed to start included), next to the checkpoint's state directory. */
function writeReport(config: Config | null, io: Pick<CliIo, "env" | "cwd">, body: ReportBody): string {
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const text = redact(JSON.stringify({ finishedAt: new Date().toISOString(), ...body }, null, 2)) + "\n";
  let failure: unknown;
  // paths.report_dir, else (when that is what failed) the default one.
  for (const dir of reportDirsOf(config, io)) {
    try {
      mkdirSync(dir, { recursive: true });
      const path = join(dir, `import-${stamp}-${body.runId.slice(0, 8)}.json`);
      fsyncWrite(path, text);
      return path;
    } catch (error) {
      failure = error;
    }
  }
  throw failure;
}
