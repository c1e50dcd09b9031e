import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { fileURLToPath } from "node:url";

export const BIN = fileURLToPath(new URL("../../bin/refserver-lite.js", import.meta.url));
export const LISTENING = /^refserver-lite listening on (http:\/\/127\.0\.0\.1:\d+)$/m;

export interface ServerProcess {
  child: ChildProcessWithoutNullStreams;
  url: Promise<string>;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Spawn the real CLI (built dist) on 127.0.0.1 with a free port. */
export function spawnServer(args: string[], env: Record<string, string> = {}): ServerProcess {
  const clean: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith("REFSERVER_") && v !== undefined) clean[k] = v;
  const child = spawn(process.execPath, [BIN, "--host", "127.0.0.1", "--port", "0", "--log-level", "warn", ...args], {
    env: { ...clean, ...env },
  });
  let out = "";
  let err = "";
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal })),
  );
  const url = new Promise<string>((resolve, reject) => {
    child.stdout.on("data", (d: Buffer) => {
      out += d.toString();
      const m = LISTENING.exec(out);
      if (m?.[1]) resolve(m[1]);
    });
    void exited.then(({ code }) => reject(new Error(`server exited (${code}) before listening: ${err}`)));
  });
  url.catch(() => undefined);
  return { child, url, stdout: () => out, stderr: () => err, exited };
}

export function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args]);
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}
