import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const serverDir = fileURLToPath(new URL("../..", import.meta.url));

/**
 * Another process holding a SQLite lock: `write` = BEGIN IMMEDIATE + an insert,
 * `read` = BEGIN + a SELECT (an open read transaction), `writer-loop` = many short
 * immediate write transactions for `ms`. Resolves `ready` once the lock is held.
 */
export function holdLock(dbPath: string, mode: "write" | "read" | "writer-loop", ms: number) {
  const script = `
    const Database = require("better-sqlite3");
    const db = new Database(${JSON.stringify(dbPath)});
    db.pragma("busy_timeout = 5000");
    const sleep = (t) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, t);
    const mode = ${JSON.stringify(mode)};
    if (mode === "writer-loop") {
      process.stdout.write("LOCKED\\n");
      const end = Date.now() + ${ms};
      let i = 0;
      while (Date.now() < end) {
        db.exec("BEGIN IMMEDIATE");
        db.prepare("INSERT INTO user (username, password_hash, is_admin, created_at) VALUES (?, 'x', 0, 'now')").run("loop" + process.pid + "-" + (i++));
        db.exec("COMMIT");
        sleep(3);
      }
    } else {
      if (mode === "write") {
        db.exec("BEGIN IMMEDIATE");
        db.prepare("INSERT INTO user (username, password_hash, is_admin, created_at) VALUES (?, 'x', 0, 'now')").run("holder" + process.pid);
      } else {
        db.exec("BEGIN");
        db.prepare("SELECT COUNT(*) FROM paper").get();
      }
      process.stdout.write("LOCKED\\n");
      sleep(${ms});
      db.exec("COMMIT");
    }
    db.close();
  `;
  const child = spawn(process.execPath, ["-e", script], { cwd: serverDir, stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const ready = new Promise<void>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      if (d.toString().includes("LOCKED")) resolve();
    });
    child.on("exit", (code) => reject(new Error(`lock holder exited early (${code}): ${stderr}`)));
  });
  const done = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { ready, done, kill: () => child.kill("SIGKILL") };
}
