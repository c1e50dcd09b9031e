import { main } from "./main.js";

/** Process entry: wire signals, run, exit with the code. */
const stop = new AbortController();
const hardStop = new AbortController();
let signals = 0;
const onSignal = (signal: NodeJS.Signals): void => {
  signals++;
  if (signals === 1) {
    process.stderr.write(`\n${signal}: finishing the papers in flight, starting no new ones (press Ctrl-C again to stop at once)\n`);
    stop.abort(new Error(signal));
  } else {
    hardStop.abort(new Error(signal));
  }
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);
process.on("SIGPIPE", () => undefined);

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
