// Preloaded into a measured process (node --expose-gc --import): once a second, a full GC and
// the heap that survives it (process.memoryUsage().heapUsed); at exit, the largest such figure
// to $BENCH_HEAP_FILE. What the process holds, as opposed to its peak RSS, which also counts the
// garbage V8 lets pile up between collections. Forces GCs: measure time and CPU in another run.
import { writeFileSync } from "node:fs";

const out = process.env.BENCH_HEAP_FILE;
if (out && typeof globalThis.gc === "function") {
  let maxLive = 0;
  const sample = () => {
    globalThis.gc();
    maxLive = Math.max(maxLive, process.memoryUsage().heapUsed);
  };
  setInterval(sample, 1000).unref();
  process.on("exit", () => writeFileSync(out, JSON.stringify({ maxLiveHeapBytes: maxLive })));
}
