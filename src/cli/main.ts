import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { messageOf } from "../errors.js";
import { exitCodeFor } from "../failure/policy.js";
import { redact } from "../util/redact.js";
import { VERSION } from "../version.js";
import { ExitCode } from "./exit-codes.js";
import { runImport, type CliIo, type ImportFlags } from "./commands/import.js";
import type { StatusFlags } from "./commands/status.js";
import type { VerifyFlags } from "./commands/verify.js";

function wholeNumber(name: string, min: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} takes a whole number of at least ${min}`);
    return n;
  };
}

function seconds(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new InvalidArgumentError("--delay takes a number of seconds, 0 or more");
  return n;
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

function buildProgram(io: CliIo, setExit: (code: number) => void): Command {
  const program = new Command("import-from-zotero")
    .description("Import the PDFs of a Zotero library into a RefServerLite server, resumably.")
    .version(VERSION)
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
    .exitOverride()
    .enablePositionalOptions();

  program
    .option("-c, --config <path>", "config file (default: ./config.yml, then $XDG_CONFIG_HOME/import-from-zotero/config.yml)")
    .option("-n, --limit <N>", "import at most N papers not yet done, then stop", wholeNumber("--limit", 1))
    .option("--dry-run", "preview what would happen; download, upload and record nothing")
    .option("--collection <key-or-name>", "only this collection and its subcollections (repeatable)", collect)
    .option("--since <version>", "only Zotero items changed after this library version (default: the last complete run's)", wholeNumber("--since", 0))
    .option("--batch-size <N>", "uploads at once, at most: one batch (import_options.batch_size)", wholeNumber("--batch-size", 1))
    .option("--delay <seconds>", "pause between batches (import_options.delay_seconds)", seconds)
    .option("--checkpoint <path>", "checkpoint journal (default: $XDG_STATE_HOME/import-from-zotero/checkpoint.ndjson)")
    .option("--zotero-dir <path>", "read the Zotero desktop's data directory (zotero.sqlite, storage/) instead of the Web API; sets zotero.source: local")
    .option("--retry-failed", "only retry the items that failed in earlier runs")
    .option("--no-cache", "download every PDF afresh instead of reusing verified cached files")
    .option("--prune", "remove from the server the papers moved to Zotero's trash or deleted there (refserver-lite); with --dry-run, list them")
    .option("--json", "print the preview or the summary as JSON on stdout")
    .addOption(new Option("-q, --quiet", "only warnings, failures and the summary").conflicts("verbose"))
    .option("-v, --verbose", "one line per item and per retry")
    .addHelpText(
      "after",
      `
Exit codes: 0 all done, 1 some items failed (or the checkpoint could not be written),
            2 usage or config error, 3 authentication, 75 server unavailable or another
            run holds the lock, 130 interrupted (the next run carries on).
Secrets may come from ZOTERO_API_KEY, REFSERVER_USERNAME, REFSERVER_PASSWORD.`,
    )
    .action(async (opts: ImportFlags) => {
      setExit(await runImport(opts, io));
    });

  program
    .command("status")
    .description("show what the checkpoint holds: counts per library and the last failures")
    .option("-c, --config <path>", "config file (to find the checkpoint)")
    .option("--checkpoint <path>", "checkpoint journal to read")
    .option("--json", "print as JSON")
    .action(async (opts: StatusFlags) => {
      // Loaded when asked for: an import run does not pay for the other commands' modules.
      const { runStatus } = await import("./commands/status.js");
      setExit(await runStatus(opts, io));
    });

  program
    .command("verify")
    .description("reconcile Zotero, the checkpoint and the server: lost papers, papers Zotero no longer has, metadata drift, changed PDFs; changes nothing unless --repair")
    .option("-c, --config <path>", "config file")
    .option("--checkpoint <path>", "checkpoint journal")
    .option("--collection <key-or-name>", "only this collection and its subcollections (repeatable)", collect)
    .option("--deep", "also compare the MD5 of every PDF the server stores with Zotero's (downloads each)")
    .option("--repair", "re-import lost papers, send drifted metadata and changed PDFs (where the server allows), then verify again")
    .option("--json", "print the findings as JSON")
    .option("-q, --quiet", "only warnings and the verdict")
    .addHelpText("after", "\nExit codes: 0 everything agrees, 1 something differs, 2 usage or config, 3 authentication, 75 unavailable.")
    .action(async (opts: VerifyFlags) => {
      const { runVerify } = await import("./commands/verify.js");
      setExit(await runVerify(opts, io));
    });

  return program;
}

/** Run the CLI; resolves to the exit code. Never throws. */
export async function main(argv: string[], io: CliIo): Promise<number> {
  let code: number = ExitCode.Ok;
  const program = buildProgram(io, (c) => {
    code = c;
  });
  try {
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === "commander.helpDisplayed" || error.code === "commander.version" || error.code === "commander.help") return ExitCode.Ok;
      return ExitCode.Usage;
    }
    const exit = exitCodeFor(error);
    io.stderr.write(`${redact(`import-from-zotero: ${messageOf(error)}`)}\n`);
    if (io.env.IMPORT_FROM_ZOTERO_DEBUG && error instanceof Error && error.stack) io.stderr.write(`${redact(error.stack)}\n`);
    return exit;
  }
}
