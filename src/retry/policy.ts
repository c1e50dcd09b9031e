import pRetry from "p-retry";
import { ImportError } from "../errors.js";
import type { Sleep } from "../util/time.js";
import { AnySignal } from "../util/signals.js";

/** How a request is retried: data, in one place (see config `retry:`). */
export interface RetryPolicy {
  retries: number;
  minDelayMs: number;
  maxDelayMs: number;
}

/**
 * Exponential backoff with full jitter: a uniform wait in [0, min(max, min·2^n)].
 * A server-requested wait (Retry-After) is a floor.
 */
export function backoffDelay(attempt: number, policy: RetryPolicy, retryAfterMs?: number, random: () => number = Math.random): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.minDelayMs * 2 ** Math.max(0, attempt - 1));
  const jittered = Math.round(random() * ceiling);
  if (retryAfterMs !== undefined) return Math.max(retryAfterMs, Math.min(jittered, policy.maxDelayMs));
  return jittered;
}

export interface RetryHooks {
  sleep: Sleep;
  /** Aborts the attempt in flight and the run (a second signal, a fatal error). */
  signal?: AbortSignal | undefined;
  /**
   * Stops retrying (the first SIGINT/SIGTERM): the attempt in flight runs to its end; a
   * failure after it, or a backoff wait under way, ends as INTERRUPTED, never as failed.
   */
  stop?: AbortSignal | undefined;
  random?: () => number;
  /** False for failures that should not use up a retry (connection failures, which the pacer's breaker bounds by time). */
  consumesRetry?: (error: ImportError) => boolean;
  /** Called before each wait, with the failure that caused it. */
  onRetry?: (info: { error: ImportError; attempt: number; delayMs: number }) => void;
}

/**
 * Run `fn` until it succeeds, a failure is not retriable, or retries run out.
 * p-retry drives the loop; the wait is ours (full jitter, Retry-After, injected sleep).
 */
export async function withRetry<T>(fn: (attempt: number) => Promise<T>, policy: RetryPolicy, hooks: RetryHooks): Promise<T> {
  const stopped = (): boolean => Boolean(hooks.stop?.aborted || hooks.signal?.aborted);
  // Combined only for a wait: most calls succeed at once.
  const waitEnds = new AnySignal(hooks.stop, hooks.signal);
  let last: unknown;
  try {
    return await pRetry(
      async (attempt) => {
        // No new attempt once stopped: what is in flight finishes, nothing starts.
        if (attempt > 1 && stopped()) throw interrupted(last);
        try {
          return await fn(attempt);
        } catch (error) {
          last = error;
          throw error;
        }
      },
      {
        retries: policy.retries,
        minTimeout: 0,
        maxTimeout: 0,
        factor: 1,
        ...(hooks.signal ? { signal: hooks.signal } : {}),
        shouldRetry: ({ error }) => error instanceof ImportError && error.retriable && !stopped(),
        shouldConsumeRetry: ({ error }) => !(error instanceof ImportError) || (hooks.consumesRetry?.(error) ?? true),
        onFailedAttempt: async ({ error, attemptNumber, retriesLeft }) => {
          if (!(error instanceof ImportError) || !error.retriable || retriesLeft <= 0 || stopped()) return;
          const delayMs = backoffDelay(attemptNumber, policy, error.retryAfterMs, hooks.random);
          hooks.onRetry?.({ error, attempt: attemptNumber, delayMs });
          await hooks.sleep(delayMs, waitEnds.signal);
        },
      },
    );
  } catch (error) {
    // A verdict (422, 403, a missing file) stays what it is; a retry cut short by a stop is
    // an interruption: the work is left for the next run, never recorded as failed.
    if (error instanceof ImportError && (!error.retriable || error.code === "INTERRUPTED")) throw error;
    if (stopped()) throw interrupted(last ?? error);
    throw error;
  }
}

function interrupted(cause: unknown): ImportError {
  const why = cause instanceof Error ? `: ${cause.message}` : "";
  return new ImportError("INTERRUPTED", `stopped before retrying${why}`, { cause });
}
