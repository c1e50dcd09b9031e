#!/usr/bin/env node
// npm run bench [-- NAME [options]]: runs every benchmark, or the one named. Each prints a
// table and keeps the run as JSON under bench/results/ (BENCH_NO_WRITE=1 to only print).
// Names: throughput, floor, politeness, memory, resume, faults, scale.
const ALL = ["throughput", "floor", "politeness", "memory", "resume", "faults", "scale"];
const FILES = { throughput: "./throughput.mjs", floor: "./floor.mjs", politeness: "./politeness.mjs", memory: "./memory.mjs", resume: "./resume.mjs", faults: "./faults.mjs", scale: "./scale.mjs" };

const args = process.argv.slice(2);
const names = args.filter((a) => ALL.includes(a));
const options = args.filter((a) => !ALL.includes(a));
// A word that is neither a benchmark nor an option must be an option's value.
const unknown = args.filter((a, i) => !ALL.includes(a) && !a.startsWith("--") && !(args[i - 1] ?? "").startsWith("--"));
if (unknown.length > 0) {
  console.error(`unknown benchmark ${unknown.join(", ")}: choose from ${ALL.join(", ")}`);
  process.exit(2);
}
const todo = names.length > 0 ? names : ALL;
const { snapshotBuild } = await import("./lib/common.mjs");
console.error(`code under test: ${snapshotBuild().source}`);
let failed = 0;
for (const name of todo) {
  const t0 = performance.now();
  console.error(`\n== ${name} ==`);
  try {
    const mod = await import(FILES[name]);
    await mod.run(options);
  } catch (error) {
    failed++;
    console.error(`${name} failed: ${error?.stack ?? error}`);
  }
  console.error(`== ${name}: ${((performance.now() - t0) / 1000).toFixed(1)} s ==`);
}
process.exit(failed > 0 ? 1 : 0);
