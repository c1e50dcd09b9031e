/**
 * The run's outcome stage in-process: from a plan and what the transfer stage did to the summary
 * and the exit code (0 / 1 / 3 / 75 / 130), without a process, a server or a journal.
 */
import { describe, expect, it } from "vitest";
import { outcomeOf, type Transferred } from "../../src/cli/commands/import.js";
import { ImportError } from "../../src/errors.js";
import type { Plan } from "../../src/plan/plan.js";
import type { Candidate } from "../../src/plan/select.js";
import type { ItemResult, PipelineResult } from "../../src/transfer/pipeline.js";
import type { UpdateResult } from "../../src/transfer/update.js";

const candidate = (key: string): Candidate => ({ item: { key, title: `Title ${key}` }, attachment: { key: `A${key}` }, attachments: [] }) as unknown as Candidate;

function plan(o: Partial<Plan> = {}): Plan {
  return { actions: [], skipped: [], toImport: 0, alreadyDone: 0, deferred: 0, updates: [], stale: [], lost: [], gone: [], restored: [], ...o };
}

function transferred(results: ItemResult[], o: Partial<PipelineResult> = {}, updates: UpdateResult | null = null): Pick<Transferred, "result" | "updates" | "pruned"> {
  return { result: { results, notStarted: [], stoppedBy: null, fatal: null, retries: 0, ...o }, updates, pruned: null };
}

const noUpdates = (o: Partial<UpdateResult> = {}): UpdateResult => ({ updated: [], replaced: [], staleNow: [], failed: [], lost: [], interrupted: 0, fatal: null, ...o });

describe("outcomeOf: summary and exit code of a run", () => {
  it("0 when every paper is imported or already there; counts and bytes add up", () => {
    const o = outcomeOf(plan({ alreadyDone: 2 }), transferred([
      { candidate: candidate("K1"), outcome: "imported", bytes: 100 },
      { candidate: candidate("K2"), outcome: "already", bytes: 0 },
    ]), null);
    expect(o.exit).toBe(0);
    expect(o.summary).toMatchObject({ imported: 1, alreadyPresent: 3, bytes: 100, failed: [] });
    expect(o.fatal).toBeNull();
    expect(o.stoppedBy).toBeNull();
  });

  it("1 when a paper failed, with its code and message; 1 too for metadata pending and for lost papers", () => {
    const failed = outcomeOf(plan(), transferred([{ candidate: candidate("K1"), outcome: "failed", code: "REFSERVER_REJECTED", message: "422", permanent: true }]), null);
    expect(failed.exit).toBe(1);
    expect(failed.summary.failed).toEqual([{ key: "K1", title: "Title K1", code: "REFSERVER_REJECTED", message: "422", permanent: true }]);
    const pending = outcomeOf(plan(), transferred([{ candidate: candidate("K2"), outcome: "imported", metaPending: true }]), null);
    expect([pending.exit, pending.summary.metadataPending]).toEqual([1, 1]);
    const lost = outcomeOf(plan({ lost: [{ key: "K3", title: "Gone from the server", docId: "d" } as never] }), transferred([]), null);
    expect([lost.exit, lost.summary.lost]).toEqual([1, [{ key: "K3", title: "Gone from the server" }]]);
  });

  it("130 when a signal stopped the run, even with failures; interrupted papers are not failures", () => {
    const o = outcomeOf(plan(), transferred([
      { candidate: candidate("K1"), outcome: "interrupted" },
      { candidate: candidate("K2"), outcome: "failed", code: "NETWORK", message: "x" },
    ], { stoppedBy: "signal" }), null);
    expect(o.exit).toBe(130);
    expect(o.summary.interrupted).toBe(1);
    expect(o.stoppedBy).toBe("signal");
  });

  it("the fatal error's exit code: 75 for an unreachable server, 3 for refused credentials", () => {
    const unreachable = new ImportError("NETWORK", "server unreachable for 30 s", { retriable: true, connection: true });
    const down = outcomeOf(plan(), transferred([], { stoppedBy: "server-unavailable", fatal: unreachable }), null);
    expect([down.exit, down.fatal]).toEqual([75, unreachable]);
    const denied = outcomeOf(plan(), transferred([], { stoppedBy: "auth", fatal: new ImportError("REFSERVER_AUTH", "login refused") }), null);
    expect(denied.exit).toBe(3);
  });

  it("updates: updated and replaced counted once per paper; a failed update is 1, an interrupted one 130, a journal failure stops as 'checkpoint'", () => {
    const done = outcomeOf(plan(), transferred([], {}, noUpdates({ updated: ["K1", "K2"], replaced: ["K2"] })), null);
    expect([done.exit, done.summary.updated, done.summary.replaced]).toEqual([0, 2, 1]);
    const failed = outcomeOf(plan(), transferred([], {}, noUpdates({ failed: [{ key: "K1", title: "t", message: "500" }] })), null);
    expect(failed.exit).toBe(1);
    const interrupted = outcomeOf(plan(), transferred([], {}, noUpdates({ interrupted: 1 })), null);
    expect(interrupted.exit).toBe(130);
    const journal = outcomeOf(plan(), transferred([], {}, noUpdates({ fatal: new ImportError("CHECKPOINT_WRITE", "disk full") })), null);
    expect([journal.exit, journal.stoppedBy]).toEqual([1, "checkpoint"]);
  });
});
