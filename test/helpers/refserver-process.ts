/**
 * The REAL refserver-lite process (server/bin/refserver-lite.js, built dist/) for
 * end-to-end tests: a temp data dir, known admin credentials, 127.0.0.1 only.
 *
 *   const srv = await startRefServer();          // port 0: any free port
 *   await startRefServer({ inProcess: true })    // the same server in this process (no crash tests)
 *   srv.url                                      // http://127.0.0.1:PORT
 *   await srv.kill();                            // SIGKILL (a crash)
 *   await srv.restart();                         // same data dir, same port
 *   srv.db().links("4242")                       // read-only look into refserver.db
 *   await srv.close();                           // SIGTERM, then remove the data dir
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { startServer, type RunningServer } from "refserver-lite";
import { md5 } from "../../fixtures/pdf.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const REFSERVER_BIN = join(ROOT, "server", "bin", "refserver-lite.js");
const LISTENING_RE = /^refserver-lite listening on (http:\/\/127\.0\.0\.1:(\d+))\s*$/m;

export interface RefServerProcessOptions {
  /** Data directory; default a fresh temp dir (removed by close()). */
  dataDir?: string;
  /** 0 (default) picks a free port on the first start; restarts reuse the port. */
  port?: number;
  adminUser?: string;
  adminPassword?: string;
  /** Extra flags, e.g. ["--no-worker"]. */
  args?: string[];
  /** REFSERVER_LOG_LEVEL; default "warn" (request logs would flood the pipe). */
  logLevel?: string;
  /** How long to wait for the listening line. Default 50 s (a hang guard: a loaded machine starts slowly). */
  startTimeoutMs?: number;
  /**
   * Run the same server in this process (startServer from the refserver-lite package) instead of
   * its bin: no process start, for tests that never crash it. `args` may then hold only
   * `--no-worker`; stop() takes only SIGTERM (a graceful close).
   */
  inProcess?: boolean;
}

export interface PaperRow {
  doc_id: string;
  filename: string;
  file_path: string;
  file_size: number;
}

export interface LinkRow {
  paper_id: string;
  library_id: string;
  zotero_key: string;
  zotero_version: number;
}

export interface JobRow {
  job_id: string;
  paper_id: string;
  status: string;
  current_step: string | null;
  created_at: string;
  completed_at: string | null;
}

export interface DbCounts {
  papers: number;
  links: number;
  metadata: number;
  jobs: number;
  jobsByStatus: Record<string, number>;
}

/** A read-only view of refserver.db; every call opens and closes its own connection. */
export class RefServerDb {
  constructor(readonly path: string) {}

  private with<T>(fn: (db: Database.Database) => T): T {
    const db = new Database(this.path, { readonly: true, fileMustExist: true });
    try {
      db.pragma("busy_timeout = 5000");
      return fn(db);
    } finally {
      db.close();
    }
  }

  counts(): DbCounts {
    return this.with((db) => {
      const one = (sql: string): number => (db.prepare(sql).get() as { n: number }).n;
      const jobsByStatus: Record<string, number> = {};
      for (const r of db.prepare("SELECT status, COUNT(*) AS n FROM processingjob GROUP BY status").all() as Array<{ status: string; n: number }>) {
        jobsByStatus[r.status] = r.n;
      }
      return {
        papers: one("SELECT COUNT(*) AS n FROM paper"),
        links: one("SELECT COUNT(*) AS n FROM zoterolink"),
        metadata: one("SELECT COUNT(*) AS n FROM metadata"),
        jobs: one("SELECT COUNT(*) AS n FROM processingjob"),
        jobsByStatus,
      };
    });
  }

  papers(): PaperRow[] {
    return this.with((db) => db.prepare("SELECT doc_id, filename, file_path, file_size FROM paper ORDER BY doc_id").all() as PaperRow[]);
  }

  links(libraryId?: string): LinkRow[] {
    return this.with((db) =>
      libraryId === undefined
        ? (db.prepare("SELECT paper_id, library_id, zotero_key, zotero_version FROM zoterolink ORDER BY zotero_key").all() as LinkRow[])
        : (db
            .prepare("SELECT paper_id, library_id, zotero_key, zotero_version FROM zoterolink WHERE library_id = ? ORDER BY zotero_key")
            .all(libraryId) as LinkRow[]),
    );
  }

  /** (library_id, zotero_key) pairs held more than once; the UNIQUE index should make this empty. */
  duplicateKeys(): Array<{ library_id: string; zotero_key: string; n: number }> {
    return this.with(
      (db) =>
        db
          .prepare("SELECT library_id, zotero_key, COUNT(*) AS n FROM zoterolink GROUP BY library_id, zotero_key HAVING n > 1")
          .all() as Array<{ library_id: string; zotero_key: string; n: number }>,
    );
  }

  jobs(): JobRow[] {
    return this.with(
      (db) => db.prepare("SELECT job_id, paper_id, status, current_step, created_at, completed_at FROM processingjob ORDER BY created_at").all() as JobRow[],
    );
  }

  titles(): Map<string, string | null> {
    return this.with((db) => {
      const rows = db.prepare("SELECT paper_id, title FROM metadata").all() as Array<{ paper_id: string; title: string | null }>;
      return new Map(rows.map((r) => [r.paper_id, r.title]));
    });
  }
}

export class RefServerProcess {
  readonly dataDir: string;
  readonly adminUser: string;
  readonly adminPassword: string;
  private readonly ownsDataDir: boolean;
  private readonly opts: RefServerProcessOptions;
  private child: ChildProcess | undefined;
  private inProcessServer: RunningServer | undefined;
  private exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined;
  private portNumber: number;
  /** stderr of every start, most recent last (bounded), for failure messages. */
  private stderrTail = "";
  /** How many times the process has been started. */
  starts = 0;

  constructor(opts: RefServerProcessOptions = {}) {
    this.opts = opts;
    this.ownsDataDir = opts.dataDir === undefined;
    this.dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "ifz-refserver-"));
    this.adminUser = opts.adminUser ?? "admin";
    this.adminPassword = opts.adminPassword ?? "e2e-admin-password-1";
    this.portNumber = opts.port ?? 0;
  }

  get port(): number {
    if (this.portNumber === 0) throw new Error("refserver-lite not started yet");
    return this.portNumber;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  get running(): boolean {
    if (this.inProcessServer) return true;
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  get stderr(): string {
    return this.stderrTail;
  }

  db(): RefServerDb {
    return new RefServerDb(join(this.dataDir, "refserver.db"));
  }

  /** Files in pdfs/ (name → md5). */
  storedFiles(): Map<string, string> {
    const dir = join(this.dataDir, "pdfs");
    const out = new Map<string, string>();
    if (!existsSync(dir)) return out;
    for (const name of readdirSync(dir)) out.set(name, md5(readFileSync(join(dir, name))));
    return out;
  }

  /** Start the process (on the remembered port after the first start) and wait for its listening line. */
  async start(): Promise<string> {
    if (this.running) throw new Error("refserver-lite already running");
    if (this.opts.inProcess) return this.startInProcess();
    // A restart on the same port can meet a port still held for a moment: try a few times.
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.spawnOnce();
      } catch (err) {
        if (attempt >= 5 || this.portNumber === 0 || !/EADDRINUSE/.test(this.stderrTail)) throw err;
        await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
  }

  private async startInProcess(): Promise<string> {
    const args = this.opts.args ?? [];
    const unknown = args.filter((a) => a !== "--no-worker");
    if (unknown.length > 0) throw new Error(`an in-process refserver-lite takes only --no-worker, not ${unknown.join(" ")}`);
    this.inProcessServer = await startServer({
      dataDir: this.dataDir,
      port: this.portNumber,
      host: "127.0.0.1",
      adminUser: this.adminUser,
      adminPassword: this.adminPassword,
      worker: !args.includes("--no-worker"),
      logger: false,
    });
    this.starts++;
    this.portNumber = this.inProcessServer.port;
    return this.inProcessServer.url;
  }

  private spawnOnce(): Promise<string> {
    const args = [REFSERVER_BIN, "--data", this.dataDir, "--port", String(this.portNumber), "--host", "127.0.0.1", ...(this.opts.args ?? [])];
    const child = spawn(process.execPath, args, {
      env: {
        PATH: process.env.PATH,
        HOME: this.dataDir,
        NODE_OPTIONS: "",
        REFSERVER_ADMIN_USER: this.adminUser,
        REFSERVER_ADMIN_PASSWORD: this.adminPassword,
        REFSERVER_LOG_LEVEL: this.opts.logLevel ?? "warn",
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    this.starts++;
    this.stderrTail += `--- start ${this.starts} (pid ${child.pid}) ---\n`;
    this.exited = new Promise((resolveExit) => child.on("close", (code, signal) => resolveExit({ code, signal })));
    child.stderr!.on("data", (d: Buffer) => {
      this.stderrTail = (this.stderrTail + d.toString()).slice(-20_000);
    });
    return new Promise<string>((resolveStart, reject) => {
      let stdout = "";
      const timer = setTimeout(() => {
        child.kill("SIGKILL");
        reject(new Error(`refserver-lite printed no listening line in time; stderr:\n${this.stderrTail}`));
      }, this.opts.startTimeoutMs ?? 50_000);
      const onData = (d: Buffer): void => {
        stdout += d.toString();
        const m = LISTENING_RE.exec(stdout);
        if (!m || m[2] === undefined) return;
        clearTimeout(timer);
        child.stdout!.off("data", onData);
        child.stdout!.resume();
        const port = Number(m[2]);
        if (this.portNumber !== 0 && port !== this.portNumber) {
          reject(new Error(`refserver-lite listened on ${port}, expected ${this.portNumber}`));
          return;
        }
        this.portNumber = port;
        resolveStart(m[1] ?? this.url);
      };
      child.stdout!.on("data", onData);
      child.once("close", (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`refserver-lite exited before listening (code ${code}, signal ${signal}); stderr:\n${this.stderrTail}`));
      });
    });
  }

  /** Send a signal and wait for the process to end. SIGTERM = graceful, SIGKILL = a crash. */
  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 35_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.opts.inProcess) {
      if (signal !== "SIGTERM") throw new Error(`an in-process refserver-lite cannot take ${signal}: start it as a process`);
      const server = this.inProcessServer;
      this.inProcessServer = undefined;
      if (server) await server.close();
      return { code: server ? 0 : null, signal: null };
    }
    const child = this.child;
    const exited = this.exited;
    if (!child || !exited) return { code: null, signal: null };
    if (this.running) child.kill(signal);
    let timer: NodeJS.Timeout | undefined;
    const result = await Promise.race([
      exited,
      new Promise<null>((r) => {
        timer = setTimeout(() => r(null), timeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (result === null) {
      child.kill("SIGKILL");
      return exited;
    }
    return result;
  }

  kill(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.stop("SIGKILL");
  }

  /** Stop (SIGKILL by default: a crash) and start again on the same data dir and port. */
  async restart(signal: NodeJS.Signals = "SIGKILL"): Promise<string> {
    await this.stop(signal);
    return this.start();
  }

  /** Stop the process (SIGTERM, SIGKILL if it hangs) and remove a temp data dir. */
  async close(): Promise<void> {
    await this.stop("SIGTERM", 10_000);
    if (this.ownsDataDir) rmSync(this.dataDir, { recursive: true, force: true });
  }

  /** Log in as the admin directly (not through a proxy); returns the bearer token. */
  async login(): Promise<string> {
    const res = await fetch(`${this.url}/api/v1/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ username: this.adminUser, password: this.adminPassword }).toString(),
    });
    const body = (await res.json()) as { access_token?: string; detail?: unknown };
    if (res.status !== 200 || typeof body.access_token !== "string") throw new Error(`login answered ${res.status}: ${JSON.stringify(body)}`);
    return body.access_token;
  }

  /** GET /api/v1/zotero/links?library_id= (the server's own view of the keys it holds). */
  async apiLinks(libraryId: string, token?: string): Promise<Array<{ zotero_key: string; doc_id: string; zotero_version: number }>> {
    const res = await fetch(`${this.url}/api/v1/zotero/links?library_id=${encodeURIComponent(libraryId)}`, {
      headers: { authorization: `Bearer ${token ?? (await this.login())}` },
    });
    if (res.status !== 200) throw new Error(`links answered ${res.status}: ${await res.text()}`);
    return ((await res.json()) as { links: Array<{ zotero_key: string; doc_id: string; zotero_version: number }> }).links;
  }

  /** GET /download/pdf/{doc_id}: the stored bytes (with a token: the server is private by default). */
  async download(docId: string, token?: string): Promise<Buffer> {
    const res = await fetch(`${this.url}/download/pdf/${encodeURIComponent(docId)}`, {
      headers: { authorization: `Bearer ${token ?? (await this.login())}` },
    });
    if (res.status !== 200) throw new Error(`download of ${docId} answered ${res.status}`);
    return Buffer.from(await res.arrayBuffer());
  }

  /** POST a PDF straight to the server (no Zotero link unless zoteroKey/libraryId are given). */
  async upload(token: string, file: Buffer, fields: { title: string; filename?: string; zoteroKey?: string; libraryId?: string }): Promise<{ status: number; body: unknown }> {
    const form = new FormData();
    form.append("title", fields.title);
    form.append("authors", JSON.stringify(["E2E Helper"]));
    if (fields.zoteroKey !== undefined) form.append("zotero_key", fields.zoteroKey);
    if (fields.libraryId !== undefined) form.append("zotero_library_id", fields.libraryId);
    form.append("file", new Blob([file], { type: "application/pdf" }), fields.filename ?? "upload.pdf");
    const res = await fetch(`${this.url}/api/v1/papers/upload_with_metadata`, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: form });
    const text = await res.text();
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.status, body };
  }
}

/** Construct and start in one step. */
export async function startRefServer(opts: RefServerProcessOptions = {}): Promise<RefServerProcess> {
  const srv = new RefServerProcess(opts);
  try {
    await srv.start();
  } catch (err) {
    await srv.close();
    throw err;
  }
  return srv;
}
