#!/usr/bin/env node
// Run shell commands side by side and fail if any fails: `npm run build` and `npm run typecheck`
// each run two TypeScript projects (the importer and the server), which share no output, so on a
// two-core machine they take about half the time together as one after the other.
//
//   node scripts/parallel.mjs "tsc -p tsconfig.build.json" "npm run build -w server"
import { spawn } from "node:child_process";

const commands = process.argv.slice(2);
if (commands.length === 0) {
  process.stderr.write("usage: node scripts/parallel.mjs COMMAND [COMMAND...]\n");
  process.exit(2);
}
const codes = await Promise.all(
  commands.map(
    (command) =>
      new Promise((resolve) => {
        const child = spawn(command, { shell: true, stdio: "inherit" });
        child.on("error", (error) => {
          process.stderr.write(`${command}: ${error.message}\n`);
          resolve(1);
        });
        child.on("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0)));
      }),
  ),
);
const failed = commands.filter((_, i) => codes[i] !== 0);
for (const command of failed) process.stderr.write(`failed: ${command}\n`);
process.exit(failed.length === 0 ? 0 : 1);
