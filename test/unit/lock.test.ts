import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ImportError } from "../../src/errors.js";
import { acquireLock } from "../../src/journal/lock.js";

/** Exit code of a contender that got LOCK_BUSY. */
const BUSY = 3;
const CONTENDERS = 8;
const ROUNDS = 10;

const dirs: string[] = [];
const tempDir = (): string => {
  const dir = mkdtempSync(join(tmpdir(), "ifz-lock-"));
  dirs.push(dir);
  return dir;
};
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A pid that existed and has exited (and been reaped): nobody holds it right now. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ["-e", ""]);
  expect(child.status).toBe(0);
  return child.pid as number;
}

const owner = (pid: number, extra: Record<string, unknown> = {}) => JSON.stringify({ pid, host: hostname(), since: "2020-01-01T00:00:00.000Z", ...extra });

function busyError(fn: () => unknown): ImportError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ImportError);
    expect((error as ImportError).code).toBe("LOCK_BUSY");
    return error as ImportError;
  }
  throw new Error("expected LOCK_BUSY");
}

describe("checkpoint lock, in one process", () => {
  it("takes and releases; release is idempotent and leaves nothing behind", () => {
    const dir = tempDir();
    const path = join(dir, "cp.lock");
    const release = acquireLock(path);
    const held = JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
    expect(held).toMatchObject({ pid: process.pid, host: hostname() });
    expect(typeof held.token).toBe("string");
    expect(readdirSync(dir)).toEqual(["cp.lock"]); // the temp file is gone
    release();
    release();
    expect(readdirSync(dir)).toEqual([]);
    acquireLock(path)(); // free again
  });

  it("refuses a second acquire while held, naming the pid, since, path and what to do", () => {
    const path = join(tempDir(), "cp.lock");
    const release = acquireLock(path);
    const error = busyError(() => acquireLock(path));
    expect(error.message).toContain(`pid ${process.pid}`);
    expect(error.message).toContain(`since ${JSON.parse(readFileSync(path, "utf8")).since}`);
    expect(error.message).toContain(path);
    expect(error.message).toMatch(/wait for it to finish/);
    expect(error.message).not.toContain(" on "); // same host
    release();
  });

  it("never judges a lock of another host stale, and names that host", () => {
    const path = join(tempDir(), "cp.lock");
    writeFileSync(path, JSON.stringify({ pid: deadPid(), host: "elsewhere.example", since: "yesterday" }));
    const error = busyError(() => acquireLock(path));
    expect(error.message).toContain("on elsewhere.example");
    expect(error.message).toContain("since yesterday");
  });

  it("takes over a lock left by a dead pid, with or without a token (older versions wrote none)", () => {
    const dir = tempDir();
    const path = join(dir, "cp.lock");
    for (const extra of [{}, { token: "left-by-the-dead" }]) {
      writeFileSync(path, owner(deadPid(), extra));
      const release = acquireLock(path);
      expect(JSON.parse(readFileSync(path, "utf8"))).toMatchObject({ pid: process.pid });
      expect(readdirSync(dir)).toEqual(["cp.lock"]); // no temp file, no claim left
      release();
    }
  });

  it("takes over garbage and an old empty file, but not a brand-new empty one (an older version writing it)", () => {
    const dir = tempDir();
    const path = join(dir, "cp.lock");
    writeFileSync(path, '{"pid": 12'); // not written by link(): cannot be a live lock
    acquireLock(path)();
    writeFileSync(path, JSON.stringify({ pid: 0, host: hostname() })); // pid 0 would signal our own process group
    acquireLock(path)();
    writeFileSync(path, "");
    busyError(() => acquireLock(path));
    utimesSync(path, new Date(0), new Date(0));
    acquireLock(path)();
    expect(readdirSync(dir)).toEqual([]);
  });

  it("release does not delete a lock another owner holds now", () => {
    const path = join(tempDir(), "cp.lock");
    const release = acquireLock(path);
    const other = owner(process.pid, { token: "someone-else" }); // e.g. after an operator deleted ours and another run started
    writeFileSync(path, other);
    release();
    expect(readFileSync(path, "utf8")).toBe(other);
    release();
    expect(readFileSync(path, "utf8")).toBe(other);
  });

  it("breaks a takeover claim left by a taker that died mid-takeover", () => {
    const dir = tempDir();
    const path = join(dir, "cp.lock");
    const stale = owner(deadPid(), { token: "dead-owner" });
    writeFileSync(path, stale);
    // The claim on that content (layout documented in lock.ts), held by a taker that died.
    const claim = `${path}.break.${createHash("sha256").update(stale).digest("hex").slice(0, 16)}`;
    writeFileSync(claim, owner(deadPid(), { token: "dead-taker" }));
    const release = acquireLock(path);
    expect(readdirSync(dir)).toEqual(["cp.lock"]);
    release();
  });

  it("a live taker's claim makes others back off with LOCK_BUSY instead of racing it", () => {
    const dir = tempDir();
    const path = join(dir, "cp.lock");
    const stale = owner(deadPid(), { token: "dead-owner" });
    writeFileSync(path, stale);
    const claim = `${path}.break.${createHash("sha256").update(stale).digest("hex").slice(0, 16)}`;
    writeFileSync(claim, owner(process.pid, { token: "live-taker" })); // alive: mid-takeover
    expect(busyError(() => acquireLock(path)).message).toMatch(/taking it over right now/);
    expect(readFileSync(path, "utf8")).toBe(stale); // untouched
  });

  it("reports a checkpoint directory it cannot create as CHECKPOINT_INVALID with the path and errno code", () => {
    const dir = tempDir();
    writeFileSync(join(dir, "file"), "");
    const path = join(dir, "file", "sub", "cp.lock"); // a file where a directory must be
    expect(() => acquireLock(path)).toThrow(expect.objectContaining({ code: "CHECKPOINT_INVALID", message: expect.stringContaining(`${path} (ENOTDIR)`) }));
  });
});

// ---------------------------------------------------------------------------------------------

const built = resolve("dist/journal/lock.js");

/**
 * One contender: imports the BUILT lock, says "ready", waits for "start" on stdin, tries once.
 * Busy: exits BUSY. Holder: appends its pid to the holders file (O_APPEND), says "held", and
 * keeps the lock until the test sends "go" (or closes stdin), then releases and exits 0.
 */
const CONTENDER = `
import { appendFileSync } from "node:fs";
import { createInterface } from "node:readline";
const [lockUrl, lockPath, holdersPath] = process.argv.slice(2);
const { acquireLock } = await import(lockUrl);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
process.stdout.write("ready\\n");
await lines.next();
let release;
try {
  release = acquireLock(lockPath);
} catch (error) {
  if (error?.code === "LOCK_BUSY") process.exit(${BUSY});
  process.stderr.write(String(error?.stack ?? error));
  process.exit(1);
}
appendFileSync(holdersPath, process.pid + "\\n", { flag: "a" });
process.stdout.write("held\\n");
await lines.next();
release();
process.exit(0);
`;

interface Contender {
  child: ChildProcess;
  stderr: string;
  said: Set<string>;
  exit: Promise<number | null>;
  /** Resolves on the first of: `word` on stdout, or exit. */
  until(word: string): Promise<void>;
}

function contender(script: string, lockPath: string, holders: string): Contender {
  const child = spawn(process.execPath, [script, pathToFileURL(built).href, lockPath, holders], { stdio: ["pipe", "pipe", "pipe"] });
  const said = new Set<string>();
  const waiting = new Map<string, Array<() => void>>();
  const c: Contender = {
    child,
    stderr: "",
    said,
    exit: new Promise((done) => child.on("close", (code) => done(code))),
    until: (word) =>
      new Promise((done) => {
        if (said.has(word) || child.exitCode !== null) return done();
        waiting.set(word, [...(waiting.get(word) ?? []), done]);
      }),
  };
  let buffered = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const word = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      said.add(word);
      for (const done of waiting.get(word) ?? []) done();
      waiting.delete(word);
    }
  });
  child.stderr!.on("data", (chunk: Buffer) => (c.stderr += chunk.toString()));
  child.on("exit", () => {
    for (const list of waiting.values()) for (const done of list) done();
    waiting.clear();
  });
  child.stdin!.on("error", () => {}); // a contender that already exited
  return c;
}

/** One round: CONTENDERS processes released together; returns the holders' pids and every exit code. */
async function round(script: string, dir: string, beforeStart?: (lockPath: string) => void): Promise<{ holders: number[]; codes: (number | null)[]; stderr: string }> {
  const lockPath = join(dir, "cp.lock");
  const holdersPath = join(dir, "holders");
  writeFileSync(holdersPath, "");
  const all = Array.from({ length: CONTENDERS }, () => contender(script, lockPath, holdersPath));
  // Barrier 1: everyone has started and imported the lock module.
  await Promise.all(all.map((c) => c.until("ready")));
  beforeStart?.(lockPath);
  for (const c of all) c.child.stdin!.write("start\n");
  // Barrier 2: every contender has either exited (busy or failed) or holds the lock and waits.
  await Promise.all(all.map((c) => c.until("held")));
  for (const c of all) c.child.stdin!.end("go\n");
  const codes = await Promise.all(all.map((c) => c.exit));
  const holders = readFileSync(holdersPath, "utf8").split("\n").filter(Boolean).map(Number);
  return { holders, codes, stderr: all.map((c) => c.stderr).join("") };
}

describe("checkpoint lock, many processes at once", () => {
  let scriptDir = "";
  let script = "";
  beforeAll(() => {
    if (!existsSync(built) || statSync(built).mtimeMs < statSync(resolve("src/journal/lock.ts")).mtimeMs) {
      throw new Error(`${built} is missing or older than src/journal/lock.ts: run "npx tsc -p tsconfig.build.json" (npm test builds first)`);
    }
    scriptDir = mkdtempSync(join(tmpdir(), "ifz-lock-script-"));
    script = join(scriptDir, "contender.mjs");
    writeFileSync(script, CONTENDER);
  });
  afterAll(() => {
    if (scriptDir) rmSync(scriptDir, { recursive: true, force: true });
  });

  const cases: Array<[string, ((lockPath: string) => void) | undefined]> = [
    ["a fresh lock path", undefined],
    // The dead pid is taken after all contenders are running, so none of them can reuse it.
    ["a stale lock left by a dead pid", (lockPath) => writeFileSync(lockPath, owner(deadPid(), { token: "dead" }))],
  ];
  // Generous timeout: 80 node start-ups per test on a shared 2-core machine (the old lock had two holders in most rounds of 12). Only a hang guard, never a synchronisation.
  it.each(cases)(`over %s: exactly one of ${CONTENDERS} holds it, the others get LOCK_BUSY (${ROUNDS} rounds)`, { timeout: 240_000 }, async (_name, beforeStart) => {
    const perRound: number[] = [];
    for (let r = 0; r < ROUNDS; r++) {
      const dir = tempDir();
      const { holders, codes, stderr } = await round(script, dir, beforeStart);
      perRound.push(holders.length);
      expect(stderr).toBe("");
      expect(holders).toHaveLength(1);
      expect(codes.filter((c) => c === 0)).toHaveLength(1);
      expect(codes.filter((c) => c === BUSY)).toHaveLength(CONTENDERS - 1);
      // Released, and no temp file or takeover claim left behind.
      expect(readdirSync(dir)).toEqual(["holders"]);
    }
    expect(perRound).toEqual(Array(ROUNDS).fill(1));
    console.info(`lock stress: ${ROUNDS} rounds x ${CONTENDERS} processes, holders per round: ${perRound.join(",")}`);
  });
});
