import { describe, expect, it } from "vitest";
import { Pacer } from "../../src/retry/pacer.js";

function fakeTime() {
  let now = 0;
  return {
    clock: () => now,
    sleep: async (ms: number) => {
      now += ms;
    },
    advance: (ms: number) => {
      now += ms;
    },
  };
}

describe("adaptive pacer", () => {
  it("halves the uploads in flight on a lock answer, once per congestion event, and grows back on clean answers", async () => {
    const t = fakeTime();
    const pacer = new Pacer({ ceiling: 8, adaptive: true, giveUpAfterMs: 1000, ...t });
    const slots = await Promise.all(Array.from({ length: 8 }, () => pacer.acquire()));
    expect(pacer.peakInFlight).toBe(8);
    // Three answers to requests sent before the first decrease: one halving, not three.
    slots[0]!.release("congested");
    slots[1]!.release("congested");
    slots[2]!.release("congested");
    expect(pacer.limit).toBe(4);
    for (const s of slots.slice(3)) s.release("clean");
    // After `limit` clean answers in a row the limit grows by one, up to the ceiling.
    for (let round = 0; round < 40; round++) (await pacer.acquire()).release("clean");
    expect(pacer.limit).toBe(8);
  });

  it("never lets more than `limit` uploads run at once", async () => {
    const t = fakeTime();
    const pacer = new Pacer({ ceiling: 4, adaptive: true, giveUpAfterMs: 1000, ...t });
    const first = await pacer.acquire();
    first.release("congested");
    expect(pacer.limit).toBe(2);
    const a = await pacer.acquire();
    const b = await pacer.acquire();
    let third = false;
    const c = pacer.acquire().then((slot) => {
      third = true;
      return slot;
    });
    await Promise.resolve();
    expect(third).toBe(false);
    a.release("clean");
    (await c).release("clean");
    b.release("clean");
    expect(third).toBe(true);
    expect(pacer.peakInFlight).toBe(2);
  });

  it("keeps the limit at the ceiling when not adaptive", async () => {
    const pacer = new Pacer({ ceiling: 4, adaptive: false, giveUpAfterMs: 1000, ...fakeTime() });
    (await pacer.acquire()).release("congested");
    expect(pacer.limit).toBe(4);
  });

  it("holds every caller until a Retry-After has passed", async () => {
    const t = fakeTime();
    const pacer = new Pacer({ ceiling: 2, adaptive: true, giveUpAfterMs: 1000, ...t });
    (await pacer.acquire()).release("congested", 5000);
    const before = t.clock();
    (await pacer.acquire()).release("clean");
    expect(t.clock() - before).toBe(5000);
  });

  it("opens the circuit once the server stays unreachable past give_up_after", async () => {
    const t = fakeTime();
    const pacer = new Pacer({ ceiling: 2, adaptive: true, giveUpAfterMs: 600_000, ...t });
    (await pacer.acquire()).release("unreachable");
    t.advance(599_000);
    (await pacer.acquire()).release("unreachable");
    t.advance(2_000);
    await expect(pacer.acquire()).rejects.toMatchObject({ code: "REFSERVER_UNAVAILABLE", connection: true });
  });

  it("closes the circuit again on any answer", async () => {
    const t = fakeTime();
    const pacer = new Pacer({ ceiling: 2, adaptive: true, giveUpAfterMs: 1000, ...t });
    (await pacer.acquire()).release("unreachable");
    t.advance(900);
    (await pacer.acquire()).release("clean");
    t.advance(5000);
    expect(pacer.open).toBe(false);
    await expect(pacer.acquire()).resolves.toBeDefined();
  });

  it("a waiter whose signal aborts (a stop) leaves the queue and strands no other waiter", async () => {
    const t = fakeTime();
    const pacer = new Pacer({ ceiling: 1, adaptive: false, giveUpAfterMs: 1000, ...t });
    const held = await pacer.acquire();
    const stop = new AbortController();
    const stopped = [pacer.acquire(stop.signal), pacer.acquire(stop.signal)];
    const other = pacer.acquire();
    stop.abort(new Error("stop"));
    for (const p of stopped) await expect(p).rejects.toThrow("stop");
    held.release("clean");
    // The waiter without a signal gets the slot (it would hang forever if a wake-up were lost).
    const slot = await other;
    slot.release("clean");
    await expect(pacer.acquire()).resolves.toBeDefined();
  });
});
