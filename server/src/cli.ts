import { parseArgs } from "node:util";
import { DEFAULT_MAX_UPLOAD_BYTES } from "./app.js";
import { backupCommand } from "./backup.js";
import { chooseLogFormat, prettyLogStream, useColor } from "./log-format.js";
import { DEFAULT_BUSY_TIMEOUT_MS } from "./db/connection.js";
import { checkDatabaseUrl, redactUrl } from "./db/open.js";
import { DEFAULT_LOGIN_LIMITS } from "./login-limiter.js";
import { DEFAULT_MAX_FIELD_BYTES } from "./routes/form.js";
import { startServer } from "./server.js";
import { VERSION } from "./version.js";
import { DEFAULT_PDF_LIMITS, MB } from "./worker/limits.js";

const HELP = `refserver-lite ${VERSION}: a RefServerLite-compatible paper server (SQLite, WAL; or PostgreSQL)

Usage: refserver-lite --data DIR [--database postgres://...] [--port 8000] [--host 127.0.0.1] [options]
       refserver-lite backup BACKUP_DIR --data DIR   consistent copy while the server runs (SQLite)
                                                     (refserver-lite backup --help)
       refserver-lite migrate --from DIR --to postgres://...   copy a SQLite library into
                                                     PostgreSQL (refserver-lite migrate --help)

Flags:
  --data DIR              data directory (database, PDFs, JWT secret); created if missing
                          (env REFSERVER_DATA). With --database it holds the PDFs and the JWT
                          secret: give every server process on one database the same directory
  --database URL          keep the rows in PostgreSQL (postgres://user@host:5432/dbname) instead of
                          SQLite in --data; several processes may share it (env REFSERVER_DATABASE_URL)
  --job-lease-s S         PostgreSQL: a job claimed by a process that stops renewing it (it died)
                          is taken by another after S seconds (default 60; env REFSERVER_JOB_LEASE_S)
  --port N                port to listen on, 0 for any free port (default 8000; env REFSERVER_PORT)
  --host ADDR             address to bind (default 127.0.0.1; env REFSERVER_HOST)
  --busy-timeout MS       SQLite busy timeout in ms (default ${DEFAULT_BUSY_TIMEOUT_MS}; env REFSERVER_BUSY_TIMEOUT_MS)
  --max-upload-mb N       largest accepted upload in MB (default ${DEFAULT_MAX_UPLOAD_BYTES / 1024 / 1024}; env REFSERVER_MAX_UPLOAD_MB)
  --max-field-kb N        largest form field (title, authors, abstract...) in KiB, else 422 naming
                          the field (default ${DEFAULT_MAX_FIELD_BYTES / 1024}; env REFSERVER_MAX_FIELD_KB)
  --public-read           let clients without a token read papers, text, files, jobs and links
                          (uploads and changes still need one; default off; env REFSERVER_PUBLIC_READ=1)
  --login-ip-failures N   failed logins from one address per window before 429 (default
                          ${DEFAULT_LOGIN_LIMITS.maxFailuresPerIp}, 0 = no limit; env REFSERVER_LOGIN_IP_FAILURES)
  --login-user-failures N failed logins for one username per window before 429 (default
                          ${DEFAULT_LOGIN_LIMITS.maxFailuresPerUser}, 0 = no limit; env REFSERVER_LOGIN_USER_FAILURES)
  --login-window-s S      the failed-login window in seconds (default ${DEFAULT_LOGIN_LIMITS.windowMs / 1000}; env REFSERVER_LOGIN_WINDOW_S)
  --no-worker             do not run the background pipeline
  --pdf-time-limit-s S    time to read one PDF; past it the job fails (default
                          ${DEFAULT_PDF_LIMITS.timeLimitMs / 1000}; env REFSERVER_PDF_TIME_LIMIT_S)
  --pdf-max-decoded-mb N  bytes one stream of a PDF may decode to (a page's content); a page
                          over it is skipped, with a note (default ${DEFAULT_PDF_LIMITS.maxDecodedBytes / MB}; env REFSERVER_PDF_MAX_DECODED_MB)
  --max-text-mb N         text stored per document; beyond it the text is cut, with a note
                          (default ${DEFAULT_PDF_LIMITS.maxTextBytes / MB}; env REFSERVER_MAX_TEXT_MB)
  --pdf-memory-mb N       heap of the thread that reads PDFs; past it the job fails (default
                          ${DEFAULT_PDF_LIMITS.memoryMb}; env REFSERVER_PDF_MEMORY_MB)
  --log-level LEVEL       fatal|error|warn|info|debug|trace|silent (default info; env REFSERVER_LOG_LEVEL)
  -v, --verbose           debug logging: one line per request too (= --log-level debug)
  --log-format FORMAT     pretty (readable lines) or json (one JSON object a line); default pretty
                          when stderr is a terminal, json otherwise (env REFSERVER_LOG_FORMAT)
  -h, --help              show this help
  -V, --version           show the version

Environment:
  REFSERVER_ADMIN_USER      admin username to create (or reset) at start
  REFSERVER_ADMIN_PASSWORD  that admin's password. When no admin exists and none is given, an
                            admin "admin" is created with a random password, printed once.
  REFSERVER_DATA, REFSERVER_PORT, REFSERVER_HOST, REFSERVER_BUSY_TIMEOUT_MS,
  REFSERVER_MAX_UPLOAD_MB, REFSERVER_MAX_FIELD_KB, REFSERVER_PUBLIC_READ,
  REFSERVER_LOGIN_IP_FAILURES, REFSERVER_LOGIN_USER_FAILURES, REFSERVER_LOGIN_WINDOW_S,
  REFSERVER_PDF_TIME_LIMIT_S, REFSERVER_PDF_MAX_DECODED_MB, REFSERVER_MAX_TEXT_MB,
  REFSERVER_PDF_MEMORY_MB, REFSERVER_LOG_LEVEL, REFSERVER_LOG_FORMAT, REFSERVER_DATABASE_URL,
  REFSERVER_JOB_LEASE_S   defaults for the flags above

On start it prints one line to stdout: "refserver-lite listening on http://HOST:PORT".
SIGTERM/SIGINT: stop accepting, finish in-flight requests, stop the worker between steps,
checkpoint the WAL and close the database.
`;

/** The default job lease (db/pg/open.ts holds the same; not imported so SQLite never loads pg). */
const DEFAULT_JOB_LEASE_MS = 60_000;

/** An error message with the database password, should it appear, replaced. */
function redactMessage(message: string, url: string): string {
  try {
    const password = decodeURIComponent(new URL(url).password);
    return password === "" ? message : message.split(password).join("***");
  } catch {
    return message;
  }
}

function fail(message: string): never {
  process.stderr.write(`refserver-lite: ${message}\nTry --help.\n`);
  process.exit(2);
}

function intOption(name: string, raw: string | undefined, fallback: number, min: number): number {
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw)) fail(`${name} must be a whole number, got "${raw}"`);
  const n = Number.parseInt(raw, 10);
  if (n < min) fail(`${name} must be at least ${min}`);
  return n;
}

export async function main(argv: string[] = process.argv.slice(2)): Promise<void> {
  if (argv[0] === "backup") {
    process.exitCode = await backupCommand(argv.slice(1));
    return;
  }
  if (argv[0] === "migrate") {
    const { migrateCommand } = await import("./migrate.js");
    process.exitCode = await migrateCommand(argv.slice(1));
    return;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        data: { type: "string" },
        database: { type: "string" },
        "job-lease-s": { type: "string" },
        port: { type: "string" },
        host: { type: "string" },
        "busy-timeout": { type: "string" },
        "max-upload-mb": { type: "string" },
        "max-field-kb": { type: "string" },
        "public-read": { type: "boolean" },
        "login-ip-failures": { type: "string" },
        "login-user-failures": { type: "string" },
        "login-window-s": { type: "string" },
        "no-worker": { type: "boolean" },
        "pdf-time-limit-s": { type: "string" },
        "pdf-max-decoded-mb": { type: "string" },
        "max-text-mb": { type: "string" },
        "pdf-memory-mb": { type: "string" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
        verbose: { type: "boolean", short: "v" },
        "log-format": { type: "string" },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    fail((err as Error).message);
  }
  const v = parsed.values;
  const env = process.env;
  if (v.help) {
    process.stdout.write(HELP);
    return;
  }
  if (v.version) {
    process.stdout.write(`${VERSION}\n`);
    return;
  }
  const dataDir = v.data ?? env.REFSERVER_DATA;
  if (!dataDir) fail("--data DIR is required");
  const databaseUrl = v.database ?? env.REFSERVER_DATABASE_URL ?? undefined;
  if (databaseUrl !== undefined && databaseUrl !== "") {
    const checked = checkDatabaseUrl(databaseUrl);
    if (checked instanceof Error) fail(checked.message);
  }
  const jobLeaseMs = intOption("--job-lease-s", v["job-lease-s"] ?? env.REFSERVER_JOB_LEASE_S, DEFAULT_JOB_LEASE_MS / 1000, 1) * 1000;
  const port = intOption("--port", v.port ?? env.REFSERVER_PORT, 8000, 0);
  if (port > 65535) fail("--port must be at most 65535");
  const host = v.host ?? env.REFSERVER_HOST ?? "127.0.0.1";
  const busyTimeoutMs = intOption("--busy-timeout", v["busy-timeout"] ?? env.REFSERVER_BUSY_TIMEOUT_MS, DEFAULT_BUSY_TIMEOUT_MS, 0);
  const maxUploadMb = intOption("--max-upload-mb", v["max-upload-mb"] ?? env.REFSERVER_MAX_UPLOAD_MB, DEFAULT_MAX_UPLOAD_BYTES / 1024 / 1024, 1);
  const maxFieldKb = intOption("--max-field-kb", v["max-field-kb"] ?? env.REFSERVER_MAX_FIELD_KB, DEFAULT_MAX_FIELD_BYTES / 1024, 1);
  const publicReadEnv = (env.REFSERVER_PUBLIC_READ ?? "").trim().toLowerCase();
  if (!["", "0", "1", "true", "false", "yes", "no"].includes(publicReadEnv)) fail(`REFSERVER_PUBLIC_READ must be 1 or 0, got "${env.REFSERVER_PUBLIC_READ}"`);
  const publicRead = v["public-read"] ?? ["1", "true", "yes"].includes(publicReadEnv);
  const loginLimits = {
    maxFailuresPerIp: intOption("--login-ip-failures", v["login-ip-failures"] ?? env.REFSERVER_LOGIN_IP_FAILURES, DEFAULT_LOGIN_LIMITS.maxFailuresPerIp, 0),
    maxFailuresPerUser: intOption("--login-user-failures", v["login-user-failures"] ?? env.REFSERVER_LOGIN_USER_FAILURES, DEFAULT_LOGIN_LIMITS.maxFailuresPerUser, 0),
    windowMs: intOption("--login-window-s", v["login-window-s"] ?? env.REFSERVER_LOGIN_WINDOW_S, DEFAULT_LOGIN_LIMITS.windowMs / 1000, 1) * 1000,
  };
  const pdfLimits = {
    timeLimitMs: intOption("--pdf-time-limit-s", v["pdf-time-limit-s"] ?? env.REFSERVER_PDF_TIME_LIMIT_S, DEFAULT_PDF_LIMITS.timeLimitMs / 1000, 1) * 1000,
    maxDecodedBytes: intOption("--pdf-max-decoded-mb", v["pdf-max-decoded-mb"] ?? env.REFSERVER_PDF_MAX_DECODED_MB, DEFAULT_PDF_LIMITS.maxDecodedBytes / MB, 1) * MB,
    maxTextBytes: intOption("--max-text-mb", v["max-text-mb"] ?? env.REFSERVER_MAX_TEXT_MB, DEFAULT_PDF_LIMITS.maxTextBytes / MB, 1) * MB,
    memoryMb: intOption("--pdf-memory-mb", v["pdf-memory-mb"] ?? env.REFSERVER_PDF_MEMORY_MB, DEFAULT_PDF_LIMITS.memoryMb, 64),
  };
  if (v.verbose && v["log-level"] !== undefined) fail("give -v/--verbose or --log-level, not both");
  const level = v["log-level"] ?? (v.verbose ? "debug" : undefined) ?? env.REFSERVER_LOG_LEVEL ?? "info";
  const logFormat = chooseLogFormat(v["log-format"] ?? env.REFSERVER_LOG_FORMAT, process.stderr.isTTY === true);
  if (logFormat instanceof Error) fail(logFormat.message);
  if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(level)) fail(`unknown log level "${level}"`);

  let server;
  try {
    server = await startServer({
    dataDir,
    databaseUrl: databaseUrl || undefined,
    jobLeaseMs,
    port,
    host,
    busyTimeoutMs,
    maxUploadBytes: maxUploadMb * 1024 * 1024,
    maxFieldBytes: maxFieldKb * 1024,
    publicRead,
    loginLimits,
    adminUser: env.REFSERVER_ADMIN_USER || undefined,
    adminPassword: env.REFSERVER_ADMIN_PASSWORD || undefined,
    onAdminCreated: (user, password) => {
      process.stdout.write(`refserver-lite created admin "${user}" with password: ${password} (shown once)\n`);
    },
    worker: !v["no-worker"],
    pdfLimits,
    // Request logs go to stderr so stdout keeps only the lines meant for scripts.
    logger: { level, stream: logFormat === "pretty" ? prettyLogStream(process.stderr, useColor(process.stderr, env)) : process.stderr },
  });
  } catch (err) {
    // The database cannot be reached or used: one line naming it (never its password).
    if (databaseUrl) {
      process.stderr.write(`refserver-lite: cannot use the database ${redactUrl(databaseUrl)}: ${redactMessage((err as Error).message, databaseUrl)}\n`);
      process.exit(1);
    }
    throw err;
  }
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    server.app.log.info({ signal }, "shutting down");
    const force = setTimeout(() => {
      process.stderr.write("refserver-lite: shutdown took too long, exiting\n");
      process.exit(1);
    }, 30_000);
    force.unref();
    server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`refserver-lite: error while shutting down: ${(err as Error).message}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => shutdown("SIGTERM"));
  process.on("SIGINT", () => shutdown("SIGINT"));
  // Printed only once the signal handlers are in place, so a script may signal right away.
  process.stdout.write(`refserver-lite listening on ${server.url}\n`);
}
