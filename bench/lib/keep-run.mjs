#!/usr/bin/env node
// Run a benchmark that prints its own report (the server's: server/bench/*.mjs, run with
// BENCH_NO_WRITE=1) and keep its output as JSON under bench/results/, like the importer's:
//   node bench/lib/keep-run.mjs NAME -- node server/bench/upload-load.mjs
import { spawn, execSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { machine, RESULTS_DIR, ROOT } from "./common.mjs";

const sep = process.argv.indexOf("--");
const name = process.argv[2];
const cmd = process.argv.slice(sep + 1);
if (!name || sep < 0 || cmd.length === 0) {
  console.error("usage: node bench/lib/keep-run.mjs NAME -- COMMAND [ARGS...]");
  process.exit(2);
}
const m = machine();
const commit = execSync("git rev-parse --short HEAD", { cwd: ROOT, encoding: "utf8" }).trim();
const dirty = execSync("git status --porcelain -- src server/src", { cwd: ROOT, encoding: "utf8" }).split("\n").filter(Boolean).length;
const child = spawn(cmd[0], cmd.slice(1), { cwd: ROOT, env: { ...process.env, BENCH_NO_WRITE: "1" }, stdio: ["ignore", "pipe", "inherit"] });
let out = "";
child.stdout.on("data", (d) => {
  out += d;
  process.stdout.write(d);
});
const code = await new Promise((resolve) => child.on("close", resolve));
mkdirSync(RESULTS_DIR, { recursive: true });
const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
const file = join(RESULTS_DIR, `${name}-${stamp}.json`);
const code_ = `commit ${commit}${dirty ? ` + ${dirty} uncommitted file(s) under src/ or server/src/` : ""}`;
writeFileSync(file, JSON.stringify({ name, command: cmd.join(" "), exit: code, code: code_, machine: { ...m, loadEnd: loadavg().map((x) => x.toFixed(2)).join(" ") }, text: out }, null, 2) + "\n");
console.error(`result kept in ${file.slice(ROOT.length + 1)}`);
process.exit(code ?? 1);
