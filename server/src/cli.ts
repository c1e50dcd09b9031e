import { parseArgs } from "node:util";
import { DEFAULT_MAX_UPLOAD_BYTES } from "./app.js";
import { DEFAULT_BUSY_TIMEOUT_MS } from "./db/connection.js";
import { startServer } from "./server.js";
import { VERSION } from "./version.js";

const HELP = `refserver-lite ${VERSION}: a RefServerLite-compatible paper server (SQLite, WAL)

Usage: refserver-lite --data DIR [--port 8000] [--host 127.0.0.1] [options]

Flags:
  --data DIR              data directory (database, PDFs, JWT secret); created if missing
                          (env REFSERVER_DATA)
  --port N                port to listen on, 0 for any free port (default 8000; env REFSERVER_PORT)
  --host ADDR             address to bind (default 127.0.0.1; env REFSERVER_HOST)
  --busy-timeout MS       SQLite busy timeout in ms (default ${DEFAULT_BUSY_TIMEOUT_MS}; env REFSERVER_BUSY_TIMEOUT_MS)
  --max-upload-mb N       largest accepted upload in MB (default ${DEFAULT_MAX_UPLOAD_BYTES / 1024 / 1024}; env REFSERVER_MAX_UPLOAD_MB)
  --no-worker             do not run the background pipeline
  --naive                 reproduce the original server's SQLite configuration (rollback
                          journal, autocommit statements, deferred transactions, busy timeout
                          5 s, lazy job query held across documents): for benchmarks only
  --log-level LEVEL       fatal|error|warn|info|debug|trace|silent (default info; env REFSERVER_LOG_LEVEL)
  -h, --help              show this help
  -v, --version           show the version

Environment:
  REFSERVER_ADMIN_USER      admin username to create (or reset) at start
  REFSERVER_ADMIN_PASSWORD  that admin's password. When no admin exists and none is given, an
                            admin "admin" is created with a random password, printed once.
  REFSERVER_DATA, REFSERVER_PORT, REFSERVER_HOST, REFSERVER_BUSY_TIMEOUT_MS,
  REFSERVER_MAX_UPLOAD_MB, REFSERVER_LOG_LEVEL   defaults for the flags above

On start it prints one line to stdout: "refserver-lite listening on http://HOST:PORT".
SIGTERM/SIGINT: stop accepting, finish in-flight requests, stop the worker between steps,
checkpoint the WAL and close the database.
`;

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
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        data: { type: "string" },
        port: { type: "string" },
        host: { type: "string" },
        "busy-timeout": { type: "string" },
        "max-upload-mb": { type: "string" },
        "no-worker": { type: "boolean" },
        naive: { type: "boolean" },
        "log-level": { type: "string" },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "v" },
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
  const port = intOption("--port", v.port ?? env.REFSERVER_PORT, 8000, 0);
  if (port > 65535) fail("--port must be at most 65535");
  const host = v.host ?? env.REFSERVER_HOST ?? "127.0.0.1";
  const busyTimeoutMs = intOption("--busy-timeout", v["busy-timeout"] ?? env.REFSERVER_BUSY_TIMEOUT_MS, DEFAULT_BUSY_TIMEOUT_MS, 0);
  const maxUploadMb = intOption("--max-upload-mb", v["max-upload-mb"] ?? env.REFSERVER_MAX_UPLOAD_MB, DEFAULT_MAX_UPLOAD_BYTES / 1024 / 1024, 1);
  const level = v["log-level"] ?? env.REFSERVER_LOG_LEVEL ?? "info";
  if (!["fatal", "error", "warn", "info", "debug", "trace", "silent"].includes(level)) fail(`unknown log level "${level}"`);

  const server = await startServer({
    dataDir,
    port,
    host,
    busyTimeoutMs,
    maxUploadBytes: maxUploadMb * 1024 * 1024,
    adminUser: env.REFSERVER_ADMIN_USER || undefined,
    adminPassword: env.REFSERVER_ADMIN_PASSWORD || undefined,
    onAdminCreated: (user, password) => {
      process.stdout.write(`refserver-lite created admin "${user}" with password: ${password} (shown once)\n`);
    },
    worker: !v["no-worker"],
    naive: v.naive ?? false,
    // Request logs go to stderr so stdout keeps only the lines meant for scripts.
    logger: { level, stream: process.stderr },
  });
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
