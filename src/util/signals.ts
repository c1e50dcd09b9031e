/**
 * Several abort signals that end one wait, combined with `AbortSignal.any` only when a wait asks
 * for them: most calls never wait, and every combined signal costs (a listener on each source).
 */
export class AnySignal {
  private readonly present: AbortSignal[];
  private combined: AbortSignal | undefined;

  constructor(...signals: ReadonlyArray<AbortSignal | undefined>) {
    this.present = signals.filter((s): s is AbortSignal => s !== undefined);
  }

  /** The first of them already aborted, if any (checked without combining). */
  aborted(): AbortSignal | undefined {
    return this.present.find((s) => s.aborted);
  }

  /** One signal for a wait: the only one given, or their combination, made once. */
  get signal(): AbortSignal | undefined {
    if (this.present.length <= 1) return this.present[0];
    return (this.combined ??= AbortSignal.any(this.present));
  }
}
