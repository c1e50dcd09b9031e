// Preloaded into a measured process (node --import): at exit, write the process's own CPU time
// (process.cpuUsage(), user + system, ms) to $BENCH_CPU_FILE. Exact, unlike polling /proc.
import { writeFileSync } from "node:fs";

const out = process.env.BENCH_CPU_FILE;
if (out) {
  process.on("exit", () => {
    const cpu = process.cpuUsage();
    writeFileSync(out, JSON.stringify({ cpuUserMs: cpu.user / 1000, cpuSystemMs: cpu.system / 1000 }));
  });
}
