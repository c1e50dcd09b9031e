import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from "node:fs";
import { hostname, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ImportError } from "../../src/errors.js";
import { acquireLock } from "../../src/journal/lock.js";

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
 * One contender, living through every round: imports the BUILT lock, says "ready", then per line
 * "try LOCKPATH HOLDERSPATH" on stdin tries once. Busy: says "busy". Holder: appends its pid to the
 * holders file (O_APPEND), says "held", keeps the lock until the line "release", releases and says
 * "released". Any other error: the stack on stderr and exit 1. Processes are started once per test
 * (not per round): a round's outcome depends on the lock file, not on how fresh the process is.
 */
const CONTENDER = `
import { appendFileSync } from "node:fs";
import { createInterface } from "node:readline";
const [lockUrl] = process.argv.slice(2);
const { acquireLock } = await import(lockUrl);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
process.stdout.write("ready\\n");
for (;;) {
  const { value, done } = await lines.next();
  if (done) process.exit(0);
  const [, lockPath, holdersPath] = value.split(" ");
  let release;
  try {
    release = acquireLock(lockPath);
  } catch (error) {
    if (error?.code === "LOCK_BUSY") { process.stdout.write("busy\\n"); continue; }
    process.stderr.write(String(error?.stack ?? error));
    process.exit(1);
  }
  appendFileSync(holdersPath, process.pid + "\\n", { flag: "a" });
  process.stdout.write("held\\n");
  await lines.next();
  release();
  process.stdout.write("released\\n");
}
`;

interface Contender {
  child: ChildProcess;
  stderr: string;
  exit: Promise<number | null>;
  /** The next line the contender says; "exit" when it has exited instead. */
  next(): Promise<string>;
  send(line: string): void;
}

function contender(script: string): Contender {
  const child = spawn(process.execPath, [script, pathToFileURL(built).href], { stdio: ["pipe", "pipe", "pipe"] });
  const lines: string[] = [];
  const waiting: Array<(line: string) => void> = [];
  const say = (line: string) => {
    const w = waiting.shift();
    if (w) w(line);
    else lines.push(line);
  };
  const c: Contender = {
    child,
    stderr: "",
    exit: new Promise((done) => child.on("close", (code) => done(code))),
    next: () => new Promise((done) => (lines.length > 0 ? done(lines.shift()!) : child.exitCode !== null ? done("exit") : waiting.push(done))),
    send: (line) => child.stdin!.write(`${line}\n`),
  };
  let buffered = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    buffered += chunk.toString();
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      say(buffered.slice(0, nl));
      buffered = buffered.slice(nl + 1);
    }
  });
  child.stderr!.on("data", (chunk: Buffer) => (c.stderr += chunk.toString()));
  child.on("exit", () => {
    for (const done of waiting.splice(0)) done("exit");
  });
  child.stdin!.on("error", () => {}); // a contender that already exited
  return c;
}

/** One round: every contender tries at once; returns the holders' pids and what each said. */
async function round(all: Contender[], dir: string, beforeStart?: (lockPath: string) => void): Promise<{ holders: number[]; said: string[] }> {
  const lockPath = join(dir, "cp.lock");
  const holdersPath = join(dir, "holders");
  writeFileSync(holdersPath, "");
  beforeStart?.(lockPath);
  for (const c of all) c.send(`try ${lockPath} ${holdersPath}`);
  // Barrier: every contender has answered (busy, or holds the lock and waits for "release").
  const said = await Promise.all(all.map((c) => c.next()));
  const holding = all.filter((_, i) => said[i] === "held");
  for (const c of holding) c.send("release");
  const released = await Promise.all(holding.map((c) => c.next()));
  expect(released).toEqual(holding.map(() => "released"));
  const holders = readFileSync(holdersPath, "utf8").split("\n").filter(Boolean).map(Number);
  return { holders, said };
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
  // Generous timeout: only a hang guard, never a synchronisation.
  it.each(cases)(`over %s: exactly one of ${CONTENDERS} holds it, the others get LOCK_BUSY (${ROUNDS} rounds)`, { timeout: 120_000 }, async (_name, beforeStart) => {
    const all = Array.from({ length: CONTENDERS }, () => contender(script));
    try {
      // Every contender has started and imported the lock module.
      expect(await Promise.all(all.map((c) => c.next()))).toEqual(all.map(() => "ready"));
      const perRound: number[] = [];
      for (let r = 0; r < ROUNDS; r++) {
        const dir = tempDir();
        const { holders, said } = await round(all, dir, beforeStart);
        perRound.push(holders.length);
        expect(all.map((c) => c.stderr).join("")).toBe("");
        expect(holders).toHaveLength(1);
        expect(said.filter((w) => w === "held")).toHaveLength(1);
        expect(said.filter((w) => w === "busy")).toHaveLength(CONTENDERS - 1);
        // Released, and no temp file or takeover claim left behind.
        expect(readdirSync(dir)).toEqual(["holders"]);
      }
      expect(perRound).toEqual(Array(ROUNDS).fill(1));
      for (const c of all) c.child.stdin!.end();
      expect(await Promise.all(all.map((c) => c.exit))).toEqual(all.map(() => 0));
      console.info(`lock stress: ${ROUNDS} rounds x ${CONTENDERS} processes, holders per round: ${perRound.join(",")}`);
    } finally {
      for (const c of all) if (c.child.exitCode === null) c.child.kill("SIGKILL");
    }
  });
});
