import type { FastifyBaseLogger } from "fastify";
import type { ChunkInput, ClaimedJob, Repository } from "../db/types.js";
import type { FileStore } from "../storage.js";
import { ExtractionStopped, PdfExtractor, PdfLimitError } from "./extractor.js";
import type { PdfLimits } from "./limits.js";
import { PdfReadError, type ExtractedDocument } from "./pdf.js";

export interface WorkerOptions {
  /** The worker's own repository (its own connection). */
  repo: Repository;
  files: FileStore;
  log: FastifyBaseLogger;
  /** How often to look for jobs when nothing wakes the worker. Default 1000 ms. */
  pollIntervalMs?: number;
  /** Claims of one job before it is failed (crash loops). Default 3. */
  maxAttempts?: number;
  /** What one PDF may cost (time, decoded bytes, stored text, thread memory); defaults in limits.ts. */
  pdfLimits?: Partial<PdfLimits>;
}

export interface WorkerStats {
  completed: number;
  failed: number;
  /** Pipeline attempts aborted by a database error (the job is left for the next claim). */
  aborted: number;
  /** Jobs whose paper was deleted, or whose PDF was replaced, while they ran: results dropped. */
  skipped: number;
}

/**
 * The background pipeline. Jobs live in the database; the worker claims one in a short
 * immediate transaction, has the PDF read in a separate thread (PdfExtractor: text and chunks,
 * within the PDF limits) with no transaction open, then writes each step's results in one short
 * immediate transaction. This thread only claims jobs and writes results, so requests are
 * answered while a PDF is read. Stopping ends the PDF thread at once; an interrupted job keeps
 * status `processing` and is resumed on the next start.
 */
export class JobWorker {
  private readonly repo: Repository;
  private readonly files: FileStore;
  private readonly log: FastifyBaseLogger;
  private readonly pollIntervalMs: number;
  private readonly maxAttempts: number;
  /** Reads PDFs off the event loop. */
  readonly extractor: PdfExtractor;
  private stopping = false;
  private running: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private idleWaiters: Array<() => void> = [];
  readonly stats: WorkerStats = { completed: 0, failed: 0, aborted: 0, skipped: 0 };

  constructor(options: WorkerOptions) {
    this.repo = options.repo;
    this.files = options.files;
    this.log = options.log;
    this.pollIntervalMs = options.pollIntervalMs ?? 1000;
    this.maxAttempts = options.maxAttempts ?? 3;
    this.extractor = new PdfExtractor({ limits: options.pdfLimits, log: this.log });
  }

  start(): void {
    if (this.running) return;
    this.stopping = false;
    this.running = this.loop().catch((err: unknown) => {
      this.log.error({ err }, "worker stopped on an unexpected error");
    });
  }

  /** Wake the worker now (a job was queued). */
  notify(): void {
    this.wake?.();
  }

  /** Stop between steps (a PDF being read is abandoned, its job resumes on the next start) and wait. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.wake?.();
    this.extractor.stop();
    await this.running;
    this.running = undefined;
    await this.extractor.close();
  }

  /** Resolves the next time the worker finds the queue empty (tests, demos). */
  whenIdle(): Promise<void> {
    return new Promise((resolve) => {
      this.idleWaiters.push(resolve);
      this.wake?.();
    });
  }

  private async sleep(ms: number): Promise<void> {
    if (this.stopping) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.wake = done;
    });
    this.wake = undefined;
  }

  private signalIdle(): void {
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
  }

  private async loop(): Promise<void> {
    while (!this.stopping) {
      let job: ClaimedJob | null;
      try {
        job = await this.repo.claimNextJob(this.maxAttempts);
      } catch (err) {
        this.log.warn({ err }, "worker could not claim a job; will retry");
        await this.sleep(this.pollIntervalMs);
        continue;
      }
      if (!job) {
        this.signalIdle();
        await this.sleep(this.pollIntervalMs);
        continue;
      }
      // PostgreSQL: the claim is a lease; renew it while the job runs so no other process takes
      // it (a process that dies stops renewing, and the job is claimed again after the lease).
      const renewEvery = this.repo.leaseRenewIntervalMs;
      const claimed = job;
      const renewal =
        renewEvery === undefined
          ? undefined
          : setInterval(() => {
              this.repo.renewLease(claimed.jobId).then(
                (held) => {
                  if (!held) this.log.warn({ jobId: claimed.jobId }, "lost the lease on a job (taken over or closed)");
                },
                (err: unknown) => this.log.warn({ err, jobId: claimed.jobId }, "could not renew a job lease"),
              );
            }, renewEvery);
      try {
        await this.process(job);
      } catch (err) {
        // A database error (not a PDF problem): leave the job for the next claim.
        this.stats.aborted++;
        this.log.error({ err, jobId: job.jobId }, "pipeline attempt aborted; the job will be retried");
        await this.sleep(this.pollIntervalMs);
      } finally {
        if (renewal) clearInterval(renewal);
      }
    }
    this.signalIdle();
  }

  private async process(job: ClaimedJob): Promise<void> {
    const log = this.log.child({ jobId: job.jobId, docId: job.docId });
    let pages: string[];
    let chunks: ChunkInput[];
    if (job.textDone) {
      pages = await this.repo.pageTexts(job.docId);
      try {
        chunks = await this.extractor.chunk(pages);
      } catch (err) {
        if (err instanceof ExtractionStopped) return; // stopping: resume on the next start
        return this.fail(job, "chunking", `Chunking failed: ${(err as Error).message}`, log);
      }
    } else {
      let doc: ExtractedDocument;
      try {
        doc = await this.extractor.extract(this.files.absolute(job.filePath));
      } catch (err) {
        if (err instanceof ExtractionStopped) return; // stopping: resume on the next start
        const message =
          err instanceof PdfReadError || err instanceof PdfLimitError ? err.message : `Text extraction failed: ${(err as Error).message}`;
        return this.fail(job, "text", message, log);
      }
      pages = doc.pages;
      chunks = doc.chunks;
      const note = doc.notes.length > 0 ? doc.notes.join("; ") : undefined;
      if (!(await this.repo.saveText(job.jobId, job.docId, pages, note))) return this.skip(log);
      if (note) log.warn({ note }, "text step done within the PDF limits");
      else log.debug({ pages: pages.length }, "text step done");
    }
    if (this.stopping) return; // between steps
    if (!(await this.repo.saveChunks(job.jobId, job.docId, chunks))) return this.skip(log);
    this.stats.completed++;
    log.info({ pages: pages.length, chunks: chunks.length }, "job completed");
  }

  private async fail(job: ClaimedJob, step: "text" | "chunking", message: string, log: FastifyBaseLogger): Promise<void> {
    // The file may be gone because the paper was deleted or its PDF replaced meanwhile.
    if (!(await this.repo.failJob(job.jobId, step, message))) return this.skip(log);
    this.stats.failed++;
    log.warn({ reason: message }, "job failed");
  }

  /** The paper was deleted or the job superseded while it ran: drop the results, carry on. */
  private skip(log: FastifyBaseLogger): void {
    this.stats.skipped++;
    log.info("the paper was deleted or its PDF replaced while the job ran; results dropped");
  }
}
