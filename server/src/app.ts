import { mkdir } from "node:fs/promises";
import { resolve } from "node:path";
import Fastify, { type FastifyError, type FastifyInstance, type FastifyServerOptions } from "fastify";
import { hashPassword, loadOrCreateSecret, randomPassword, TokenService, TOKEN_TTL_SECONDS } from "./auth.js";
import { makeAuthenticate, type AppContext } from "./context.js";
import { DEFAULT_BUSY_TIMEOUT_MS } from "./db/connection.js";
import { openStorage } from "./db/open.js";
import type { Repository, Storage } from "./db/types.js";
import { httpErrorOf } from "./errors.js";
import { DEFAULT_LOGIN_LIMITS, LoginLimiter, type LoginLimits } from "./login-limiter.js";
import { authRoutes } from "./routes/auth.js";
import { DEFAULT_MAX_FIELD_BYTES } from "./routes/form.js";
import { healthRoutes } from "./routes/health.js";
import { protectedRoutes } from "./routes/protected.js";
import { FileStore, STALE_FILE_MS } from "./storage.js";
import type { PdfLimits } from "./worker/limits.js";
import { JobWorker } from "./worker/worker.js";
import { loginRoutes } from "./web/login.js";

export const DEFAULT_MAX_UPLOAD_BYTES = 200 * 1024 * 1024;
export { DB_FILENAME } from "./db/open.js";

export interface AppOptions {
  /** The data directory: database (SQLite), PDFs, temp files, JWT secret. Created when missing. */
  dataDir: string;
  /**
   * A `postgres://` URL: keep the rows in PostgreSQL instead of SQLite (several server processes
   * may share it, with the same `dataDir` for the PDFs). Default: SQLite in `dataDir`.
   */
  databaseUrl?: string;
  /** PostgreSQL: how long a claimed job stays leased to this process without renewal. Default 60 s. */
  jobLeaseMs?: number;
  /** SQLite busy timeout. Default 5000 ms. */
  busyTimeoutMs?: number;
  /** Largest accepted upload. Default 200 MB. */
  maxUploadBytes?: number;
  /** Largest value of one form field (title, authors, abstract, ...). Default 64 KiB. */
  maxFieldBytes?: number;
  /** Let anonymous clients use the read routes (never the writes). Default false. */
  publicRead?: boolean;
  /** Failed-login rate limits. Default 10 per address and 5 per username a minute. */
  loginLimits?: Partial<LoginLimits>;
  /** The clock of the login limiter and of web session expiry (tests). Default Date.now. */
  now?: () => number;
  /** Admin to create or reset at start; when absent and no admin exists one is generated. */
  adminUser?: string;
  adminPassword?: string;
  /** Called once when an admin with a random password was created. */
  onAdminCreated?: (username: string, password: string) => void;
  /** Run the background worker. Default true. */
  worker?: boolean;
  /** Worker poll interval when idle. Default 1000 ms. */
  workerPollIntervalMs?: number;
  /** What one PDF may cost the worker: time, decoded bytes per stream, stored text, thread memory (worker/limits.ts). */
  pdfLimits?: Partial<PdfLimits>;
  /** Token lifetime. Default 480 minutes. */
  tokenTtlSeconds?: number;
  /** Fastify logger option. Default false. */
  logger?: FastifyServerOptions["logger"];
}

declare module "fastify" {
  interface FastifyInstance {
    refserver: AppContext & {
      /** The password of an admin created at this start, if one was generated. */
      generatedAdminPassword: string | undefined;
      /** The worker's repository (its own connection). */
      workerRepo: Repository;
      /** The open storage (SQLite or PostgreSQL). */
      storage: Storage;
    };
  }
}

interface ValidationEntry {
  instancePath?: string;
  keyword?: string;
  message?: string;
  params?: Record<string, unknown>;
}

function fastapiValidation(err: FastifyError): Array<{ type: string; loc: string[]; msg: string }> {
  const where = err.validationContext === "querystring" ? "query" : (err.validationContext ?? "body");
  const entries = (err.validation ?? []) as ValidationEntry[];
  return entries.map((v) => {
    const missing = v.keyword === "required" ? String(v.params?.missingProperty ?? "") : undefined;
    const field = missing ?? (v.instancePath ?? "").replace(/^\//, "").split("/")[0] ?? "";
    return {
      type: missing ? "missing" : (v.keyword ?? "value_error"),
      loc: [where, field],
      msg: missing ? "Field required" : (v.message ?? "Invalid value"),
    };
  });
}

/**
 * Fastify's own request logging off: through its LogController where this Fastify has one
 * (5.12+, where the top-level `disableRequestLogging` is deprecated and warns at start), else
 * through that option.
 */
function quietRequests(): Pick<FastifyServerOptions, "disableRequestLogging" | "logController"> {
  const { LogController } = Fastify as unknown as { LogController?: new (o: { disableRequestLogging: boolean }) => NonNullable<FastifyServerOptions["logController"]> };
  return LogController ? { logController: new LogController({ disableRequestLogging: true }) } : { disableRequestLogging: true };
}

/** Build the Fastify app (not listening). Closing the app stops the worker and closes the database. */
export async function buildApp(options: AppOptions): Promise<FastifyInstance> {
  const dataDir = resolve(options.dataDir);
  await mkdir(dataDir, { recursive: true });
  const busyTimeoutMs = options.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  const maxUploadBytes = options.maxUploadBytes ?? DEFAULT_MAX_UPLOAD_BYTES;
  const sessionTtlMs = (options.tokenTtlSeconds ?? TOKEN_TTL_SECONDS) * 1000;
  const storage = await openStorage({
    dataDir,
    databaseUrl: options.databaseUrl,
    busyTimeoutMs,
    sessionTtlMs,
    now: options.now,
    jobLeaseMs: options.jobLeaseMs,
  });
  const { repo, workerRepo } = storage;

  const app = Fastify({
    logger: options.logger ?? false,
    // Fastify's two lines per request ("incoming request", "request completed") at info would
    // drown the lines that matter; one line per request at debug instead (refserver-lite -v).
    ...quietRequests(),
    bodyLimit: 1024 * 1024,
    return503OnClosing: true,
    forceCloseConnections: "idle",
  });

  try {
    const files = new FileStore(dataDir);
    await files.init();
    // Alone on the database: every file no row names is a crash's leftover. Another server
    // process running (PostgreSQL): only files older than STALE_FILE_MS, so its uploads in
    // flight are left alone.
    const removed = await files.sweep(await repo.allFilePaths(), storage.aloneAtStart ? 0 : STALE_FILE_MS);
    if (removed.length > 0) app.log.warn({ removed }, "startup sweep removed stray files");
    await storage.startedServing();

    let generatedAdminPassword: string | undefined;
    if (options.adminUser && options.adminPassword) {
      await repo.upsertAdmin(options.adminUser, await hashPassword(options.adminPassword));
    } else if (!(await repo.hasAdmin())) {
      const username = options.adminUser ?? "admin";
      generatedAdminPassword = randomPassword();
      await repo.upsertAdmin(username, await hashPassword(generatedAdminPassword));
      options.onAdminCreated?.(username, generatedAdminPassword);
    }

    const tokens = new TokenService(await loadOrCreateSecret(dataDir), options.tokenTtlSeconds ?? TOKEN_TTL_SECONDS);
    const worker =
      options.worker === false
        ? undefined
        : new JobWorker({
            repo: workerRepo,
            files,
            log: app.log.child({ component: "worker" }),
            pollIntervalMs: options.workerPollIntervalMs ?? 1000,
            pdfLimits: options.pdfLimits,
          });
    const ctx: AppContext = {
      repo,
      files,
      tokens,
      worker,
      maxUploadBytes,
      maxFieldBytes: options.maxFieldBytes ?? DEFAULT_MAX_FIELD_BYTES,
      loginLimiter: new LoginLimiter({ ...DEFAULT_LOGIN_LIMITS, ...options.loginLimits }, options.now),
      authenticate: makeAuthenticate(repo, tokens),
      library: storage.library,
      // Browser sessions live as long as a token (480 minutes by default).
      sessions: storage.sessions,
    };
    app.decorate("refserver", { ...ctx, generatedAdminPassword, workerRepo, storage });

    app.addContentTypeParser(
      "application/x-www-form-urlencoded",
      // The login route limits its body to 64 KiB, the metadata route to room for its fields.
      { parseAs: "string" },
      (_req, body, done) => {
        done(null, Object.fromEntries(new URLSearchParams(String(body))));
      },
    );

    app.setErrorHandler((err: FastifyError, request, reply) => {
      if (err.validation) {
        return reply.code(422).send({ detail: fastapiValidation(err) });
      }
      if (err.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
        const limit = request.routeOptions.bodyLimit;
        return reply.code(413).send({ detail: `Request body too large: the limit is ${limit} bytes for this endpoint` });
      }
      if (err.code === "FST_REQ_FILE_TOO_LARGE") {
        return reply.code(413).send({ detail: `File too large: the limit is ${maxUploadBytes} bytes per file` });
      }
      // Domain errors (storage, database) and HttpError: the one place they become answers.
      const mapped = httpErrorOf(err);
      if (mapped) {
        if (mapped.log) request.log.error({ err }, mapped.log);
        return reply.code(mapped.error.statusCode).headers(mapped.error.headers).send({ detail: mapped.error.detail });
      }
      if (err.statusCode === 413) {
        return reply.code(413).send({ detail: `Request too large: ${err.message}` });
      }
      if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) {
        return reply.code(err.statusCode).send({ detail: err.message });
      }
      if (request.raw.aborted || err.code === "ECONNRESET" || err.message === "aborted") {
        // The client hung up mid-request: nothing to answer, and not a server fault.
        request.log.warn({ code: err.code ?? "aborted" }, "client aborted the request");
        return reply.code(400).send({ detail: "Request aborted by the client" });
      }
      request.log.error({ err }, "unhandled error");
      return reply.code(500).send({ detail: "Internal Server Error" });
    });
    app.setNotFoundHandler((_request, reply) => reply.code(404).send({ detail: "Not Found" }));

    // While closing, answer in-flight requests with `Connection: close` so keep-alive
    // sockets do not hold the shutdown open until their timeout.
    let closing = false;
    app.addHook("preClose", async () => {
      closing = true;
      // A response still being sent when the close begins (a PDF streaming out) keeps its
      // keep-alive socket busy past the one sweep of idle sockets that close makes, and
      // Fastify's 72 s keep-alive timeout would then hold the shutdown open (SIGTERM right
      // after a download hung 30 s, then exit 1). From now on a socket that goes idle is
      // dropped within 100 ms.
      app.server.keepAliveTimeout = 100;
    });
    app.addHook("onSend", async (_request, reply, payload) => {
      if (closing) reply.header("connection", "close");
      return payload;
    });
    app.addHook("onResponse", async (request, reply) => {
      request.log.debug(
        { method: request.method, url: request.url, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 },
        "request",
      );
    });

    const routeOptions = { ctx };
    await app.register(healthRoutes, routeOptions);
    await app.register(authRoutes, routeOptions);
    // The web pages' login form, login and logout (public); the pages are in protectedRoutes.
    await app.register(loginRoutes, routeOptions);
    // Every other route needs a token (reads too, unless publicRead): see routes/protected.ts.
    await app.register(protectedRoutes, { ...routeOptions, publicRead: options.publicRead ?? false });

    app.addHook("onReady", async () => {
      worker?.start();
    });
    // onClose runs after the server stopped accepting and in-flight requests finished.
    app.addHook("onClose", async () => {
      await worker?.stop();
      await storage.close();
    });
  } catch (err) {
    await storage.close();
    throw err;
  }
  return app;
}
