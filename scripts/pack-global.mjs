#!/usr/bin/env node
/**
 * `npm run pack:global`: build the two installable tarballs, import-from-zotero and
 * refserver-lite, for
 *
 *   npm install -g --allow-scripts=better-sqlite3 release/import-from-zotero-0.1.0.tgz release/refserver-lite-0.1.0.tgz
 *
 * which is what `npm install -g import-from-zotero refserver-lite` would do once both are
 * published. `npm install -g .` cannot: npm refuses a workspace root as a global package
 * ("Workspaces not supported for global packages"), and it never links a dependency's bin, so
 * the server's command needs its own package on the command line anyway.
 *
 * Each tarball is `npm pack` of its package, with the shipped package.json cleaned of what only
 * this repository uses (devDependencies, workspaces, scripts, allowScripts): an installed
 * package has no sources to build, and a `prepare` script there only makes npm list it among
 * the install scripts waiting for approval.
 *
 * Usage: node scripts/pack-global.mjs [--out DIR] [--no-build]
 *   --out DIR    where the tarballs go (default: release/ in the repository)
 *   --no-build   skip `npm run build` (dist/ is already current)
 * Prints the tarballs' absolute paths on stdout, one a line; progress goes to stderr.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const { values } = parseArgs({
  options: { out: { type: "string" }, "no-build": { type: "boolean" }, help: { type: "boolean", short: "h" } },
  strict: true,
});
if (values.help) {
  process.stdout.write("Usage: node scripts/pack-global.mjs [--out DIR] [--no-build]\n");
  process.exit(0);
}
const outDir = resolve(values.out ?? join(ROOT, "release"));
const win = process.platform === "win32";
const npm = win ? "npm.cmd" : "npm";
/** Fields of package.json that mean nothing in an installed package. */
const REPO_ONLY = ["devDependencies", "workspaces", "scripts", "allowScripts"];

function run(cmd, args, cwd) {
  return execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], shell: win });
}

if (!values["no-build"]) {
  process.stderr.write("building…\n");
  run(npm, ["run", "build"], ROOT);
}
mkdirSync(outDir, { recursive: true });

const work = mkdtempSync(join(tmpdir(), "pack-global-"));
const made = [];
try {
  for (const [label, dir] of [["import-from-zotero", ROOT], ["refserver-lite", join(ROOT, "server")]]) {
    process.stderr.write(`packing ${label}…\n`);
    const first = join(work, `${label}.first`);
    mkdirSync(first);
    // --ignore-scripts: no `prepare` (a second build); what is packed is the package's `files`.
    const name = JSON.parse(run(npm, ["pack", "--ignore-scripts", "--json", "--pack-destination", first], dir))[0].filename;
    const stage = join(work, label);
    mkdirSync(stage);
    run("tar", ["-xzf", join(first, name), "-C", stage], work);
    const pkgDir = join(stage, "package");
    const pkgPath = join(pkgDir, "package.json");
    const pkg = JSON.parse(readFileSync(pkgPath, "utf8"));
    for (const field of REPO_ONLY) delete pkg[field];
    writeFileSync(pkgPath, `${JSON.stringify(pkg, null, 2)}\n`);
    const packed = JSON.parse(run(npm, ["pack", "--ignore-scripts", "--json", "--pack-destination", outDir], pkgDir))[0];
    made.push(join(outDir, packed.filename));
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}
for (const file of made) process.stdout.write(`${file}\n`);
const shown = made.map((f) => {
  const rel = relative(process.cwd(), f);
  return rel.startsWith("..") ? f : rel;
});
process.stderr.write(`\nInstall both commands with:\n  npm install -g --allow-scripts=better-sqlite3 ${shown.join(" ")}\n`);
