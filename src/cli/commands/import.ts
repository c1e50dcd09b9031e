import { randomUUID } from "node:crypto";
import { mkdirSync, renameSync, writeFileSync, openSync, fsyncSync, closeSync } from "node:fs";
import { join, resolve } from "node:path";
import { loadConfig } from "../../config/load.js";
import type { Config } from "../../config/schema.js";
import { ImportError } from "../../errors.js";
import { makeAgent } from "../../http/agent.js";
import { Journal, scanJournal } from "../../journal/journal.js";
import { acquireLock } from "../../journal/lock.js";
import { scopeOf } from "../../journal/records.js";
import { JournalReducer, type JournalState } from "../../journal/state.js";
import { makePlan, type Plan } from "../../plan/plan.js";
import { resolveCollections, selectItems } from "../../plan/select.js";
import { BarRenderer } from "../../progress/bars.js";
import type { Emit } from "../../progress/events.js";
import { LineRenderer } from "../../progress/lines.js";
import { SilentRenderer, type Renderer, type Verbosity } from "../../progress/renderer.js";
import { RefServerClient } from "../../refserver/client.js";
import { Pacer } from "../../retry/pacer.js";
import type { RetryPolicy } from "../../retry/policy.js";
import { runPipeline, type PipelineResult } from "../../transfer/pipeline.js";
import { cacheDir as defaultCacheDir, stateDir } from "../../util/paths.js";
import { redact } from "../../util/redact.js";
import { realSleep, type Sleep } from "../../util/time.js";
import { makeSource } from "../../zotero/factory.js";
import { ExitCode } from "../exit-codes.js";
import { formatPreview, formatSummary, previewRows, summarise, type RunSummary } from "../summary.js";
import { formatBytes } from "../../progress/format.js";

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
}

export interface CliIo {
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** Aborted on the first SIGINT/SIGTERM: start nothing new. */
  stop: AbortSignal;
  /** Aborted on a second signal: abandon in-flight work too. */
  hardStop: AbortSignal;
  sleep?: Sleep;
}

export function retryPolicyOf(config: Config): RetryPolicy {
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

/** The selection a saved library version belongs to: a version is only reused for the same filter. */
function filterSignature(config: Config, collections: string[]): string {
  const o = config.import_options;
  return JSON.stringify({ c: [...collections].sort(), t: [...o.item_types].sort(), x: [...o.exclude_tags].sort() });
}

function fsyncWrite(path: string, text: string): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  const fd = openSync(tmp, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
}

/** The default command: config → list → plan → pipeline → summary. Returns the exit code. */
export async function runImport(flags: ImportFlags, io: CliIo): Promise<number> {
  const verbosity: Verbosity = flags.quiet ? "quiet" : flags.verbose ? "verbose" : "normal";
  const isTty = Boolean(io.stderr.isTTY) && !io.env.CI;
  const { config, warnings } = loadConfig(flags.config, { batchSize: flags.batchSize, delaySeconds: flags.delay, zoteroDir: flags.zoteroDir }, io.env, io.cwd);
  // --json: only the JSON on stdout. Bars only for a real run at a terminal; lines otherwise.
  const renderer: Renderer = flags.json
    ? new SilentRenderer()
    : isTty && !flags.dryRun
      ? new BarRenderer(io.stderr, verbosity)
      : new LineRenderer(io.stderr, verbosity);
  const emit: Emit = (e) => renderer.onEvent(e);
  for (const w of warnings) {
    if (flags.json) io.stderr.write(`warning: ${w}\n`);
    else emit({ type: "log", level: "warn", message: w });
  }

  const sleep = io.sleep ?? realSleep;
  const retry = retryPolicyOf(config);
  const library = { type: config.zotero.library_type, id: config.zotero.library_id } as const;
  const scope = scopeOf(config.refserver.api_url, library.type, library.id);
  const journalPath = checkpointPath(config, flags, io);
  const runId = randomUUID();
  const collectionsWanted = flags.collection && flags.collection.length > 0 ? flags.collection : config.import_options.collections;

  // A real run holds the lock for its whole life; a dry run writes nothing and takes none.
  const release = flags.dryRun ? () => {} : acquireLock(`${journalPath}.lock`);
  const zoteroAgent = makeAgent({ timeoutSeconds: 60, connections: 4 });
  const serverAgent = makeAgent({ timeoutSeconds: config.refserver.timeout_seconds, connections: Math.max(4, config.import_options.batch_size) });
  let journal: Journal | null = null;
  let closeSource: () => unknown = () => undefined;
  try {
    // Fold the journal line by line: only where each item stands is kept, not every record.
    const reducer = new JournalReducer(scope);
    const scan = scanJournal(journalPath, (r) => reducer.add(r));
    if (scan.badLines > 0) emit({ type: "log", level: "warn", message: `checkpoint ${journalPath}: ignored ${scan.badLines} unreadable line(s)` });
    const state: JournalState = reducer.state;

    const source = makeSource(config, {
      dispatcher: zoteroAgent,
      retry,
      sleep,
      onWait: ({ reason, delayMs }) => emit({ type: "log", level: "info", message: `${reason}: waiting ${Math.round(delayMs / 1000)} s` }),
    });
    closeSource = () => source.close?.();

    // Incremental by default: the library version of the last complete run of this selection.
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
    // Unfinished items and their attachments, so their PDFs come along in incremental listings.
    const also = new Set<string>();
    for (const s of state.items.values()) {
      if (s.status !== "failed" && s.status !== "started") continue;
      also.add(s.key);
      if (s.att) also.add(s.att);
    }
    const alsoKeys = [...also];
    // Fetching thousands of unfinished keys 50 at a time costs more than listing everything.
    const saved = alsoKeys.length > 2_000 ? undefined : state.syncVersions.get(filter);
    const since = flags.since ?? saved;

    const listing = await source.list({ since, alsoKeys, signal: io.hardStop });
    emit({ type: "listed", items: listing.items.length, requests: listing.requests + collectionRequests, libraryVersion: listing.libraryVersion, since: since ?? null });
    for (const bad of listing.invalid) emit({ type: "log", level: "warn", message: `Zotero item ${bad.key} ignored: ${bad.reason}` });

    const { candidates, skipped } = selectItems(listing.items, {
      itemTypes: config.import_options.item_types,
      excludeTags: config.import_options.exclude_tags,
      collectionKeys,
      linkedFiles: source.readsLinkedFiles ?? false,
    });

    let client: RefServerClient | null = null;
    let pacer: Pacer | null = null;
    let known: Map<string, { key: string; docId: string | null; version: number | null }> | null = null;
    if (!flags.dryRun) {
      pacer = new Pacer({
        ceiling: config.import_options.batch_size,
        adaptive: config.import_options.adaptive_pacing,
        giveUpAfterMs: Math.round(config.retry.give_up_after_seconds * 1000),
        sleep,
        onChange: ({ limit: inFlight, reason }) => emit({ type: "log", level: "debug", message: `pacing: ${inFlight} upload${inFlight === 1 ? "" : "s"} in flight (${reason})` }),
      });
      client = new RefServerClient({
        pacer,
        baseUrl: config.refserver.api_url,
        username: config.refserver.username,
        password: config.refserver.password,
        dispatcher: serverAgent,
        retry,
        sleep,
        onRetry: ({ what, error, attempt, delayMs }) => emit({ type: "retry", key: null, what, attempt, delayMs, code: error.code, message: error.message }),
      });
      await client.login(io.hardStop);
      known = await client.knownKeys(library.id, io.hardStop);
    }

    const limit = flags.limit ?? null;
    const plan: Plan = makePlan(candidates, skipped, state, known, { limit, retryFailedOnly: Boolean(flags.retryFailed) });
    emit({ type: "planned", toImport: plan.toImport, alreadyDone: plan.alreadyDone, skipped: plan.skipped.length, limitedTo: limit });

    if (flags.dryRun) {
      renderer.finish();
      const rows = previewRows(plan);
      const importing = plan.actions.flatMap((a) => (a.kind === "import" ? [a.candidate.attachment.size] : []));
      // The Web API tells file sizes; null when the source does not.
      const bytes = importing.every((b) => b !== null) ? importing.reduce<number>((sum, b) => sum + (b ?? 0), 0) : null;
      const counts = { import: plan.toImport, alreadyDone: plan.alreadyDone, skipped: plan.skipped.length, laterByLimit: plan.deferred, bytes };
      if (flags.json) {
        io.stdout.write(`${JSON.stringify({ dryRun: true, library, libraryVersion: listing.libraryVersion, since: since ?? null, counts, items: rows }, null, 2)}\n`);
      } else {
        io.stdout.write(`${formatPreview(rows, io.stdout.columns ?? 160, Boolean(flags.verbose))}\n\n`);
        io.stdout.write(`Dry run: would import ${counts.import}${bytes !== null && counts.import > 0 ? ` (${formatBytes(bytes)})` : ""}, already done ${counts.alreadyDone}, skip ${counts.skipped}${counts.laterByLimit ? `, leave ${counts.laterByLimit} for later (--limit)` : ""}. Nothing was downloaded, uploaded or recorded.\n`);
      }
      return ExitCode.Ok;
    }

    journal = Journal.open(journalPath);
    const now = (): string => new Date().toISOString();
    journal.append({ t: "run", ts: now(), run: runId, scope, event: "start" });
    // Keys the server reported as present are done: remember that.
    for (const a of plan.actions) {
      if (a.kind === "done" && a.via === "server") {
        journal.append({ t: "item", ts: now(), run: runId, scope, key: a.candidate.item.key, att: a.candidate.attachment.key, version: a.candidate.item.version, status: "done", via: "already", docId: a.docId });
      }
    }
    const toImport = plan.actions.filter((a) => a.kind === "import").map((a) => a.candidate);
    const cacheRoot = config.paths.cache_dir ? resolve(io.cwd, config.paths.cache_dir) : defaultCacheDir(io.env);
    const result: PipelineResult = await runPipeline({
      candidates: toImport,
      source,
      client: client!,
      journal,
      scope,
      runId,
      libraryId: library.id,
      cacheDir: join(cacheRoot, `${library.type}-${library.id}`),
      useCache: flags.cache !== false,
      batchSize: config.import_options.batch_size,
      delayMs: Math.round(config.import_options.delay_seconds * 1000),
      retry,
      sleep,
      emit,
      stop: io.stop,
      hardStop: io.hardStop,
    });
    renderer.finish();

    const summary = summarise(plan, result);
    let exit: number = ExitCode.Ok;
    if (result.stoppedBy === "signal") exit = ExitCode.Interrupted;
    else if (result.stoppedBy === "auth") exit = ExitCode.Auth;
    else if (result.stoppedBy === "server-unavailable") exit = ExitCode.Unavailable;
    else if (summary.failed.length > 0) exit = ExitCode.SomeFailed;

    // A complete pass over this selection: the next run only asks Zotero for changes.
    const complete = result.stoppedBy === null && plan.deferred === 0 && !flags.retryFailed;
    if (complete) journal.append({ t: "sync", ts: now(), run: runId, scope, filter, version: listing.libraryVersion });
    journal.append({ t: "run", ts: now(), run: runId, scope, event: "end", exitCode: exit });

    const reportPath = writeReport(config, io, { runId, scope, library, since: since ?? null, libraryVersion: listing.libraryVersion, exitCode: exit, summary, checkpoint: journalPath, stoppedBy: result.stoppedBy, fatal: result.fatal?.message ?? null, pacing: pacer ? { ceiling: config.import_options.batch_size, adaptive: config.import_options.adaptive_pacing, finalLimit: pacer.limit, decreases: pacer.decreases, peakInFlight: pacer.peakInFlight } : null });
    if (flags.json) {
      io.stdout.write(`${redact(JSON.stringify({ exitCode: exit, report: reportPath, checkpoint: journalPath, ...summary }, null, 2))}\n`);
    } else {
      if (result.fatal) io.stderr.write(`${redact(`error: ${result.fatal.message}`)}\n`);
      io.stdout.write(`${redact(formatSummary(summary))}\nReport: ${reportPath}\n`);
    }
    return exit;
  } finally {
    renderer.finish();
    journal?.close();
    release();
    await Promise.allSettled([Promise.resolve().then(closeSource), zoteroAgent.close(), serverAgent.close()]);
  }
}

interface ReportBody {
  runId: string;
  scope: string;
  library: { type: string; id: string };
  since: number | null;
  libraryVersion: number;
  exitCode: number;
  summary: RunSummary;
  checkpoint: string;
  stoppedBy: string | null;
  fatal: string | null;
  pacing: { ceiling: number; adaptive: boolean; finalLimit: number; decreases: number; peakInFlight: number } | null;
}

/** One JSON report per run, next to the checkpoint's state directory. */
function writeReport(config: Config, io: Pick<CliIo, "env" | "cwd">, body: ReportBody): string {
  const dir = config.paths.report_dir ? resolve(io.cwd, config.paths.report_dir) : join(stateDir(io.env), "reports");
  mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const path = join(dir, `import-${stamp}-${body.runId.slice(0, 8)}.json`);
  fsyncWrite(path, redact(JSON.stringify({ finishedAt: new Date().toISOString(), ...body }, null, 2)) + "\n");
  return path;
}
