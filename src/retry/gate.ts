import { realClock, realSleep, type Clock, type Sleep } from "../util/time.js";

/**
 * A "not before" gate: no request of a service starts before the time the service last
 * asked for (Backoff, Retry-After, a 429/503). One gate per service, shared by every
 * request to it: listings, file redirects and the storage host for Zotero; uploads and
 * login for the RefServer (inside its pacer).
 */
export class NotBeforeGate {
  private notBefore = 0;

  constructor(
    private readonly clock: Clock = realClock,
    private readonly sleep: Sleep = realSleep,
    private readonly onWait?: (info: { reason: string; delayMs: number }) => void,
  ) {}

  /** Milliseconds left before requests may start again (0 when open). */
  remaining(): number {
    return Math.max(0, this.notBefore - this.clock());
  }

  /** Hold every request for `ms` from now (a later deadline already set wins). */
  push(ms: number, reason: string): void {
    if (!(ms > 0)) return;
    const until = this.clock() + ms;
    if (until > this.notBefore) {
      this.notBefore = until;
      this.onWait?.({ reason, delayMs: ms });
    }
  }

  /** Wait until the gate is open; rejects when `signal` aborts. */
  async wait(signal?: AbortSignal): Promise<void> {
    for (;;) {
      const wait = this.notBefore - this.clock();
      if (wait <= 0) return;
      await this.sleep(wait, signal);
    }
  }
}
