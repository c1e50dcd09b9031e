/**
 * The README's global install, done for real into a temporary prefix:
 *
 *   npm run pack:global
 *   npm install -g --allow-scripts=better-sqlite3 release/import-from-zotero-*.tgz release/refserver-lite-*.tgz
 *
 * then both commands run from $PREFIX/bin. Kept fast: the packages come from npm's cache
 * (--prefer-offline; the registry only for what the cache lacks), and instead of compiling
 * better-sqlite3 twice (about a minute each on two cores) the install skips scripts and the
 * addon this checkout already built is copied in: the same version, checked, else rebuilt.
 * The install must print no EBADENGINE warning on this Node.
 */
import { execFile, spawn } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const rootPkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string; bin: Record<string, string> };
const serverPkg = JSON.parse(readFileSync(join(ROOT, "server", "package.json"), "utf8")) as { version: string; bin: Record<string, string> };
const NPM_QUIET = ["--no-audit", "--no-fund", "--prefer-offline"];

let work: string;
let prefix: string;
let installLog = "";
let installSeconds = 0;

/** Put this checkout's compiled better-sqlite3 into an installed copy (same version), else build it. */
async function provideAddon(packageDir: string): Promise<void> {
  const installed = join(packageDir, "node_modules", "better-sqlite3");
  const local = join(ROOT, "node_modules", "better-sqlite3");
  const version = (dir: string): string => (JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { version: string }).version;
  const built = join(local, "build", "Release", "better_sqlite3.node");
  if (existsSync(built) && version(installed) === version(local)) {
    mkdirSync(join(installed, "build", "Release"), { recursive: true });
    copyFileSync(built, join(installed, "build", "Release", "better_sqlite3.node"));
  } else {
    await run("npm", ["rebuild", "better-sqlite3", "--foreground-scripts"], { cwd: packageDir, maxBuffer: 64 * 1024 * 1024 });
  }
}

beforeAll(async () => {
  const started = Date.now();
  work = mkdtempSync(join(tmpdir(), "ifz-install-"));
  prefix = join(work, "prefix");
  const packed = await run(process.execPath, [join(ROOT, "scripts", "pack-global.mjs"), "--no-build", "--out", join(work, "release")], { cwd: ROOT });
  const tarballs = packed.stdout.trim().split("\n");
  expect(tarballs.map((t) => t.replace(/^.*\//, ""))).toEqual([
    `import-from-zotero-${rootPkg.version}.tgz`,
    `refserver-lite-${serverPkg.version}.tgz`,
  ]);
  const install = await run("npm", ["install", "-g", "--prefix", prefix, "--ignore-scripts", ...NPM_QUIET, ...tarballs], {
    cwd: work,
    maxBuffer: 16 * 1024 * 1024,
  });
  installLog = install.stdout + install.stderr;
  const lib = join(prefix, "lib", "node_modules");
  await provideAddon(join(lib, "import-from-zotero"));
  await provideAddon(join(lib, "refserver-lite"));
  installSeconds = (Date.now() - started) / 1000;
}, 240_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe("npm install -g of the two packed tarballs", () => {
  it("installs without an engine warning, and links both bins", () => {
    expect(installLog).not.toMatch(/EBADENGINE/);
    for (const name of [...Object.keys(rootPkg.bin), ...Object.keys(serverPkg.bin)]) {
      expect(existsSync(join(prefix, "bin", name)), `${name} on the PATH`).toBe(true);
    }
    // Measured: the whole pack + install + addon copy (reported, not asserted beyond the timeout).
    process.stderr.write(`install test: pack + npm install -g + addon copy took ${installSeconds.toFixed(1)} s\n`);
  });

  it("import-from-zotero --version runs from the prefix", async () => {
    const { stdout } = await run(join(prefix, "bin", "import-from-zotero"), ["--version"]);
    expect(stdout.trim()).toBe(rootPkg.version);
  });

  it("refserver-lite --help runs from the prefix", async () => {
    const { stdout } = await run(join(prefix, "bin", "refserver-lite"), ["--help"]);
    expect(stdout).toContain("Usage: refserver-lite");
  });

  it("the installed refserver-lite serves (native SQLite loads) and stops on SIGTERM", async () => {
    const data = join(work, "data");
    const child = spawn(join(prefix, "bin", "refserver-lite"), ["--data", data, "--port", "0", "--log-level", "warn"], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, REFSERVER_ADMIN_USER: "root", REFSERVER_ADMIN_PASSWORD: "install-test" },
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.stderr.on("data", (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
    const url = await new Promise<string>((resolveUrl, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line in 20 s; stderr: ${err}`)), 20_000);
      child.stdout.on("data", () => {
        const m = /listening on (http:\/\/\S+)/.exec(out);
        if (m?.[1]) {
          clearTimeout(timer);
          resolveUrl(m[1]);
        }
      });
      child.on("exit", (code) => reject(new Error(`exited ${code}: ${err}`)));
    });
    const res = await fetch(`${url}/api/v1/auth/login`, { method: "POST", body: new URLSearchParams({ username: "root", password: "install-test" }) });
    expect(res.status).toBe(200);
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});
