import { hostname } from "node:os";
import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { ImportError } from "../errors.js";

interface LockOwner {
  pid: number;
  host: string;
  since: string;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * One run per checkpoint: a lock file created exclusively, holding our pid.
 * A lock left by a dead process on this host (SIGKILL, power loss) is taken over at once:
 * pid liveness, not a staleness timer, so a restart right after a crash never waits.
 */
export function acquireLock(path: string): () => void {
  mkdirSync(dirname(path), { recursive: true });
  const me: LockOwner = { pid: process.pid, host: hostname(), since: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      writeFileSync(path, JSON.stringify(me), { flag: "wx", mode: 0o600 });
      let released = false;
      return () => {
        if (released) return;
        released = true;
        try {
          const owner = JSON.parse(readFileSync(path, "utf8")) as LockOwner;
          if (owner.pid === me.pid) unlinkSync(path);
        } catch {
          /* already gone */
        }
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") {
        throw new ImportError("CHECKPOINT_INVALID", `cannot create lock ${path} (${(error as NodeJS.ErrnoException).code}): check the checkpoint directory`);
      }
    }
    let owner: LockOwner | undefined;
    try {
      owner = JSON.parse(readFileSync(path, "utf8")) as LockOwner;
    } catch {
      owner = undefined; // half-written by a process that died: stale
    }
    if (owner && (owner.host !== me.host || alive(owner.pid))) {
      const where = owner.host !== me.host ? ` on ${owner.host}` : "";
      throw new ImportError("LOCK_BUSY", `another import (pid ${owner.pid}${where}, since ${owner.since}) holds ${path}: wait for it to finish, or delete the lock file if that process is gone`);
    }
    try {
      unlinkSync(path);
    } catch {
      /* someone else took it over; try again */
    }
  }
  throw new ImportError("LOCK_BUSY", `could not take the lock ${path}: another import is starting`);
}
