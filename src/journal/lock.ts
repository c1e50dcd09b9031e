import { createHash, randomBytes } from "node:crypto";
import { closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from "node:fs";
import { hostname } from "node:os";
import { dirname } from "node:path";
import { ImportError } from "../errors.js";

interface LockOwner {
  pid: number;
  host: string;
  since: string;
  /** Random, per acquisition; absent in locks written by older versions. */
  token?: string;
}

/** What a lock (or claim) file holds right now. */
type Seen =
  | { kind: "gone" }
  | { kind: "owner"; owner: LockOwner; raw: Buffer }
  | { kind: "garbage"; raw: Buffer; ageMs: number };

/** Tries before giving up with LOCK_BUSY when other processes keep changing the lock under us. */
const MAX_ATTEMPTS = 8;
/** Claims on claims: only needed when a process died in the middle of a takeover. */
const MAX_CLAIM_DEPTH = 3;
/**
 * Versions before link() created the lock file empty, then wrote it: an EMPTY lock this young
 * may be one of them at work. Our own locks are never visible empty.
 */
const LEGACY_WRITE_WINDOW_MS = 10_000;

const errno = (error: unknown): string => (error as NodeJS.ErrnoException).code ?? "unknown error";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return errno(error) === "EPERM";
  }
}

function parseOwner(raw: Buffer): LockOwner | undefined {
  try {
    const value = JSON.parse(raw.toString("utf8")) as Partial<LockOwner> | null;
    // pid 0 or negative would make kill() signal a process group and always look alive.
    if (typeof value !== "object" || value === null || !Number.isSafeInteger(value.pid) || (value.pid as number) <= 0) return undefined;
    if (typeof value.host !== "string") return undefined;
    return {
      pid: value.pid as number,
      host: value.host,
      since: typeof value.since === "string" ? value.since : "an unknown time",
      ...(typeof value.token === "string" ? { token: value.token } : {}),
    };
  } catch {
    return undefined;
  }
}

function invalid(path: string, what: string, error: unknown): ImportError {
  const code = errno(error);
  const hint = ["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS"].includes(code) && what === "create"
    ? ": the checkpoint directory must be on a filesystem that supports hard links"
    : ": check the checkpoint directory";
  return new ImportError("CHECKPOINT_INVALID", `cannot ${what} lock ${path} (${code})${hint}`, { cause: error });
}

function read(path: string, lockPath: string): Seen {
  let raw: Buffer;
  let ageMs: number;
  try {
    raw = readFileSync(path);
    ageMs = raw.length === 0 ? Date.now() - statSync(path).mtimeMs : Infinity;
  } catch (error) {
    if (errno(error) === "ENOENT") return { kind: "gone" };
    throw invalid(lockPath, "read", error);
  }
  const owner = parseOwner(raw);
  return owner ? { kind: "owner", owner, raw } : { kind: "garbage", raw, ageMs };
}

/** True when `seen` cannot be a live lock: its owner is dead on this host, or it is garbage nobody is writing. */
function stale(seen: Exclude<Seen, { kind: "gone" }>, host: string): boolean {
  if (seen.kind === "owner") return seen.owner.host === host && !alive(seen.owner.pid);
  return seen.raw.length > 0 || seen.ageMs >= LEGACY_WRITE_WINDOW_MS;
}

/** link() that answers false when `to` exists; any other failure is a checkpoint directory we cannot use. */
function tryLink(from: string, to: string, lockPath: string): boolean {
  try {
    linkSync(from, to);
    return true;
  } catch (error) {
    if (errno(error) === "EEXIST") return false;
    throw invalid(lockPath, "create", error);
  }
}

/** Unlinks `path` only while it holds `token`. Safe: nobody else removes a file whose owner is alive. */
function unlinkIfOurs(path: string, token: string): void {
  try {
    if (parseOwner(readFileSync(path))?.token === token) unlinkSync(path);
  } catch {
    /* already gone */
  }
}

function tryUnlink(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* already gone */
  }
}

function busy(path: string, owner: LockOwner, host: string): ImportError {
  const where = owner.host !== host ? ` on ${owner.host}` : "";
  return new ImportError(
    "LOCK_BUSY",
    `another import (pid ${owner.pid}${where}, since ${owner.since}) holds ${path}: wait for it to finish, or delete the lock file if that process is gone`,
  );
}

/**
 * One run per checkpoint. Returns the release function (idempotent; removes the lock only while it
 * still holds our random token). Throws LOCK_BUSY when a live process holds the lock, and
 * CHECKPOINT_INVALID when the lock cannot be created or read (naming the path and the errno code).
 *
 * Taking the lock: our identity (pid, host, since, token) is written to a temp file of our own in
 * the same directory and fsync'd, then hard-linked to `path`. link() fails with EEXIST when the
 * lock is taken, so the lock file appears at once with all its content: never empty, never
 * half-written.
 *
 * Taking over a stale lock: a lock whose owner pid is dead on this host (SIGKILL, power loss) is
 * taken over at once: pid liveness, not a staleness timer, so a restart right after a crash never
 * waits. A lock on another host is never judged stale. Content that does not parse cannot be a
 * live lock (see above) and is stale too, except an EMPTY file younger than 10 s, which may be a
 * pre-link() version writing it.
 * Removing a stale lock by name is only safe if nobody replaced it since we read it, so the
 * removal is serialised per stale CONTENT: the remover first links its temp file to
 * `${path}.break.<sha256 of the stale content>` (exclusive), re-reads `path`, and unlinks it only
 * if it still holds exactly the content it judged; then it removes that claim and tries link()
 * again. A second process that judged the same content gets EEXIST on the claim; one that comes
 * late, after a new owner took the lock, re-reads a different content and leaves it alone. (A plain
 * rename-away of the stale file is not enough: a taker that judged the old content can rename away
 * the new live owner's lock, and a third process can take the emptied path before it is put back.)
 * A claim left by a remover that died is itself stale and is removed the same way, one level up.
 */
export function acquireLock(path: string): () => void {
  try {
    mkdirSync(dirname(path), { recursive: true });
  } catch (error) {
    throw invalid(path, "create", error);
  }
  const me: LockOwner & { token: string } = {
    pid: process.pid,
    host: hostname(),
    since: new Date().toISOString(),
    token: randomBytes(16).toString("hex"),
  };
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    const fd = openSync(tmp, "wx", 0o600);
    try {
      writeSync(fd, JSON.stringify(me));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    tryUnlink(tmp);
    throw invalid(path, "create", error);
  }

  /** Removes `name` if it still holds `judged` (stale); whatever happens, the caller looks again. */
  const removeStale = (name: string, judged: Buffer, depth: number): void => {
    const claim = `${path}.break.${createHash("sha256").update(judged).digest("hex").slice(0, 16)}`;
    if (tryLink(tmp, claim, path)) {
      try {
        const now = read(name, path);
        if (now.kind !== "gone" && now.raw.equals(judged)) tryUnlink(name);
      } finally {
        unlinkIfOurs(claim, me.token);
      }
      return;
    }
    const claimant = read(claim, path);
    if (claimant.kind !== "gone" && depth < MAX_CLAIM_DEPTH && stale(claimant, me.host)) removeStale(claim, claimant.raw, depth + 1);
  };

  try {
    for (let attempt = 1; ; attempt++) {
      if (tryLink(tmp, path, path)) {
        let released = false;
        return () => {
          if (released) return;
          released = true;
          unlinkIfOurs(path, me.token);
        };
      }
      const seen = read(path, path);
      if (seen.kind === "owner" && !stale(seen, me.host)) throw busy(path, seen.owner, me.host);
      if (seen.kind === "garbage" && !stale(seen, me.host)) {
        throw new ImportError(
          "LOCK_BUSY",
          `the lock ${path} is empty and new: another import may be creating it; try again, or delete the lock file if no import is running`,
        );
      }
      // Gone or stale. Always go round to link() once more after a removal, so that a stale lock
      // removed on the last attempt is still taken by someone.
      if (attempt >= MAX_ATTEMPTS) break;
      if (seen.kind !== "gone") removeStale(path, seen.raw, 0);
    }
  } finally {
    tryUnlink(tmp);
  }
  throw new ImportError(
    "LOCK_BUSY",
    `could not take the lock ${path}: another import is taking it over right now; wait for it to finish, then try again`,
  );
}
