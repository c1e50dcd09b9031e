/**
 * npm run demo: the whole importer on this computer, with nothing to set up.
 *
 *   1. builds a sample Zotero data directory (zotero.sqlite + storage/ PDFs) in a temp dir;
 *   2. starts refserver-lite (server/ workspace) in this process on 127.0.0.1, embedded SQLite
 *      in the temp dir, with a generated admin password;
 *   3. runs the real import-from-zotero CLI against both (progress bars on a terminal);
 *   4. prints what happened and where to look, then stops the server: at once when not on a
 *      terminal (or with --exit), else when you press Ctrl-C.
 *
 * Flags: --exit (stop when done), --dir PATH (use PATH instead of a new temp dir),
 *        --port N (server port; default: a free one). DEMO_EXIT=1 is the same as --exit.
 * The directory is kept afterwards (it holds the report and the server's data).
 */
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { startServer } from "refserver-lite";
import { importablePdfs, makeSampleLibrary, writeZoteroDataDir } from "./sample-library.js";

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root, from scripts/ or from its compiled copy under .tmp/demo/scripts/. */
const ROOT = here.includes(`${join(".tmp", "demo")}`) ? resolve(here, "..", "..", "..") : resolve(here, "..");
const BIN = join(ROOT, "bin", "import-from-zotero.js");

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

const interactive = Boolean(process.stdout.isTTY && process.stdin.isTTY) && !process.argv.includes("--exit") && !process.env.DEMO_EXIT && !process.env.CI;
const keepDir = arg("--dir");
const root = keepDir ? resolve(keepDir) : mkdtempSync(join(tmpdir(), "import-from-zotero-demo-"));
mkdirSync(root, { recursive: true });

const say = (line = "") => process.stdout.write(`${line}\n`);

// Ctrl-C reaches the importer too (it finishes the papers in flight and exits 130); this
// process only notes it, so the server is always closed properly.
let interrupted = false;
const waiters: (() => void)[] = [];
const onSignal = () => {
  interrupted = true;
  for (const w of waiters.splice(0)) w();
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

async function main(): Promise<number> {
  say(`import-from-zotero demo — everything lives in ${root}`);
  say();

  // 1. A Zotero data directory, as Zotero desktop leaves it.
  const lib = makeSampleLibrary();
  const layout = writeZoteroDataDir(lib, join(root, "zotero"));
  const expected = importablePdfs(lib, { linkedFiles: true });
  say(`1. Sample Zotero library: ${lib.items.length} items (${expected.length} with a stored PDF) in ${layout.dataDir}`);

  // 2. The companion server, in this process.
  const server = await startServer({
    dataDir: join(root, "refserver"),
    host: "127.0.0.1",
    port: Number(arg("--port") ?? 0),
    logger: false,
    workerPollIntervalMs: 200,
  });
  const password = server.generatedAdminPassword;
  say(`2. refserver-lite listening on ${server.url} (data: ${join(root, "refserver")})`);
  if (password) say(`   admin user "admin", generated password: ${password}   (this demo's server only)`);
  say();

  let stopped = false;
  const stop = async (why: string) => {
    if (stopped) return;
    stopped = true;
    say(`Stopping the server (${why}).`);
    await server.close();
  };

  try {
    // 3. The real importer, reading the data directory (no API key, no network but loopback).
    const state = join(root, "state");
    const configPath = join(root, "config.yml");
    writeFileSync(
      configPath,
      [
        "zotero:",
        "  source: local",
        `  data_dir: ${JSON.stringify(layout.dataDir)}`,
        `  library_id: "${lib.userId}"`,
        "refserver:",
        `  api_url: ${JSON.stringify(server.url)}`,
        "  username: admin",
        "import_options:",
        "  batch_size: 4",
        "paths:",
        `  checkpoint: ${JSON.stringify(join(state, "checkpoint.ndjson"))}`,
        `  cache_dir: ${JSON.stringify(join(state, "cache"))}`,
        `  report_dir: ${JSON.stringify(join(state, "reports"))}`,
        "",
      ].join("\n"),
      { mode: 0o600 },
    );
    say(`3. Running: import-from-zotero --config ${configPath}`);
    say();
    const code = await new Promise<number>((resolveCode) => {
      const child = spawn(process.execPath, [BIN, "--config", configPath], {
        stdio: "inherit",
        // HOME holds the sample Zotero profile (prefs.js with the linked-files base directory).
        env: { ...process.env, HOME: layout.home, REFSERVER_PASSWORD: password ?? "" },
      });
      child.on("close", (c, signal) => resolveCode(c ?? (signal ? 130 : 1)));
    });
    say();

    // 4. What happened, and where to look.
    await server.waitForIdle();
    const token = await login(server.url, password ?? "");
    const jobs = (await (await fetch(`${server.url}/api/v1/jobs?limit=500`, { headers: { Authorization: `Bearer ${token}` } })).json()) as { total: number; jobs: { status: string; filename: string }[] };
    const links = (await (await fetch(`${server.url}/api/v1/zotero/links?library_id=${lib.userId}`, { headers: { Authorization: `Bearer ${token}` } })).json()) as { links: unknown[] };
    const completed = jobs.jobs.filter((j) => j.status === "completed").length;
    const reports = readdirSync(join(state, "reports")).filter((f) => f.endsWith(".json")).sort();
    const report = reports.length ? join(state, "reports", reports[reports.length - 1]!) : null;
    say(`4. Result: the importer exited with ${code}; the server holds ${links.links.length} papers from this library (expected ${expected.length}); ${completed} of ${jobs.total} processing jobs completed.`);
    say();
    say("Where to look:");
    say(`   web page      ${server.url}/   (log in as admin with the password above)`);
    say(`   server        ${server.url}   (GET /health)`);
    say(`   jobs          curl -s -H "Authorization: Bearer $TOKEN" ${server.url}/api/v1/jobs`);
    say(`                 with TOKEN=$(curl -s -d username=admin -d password=<the password above> ${server.url}/api/v1/auth/login | sed 's/.*"access_token":"\\([^"]*\\)".*/\\1/')`);
    say(`   progress      curl -s -H "Authorization: Bearer $TOKEN" ${server.url}/api/v1/admin/progress`);
    if (report) say(`   report        ${report}`);
    say(`   checkpoint    ${join(state, "checkpoint.ndjson")}   (run it again: nothing is sent twice)`);
    say(`   Zotero data   ${layout.dataDir}   (read through a snapshot, left untouched)`);
    say();
    const summary = { exitCode: code, papers: links.links.length, expected: expected.length, jobsCompleted: completed, report };
    writeFileSync(join(root, "demo-result.json"), `${JSON.stringify(summary, null, 2)}\n`);

    if (interactive && !interrupted) {
      say("The server keeps running so you can look around. Press Ctrl-C to stop it.");
      await new Promise<void>((resolveWait) => waiters.push(resolveWait));
      await stop("Ctrl-C");
    } else if (interrupted) {
      await stop("interrupted");
    } else {
      await stop("the demo is done; run it on a terminal to keep the server up until Ctrl-C");
    }
    return code === 0 && links.links.length === expected.length ? 0 : 1;
  } finally {
    await stop("the demo ended");
  }
}

async function login(url: string, password: string): Promise<string> {
  const response = await fetch(`${url}/api/v1/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ username: "admin", password }).toString(),
  });
  if (!response.ok) throw new Error(`login to the demo server failed: ${response.status}`);
  return ((await response.json()) as { access_token: string }).access_token;
}

main().then(
  (code) => {
    say(`Everything is still in ${root} (remove it with: rm -rf ${JSON.stringify(root)}).`);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`demo failed: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exitCode = 1;
    process.exit();
  },
);
