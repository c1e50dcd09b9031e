import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { main } from "../../src/cli/main.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
export const BIN = join(ROOT, "bin", "import-from-zotero.js");

export interface Sandbox {
  dir: string;
  configPath: string;
  checkpoint: string;
  env: NodeJS.ProcessEnv;
  stateDir: string;
  cacheDir: string;
}

export interface SandboxOptions {
  zoteroUrl: string;
  libraryId: string;
  libraryType?: "user" | "group";
  apiKey: string;
  refserverUrl: string;
  username?: string;
  password?: string;
  batchSize?: number;
  delaySeconds?: number;
  retries?: number;
  timeoutSeconds?: number;
  giveUpAfterSeconds?: number;
  extra?: string;
}

/**
 * A temp home for one CLI run: config file, XDG dirs, no inherited secrets. Made under
 * os.tmpdir(); whoever makes one removes it (removeSandbox, or World.close()), since the
 * suite fails when anything is left in its TMPDIR (test/global-setup.ts).
 */
export function makeSandbox(o: SandboxOptions): Sandbox {
  const dir = mkdtempSync(join(tmpdir(), "ifz-cli-"));
  const stateDir = join(dir, "state");
  const cacheDir = join(dir, "cache");
  mkdirSync(stateDir, { recursive: true });
  const configPath = join(dir, "config.yml");
  writeFileSync(
    configPath,
    [
      "zotero:",
      `  library_id: "${o.libraryId}"`,
      `  library_type: ${o.libraryType ?? "user"}`,
      `  api_key: "${o.apiKey}"`,
      `  api_url: "${o.zoteroUrl}"`,
      "refserver:",
      `  api_url: "${o.refserverUrl}"`,
      `  username: "${o.username ?? "admin"}"`,
      `  password: "${o.password ?? "admin123"}"`,
      `  timeout_seconds: ${o.timeoutSeconds ?? 10}`,
      "import_options:",
      `  batch_size: ${o.batchSize ?? 4}`,
      `  delay_seconds: ${o.delaySeconds ?? 0}`,
      "retry:",
      `  retries: ${o.retries ?? 8}`,
      "  min_delay_seconds: 0.01",
      "  max_delay_seconds: 0.05",
      `  give_up_after_seconds: ${o.giveUpAfterSeconds ?? 30}`,
      o.extra ?? "",
    ].join("\n"),
    { mode: 0o600 },
  );
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: dir,
    XDG_STATE_HOME: stateDir,
    XDG_CACHE_HOME: cacheDir,
    XDG_CONFIG_HOME: join(dir, "config-home"),
    NODE_OPTIONS: "",
    // The CLI's own temp files (e.g. the Zotero database snapshot) go where the suite's go, so a
    // leak by the CLI is caught by the suite's TMPDIR check too.
    TMPDIR: tmpdir(),
  };
  return { dir, configPath, checkpoint: join(stateDir, "import-from-zotero", "checkpoint.ndjson"), env, stateDir, cacheDir };
}

/** CLI processes started by startCli that have not ended yet, by sandbox dir. */
const running = new Map<string, Set<ChildProcess>>();

/**
 * Remove a sandbox made by makeSandbox, and everything the CLI wrote in it. A CLI process still
 * running in it (a test that failed before awaiting it) is killed first: it would go on writing
 * its journal and reports there and leave the directory behind.
 */
export async function removeSandbox(sandbox: Sandbox): Promise<void> {
  const children = [...(running.get(sandbox.dir) ?? [])];
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolveClosed) => {
          child.once("close", () => resolveClosed());
          child.kill("SIGKILL");
        }),
    ),
  );
  running.delete(sandbox.dir);
  rmSync(sandbox.dir, { recursive: true, force: true, maxRetries: 5 });
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunningCli {
  child: ChildProcess;
  done: Promise<CliResult>;
  output(): { stdout: string; stderr: string };
}

/** Start the real CLI process (never spawnSync: the fakes live in this process). */
export function startCli(args: string[], sandbox: Sandbox, env: NodeJS.ProcessEnv = {}): RunningCli {
  const child = spawn(process.execPath, [BIN, "--config", sandbox.configPath, ...args], { cwd: sandbox.dir, env: { ...sandbox.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  const inSandbox = running.get(sandbox.dir) ?? new Set<ChildProcess>();
  running.set(sandbox.dir, inSandbox.add(child));
  child.once("close", () => inSandbox.delete(child));
  let stdout = "";
  let stderr = "";
  child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<CliResult>((resolvePromise) => {
    child.on("close", (code, signal) => resolvePromise({ code, signal, stdout, stderr }));
  });
  return { child, done, output: () => ({ stdout, stderr }) };
}

/** Run the real CLI as its own process: for what only a process shows (signals, exit, warnings, the bin). */
export function runCliProcess(args: string[], sandbox: Sandbox, env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  return startCli(args, sandbox, env).done;
}

/** Collects what the CLI writes; never a terminal, as with a process whose output is piped. */
class Capture extends Writable {
  text = "";
  readonly isTTY = false;
  override _write(chunk: Buffer | string, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.text += chunk.toString();
    callback();
  }
}

/**
 * Run the CLI in this process through `main(argv, io)`, with the sandbox's environment and
 * working directory, as bin/import-from-zotero.js would: same code, same output, same exit code,
 * without the process start (most CLI tests). `stop`/`hardStop` abort like the first and second
 * signal of a real process.
 */
export async function runCli(args: string[], sandbox: Sandbox, env: NodeJS.ProcessEnv = {}, signals: { stop?: AbortSignal; hardStop?: AbortSignal } = {}): Promise<CliResult> {
  const stdout = new Capture();
  const stderr = new Capture();
  const code = await main(["--config", sandbox.configPath, ...args], {
    stdout: stdout as unknown as NodeJS.WriteStream,
    stderr: stderr as unknown as NodeJS.WriteStream,
    env: { ...sandbox.env, ...env },
    cwd: sandbox.dir,
    stop: signals.stop ?? new AbortController().signal,
    hardStop: signals.hardStop ?? new AbortController().signal,
  });
  return { code, signal: null, stdout: stdout.text, stderr: stderr.text };
}

/** Poll a condition (state of a fake) without fixed sleeps; the timeout is only a hang guard. */
export async function waitFor(condition: () => boolean, timeoutMs = 50_000, what = "condition"): Promise<void> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
