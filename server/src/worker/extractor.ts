import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import type { ChunkInput } from "../db/types.js";
import { formatSeconds, resolvePdfLimits, type PdfLimits } from "./limits.js";
import type { ExtractedDocument } from "./pdf.js";
import { PdfReadError } from "./pdf.js";
import type { ThreadReply, ThreadRequest } from "./pdf-thread.js";

/** The document cost more than a limit allows, or its thread crashed: the job fails with this message. */
export class PdfLimitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PdfLimitError";
  }
}

/** The extraction was abandoned because the worker is stopping: the job stays queued. */
export class ExtractionStopped extends Error {
  constructor() {
    super("PDF processing stopped: the server is shutting down");
    this.name = "ExtractionStopped";
  }
}

interface Log {
  warn(obj: object, msg: string): void;
}

export interface PdfExtractorOptions {
  limits?: Partial<PdfLimits>;
  log?: Log;
  /** An idle thread is ended after this long (its memory goes back). Default 30 s. */
  idleMs?: number;
  /** A thread is replaced by a fresh one after this many documents. Default 100. */
  maxDocumentsPerThread?: number;
}

interface Pending {
  id: number;
  thread: Worker;
  resolve: (reply: ThreadReply) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
  /** Set when the thread is being ended; the promise is rejected with it once the thread has exited. */
  failure?: Error;
}

let entry: URL | undefined;

/**
 * The thread's module. Built, it sits next to this file. Under vitest this file runs from the
 * TypeScript sources, which a worker thread cannot load, so the built copy in dist/ is used
 * (the test scripts build first).
 */
function threadEntry(): URL {
  if (entry) return entry;
  for (const candidate of [new URL("./pdf-thread.js", import.meta.url), new URL("../../dist/worker/pdf-thread.js", import.meta.url)]) {
    if (existsSync(fileURLToPath(candidate))) return (entry = candidate);
  }
  throw new Error("refserver-lite: dist/worker/pdf-thread.js is missing; run `npm run build -w server`");
}

/**
 * Reads PDFs in a worker thread, one document at a time, so that parsing never blocks the
 * event loop that answers requests. The thread's V8 heap is capped (`resourceLimits`), every
 * document has a wall-time limit, and pdfjs's stream decoding and the stored text are capped in
 * the thread (see pdf.ts). A thread that runs out of memory, crashes or overruns its time is
 * terminated and the document's promise rejects with a PdfLimitError naming the limit; the next
 * document gets a fresh thread. The thread is kept between documents, ended after `idleMs`
 * without work and replaced after `maxDocumentsPerThread` documents.
 */
export class PdfExtractor {
  readonly limits: PdfLimits;
  private readonly log: Log | undefined;
  private readonly idleMs: number;
  private readonly maxDocumentsPerThread: number;
  private thread: Worker | undefined;
  private documents = 0;
  private pending: Pending | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private nextId = 1;
  private warnedUnguarded = false;
  private readonly exits = new Map<Worker, Promise<void>>();

  constructor(options: PdfExtractorOptions = {}) {
    this.limits = resolvePdfLimits(options.limits);
    this.log = options.log;
    this.idleMs = options.idleMs ?? 30_000;
    this.maxDocumentsPerThread = options.maxDocumentsPerThread ?? 100;
  }

  /** Threads started so far (tests). */
  threadsStarted = 0;

  /** Text, notes and chunks of the PDF at `path`. Rejects with PdfReadError, PdfLimitError or ExtractionStopped. */
  async extract(path: string): Promise<ExtractedDocument> {
    const { maxDecodedBytes, maxTextBytes } = this.limits;
    const reply = await this.request({ kind: "extract", path, limits: { maxDecodedBytes, maxTextBytes } });
    if (reply.ok && reply.kind === "extract") {
      if (!reply.result.guarded && !this.warnedUnguarded) {
        this.warnedUnguarded = true;
        this.log?.warn(
          { limit: "maxDecodedBytes" },
          "pdfjs-dist's DecodeStream.ensureBuffer is not the one refserver-lite guards: the decoded-bytes limit is off (time and memory limits still apply)",
        );
      }
      return reply.result;
    }
    throw replyError(reply);
  }

  /** Chunks of stored page text (a job resumed after its text step), computed in the thread. */
  async chunk(pages: string[]): Promise<ChunkInput[]> {
    const reply = await this.request({ kind: "chunk", pages });
    if (reply.ok && reply.kind === "chunk") return reply.chunks;
    throw replyError(reply);
  }

  /** Abandon the document in progress, if any: its thread is ended and its promise rejects with ExtractionStopped. */
  stop(): void {
    if (this.pending) this.end(this.pending.thread, new ExtractionStopped());
  }

  /** Stop, end the thread and wait for it to exit. A later document starts a new thread. */
  async close(): Promise<void> {
    this.stop();
    if (this.thread) this.end(this.thread);
    this.clearIdle();
    await Promise.all(this.exits.values());
  }

  private request(body: DistributiveOmit<ThreadRequest, "id">): Promise<ThreadReply> {
    if (this.pending) return Promise.reject(new Error("PdfExtractor reads one document at a time"));
    this.clearIdle();
    const thread = this.thread ?? this.startThread();
    thread.ref();
    const id = this.nextId++;
    const ms = this.limits.timeLimitMs;
    return new Promise<ThreadReply>((resolve, reject) => {
      const timer = setTimeout(
        () => this.end(thread, new PdfLimitError(`PDF processing exceeded the ${formatSeconds(ms)} time limit`)),
        ms,
      );
      this.pending = { id, thread, resolve, reject, timer };
      thread.postMessage({ id, ...body } as ThreadRequest);
    });
  }

  private startThread(): Worker {
    const thread = new Worker(threadEntry(), {
      resourceLimits: { maxOldGenerationSizeMb: this.limits.memoryMb },
      // pdfjs may print; the server's stdout is kept for the lines meant for scripts.
      stdout: true,
      stderr: true,
    });
    this.threadsStarted++;
    this.thread = thread;
    this.documents = 0;
    const forward = (chunk: Buffer): void => {
      const output = chunk.toString().trim();
      if (output) this.log?.warn({ output: output.slice(0, 2000) }, "PDF thread output");
    };
    thread.stdout.on("data", forward);
    thread.stderr.on("data", forward);
    thread.on("message", (reply: ThreadReply) => this.onReply(thread, reply));
    thread.on("error", (err: Error & { code?: string }) => {
      const failure =
        err.code === "ERR_WORKER_OUT_OF_MEMORY"
          ? new PdfLimitError(`PDF processing exceeded the memory limit (${this.limits.memoryMb} MB)`)
          : new PdfLimitError(`PDF processing crashed: ${err.message}`);
      this.end(thread, failure);
    });
    this.exits.set(
      thread,
      new Promise<void>((resolve) => {
        thread.once("exit", (code: number) => {
          this.exits.delete(thread);
          if (this.thread === thread) this.thread = undefined;
          const pending = this.pending;
          if (pending?.thread === thread) {
            this.pending = undefined;
            clearTimeout(pending.timer);
            pending.reject(pending.failure ?? new PdfLimitError(`PDF processing stopped unexpectedly (thread exit code ${code})`));
          }
          resolve();
        });
      }),
    );
    return thread;
  }

  private onReply(thread: Worker, reply: ThreadReply): void {
    const pending = this.pending;
    if (!pending || pending.thread !== thread || pending.id !== reply.id || pending.failure) return;
    this.pending = undefined;
    clearTimeout(pending.timer);
    pending.resolve(reply);
    if (this.thread !== thread) return;
    this.documents++;
    if (this.documents >= this.maxDocumentsPerThread) {
      this.end(thread);
      return;
    }
    thread.unref();
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (this.thread === thread && !this.pending) this.end(thread);
    }, this.idleMs);
    this.idleTimer.unref();
  }

  /** Terminate `thread`; its pending document, if any, is rejected with `failure` once it has exited. */
  private end(thread: Worker, failure?: Error): void {
    const pending = this.pending;
    if (pending?.thread === thread && !pending.failure) {
      pending.failure = failure ?? new ExtractionStopped();
      clearTimeout(pending.timer);
    }
    if (this.thread === thread) this.thread = undefined;
    void thread.terminate();
  }

  private clearIdle(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

function replyError(reply: ThreadReply): Error {
  if (reply.ok) return new Error("PDF thread answered the wrong request");
  return reply.readError ? new PdfReadError(reply.message) : new Error(reply.message);
}
