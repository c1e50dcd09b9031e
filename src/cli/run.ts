import { setMaxListeners } from "node:events";
import { main } from "./main.js";

/**
 * Process entry: wire signals, run, exit with the code.
 * - The first SIGINT/SIGTERM stops starting work and stops retrying; requests in flight get
 *   their current attempt; the process exits within 10 s (after 8 s what is still in flight
 *   is aborted and left for the next run).
 * - A second signal aborts at once. The same signal delivered twice within a second (systemd
 *   and `kill -TERM -pgid` signal the whole process group, so a wrapper such as npx passes it
 *   on as well) counts as one.
 */
const stop = new AbortController();
const hardStop = new AbortController();
setMaxListeners(0, stop.signal, hardStop.signal);
const GRACE_MS = 8_000;
const DUPLICATE_MS = 1_000;
let first: { signal: NodeJS.Signals; at: number } | null = null;
const abortReason = (signal: NodeJS.Signals): Error => new DOMException(`stopped by ${signal}`, "AbortError");
const onSignal = (signal: NodeJS.Signals): void => {
  if (first === null) {
    first = { signal, at: Date.now() };
    process.stderr.write(`\n${signal}: stopping — nothing new starts, nothing is retried; unfinished papers are left for the next run (${signal === "SIGINT" ? "press Ctrl-C again" : "signal again"} to stop at once)\n`);
    stop.abort(abortReason(signal));
    setTimeout(() => {
      if (hardStop.signal.aborted) return;
      process.stderr.write(`requests still in flight after ${GRACE_MS / 1000} s: aborting them; their papers are left for the next run\n`);
      hardStop.abort(abortReason(signal));
    }, GRACE_MS).unref();
    return;
  }
  if (signal === first.signal && Date.now() - first.at < DUPLICATE_MS) return;
  hardStop.abort(abortReason(signal));
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
process.on("SIGHUP", onSignal);
process.on("SIGPIPE", () => undefined);
// A reader that goes away (`import-from-zotero --help | head -3`, a closed log pipe) only ends
// the output: no stack trace, and a run goes on to its journal and report as it would have.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (error: NodeJS.ErrnoException) => {
    if (error.code !== "EPIPE") throw error;
  });
}

const code = await main(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  cwd: process.cwd(),
  stop: stop.signal,
  hardStop: hardStop.signal,
});
process.exitCode = code;
// Let stdout drain, then leave even if a socket lingers.
setTimeout(() => process.exit(code), 50).unref();
