// Shared plumbing for the benchmarks: real processes (importer, refserver-lite), config
// sandboxes, peak-RSS polling, tables, and appending results to BENCHMARKS.md.
// Everything binds to 127.0.0.1; every wait is bounded.
import { spawn, execSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, totalmem, cpus, loadavg } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** The binaries the benchmarks run: a private snapshot of the build (see snapshotBuild). */
export const BINS = {
  importer: join(ROOT, "bin", "import-from-zotero.js"),
  server: join(ROOT, "server", "bin", "refserver-lite.js"),
  source: "working tree",
};

function git(cmd) {
  try {
    return execSync(`git ${cmd}`, { cwd: ROOT, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "";
  }
}

/**
 * Copy bin/ + dist/ (importer) and server/bin + server/dist into bench/out/snap, check both start,
 * and run every benchmark from that copy: other sessions rebuilding dist/ meanwhile cannot
 * change or break the code under measurement. Packages still resolve from ROOT/node_modules.
 */
export function snapshotBuild() {
  const snap = join(ROOT, "bench", "out", "snap");
  for (let attempt = 1; attempt <= 5; attempt++) {
    rmrf(snap);
    cpSync(join(ROOT, "bin"), join(snap, "bin"), { recursive: true });
    cpSync(join(ROOT, "dist"), join(snap, "dist"), { recursive: true });
    cpSync(join(ROOT, "server", "bin"), join(snap, "server", "bin"), { recursive: true });
    cpSync(join(ROOT, "server", "dist"), join(snap, "server", "dist"), { recursive: true });
    const importer = join(snap, "bin", "import-from-zotero.js");
    const server = join(snap, "server", "bin", "refserver-lite.js");
    try {
      execSync(`"${process.execPath}" "${importer}" --help`, { stdio: "ignore", timeout: 30_000 });
      execSync(`"${process.execPath}" "${server}" --help`, { stdio: "ignore", timeout: 30_000 });
    } catch {
      console.error(`snapshot of the build does not start (a rebuild in progress?): attempt ${attempt} of 5`);
      execSync("sleep 5");
      continue;
    }
    const dirty = git("status --porcelain -- src server/src").split("\n").filter(Boolean).length;
    BINS.importer = importer;
    BINS.server = server;
    BINS.source = `commit ${git("rev-parse --short HEAD") || "?"}${dirty ? ` + ${dirty} uncommitted file(s) under src/ or server/src/ (other sessions' work in progress)` : ""}, built by npm run build, snapshot at ${new Date().toISOString()}`;
    return BINS;
  }
  throw new Error("could not take a working snapshot of dist/ in 5 attempts");
}
export const BENCHMARKS_MD = join(ROOT, "BENCHMARKS.md");
const CPU_AT_EXIT = pathToFileURL(join(ROOT, "bench", "lib", "cpu-at-exit.mjs")).href;
/** Preload for a separate run that measures the live heap (see live-heap.mjs). */
export const LIVE_HEAP = pathToFileURL(join(ROOT, "bench", "lib", "live-heap.mjs")).href;
export const ADMIN = { user: "bench", password: "bench-password-1" };

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function tempDir(prefix) {
  return mkdtempSync(join(process.env.BENCH_TMP ?? tmpdir(), `ifz-bench-${prefix}-`));
}

export function rmrf(path) {
  try {
    rmSync(path, { recursive: true, force: true });
  } catch {
    /* best effort */
  }
}

/** Peak resident set (VmHWM) of a live process, in bytes; null once it is gone. */
export function vmHWM(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(s);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

const CLK_TCK = (() => {
  try {
    return Number(execSync("getconf CLK_TCK", { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** Whole-machine CPU seconds busy (all cores, everything but idle and iowait) so far, from /proc/stat. */
export function machineBusySeconds() {
  try {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const [user, nice, system, , , irq, softirq, steal] = f;
    return (user + nice + system + irq + softirq + steal) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** CPU seconds (user + system) used so far by a live process; null once it is gone. */
export function cpuSeconds(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return (Number(f[11]) + Number(f[12])) / CLK_TCK; // fields 14 and 15: utime, stime
  } catch {
    return null;
  }
}

/**
 * Poll VmHWM (and CPU time) every `everyMs` until stopped; VmHWM is itself a high-water mark,
 * so the last read wins. CPU time is the last sample (up to everyMs short of the total).
 */
export function pollPeakRss(pid, everyMs = 20) {
  let peak = 0;
  let samples = 0;
  let cpu = 0;
  const t = setInterval(() => {
    const v = vmHWM(pid);
    if (v !== null) {
      samples++;
      if (v > peak) peak = v;
    }
    const c = cpuSeconds(pid);
    if (c !== null) cpu = c;
  }, everyMs);
  return {
    stop() {
      clearInterval(t);
      return { peak, samples, cpu };
    },
    get peak() {
      return peak;
    },
  };
}

export function machine() {
  const mem = `${(totalmem() / 2 ** 30).toFixed(1)} GiB`;
  let memLine = mem;
  try {
    memLine = execSync("free -h | sed -n 2p", { encoding: "utf8" }).trim().replace(/\s+/g, " ");
  } catch {
    /* keep os.totalmem */
  }
  return {
    date: execSync("date -u", { encoding: "utf8" }).trim(),
    nproc: execSync("nproc", { encoding: "utf8" }).trim(),
    cpu: cpus()[0]?.model ?? "unknown",
    mem,
    memLine,
    node: process.version,
    load: loadavg().map((x) => x.toFixed(2)).join(" "),
    platform: `${process.platform} ${execSync("uname -r", { encoding: "utf8" }).trim()}`,
  };
}

export function fmt(n, digits = 2) {
  if (n === null || n === undefined || Number.isNaN(n)) return "–";
  return Number(n).toFixed(digits);
}

export function mb(bytes, digits = 1) {
  return fmt(bytes / 2 ** 20, digits);
}

/** A GitHub-style markdown table. `align`: "l" | "r" per column. */
export function table(headers, rows, align = headers.map((_, i) => (i === 0 ? "l" : "r"))) {
  const head = `| ${headers.join(" | ")} |`;
  const sep = `|${align.map((a) => (a === "r" ? "---:" : "---")).join("|")}|`;
  const body = rows.map((r) => `| ${r.map((c) => String(c)).join(" | ")} |`);
  return [head, sep, ...body].join("\n");
}

export const RESULTS_DIR = join(ROOT, "bench", "results");

/**
 * Print a section, and keep the run as JSON under bench/results/ (the raw runs BENCHMARKS.md
 * cites): name-YYYYMMDDTHHMMSSZ.json with the command, code, machine, load at start and end, the
 * markdown table and the structured `data`. BENCH_NO_WRITE=1 only prints.
 */
export function report({ name, title, command, m, text, data = null }) {
  const loadEnd = loadavg().map((x) => x.toFixed(2)).join(" ");
  const block = [
    `### ${title} (${m.date})`,
    "",
    `Command: \`${command}\``,
    `Code: ${BINS.source}`,
    `Machine: ${m.nproc} cores (${m.cpu}), memory ${m.mem}, Node ${m.node}, ${m.platform}; load average ${m.load} at the start, ${loadEnd} at the end`,
    "",
    text.trim(),
    "",
    "",
  ].join("\n");
  process.stdout.write(`\n${block}`);
  if (process.env.BENCH_NO_WRITE === "1") return;
  mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
  const file = join(RESULTS_DIR, `${name ?? title.replace(/[^a-z0-9]+/gi, "-").toLowerCase()}-${stamp}.json`);
  writeFileSync(file, JSON.stringify({ name, title, command, code: BINS.source, machine: { ...m, loadEnd }, text, data }, null, 2) + "\n");
  console.error(`result kept in ${file.slice(ROOT.length + 1)}`);
}

// ---------------------------------------------------------------------------
// refserver-lite as a real process
// ---------------------------------------------------------------------------

export async function startRefServer({ dataDir, worker = false, extra = [], timeoutMs = 30_000 } = {}) {
  mkdirSync(dataDir, { recursive: true });
  const args = [BINS.server, "--data", dataDir, "--host", "127.0.0.1", "--port", "0", "--log-level", "warn", ...(worker ? [] : ["--no-worker"]), ...extra];
  const child = spawn(process.execPath, args, {
    env: { PATH: process.env.PATH, HOME: dataDir, REFSERVER_ADMIN_USER: ADMIN.user, REFSERVER_ADMIN_PASSWORD: ADMIN.password },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stderr.on("data", (d) => {
    err += d;
    if (err.length > 200_000) err = err.slice(-100_000);
  });
  const exited = new Promise((r) => child.on("exit", (code, signal) => r({ code, signal })));
  const url = await new Promise((resolveUrl, reject) => {
    const t = setTimeout(() => reject(new Error(`refserver-lite did not print its listening line in ${timeoutMs} ms: ${err.slice(-2000)}`)), timeoutMs);
    child.stdout.on("data", (d) => {
      out += d;
      const m = /^refserver-lite listening on (http:\/\/127\.0\.0\.1:\d+)$/m.exec(out);
      if (m) {
        clearTimeout(t);
        resolveUrl(m[1]);
      }
    });
    child.on("exit", (code) => {
      clearTimeout(t);
      reject(new Error(`refserver-lite exited ${code} before listening: ${err.slice(-2000)}`));
    });
  });
  return {
    url,
    child,
    pid: child.pid,
    stderr: () => err,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

export async function serverLogin(url) {
  const res = await fetch(`${url}/api/v1/auth/login`, { method: "POST", body: new URLSearchParams({ username: ADMIN.user, password: ADMIN.password }) });
  if (res.status !== 200) throw new Error(`login ${res.status}: ${await res.text()}`);
  return (await res.json()).access_token;
}

/** The Zotero links the server holds for a library (companion endpoint). */
export async function serverLinks(url, libraryId) {
  const token = await serverLogin(url);
  const res = await fetch(`${url}/api/v1/zotero/links?library_id=${libraryId}`, { headers: { authorization: `Bearer ${token}` } });
  if (res.status !== 200) throw new Error(`links ${res.status}`);
  return (await res.json()).links;
}

// ---------------------------------------------------------------------------
// The importer as a real process
// ---------------------------------------------------------------------------

/**
 * A temp home for one importer run: config.yml (the importer's real retry defaults unless
 * overridden), XDG dirs. `importOptions` / `retry` are merged into the YAML.
 */
export function makeSandbox({ zoteroUrl, libraryId, apiKey, refserverUrl, importOptions = {}, retry = {}, timeoutSeconds = 120 }) {
  const dir = tempDir("home");
  const stateDir = join(dir, "state");
  const cacheDir = join(dir, "cache");
  mkdirSync(stateDir, { recursive: true });
  const yamlValue = (v) => (typeof v === "string" ? JSON.stringify(v) : String(v));
  const lines = [
    "zotero:",
    `  library_id: "${libraryId}"`,
    "  library_type: user",
    `  api_key: "${apiKey}"`,
    `  api_url: "${zoteroUrl}"`,
    "refserver:",
    `  api_url: "${refserverUrl}"`,
    `  username: "${ADMIN.user}"`,
    `  password: "${ADMIN.password}"`,
    `  timeout_seconds: ${timeoutSeconds}`,
    "import_options:",
    ...Object.entries({ batch_size: 4, delay_seconds: 0, ...importOptions }).map(([k, v]) => `  ${k}: ${yamlValue(v)}`),
  ];
  if (Object.keys(retry).length > 0) lines.push("retry:", ...Object.entries(retry).map(([k, v]) => `  ${k}: ${yamlValue(v)}`));
  const configPath = join(dir, "config.yml");
  writeFileSync(configPath, lines.join("\n") + "\n", { mode: 0o600 });
  const env = {
    PATH: process.env.PATH,
    HOME: dir,
    XDG_STATE_HOME: stateDir,
    XDG_CACHE_HOME: cacheDir,
    XDG_CONFIG_HOME: join(dir, "config-home"),
    NODE_OPTIONS: "",
  };
  return { dir, configPath, env, checkpoint: join(stateDir, "import-from-zotero", "checkpoint.ndjson"), cacheDir };
}

/**
 * Spawn the importer; resolves when it exits. Tracks peak RSS (VmHWM) of the importer process.
 * Bounded by `timeoutMs` (then SIGKILL, reported as timedOut).
 */
export function runImporter(sandbox, args = [], { timeoutMs = 600_000, pollMs = 20, onSpawn, nodeArgs: extraNodeArgs = [], env: extraEnv = {} } = {}) {
  const t0 = performance.now();
  // BENCH_IMPORTER_NODE_ARGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof") go to the importer's node only.
  const nodeArgs = [...(process.env.BENCH_IMPORTER_NODE_ARGS ?? "").split(" ").filter(Boolean), ...extraNodeArgs];
  // The importer's own CPU time, exact, written at its exit by a preloaded module.
  const cpuFile = join(sandbox.dir, `cpu-${Date.now()}-${Math.random().toString(16).slice(2)}.json`);
  const child = spawn(process.execPath, ["--import", CPU_AT_EXIT, ...nodeArgs, BINS.importer, "--config", sandbox.configPath, ...args], {
    cwd: sandbox.dir,
    env: { ...sandbox.env, ...extraEnv, BENCH_CPU_FILE: cpuFile },
    stdio: ["ignore", "pipe", "pipe"],
  });
  onSpawn?.(child, t0);
  const rss = pollPeakRss(child.pid, pollMs);
  let stdout = "";
  let stderr = "";
  const cap = (s) => (s.length > 2_000_000 ? s.slice(-1_000_000) : s);
  child.stdout.on("data", (d) => (stdout = cap(stdout + d)));
  child.stderr.on("data", (d) => (stderr = cap(stderr + d)));
  let timedOut = false;
  const killer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, timeoutMs);
  return new Promise((resolveRun, rejectRun) => {
    // Read VmHWM one last time right before the process is reaped is not possible from here;
    // the poll every pollMs catches the plateau (VmHWM never decreases).
    child.on("close", (code, signal) => {
      clearTimeout(killer);
      const { peak, samples, cpu } = rss.stop();
      if (code !== 0 && /SyntaxError|ERR_MODULE_NOT_FOUND|Cannot find module/.test(stderr)) {
        rejectRun(new Error(`the importer did not start (broken build?), stopping: ${stderr.slice(-1500)}`));
        return;
      }
      let cpuS = cpu;
      if (existsSync(cpuFile)) {
        const exact = JSON.parse(readFileSync(cpuFile, "utf8"));
        cpuS = (exact.cpuUserMs + exact.cpuSystemMs) / 1000;
        rmSync(cpuFile, { force: true });
      }
      resolveRun({ code, signal, timedOut, wallMs: performance.now() - t0, peakRss: peak, rssSamples: samples, cpuS, stdout, stderr, pid: child.pid, t0 });
    });
  });
}

/** Synthetic journal lines in the importer's format (src/journal/records.ts). */
export function itemRecord({ ts, run, scope, key, att, version, status, title, docId, via, bytes }) {
  const r = { t: "item", ts, run, scope, key, att, version, status, title };
  if (docId !== undefined) r.docId = docId;
  if (via !== undefined) r.via = via;
  if (bytes !== undefined) r.bytes = bytes;
  return JSON.stringify(r);
}

export function argValue(args, name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
}
