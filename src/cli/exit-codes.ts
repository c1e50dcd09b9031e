/** Process exit codes; documented in the README and stable for scripts and cron. */
export const ExitCode = {
  /** Every importable item is on the server. */
  Ok: 0,
  /** The run finished but some items failed (see the summary and report). */
  SomeFailed: 1,
  /** Bad command line or configuration. */
  Usage: 2,
  /** Zotero or the RefServer refused our credentials. */
  Auth: 3,
  /** The server stayed unreachable after retries, or another run holds the lock. */
  Unavailable: 75,
  /** Stopped by SIGINT/SIGTERM; the journal is consistent. */
  Interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];
