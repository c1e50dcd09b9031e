#!/usr/bin/env node
import { main } from "../dist/cli.js";

main().catch((err) => {
  process.stderr.write(`refserver-lite: ${err && err.message ? err.message : String(err)}\n`);
  process.exit(1);
});
