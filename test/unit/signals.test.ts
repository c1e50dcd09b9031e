import { describe, expect, it } from "vitest";
import { AnySignal } from "../../src/util/signals.js";

describe("AnySignal", () => {
  it("gives the one signal it was given, or none, without combining", () => {
    const a = new AbortController();
    expect(new AnySignal(undefined, a.signal).signal).toBe(a.signal);
    expect(new AnySignal(undefined, undefined).signal).toBeUndefined();
  });

  it("combines two once, and the combination ends when either does", () => {
    const a = new AbortController();
    const b = new AbortController();
    const ends = new AnySignal(a.signal, b.signal);
    expect(ends.aborted()).toBeUndefined();
    const combined = ends.signal!;
    expect(ends.signal).toBe(combined);
    expect(combined.aborted).toBe(false);
    b.abort(new Error("stop"));
    expect(combined.aborted).toBe(true);
    expect(ends.aborted()).toBe(b.signal);
  });
});
