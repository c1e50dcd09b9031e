import { ImportError } from "../errors.js";
import { realClock, realSleep, type Clock, type Sleep } from "../util/time.js";
import { AnySignal } from "../util/signals.js";
import { NotBeforeGate } from "./gate.js";

export type AnswerKind = "clean" | "congested" | "unreachable" | "other";

export interface PacerOptions {
  /** The most uploads in flight (import_options.batch_size): a ceiling, not a constant. */
  ceiling: number;
  /** Adapt the limit to the server's answers (AIMD); false keeps it at the ceiling. */
  adaptive: boolean;
  /** Stop (circuit open) once the server has been unreachable this long. */
  giveUpAfterMs: number;
  clock?: Clock;
  sleep?: Sleep;
  onChange?: (info: { limit: number; reason: string }) => void;
}

export interface Slot {
  /** Report how the request went, and free the slot. */
  release(kind: AnswerKind, retryAfterMs?: number): void;
}

/**
 * The shared pacer every upload goes through (rclone's idea, with TCP's AIMD):
 * - at most `limit` uploads in flight; `limit` halves when the server answers
 *   "database is locked", 503 or 429 (once per congestion event) and grows by one
 *   after `limit` clean answers in a row, up to the ceiling;
 * - a Retry-After holds every worker, not just the one that got it;
 * - a circuit breaker: unreachable for longer than giveUpAfterMs → every caller fails fast.
 */
export class Pacer {
  limit: number;
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];
  /** A Retry-After holds every worker. */
  private readonly gate: NotBeforeGate;
  private cleanStreak = 0;
  /** Bumped on each decrease: answers to requests sent before it don't decrease again. */
  private generation = 0;
  private unreachableSince: number | null = null;
  private readonly clock: Clock;
  private readonly sleep: Sleep;
  peakInFlight = 0;
  decreases = 0;

  constructor(private readonly options: PacerOptions) {
    this.limit = Math.max(1, options.ceiling);
    this.clock = options.clock ?? realClock;
    this.sleep = options.sleep ?? realSleep;
    this.gate = new NotBeforeGate(this.clock, this.sleep);
  }

  /** True once the server has been unreachable past the give-up time. */
  get open(): boolean {
    return this.unreachableSince !== null && this.clock() - this.unreachableSince >= this.options.giveUpAfterMs;
  }

  private breakerError(): ImportError {
    const ms = this.options.giveUpAfterMs;
    const seconds = ms < 10_000 ? Math.round(ms / 100) / 10 : Math.round(ms / 1000);
    return new ImportError("REFSERVER_UNAVAILABLE", `the RefServer has been unreachable for over ${seconds} s (retry.give_up_after_seconds): stopping; the next run carries on`, {
      connection: true,
      breaker: true,
    });
  }

  /**
   * A slot, once the limit and the gate allow. `signals` end the wait (any of them); they are
   * combined only if there is a wait, which most calls do not have.
   */
  async acquire(...signals: ReadonlyArray<AbortSignal | undefined>): Promise<Slot> {
    const ends = new AnySignal(...signals);
    for (;;) {
      // A caller that gives up passes its wake-up on, so no other waiter is left asleep.
      if (this.open) {
        this.wake();
        throw this.breakerError();
      }
      const aborted = ends.aborted();
      if (aborted) {
        this.wake();
        aborted.throwIfAborted();
      }
      if (this.gate.remaining() > 0) {
        await this.gate.wait(ends.signal).catch(() => undefined);
        continue;
      }
      if (this.inFlight < this.limit) break;
      const signal = ends.signal;
      await new Promise<void>((resolve) => {
        const entry = (): void => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        };
        const onAbort = (): void => {
          const i = this.waiting.indexOf(entry);
          if (i !== -1) this.waiting.splice(i, 1);
          resolve();
        };
        this.waiting.push(entry);
        signal?.addEventListener("abort", onAbort, { once: true });
      });
    }
    this.inFlight++;
    this.peakInFlight = Math.max(this.peakInFlight, this.inFlight);
    const generation = this.generation;
    let released = false;
    return {
      release: (kind, retryAfterMs) => {
        if (released) return;
        released = true;
        this.inFlight--;
        this.settle(kind, generation, retryAfterMs);
        this.wake();
      },
    };
  }

  private wake(): void {
    // Woken callers re-check the limit, so waking one too many is harmless.
    let free = this.limit - this.inFlight;
    while (free > 0 && this.waiting.length > 0) {
      this.waiting.shift()!();
      free--;
    }
  }

  private settle(kind: AnswerKind, generation: number, retryAfterMs?: number): void {
    if (kind === "unreachable") {
      this.unreachableSince ??= this.clock();
      return;
    }
    this.unreachableSince = null;
    if (retryAfterMs !== undefined && retryAfterMs > 0) this.gate.push(retryAfterMs, "Retry-After");
    if (!this.options.adaptive) return;
    if (kind === "congested") {
      this.cleanStreak = 0;
      if (generation === this.generation) {
        const before = this.limit;
        this.limit = Math.max(1, Math.floor(this.limit / 2));
        this.generation++;
        this.decreases++;
        if (this.limit !== before) this.options.onChange?.({ limit: this.limit, reason: "server busy" });
      }
      return;
    }
    if (kind === "clean") {
      this.cleanStreak++;
      if (this.cleanStreak >= this.limit && this.limit < this.options.ceiling) {
        this.limit++;
        this.cleanStreak = 0;
        this.options.onChange?.({ limit: this.limit, reason: "clean answers" });
      }
    }
  }
}
